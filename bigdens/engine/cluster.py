"""Running tasks on Dask: the cluster, and the loop that hands out blocks and watches them.

Blocks run on a :class:`distributed.LocalCluster` of processes, on an existing
cluster (``scheduler_file``), or, with ``workers=0``, one after the other in
this process (the reference the tests compare the cluster with: the numbers
are bit for bit the same).  A block that runs too long has its worker
restarted and runs again (:func:`block_timeout`); a block that fails for good
raises :class:`BlockFailed`.
"""

from __future__ import annotations

import time
import warnings
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import BigdensError, RunError, SetupError

if TYPE_CHECKING:  # pragma: no cover
    from ..config import PredictConfig


#: How long a run joining a cluster by scheduler file waits for its first worker, s.
SCHEDULER_FILE_WAIT_S = 300

@contextmanager
def make_client(config: PredictConfig, n_tasks: int = 1) -> Iterator[object]:
    """The one place where the Dask cluster is made; yields a Client, or None for ``workers=0``.

    ``scheduler_file`` joins an existing cluster; ``cluster="local"`` starts a
    :class:`distributed.LocalCluster` of processes bound to localhost;
    ``"slurm:NAME"`` submits SLURM jobs of the profile (enough for ``n_tasks``
    blocks) through dask-jobqueue and cancels them on exit
    (:func:`bigdens.clusters.slurm_client`).
    """
    if not config.uses_dask:
        yield None
        return
    import logging

    from distributed import Client, LocalCluster
    from distributed.utils import silence_logging_cmgr

    # As the local cluster's silence_logs does for its own: a failure reaches the user as one error of
    # bigdens, not also as the client's log lines (e.g. "Failed to reconnect to scheduler").
    quiet = silence_logging_cmgr(logging.CRITICAL)
    if config.scheduler_file is not None:
        if not config.scheduler_file.is_file():
            raise SetupError(f"scheduler file {str(config.scheduler_file)!r} does not exist; start the "
                             "scheduler with `dask scheduler --scheduler-file FILE` first")
        try:
            client = Client(scheduler_file=str(config.scheduler_file), timeout="30s")
        except OSError as exc:
            raise SetupError(f"cannot reach the scheduler in {str(config.scheduler_file)!r} ({exc})") from None
        with quiet, client:
            try:
                # Tasks would wait silently for workers that never come: bound it.
                client.wait_for_workers(1, timeout=SCHEDULER_FILE_WAIT_S)
            except TimeoutError:
                raise RunError(f"no Dask worker joined the scheduler of {str(config.scheduler_file)!r} within "
                               f"{SCHEDULER_FILE_WAIT_S} s; start workers with `dask worker --scheduler-file "
                               "FILE` (see cluster_configs/sbatch-scheduler-file.sh)") from None
            yield client
        return
    if config.profile is not None:
        from ..clusters import slurm_client

        with quiet, slurm_client(config.profile, n_tasks) as client:
            yield client
        return
    t = str(config.threads_per_worker)
    with ExitStack() as stack:
        with _stop_signals_blocked():  # in the threads that start (and restart) worker processes
            cluster = stack.enter_context(LocalCluster(
                n_workers=config.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                # CRITICAL: a task's failure reaches the user as one error through its future;
                # at ERROR the workers also print tracebacks, e.g. a heartbeat racing the shutdown.
                dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
                env={"NUMBA_NUM_THREADS": t, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t},
            ))
        yield stack.enter_context(Client(cluster))


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block SIGINT and SIGTERM in this thread meanwhile, so that threads and processes started here inherit it.

    Worker processes of a local cluster are started (and restarted) by threads
    the cluster creates; with both signals blocked there, the workers never
    see a terminal's Ctrl-C (sent to the whole process group) or a SIGTERM
    sent to every process of a SLURM job: the driver alone handles them and
    shuts the workers down through their nannies, so no worker prints a
    traceback.  Python runs signal handlers in the main thread, so blocking
    them in helper threads changes nothing for the driver.
    """
    import signal
    from multiprocessing import resource_tracker

    # Started first: starting it later (from a cluster thread) unblocks both signals in that thread.
    resource_tracker.ensure_running()
    stops = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:  # a signal that came meanwhile is delivered here, once the cluster can be closed
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


#: Automatic block timeout (``block_timeout=None``), s: never shorter than this ...
BLOCK_TIMEOUT_FLOOR_S = 120.0
#: ... nor than this many times the slowest block finished so far (its worker's setup included) ...
BLOCK_TIMEOUT_FACTOR = 10.0
#: ... and before any block has finished (workers importing, reading the atoms, building cell lists), this.
BLOCK_TIMEOUT_SETUP_S = 1800.0
#: Times one block may time out (its worker restarted each time) before the run stops.  A worker that
#: dies under a block counts likewise, up to Dask's ``distributed.scheduler.allowed-failures`` + 1.
BLOCK_ATTEMPTS = 3
#: How often the driver looks for blocks running too long, s.
STUCK_POLL_S = 2.0
#: How long a restart of stuck workers may take, s (their nanny kills a worker that does not stop).
RESTART_TIMEOUT_S = 60.0
#: Longest wait for a finished block's result (a small dict) from its worker, s; the block timeout if shorter.
RESULT_TIMEOUT_S = 120.0


class BlockFailed(Exception):
    """A block, or the cluster, failed for good (internal: :func:`bigdens.engine.run` turns it into a
    :class:`RunError`).

    The message says what failed; :func:`bigdens.engine.run` adds the ledger state and the ``--resume`` hint.
    """


def block_timeout(slowest: float | None, fixed: float | None = None) -> float:
    """Seconds a block may run before its worker is restarted and the block retried.

    Parameters
    ----------
    slowest
        Run time of the slowest block finished so far, s, its worker's setup
        included (None: none finished yet).
    fixed
        ``PredictConfig.block_timeout``: when given, the timeout.
    """
    if fixed is not None:
        return float(fixed)
    if slowest is None:
        return max(BLOCK_TIMEOUT_FLOOR_S, BLOCK_TIMEOUT_SETUP_S)
    return max(BLOCK_TIMEOUT_FLOOR_S, BLOCK_TIMEOUT_FACTOR * slowest)


def _block_error(index: int, exc: BaseException) -> BaseException:
    """The exception to raise for block ``index`` whose task raised ``exc`` (BlockFailed, or ``exc`` itself)."""
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker
    from distributed.utils import CancelledError

    def text(e: BaseException) -> str:  # on one line
        return " ".join(f"{type(e).__name__}: {e}".split())

    if isinstance(exc, (BigdensError, MemoryError)):
        return exc
    if isinstance(exc, KilledWorker):
        last = getattr(exc.last_worker, "address", exc.last_worker)
        return BlockFailed(f"block {index} failed: the worker computing it died {exc.allowed_failures + 1} times "
                           f"(the last one {last}: killed, or out of memory?)")
    if isinstance(exc, CancelledError):  # not by this run: the scheduler dropped the block
        return BlockFailed(f"block {index} failed: the Dask scheduler dropped it "
                           f"({getattr(exc, 'reason', None) or 'cancelled'}: did the scheduler stop?)")
    if isinstance(exc, CommClosedError):
        return BlockFailed(f"block {index} failed: lost the connection to the Dask scheduler ({text(exc)})")
    if isinstance(exc, OSError):
        return exc  # the task's own I/O error: run() names the store
    return BlockFailed(f"block {index} failed: {text(exc)}")


def _cluster_state_function() -> Callable:
    """A function for ``Client.run_on_scheduler``: the number of workers, and key -> (worker, seconds on it at
    least) for the tasks on workers.

    The time is the task's run time at its worker's last heartbeat (0 if not
    yet reported as executing) plus the time since that heartbeat, so a
    worker that hangs (or was stopped) and stops heartbeating counts too.
    Defined in here so that it travels by value: a scheduler started
    elsewhere need not import bigdens.
    """
    def cluster_state(dask_scheduler=None) -> tuple[int, dict]:
        import time as _time

        now = _time.time()
        tasks = {}
        for ws in dask_scheduler.workers.values():
            silent = max(0.0, now - ws.last_seen)
            for ts in ws.processing:
                tasks[ts.key] = (ws.address, silent + ws.executing.get(ts, 0.0))
        return len(dask_scheduler.workers), tasks

    return cluster_state


def _run_tasks(client, fn: Callable, indices: list[int], *, progress: bool, desc: str,
               timeout: float | None = None, **kwargs) -> Iterator[dict]:
    """Run ``fn(index, **kwargs)`` for every index, yielding results as they finish.

    On a cluster, a block running longer than :func:`block_timeout` (``timeout``
    if given) has its worker restarted and runs again.  The
    :data:`BLOCK_ATTEMPTS`-th timeout of one block, a block whose workers kept
    dying (Dask's ``KilledWorker``), no worker at all for as long as the
    timeout, a lost scheduler, or an exception of the task (other than
    ``OSError`` and :class:`BigdensError`, which pass unchanged) raises
    :class:`BlockFailed`.  Remaining blocks are cancelled however it ends.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(indices), unit="block", desc=desc, disable=None if progress else True, smoothing=0.1)
    with bar:
        if client is None:
            for i in indices:
                try:
                    res = fn(i, **kwargs)
                except Exception as exc:
                    raise _block_error(i, exc) from exc
                yield res
                bar.update()
            return
        futures = client.map(fn, indices, pure=False, **kwargs)
        try:
            yield from _gather(client, futures, dict(zip((f.key for f in futures), indices)), bar,
                               timeout=timeout)
        finally:
            client.cancel([f for f in futures if not f.done()])


def _gather(client, futures: list, index_of: dict, bar, *, timeout: float | None) -> Iterator[dict]:
    # Results as they finish; every STUCK_POLL_S, a look for stuck blocks.
    import queue

    finished: queue.SimpleQueue = queue.SimpleQueue()
    for fut in futures:
        fut.add_done_callback(finished.put)
    watch = _Watch(client, index_of, timeout)
    left = len(futures)
    check_at = time.monotonic() + STUCK_POLL_S
    while left:
        try:
            fut = finished.get(timeout=max(0.0, check_at - time.monotonic()))
        except queue.Empty:
            fut = None
        if fut is not None and fut.status not in ("finished", "error", "cancelled"):
            # Its result was lost with its worker after it finished: the block runs again.
            fut.add_done_callback(finished.put)
        elif fut is not None:
            i = index_of[fut.key]
            res = None
            try:  # a finished block's result is fetched from its worker, which may hang meanwhile
                res = fut.result(timeout=watch.fetch_timeout() if fut.status == "finished" else None)
            except TimeoutError as exc:
                if fut.status != "finished":
                    raise _block_error(i, exc) from exc
                watch.unreachable(fut, i)
                fut.add_done_callback(finished.put)  # fetched again once its worker is restarted
            except Exception as exc:
                raise _block_error(i, exc) from exc
            if res is not None:
                left -= 1
                watch.finished(res)
                yield res
                bar.update()
        if time.monotonic() >= check_at:
            watch.check()
            check_at = time.monotonic() + STUCK_POLL_S


class _Watch:
    """Restarts the workers of blocks that run longer than the timeout; stops the run when that does not help."""

    def __init__(self, client, index_of: dict, fixed: float | None):
        self.client = client
        self.index_of = index_of
        self.fixed = fixed
        self.slowest: float | None = None
        self.timeouts: dict[int, int] = {}
        self.no_worker_since: float | None = None
        self.state = _cluster_state_function()

    def finished(self, res) -> None:
        took = getattr(res, "total_s", 0.0)  # a TaskReport's (scale_block and other tasks report none)
        if took > 0:
            self.slowest = max(self.slowest or 0.0, took)

    def fetch_timeout(self) -> float:
        """Seconds to wait for a finished block's result (a small dict) from its worker."""
        return min(block_timeout(self.slowest, self.fixed), RESULT_TIMEOUT_S)

    def unreachable(self, fut, i: int) -> None:
        """Block ``i`` finished but its worker does not hand over the result: restart the worker."""
        limit = self.fetch_timeout()
        self.timeouts[i] = self.timeouts.get(i, 0) + 1
        if self.timeouts[i] >= BLOCK_ATTEMPTS:
            raise BlockFailed(f"block {i} failed: its result could not be fetched from its worker within "
                              f"{limit:.0f} s, {self.timeouts[i]} times (the worker was restarted each time)")
        holders = list(self.client.who_has([fut]).get(fut.key, ()))
        warnings.warn(f"the worker holding the result of block {i} ({', '.join(holders) or '?'}) does not answer "
                      f"within {limit:.0f} s: restarting it; the block runs again", stacklevel=2)
        if holders:
            self.client.restart_workers(holders, timeout=RESTART_TIMEOUT_S, raise_for_error=False)

    def check(self) -> None:
        limit = block_timeout(self.slowest, self.fixed)
        if self.state is None:
            return
        try:
            n_workers, on_workers = self.client.run_on_scheduler(self.state)
        except (OSError, TimeoutError):
            return  # the scheduler does not answer now: the futures tell if it is gone
        except Exception as exc:  # e.g. a scheduler that refuses to run functions
            self.state = None
            warnings.warn(f"cannot watch for stuck blocks: the Dask scheduler does not answer ({type(exc).__name__}: "
                          f"{exc}); a block that hangs is not restarted", stacklevel=2)
            return
        now = time.monotonic()
        if n_workers:
            self.no_worker_since = None
        elif self.no_worker_since is None:
            self.no_worker_since = now
        elif now - self.no_worker_since > limit:
            raise BlockFailed(f"no Dask worker for {now - self.no_worker_since:.0f} s: the workers died and none "
                              "came back")
        stuck = {}
        for key, (worker, ran) in on_workers.items():
            if key in self.index_of and ran > limit:
                i = self.index_of[key]
                self.timeouts[i] = self.timeouts.get(i, 0) + 1
                if self.timeouts[i] >= BLOCK_ATTEMPTS:
                    raise BlockFailed(f"block {i} failed: no result within {limit:.0f} s, {self.timeouts[i]} times "
                                      "(its worker was restarted each time; if blocks are this slow, give a longer "
                                      "--block-timeout)")
                stuck[worker] = i
        if stuck:
            warnings.warn(f"no result within {limit:.0f} s: restarting the worker of "
                          + ", ".join(f"block {i} ({w})" for w, i in stuck.items()) + "; the blocks run again",
                          stacklevel=2)
            self.client.restart_workers(list(stuck), timeout=RESTART_TIMEOUT_S, raise_for_error=False)

