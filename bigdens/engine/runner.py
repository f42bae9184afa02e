"""The inference engine: a structure in, a Zarr store of density and σ out.

Data flow (DESIGN §8)::

    structure → grid → chunk-aligned blocks → per block, one task:
        halo atoms → numba descriptors → BNN with S samples seeded by (seed, block)
        → write its region of every variable and its per-atom sums (Voronoi cells,
          per sample: bigdens.charges) → record the block in the ledger
    → on completion: per-atom ``charge`` and ``charge_std`` from the blocks' sums

The driver writes the structure into the store first; a task receives only the
store path, its block index and a small dict of run settings.  Each worker
process reads the atoms once and builds its cell list once (cached per store
and run), and loads the model once (cached per file and hash), so positions of
millions of atoms are never sent with tasks.  Memory per task is bounded by
the block size (the network runs over ``batch`` points at a time).

Blocks run on a :class:`distributed.LocalCluster` of processes, on an existing
cluster (``scheduler_file``), or, with ``workers=0``, one after the other in
this process (the reference the tests compare the cluster with: the numbers
are bit for bit the same).
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .._version import __version__
from .. import store as zstore
from .. import storelock
from ..config import DEFAULT_SPACING, PredictConfig
from ..bnn import epistemic_threshold, resolve_device
from ..domain import DomainReport, OutOfDomainError, check_after, check_before, renormalization_refusal
from ..errors import BigdensError, InputError, Interrupted, RunError, SetupError
from ..thermal import bond_spread

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ..bnn import DensityModel
    from ..resources import Estimate


# -- per-process caches (one worker process serves many tasks) ----------------------------

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], "DensityModel"] = {}
_CONTEXTS: dict[tuple[str, str, int | None], "_Context"] = {}
#: Contexts kept per process (a long-lived worker may serve several runs).
_MAX_CONTEXTS = 4


def load_model(path: str | Path, model_hash: str) -> "DensityModel":
    """The model at ``path``, loaded once per process (cached by path and file hash)."""
    from ..bnn import load

    key = (str(Path(path).resolve()), model_hash)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = load(path)
            model.net.eval()
    return model


@dataclass
class _Context:
    """What a worker needs for every block of one run, built once per process."""

    grid: object
    blocks: list
    atoms: object  # bigdens.atomtiles.TiledAtoms: the store's atoms, read tile by tile
    arrays: dict
    model: "DensityModel"
    device: str


def _set_threads(n: int) -> None:
    # The nanny sets OMP/MKL threads to 1, but numba and torch need an explicit
    # count; numba's is per calling thread, so this runs in the task's thread.
    import numba
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def _check_run(job: dict, what: str) -> None:
    """Raise unless the store still belongs to this run (its ``run_id`` attribute; one small file read).

    Called right before every write of a block and of a ledger entry, so a run
    whose store was replaced by another run (``--overwrite`` after its lock was
    judged stale or deleted) stops without writing into the new store.
    """
    attrs = zstore.read_attrs(job["store"])
    now = None if attrs is None else attrs.get("run_id")
    if now != job["run_id"]:
        other = "removed" if attrs is None else f"now run {now}"
        raise RunError(f"the store {job['store']!r} was replaced by another run while run {job['run_id']} was "
                       f"writing it ({other}); this run stopped before {what} and wrote nothing more: let the "
                       "other run finish, or start again with --overwrite")


def _unit(index: int, job: dict) -> tuple[int | None, int]:
    """(frame, block) of work unit ``index``: frame None for a single structure (the unit is the block)."""
    if job.get("n_frames") is None:
        return None, index
    frame, block = divmod(index, job["n_blocks"])
    return frame, block


def _frame_disorder(job: dict, frame: int | None) -> float | None:
    """The bond spread (Å) the network gets for ``frame``: per frame for a trajectory, else the structure's."""
    disorder = job.get("disorder")
    return disorder[frame] if frame is not None and isinstance(disorder, list) else disorder


def _context(job: dict, frame: int | None = None) -> _Context:
    """The worker's context of one run and frame (None: a single structure), built once per process.

    It holds no per-atom array of the whole structure: the atoms are read from
    the store's tiles block by block (:mod:`bigdens.atomtiles`), so a worker's
    memory does not grow with the number of atoms.  The driver checked the
    tiles against the positions when it created or resumed the store.
    """
    from ..blocks import make_blocks
    from ..grid import Grid

    key = (job["store"], job["run_id"], frame)
    with _LOCK:
        ctx = _CONTEXTS.get(key)
    if ctx is not None:
        return ctx
    _check_run(job, "reading the atoms")
    attrs = zstore.read_attrs(job["store"])
    cell = np.asarray(attrs["cell"], dtype=np.float64)
    grid = Grid(cell=cell, shape=tuple(attrs["grid_shape"]))
    ctx = _Context(
        grid=grid,
        blocks=make_blocks(grid.shape, tuple(attrs["run"]["block"])),
        atoms=zstore.open_tiles(job["store"], attrs, frame),
        arrays=zstore.open_variables(job["store"]),
        model=load_model(job["model"], job["model_hash"]),
        device=resolve_device(job["device"]),
    )
    with _LOCK:
        while len(_CONTEXTS) >= _MAX_CONTEXTS:
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
        _CONTEXTS[key] = ctx
    return ctx


# -- the tasks ------------------------------------------------------------------------------

def _block_features(halo, ctx: _Context, block, params):
    """The block's descriptors, (n_points, n_features) float32: a numpy array, or on ``--device cuda`` a torch
    CUDA tensor computed there (:mod:`bigdens._descriptor_cuda`), so the block stays on the GPU up to the network.
    """
    if ctx.device == "cuda":
        import torch

        from .._descriptor_cuda import compute_block_cuda

        return torch.as_tensor(compute_block_cuda(halo, ctx.grid, block, params), device="cuda").reshape(
            -1, params.n_features)
    from ..descriptors import compute_block

    return compute_block(halo, ctx.grid, block, params).reshape(-1, params.n_features)


def predict_block(index: int, *, job: dict) -> dict:
    """Compute, write and record one block (one Dask task).

    Parameters
    ----------
    index
        Work unit: the block index (C order of block positions); in a trajectory
        store ``frame · n_blocks + block`` (:func:`bigdens.store.unit_index`).
    job
        Run settings: store path, run id, model path and hash, samples, seed,
        device, batch, threads, the bond spread ``disorder`` (a list per frame
        for a trajectory), ``n_frames`` and ``n_blocks`` (see :func:`predict`).

    Returns
    -------
    dict
        The block's ledger entry plus stage timings (s): ``t_setup`` (imports,
        atoms, cell list and model, once per process), ``t_descriptors``,
        ``t_charges`` (the Voronoi assignment of the points), ``t_bnn`` (the
        network, with the per-atom sums of the samples), ``t_write`` (the
        variables, the block's charges file and its ledger entry), and
        ``n_points``, ``n_halo``, ``n_read`` (atom rows read from the store's tiles for it), ``pid``,
        ``max_rss_mb``,
        ``slurm_job_id`` (the SLURM job the worker runs in, or None).
    """
    from ..blocks import block_halo
    from ..charges import assign_block, block_sums

    ts = time.perf_counter()
    _set_threads(job["threads"])
    unit = index
    frame, index = _unit(unit, job)
    ctx = _context(job, frame)
    t0 = time.perf_counter()
    block = ctx.blocks[index]
    params = ctx.model.params
    n_read = ctx.atoms.rows_read
    halo = block_halo(ctx.atoms, None, ctx.grid, block, params.r_cut)
    feats = _block_features(halo, ctx, block, params)
    n_halo = len(halo.numbers)
    del halo
    t1 = time.perf_counter()
    # Each point's Voronoi owner (nearest atom), for the per-atom charges (bigdens.charges).
    owners, labels = assign_block(ctx.atoms, None, ctx.grid, block)
    t_assign = time.perf_counter() - t1
    n_read = ctx.atoms.rows_read - n_read  # atom rows this block read from the store (tiles not yet cached)
    mean, epi, ale, deviations = ctx.model.predict_grouped(
        feats, labels, len(owners), samples=job["samples"], seed=job["seed"], block_index=index,
        device=ctx.device, batch=job["batch"], disorder=_frame_disorder(job, frame))
    del feats
    t2 = time.perf_counter()
    epi64 = epi.astype(np.float64)
    ale64 = ale.astype(np.float64)
    values = {
        "density": mean,
        "density_std_epistemic": np.sqrt(epi64).astype(np.float32),
        "density_std_aleatoric": np.sqrt(ale64).astype(np.float32),
        "density_std": np.sqrt(epi64 + ale64).astype(np.float32),
    }
    values = {k: v.reshape(block.shape) for k, v in values.items()}
    what = f"block {index}" if frame is None else f"block {index} of frame {frame}"
    _check_run(job, f"writing {what}")
    sums = zstore.write_block(ctx.arrays, block, values, path=job["store"], frame=frame)
    _check_run(job, f"writing {what}'s charges")
    charges = zstore.write_block_charges(job["store"], unit, owners, block_sums(mean, labels, len(owners)),
                                         deviations)
    std = values["density_std"]
    where = np.unravel_index(int(np.argmax(std)), block.shape)
    std_epi = values["density_std_epistemic"]
    where_epi = np.unravel_index(int(np.argmax(std_epi)), block.shape)
    threshold = epistemic_threshold(ctx.model)
    entry = {
        "block": index,
        "start": list(block.start),
        "stop": list(block.stop),
        "checksums": sums,
        "raw_checksum": sums["density"],
        "density_sum": float(mean.sum(dtype=np.float64)),
        "max_std": float(std[where]),
        "max_std_index": [int(a + w) for a, w in zip(block.start, where)],
        "max_std_epistemic": float(std_epi[where_epi]),
        "max_std_epistemic_index": [int(a + w) for a, w in zip(block.start, where_epi)],
        # Sum of the negative mean values (e/Å³; ≤ 0): the domain check's negative electrons.
        "negative_sum": float(mean[mean < 0].sum(dtype=np.float64)),
        # Points unlike the model's validation data (None: the model has no epistemic reference).
        "n_epistemic_high": None if threshold is None else int(np.count_nonzero(std_epi > np.float32(threshold))),
        "scale": 1.0,
        # The block's per-atom sums (bigdens.charges): atoms owning its points, digest of their file.
        "charges": charges,
    }
    if frame is not None:
        entry.update(unit=unit, frame=frame)
    _check_run(job, f"recording {what} in the ledger")
    zstore.write_ledger(job["store"], unit, entry)
    t3 = time.perf_counter()
    return {**entry, "t_setup": t0 - ts, "t_descriptors": t1 - t0, "t_bnn": t2 - t1 - t_assign, "t_write": t3 - t2,
            "t_charges": t_assign, "n_points": block.n_points, "n_halo": n_halo, "n_read": n_read,
            "pid": os.getpid(),
            "max_rss_mb": peak_rss_mb(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB.

    Linux's ``VmHWM`` (the high-water mark of this process's own memory);
    ``getrusage``'s ``ru_maxrss`` is the fallback elsewhere.  ``ru_maxrss``
    is not used on Linux because a process started by fork + exec (a Dask
    worker) inherits its parent's peak in it.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale_block(index: int, *, job: dict, factor: float) -> dict:
    """Multiply one block's mean density by ``factor`` (the ``--renormalize`` pass).

    Exact under interruption: the ledger first records the checksum the
    scaled block will have, so a rerun tells raw, scaled and torn blocks apart.
    """
    _set_threads(job["threads"])
    ctx = _context(job)
    block = ctx.blocks[index]
    entry = zstore.read_ledger_entry(job["store"], index)
    if entry.get("scale") == factor and "pending" not in entry:
        return entry
    arr = ctx.arrays["density"]
    current = arr[block.slices]
    have = zstore.checksum(current)
    pending = entry.get("pending")
    if pending is not None and pending["scale"] == factor and have == pending["checksum"]:
        scaled = current  # written before an interruption, ledger not yet updated
    elif have == entry["raw_checksum"]:
        scaled = (current.astype(np.float64) * factor).astype(np.float32)
        entry = {**entry, "pending": {"scale": factor, "checksum": zstore.checksum(scaled)}}
        _check_run(job, f"recording block {index} in the ledger")
        zstore.write_ledger(job["store"], index, entry)
        _check_run(job, f"writing block {index}")
        try:
            arr[block.slices] = scaled
        except OSError as exc:
            raise RunError(f"cannot write block {index} to {job['store']!r} ({exc.strerror or exc}); free space "
                           "and rerun with --resume --renormalize") from None
        if zstore.checksum(arr[block.slices]) != entry["pending"]["checksum"]:
            raise RunError(f"block {index} reads back differently after renormalization; rerun with --resume")
    else:
        raise RunError(f"block {index} of {job['store']!r} matches neither its raw nor its scaled checksum; "
                       "run `bigdens verify` and start again with --overwrite")
    entry = {k: v for k, v in entry.items() if k != "pending"}
    entry["checksums"] = {**entry["checksums"], "density": zstore.checksum(scaled)}
    entry["scale"] = factor
    _check_run(job, f"recording block {index} in the ledger")
    zstore.write_ledger(job["store"], index, entry)
    return entry


# -- the cluster ---------------------------------------------------------------------------

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
    """A block, or the cluster, failed for good (internal: :func:`run` turns it into a :class:`RunError`).

    The message says what failed; :func:`run` adds the ledger state and the ``--resume`` hint.
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

    def finished(self, res: dict) -> None:
        took = sum(res.get(k, 0.0) for k in ("t_setup", "t_descriptors", "t_charges", "t_bnn", "t_write"))
        if took > 0:  # a block's own timing (scale_block reports none)
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


# -- the run -------------------------------------------------------------------------------

@dataclass
class RunSummary:
    """What a prediction did (printed by ``bigdens predict``).

    Lengths Å, electrons, times s, densities e/Å³.
    """

    path: Path
    n_atoms: int
    grid_shape: tuple[int, int, int]
    n_blocks: int
    n_computed: int
    n_done: int
    wall_s: float
    points_computed: int
    n_electrons_expected: float | None
    n_electrons_predicted: float | None
    renormalization_factor: float | None
    max_std: float | None
    max_std_index: list | None
    max_std_position: list | None
    complete: bool
    device: str
    #: Epistemic σ (e/Å³) above which a point is unlike the model's validation data
    #: (its 99.9 % quantile there), and how many points of the grid exceed it (None: the
    #: model has no epistemic reference, or blocks are missing).
    epistemic_threshold: float | None = None
    n_epistemic_high: int | None = None
    max_std_epistemic: float | None = None
    max_std_epistemic_index: list | None = None
    max_std_epistemic_position: list | None = None
    stage_s: dict = field(default_factory=dict)
    max_rss_mb: dict = field(default_factory=dict)
    #: Peak RSS of each worker (pid -> MB) when its first block came back: with
    #: ``max_rss_mb`` it shows whether memory grows over a run.
    first_rss_mb: dict = field(default_factory=dict)
    #: Seconds from the start until the cluster was up (workers started; SLURM jobs queued and running).
    startup_s: float = 0.0
    #: Blocks computed in each SLURM job (job id -> count; None: outside SLURM).
    slurm_jobs: dict = field(default_factory=dict)
    #: The domain checks (:mod:`bigdens.domain`): before the run, and after it once complete.
    domain: DomainReport = field(default_factory=DomainReport)
    #: True when ``allow_out_of_domain`` accepted a run outside the domain.
    accepted_out_of_domain: bool = False
    #: The store's ``charges`` attribute once complete (sum of the per-atom charges, largest σ; e), else None.
    charges: dict | None = None
    #: A trajectory's frames (None: one structure), one dict each: ``frame`` (position in the store),
    #: ``index`` (in the input file), ``time``, ``step``, ``bond_spread`` (Å), ``n_electrons_predicted``
    #: and ``charge_sum`` (e; None until complete).  ``n_blocks``/``n_done`` then count (frame, block) units.
    frames: list | None = None
    #: The frame (position in the store) holding ``max_std`` (trajectories only).
    max_std_frame: int | None = None

    @property
    def in_domain(self) -> bool:
        return self.domain.in_domain

    @property
    def n_points(self) -> int:
        """Grid points of the store (every frame's, for a trajectory)."""
        g = self.grid_shape
        return g[0] * g[1] * g[2] * (1 if self.frames is None else len(self.frames))

    @property
    def points_per_s(self) -> float:
        return self.points_computed / max(self.wall_s, 1e-9)

    def _frame_lines(self) -> list[str]:
        # A trajectory: one line per frame with its electrons (at most 20 frames shown, then the range).
        if self.frames is None:
            return []
        exp = "?" if self.n_electrons_expected is None else f"{self.n_electrons_expected:g}"
        out = [f"frames: {len(self.frames)}; electrons expected {exp} per frame"]
        for f in self.frames[:20]:
            when = "".join(f", {k} {f[k]:g}" for k in ("time", "step") if f[k] is not None)
            n = f["n_electrons_predicted"]
            out.append(f"  frame {f['frame']} (file frame {f['index']}{when}): electrons predicted "
                       + ("-" if n is None else f"{n:.4f}"))
        if len(self.frames) > 20:
            got = [f["n_electrons_predicted"] for f in self.frames if f["n_electrons_predicted"] is not None]
            span = f": electrons {min(got):.4f} to {max(got):.4f}" if got else ""
            out.append(f"  ... {len(self.frames) - 20} more frames (all in the store's attributes){span}")
        return out

    def format(self) -> str:
        units = "blocks" if self.frames is None else f"(frame, block) units of {len(self.frames)} frames"
        per = "" if self.frames is None else " per frame"
        g = self.grid_shape
        lines = [
            f"store: {self.path} ({'complete' if self.complete else 'INCOMPLETE'}: "
            f"{self.n_done}/{self.n_blocks} {units}, {self.n_computed} computed now)",
            f"atoms: {self.n_atoms}; grid {g} = {g[0] * g[1] * g[2]:,} points{per}; device {self.device}",
            f"wall time {self.wall_s:.2f} s = {self.points_per_s:,.0f} points/s "
            f"(descriptors {self.stage_s.get('descriptors', 0):.2f} s, network {self.stage_s.get('bnn', 0):.2f} s, "
            f"write {self.stage_s.get('write', 0):.2f} s, worker setup {self.stage_s.get('setup', 0):.2f} s; "
            "summed over tasks)",
        ]
        in_jobs = {k: v for k, v in self.slurm_jobs.items() if k is not None}
        if in_jobs:
            lines.append(f"SLURM: {sum(in_jobs.values())} blocks computed in {len(in_jobs)} job(s) "
                         f"({', '.join(f'{k}: {v}' for k, v in sorted(in_jobs.items()))})")
        if self.n_electrons_predicted is not None:
            exp = "?" if self.n_electrons_expected is None else f"{self.n_electrons_expected:g}"
            line = f"electrons: expected {exp}, predicted {self.n_electrons_predicted:.4f}"
            if self.renormalization_factor is not None:
                line += f" (renormalized by a factor {self.renormalization_factor:.6f})"
            lines.append(line)
        lines += self._frame_lines()
        if self.max_std is not None:
            pos = ", ".join(f"{v:.3f}" for v in self.max_std_position)
            where = "" if self.max_std_frame is None else f" of frame {self.max_std_frame}"
            lines.append(f"max σ {self.max_std:.4g} e/Å³ at grid point {tuple(self.max_std_index)}{where} = "
                         f"({pos}) Å")
        if self.max_std_epistemic is not None:
            pos = ", ".join(f"{v:.3f}" for v in self.max_std_epistemic_position)
            lines.append(f"max epistemic σ {self.max_std_epistemic:.4g} e/Å³ at grid point "
                         f"{tuple(self.max_std_epistemic_index)} = ({pos}) Å")
        if self.n_epistemic_high is not None:
            share = 100.0 * self.n_epistemic_high / self.n_points
            lines.append(f"epistemic σ above the model's validation 99.9 % quantile ({self.epistemic_threshold:.3g} "
                         f"e/Å³) at {self.n_epistemic_high:,} points = {share:.3g} % (about 0.1 % where the structure "
                         "is like the validation data; more marks new environments: density_std_epistemic shows where)")
        if self.charges is not None and self.frames is None:
            lines.append(f"per-atom charges (Voronoi): sum {self.charges['n_electrons']:.4f} e, largest σ "
                         f"{self.charges['max_charge_std']:.3g} e (`bigdens charges {self.path}` lists them)")
        elif self.charges is not None:
            lines.append(f"per-atom charges (Voronoi) of every frame, largest σ "
                         f"{max(v for v in self.charges['max_charge_std'] if v is not None):.3g} e "
                         f"(`bigdens charges {self.path} --frame K` lists them)")
        if not self.domain.in_domain:
            state = "accepted by --allow-out-of-domain" if self.accepted_out_of_domain else "store marked in_domain: false"
            lines.append(f"OUT OF DOMAIN ({state}): {self.domain.message()}")
        return "\n".join(lines)


def run_grid(atoms: "Atoms", config: PredictConfig, model: "DensityModel | None" = None):
    """The grid a run uses: ``config.grid``, ``config.spacing``, else the model's training spacing.

    Without a model (or a recorded spacing) the fallback is :data:`DEFAULT_SPACING`.
    """
    from ..grid import make_grid

    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if config.grid is not None:
        return make_grid(cell, shape=config.grid)
    spacing = config.spacing
    if spacing is None:
        trained = None if model is None else model.info.get("grid_spacing")
        spacing = float(np.max(trained)) if trained else DEFAULT_SPACING
    return make_grid(cell, spacing=spacing)


def predict(atoms: "Atoms | str | Path", config: PredictConfig | None = None, /, **settings) -> Path:
    """Predict the density of ``atoms`` into a Zarr store; returns the store's path.

    Parameters
    ----------
    atoms : ase.Atoms, or a structure file any format ASE reads
        Periodic structure, positions Å.
    config : PredictConfig, optional
        Run settings; or give them as keywords instead (the fields of
        :class:`~bigdens.config.PredictConfig`), e.g.
        ``predict(atoms, out="al.zarr", mc_samples=20, workers=2)``.

    Returns
    -------
    Path
        The store (see :mod:`bigdens.store`); open it with ``xarray.open_zarr``.
    """
    if config is None:
        config = PredictConfig(**settings)
    elif settings:
        raise SetupError(f"give either a PredictConfig or keyword settings, not both (got {sorted(settings)})")
    if isinstance(atoms, (str, Path)):
        from .. import structure

        atoms = structure.read(atoms)
    summary = run(atoms, config)
    if summary.complete and not summary.in_domain and not config.allow_out_of_domain:
        raise OutOfDomainError(out_of_domain_message(summary), summary.domain)
    return summary.path


def out_of_domain_message(summary: RunSummary) -> str:
    """The one line for a finished run outside the model's domain."""
    return (f"{summary.domain.message()}; the store {str(summary.path)!r} is written and marked in_domain: false: "
            "check density_std_epistemic and the structure, or pass --allow-out-of-domain to accept it")


#: Composition tolerance before predict warns that a structure lies outside the training data.
COMPOSITION_TOLERANCE = 0.02


def _check_size(atoms: "Atoms", model: "DensityModel", grid, block: tuple[int, int, int],
                config: PredictConfig, *, frames: int = 1) -> "Estimate":
    """Estimate memory per worker, store size, blocks and time (all ``frames``); refuse what cannot fit
    (:mod:`bigdens.resources`)."""
    from dataclasses import replace

    from ..resources import check, estimate_predict, memory_per_local_worker

    estimate = estimate_predict(n_atoms=len(atoms), volume=grid.volume, grid_shape=grid.shape, block_shape=block,
                                samples=config.mc_samples, n_features=model.params.n_features,
                                r_cut=model.params.r_cut, hidden=tuple(model.arch.hidden), kind=model.arch.kind,
                                batch=config.batch)
    if frames > 1:  # memory per worker is one frame's; disk, tasks and time scale with the frames
        estimate = replace(estimate, disk=estimate.disk * frames, n_tasks=estimate.n_tasks * frames,
                           core_seconds=estimate.core_seconds * frames)
    if config.scheduler_file is not None:
        memory = None  # the workers of someone else's cluster: unknown
    elif config.profile is not None:
        from dask.utils import parse_bytes

        jq = config.profile.jobqueue
        memory = parse_bytes(str(jq["memory"])) // max(1, int(jq.get("processes") or 1))
    else:
        memory = memory_per_local_worker(config.workers)
    check(estimate, what="the prediction", memory_per_worker=memory, disk_at=config.out,
          skip=config.skip_size_check)
    return estimate


def _check_domain_before(atoms: "Atoms", model: "DensityModel", grid, config: PredictConfig,
                         n_expected: float | None) -> DomainReport:
    """The domain checks that need no block (:func:`bigdens.domain.check_before`); warns, or refuses.

    Raises
    ------
    OutOfDomainError
        If a check fails and ``config.allow_out_of_domain`` is False (nothing is written).
    """
    if not config.domain_check:
        return DomainReport()
    report = check_before(atoms, model, grid, n_expected=n_expected, seed=config.seed)
    for text in report.warnings:
        warnings.warn(text, stacklevel=3)
    if not report.in_domain and not config.allow_out_of_domain:
        raise OutOfDomainError(f"{report.message()}; nothing was computed: check the structure and its units, or "
                               "pass --allow-out-of-domain to predict it anyway", report)
    return report


def _check_domain_after(ledger: dict, grid, model: "DensityModel", n_pred: float,
                        n_expected: float | None) -> DomainReport:
    """The exact domain checks of a finished run, from the ledger's per-block sums."""
    negatives = [e.get("negative_sum") for e in ledger.values()]
    return check_after(
        n_points=grid.n_points, n_flagged=_flagged_count(ledger, model), n_electrons=n_pred, n_expected=n_expected,
        negative_electrons=None if None in negatives else max(0.0, -sum(negatives) * grid.dv))


def _flagged_count(ledger: dict, model: "DensityModel") -> int | None:
    """Grid points above the model's epistemic threshold, summed over the ledger (None: no threshold, or a
    block recorded by a bigdens that did not count them)."""
    highs = [e.get("n_epistemic_high") for e in ledger.values()]
    return sum(highs) if epistemic_threshold(model) is not None and None not in highs else None


def _warn_composition(numbers, info: dict) -> None:
    """Warn when a species' atom fraction lies outside the range the model was trained on."""
    from ..lineage import composition, training_compositions

    seen = training_compositions(info)
    if len(seen) < 2:  # one species: nothing to extrapolate in composition
        return
    for sym, frac in composition(numbers).items():
        lo, hi = seen.get(sym, (0.0, 0.0))
        if not lo - COMPOSITION_TOLERANCE <= frac <= hi + COMPOSITION_TOLERANCE:
            warnings.warn(f"the structure is {frac:.0%} {sym}, outside the model's training compositions "
                          f"({lo:.0%}–{hi:.0%} {sym}); the prediction extrapolates: expect larger errors and "
                          "check density_std", stacklevel=3)


def run(atoms: "Atoms", config: PredictConfig) -> RunSummary:
    """:func:`predict`, returning a :class:`RunSummary` of what was done.

    ``atoms`` is one structure, or a :class:`bigdens.structure.Trajectory` of
    frames with one cell (:func:`bigdens.structure.read_trajectory`): the store
    then has a ``frame`` dimension and the work units are (frame, block)
    pairs (see :mod:`bigdens.store`).  Frame k of a trajectory store equals,
    bit for bit, a prediction of frame k alone with the same settings: the
    Monte Carlo samples are seeded by (seed, block) in every frame, and the
    bond spread the network gets is the frame's own.

    The run holds the output store's lock (:mod:`bigdens.storelock`) from
    before it looks at the output path until it returns or raises.

    Raises
    ------
    SetupError
        Before anything is written: bad structure, model, grid, settings, an
        existing output that the flags do not allow replacing or resuming, a
        store that another run is writing (the message names it).
    RunError
        While running (e.g. disk full): the ledger stays consistent and
        ``resume=True`` continues the run.
    """
    with ExitStack() as held:  # the store's lock, released however the run ends
        return _run(atoms, config, held)


@dataclass
class _Plan:
    """The frames of a run and its work units (internal).

    ``trajectory`` is None for a single structure (units are its blocks, the
    store has no frame dimension); else units are (frame, block) pairs
    numbered ``frame · n_blocks + block``.
    """

    frames: list
    trajectory: object
    n_blocks: int = 0

    @property
    def n_frames(self) -> int | None:
        return None if self.trajectory is None else len(self.frames)

    @property
    def n_units(self) -> int:
        return len(self.frames) * self.n_blocks

    def frame_ledgers(self, ledger: dict) -> list[dict]:
        """The ledger of each frame, keyed by block index (one for a single structure)."""
        nb = self.n_blocks
        return [{u - k * nb: e for u, e in ledger.items() if u // nb == k} for k in range(len(self.frames))]


def _plan(atoms, config: PredictConfig) -> _Plan:
    """Validate a structure or :class:`~bigdens.structure.Trajectory` and what a trajectory run allows."""
    from .. import structure

    if isinstance(atoms, structure.Trajectory):
        if len(atoms) == 0:
            raise InputError("the trajectory holds no frames (an empty trajectory)")
        structure.check_frames(atoms.frames, atoms.index)
        if config.renormalize:
            raise SetupError("--renormalize is not supported with --frames yet: predict without it (the store "
                             "records each frame's electron count)")
        plan = _Plan(frames=list(atoms.frames), trajectory=atoms)
    else:
        plan = _Plan(frames=[atoms], trajectory=None)
    for k, frame in enumerate(plan.frames):
        try:
            structure.validate(frame)
        except InputError as exc:
            if plan.trajectory is None:
                raise
            raise InputError(f"frame {plan.trajectory.index[k]}: {exc}") from None
    return plan


def _disorders(plan: _Plan) -> list[float | None]:
    """Each frame's first-shell bond spread (Å, :func:`bigdens.thermal.bond_spread`); None where undefined."""
    out = []
    for atoms in plan.frames:
        spread = bond_spread(atoms.positions, atoms.numbers, np.asarray(atoms.cell[:], dtype=np.float64))
        out.append(spread if math.isfinite(spread) else None)  # NaN: no atom has a neighbour in reach
    return out


def _frame_attributes(plan: _Plan, cell: np.ndarray, model: "DensityModel", disorders: list) -> dict:
    """The attributes a trajectory store adds (none for a single structure)."""
    if plan.trajectory is None:
        return {}
    t = plan.trajectory
    numbers = np.asarray(plan.frames[0].numbers)
    return {
        "frames": {"index": list(t.index), "time": t.time, "step": t.step,
                   "structure_hash": [zstore.structure_hash(cell, a.positions, numbers) for a in plan.frames]},
        "bond_spread": disorders,
        "aleatoric_disorder_factor": [model.scaling.aleatoric_factor(d) for d in disorders],
    }


def _identity(plan: _Plan, cell: np.ndarray, grid, config: PredictConfig, *, model_hash: str, block, chunk) -> dict:
    """The store's ``run`` attribute: what fixes every unit's numbers (``--resume`` must match it)."""
    numbers = np.asarray(plan.frames[0].numbers)
    identity = {
        "structure_hash": zstore.trajectory_hash(cell, (a.positions for a in plan.frames), numbers),
        "grid_shape": list(grid.shape),
        "model_hash": model_hash,
        "seed": config.seed,
        "mc_samples": config.mc_samples,
        "block": list(block),
        "chunk": list(chunk),
    }
    if plan.trajectory is not None:
        identity["frames"] = list(plan.trajectory.index)
    return identity


def _open_target(out: Path, identity: dict, config: PredictConfig, held: ExitStack) -> tuple[str, str, dict]:
    """Lock the output store (onto ``held``) and decide what to do with it: (mode, run id, ledger).

    Mode as :func:`bigdens.store.check_target`; the ledger is the store's when resuming, else empty.
    """
    zstore.check_folder(out)
    # One writer per store: lock before the path is looked at, so a run that is refused touches nothing.
    run_id = (zstore.read_attrs(out) or {}).get("run_id") if config.resume else uuid.uuid4().hex
    held.enter_context(storelock.hold(out, run_id=run_id))
    mode = zstore.check_target(out, resume=config.resume, overwrite=config.overwrite)
    ledger: dict = {}
    if mode == "resume":
        attrs = zstore.read_attrs(out)
        zstore.check_identity(attrs, identity)
        if int(attrs.get("format_version", 1)) < 2:
            raise zstore.old_format_error(out, attrs)
        # Workers trust the atom tiles (they read only their blocks' neighbourhoods): check them here, once.
        problems = zstore.check_metadata(out, attrs)
        if problems:
            raise zstore.problems_error(out, problems)
        ledger = zstore.read_ledger(out)
        if not config.renormalize and any(e.get("scale", 1.0) != 1.0 or "pending" in e for e in ledger.values()):
            raise SetupError(f"{str(out)!r} was renormalized; resume it with --renormalize")
        run_id = attrs["run_id"]
    return mode, run_id, ledger


def _run(atoms, config: PredictConfig, held: ExitStack) -> RunSummary:
    """:func:`run`; the store's lock goes onto ``held``."""
    import torch

    from .._files import file_hash
    from ..descriptors import species_index

    plan = _plan(atoms, config)
    atoms = plan.frames[0]  # cell and numbers are every frame's
    numbers = np.asarray(atoms.numbers)
    if config.model is None:
        from ..models import shipped_model_for

        model_path = shipped_model_for(numbers)
    else:
        model_path = config.model
    model_hash = file_hash(model_path) if Path(model_path).is_file() else ""
    model = load_model(model_path, model_hash)
    species_index(numbers, model.params)  # refuses species the model lacks
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    grid = run_grid(atoms, config, model)
    _warn_composition(numbers, model.info)
    if config.device == "cuda" and config.scheduler_file is None:
        resolve_device("cuda")
    device = resolve_device(config.device) if config.scheduler_file is None else config.device
    from ..blocks import block_shape_for, make_blocks

    block = block_shape_for(grid.shape, config.block)
    chunk = block_shape_for(grid.shape, config.chunk)
    _check_size(atoms, model, grid, block, config, frames=len(plan.frames))
    blocks = make_blocks(grid.shape, block)
    plan.n_blocks = len(blocks)
    try:
        from ..chemistry import hgh_valence

        n_expected: float | None = float(hgh_valence(numbers))
    except InputError:
        n_expected = None
    if config.renormalize and n_expected is None:
        raise SetupError("--renormalize needs the valence electron count, but an element has no HGH setup; "
                         "drop --renormalize")
    identity = _identity(plan, cell, grid, config, model_hash=model_hash, block=block, chunk=chunk)
    out = config.out
    mode, run_id, ledger = _open_target(out, identity, config, held)
    # After the cheap checks of --out; on a trajectory, its first frame (the electron counts of every
    # frame are checked after the run).
    before = _check_domain_before(atoms, model, grid, config, n_expected)
    disorders = _disorders(plan)
    disorder = disorders if plan.trajectory is not None else disorders[0]

    todo = [u for u in range(plan.n_units) if mode != "resume" or u not in ledger]
    if config.max_blocks is not None:
        todo = todo[: config.max_blocks]
    t_start = time.perf_counter()
    torch_threads = torch.get_num_threads()
    with ExitStack() as stack:
        client = stack.enter_context(make_client(config, len(todo)))
        startup = time.perf_counter() - t_start  # cluster start (and SLURM queueing)
        if mode != "resume":
            if mode == "overwrite":
                zstore.remove(out)
            attrs = _attributes(atoms, grid, model, model_path, identity, config, run_id=run_id,
                                n_expected=n_expected, domain=before, disorder=disorders[0])
            zstore.create(out, atoms=atoms, grid=grid, chunk=chunk, trajectory=plan.trajectory,
                          attrs={**attrs, **_frame_attributes(plan, cell, model, disorders)})
            ledger = {}
        if config.report is not None:
            from distributed import performance_report

            stack.enter_context(performance_report(filename=str(config.report)))
        if client is None:
            stack.callback(torch.set_num_threads, torch_threads)
        job = {"store": str(Path(out).absolute()), "run_id": run_id, "model": str(Path(model_path).absolute()),
               "model_hash": model_hash, "samples": config.mc_samples, "seed": config.seed,
               "device": config.device, "batch": config.batch, "threads": config.threads_per_worker,
               "disorder": disorder, "n_frames": plan.n_frames, "n_blocks": plan.n_blocks}
        tally = _Tally()
        try:
            for res in _run_tasks(client, predict_block, todo, progress=config.progress, desc="predict",
                                  timeout=config.block_timeout, job=job):
                tally.add(res)
        except BigdensError:
            raise
        except OSError as exc:
            raise RunError(f"block failed while writing {str(out)!r} ({exc}); the ledger is consistent: fix the "
                           "cause and rerun with --resume") from None
        except (BlockFailed, KeyboardInterrupt) as exc:  # KeyboardInterrupt: Ctrl-C, or SIGTERM via bigdens.cli
            raise _stopped(exc, stack, out, plan.n_units,
                           what="blocks" if plan.trajectory is None else "(frame, block) units") from exc
        ledger = zstore.read_ledger(out)
        done = len(ledger) == plan.n_units
        factor = None
        n_pred = _frame_electrons(plan, ledger, grid) if done else None
        domain = before
        if done:
            for k, frame_ledger in enumerate(plan.frame_ledgers(ledger)):
                domain = domain.merge(_check_domain_after(frame_ledger, grid, model, n_pred[k], n_expected))
        if done and config.renormalize:
            factor = n_expected / n_pred[0]
            refusal = renormalization_refusal(factor, allow=config.allow_out_of_domain)
            if refusal is not None:
                domain.reasons.append(refusal)
                factor = None
        if factor is not None:
            rescale = [i for i, e in ledger.items() if e.get("scale") != factor or "pending" in e]
            try:
                for _ in _run_tasks(client, scale_block, sorted(rescale), progress=config.progress,
                                    desc="renormalize", timeout=config.block_timeout, job=job, factor=factor):
                    pass
            except (BlockFailed, KeyboardInterrupt) as exc:
                raise _stopped(exc, stack, out, len(blocks), renormalize=True) from exc
            ledger = zstore.read_ledger(out)
            done = all(e.get("scale") == factor and "pending" not in e for e in ledger.values())
        charges = _write_charges(out, ledger, blocks, grid, n_atoms=len(atoms), samples=config.mc_samples,
                                 n_frames=plan.n_frames) if done else None
    wall = time.perf_counter() - t_start
    summary = _summary(plan, ledger, grid, model, config, out=out, todo=todo, wall=wall, tally=tally, done=done,
                       n_expected=n_expected, n_pred=n_pred, factor=factor, device=device, startup=startup,
                       domain=domain, charges=charges, disorders=disorders)
    _record_result(summary, job, out, config, done=done, n_expected=n_expected, factor=factor)
    return summary


@dataclass
class _Tally:
    """What the finished tasks of a run report: stage times (s, summed), peak RSS per worker (MB), points."""

    stages: dict = field(default_factory=lambda: {"setup": 0.0, "descriptors": 0.0, "charges": 0.0, "bnn": 0.0,
                                                  "write": 0.0})
    rss: dict = field(default_factory=dict)
    first_rss: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)
    computed: int = 0

    def add(self, res: dict) -> None:
        for stage in self.stages:
            self.stages[stage] += res[f"t_{stage}"]
        self.rss[res["pid"]] = max(self.rss.get(res["pid"], 0.0), res["max_rss_mb"])
        self.first_rss.setdefault(res["pid"], res["max_rss_mb"])
        self.computed += res["n_points"]
        self.jobs[res["slurm_job_id"]] = self.jobs.get(res["slurm_job_id"], 0) + 1


def _frame_electrons(plan: _Plan, ledger: dict, grid) -> list[float]:
    """Each frame's predicted electrons (raw density summed in block order × dV), e."""
    return [sum(fl[b]["density_sum"] for b in range(plan.n_blocks)) * grid.dv for fl in plan.frame_ledgers(ledger)]


def _summary(plan: _Plan, ledger: dict, grid, model, config: PredictConfig, *, out, todo, wall, tally: _Tally,
             done: bool, n_expected, n_pred, factor, device, startup, domain, charges, disorders) -> RunSummary:
    """The :class:`RunSummary` of a finished (or stopped) run."""
    best = max(ledger.values(), key=lambda e: e["max_std"], default=None)
    # Stores begun by an older bigdens lack the epistemic fields: leave them out then.
    best_epi = max((e for e in ledger.values() if "max_std_epistemic" in e),
                   key=lambda e: e["max_std_epistemic"], default=None) if done else None
    frames = None
    if plan.trajectory is not None:
        t = plan.trajectory
        frames = [{"frame": k, "index": t.index[k], "time": None if t.time is None else t.time[k],
                   "step": None if t.step is None else t.step[k], "bond_spread": disorders[k],
                   "n_electrons_predicted": None if n_pred is None else n_pred[k],
                   "charge_sum": None if charges is None else charges["n_electrons"][k]} for k in range(len(t))]
    return RunSummary(
        path=Path(out), n_atoms=len(plan.frames[0]), grid_shape=grid.shape, n_blocks=plan.n_units,
        n_computed=len(todo), n_done=len(ledger), wall_s=wall, points_computed=tally.computed,
        n_electrons_expected=n_expected,
        n_electrons_predicted=None if n_pred is None or frames is not None else n_pred[0],
        renormalization_factor=factor,
        max_std=None if best is None else best["max_std"],
        max_std_index=None if best is None else best["max_std_index"],
        max_std_position=None if best is None else grid.cartesian(*best["max_std_index"]).tolist(),
        complete=done, device=device, stage_s=tally.stages, max_rss_mb=tally.rss, first_rss_mb=tally.first_rss,
        slurm_jobs=tally.jobs, startup_s=startup, epistemic_threshold=epistemic_threshold(model),
        n_epistemic_high=_flagged_count(ledger, model) if done else None,
        max_std_epistemic=None if best_epi is None else best_epi["max_std_epistemic"],
        max_std_epistemic_index=None if best_epi is None else best_epi["max_std_epistemic_index"],
        max_std_epistemic_position=None if best_epi is None else
        grid.cartesian(*best_epi["max_std_epistemic_index"]).tolist(),
        domain=domain, accepted_out_of_domain=config.allow_out_of_domain, charges=charges, frames=frames,
        max_std_frame=None if best is None else best.get("frame"),
    )


def _record_result(summary: RunSummary, job: dict, out, config: PredictConfig, *, done: bool, n_expected, factor):
    """Write the run's result into the store's attributes (per frame for a trajectory)."""
    n_pred = summary.n_electrons_predicted
    if summary.frames is not None:
        n_pred = None if not done else [f["n_electrons_predicted"] for f in summary.frames]
    final = {"complete": done, "n_electrons_predicted": n_pred, "renormalization_factor": factor,
             "n_electrons_renormalized": None if factor is None else n_expected,
             "max_std": summary.max_std, "max_std_index": summary.max_std_index,
             "max_std_position": summary.max_std_position,
             "epistemic_threshold": summary.epistemic_threshold, "n_epistemic_high": summary.n_epistemic_high,
             "max_std_epistemic": summary.max_std_epistemic,
             "max_std_epistemic_index": summary.max_std_epistemic_index,
             "max_std_epistemic_position": summary.max_std_epistemic_position, "charges": summary.charges}
    if summary.frames is not None:
        final["max_std_frame"] = summary.max_std_frame
    if done:
        final["completed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        final.update(summary.domain.to_attrs(accepted=config.allow_out_of_domain))
    _check_run(job, "recording the run's result")
    zstore.update_attrs(out, **final)


def _write_charges(out: Path, ledger: dict, blocks: list, grid, *, n_atoms: int, samples: int,
                   n_frames: int | None = None) -> dict | None:
    """Sum the blocks' per-atom sums into ``charge`` and ``charge_std`` (:mod:`bigdens.charges`); their attribute.

    Reads each block's charges file (checked against its ledger entry) in
    block order, so a resumed run writes bit for bit the charges of an
    uninterrupted one.  Returns the store's ``charges`` attribute, or None
    when a block was recorded by a bigdens that did not compute charges.
    For a trajectory (``n_frames``) each frame is summed on its own; the
    attribute's ``n_electrons`` and ``max_charge_std`` are then lists per frame.
    """
    from ..charges import METHOD, block_parts, combine

    if any("charges" not in e for e in ledger.values()):
        return None
    results = []
    try:
        for k in range(n_frames or 1):
            offset = 0 if n_frames is None else k * len(blocks)
            results.append(combine(block_parts(out, ledger, blocks, offset=offset), n_atoms=n_atoms,
                                   samples=samples, dv=grid.dv))
    except InputError as exc:
        raise RunError(f"{exc}") from None
    charge = np.stack([r.charge for r in results])
    std = np.stack([r.charge_std for r in results])
    n_el = [float(r.charge.sum()) for r in results]
    top = [float(r.charge_std.max()) if n_atoms else None for r in results]
    if n_frames is None:
        charge, std, n_el, top = charge[0], std[0], n_el[0], top[0]
    zstore.write_charges(out, charge, std)
    return {"method": METHOD, "units": "electron", "n_electrons": n_el,
            "uncertainty": "epistemic: standard deviation over the Monte Carlo samples (aleatoric not included)",
            "max_charge_std": top}


def _stopped(exc: BaseException, stack: ExitStack, out: Path, n_blocks: int, *,
             renormalize: bool = False, what: str = "blocks") -> BaseException:
    """The one-line error for a task loop that failed (:class:`BlockFailed`) or was interrupted.

    Shuts the cluster down first (``stack``), so that no block is recorded
    after the ledger is counted: a :class:`RunError`, or an
    :class:`~bigdens.errors.Interrupted` carrying the count, with the
    ``--resume`` hint.
    """
    try:
        stack.close()
    except Exception:  # already failing: the cluster's own trouble while closing adds nothing
        pass
    done = len(zstore.read_ledger(out))
    if renormalize and done == n_blocks:
        progress = (f"all {n_blocks} blocks are done but not all renormalized; rerun with --resume --renormalize "
                    "to finish")
    else:
        progress = (f"{done} of {n_blocks} {what} are done; rerun with --resume"
                    f"{' --renormalize' if renormalize else ''} to finish")
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(getattr(exc, "signal", "SIGINT"), progress)
    return RunError(f"{exc}; {progress}")


def _attributes(atoms, grid, model, model_path, identity: dict, config: PredictConfig, *, run_id: str,
                n_expected: float | None, domain: DomainReport, disorder: float | None = None) -> dict:
    """Global attributes of a new store (DESIGN §6); ``disorder``: the structure's bond spread, Å."""
    from .. import structure

    return {
        "title": "bigdens predicted electron density",
        "run_id": run_id,
        "run": identity,
        "cell": np.asarray(grid.cell).tolist(),
        "cell_units": "angstrom",
        "pbc": [bool(v) for v in atoms.pbc],
        "grid_shape": list(grid.shape),
        "grid_spacing": grid.spacing.tolist(),
        "volume_element": grid.dv,
        "n_atoms": len(atoms),
        "species_counts": structure.species_counts(atoms),
        "n_electrons_expected": n_expected,
        "n_electrons_predicted": None,
        "renormalization_factor": None,
        "model_id": str(model.info.get("name") or Path(model_path).stem),
        "model_path": str(Path(model_path).absolute()),
        "model_hash": identity["model_hash"],
        "descriptor": model.params.to_dict(),
        "mc_samples": config.mc_samples,
        "seed": config.seed,
        # The structure's first-shell bond spread (Å, bigdens.thermal) and the factor it puts on the
        # aleatoric variance (the model's calibration; 1: none).
        "bond_spread": disorder,
        "aleatoric_disorder_factor": model.scaling.aleatoric_factor(disorder),
        "block": identity["block"],
        "chunk": identity["chunk"],
        "bigdens_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # The checks before the run; the exact ones after it replace them when the store completes.
        **domain.to_attrs(accepted=config.allow_out_of_domain),
    }


__all__ = ["RunSummary", "load_model", "make_client", "predict", "predict_block", "resolve_device", "run",
           "scale_block"]
