"""The driver of a run: plan → execute → finish.

:func:`run` plans the run (:func:`~bigdens.engine.plan.plan_run`: writes
nothing), takes the output store's lock and decides what to do with it,
checks the domain, creates the store, runs the missing units on the cluster
(:mod:`bigdens.engine.cluster`, :func:`~bigdens.engine.worker.predict_block`),
and finishes: electron counts, the exact domain checks, ``--renormalize``,
the per-atom charges, and the result in the store's attributes
(:meth:`~bigdens.engine.summary.RunSummary.to_attrs`).
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import store as zstore
from .. import storelock
from ..config import PredictConfig
from ..bnn import epistemic_threshold
from ..domain import DomainReport, OutOfDomainError, check_after, renormalization_refusal
from ..errors import BigdensError, InputError, Interrupted, RunError, SetupError
from .cluster import BlockFailed, _run_tasks, make_client
from .messages import Job
from .plan import RunPlan, plan_domain, plan_run
from .summary import RunStats, RunSummary
from .worker import _check_run, predict_block, scale_block

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ..bnn import DensityModel


def run(atoms: "Atoms", config: PredictConfig) -> RunSummary:
    """:func:`predict`, returning a :class:`RunSummary` of what was done.

    ``atoms`` is one structure, or a :class:`bigdens.trajectory.Trajectory` of
    frames with one cell (:func:`bigdens.trajectory.read_trajectory`): the store
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
        if not config.renormalize and any(e.scale != 1.0 or e.pending is not None for e in ledger.values()):
            raise SetupError(f"{str(out)!r} was renormalized; resume it with --renormalize")
        ledger = _drop_damaged(out, attrs, ledger)
        run_id = attrs["run_id"]
    return mode, run_id, ledger


def _drop_damaged(out: Path, attrs: dict, ledger: dict) -> dict:
    """The resumed store's ledger without the units that fail their check (:func:`bigdens.store.damaged_units`):
    their entries are deleted, so that this run computes them again rather than counting them as done."""
    damaged = zstore.damaged_units(out, attrs, ledger)
    for unit, why in damaged:
        log.warning("%s: unit %d is damaged (%s); computing it again", out, unit, why)
        zstore.ledger_file(out, unit).unlink(missing_ok=True)
        ledger.pop(unit, None)
    if damaged and attrs.get("complete"):
        zstore.update_attrs(out, complete=False)
    return ledger


def _run(atoms, config: PredictConfig, held: ExitStack) -> RunSummary:
    """:func:`run`; the store's lock goes onto ``held``."""
    import torch

    plan = plan_run(atoms, config)
    mode, run_id, ledger = _open_target(config.out, plan.identity, config, held)
    # After the cheap checks of --out; on a trajectory, its first frame (the electron counts of every
    # frame are checked after the run).
    plan_domain(plan, config)
    todo = [u for u in range(plan.n_units) if mode != "resume" or u not in ledger]
    if config.max_blocks is not None:
        todo = todo[: config.max_blocks]
    stats = RunStats()
    t_start = time.perf_counter()
    torch_threads = torch.get_num_threads()
    with ExitStack() as stack:
        client = stack.enter_context(make_client(config, len(todo)))
        stats.startup_s = time.perf_counter() - t_start  # cluster start (and SLURM queueing)
        if mode != "resume":
            _create_store(plan, config, mode=mode, run_id=run_id)
        if config.report is not None:
            from distributed import performance_report

            stack.enter_context(performance_report(filename=str(config.report)))
        if client is None:
            stack.callback(torch.set_num_threads, torch_threads)
        job = _job(plan, config, run_id)
        _execute(client, stack, plan, config, job, todo, stats)
        outcome = _finish(client, stack, plan, config, job)
    stats.wall_s = time.perf_counter() - t_start
    summary = _summary(plan, outcome, config, n_computed=len(todo), stats=stats)
    _check_run(job, "recording the run's result")
    zstore.update_attrs(config.out, **summary.to_attrs())
    return summary


def _create_store(plan: RunPlan, config: PredictConfig, *, mode: str, run_id: str) -> None:
    """Create the output store (replacing the old one for ``mode`` "overwrite") with the plan's attributes."""
    out = config.out
    if mode == "overwrite":
        zstore.remove(out)
    attrs = zstore.new_attributes(plan.atoms, plan.grid, plan.model, plan.model_path, plan.identity, run_id=run_id,
                                  n_expected=plan.n_expected, domain=plan.domain_before, mc_samples=config.mc_samples,
                                  seed=config.seed, allow_out_of_domain=config.allow_out_of_domain,
                                  disorders=plan.disorders, trajectory=plan.trajectory)
    zstore.create(out, atoms=plan.atoms, grid=plan.grid, chunk=plan.chunk, trajectory=plan.trajectory, attrs=attrs)


def _job(plan: RunPlan, config: PredictConfig, run_id: str) -> Job:
    """The run settings every task gets (:func:`~bigdens.engine.worker.predict_block`): plain values only."""
    return Job(store=str(Path(config.out).absolute()), run_id=run_id, model=str(Path(plan.model_path).absolute()),
               model_hash=plan.model_hash, samples=config.mc_samples, seed=config.seed, device=config.device,
               batch=config.batch, threads=config.threads_per_worker, disorder=plan.disorder,
               n_frames=plan.n_frames, n_blocks=plan.n_blocks)


def _execute(client, stack: ExitStack, plan: RunPlan, config: PredictConfig, job: Job, todo: list[int],
             stats: RunStats) -> None:
    """Compute the units ``todo`` (one task each), counting what they report into ``stats``."""
    out = config.out
    try:
        for res in _run_tasks(client, predict_block, todo, progress=config.progress, desc="predict",
                              timeout=config.block_timeout, job=job):
            stats.add(res)
    except BigdensError:
        raise
    except OSError as exc:
        raise RunError(f"block failed while writing {str(out)!r} ({exc}); the ledger is consistent: fix the "
                       "cause and rerun with --resume") from None
    except (BlockFailed, KeyboardInterrupt) as exc:  # KeyboardInterrupt: Ctrl-C, or SIGTERM via bigdens.cli
        raise _stopped(exc, stack, out, plan.n_units,
                       what="blocks" if plan.trajectory is None else "(frame, block) units") from exc


@dataclass
class _Outcome:
    """What the store holds once the tasks ran (internal): its ledger, whether it is complete, each frame's
    predicted electrons (e; None until complete), the renormalization factor, the domain checks, the
    ``charges`` attribute."""

    ledger: dict
    done: bool
    n_pred: list | None
    factor: float | None
    domain: DomainReport
    charges: dict | None


def _finish(client, stack: ExitStack, plan: RunPlan, config: PredictConfig, job: Job) -> _Outcome:
    """Count the electrons, run the exact domain checks and ``--renormalize``, write the charges (if complete)."""
    out = config.out
    ledger = zstore.read_ledger(out)
    done = len(ledger) == plan.n_units
    factor = None
    n_pred = _frame_electrons(plan, ledger) if done else None
    domain = plan.domain_before
    if done:
        for k, frame_ledger in enumerate(plan.frame_ledgers(ledger)):
            domain = domain.merge(_check_domain_after(frame_ledger, plan.grid, plan.model, n_pred[k],
                                                      plan.n_expected))
    if done and config.renormalize:
        factor = _factors(plan, n_pred, domain, allow=config.allow_out_of_domain)
    if factor is not None:
        ledger, done = _renormalize(client, stack, plan, config, job, ledger, factor)
    charges = _write_charges(out, ledger, plan.blocks, plan.grid, n_atoms=len(plan.atoms), samples=config.mc_samples,
                             n_frames=plan.n_frames) if done else None
    return _Outcome(ledger=ledger, done=done, n_pred=n_pred, factor=factor, domain=domain, charges=charges)


def _factors(plan: RunPlan, n_pred: list, domain: DomainReport, *, allow: bool):
    """The ``--renormalize`` factor n_expected / n_predicted: a float for one structure, a list per frame for a
    trajectory (a frame whose factor is refused keeps 1.0); None when no frame is scaled.  Refusals go into
    ``domain``'s reasons."""
    factors = []
    for k, n in enumerate(n_pred):
        f = plan.n_expected / n
        refusal = renormalization_refusal(f, allow=allow)
        if refusal is not None:
            domain.reasons.append(refusal if plan.trajectory is None else f"frame {k}: {refusal}")
            f = None
        factors.append(f)
    if plan.trajectory is None:
        return factors[0]
    return None if all(f is None for f in factors) else [1.0 if f is None else f for f in factors]


def _unit_factor(factor, unit: int, plan: RunPlan) -> float:
    # The factor of a unit: the run's, or its frame's.
    return factor if not isinstance(factor, list) else factor[plan.units.frame_of(unit)]


def _renormalize(client, stack: ExitStack, plan: RunPlan, config: PredictConfig, job: Job, ledger: dict,
                 factor) -> tuple[dict, bool]:
    """Scale every unit not yet scaled by its factor (:func:`~bigdens.engine.worker.scale_block`; ``factor``
    a float, or a list per frame); the ledger then, and whether every unit is scaled."""
    out = config.out

    def scaled(i: int, e: zstore.LedgerEntry) -> bool:
        return e.scale == _unit_factor(factor, i, plan) and e.pending is None

    rescale = [i for i, e in ledger.items() if not scaled(i, e)]
    try:
        for _ in _run_tasks(client, scale_block, sorted(rescale), progress=config.progress,
                            desc="renormalize", timeout=config.block_timeout, job=job, factor=factor):
            pass
    except (BlockFailed, KeyboardInterrupt) as exc:
        raise _stopped(exc, stack, out, plan.n_units, renormalize=True,
                       what="blocks" if plan.trajectory is None else "(frame, block) units") from exc
    ledger = zstore.read_ledger(out)
    return ledger, all(scaled(i, e) for i, e in ledger.items())


def _check_domain_after(ledger: dict, grid, model: "DensityModel", n_pred: float,
                        n_expected: float | None) -> DomainReport:
    """The exact domain checks of a finished run, from the ledger's per-block sums."""
    negatives = [e.negative_sum for e in ledger.values()]
    return check_after(
        n_points=grid.n_points, n_flagged=_flagged_count(ledger, model), n_electrons=n_pred, n_expected=n_expected,
        negative_electrons=None if None in negatives else max(0.0, -sum(negatives) * grid.dv))


def _flagged_count(ledger: dict, model: "DensityModel") -> int | None:
    """Grid points above the model's epistemic threshold, summed over the ledger (None: no threshold, or a
    block recorded by a bigdens that did not count them)."""
    highs = [e.n_epistemic_high for e in ledger.values()]
    return sum(highs) if epistemic_threshold(model) is not None and None not in highs else None


def _frame_electrons(plan: RunPlan, ledger: dict) -> list[float]:
    """Each frame's predicted electrons (raw density summed in block order × dV), e."""
    return zstore.frame_electrons(plan.frame_ledgers(ledger), plan.grid.dv)


def _summary(plan: RunPlan, outcome: _Outcome, config: PredictConfig, *, n_computed: int,
             stats: RunStats) -> RunSummary:
    """The :class:`RunSummary` of a finished (or stopped) run."""
    ledger, done, n_pred, grid, model = outcome.ledger, outcome.done, outcome.n_pred, plan.grid, plan.model
    best = max(ledger.values(), key=lambda e: e.max_std, default=None)
    # Stores begun by an older bigdens lack the epistemic fields: leave them out then.
    best_epi = max((e for e in ledger.values() if e.max_std_epistemic is not None),
                   key=lambda e: e.max_std_epistemic, default=None) if done else None
    frames = None
    if plan.trajectory is not None:
        t, charges = plan.trajectory, outcome.charges
        frames = [{"frame": k, "index": t.index[k], "time": None if t.time is None else t.time[k],
                   "step": None if t.step is None else t.step[k], "bond_spread": plan.disorders[k],
                   "n_electrons_predicted": None if n_pred is None else n_pred[k],
                   "charge_sum": None if charges is None else charges["n_electrons"][k]} for k in range(len(t))]
    return RunSummary(
        path=Path(config.out), n_atoms=len(plan.atoms), grid_shape=grid.shape, n_blocks=plan.n_units,
        n_computed=n_computed, n_done=len(ledger), wall_s=stats.wall_s, points_computed=stats.points_computed,
        n_electrons_expected=plan.n_expected,
        n_electrons_predicted=None if n_pred is None or frames is not None else n_pred[0],
        renormalization_factor=outcome.factor,
        max_std=None if best is None else best.max_std,
        max_std_index=None if best is None else list(best.max_std_index),
        max_std_position=None if best is None else grid.cartesian(*best.max_std_index).tolist(),
        complete=done, device=plan.device, stage_s=stats.stage_s, max_rss_mb=stats.max_rss_mb,
        first_rss_mb=stats.first_rss_mb, slurm_jobs=stats.slurm_jobs, startup_s=stats.startup_s,
        epistemic_threshold=epistemic_threshold(model),
        n_epistemic_high=_flagged_count(ledger, model) if done else None,
        max_std_epistemic=None if best_epi is None else best_epi.max_std_epistemic,
        max_std_epistemic_index=None if best_epi is None else list(best_epi.max_std_epistemic_index),
        max_std_epistemic_position=None if best_epi is None else
        grid.cartesian(*best_epi.max_std_epistemic_index).tolist(),
        domain=outcome.domain, accepted_out_of_domain=config.allow_out_of_domain, charges=outcome.charges,
        frames=frames, max_std_frame=None if best is None else best.frame,
    )


def _write_charges(out: Path, ledger: dict, blocks: list, grid, *, n_atoms: int, samples: int,
                   n_frames: int | None = None) -> dict | None:
    """Sum the blocks' per-atom sums into ``charge`` and ``charge_std`` (:func:`bigdens.charges.from_ledger`,
    bit for bit the same after a resume); their attribute.

    Returns the store's ``charges`` attribute, or None when a block was recorded by a bigdens that did not
    compute charges.  For a trajectory (``n_frames``) each frame is summed on its own; the attribute's
    ``n_electrons`` and ``max_charge_std`` are then lists per frame.
    """
    from ..charges import from_ledger, store_attribute

    if any(e.charges is None for e in ledger.values()):
        return None
    try:
        results = from_ledger(out, ledger, blocks, n_atoms=n_atoms, samples=samples, dv=grid.dv, n_frames=n_frames)
    except InputError as exc:
        raise RunError(f"{exc}") from None
    charge = np.stack([r.charge for r in results])
    std = np.stack([r.charge_std for r in results])
    if n_frames is None:
        charge, std = charge[0], std[0]
    zstore.write_charges(out, charge, std)
    return store_attribute(results, trajectory=n_frames is not None)


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

