"""One writer per store: the lock a prediction holds on its output store.

The driver of ``bigdens predict`` (never a worker) holds ``OUT.zarr.lock``, a
small JSON file beside the store, from before it looks at the output path
until the run ends (success, error or Ctrl-C)::

    {"command": "bigdens predict", "host": "node1", "pid": 1234,
     "pid_start": 506060, "boot_id": "0198...", "run_id": "ab12...",
     "since": "2025-06-01T12:00:00+00:00", "store": "/abs/OUT.zarr", "token": "..."}

Why a file created atomically and not ``fcntl.flock``:

- the lock must name its holder to a second process (the one-line refusal
  says which pid on which host, which run, since when), so it carries data;
- it is taken by linking a fully written temporary file to the lock's name
  (``os.link`` fails if the name exists): atomic on local file systems and on
  NFS (the classic NFS-safe lock; ``O_CREAT | O_EXCL``, used where hard links
  are not supported, is atomic on NFSv3 and later), and a reader never sees a
  half-written lock;
- ``flock`` is local-only on some mounts (NFS with ``local_lock``, Lustre
  with ``localflock``) and refused on others (Lustre without ``flock``), so
  it could not be relied on to keep out a run on another node;
- it sits beside the store, not inside it, so ``--overwrite`` removes the
  old store while holding the lock.

A lock whose holder is gone is stale and is taken over with a logged note.
Only a lock written on this host can be judged: it is stale when the host
booted since (other ``boot_id``), when its pid no longer runs (no
``/proc/PID``, or a zombie), or when that pid now belongs to a process that
started at another time (``pid_start``, clock ticks since boot: the pid was
reused).  A lock from another host is never judged stale: the refusal says
which file to delete if that run is gone.

Limits: two runs that find the same stale lock at the same moment are told
apart (exactly one takes it over); with three at once a run could lose its
lock file; a run stopped by SIGKILL cannot release its lock, which the next
run then finds stale.  The run id checked at every block write
(:func:`bigdens.engine.predict_block`) is the second line of defence.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ._files import write_text
from .errors import SetupError

logger = logging.getLogger(__name__)

#: Appended to the store's name to name its lock file.
LOCK_SUFFIX = ".lock"
#: How often a run retries taking a lock that others keep taking and releasing.
_ATTEMPTS = 20


@dataclass(frozen=True)
class Holder:
    """Who holds a store's lock (the content of the lock file).

    Attributes
    ----------
    command : str
        What holds it, e.g. ``"bigdens predict"``.
    host : str
        Host name of the holder (``socket.gethostname()``).
    pid : int
        Process id of the holder on ``host``.
    pid_start : int or None
        Start time of that process, clock ticks since boot (Linux); tells a
        reused pid apart.
    boot_id : str or None
        The host's boot id (Linux); tells a lock from before a reboot.
    run_id : str or None
        Run id of the store the holder writes (its ``run_id`` attribute).
    since : str
        When the lock was taken, ISO 8601 UTC.
    store : str
        Absolute path of the store.
    token : str
        Unique per taking of the lock.
    """

    command: str
    host: str
    pid: int
    pid_start: int | None
    boot_id: str | None
    run_id: str | None
    since: str
    store: str
    token: str

    def describe(self) -> str:
        """``bigdens predict (pid 1234 on host node1, run ab12..., since 2025-...)``."""
        return f"{self.command} (pid {self.pid} on host {self.host}, run {self.run_id}, since {self.since})"

    def is_stale(self) -> bool:
        """Whether the holder is certainly gone (only judged for a lock written on this host)."""
        if self.host != socket.gethostname():
            return False
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return True
        state = _process_state(self.pid)
        if state is None:
            return True
        if state is True:  # no /proc: the pid exists, nothing more is known
            return False
        code, start = state
        if code in "ZXx":  # zombie or dead (a zombie still answers `kill -0`)
            return True
        return self.pid_start is not None and start != self.pid_start


def lock_path(store: str | Path) -> Path:
    """The lock file of ``store``: ``NAME.lock`` beside the store, every symbolic link resolved.

    A link to a store and the store itself share one lock (two writers cannot get in by two names).
    """
    real = Path(os.path.realpath(Path(store).absolute()))
    return real.parent / (real.name + LOCK_SUFFIX)


def holder(store: str | Path) -> Holder | None:
    """Who holds the lock of ``store`` now, or None if nobody does.

    Raises
    ------
    SetupError
        If a lock file is there but cannot be read as a lock.
    """
    path = lock_path(store)
    found = _read(path)
    if isinstance(found, str):
        raise _unreadable(store, path, found)
    return found


@contextmanager
def hold(store: str | Path, *, run_id: str | None, command: str = "bigdens predict") -> Iterator[Holder]:
    """Hold the lock of ``store`` for the ``with`` block; release it however the block ends.

    Parameters
    ----------
    store
        The store (need not exist; its folder must).
    run_id
        The run id the holder writes under (shown to runs that are refused).
    command
        What holds the lock (shown to runs that are refused).

    Yields
    ------
    Holder
        This run's lock.

    Raises
    ------
    SetupError
        If another live process holds the lock (the message names it), or the
        lock cannot be taken; nothing is written then.
    """
    path = lock_path(store)  # once: --overwrite may replace a link to a store by the store itself meanwhile
    me = _take(store, path, run_id=run_id, command=command)
    try:
        yield me
    finally:
        _release(path, me)


# -- taking and releasing ---------------------------------------------------------------

def _take(store: str | Path, path: Path, *, run_id: str | None, command: str) -> Holder:
    pid = os.getpid()
    state = _process_state(pid)
    me = Holder(command=command, host=socket.gethostname(), pid=pid,
                pid_start=state[1] if isinstance(state, tuple) else None, boot_id=_boot_id(),
                run_id=run_id, since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                store=str(Path(store).absolute()), token=uuid.uuid4().hex)
    text = json.dumps(asdict(me))
    for _ in range(_ATTEMPTS):
        if _create(path, text, me):
            return me
        current = _read(path)
        for _wait in range(20):  # a lock being written without hard links: wait for its content
            if not isinstance(current, str):
                break
            time.sleep(0.05)
            current = _read(path)
        if current is None:  # released meanwhile: try again
            continue
        if isinstance(current, str):
            raise _unreadable(store, path, current)
        if not current.is_stale():
            raise _in_use(store, path, current)
        if _remove_stale(path, current):
            logger.warning("took over the stale lock %r of %s: that process is gone", str(path), current.describe())
    raise SetupError(f"cannot take the lock {str(path)!r}: other runs keep taking and releasing it; "
                     "try again when they have finished")


def _create(path: Path, text: str, me: Holder) -> bool:
    """Create the lock file with ``text`` atomically; False if it exists."""
    tmp = path.with_name(f".{path.name}.{me.pid}.{me.token[:8]}")
    try:
        write_text(tmp, text)
    except OSError as exc:
        raise SetupError(f"cannot write the lock {str(path)!r} ({exc.strerror or exc}); check the folder") from None
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: exclusive create instead
        pass
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise SetupError(f"cannot write the lock {str(path)!r} ({exc.strerror or exc}); check the folder") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _remove_stale(path: Path, stale: Holder) -> bool:
    """Remove the lock ``stale`` if it is still the one at ``path``; True if this call removed it.

    The lock is renamed aside first (only one racing process gets it), then
    checked: a lock that another run took meanwhile is put back.
    """
    aside = path.with_name(f".{path.name}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = _read(aside)
    try:
        if isinstance(moved, Holder) and moved.token == stale.token:
            return True
        try:
            os.link(aside, path)  # someone else's live lock: put it back
        except FileExistsError:
            logger.warning("the lock %r changed hands while a stale lock was removed; %s may have lost it",
                           str(path), moved.describe() if isinstance(moved, Holder) else "its holder")
        return False
    finally:
        aside.unlink(missing_ok=True)


def _release(path: Path, me: Holder) -> None:
    current = _read(path)
    if isinstance(current, Holder) and current.token == me.token:
        path.unlink(missing_ok=True)
        return
    logger.warning("the lock %r is no longer this run's (%s); left as it is", str(path),
                   current.describe() if isinstance(current, Holder) else "no readable lock")


# -- reading --------------------------------------------------------------------------------

def _read(path: Path) -> Holder | str | None:
    """The lock at ``path``; None if there is none; a reason (str) if it cannot be read."""
    try:
        data = json.loads(path.read_text())
        found = Holder(**{k: data.get(k) for k in Holder.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    except (ValueError, TypeError, AttributeError):
        return "not a bigdens lock"
    if not (isinstance(found.pid, int) and found.host and found.token):
        return "not a bigdens lock"
    return found


def _unreadable(store, path: Path, why: str) -> SetupError:
    return SetupError(f"{str(store)!r} is locked by {str(path)!r}, which cannot be read ({why}); if no bigdens "
                      "run uses the store, delete that file")


def _in_use(store, path: Path, h: Holder) -> SetupError:
    if h.host == socket.gethostname():
        how = (f"wait for it to finish or stop it (kill {h.pid}); a lock left by a run that died is removed "
               "automatically")
    else:
        how = (f"wait for it to finish or stop it on {h.host}; a lock from another host is not judged stale: "
               f"if that run is gone, delete {str(path)!r}")
    return SetupError(f"{str(store)!r} is in use by {h.describe()}; {how}")


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_state(pid: int) -> tuple[str, int] | bool | None:
    """``(state, start time in clock ticks)`` of a process from /proc; None if it does not exist.

    Without /proc: True if ``kill(pid, 0)`` finds the process, else None.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except OSError:
        pass
    else:
        fields = stat[stat.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
        return fields[0], int(fields[19])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return True


__all__ = ["Holder", "LOCK_SUFFIX", "hold", "holder", "lock_path"]
