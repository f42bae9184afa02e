"""What a worker process runs: one task per block, writing its region of the store.

The driver writes the structure into the store first; a task receives only the
store path, its block index and the run settings (:class:`~bigdens.engine.messages.Job`).  Each worker
process reads the atoms once and builds its cell list once (cached per store
and run), and loads the model once (cached per file and hash), so positions of
millions of atoms are never sent with tasks.  Memory per task is bounded by
the block size (the network runs over ``batch`` points at a time).

Dask sends :func:`predict_block` and :func:`scale_block` by reference
(``bigdens.engine.worker.predict_block``) with the run settings, a frozen dataclass of
plain values; this module imports nothing from training code.
"""

from __future__ import annotations

import functools

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import store as zstore
from ..bnn import epistemic_threshold, resolve_device
from ..errors import RunError
from .messages import Job, TaskReport

if TYPE_CHECKING:  # pragma: no cover
    from ..bnn import DensityModel


# -- per-process caches (one worker process serves many tasks) ----------------------------

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], "DensityModel"] = {}
_CONTEXTS: dict[tuple[str, str, int | None], "_Context"] = {}
#: Contexts kept per process (a long-lived worker may serve several runs).
_MAX_CONTEXTS = 4


def load_model(path: str | Path, model_hash: str) -> "DensityModel":
    """The model at ``path``, loaded once per process (cached by path and file hash).

    The file's sha256 must be ``model_hash``, the hash the driver recorded when the run started
    (:func:`bigdens.bnn.load`): a file replaced during a run stops the run, never feeds it silently.
    """
    from ..bnn import load

    key = (str(Path(path).resolve()), model_hash)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = load(path, expected_hash=model_hash or None)  # "": a run without a file hash
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


def _check_run(job: Job, what: str) -> None:
    """Raise unless the store still belongs to this run (its ``run_id`` attribute; one small file read).

    Called right before every write of a block and of a ledger entry, so a run
    whose store was replaced by another run (``--overwrite`` after its lock was
    judged stale or deleted) stops without writing into the new store.
    """
    attrs = zstore.read_attrs(job.store)
    now = None if attrs is None else attrs.get("run_id")
    if now != job.run_id:
        other = "removed" if attrs is None else f"now run {now}"
        raise RunError(f"the store {job.store!r} was replaced by another run while run {job.run_id} was "
                       f"writing it ({other}); this run stopped before {what} and wrote nothing more: let the "
                       "other run finish, or start again with --overwrite")


def _context(job: Job, frame: int | None = None) -> _Context:
    """The worker's context of one run and frame (None: a single structure), built once per process.

    It holds no per-atom array of the whole structure: the atoms are read from
    the store's tiles block by block (:mod:`bigdens.atomtiles`), so a worker's
    memory does not grow with the number of atoms.  The driver checked the
    tiles against the positions when it created or resumed the store.
    """
    from ..blocks import make_blocks
    from ..grid import Grid

    key = (job.store, job.run_id, frame)
    with _LOCK:
        ctx = _CONTEXTS.get(key)
    if ctx is not None:
        return ctx
    _check_run(job, "reading the atoms")
    attrs = zstore.read_attrs(job.store)
    cell = np.asarray(attrs["cell"], dtype=np.float64)
    grid = Grid(cell=cell, shape=tuple(attrs["grid_shape"]))
    ctx = _Context(
        grid=grid,
        blocks=make_blocks(grid.shape, tuple(attrs["run"]["block"])),
        atoms=zstore.open_tiles(job.store, attrs, frame),
        arrays=zstore.open_variables(job.store),
        model=load_model(job.model, job.model_hash),
        device=resolve_device(job.device),
    )
    with _LOCK:
        while len(_CONTEXTS) >= _MAX_CONTEXTS:
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
        _CONTEXTS[key] = ctx
    return ctx


# -- the tasks ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _cuda_descriptors() -> bool:
    """Whether this process computes descriptors on the GPU: numba must see it too (torch does, on
    ``--device cuda``); else they are computed on the CPU and the network alone runs on the GPU
    (the driver warns, :func:`bigdens.engine.plan.plan_run`)."""
    from .._descriptor_cuda import available

    return available()


def _block_features(halo, ctx: _Context, block, params):
    """The block's descriptors, (n_points, n_features) float32: a numpy array, or on ``--device cuda`` a torch
    CUDA tensor computed there (:mod:`bigdens._descriptor_cuda`), so the block stays on the GPU up to the network.
    """
    if ctx.device == "cuda" and _cuda_descriptors():
        import torch

        from .._descriptor_cuda import compute_block_cuda

        return torch.as_tensor(compute_block_cuda(halo, ctx.grid, block, params), device="cuda").reshape(
            -1, params.n_features)
    from ..descriptors import compute_block

    return compute_block(halo, ctx.grid, block, params).reshape(-1, params.n_features)


def _block_values(mean: np.ndarray, epi: np.ndarray, ale: np.ndarray, shape: tuple) -> dict[str, np.ndarray]:
    """The four variables of a block, float32 arrays of ``shape`` (e/Å³), from the mean and the variances."""
    epi64 = epi.astype(np.float64)
    ale64 = ale.astype(np.float64)
    values = {
        "density": mean,
        "density_std_epistemic": np.sqrt(epi64).astype(np.float32),
        "density_std_aleatoric": np.sqrt(ale64).astype(np.float32),
        "density_std": np.sqrt(epi64 + ale64).astype(np.float32),
    }
    return {k: v.reshape(shape) for k, v in values.items()}


def _ledger_entry(index: int, block, mean: np.ndarray, values: dict, sums: dict, charges: dict,
                  model: "DensityModel", *, unit: int, frame: int | None, run_id: str) -> zstore.LedgerEntry:
    """The ledger entry of block ``index``: checksums, electron sum, largest σ, flagged points, charges file."""
    std = values["density_std"]
    where = np.unravel_index(int(np.argmax(std)), block.shape)
    std_epi = values["density_std_epistemic"]
    where_epi = np.unravel_index(int(np.argmax(std_epi)), block.shape)
    threshold = epistemic_threshold(model)
    return zstore.LedgerEntry(
        block=index,
        start=tuple(int(a) for a in block.start),
        stop=tuple(int(a) for a in block.stop),
        checksums=sums,
        raw_checksum=sums["density"],
        density_sum=float(mean.sum(dtype=np.float64)),
        max_std=float(std[where]),
        max_std_index=tuple(int(a + w) for a, w in zip(block.start, where)),
        max_std_epistemic=float(std_epi[where_epi]),
        max_std_epistemic_index=tuple(int(a + w) for a, w in zip(block.start, where_epi)),
        # Sum of the negative mean values (e/Å³; ≤ 0): the domain check's negative electrons.
        negative_sum=float(mean[mean < 0].sum(dtype=np.float64)),
        # Points unlike the model's validation data (None: the model has no epistemic reference).
        n_epistemic_high=None if threshold is None else int(np.count_nonzero(std_epi > np.float32(threshold))),
        scale=1.0,
        # The block's per-atom sums (bigdens.charges): atoms owning its points, digest of their file.
        charges=charges,
        unit=None if frame is None else unit,
        frame=frame,
        run_id=run_id,
    )


def predict_block(index: int, *, job: Job) -> TaskReport:
    """Compute, write and record one block (one Dask task).

    Parameters
    ----------
    index
        Work unit: the block index (C order of block positions); in a trajectory
        store ``frame · n_blocks + block`` (:class:`bigdens.store.WorkUnits`).
    job
        Run settings (:class:`~bigdens.engine.messages.Job`).

    Returns
    -------
    TaskReport
        The block's ledger entry, its stage timings and its worker's memory.
    """
    from ..blocks import block_halo
    from ..charges import assign_block, block_sums

    ts = time.perf_counter()
    _set_threads(job.threads)
    unit = index
    frame, index = job.units.split(unit)
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
        feats, labels, len(owners), samples=job.samples, seed=job.seed, block_index=index,
        device=ctx.device, batch=job.batch, disorder=job.disorder_of(frame))
    del feats
    t2 = time.perf_counter()
    values = _block_values(mean, epi, ale, block.shape)
    what = f"block {index}" if frame is None else f"block {index} of frame {frame}"
    _check_run(job, f"writing {what}")
    sums = zstore.write_block(ctx.arrays, block, values, path=job.store, frame=frame)
    _check_run(job, f"writing {what}'s charges")
    charges = zstore.write_block_charges(job.store, unit, owners, block_sums(mean, labels, len(owners)),
                                         deviations)
    entry = _ledger_entry(index, block, mean, values, sums, charges, ctx.model, unit=unit, frame=frame,
                          run_id=job.run_id)
    _check_run(job, f"recording {what} in the ledger")
    zstore.write_ledger(job.store, unit, entry)
    t3 = time.perf_counter()
    stage_s = {"setup": t0 - ts, "descriptors": t1 - t0, "charges": t_assign, "bnn": t2 - t1 - t_assign,
               "write": t3 - t2}
    return TaskReport(entry=entry, stage_s=stage_s, n_points=block.n_points, n_halo=n_halo, n_read=n_read,
                      pid=os.getpid(), max_rss_mb=peak_rss_mb(), slurm_job_id=os.environ.get("SLURM_JOB_ID"))


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


def scale_block(index: int, *, job: Job, factor: "float | list[float]") -> zstore.LedgerEntry:
    """Multiply one unit's mean density by ``factor`` (the ``--renormalize`` pass).

    ``index`` is a work unit (a block; in a trajectory store ``frame · n_blocks + block``), ``factor`` the
    run's factor or, for a trajectory, a list of one factor per frame.  Exact under interruption: the ledger
    first records the checksum the scaled block will have, so a rerun tells raw, scaled and torn blocks apart.
    """
    _set_threads(job.threads)
    unit = index
    frame, index = job.units.split(unit)
    if isinstance(factor, list):
        factor = factor[frame]
    ctx = _context(job, frame)
    block = ctx.blocks[index]
    entry = zstore.read_ledger_entry(job.store, unit)
    if entry.scale == factor and entry.pending is None:
        return entry
    arr = ctx.arrays["density"]
    where = block.slices if frame is None else (frame, *block.slices)
    current = arr[where]
    have = zstore.checksum(current)
    pending = entry.pending
    if pending is not None and pending["scale"] == factor and have == pending["checksum"]:
        scaled = current  # written before an interruption, ledger not yet updated
    elif have == entry.raw_checksum:
        scaled = (current.astype(np.float64) * factor).astype(np.float32)
        entry = entry.replace(pending={"scale": factor, "checksum": zstore.checksum(scaled)})
        _check_run(job, f"recording block {index} in the ledger")
        zstore.write_ledger(job.store, unit, entry)
        _check_run(job, f"writing block {index}")
        try:
            arr[where] = scaled
        except OSError as exc:
            raise RunError(f"cannot write block {index} to {job.store!r} ({exc.strerror or exc}); free space "
                           "and rerun with --resume --renormalize") from None
        if zstore.checksum(arr[where]) != entry.pending["checksum"]:
            raise RunError(f"block {index} reads back differently after renormalization; rerun with --resume")
    else:
        raise RunError(f"block {index} of {job.store!r} matches neither its raw nor its scaled checksum; "
                       "run `bigdens verify` and start again with --overwrite")
    entry = entry.replace(pending=None, checksums={**entry.checksums, "density": zstore.checksum(scaled)},
                          scale=factor)
    _check_run(job, f"recording block {index} in the ledger")
    zstore.write_ledger(job.store, unit, entry)
    return entry
