"""Transfer-learning report: what each training protocol buys per DFT core-second.

On held-out snapshots of the larger cells (split "test" of the large data
set), compares

(a) stage 1 only: trained from scratch on the small cells;
(b) stage 1 + stage 2: (a) with its last layers retrained on the large cells' "train" split;
(c) from scratch on the large cells' "train" split only;
(d) from scratch on everything (small + large training data);
(e) stage 1 + stage 2 on a DFT budget of ``--budget-fraction`` (default 1/3) of
    (d)'s: stage 2 on the first large training cell only, stage 1 from scratch
    on the first n small training (and a proportional share of validation)
    snapshots, n the largest that keeps (e)'s data within the budget (the
    data sets list their snapshots interleaved by temperature, so a prefix
    spans the temperatures);

with NMAE, electron-count error and 1σ/2σ coverage, and the DFT core-seconds
each one's training data cost (summed from the snapshots' provenance).  Also
draws predicted σ next to |ρ̂ − ρ| on a slice through a defect cell.

Run:  python -m benchmarks.transfer_learning --small datasets/al32 --large datasets/al108 \
          --defect datasets/al32-vacancy --out benchmarks/results/transfer_al
      python -m benchmarks.transfer_learning --figure bigdens/models/al.safetensors \
          --defect datasets/al32-vacancy --out docs/figures   # the figure alone
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bigdens import data
from bigdens.bnn import Architecture, load
from bigdens.descriptors import DescriptorParams
from bigdens.train import TrainConfig, evaluate, finetune, snapshot_features, train


def core_seconds(snapshots) -> float:
    """DFT core-seconds of the snapshots, from their provenance (0 where unknown)."""
    return float(sum(s.dft_core_seconds or 0.0 for s in snapshots))


def _split(snaps, name):
    return [s for s in snaps if s.split == name]


def _holdout(train_snaps):
    # Validation for a data set without a validation split: hold out its last training snapshot.
    return (train_snaps[:-1], train_snaps[-1:]) if len(train_snaps) > 1 else (train_snaps, train_snaps)


def budget_subset(s_train, s_val, large_cell, budget: float) -> tuple[list, list]:
    """The longest prefixes of the small training/validation snapshots that fit ``budget`` with ``large_cell``.

    Returns ``(train, val)``: the first n training snapshots and the first
    max(1, round(n·len(s_val)/len(s_train))) validation ones, n as large as
    keeps ``core_seconds(train + val + large_cell)`` ≤ ``budget`` (at least 1).
    """
    def share(n):
        return max(1, round(n * len(s_val) / len(s_train)))

    n = len(s_train)
    while n > 1 and core_seconds(s_train[:n] + s_val[:share(n)] + list(large_cell)) > budget:
        n -= 1
    return s_train[:n], s_val[:share(n)]


def vacancy_contrast(nearest: np.ndarray, fields: dict[str, np.ndarray], *, depth: float = 0.3,
                     gap: float = 0.25, width: float = 0.45) -> dict:
    """Mean of each field in the vacancy over its mean in the ordinary interstitial space.

    ``nearest`` (n,) is each grid point's distance to its nearest atom, Å. The vacancy is the
    set of points within ``depth`` Å of the largest such distance (in an Al vacancy at 300 K,
    2.3-2.6 Å: beyond the octahedral holes, 2.02 Å, of the perfect lattice); the reference is
    the points a further ``gap`` Å in, a shell ``width`` Å thick (there 1.6-2.05 Å: the
    octahedral and tetrahedral holes, which every solid training cell has). Each ratio says how
    many times larger a field is in the vacancy than in that bulk space.
    """
    top = float(nearest.max())
    vac = nearest > top - depth
    ref = (nearest <= top - depth - gap) & (nearest > top - depth - gap - width)
    out = {"vacancy_points": int(vac.sum()), "reference_points": int(ref.sum()),
           "vacancy_min_distance_A": round(top - depth, 3),
           "reference_range_A": [round(top - depth - gap - width, 3), round(top - depth - gap, 3)]}
    for name, f in fields.items():
        out[f"{name}_ratio"] = float(f[vac].mean() / f[ref].mean())
    return out


def slice_figure(model, snapshot, path: Path, *, samples: int = 20) -> dict:
    """Total σ, epistemic σ and |ρ̂ − ρ| on the plane through the vacancy (the point farthest from any atom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bigdens.metrics import spearman

    X, y = snapshot_features(snapshot, model.params)
    mean, epi, ale = model.predict(X, samples=samples, seed=0)
    shape = snapshot.density.shape
    sigma = np.sqrt(epi.astype(np.float64) + ale).reshape(shape)
    sigma_epi = np.sqrt(epi.astype(np.float64)).reshape(shape)
    err = np.abs(mean.astype(np.float64) - y).reshape(shape)
    # Feature 0 is the distance to the nearest atom: its maximum sits in the vacancy (or void).
    far = np.unravel_index(int(np.argmax(X[:, 0])), shape)
    k = int(far[2])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    # Each panel clipped at its 99th percentile on the plane: all three peak at the nuclei, and
    # the epistemic part is ~10x smaller than the total, so a shared scale would hide it.
    panels = ((axes[0], sigma, "predicted σ (total)"), (axes[1], sigma_epi, "epistemic σ"),
              (axes[2], err, "|ρ̂ − ρ_DFT|"))
    for ax, field, title in panels:
        vmax = float(np.percentile(field[:, :, k], 99))
        im = ax.imshow(field[:, :, k].T, origin="lower", cmap="magma", vmin=0, vmax=vmax)
        ax.plot(far[0], far[1], "c+", ms=14, mew=2, label="vacancy (farthest from atoms)")
        ax.set_title(f"{title}, plane k={k}")
        ax.set_xlabel("i (along a1)")
        ax.set_ylabel("j (along a2)")
        fig.colorbar(im, ax=ax, label="e/Å³ (clipped at the plane's 99th percentile)")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{snapshot.name}: {len(snapshot.numbers)} atoms, model {model.info.get('stage', '?')}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    contrast = vacancy_contrast(X[:, 0], {"sigma": sigma.ravel(), "sigma_epistemic": sigma_epi.ravel(),
                                           "sigma_aleatoric": np.sqrt(ale.astype(np.float64)), "error": err.ravel()})
    return {"snapshot": snapshot.name, "plane_k": k, "vacancy_grid_point": [int(v) for v in far],
            "spearman_sigma_error_plane": float(spearman(sigma[:, :, k], err[:, :, k])),
            "spearman_sigma_error_cell": float(spearman(sigma, err)),
            "spearman_epistemic_error_cell": float(spearman(sigma_epi, err)),
            "vacancy_contrast": contrast}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", nargs="+", help="small-cell data set(s): stage 1")
    ap.add_argument("--large", nargs="+", help="large-cell data set(s): stage 2 (train) and test")
    ap.add_argument("--figure", metavar="MODEL",
                    help="only draw the σ/error figure of this model on --defect (no training)")
    ap.add_argument("--defect", nargs="*", default=[], help="defect snapshots for the σ/error figure")
    ap.add_argument("--species", type=int, nargs="+", default=[13])
    ap.add_argument("--m", type=int, nargs="+", default=[32])
    ap.add_argument("--k", type=int, nargs="+", default=[6])
    ap.add_argument("--r-cut", type=float, default=6.0)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--finetune-epochs", type=int, default=80)
    ap.add_argument("--points-per-epoch", type=int, default=300_000)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where the models train: cpu (default), cuda or auto")
    ap.add_argument("--rows", nargs="+", default=list("abcde"), choices=list("abcde"),
                    help="the rows to make and score (default all; e.g. split the training over processes "
                         "with --save-models/--reuse-models DIR, then score all with --reuse-models DIR)")
    ap.add_argument("--budget-fraction", type=float, default=1 / 3,
                    help="(e)'s DFT budget as a fraction of (d)'s (default 1/3)")
    ap.add_argument("--out", default="benchmarks/results/transfer")
    ap.add_argument("--save-models", help="folder to save the models in (a … e.safetensors, and e1: (e)'s stage 1)")
    ap.add_argument("--stage1", metavar="MODEL", help="use this trained stage-1 model as (a) instead of training it "
                    "(it must have the descriptor and architecture given)")
    ap.add_argument("--reuse-models", metavar="DIR",
                    help="use the models a-d saved by an earlier --save-models run; train those missing there")
    args = ap.parse_args(argv)
    if args.figure:
        if not args.defect:
            ap.error("--figure needs --defect DATA")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fig = slice_figure(load(args.figure), data.load(args.defect)[0], out / "sigma_vs_error.png",
                           samples=args.samples)
        (out / "figure.json").write_text(json.dumps({"model": args.figure, **fig}, indent=1))
        print(json.dumps(fig))
        return fig
    if not args.small or not args.large:
        ap.error("--small and --large are required (or --figure MODEL --defect DATA)")

    n = len(args.species)
    rep = lambda v: tuple(v) * n if len(v) == 1 else tuple(v)  # noqa: E731
    params = DescriptorParams(species=tuple(args.species), m=rep(args.m), k=rep(args.k), r_cut=args.r_cut)
    arch = Architecture(hidden=tuple(args.hidden), kind="mean-field")
    cfg = TrainConfig(epochs=args.epochs, points_per_epoch=args.points_per_epoch, seed=args.seed, device=args.device)
    ft_cfg = TrainConfig(epochs=args.finetune_epochs, points_per_epoch=args.points_per_epoch, seed=args.seed,
                         train_layers=2, lr=1e-3, device=args.device)
    small = data.load(args.small)
    large = data.load(args.large)
    s_train, s_val = _split(small, "train"), _split(small, "validation") or _holdout(_split(small, "train"))[1]
    l_train_all, l_test = _split(large, "train"), _split(large, "test")
    if len(l_train_all) > 1:
        l_train, l_val = _holdout(l_train_all)
    else:  # one large training cell: keep it all for training and validate on the small cells
        l_train, l_val = l_train_all, s_val
    quiet = lambda line: None  # noqa: E731

    results = {}
    # Without a held-out large cell, stage 2 keeps stage 1's variance factor: fitted on the small
    # cells' validation split, it would be fitted to errors the fine-tuned model does not make there.
    recalibrate = l_val is not s_val
    cost_d = core_seconds(s_train + s_val + l_train_all)
    e_train, e_val = budget_subset(s_train, s_val, l_train_all[:1], args.budget_fraction * cost_d)
    saved = Path(args.reuse_models) if args.reuse_models else None
    makers = {
        "a": lambda: load(args.stage1) if args.stage1 else train(s_train, s_val, params, arch=arch, config=cfg,
                                                                 log=quiet),
        "b": lambda: finetune(models["a"], l_train, l_val, config=ft_cfg, recalibrate=recalibrate, log=quiet),
        "c": lambda: train(l_train, l_val, params, arch=arch, config=cfg, log=quiet),
        "d": lambda: train(s_train + l_train, s_val if l_val is s_val else s_val + l_val, params, arch=arch,
                           config=cfg, log=quiet),
        # (e): its stage 1 ("e1", not scored) sees only the budget's small cells; its stage 2 one
        # large cell, validated on those small cells (so with stage 1's variance factor kept).
        "e1": lambda: train(e_train, e_val, params, arch=arch, config=cfg, log=quiet),
        "e": lambda: finetune(models["e1"], l_train_all[:1], e_val, config=ft_cfg, recalibrate=False, log=quiet),
    }
    wanted = set(args.rows) | ({"e1"} if "e" in args.rows else set()) | ({"a"} if "b" in args.rows else set())
    if args.save_models:
        Path(args.save_models).mkdir(parents=True, exist_ok=True)
    models = {}
    for key, make in makers.items():  # --reuse-models: load what is there, train what is not
        if key not in wanted:
            continue
        path = saved / f"{key}.safetensors" if saved else None
        models[key] = load(path) if path is not None and path.is_file() else make()
        if key == "a" and args.stage1 and (models["a"].params != params
                                           or tuple(models["a"].arch.hidden) != arch.hidden):
            ap.error(f"--stage1 {args.stage1}: its descriptor or architecture differs from the one given")
        if args.save_models:  # each one as soon as it exists: a later failure keeps the earlier ones
            models[key].save(Path(args.save_models) / f"{key}.safetensors")
    cost_small = core_seconds(s_train + s_val)
    cost_large = core_seconds(l_train_all)
    costs = {"a": cost_small, "b": cost_d, "c": cost_large, "d": cost_d,
             "e": core_seconds(e_train + e_val + l_train_all[:1])}
    labels = {"a": "stage 1 only (small cells)", "b": "stage 1 + stage 2 (transfer)",
              "c": "scratch on large-cell data", "d": "scratch on everything",
              "e": f"transfer on {args.budget_fraction:.2g} of (d)'s DFT cost"}
    for key, model in models.items():
        if key not in labels or key not in args.rows:  # e1: (e)'s stage 1, a means not a result
            continue
        ev = evaluate(model, l_test, samples=args.samples, seed=args.seed)
        results[key] = {"label": labels[key], "dft_core_seconds": costs[key],
                        "train_seconds": model.info["training"]["train_seconds"], **ev["overall"]}
        print(f"({key}) {labels[key]:<32} NMAE {ev['overall']['nmae_pct']:.3f} %  "
              f"cov1σ {ev['overall']['coverage_1sigma_pct']:.1f} %  cov2σ {ev['overall']['coverage_2sigma_pct']:.1f} %  "
              f"DFT {costs[key]:.0f} core-s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "descriptor": params.to_dict(),
        "architecture": list(arch.hidden),
        "test_snapshots": [s.name for s in l_test],
        "n_small_train": len(s_train), "n_large_train": len(l_train_all),
        "large_validation": [s.name for s in l_val],
        "stage1": args.stage1 or "trained here",
        "stage2_recalibrated": recalibrate,
        "budget": {"fraction_of_d": args.budget_fraction, "core_seconds": costs["e"],
                   "small_train": [s.name for s in e_train], "small_validation": [s.name for s in e_val],
                   "large_train": [s.name for s in l_train_all[:1]]},
        "results": results,
    }
    if args.defect and "b" in models:
        defects = data.load(args.defect)
        report["figure"] = slice_figure(models["b"], defects[0], out / "sigma_vs_error.png", samples=args.samples)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
