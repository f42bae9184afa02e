"""Cross-calibration of a fine-tuned model's variance factor over all its large training cells.

A stage-2 model validated (early-stopped and calibrated) on one held-out large cell
sees the errors of that cell's temperature only.  Here each other large training
cell is held out in turn: the stage-1 parent is fine-tuned with the same recipe
on the remaining cells, validated on the held-out one, and its errors there are
scored.  The |ρ̂ − ρ| / σ_raw of all held-out cells (σ_raw: each model's σ
without its own variance factor) are pooled and the factor is their 68.3 %
quantile squared, as :func:`bigdens.train.calibrate` fits on one cell.  No
test snapshot is used.

Run:  python -m benchmarks.cross_calibration bigdens/models/al.safetensors \\
          benchmarks/results/transfer_al/models/a.safetensors datasets/al108 \\
          --folds benchmarks/results/cross_calibration_al/models --out benchmarks/results/cross_calibration_al \\
          --write bigdens/models/al.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bigdens import data
from bigdens.bnn import DensityModel, load
from bigdens.train import TrainConfig, _stack, finetune, with_variance_scale


def raw_z(model: DensityModel, snapshots, *, samples: int, seed: int) -> np.ndarray:
    """|ρ̂ − ρ| / σ without the model's variance factor, pooled over ``snapshots`` (one block)."""
    X, y = _stack(snapshots, model.params)
    mean, epi, ale = model.predict(X, samples=samples, seed=seed, block_index=0)
    sigma = np.sqrt((epi.astype(np.float64) + ale) / model.scaling.variance_scale)
    return np.abs(mean.astype(np.float64) - y) / sigma


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="the fine-tuned model (its validation record names its held-out cell)")
    ap.add_argument("parent", help="its stage-1 parent model")
    ap.add_argument("large", nargs="+", help="the large-cell data set(s): their 'train' split is cross-validated")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--points-per-epoch", type=int, default=300_000)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", help="folder to save (and reuse) the fold models in")
    ap.add_argument("--out", default="benchmarks/results/cross_calibration")
    ap.add_argument("--write", metavar="MODEL", help="write the model with the cross-calibrated factor here")
    args = ap.parse_args(argv)

    model, parent = load(args.model), load(args.parent)
    cells = [s for s in data.load(args.large) if s.split == "train"]
    held = {d["name"] for d in model.info.get("data", {}).get("validation", [])}
    own = [s for s in cells if s.name in held]
    if not own:
        ap.error(f"{args.model} was not validated on a training cell of {args.large}")
    cfg = TrainConfig(epochs=args.epochs, points_per_epoch=args.points_per_epoch, seed=args.seed,
                      train_layers=args.layers, lr=args.lr)
    folds = [{"held_out": [s.name for s in own], "model": args.model,
              "z": raw_z(model, own, samples=args.samples, seed=args.seed)}]
    for cell in (s for s in cells if s.name not in held):
        path = Path(args.folds) / f"without-{cell.name}.safetensors" if args.folds else None
        if path is not None and path.is_file():
            fold = load(path)
        else:
            rest = [s for s in cells if s.name != cell.name]
            fold = finetune(parent, rest, [cell], config=cfg, log=lambda _: None)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                fold.save(path)
        folds.append({"held_out": [cell.name], "model": str(path) if path else None,
                      "z": raw_z(fold, [cell], samples=args.samples, seed=args.seed)})
    pooled = np.concatenate([f["z"] for f in folds])
    factor = float(np.quantile(pooled, 0.683)) ** 2
    report = {
        "model": args.model, "parent": args.parent, "samples": args.samples, "seed": args.seed,
        "recipe": {"layers": args.layers, "epochs": args.epochs, "lr": args.lr, "points_per_epoch": args.points_per_epoch},
        "folds": [{"held_out": f["held_out"], "model": f["model"],
                   "factor_alone": float(np.quantile(f["z"], 0.683)) ** 2, "n_points": int(len(f["z"]))}
                  for f in folds],
        "variance_scale_before": model.scaling.variance_scale,
        "variance_scale_cross": factor,
    }
    for f in report["folds"]:
        print(f"held out {', '.join(f['held_out'])}: factor {f['factor_alone']:.4f} alone")
    print(f"pooled: {factor:.4f} (the model had {model.scaling.variance_scale:.4f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    if args.write:
        with_variance_scale(model, factor, calibration={
            "method": "cross-calibration over the large training cells", "folds": report["folds"],
            "samples": args.samples, "seed": args.seed}).save(args.write)
    return report


if __name__ == "__main__":
    main()
