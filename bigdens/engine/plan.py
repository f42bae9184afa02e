"""What a run decides before it writes anything: :func:`plan_run` -> :class:`RunPlan`.

The plan holds the validated frames, the model, the grid and its blocks, the
device, the size estimate, the expected electron count and the store's
identity (the ``run`` attribute ``--resume`` must match), and warns about a
composition outside the model's training data.  It reads the structure and
the model and writes nothing, so ``bigdens predict --dry-run`` uses it as it
is.  The domain checks before the run and each frame's bond spread come once
the output's lock is held (:func:`plan_domain`), after the cheap checks of
``-o/--output``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import store as zstore
from ..bnn import resolve_device
from ..config import DEFAULT_SPACING, PredictConfig
from ..domain import DomainReport, OutOfDomainError, check_before, check_before_frames
from ..errors import InputError, SetupError
from ..thermal import bond_spread
from .worker import load_model

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ..bnn import DensityModel
    from ..grid import Grid
    from ..resources import Estimate

#: Composition tolerance before predict warns that a structure lies outside the training data.
COMPOSITION_TOLERANCE = 0.02


@dataclass
class RunPlan:
    """The frames of a run, its model, grid and work units, decided before anything is written.

    ``trajectory`` is None for a single structure (units are its blocks, the
    store has no frame dimension); else units are (frame, block) pairs
    numbered ``frame · n_blocks + block``.  Lengths Å, electrons e.
    """

    frames: list
    trajectory: object
    #: The model file, its sha256 ("" when it is not a file) and the model.
    model_path: str | Path
    model_hash: str
    model: "DensityModel"
    grid: "Grid"
    #: The device the driver resolved ("cpu" or "cuda"; with a scheduler file the setting as given).
    device: str
    #: Block and Zarr chunk shapes, grid points; the blocks of one frame.
    block: tuple[int, int, int]
    chunk: tuple[int, int, int]
    blocks: list
    #: Memory per worker, disk, tasks and time of all frames (:mod:`bigdens.resources`).
    estimate: "Estimate"
    #: Valence electrons per frame (HGH setups; None: an element has none).
    n_expected: float | None
    #: The store's ``run`` attribute: what fixes every unit's numbers.
    identity: dict
    #: The domain checks before the run and each frame's bond spread (Å; None where undefined): set by
    #: :func:`plan_domain` once the output's lock is held.
    domain_before: DomainReport | None = None
    disorders: list | None = None

    @property
    def atoms(self) -> "Atoms":
        """The first frame: its cell and numbers are every frame's."""
        return self.frames[0]

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_frames(self) -> int | None:
        return None if self.trajectory is None else len(self.frames)

    @property
    def n_units(self) -> int:
        return self.units.n_units

    @property
    def disorder(self) -> float | list | None:
        """The bond spread the tasks get (Å): a list per frame for a trajectory, else the structure's."""
        return self.disorders if self.trajectory is not None else self.disorders[0]

    @property
    def units(self) -> "zstore.WorkUnits":
        """The run's work units: its blocks, or (frame, block) pairs for a trajectory."""
        return zstore.WorkUnits(self.n_blocks, self.n_frames)

    def frame_ledgers(self, ledger: dict) -> list[dict]:
        """The ledger of each frame, keyed by block index (one for a single structure)."""
        return self.units.frame_ledgers(ledger)


def plan_run(atoms, config: PredictConfig) -> RunPlan:
    """Validate the structure (or :class:`~bigdens.trajectory.Trajectory`), model and settings; decide the run.

    Reads the structure and the model and writes nothing.  Warns when the
    composition lies outside the model's training data.

    Raises
    ------
    InputError, SetupError
        A bad structure, a model that lacks a species, a grid or block the
        settings do not allow, a run larger than the machine
        (:mod:`bigdens.resources`), ``--renormalize`` without a valence count.
    """
    from ..blocks import block_shape_for, make_blocks
    from ..descriptors import species_index

    frames, trajectory = _frames(atoms, config)
    atoms = frames[0]  # cell and numbers are every frame's
    numbers = np.asarray(atoms.numbers)
    model_path, model_hash, model = _model(numbers, config)
    species_index(numbers, model.params)  # refuses species the model lacks
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    grid = run_grid(atoms, config, model)
    _warn_composition(numbers, model.info)
    if config.device == "cuda" and config.scheduler_file is None:
        resolve_device("cuda")
    device = resolve_device(config.device) if config.scheduler_file is None else config.device
    if device == "cuda" and config.scheduler_file is None:
        from .._descriptor_cuda import available

        if not available():
            warnings.warn("torch sees a CUDA GPU but numba does not (no CUDA toolkit libraries for numba, e.g. "
                          "`pip install nvidia-cuda-nvcc-cu12` with CUDA_HOME set to it): the descriptors run on "
                          "the CPU and only the network on the GPU", stacklevel=3)
    block = block_shape_for(grid.shape, config.block)
    chunk = block_shape_for(grid.shape, config.chunk)
    estimate = _check_size(atoms, model, grid, block, config, frames=len(frames))
    blocks = make_blocks(grid.shape, block)
    try:
        from ..chemistry import hgh_valence

        n_expected: float | None = float(hgh_valence(numbers))
    except InputError:
        n_expected = None
    if config.renormalize and n_expected is None:
        raise SetupError("--renormalize needs the valence electron count, but an element has no HGH setup; "
                         "drop --renormalize")
    identity = _identity(frames, trajectory, cell, grid, config, model_hash=model_hash, block=block, chunk=chunk)
    return RunPlan(frames=frames, trajectory=trajectory, model_path=model_path, model_hash=model_hash, model=model,
                   grid=grid, device=device, block=block, chunk=chunk, blocks=blocks, estimate=estimate,
                   n_expected=n_expected, identity=identity)


def plan_domain(plan: RunPlan, config: PredictConfig) -> None:
    """The rest of the plan: the domain checks before the run and each frame's bond spread (onto ``plan``).

    On a trajectory every frame is checked (:func:`bigdens.domain.check_before_frames`): a frame refused
    on its own is refused inside a trajectory too, named by its index in the file.

    Raises
    ------
    OutOfDomainError
        If a check fails and ``config.allow_out_of_domain`` is False (nothing is written).
    """
    labels = None if plan.trajectory is None else list(plan.trajectory.index)
    plan.domain_before = _check_domain_before(plan.frames, plan.model, plan.grid, config, plan.n_expected,
                                              labels=labels)
    plan.disorders = _disorders(plan.frames)


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


def _frames(atoms, config: PredictConfig) -> tuple[list, object]:
    """Validate a structure or :class:`~bigdens.trajectory.Trajectory` and what a trajectory run allows.

    Returns the frames and the trajectory (None for a single structure).
    """
    from .. import structure
    from ..trajectory import Trajectory, check_frames

    if isinstance(atoms, Trajectory):
        if len(atoms) == 0:
            raise InputError("the trajectory holds no frames (an empty trajectory)")
        check_frames(atoms.frames, atoms.index)
        frames, trajectory = list(atoms.frames), atoms
    else:
        frames, trajectory = [atoms], None
    for k, frame in enumerate(frames):
        try:
            structure.validate(frame)
        except InputError as exc:
            if trajectory is None:
                raise
            raise InputError(f"frame {trajectory.index[k]}: {exc}") from None
    return frames, trajectory


def _model(numbers: np.ndarray, config: PredictConfig) -> tuple[str | Path, str, "DensityModel"]:
    """(path, sha256, model) of ``config.model``, else of the shipped model for the species."""
    from .._files import file_hash

    if config.model is None:
        from ..models import shipped_model_for

        model_path = shipped_model_for(numbers)
    else:
        model_path = config.model
    model_hash = file_hash(model_path) if Path(model_path).is_file() else ""
    return model_path, model_hash, load_model(model_path, model_hash)


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
                           core_seconds=estimate.core_seconds * frames,
                           overhead_core_seconds=estimate.overhead_core_seconds * frames)
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


def _identity(frames: list, trajectory, cell: np.ndarray, grid, config: PredictConfig, *, model_hash: str, block,
              chunk) -> dict:
    """The store's ``run`` attribute: what fixes every unit's numbers (``--resume`` must match it)."""
    numbers = np.asarray(frames[0].numbers)
    identity = {
        "structure_hash": zstore.trajectory_hash(cell, (a.positions for a in frames), numbers),
        "grid_shape": list(grid.shape),
        "model_hash": model_hash,
        "seed": config.seed,
        "mc_samples": config.mc_samples,
        "block": list(block),
        "chunk": list(chunk),
    }
    if trajectory is not None:
        identity["frames"] = list(trajectory.index)
    return identity


def _check_domain_before(frames: list, model: "DensityModel", grid, config: PredictConfig,
                         n_expected: float | None, *, labels: list[int] | None = None) -> DomainReport:
    """The domain checks that need no block (:func:`bigdens.domain.check_before`, of every frame of a
    trajectory: ``labels`` are their indices in the file, None for one structure); warns, or refuses.

    Raises
    ------
    OutOfDomainError
        If a check fails and ``config.allow_out_of_domain`` is False (nothing is written).
    """
    if not config.domain_check:
        return DomainReport()
    if labels is None:
        report = check_before(frames[0], model, grid, n_expected=n_expected, seed=config.seed)
    else:
        report = check_before_frames(frames, model, grid, labels=labels, n_expected=n_expected, seed=config.seed)
    for text in report.warnings:
        warnings.warn(text, stacklevel=3)
    if not report.in_domain and not config.allow_out_of_domain:
        raise OutOfDomainError(f"{report.message()}; nothing was computed: check the structure and its units, or "
                               "pass --allow-out-of-domain to predict it anyway", report)
    return report


def _disorders(frames: list) -> list[float | None]:
    """Each frame's first-shell bond spread (Å, :func:`bigdens.thermal.bond_spread`); None where undefined."""
    out = []
    for atoms in frames:
        spread = bond_spread(atoms.positions, atoms.numbers, np.asarray(atoms.cell[:], dtype=np.float64))
        out.append(spread if math.isfinite(spread) else None)  # NaN: no atom has a neighbour in reach
    return out
