"""Size guards: estimate memory, disk, task count and time before work starts, and refuse what cannot fit.

An absurd grid, sample count, cutoff or cell (``--spacing 0.001``,
``--mc-samples 10000000``, ``--r-cut 1000``, ``build --cells 1000 1000 1000``)
used to hang for minutes, start millions of tasks or exhaust the machine's
memory.  Each command that can be asked for too much estimates, from the
numbers alone, what it would need (:class:`Estimate`), compares it with what the
machine offers and raises :class:`~bigdens.errors.SetupError` with the estimate
and the flag that forces it (``--skip-size-check``).

The formulas are upper bounds on the dominant terms (bytes):

* a worker: :data:`WORKER_BASE_BYTES` (Python, torch, numba, Dask), the
  atom tiles it keeps decoded (:data:`bigdens.atomtiles.CACHED_TILES` blocks'
  worth of atoms at :data:`TILE_BYTES_PER_ATOM`; never the whole structure), the block's halo atoms, the block's
  features (4 B per feature per point), results and write buffers (~80 B per
  point), and the network's S-dependent buffers;
* the store: 4 float32 variables per grid point (compression only lowers it),
  the atoms twice (:data:`STORE_BYTES_PER_ATOM`: positions and numbers, and
  the atom tiles) and ~1 kB of ledger per block;
* time: :data:`CORE_S_PER_POINT` per point at S = 20 (measured end to end on
  this project's 2-core benchmark machine, ``benchmarks/results/engine_throughput.json``),
  the network part scaling with S.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import SetupError

log = logging.getLogger(__name__)

#: Resident memory of an idle worker process (Python, numpy, torch, numba, Dask), bytes.
WORKER_BASE_BYTES = 450 * 2**20
#: Bytes per grid point of a block beyond its features: the four results in float32 and float64
#: temporaries, zarr's write and read-back buffers.
BYTES_PER_BLOCK_POINT = 80
#: Bytes per atom of a worker's decoded atom tiles (fractional coordinates, atomic number, index).
TILE_BYTES_PER_ATOM = 33
#: Store bytes per atom: positions and numbers (28), and the atom tiles (33).
STORE_BYTES_PER_ATOM = 61
#: Bytes per atom that ASE and a structure writer hold while building a structure.
BUILD_BYTES_PER_ATOM = 400
#: Store bytes per grid point: four float32 variables.
STORE_BYTES_PER_POINT = 16
#: Ledger bytes per block (its entry, and its charges file's header).
LEDGER_BYTES_PER_BLOCK = 1024
#: Reach beyond a block within which its points' nearest atoms lie (Å): the atoms a charges file holds.
CHARGES_REACH = 3.0
#: More tasks than this overwhelm a Dask scheduler and the ledger's folder: use larger blocks.
MAX_BLOCKS = 2_000_000
#: End-to-end core-seconds per grid point at S = 20 (descriptors + network + write), a rough upper figure.
CORE_S_PER_POINT = 10e-6
#: Share of that cost which scales with the number of samples S.
SAMPLE_SHARE = 0.3
#: Core-seconds each block costs beyond its points (a Dask task, its halo, a zarr write, a ledger entry and a
#: charges file).  Not measured here: a guess below the reliability probe's report (``--block 1`` on a 4-atom
#: cell projected 2.8 h, about 0.16 s of wall time per block on two workers).
TASK_OVERHEAD_CORE_S = 0.05
#: Estimated CPU time beyond which a run is long: its estimate is shown (a warning), and a run that would spend
#: most of it on per-block overhead is refused.
LONG_RUN_CORE_S = 600.0
#: Share of the free memory and disk a run may plan to use.
HEADROOM = 0.9
#: The flag that skips these checks, named in every refusal.
FORCE_FLAG = "--skip-size-check"


@dataclass(frozen=True)
class Estimate:
    """What a piece of work is expected to need.

    Attributes
    ----------
    memory_per_worker : int
        Peak resident memory of one worker (or of this process), bytes.
    disk : int
        Bytes written.
    n_tasks : int
        Blocks (one task each).
    core_seconds : float
        CPU time summed over cores, s (rough: see :data:`CORE_S_PER_POINT`), the per-block overhead included.
    overhead_core_seconds : float
        The part of ``core_seconds`` spent per block rather than per point (:data:`TASK_OVERHEAD_CORE_S`).
    """

    memory_per_worker: int
    disk: int
    n_tasks: int
    core_seconds: float
    overhead_core_seconds: float = 0.0

    def describe(self) -> str:
        return (f"{self.n_tasks:,} blocks, {_size(self.memory_per_worker)} per worker, {_size(self.disk)} on disk, "
                f"about {_duration(self.core_seconds)} of CPU time")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400 * 365:
        return f"{s / 3600:.3g} core-hours"
    return f"{s / 86400 / 365:.3g} core-years"


def network_bytes(*, samples: int, n_features: int, hidden: tuple[int, ...], kind: str, batch: int) -> int:
    """Peak bytes of the network's buffers for S = ``samples`` (see :meth:`bigdens.bnn.DensityModel.predict`)."""
    from .bnn import CPU_CHUNK_BYTES, LAST_LAYER_CHUNK

    width = max(hidden) if hidden else 1
    if kind == "last-layer":
        chunk = min(batch, LAST_LAYER_CHUNK)
        # trunk activations + (chunk, S) samples of z and ρ + per-sample head and slope draws
        return 4 * chunk * (n_features + 2 * width) + 12 * chunk * samples + 8 * samples * (width + 1 + 2 * n_features)
    # mean-field: S weight samples of every layer, and activations capped at CPU_CHUNK_BYTES (≥ 1 point)
    n_params = sum(a * b + b for a, b in zip((n_features, *hidden), (*hidden, 2)))
    return 4 * samples * n_params * 2 + max(CPU_CHUNK_BYTES, 4 * samples * width * 3)


def estimate_predict(*, n_atoms: int, volume: float, grid_shape, block_shape, samples: int, n_features: int,
                     r_cut: float, hidden: tuple[int, ...], kind: str, batch: int) -> Estimate:
    """The :class:`Estimate` of a prediction (volume Å³, ``r_cut`` Å, shapes in grid points)."""
    n_points = math.prod(grid_shape)
    block_points = math.prod(block_shape)
    n_blocks = math.prod(-(-g // b) for g, b in zip(grid_shape, block_shape))
    spacing = (volume / n_points) ** (1 / 3)
    halo_volume = math.prod(b * spacing + 2 * r_cut for b in block_shape)
    halo_atoms = n_atoms / volume * halo_volume  # every periodic image within r_cut of the block
    from .atomtiles import CACHED_TILES

    tile_atoms = min(n_atoms, CACHED_TILES * n_atoms / volume * math.prod(b * spacing for b in block_shape))
    memory = (WORKER_BASE_BYTES + TILE_BYTES_PER_ATOM * tile_atoms + 64 * halo_atoms
              + block_points * (4 * n_features + BYTES_PER_BLOCK_POINT)
              + network_bytes(samples=samples, n_features=n_features, hidden=hidden, kind=kind, batch=batch))
    # Per block, the per-atom sums of its owning atoms: index + mean + S samples, 8 bytes each (bigdens.charges);
    # per atom, charge and charge_std.
    owners = min(n_atoms, n_atoms / volume * math.prod(b * spacing + 2 * CHARGES_REACH for b in block_shape))
    charges = 8 * (samples + 2) * owners * n_blocks + 16 * n_atoms
    disk = (STORE_BYTES_PER_POINT * n_points + STORE_BYTES_PER_ATOM * n_atoms + LEDGER_BYTES_PER_BLOCK * 2 * n_blocks
            + charges)
    cost = CORE_S_PER_POINT * ((1 - SAMPLE_SHARE) + SAMPLE_SHARE * samples / 20)
    overhead = TASK_OVERHEAD_CORE_S * n_blocks
    return Estimate(memory_per_worker=int(memory), disk=int(disk), n_tasks=n_blocks,
                    core_seconds=n_points * cost + overhead, overhead_core_seconds=overhead)


def estimate_describe(*, n_atoms: int, volume: float, grid_shape, block_shape, n_features: int,
                      r_cut: float) -> Estimate:
    """The :class:`Estimate` of ``bigdens describe`` (one process; nothing written)."""
    e = estimate_predict(n_atoms=n_atoms, volume=volume, grid_shape=grid_shape, block_shape=block_shape,
                         samples=1, n_features=n_features, r_cut=r_cut, hidden=(1,), kind="last-layer", batch=1)
    points = (e.core_seconds - e.overhead_core_seconds) * (1 - SAMPLE_SHARE)
    return Estimate(memory_per_worker=e.memory_per_worker, disk=0, n_tasks=e.n_tasks,
                    core_seconds=points + e.overhead_core_seconds, overhead_core_seconds=e.overhead_core_seconds)


def estimate_build(n_atoms: int) -> Estimate:
    """The :class:`Estimate` of building and writing a structure of ``n_atoms`` atoms."""
    return Estimate(memory_per_worker=int(WORKER_BASE_BYTES + BUILD_BYTES_PER_ATOM * n_atoms),
                    disk=int(80 * n_atoms), n_tasks=1, core_seconds=2e-6 * n_atoms)


def available_memory() -> int:
    """Memory this machine can still give, bytes (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def free_disk(path: str | Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def check(estimate: Estimate, *, what: str, memory_per_worker: int | None, disk_at: str | Path | None,
          skip: bool = False, advice: str = "lower --mc-samples, --block or the cutoff, use fewer workers") -> None:
    """Refuse ``estimate`` if it cannot fit; log it either way.

    Parameters
    ----------
    estimate
        What the work needs.
    what
        The work, for messages (e.g. "the prediction").
    memory_per_worker
        Memory one worker may use, bytes (None: not checked).
    disk_at
        Where the output goes (None: nothing written).
    skip
        Log only (``--skip-size-check``).
    advice
        What lowers the memory, for the message.

    Raises
    ------
    SetupError
        With the estimate, the limit and the flag that forces the work.
    """
    if estimate.core_seconds > LONG_RUN_CORE_S:
        log.warning("estimate for %s: %s", what, estimate.describe())
    else:
        log.info("estimate for %s: %s", what, estimate.describe())
    if skip:
        return
    if estimate.n_tasks > MAX_BLOCKS:
        raise SetupError(f"{what} would need {estimate.n_tasks:,} blocks (at most {MAX_BLOCKS:,}): use a larger "
                         f"--block or a coarser grid; {FORCE_FLAG} forces it")
    if estimate.core_seconds > LONG_RUN_CORE_S and estimate.overhead_core_seconds > 0.5 * estimate.core_seconds:
        raise SetupError(f"{what} would spend most of its about {_duration(estimate.core_seconds)} of CPU time on "
                         f"the overhead of {estimate.n_tasks:,} small blocks: use a larger --block; {FORCE_FLAG} "
                         "forces it")
    if memory_per_worker is not None and estimate.memory_per_worker > HEADROOM * memory_per_worker:
        raise SetupError(f"{what} would need about {_size(estimate.memory_per_worker)} of memory per process, but "
                         f"{_size(memory_per_worker)} is available: {advice}, or {FORCE_FLAG} to try anyway")
    if disk_at is not None:
        free = free_disk(disk_at)
        if estimate.disk > HEADROOM * free:
            raise SetupError(f"{what} would write about {_size(estimate.disk)}, but {_size(free)} is free at "
                             f"{str(Path(disk_at).absolute().parent)!r}: free space, choose another output or a "
                             f"coarser grid, or {FORCE_FLAG} to try anyway")


def memory_per_local_worker(workers: int) -> int:
    """Memory each of ``workers`` local processes may use (0 workers: this process alone)."""
    return available_memory() // max(1, workers)


__all__ = ["Estimate", "check", "estimate_build", "estimate_describe", "estimate_predict", "free_disk",
           "memory_per_local_worker"]
