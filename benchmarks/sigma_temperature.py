"""Does σ follow the error as cells get hotter?  Per cell: bond spread, error, σ, and the factor σ² lacks.

For each model and each snapshot: its temperature, its bond spread (:func:`bigdens.thermal.bond_spread`,
Å), the factor the model puts on its aleatoric variance there, NMAE, 1σ / 2σ coverage, and
``needed``: the factor on the aleatoric variance with which 1σ would cover 68.3 % of the cell's
points (1: σ is right; > 1: too narrow).  With ``--bins`` also ``needed`` per decile of the predicted
variance and per region class (cores < 0.6 Å, bonds, open space ≥ 1.4 Å from the nearest atom):
flat rows mean the cell's error grows everywhere at once, which no per-point input sees.

Run:  python -m benchmarks.sigma_temperature MODEL [MODEL ...] --data datasets/al108 \\
          --out benchmarks/results/sigma_temperature/al.json [--bins]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bigdens import data, metrics
from bigdens.bnn import REGION_EDGES, load
from bigdens.thermal import bond_spread
from bigdens.train import _cell_factor, snapshot_block_index, snapshot_features

from ._common import write_result


def score(model, snapshot, *, samples: int, bins: bool) -> dict:
    """One row: see the module docstring."""
    X, y = snapshot_features(snapshot, model.params)
    u = bond_spread(snapshot.positions, snapshot.numbers, snapshot.cell)
    mean, epi, ale = model.predict(X, samples=samples, seed=0, block_index=snapshot_block_index(snapshot),
                                   disorder=u)
    e2 = (mean.astype(np.float64) - y) ** 2
    epi, ale = epi.astype(np.float64), ale.astype(np.float64)
    sigma = np.sqrt(epi + ale)
    row = {"name": snapshot.name, "split": snapshot.split, "temperature_K": snapshot.temperature,
           "bond_spread_A": u, "aleatoric_factor": model.scaling.aleatoric_factor(u),
           "nmae_pct": metrics.nmae(mean, y), "coverage_1sigma_pct": metrics.coverage(mean, y, sigma, 1.0),
           "coverage_2sigma_pct": metrics.coverage(mean, y, sigma, 2.0), "needed": _cell_factor(e2, epi, ale)}
    if bins:
        v = epi + ale
        edges = np.quantile(v, np.linspace(0, 1, 11))
        dec = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, 9)
        row["needed_by_sigma_decile"] = [_cell_factor(e2[dec == k], epi[dec == k], ale[dec == k]) for k in range(10)]
        cls = np.searchsorted(np.asarray(REGION_EDGES), model.nearest_distance(X), side="right")
        row["needed_by_region"] = [_cell_factor(e2[cls == k], epi[cls == k], ale[cls == k])
                                   for k in range(len(REGION_EDGES) + 1)]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model files")
    ap.add_argument("--data", nargs="+", required=True, help="data sets or snapshot files (every split)")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--bins", action="store_true", help="also per σ decile and region class")
    ap.add_argument("--out", required=True, help="JSON file to write (models are added to an existing one)")
    args = ap.parse_args(argv)
    snaps = data.load(args.data)
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    for path in args.models:
        model = load(path)
        rows = [score(model, s, samples=args.samples, bins=args.bins) for s in snaps]
        result[path] = {"samples": args.samples, "data": args.data, "snapshots": rows}
        for r in rows:
            print(f"{path:44s} {r['name']:24s} {r['split']:10s} u {r['bond_spread_A']:.4f} g {r['aleatoric_factor']:.2f} "
                  f"NMAE {r['nmae_pct']:.3f} cov {r['coverage_1sigma_pct']:.1f}/{r['coverage_2sigma_pct']:.1f} "
                  f"needed {r['needed']:.2f}")
        write_result(out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
