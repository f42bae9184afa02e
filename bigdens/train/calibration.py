"""Recalibration on validation snapshots: the variance factors (global, per region class and per bond
spread) and the epistemic reference (:func:`calibrate`, :func:`with_variance_scale`)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..bnn import EPISTEMIC_QUANTILE, REGION_EDGES, REGION_MIN_POINTS, DensityModel, Scaling
from ..errors import InputError
from .features import _check_snapshots, _stack
from .sigma_map import fit_sigma_map

#: Calibration cells whose bond spreads differ by less than this ratio fit no disorder dependence.
DISORDER_MIN_SPREAD = 1.1


def _region_factors(model: DensityModel, Xv, z2: np.ndarray) -> tuple[tuple, tuple]:
    """Region edges and per-region variance factors (relative to the global one) from squared z-scores.

    A class with fewer than :data:`bigdens.bnn.REGION_MIN_POINTS` points keeps factor 1.
    """
    d = model.nearest_distance(Xv)
    cls = np.searchsorted(np.asarray(REGION_EDGES), d, side="right")
    c2 = float(np.quantile(z2, 0.683))
    rel = []
    for k in range(len(REGION_EDGES) + 1):
        sel = z2[cls == k]
        rel.append(float(np.quantile(sel, 0.683)) / c2 if len(sel) >= REGION_MIN_POINTS else 1.0)
    return REGION_EDGES, tuple(rel)


def _cells(snapshots) -> tuple[list[int], list[float]]:
    """Grid points and bond spread (Å, :func:`bigdens.thermal.bond_spread`) of each snapshot, in order."""
    from ..thermal import bond_spread

    return ([int(np.prod(s.density.shape)) for s in snapshots],
            [bond_spread(s.positions, s.numbers, s.cell) for s in snapshots])


def _cell_factor(e2: np.ndarray, epi: np.ndarray, ale: np.ndarray) -> float:
    """The factor m on the aleatoric variance with which |err| ≤ σ holds at 68.3 % of one cell's points."""
    lo, hi = math.log(1e-3), math.log(1e3)

    def excess(log_m: float) -> float:
        return float(np.quantile(e2 / (epi + math.exp(log_m) * ale + 1e-30), 0.683)) - 1.0

    if excess(lo) <= 0:
        return math.exp(lo)
    if excess(hi) >= 0:
        return math.exp(hi)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def _disorder_fit(e2: np.ndarray, epi: np.ndarray, ale: np.ndarray, sizes: Sequence[int],
                  spreads: Sequence[float]) -> tuple[float, float, float, list[float]]:
    """The aleatoric factor's dependence on the bond spread u, from calibration cells.

    Each cell c gets the factor m_c on its aleatoric variance that makes its own 1σ coverage
    68.3 %; ``m = α + β u²`` is fitted to them (least squares, one weight per cell) and
    normalised at the cells' mean u² (``reference``): ``g(u) = 1 + slope · (u² − reference²)``.
    Fewer than two cells with a known spread, spreads within :data:`DISORDER_MIN_SPREAD` of each
    other or a fit that does not grow with u give no dependence (slope 0).

    Returns
    -------
    reference : float, Å
    slope : float, 1/Å²
    floor : float, Å
        The smallest spread among the cells: colder structures get its factor (σ never shrinks
        beyond what calibration data show).
    factors : list of float
        m_c of each cell (NaN where its spread is unknown).
    """
    bounds = np.cumsum([0, *sizes])
    factors = [(_cell_factor(e2[a:b], epi[a:b], ale[a:b]) if math.isfinite(u) else math.nan)
               for a, b, u in zip(bounds[:-1], bounds[1:], spreads)]
    u = np.asarray(spreads, dtype=np.float64)
    ok = np.isfinite(u)
    if ok.sum() < 2 or u[ok].max() < DISORDER_MIN_SPREAD * u[ok].min():
        return 0.0, 0.0, 0.0, factors
    u2 = u[ok] ** 2
    beta, alpha = np.polyfit(u2, np.asarray(factors)[ok], 1)
    ref2 = float(u2.mean())
    level = alpha + beta * ref2
    if beta <= 0 or level <= 0:
        return 0.0, 0.0, 0.0, factors
    return math.sqrt(ref2), float(beta / level), float(u[ok].min()), factors


def _calibrate(model: DensityModel, Xv, yv, *, samples: int, seed: int, fit_variance: bool = True,
               cells: tuple[Sequence[int], Sequence[float]] | None = None,
               sigma_map: bool = False) -> tuple[Scaling, dict]:
    """Variance factors so that |ρ̂ − ρ| ≤ σ holds for 68.3 % of validation points, and the
    epistemic reference: quantiles of the (rescaled) epistemic σ over those points.

    The global factor is absolute: ``model``'s own factor, already applied by
    :meth:`DensityModel.predict`, is multiplied in (a fine-tuned model starts
    with its parent's).  A format-2 (``"last-layer"``) model also gets one
    factor per region class (:data:`bigdens.bnn.REGION_EDGES`: cores, bonding
    shell, open space), relative to the global one, each fitted to 68.3 % on
    its own points.  With ``cells`` (each validation snapshot's number of
    points and bond spread, :func:`_cells`), the aleatoric variance also gets
    a factor growing with the structure's bond spread (:func:`_disorder_fit`),
    fitted before the global factor.  Last, with ``sigma_map`` (:func:`calibrate`
    on a calibration split; not the provisional calibration at the end of
    training, whose validation data also chose the epoch), the σ map
    (:func:`bigdens.train.sigma_map.fit_sigma_map`, model format 3) makes RMSE
    equal RMV in every σ decile of the validation points under those factors.
    With ``fit_variance=False`` the model's factors and map are kept.

    Returns
    -------
    scaling : Scaling
        ``model.scaling`` with the new factors.
    reference : dict
        The epistemic reference; with ``cells``, also ``disorder``: each cell's
        bond spread and fitted aleatoric factor.
    """
    if fit_variance:
        base = replace(model.scaling, region_edges=(), region_scales=(), disorder_reference=0.0, disorder_slope=0.0,
                       disorder_floor=0.0, sigma_knots=(), sigma_log_ratios=())
        probe = DensityModel(params=model.params, arch=model.arch, scaling=base, net=model.net, info=model.info)
    else:
        probe, base = model, model.scaling
    mean, epi, ale = probe.predict(Xv, samples=samples, seed=seed, block_index=0)
    disorder = None
    if fit_variance:
        e2 = (mean.astype(np.float64) - yv) ** 2
        epi64, ale64 = epi.astype(np.float64), ale.astype(np.float64)
        if cells is not None:
            ref, slope, floor, factors = _disorder_fit(e2, epi64, ale64, *cells)
            base = replace(base, disorder_reference=ref, disorder_slope=slope, disorder_floor=floor)
            g = np.repeat([base.aleatoric_factor(u) for u in cells[1]], cells[0])
            ale64 = ale64 * g
            disorder = {"bond_spread": [float(u) for u in cells[1]], "cell_factor": factors,
                        "reference": ref, "slope": slope, "floor": floor}
        z2 = e2 / (epi64 + ale64 + 1e-30)
        c2 = float(np.quantile(z2, 0.683))
        scaling = replace(base, variance_scale=base.variance_scale * c2)
        if model.arch.kind == "last-layer":
            edges, rel = _region_factors(model, Xv, z2)
            scaling = replace(scaling, region_edges=edges, region_scales=rel)
        factor = scaling.variance_factor(model.nearest_distance(Xv)) / base.variance_scale
        if sigma_map:
            sigma = np.sqrt((epi64 + ale64) * factor)
            knots, logs = fit_sigma_map(mean.astype(np.float64) - yv, sigma)
            scaling = replace(scaling, sigma_knots=knots, sigma_log_ratios=logs)
            factor = factor * scaling.sigma_ratio(sigma) ** 2
    else:
        scaling, factor = model.scaling, 1.0
    qs = (0.5, 0.9, 0.99, EPISTEMIC_QUANTILE)
    values = np.quantile(np.sqrt(epi.astype(np.float64) * factor), qs)
    reference = {"quantiles": list(qs), "std": [float(v) for v in values],
                 "n_points": int(len(yv)), "samples": samples, "seed": seed}
    if disorder is not None:
        reference["disorder"] = disorder
    return scaling, reference


def _check_calibration_set(model: DensityModel, snapshots: Sequence) -> None:
    """Refuse test cells (split "test", or a shipped test cell's structure under any name:
    :func:`bigdens.data.refuse_test_cells`) and snapshots that any stage of ``model`` trained on
    (:func:`bigdens.train.identity.trained_on`: by structure where the model recorded it, so a renamed
    copy too; else by name and structure; else by name)."""
    from ..data import refuse_test_cells
    from .identity import trained_on

    refuse_test_cells(snapshots, todo="calibrate on validation snapshots, never on test data (e.g. a data set "
                                      "with --split validation)")
    seen = sorted(name if name == cell else f"{name} (= {cell})" for name, cell in trained_on(model.info, snapshots))
    if seen:
        raise InputError(f"the model was trained on {', '.join(seen)}: calibrate on snapshots it has not seen "
                         "(its errors there are too small)")


def calibrate(model: DensityModel, val_snapshots: Sequence, *, samples: int = 20, seed: int = 0,
              fit_variance: bool = True, sigma_map: bool = False) -> DensityModel:
    """Refit ``model``'s variance factor and epistemic reference on validation snapshots.

    Parameters
    ----------
    model
        A trained model (not changed).
    val_snapshots
        Snapshots never trained on, of the kind the model will be used for.
    samples, seed
        Monte Carlo samples and their seed (block index 0).
    fit_variance
        False keeps the model's variance factor and refits only the reference.
    sigma_map
        Fit the σ map too (model format 3: RMSE = RMV in every σ decile of
        ``val_snapshots``).  Off by default: left out of one calibration cell at
        a time, the map fitted on the others did not calibrate that cell better
        than the factors alone (``benchmarks/sigma_map_cv.py``, docs/models.md);
        the cells differ in σ level more than in the shape of σ.

    Returns
    -------
    DensityModel
        A copy whose total σ covers |ρ̂ − ρ| at 68.3 % of the validation points
        (then, with the σ map, has RMSE = RMV in each of their σ deciles)
        and whose ``info["epistemic_reference"]`` holds quantiles of the
        epistemic σ there (e/Å³).  :func:`bigdens.engine.run` counts predicted
        points above the 99.9 % quantile: places unlike the validation data,
        e.g. defects, where the total σ (mostly aleatoric) barely moves.
    """
    _check_snapshots(val_snapshots, model.params, "calibration")
    _check_calibration_set(model, val_snapshots)
    Xv, yv = _stack(val_snapshots, model.params)
    scaling, reference = _calibrate(model, Xv, yv, samples=samples, seed=seed, fit_variance=fit_variance,
                                    cells=_cells(val_snapshots) if fit_variance else None, sigma_map=sigma_map)
    reference["validation"] = [s.name for s in val_snapshots]
    new = DensityModel(params=model.params, arch=model.arch, scaling=scaling,
                       net=model.net, info={**model.info, "epistemic_reference": reference})
    if fit_variance:
        new.info["calibration"] = {"variance_scale_before": model.scaling.variance_scale,
                                   "validation": reference["validation"], "samples": samples, "seed": seed,
                                   "sigma_map": bool(scaling.sigma_knots)}
    return new


def with_variance_scale(model: DensityModel, scale: float, *, calibration: dict) -> DensityModel:
    """Copy of ``model`` with variance factor ``scale`` (fitted elsewhere, e.g. by cross-calibration).

    The epistemic reference's σ quantiles are rescaled with it: predicted variances carry the
    factor, so a threshold fitted under the old factor would flag a different share of points.
    ``calibration`` (how ``scale`` was fitted) is recorded under ``info["calibration"]``.
    """
    if not np.isfinite(scale) or scale <= 0:
        raise InputError(f"variance factor must be a finite number > 0, got {scale!r}")
    ratio = float(np.sqrt(scale / model.scaling.variance_scale))
    info = {**model.info, "calibration": {**calibration, "variance_scale_before": model.scaling.variance_scale}}
    ref = model.info.get("epistemic_reference")
    if isinstance(ref, dict) and "std" in ref:
        info["epistemic_reference"] = {**ref, "std": [float(v) * ratio for v in ref["std"]]}
    return DensityModel(params=model.params, arch=model.arch, net=model.net, info=info,
                        scaling=replace(model.scaling, variance_scale=float(scale)))
