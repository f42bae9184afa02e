"""Training and fine-tuning: Bayes by backprop (:func:`_fit`), stage 1 (:func:`train`) and stage 2
(:func:`finetune`), with the training data's provenance recorded in the model."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Callable, Sequence

import numpy as np

from ..bnn import Architecture, DensityModel, Scaling, resolve_device
from ..data import structure_digest
from ..descriptors import DescriptorParams
from ..domain import merge_references, training_reference
from ..lineage import composition
from .. import metrics
from .calibration import _calibrate, _cells
from .config import TrainConfig
from .features import _check_snapshots, _stack
from .identity import snapshot_digest
from .posterior import fit_posterior

#: Progress lines (one per epoch, the start and the stop) go here, at INFO; ``bigdens train`` shows them.
#: Named after the package (``bigdens.train``), as before it was split into modules.
logger = logging.getLogger("bigdens.train")


def _nll(out, y, beta: float = 0.0):
    """Gaussian negative log-likelihood per point, mean over points.

    With ``beta`` > 0 each point's term is weighted by its predicted variance
    to the power ``beta`` (not differentiated): β-NLL (Seitzer et al., ICLR
    2022), which stops the network from explaining hard points away with a
    large variance instead of fitting their mean.
    """
    import torch

    from ..bnn import LOGVAR_RANGE

    mu, logvar = out[:, 0], out[:, 1].clamp(*LOGVAR_RANGE)
    term = 0.5 * (logvar + (y - mu) ** 2 * torch.exp(-logvar))
    if beta > 0:
        term = term * torch.exp(beta * logvar.detach())
    return term.mean()


def _scheduler(opt, config: TrainConfig):
    """The learning-rate schedule of ``config.schedule``, stepped once per epoch."""
    import torch

    if config.schedule == "cosine":  # every group's rate times one factor: 1 in the first epoch, low in the last
        low, last = config.min_lr_factor, max(1, config.epochs - 1)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(e, last) / last)))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(2, config.patience // 3))


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
    sched = _scheduler(opt, config)
    Xt, yt = model.scale_features(X).to(dev), model.scale_target(y).to(dev)
    Xvt = model.scale_features(Xv).to(dev)
    n = len(Xt)
    kl_weight = 1.0 / n  # KL scaled per training point
    best = (math.inf, None, -1)
    history = []
    interrupted = False
    t0 = time.perf_counter()
    try:
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
            lr = opt.param_groups[-1]["lr"]  # the rate of this epoch (the last trained layer's)
            net.eval()
            with torch.no_grad():
                pv = net.forward_mean(Xvt)[:, 0].double().cpu().numpy() * model.scaling.target_std \
                    + model.scaling.target_mean
            val = metrics.nmae(pv, yv)
            sched.step(val) if config.schedule == "plateau" else sched.step()
            history.append({"epoch": epoch + 1, "loss": total / len(idx), "val_nmae_pct": val, "lr": lr})
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
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep the best epoch so far, as on early stopping
        if best[1] is None:
            raise
        log(f"interrupted after epoch {len(history)}: keeping the best epoch so far ({best[2]})")
        interrupted = True
    net.load_state_dict(best[1])
    for p in net.parameters():
        p.requires_grad_(True)
    model.net = net.cpu()
    return {"device": dev.type, "best_epoch": best[2], "best_val_nmae_pct": best[0], "epochs": history,
            "train_seconds": time.perf_counter() - t0, "n_train_points": n, "interrupted": interrupted}


def _provenance(snapshots) -> list[dict]:
    """One record per snapshot, for a model's ``info["data"]``: ``digest`` (:func:`snapshot_digest`: name
    and structure) tells a cell from another named alike, ``structure_digest``
    (:func:`bigdens.data.structure_digest`: the structure only) a renamed copy of it
    (:func:`bigdens.train.identity.trained_on`)."""
    out = []
    for s in snapshots:
        out.append({
            "name": s.name,
            "digest": snapshot_digest(s),
            "structure_digest": structure_digest(s),
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


#: :func:`finetune`'s default (and ``bigdens finetune``'s): the last two layers, 100 epochs at 1e-3.
FINETUNE_CONFIG = TrainConfig(train_layers=2, lr=1e-3, epochs=100)


def finetune(model: DensityModel, train_snapshots: Sequence, val_snapshots: Sequence, *,
             config: TrainConfig = FINETUNE_CONFIG,
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
