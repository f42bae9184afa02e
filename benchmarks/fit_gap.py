"""How well a model fits the cells it trained on, against the cells it validated on.

For each model, each snapshot of its own training and validation sets (found by name in the data
sets given) is scored with the network's mean (no Monte Carlo: the point is the fit, not σ):
NMAE per cell and the mean per set.  A model whose training NMAE is close to its validation NMAE
underfits: more epochs or more data will not help much, a more expressive network or descriptor
might.  One whose training NMAE is far below its validation NMAE is limited by its data.

Run:  python -m benchmarks.fit_gap MODEL [MODEL ...] --data datasets/sige64 \\
          --out benchmarks/results/model_v3/fit_gap_sige.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bigdens import data, metrics
from bigdens.bnn import load
from bigdens.train import snapshot_features


def mean_density(model, X: np.ndarray) -> np.ndarray:
    """The network's mean density (e/Å³) at features ``X`` (n, F), without sampling."""
    import torch

    with torch.no_grad():
        z = model.net.forward_mean(model.scale_features(X))[:, 0].double().numpy()
    return z * model.scaling.target_std + model.scaling.target_mean


def fit_gap(model, snapshots: dict) -> dict:
    """NMAE (%) per cell of the model's training and validation cells, and the mean of each set."""
    out = {}
    for part in ("train", "validation"):
        names = [r["name"] for r in model.info["data"][part]]
        missing = [n for n in names if n not in snapshots]
        if missing:
            raise SystemExit(f"the data given lack the model's {part} cells {missing}; add their data sets to --data")
        cells = {}
        for n in names:
            X, y = snapshot_features(snapshots[n], model.params)
            cells[n] = metrics.nmae(mean_density(model, X), y)
        out[part] = {"cells": cells, "mean_nmae_pct": float(np.mean(list(cells.values())))}
    out["gap"] = out["validation"]["mean_nmae_pct"] / out["train"]["mean_nmae_pct"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model files")
    ap.add_argument("--data", nargs="+", required=True, help="data sets holding the models' training and validation cells")
    ap.add_argument("--out", required=True, help="JSON file (rows are added to an existing one)")
    args = ap.parse_args(argv)
    snaps = {s.name: s for s in data.load(args.data, allow_mixed_protocols=True)}
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    for path in args.models:
        row = fit_gap(load(path), snaps)
        result[path] = row
        print(f"{path}: train {row['train']['mean_nmae_pct']:.3f} %, validation {row['validation']['mean_nmae_pct']:.3f} %"
              f" (ratio {row['gap']:.2f})", flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
