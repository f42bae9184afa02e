"""Training, fine-tuning (transfer learning) and evaluation of density models.

Stage 1 trains every layer from scratch on many small-cell snapshots; stage 2
(:func:`finetune`) starts from a stage-1 model and retrains its last layers
(the others frozen, or at a reduced learning rate) on a few larger cells.
Validation is split by snapshot, never by grid point (neighbouring points are
nearly identical and would leak).  After training, one scalar variance
factor is fitted on the validation snapshots so that the 1σ interval covers
68.3 % of points (recalibration; stored in the model as ``variance_scale``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np

from .bnn import (EPISTEMIC_QUANTILE, LOGVAR_RANGE, REGION_EDGES, REGION_MIN_POINTS, Architecture, DensityModel,
                  Scaling, epistemic_threshold, resolve_device)
from .descriptors import DescriptorParams, compute
from .domain import merge_references, training_reference
from .errors import InputError
from .lineage import composition, lineage, training_compositions  # noqa: F401  (re-exported)
from . import metrics

#: Progress lines (one per epoch, the start and the stop) go here, at INFO; ``bigdens train`` shows them.
logger = logging.getLogger(__name__)

#: Calibration cells whose bond spreads differ by less than this ratio fit no disorder dependence.
DISORDER_MIN_SPREAD = 1.1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Parameters
    ----------
    epochs
        Maximum number of epochs.
    points_per_epoch
        Grid points drawn (without replacement within an epoch) per epoch.
    batch_size
        Points per optimiser step.
    lr
        Adam learning rate of the trained layers.
    patience
        Stop after this many epochs without a better validation NMAE.
    seed
        Seeds weight initialisation, point sampling and the training noise.
    train_layers
        Fine-tuning: number of final layers trained (None: all).
    frozen_lr_scale
        Fine-tuning: learning-rate factor of the other layers (0: frozen).
    nll_beta
        β of the β-NLL loss (0: the plain Gaussian NLL; 0.5 fits the mean
        harder where the data are hard, e.g. alloys).
    device
        Where the optimisation runs: ``"cpu"``, ``"cuda"`` or ``"auto"``
        (CUDA when torch sees it).  The descriptors are computed on the CPU
        either way, and the model returned lives on the CPU.  On the CPU
        the same seed and thread count give the same model bit for bit;
        on a GPU that is not checked.  CPU and GPU differ by float32
        rounding, which training amplifies.
    time_limit
        Wall-clock seconds after which no new epoch starts (None: no limit);
        the best epoch so far is kept, as on early stopping.  For jobs with
        a wall-time limit (SLURM).
    """

    epochs: int = 150
    points_per_epoch: int = 300_000
    batch_size: int = 2048
    lr: float = 2e-3
    patience: int = 25
    seed: int = 0
    train_layers: int | None = None
    frozen_lr_scale: float = 0.0
    nll_beta: float = 0.0
    device: str = "cpu"
    time_limit: float | None = None

    def __post_init__(self):
        from .config import DEVICES

        if self.device not in DEVICES:
            raise InputError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("epochs", "points_per_epoch", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr!r}")
        if self.train_layers is not None and int(self.train_layers) < 1:
            raise InputError(f"train_layers must be >= 1 (or None for all), got {self.train_layers!r}")
        if not 0 <= self.frozen_lr_scale <= 1:
            raise InputError(f"frozen_lr_scale must be within [0, 1], got {self.frozen_lr_scale!r}")
        if not 0 <= self.nll_beta <= 1:
            raise InputError(f"nll_beta must be within [0, 1], got {self.nll_beta!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise InputError(f"time_limit must be > 0 seconds (or None), got {self.time_limit!r}")


def snapshot_features(snapshot, params: DescriptorParams) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors and densities of every grid point of a snapshot.

    Returns
    -------
    features : ndarray, shape (n_points, n_features), float32
    density : ndarray, shape (n_points,), float32, e/Å³
        In the grid's C order (the order of ``snapshot.density.ravel()``).
    """
    grid = snapshot.grid()
    feats = compute(snapshot.positions, snapshot.numbers, snapshot.cell, grid.points(), params)
    return feats, np.asarray(snapshot.density, dtype=np.float32).ravel()


def _check_snapshots(snapshots: Sequence, params: DescriptorParams, what: str) -> None:
    from ase.data import chemical_symbols

    if not snapshots:
        raise InputError(f"no {what} snapshots: give at least one data set with {what} data")
    known = set(params.species)
    for s in snapshots:
        extra = set(np.unique(s.numbers).tolist()) - known
        if extra:
            raise InputError(
                f"snapshot {s.name!r} holds {sorted(chemical_symbols[z] for z in extra)}, which the "
                f"model's species {[chemical_symbols[z] for z in params.species]} do not include"
            )


def _stack(snapshots, params):
    feats, dens = zip(*(snapshot_features(s, params) for s in snapshots))
    return np.concatenate(feats), np.concatenate(dens)


def _nll(out, y, beta: float = 0.0):
    """Gaussian negative log-likelihood per point, mean over points.

    With ``beta`` > 0 each point's term is weighted by its predicted variance
    to the power ``beta`` (not differentiated): β-NLL (Seitzer et al., ICLR
    2022), which stops the network from explaining hard points away with a
    large variance instead of fitting their mean.
    """
    import torch

    from .bnn import LOGVAR_RANGE

    mu, logvar = out[:, 0], out[:, 1].clamp(*LOGVAR_RANGE)
    term = 0.5 * (logvar + (y - mu) ** 2 * torch.exp(-logvar))
    if beta > 0:
        term = term * torch.exp(beta * logvar.detach())
    return term.mean()


def _fit(model: DensityModel, X, y, Xv, yv, config: TrainConfig, log: Callable[[str], None]) -> dict:
    """Bayes by backprop on scaled arrays; returns the training history."""
    import torch

    dev = torch.device(resolve_device(config.device))
    torch.manual_seed(config.seed)
    if dev.type == "cuda":
        torch.cuda.manual_seed_all(config.seed)
    rng = np.random.default_rng(config.seed)
    net = model.net.to(dev)
    layers = list(net.layers)
    n_train = len(layers) if config.train_layers is None else min(int(config.train_layers), len(layers))
    groups = []
    for i, layer in enumerate(layers):
        scale = 1.0 if i >= len(layers) - n_train else config.frozen_lr_scale
        for p in layer.parameters():
            p.requires_grad_(scale > 0)
        if scale > 0:
            groups.append({"params": list(layer.parameters()), "lr": config.lr * scale})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(2, config.patience // 3))
    Xt, yt = model.scale_features(X).to(dev), model.scale_target(y).to(dev)
    Xvt = model.scale_features(Xv).to(dev)
    n = len(Xt)
    kl_weight = 1.0 / n  # KL scaled per training point
    best = (math.inf, None, -1)
    history = []
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        net.train()
        idx = torch.from_numpy(rng.choice(n, size=min(n, config.points_per_epoch), replace=False)).to(dev)
        total = torch.zeros((), dtype=torch.float64, device=dev)  # summed on the device: no sync per step
        for a in range(0, len(idx), config.batch_size):
            b = idx[a : a + config.batch_size]
            loss = _nll(net(Xt[b]), yt[b], config.nll_beta) + kl_weight * net.kl()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(b)
        total = float(total)
        net.eval()
        with torch.no_grad():
            pv = net.forward_mean(Xvt)[:, 0].double().cpu().numpy() * model.scaling.target_std \
                + model.scaling.target_mean
        val = metrics.nmae(pv, yv)
        sched.step(val)
        history.append({"epoch": epoch + 1, "loss": total / len(idx), "val_nmae_pct": val})
        improved = val < best[0]
        if improved:
            best = (val, {k: v.detach().clone() for k, v in net.state_dict().items()}, epoch + 1)
        log(f"epoch {epoch + 1:4d}  loss {total / len(idx):+.4f}  val NMAE {val:.3f} %"
            f"{'  *' if improved else ''}  ({time.perf_counter() - t0:.0f} s)")
        if epoch + 1 - best[2] >= config.patience:
            log(f"early stop: no better validation NMAE for {config.patience} epochs")
            break
        if config.time_limit is not None and time.perf_counter() - t0 >= config.time_limit:
            log(f"time limit ({config.time_limit:g} s) reached after epoch {epoch + 1}")
            break
    net.load_state_dict(best[1])
    for p in net.parameters():
        p.requires_grad_(True)
    model.net = net.cpu()
    return {"device": dev.type, "best_epoch": best[2], "best_val_nmae_pct": best[0], "epochs": history,
            "train_seconds": time.perf_counter() - t0, "n_train_points": n}


#: Training points used to fit the last-layer posterior and the extrapolation slopes (format 2).
POSTERIOR_POINTS = 200_000
#: Share of each feature's training values, at either end, whose ∂z/∂x sets that end's slope.
EDGE_SHARE = 0.01
#: Share of each feature's training values left outside the training range at either end: the range
#: is where the training data are, not where a few of them reach (a 1400 K liquid cell puts a
#: handful of Al points 2.31 Å from any atom; 99.9 % of the training points lie within 1.96 Å).
#: The same share as the epistemic flag's base rate (:data:`bigdens.bnn.EPISTEMIC_QUANTILE`).
RANGE_QUANTILE = 0.001


def fit_posterior(model: DensityModel, X: np.ndarray, *, seed: int = 0, prior_precision: float = 1.0,
                  keep_range: bool = False) -> None:
    """Fit a format-2 model's last-layer posterior and extrapolation terms, in place.

    Parameters
    ----------
    model
        A trained ``"last-layer"`` model.
    X : ndarray, shape (n_points, n_features), float32
        Raw descriptors of its training points.
    seed
        Seeds the subsample of at most :data:`POSTERIOR_POINTS` points.
    prior_precision
        Precision of the Gaussian prior on the head's (w_z, b_z), scaled units.
    keep_range
        Fine-tuning: the training range becomes the union of the model's and ``X``'s.

    Notes
    -----
    The posterior is the Laplace (generalised Gauss-Newton) approximation for the Gaussian
    likelihood of ``ρ = softplus(z)``: precision ``N/n Σ_i sig(z_i)² φ̃_i φ̃_iᵀ / v_i + λ I`` over
    the subsample, φ̃ = [φ, 1], v_i the aleatoric variance.  The range is each scaled feature's
    :data:`RANGE_QUANTILE` and 1 − :data:`RANGE_QUANTILE` quantiles over all of ``X``; the slope at each end is the RMS of ∂z/∂x_j over the
    subsample's points in the :data:`EDGE_SHARE` nearest that end: beyond the range, the
    prediction continues with an unknown slope of that size.
    """
    import torch

    net = model.net
    xs = model.scale_features(X)
    q = np.quantile(xs.numpy(), [RANGE_QUANTILE, 1 - RANGE_QUANTILE], axis=0)
    lo, hi = torch.from_numpy(q[0]).float(), torch.from_numpy(q[1]).float()
    if keep_range:
        lo, hi = torch.minimum(lo, net.range_lo), torch.maximum(hi, net.range_hi)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(xs), size=min(len(xs), POSTERIOR_POINTS), replace=False))
    xsub = xs[torch.from_numpy(pick)]
    prec = torch.zeros(net.post_chol.shape, dtype=torch.float64)
    grads = []
    for a in range(0, len(xsub), 20_000):
        x = xsub[a : a + 20_000].clone().requires_grad_(True)
        phi = net.trunk(x)
        out = net.head(phi)
        (g,) = torch.autograd.grad(out[:, 0].sum(), x)
        grads.append(g)
        with torch.no_grad():
            var = torch.exp(out[:, 1].clamp(*LOGVAR_RANGE)).double()
            j = torch.sigmoid(out[:, 0]).double()[:, None] * torch.cat([phi, torch.ones(len(phi), 1)], 1).double()
            prec += (j / var[:, None]).T @ j
    prec *= len(xs) / len(xsub)
    prec += prior_precision * torch.eye(len(prec), dtype=torch.float64)
    cov = torch.cholesky_inverse(torch.linalg.cholesky(prec))
    g = torch.cat(grads).double()
    xsd = xsub.double()
    slope_lo, slope_hi = torch.zeros(len(lo)), torch.zeros(len(hi))
    for j in range(xs.shape[1]):
        col = xsd[:, j]
        for slope, mask in ((slope_lo, col <= torch.quantile(col, EDGE_SHARE)),
                            (slope_hi, col >= torch.quantile(col, 1 - EDGE_SHARE))):
            slope[j] = float(g[mask, j].square().mean().sqrt())
    with torch.no_grad():
        net.post_chol.copy_(torch.linalg.cholesky(cov).float())
        net.range_lo.copy_(lo)
        net.range_hi.copy_(hi)
        net.slope_lo.copy_(slope_lo)
        net.slope_hi.copy_(slope_hi)


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
    from .thermal import bond_spread

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
               cells: tuple[Sequence[int], Sequence[float]] | None = None) -> tuple[Scaling, dict]:
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
    fitted before the global factor.  With ``fit_variance=False`` the model's
    factors are kept.

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
                       disorder_floor=0.0)
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
    """Refuse test-split snapshots and snapshots that any stage of ``model`` trained on."""
    test = sorted(s.name for s in snapshots if s.split == "test")
    if test:
        raise InputError(f"{', '.join(test)} belong to the test split: calibrate on a calibration (validation) "
                         "split, never on test data (e.g. --split validation)")
    records = [d for r in lineage(model.info) for d in (r.get("data") or {}).get("train", [])]
    # By content where the model recorded it (two data sets may name different cells alike), else by name.
    digests = {d["digest"] for d in records if "digest" in d}
    names = {d["name"] for d in records if "digest" not in d}
    seen = sorted(s.name for s in snapshots if snapshot_digest(s) in digests or s.name in names)
    if seen:
        raise InputError(f"the model was trained on {', '.join(seen)}: calibrate on snapshots it has not seen "
                         "(its errors there are too small)")


def calibrate(model: DensityModel, val_snapshots: Sequence, *, samples: int = 20, seed: int = 0,
              fit_variance: bool = True) -> DensityModel:
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

    Returns
    -------
    DensityModel
        A copy whose total σ covers |ρ̂ − ρ| at 68.3 % of the validation points
        and whose ``info["epistemic_reference"]`` holds quantiles of the
        epistemic σ there (e/Å³).  :func:`bigdens.engine.run` counts predicted
        points above the 99.9 % quantile: places unlike the validation data,
        e.g. defects, where the total σ (mostly aleatoric) barely moves.
    """
    _check_snapshots(val_snapshots, model.params, "calibration")
    _check_calibration_set(model, val_snapshots)
    Xv, yv = _stack(val_snapshots, model.params)
    scaling, reference = _calibrate(model, Xv, yv, samples=samples, seed=seed, fit_variance=fit_variance,
                                    cells=_cells(val_snapshots) if fit_variance else None)
    reference["validation"] = [s.name for s in val_snapshots]
    new = DensityModel(params=model.params, arch=model.arch, scaling=scaling,
                       net=model.net, info={**model.info, "epistemic_reference": reference})
    if fit_variance:
        new.info["calibration"] = {"variance_scale_before": model.scaling.variance_scale,
                                   "validation": reference["validation"], "samples": samples, "seed": seed}
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


def _provenance(snapshots) -> list[dict]:
    out = []
    for s in snapshots:
        out.append({
            "name": s.name,
            "digest": snapshot_digest(s),
            "split": s.split,
            "n_atoms": int(len(s.numbers)),
            "grid": list(s.density.shape),
            "protocol": s.protocol,
            "temperature": s.temperature,
            "dft_core_seconds": s.dft_core_seconds,
            "composition": composition(s.numbers),
        })
    return out


def _dft_settings(snapshots) -> dict | None:
    """DFT code, version, protocol and settings of the first snapshot that records them."""
    for s in snapshots:
        p = s.provenance
        if isinstance(p.get("settings"), dict):
            return {"code": p.get("code"), "code_version": p.get("code_version"), "protocol": p.get("protocol"),
                    **p["settings"]}
    return None


def train(train_snapshots: Sequence, val_snapshots: Sequence, params: DescriptorParams, *,
          arch: Architecture = Architecture(), config: TrainConfig = TrainConfig(),
          calibration_samples: int = 20, log: Callable[[str], None] | None = None) -> DensityModel:
    """Stage 1: a model trained from scratch.

    Parameters
    ----------
    train_snapshots, val_snapshots
        :class:`bigdens.data.Snapshot` lists (split by snapshot).
    params
        Descriptor settings (fixed for the model's life).
    arch, config
        Network shape and optimisation settings.
    calibration_samples
        Monte Carlo samples used to fit the variance factor on validation data.
    log
        Receives the progress lines (one per epoch) instead of the module logger
        (``bigdens.train``, INFO), e.g. to collect them; default None: the logger.
    """
    log = log or logger.info
    _check_snapshots(train_snapshots, params, "training")
    _check_snapshots(val_snapshots, params, "validation")
    resolve_device(config.device)  # before the descriptors: a missing GPU is found at once
    X, y = _stack(train_snapshots, params)
    Xv, yv = _stack(val_snapshots, params)
    log(f"training on {len(train_snapshots)} snapshots ({len(X):,} points), validating on "
        f"{len(val_snapshots)} ({len(Xv):,} points), {params.n_features} features")
    model = DensityModel.new(params, arch, Scaling.fit(X, y, positive=arch.kind == "last-layer"), seed=config.seed)
    hist = _fit(model, X, y, Xv, yv, config, log)
    if arch.kind == "last-layer":
        fit_posterior(model, X, seed=config.seed)
    model.scaling, reference = _calibrate(model, Xv, yv, samples=calibration_samples, seed=config.seed,
                                          cells=_cells(val_snapshots))
    reference["validation"] = [s.name for s in val_snapshots]
    model.info = {
        "stage": "scratch",
        "train_config": asdict(config),
        "training": {k: v for k, v in hist.items() if k != "epochs"},
        "history": hist["epochs"],
        "data": {"train": _provenance(train_snapshots), "validation": _provenance(val_snapshots)},
        "dft_settings": _dft_settings(train_snapshots),
        "grid_spacing": float(np.max(train_snapshots[0].grid().spacing)),
        "epistemic_reference": reference,
        "domain_reference": training_reference(train_snapshots),
    }
    return model


def finetune(model: DensityModel, train_snapshots: Sequence, val_snapshots: Sequence, *,
             config: TrainConfig = TrainConfig(train_layers=2, lr=1e-3),
             calibration_samples: int = 20, recalibrate: bool = True,
             log: Callable[[str], None] | None = None) -> DensityModel:
    """Stage 2 of transfer learning: retrain the last layers of ``model`` on new snapshots.

    Feature and target scaling stay those of ``model`` (the frozen layers
    expect them).  Returns a new model; ``model`` is not changed.

    ``recalibrate`` fits the variance factor anew on ``val_snapshots``; turn it
    off (keeping ``model``'s factor) when the validation data are not of the
    new kind, e.g. small cells validating a model fine-tuned on large ones:
    the factor would then be fitted to errors the new model does not make.
    ``log``: receives the progress lines instead of the module logger, as for :func:`train`.
    """
    import copy

    log = log or logger.info

    _check_snapshots(train_snapshots, model.params, "fine-tuning")
    _check_snapshots(val_snapshots, model.params, "validation")
    resolve_device(config.device)
    new = DensityModel(params=model.params, arch=model.arch, scaling=model.scaling,
                       net=copy.deepcopy(model.net), info={})
    X, y = _stack(train_snapshots, model.params)
    Xv, yv = _stack(val_snapshots, model.params)
    log(f"fine-tuning the last {config.train_layers or new.arch.n_layers} of {new.arch.n_layers} layers on "
        f"{len(train_snapshots)} snapshots ({len(X):,} points)")
    hist = _fit(new, X, y, Xv, yv, config, log)
    # The reference is refitted either way: the retrained layers changed the epistemic spread.
    if new.arch.kind == "last-layer":
        fit_posterior(new, X, seed=config.seed, keep_range=True)
    new.scaling, reference = _calibrate(new, Xv, yv, samples=calibration_samples, seed=config.seed,
                                        fit_variance=recalibrate,
                                        cells=_cells(val_snapshots) if recalibrate else None)
    reference["validation"] = [s.name for s in val_snapshots]
    new.info = {
        "stage": "finetune",
        "recalibrated": recalibrate,
        # The whole chain: a model fine-tuned more than once keeps every ancestor's record.
        "parent": {k: model.info.get(k) for k in ("stage", "data", "training", "parent")},
        "train_config": asdict(config),
        "training": {k: v for k, v in hist.items() if k != "epochs"},
        "history": hist["epochs"],
        "data": {"train": _provenance(train_snapshots), "validation": _provenance(val_snapshots)},
        "dft_settings": _dft_settings(train_snapshots) or model.info.get("dft_settings"),
        "grid_spacing": model.info.get("grid_spacing"),
        "epistemic_reference": reference,
        "domain_reference": merge_references(model.info.get("domain_reference"), training_reference(train_snapshots)),
    }
    return new


def _identity_hash(snapshot):
    import hashlib

    h = hashlib.sha256(str(snapshot.name).encode())
    for arr, dtype in ((snapshot.numbers, np.int64), (snapshot.positions, np.float64), (snapshot.cell, np.float64)):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    return h


def snapshot_digest(snapshot) -> str:
    """A snapshot's identity (name, atomic numbers, positions, cell) as 16 hex digits; recorded in a
    model's training data so that calibration can tell a cell it trained on from one named alike."""
    return _identity_hash(snapshot).hexdigest()[:16]


def snapshot_block_index(snapshot) -> int:
    """Block index that seeds a snapshot's Monte Carlo samples in :func:`evaluate`, from its identity.

    A hash of the name, atomic numbers, positions and cell: the same snapshot reads the same
    numbers in any list of snapshots.
    """
    return int.from_bytes(_identity_hash(snapshot).digest()[:4], "little")


def evaluate(model: DensityModel, snapshots: Sequence, *, samples: int = 20, seed: int = 0) -> dict:
    """Metrics of DESIGN §5 per snapshot and over all of them.

    Each snapshot is predicted as one block (one set of S weight samples), seeded by
    :func:`snapshot_block_index`: a snapshot reads the same in any list.  Its aleatoric
    variance takes the model's factor of the snapshot's bond spread, as in ``bigdens predict``.

    Returns
    -------
    dict
        ``{"snapshots": [{"name": ..., <metrics>}, ...], "overall": {<metrics>}}``;
        metric names as in :func:`bigdens.metrics.summary`, plus ``epistemic_high_pct``
        (points whose epistemic σ exceeds the model's validation 99.9 % quantile, %;
        only for models with an epistemic reference).
    """
    from .thermal import bond_spread

    _check_snapshots(snapshots, model.params, "evaluation")
    threshold = epistemic_threshold(model)
    rows, allp, allr, alls = [], [], [], []
    for s in snapshots:
        X, y = snapshot_features(s, model.params)
        mean, epi, ale = model.predict(X, samples=samples, seed=seed, block_index=snapshot_block_index(s),
                                       disorder=bond_spread(s.positions, s.numbers, s.cell))
        sigma = np.sqrt(epi.astype(np.float64) + ale)
        shape = s.density.shape
        grid = s.grid()
        row = {"name": s.name, "split": s.split, "n_atoms": int(len(s.numbers))}
        row.update(metrics.summary(mean.reshape(shape), y.reshape(shape), sigma.reshape(shape),
                                   dv=grid.dv, n_electrons=s.n_electrons_expected))
        if threshold is not None:
            # 0.1 % on data like the validation data; more where the structure is new (defects).
            row["epistemic_high_pct"] = 100.0 * float(np.mean(np.sqrt(epi.astype(np.float64)) > threshold))
        rows.append(row)
        allp.append(mean)
        allr.append(y)
        alls.append(sigma)
    p, r, sg = np.concatenate(allp), np.concatenate(allr), np.concatenate(alls)
    overall = {
        "nmae_pct": metrics.nmae(p, r),
        "nrmse_pct": metrics.nrmse(p, r),
        "electron_count_error_pct": float(np.mean([row["electron_count_error_pct"] for row in rows])),
        "coverage_1sigma_pct": metrics.coverage(p, r, sg, 1.0),
        "coverage_2sigma_pct": metrics.coverage(p, r, sg, 2.0),
        "spearman_sigma_error": float(np.nanmean([row["spearman_sigma_error"] for row in rows])),
        "n_snapshots": len(rows),
        "n_points": int(len(p)),
    }
    if threshold is not None:
        overall["epistemic_high_pct"] = float(np.mean([row["epistemic_high_pct"] for row in rows]))
    return {"snapshots": rows, "overall": overall, "samples": samples, "seed": seed}
