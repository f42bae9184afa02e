"""Validated settings of one ``bigdens predict`` run.

:class:`PredictConfig` is the single object the engine reads: the command
line builds one from its arguments, a Python user builds one directly.  Every
check happens in ``__post_init__``, before any work starts, and each message
names the bad value and shows the fix.  Nothing heavy is imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SetupError

#: Devices accepted for the network.
DEVICES = ("auto", "cpu", "cuda")
#: Grid spacing used when neither a spacing nor a grid shape is given, Å.
DEFAULT_SPACING = 0.2
#: Block edge, grid points: 64³ float32 = 1 MB per chunk of each variable.
DEFAULT_BLOCK = 64


def _triple(value, name: str) -> tuple[int, int, int]:
    # An int or three positive ints -> three ints.
    try:
        vals = (value,) * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) else tuple(value)
        bad = len(vals) != 3 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in vals)
    except (TypeError, ValueError, OverflowError):  # not a number, not iterable, NaN, infinity
        bad = True
    if bad:
        raise SetupError(f"{name} must be a positive integer or three of them (grid points), got {value!r}; "
                         f"e.g. {name}=64")
    return tuple(int(v) for v in vals)


@dataclass(frozen=True)
class PredictConfig:
    """Settings of one density prediction (``bigdens predict``).

    Parameters
    ----------
    out : path
        Output Zarr v3 store (a folder, conventionally ``NAME.zarr``).
    model : path or None
        Model file (safetensors); None picks the shipped model for the species.
    spacing : float or None
        Largest grid spacing along each lattice vector, Å.  At most one of
        ``spacing`` and ``grid``; neither means the model's training
        spacing (:data:`DEFAULT_SPACING` for a model that records none).
    grid : three ints or None
        Exact grid shape (n1, n2, n3).
    mc_samples : int
        Monte Carlo weight samples S per block (≥ 1).
    block : int, three ints or None
        Block edge, grid points; one Dask task per block.  None means the
        SLURM profile's ``bigdens.block`` if it sets one, else :data:`DEFAULT_BLOCK`.
    chunk : int, three ints or None
        Zarr chunk edge, grid points; None means the block.  Every block edge
        must be a multiple of the chunk edge, so blocks write whole chunks.
    cluster : str
        ``"local"`` (a :class:`distributed.LocalCluster` of processes) or
        ``"slurm:NAME"``: SLURM jobs described by the profile NAME
        (``cluster_configs/NAME.yaml`` or a path; see :mod:`bigdens.clusters`),
        validated here, before anything is submitted.
    scheduler_file : path or None
        Join the existing Dask cluster described by this file instead.
    workers : int
        Worker processes of the local cluster; 0 runs every block in this
        process, without Dask.  A SLURM run starts the profile's
        ``bigdens.jobs`` jobs instead (fewer when there are fewer blocks).
    threads_per_worker : int or None
        Threads each worker gives numba and torch (the Dask worker itself runs
        one task at a time).  None means the SLURM profile's value, else 1.
    seed : int
        Run seed; block ``b`` draws its weight samples from ``(seed, b)``.
    resume : bool
        Continue an interrupted run into ``out``: only blocks missing from the
        completion ledger are computed.
    renormalize : bool
        Scale the mean density so that it integrates to the valence electron
        count; the raw integral and the factor are recorded.
    overwrite : bool
        Replace an existing ``out``.
    device : str
        ``"auto"`` (CUDA if torch sees it), ``"cpu"`` or ``"cuda"``.
    report : path or None
        Write a Dask performance report (HTML) here.
    batch : int
        Grid points per batched matmul of the network (memory ∝ S·batch·width).
    max_blocks : int or None
        Compute at most this many of the missing blocks, then stop with an
        incomplete store (for sampling benchmarks and tests; resume finishes it).
    progress : bool
        Show a progress bar on the terminal.
    block_timeout : float or None
        Seconds a block may run on a worker before the worker is restarted and
        the block runs again (three timeouts of one block stop the run).  None
        (the default) derives it from the run: 10 × the slowest block so far,
        worker setup included, at least 120 s; 30 min before any block has
        finished.  A number also bounds a worker's first block, which includes
        its setup (reading the atoms, the model).
    allow_out_of_domain : bool
        Accept a structure or a prediction outside the model's domain
        (:mod:`bigdens.domain`): predict it and record ``in_domain: false``
        with the reasons instead of refusing (before) or failing (after).
    domain_check : bool
        Run the checks before the run (spacing, neighbour distances, a probe
        of the grid); the exact checks after the run always run.
    skip_size_check : bool
        Start even when the estimated memory per worker, store size or block
        count (:mod:`bigdens.resources`) exceeds what the machine offers.
    """

    out: Path
    model: Path | None = None
    spacing: float | None = None
    grid: tuple[int, int, int] | None = None
    mc_samples: int = 20
    block: int | tuple[int, int, int] | None = None
    chunk: int | tuple[int, int, int] | None = None
    cluster: str = "local"
    scheduler_file: Path | None = None
    workers: int = 2
    threads_per_worker: int | None = None
    seed: int = 0
    resume: bool = False
    renormalize: bool = False
    overwrite: bool = False
    device: str = "auto"
    report: Path | None = None
    batch: int = 16384
    max_blocks: int | None = None
    progress: bool = True
    block_timeout: float | None = None
    allow_out_of_domain: bool = False
    domain_check: bool = True
    skip_size_check: bool = False
    #: The validated SLURM profile of ``cluster="slurm:NAME"`` (set here, not by the caller).
    profile: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        if self.out is None or str(self.out) == "":
            raise SetupError("an output store is needed, e.g. out='density.zarr' (-o/--output density.zarr)")
        put("out", Path(self.out))
        if self.model is not None:
            put("model", Path(self.model))
        if self.spacing is not None and self.grid is not None:
            raise SetupError(f"give either spacing ({self.spacing!r} Å) or grid ({self.grid!r}), not both")
        if self.spacing is not None:
            sp = self.spacing
            if isinstance(sp, bool) or not isinstance(sp, (int, float)) or not math.isfinite(sp) or sp <= 0:
                raise SetupError(f"grid spacing must be a positive number of Å, got {sp!r}; e.g. spacing=0.2")
            put("spacing", float(sp))
        if self.grid is not None:
            put("grid", _triple(tuple(self.grid), "grid"))
        s = self.mc_samples
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise SetupError(f"the number of Monte Carlo samples must be an integer >= 1, got {s!r}; "
                             "e.g. mc_samples=20 (--mc-samples 20)")
        if not isinstance(self.cluster, str) or not (self.cluster == "local" or self.cluster.startswith("slurm:")):
            raise SetupError(f"cluster must be 'local' or 'slurm:NAME', got {self.cluster!r}")
        if self.cluster.startswith("slurm:"):
            if not self.cluster[6:]:
                raise SetupError("cluster 'slurm:' needs a configuration name, e.g. --cluster slurm:local-slurm "
                                 "(`bigdens clusters` lists them)")
            if self.scheduler_file is not None:
                raise SetupError("give either --cluster slurm:NAME (bigdens submits the jobs) or --scheduler-file "
                                 "(join workers you started), not both")
            from .clusters import load_profile

            put("profile", load_profile(self.cluster[6:]))
            if self.workers == 0:
                raise SetupError("workers=0 runs every block in this process and submits nothing; drop "
                                 "--workers 0 or --cluster slurm:NAME")
        if self.threads_per_worker is None:
            put("threads_per_worker", self.profile.threads_per_worker if self.profile is not None else 1)
        if self.block is None:
            put("block", self.profile.block if self.profile is not None and self.profile.block else DEFAULT_BLOCK)
        block = _triple(self.block, "block")
        chunk = block if self.chunk is None else _triple(self.chunk, "chunk")
        if any(b % c for b, c in zip(block, chunk)):
            raise SetupError(f"block {block} is not a multiple of the chunk {chunk} along every axis; blocks "
                             f"must write whole chunks: use e.g. block={tuple(c * max(1, b // c) for b, c in zip(block, chunk))}")
        put("block", block)
        put("chunk", chunk)
        for name in ("workers", "threads_per_worker", "seed", "batch"):
            v = getattr(self, name)
            low = 0 if name in ("workers", "seed") else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise SetupError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.seed >= 2**32:
            raise SetupError(f"seed must be below 2**32, got {self.seed!r}")
        t = self.block_timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0):
            raise SetupError(f"block_timeout must be a positive number of seconds or None (automatic), got {t!r}; "
                             "e.g. block_timeout=600 (--block-timeout 600)")
        if self.max_blocks is not None and (not isinstance(self.max_blocks, int) or self.max_blocks < 0):
            raise SetupError(f"max_blocks must be an integer >= 0 or None, got {self.max_blocks!r}")
        if self.resume and self.overwrite:
            raise SetupError("resume and overwrite exclude each other: --resume continues the store, "
                             "--overwrite replaces it")
        if self.device not in DEVICES:
            raise SetupError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.scheduler_file is not None:
            put("scheduler_file", Path(self.scheduler_file))
            if self.workers == 0:
                raise SetupError("workers=0 runs in this process and cannot join a cluster; drop "
                                 "--scheduler-file or --workers 0")
        if self.report is not None:
            put("report", Path(self.report))
            if not self.uses_dask:
                raise SetupError("a Dask performance report needs a Dask cluster; drop --report or use --workers >= 1")

    @property
    def uses_dask(self) -> bool:
        """Whether blocks run as Dask tasks (False: in this process)."""
        return self.scheduler_file is not None or self.profile is not None or self.workers > 0


__all__ = ["DEFAULT_BLOCK", "DEFAULT_SPACING", "DEVICES", "PredictConfig"]
