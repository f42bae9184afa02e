"""Does a σ map fitted on calibration cells calibrate a cell it has not seen?  Leave-one-cell-out on the
calibration split only (no test cell is read).

For a shipped model and its calibration cells (``model.info["calibration"]["validation"]``, found in the
given data sets), each cell's errors and σ are predicted once (S = 20, the cell's own block index and bond
spread, as ``bigdens evaluate``).  Then for each cell c the σ map (:func:`bigdens.train.sigma_map.fit_sigma_map`)
is fitted on the other cells' points and applied to c; the JSON has c's ENCE, RMSE/RMV per σ decile and 1σ
coverage without and with the map.  Mode ``full`` is the map as ``bigdens calibrate --sigma-map`` fits it
(shape and level); mode ``shape`` keeps the level of the 68.3 % coverage of the other cells and takes only
the map's shape.

Run:  python -m benchmarks.sigma_map_cv al --data datasets/al108 datasets/al108-cal600 datasets/al108-cal900
      python -m benchmarks.sigma_map_cv sige --data datasets/sige216 datasets/sige216-900k datasets/sige64
      (-o benchmarks/results/sigma_map_cv_SYSTEM.json)
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks._common import machine_info, write_result
from bigdens import data, metrics
from bigdens.bnn import Scaling, load
from bigdens.models import shipped_models
from bigdens.thermal import bond_spread
from bigdens.train import snapshot_block_index, snapshot_features
from bigdens.train.sigma_map import fit_sigma_map

MODES = ("full", "shape")


def _scaling(knots, logs) -> Scaling:
    return Scaling(feature_mean=(0.0,), feature_std=(1.0,), target_mean=0.0, target_std=1.0,
                   sigma_knots=tuple(knots), sigma_log_ratios=tuple(logs))


def fold(err: np.ndarray, sigma: np.ndarray, *, mode: str) -> Scaling:
    """The map fitted on the pooled points of the other cells (``mode`` as in the module docstring)."""
    knots, logs = fit_sigma_map(err, sigma)
    if mode == "shape" and knots:
        z = np.abs(err) / (sigma * _scaling(knots, logs).sigma_ratio(sigma))
        logs = np.asarray(logs) + np.log(np.quantile(z, 0.683))
    return _scaling(knots, logs)


def _cell_row(err: np.ndarray, sigma: np.ndarray) -> dict:
    b = metrics.binned_calibration(err, 0 * err, sigma)
    return {"ence": b["ence"], "ratio": b["ratio"], "coverage_1sigma_pct": float(100 * np.mean(np.abs(err) <= sigma))}


def run(system: str, paths: list[str], *, samples: int = 20) -> dict:
    model = load(shipped_models()[system])
    names = list(model.info["calibration"]["validation"])
    snaps = [s for s in data.load(paths) if s.name in names]
    missing = sorted(set(names) - {s.name for s in snaps})
    if missing:
        raise SystemExit(f"calibration cells {missing} are not in {paths}")
    cells = {}
    for s in snaps:
        X, y = snapshot_features(s, model.params)
        mean, epi, ale = model.predict(X, samples=samples, seed=0, block_index=snapshot_block_index(s),
                                       disorder=bond_spread(s.positions, s.numbers, s.cell))
        cells[s.name] = (mean.astype(np.float64) - y, np.sqrt(epi.astype(np.float64) + ale))
    out = {"benchmark": "sigma_map_cv", "system": system, "model": f"bigdens/models/{system}.safetensors", "samples": samples,
           "calibration_cells": names, "machine": machine_info(), "folds": {}}
    for mode in MODES:
        rows = {}
        for name, (err, sigma) in cells.items():
            others = [k for k in cells if k != name]
            sc = fold(np.concatenate([cells[k][0] for k in others]), np.concatenate([cells[k][1] for k in others]),
                      mode=mode)
            rows[name] = {"without_map": _cell_row(err, sigma), "with_map": _cell_row(err, sigma * sc.sigma_ratio(sigma))}
            print(f"{mode:5s} {name:26s} ENCE {rows[name]['without_map']['ence']:.3f} -> {rows[name]['with_map']['ence']:.3f}"
                  f"  cov1 {rows[name]['without_map']['coverage_1sigma_pct']:.1f} -> "
                  f"{rows[name]['with_map']['coverage_1sigma_pct']:.1f}", flush=True)
        out["folds"][mode] = rows
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("system", choices=("al", "sige"), help="shipped model")
    ap.add_argument("--data", nargs="+", required=True, help="data sets holding the model's calibration cells")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("-o", "--out", help="result JSON (default benchmarks/results/sigma_map_cv_SYSTEM.json)")
    args = ap.parse_args(argv)
    result = run(args.system, args.data, samples=args.samples)
    return write_result(args.out or f"benchmarks/results/sigma_map_cv_{args.system}.json", result)


if __name__ == "__main__":
    main()
