"""The whole run: plan, then one DFT per snapshot into the data set, resumable and locked.

:func:`generate` makes or resumes a data set: it reuses the directory's
``plan.json`` (or makes and saves the plan), computes only the snapshots that
the manifest does not list yet and writes each one atomically into the data
set (:mod:`bigdens.data`).  A lock file (``.datagen.lock``) keeps two runs
from writing the same directory, and a data set keeps one DFT protocol
(:func:`recorded_protocol`) unless mixing is asked for.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .._imports import attempt_import
from ..errors import InputError
from .dft import compute_snapshot
from .plan import PLAN_FILE, PlannedSnapshot, load_plan, read_request, save_plan
from .potentials import potential_name
from .settings import PROTOCOL_ALIASES, PROTOCOLS, DFTSettings, MDSettings

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ..data import Snapshot

#: Progress lines of the plan and the DFT runs, at INFO (a child of ``bigdens.datagen``; ``bigdens datagen``
#: shows them).
logger = logging.getLogger(__name__)

LOCK_FILE = ".datagen.lock"


def check_requirements(variants: dict[str, "Atoms"], *, md: MDSettings, dft: bool = True) -> None:
    """Fail before any MD or DFT if a package the run needs is missing.

    GPAW for the DFT (unless ``dft`` is False: MD only), and matscipy when a
    variant is thermalized with the Tersoff Si-Ge potential.

    Raises
    ------
    MissingDependencyError
        Naming the package and the command that installs the ``dft`` extra.
    """
    if dft:
        attempt_import("gpaw", purpose="computing DFT densities (bigdens datagen)")
    if any(potential_name(atoms, potential=md.potential) == "tersoff-sige" for atoms in variants.values()):
        attempt_import("matscipy", purpose="thermalizing Si/Ge with the Tersoff potential")


def recorded_protocol(directory: str | Path) -> str | None:
    """The DFT protocol of the data set in ``directory``, or None for a new directory.

    The manifest's ``protocol`` (``"mixed"`` where mixing was allowed), else,
    for a run stopped before its first snapshot (``--max-snapshots 0``), the
    protocol its ``plan.json`` was made for.

    Raises
    ------
    InputError
        If the manifest or ``plan.json`` is damaged.
    """
    from ..data import MANIFEST, read_manifest

    directory = Path(directory)
    if (directory / MANIFEST).is_file():
        return read_manifest(directory).get("protocol")
    request = read_request(directory) if directory.is_dir() else None
    return None if request is None else request.get("protocol")


def _other_protocol(directory: Path, have: str, want: str) -> InputError:
    # The refusal to write protocol `want` snapshots into a data set of protocol `have`.
    alias = {full: short for short, full in PROTOCOL_ALIASES.items()}
    if have == "mixed":
        resume = "it mixes protocols already"
    elif have in PROTOCOLS:
        resume = f"resume it with its own protocol (--protocol {alias.get(have, have)})"
    else:
        resume = "resume it with the DFT settings it was made with (its plan.json records them)"
    return InputError(
        f"{str(directory)!r} is a protocol {have!r} data set, not {want!r}; {resume}, write {want!r} data to a new "
        "directory (-o), or pass allow_mixed_protocols=True (--allow-mixed-protocols) to mix the two in this one"
    )


class _DirLock:
    """An exclusive lock file for a data-set directory (stale locks are taken over)."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    host, pid = self.path.read_text().split()
                    pid = int(pid)
                except (OSError, ValueError):
                    host, pid = "", -1
                if host == socket.gethostname() and pid > 0 and self._alive(pid):
                    raise InputError(
                        f"another 'bigdens datagen' (pid {pid}) is writing to {str(self.path.parent)!r}; "
                        "wait for it or stop it first"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{socket.gethostname()} {os.getpid()}\n")
            return self
        raise InputError(f"cannot lock {str(self.path)!r}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def generate(
    directory: str | Path,
    plan_factory: Callable[[], list[PlannedSnapshot]],
    *,
    request: dict[str, Any],
    dft: DFTSettings = DFTSettings(),
    description: str = "",
    max_snapshots: int | None = None,
    progress: Callable[[str], None] | None = None,
    log_dir: str | Path | None = None,
    allow_mixed_protocols: bool = False,
    compute: Callable[..., "Snapshot"] = compute_snapshot,
) -> Path:
    """Make or resume a data set in ``directory``.

    Parameters
    ----------
    directory
        Output data-set directory (created if needed).
    plan_factory
        Called (once, when ``plan.json`` does not exist yet) to thermalize and
        plan the snapshots.
    request
        JSON-compatible description of everything that defines the run; a
        resumed run must have the same.
    dft
        DFT settings (default: protocol ``bigdens-dft-v1``, :data:`~bigdens.datagen.DEFAULT_PROTOCOL`;
        :func:`~bigdens.datagen.protocol_settings` gives the others).  Their protocol
        (:attr:`DFTSettings.protocol`) goes into the plan's request, the manifest and
        every snapshot's provenance.
    description
        Free text stored in the manifest.
    max_snapshots
        Stop after computing this many new snapshots (None: all).
    progress
        Receives the progress lines (one per event) instead of the module
        logger (``bigdens.datagen.pipeline``, INFO); default None: the logger.
    log_dir
        Directory for GPAW's text logs (one per snapshot), or None.
    allow_mixed_protocols
        Add snapshots of ``dft``'s protocol to a data set of another protocol
        (its plan is reused, its manifest's protocol becomes ``"mixed"``).
    compute
        ``compute(planned, dft=, txt=) -> Snapshot``: the DFT of one planned snapshot
        (:func:`~bigdens.datagen.dft.compute_snapshot`; :func:`~bigdens.datagen.relabel`
        reuses a label that was computed with the same settings).

    Returns
    -------
    Path
        The data-set directory.

    Raises
    ------
    InputError
        If ``directory`` is a data set of another protocol (:func:`recorded_protocol`)
        and ``allow_mixed_protocols`` is False; or was started with another request.
    """
    say = progress or logger.info
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    request = dict(request, protocol=dft.protocol, dft_settings=asdict(dft))
    with _DirLock(directory):
        have = recorded_protocol(directory)
        mixed = have is not None and have != dft.protocol
        if mixed and not allow_mixed_protocols:
            raise _other_protocol(directory, have, dft.protocol)
        # Checked before the first line of output: a refused run shows only its error.
        plan = load_plan(directory, request=request, ignore=("protocol", "dft_settings") if mixed else ())
        say(f"DFT protocol {dft.protocol}: {dft.describe()}"
            + (f" (added to a {have!r} data set: --allow-mixed-protocols)" if mixed else ""))
        if plan is None:
            plan = plan_factory()
            save_plan(directory, plan, request=request)
            say(f"planned {len(plan)} snapshots in {str(directory / PLAN_FILE)!r}")
        manifest = _open_manifest(directory, dft=dft, description=description)
        done = {e["name"] for e in manifest["snapshots"] if (directory / e["file"]).is_file()}
        _check_done_match_plan(directory, manifest, plan, done)
        todo = [p for p in plan if p.name not in done]
        if max_snapshots is not None:
            todo = todo[:max_snapshots]
        say(f"{len(done)} of {len(plan)} snapshots exist; computing {len(todo)}")
        _compute(directory, todo, manifest, first=len(done) + 1, total=len(plan), dft=dft, say=say,
                 log_dir=log_dir, allow_mixed_protocols=mixed, compute=compute)
    return directory


def _open_manifest(directory: Path, *, dft: DFTSettings, description: str) -> dict:
    # The data set's manifest (a new one, of dft's protocol, if there is none); its protocol is checked by generate.
    from ..data import MANIFEST, new_manifest, read_manifest

    if not (directory / MANIFEST).is_file():
        return new_manifest(protocol=dft.protocol, description=description)
    manifest = read_manifest(directory)
    if description:
        manifest["description"] = description
    return manifest


def _compute(directory: Path, todo: list[PlannedSnapshot], manifest: dict, *, first: int, total: int,
             dft: DFTSettings, say: Callable[[str], None], log_dir: str | Path | None,
             allow_mixed_protocols: bool = False, compute: Callable[..., "Snapshot"] = compute_snapshot) -> None:
    # The DFT of each snapshot of todo in turn, each added to the data set as soon as it is done.
    from ..data import add_snapshot
    from ..structure import species_counts

    t_start = time.perf_counter()
    for i, p in enumerate(todo):
        atoms = p.atoms()
        counts = ", ".join(f"{n} {s}" for s, n in species_counts(atoms).items())
        say(f"[{first + i}/{total}] {p.name}: {counts}, {p.temperature:g} K, split {p.split}, "
            f"k {dft.kpts_for(atoms.cell[:])}, grid {dft.gpts_for(atoms.cell[:])} ...")
        txt = Path(log_dir) / f"{directory.name}-{p.name}.txt" if log_dir else None
        snap = compute(p, dft=dft, txt=txt)
        manifest = add_snapshot(directory, snap, manifest=manifest, allow_mixed_protocols=allow_mixed_protocols)
        elapsed = time.perf_counter() - t_start
        eta = elapsed / (i + 1) * (len(todo) - i - 1)
        timing = snap.provenance["timing"]
        say(f"    done in {timing['wall_seconds']:.0f} s wall, {timing['core_seconds']:.0f} "
            f"core-s; {snap.provenance['electron_integral']:.6f} electrons; ETA {eta / 60:.0f} min")


def _check_done_match_plan(directory: Path, manifest: dict, plan: list[PlannedSnapshot], done: set[str]) -> None:
    # A snapshot already in the data set must be the planned configuration
    # (a plan made again, e.g. after deleting plan.json, may differ).
    planned = {p.name: p for p in plan}
    for entry in manifest["snapshots"]:
        p = planned.get(entry["name"])
        if p is None or entry["name"] not in done:
            continue
        with np.load(directory / entry["file"], allow_pickle=False) as z:
            same = z["positions"].shape == p.positions.shape and np.allclose(z["positions"], p.positions, atol=1e-8)
        if not same:
            raise InputError(
                f"snapshot {entry['name']!r} in {str(directory)!r} is not the configuration of plan.json (the plan "
                "was made again?); remove that snapshot (its .npz and manifest entry) or restore the old plan.json"
            )
