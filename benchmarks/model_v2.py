"""Score density models on held-out DFT cells: the columns of the model-v2 ablation table.

For each model and each snapshot: NMAE, ΔN, 1σ/2σ coverage and Spearman(σ, |err|) as
:func:`bigdens.train.evaluate` computes them (Monte Carlo samples seeded by the snapshot's
identity); in open space (grid points at least ``OPEN_SPACE`` Å from every atom: a vacancy or a
void, none in a crystal) the point count, 1σ coverage, rms(err/σ) and the mean |err| and σ
relative to the rest of the cell; for two-species models the relative error (Σ|err| / Σ|ρ|) at
bond points of each bond type (the two nearest atoms 0.8–1.6 Å away and within 0.3 Å of each
other in distance).  An ensemble is scored by giving several model files joined with ``+``: the
members' means are averaged, the epistemic variance is the members' mean epistemic variance plus
the variance of their means, the aleatoric variance their mean.

Run:  python -m benchmarks.model_v2 MODEL [MODEL ...] --data datasets/al108 datasets/al32-vacancy \\
          --split test --out benchmarks/results/model_v2/al_scores.json
      python -m benchmarks.model_v2 --table benchmarks/results/model_v2/al_scores.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bigdens import data, metrics
from bigdens.bnn import load
from bigdens.thermal import bond_spread
from bigdens.train import snapshot_block_index, snapshot_features

#: Points at least this far (Å) from every atom count as open space (the model issue's definition).
OPEN_SPACE = 2.3
#: Bond points: both nearest atoms within this distance range (Å), and within BOND_TOLERANCE of each other.
BOND_RANGE = (0.8, 1.6)
BOND_TOLERANCE = 0.3


def predict_members(models: list, X: np.ndarray, *, samples: int, block_index: int, disorder: float | None = None):
    """Mean, epistemic and aleatoric variance of one model or an ensemble (see the module docstring).

    ``disorder``: the structure's bond spread, Å (:func:`bigdens.thermal.bond_spread`).
    """
    outs = [m.predict(X, samples=samples, seed=0, block_index=block_index, disorder=disorder) for m in models]
    means = np.stack([o[0] for o in outs]).astype(np.float64)
    epi = np.mean([o[1] for o in outs], axis=0) + means.var(axis=0)
    ale = np.mean([o[2] for o in outs], axis=0)
    return means.mean(axis=0), epi, ale


def bond_errors(model, X: np.ndarray, err: np.ndarray, ref: np.ndarray) -> dict:
    """Relative error (%) at bond points of each bond type, with the point counts."""
    from ase.data import chemical_symbols

    p = model.params
    if len(p.species) < 2:
        return {}
    d = np.concatenate([X[:, [o, o + 1]] for o in p.offsets], axis=1)  # (n, 2S): d1, d2 per species
    spec = np.repeat(np.arange(len(p.species)), 2)
    order = np.argsort(d, axis=1)[:, :2]
    da = np.take_along_axis(d, order, axis=1)
    sa = spec[order]
    bond = (da[:, 0] >= BOND_RANGE[0]) & (da[:, 1] <= BOND_RANGE[1]) & (da[:, 1] - da[:, 0] <= BOND_TOLERANCE)
    out = {}
    for i in range(len(p.species)):
        for j in range(i, len(p.species)):
            sel = bond & (np.minimum(sa[:, 0], sa[:, 1]) == i) & (np.maximum(sa[:, 0], sa[:, 1]) == j)
            name = f"{chemical_symbols[p.species[i]]}-{chemical_symbols[p.species[j]]}"
            if sel.sum():
                out[name] = {"rel_error_pct": float(100 * err[sel].sum() / np.abs(ref[sel]).sum()),
                             "n_points": int(sel.sum())}
    return out


def score_snapshot(models: list, snapshot, *, samples: int) -> dict:
    """Every column of the ablation table for one snapshot."""
    model = models[0]
    X, y = snapshot_features(snapshot, model.params)
    spread = bond_spread(snapshot.positions, snapshot.numbers, snapshot.cell)
    mean, epi, ale = predict_members(models, X, samples=samples, block_index=snapshot_block_index(snapshot),
                                     disorder=spread)
    sigma = np.sqrt(epi + ale)
    shape = snapshot.density.shape
    row = {"name": snapshot.name, "protocol": snapshot.protocol, "n_atoms": int(len(snapshot.numbers)),
           "bond_spread_A": spread,
           "aleatoric_disorder_factor": model.scaling.aleatoric_factor(spread)}
    row.update(metrics.summary(mean.reshape(shape), y.reshape(shape), sigma.reshape(shape),
                               dv=snapshot.grid().dv, n_electrons=snapshot.n_electrons_expected))
    err = np.abs(mean - y.astype(np.float64))
    row["min_density"] = float(mean.min())
    opened = model.nearest_distance(X) >= OPEN_SPACE
    if opened.any():
        rest = ~opened
        row["open_space"] = {
            "n_points": int(opened.sum()),
            "coverage_1sigma_pct": float(100 * np.mean(err[opened] <= sigma[opened])),
            "rms_err_over_sigma": float(np.sqrt(np.mean((err[opened] / sigma[opened]) ** 2))),
            "error_ratio": float(err[opened].mean() / err[rest].mean()),
            "sigma_ratio": float(sigma[opened].mean() / sigma[rest].mean()),
            "epistemic_ratio": float(np.sqrt(epi[opened]).mean() / np.sqrt(epi[rest]).mean()),
        }
    bonds = bond_errors(model, X, err, y)
    if bonds:
        row["bonds"] = bonds
    return row


def _member(path: str, model) -> dict:
    """What a score row needs to say of the model it scored: file hash, stage, validation result, optimiser."""
    from bigdens.bnn import file_hash

    info = model.info or {}
    return {"file": path, "sha256": file_hash(path), "stage": info.get("stage"),
            "training": info.get("training"), "train_config": info.get("train_config")}


def table(paths: list[str]) -> str:
    """A markdown table of score files: one row per model and snapshot."""
    lines = ["| model | snapshot | NMAE % | ΔN % | 1σ / 2σ cov. % | Spearman | open space: cov1 % / rms(err/σ) | bonds Si-Si / Si-Ge / Ge-Ge % |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for path in paths:
        for spec, res in json.loads(Path(path).read_text()).items():
            for r in res["snapshots"]:
                o = r.get("open_space")
                b = r.get("bonds", {})
                lines.append(
                    f"| {spec} | {r['name']} | {r['nmae_pct']:.3f} | {r['electron_count_error_pct']:+.3f} | "
                    f"{r['coverage_1sigma_pct']:.1f} / {r['coverage_2sigma_pct']:.1f} | {r['spearman_sigma_error']:.2f} | "
                    + (f"{o['coverage_1sigma_pct']:.0f} / {o['rms_err_over_sigma']:.2f} |" if o else "— |")
                    + (" " + " / ".join(f"{b[k]['rel_error_pct']:.2f}" if k in b else "—"
                                        for k in ("Si-Si", "Si-Ge", "Ge-Ge")) + " |" if b else " — |"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model files; join ensemble members with '+'")
    ap.add_argument("--data", nargs="+", help="data sets or snapshot files")
    ap.add_argument("--split", default="test", help="split to score (default test)")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--allow-mixed-protocols", action="store_true",
                    help="score snapshots of several DFT protocols in one run (each row records its protocol)")
    ap.add_argument("--out", help="JSON file to write (rows are added to an existing one)")
    ap.add_argument("--table", action="store_true", help="print the score files MODELS as a markdown table")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.models))
        return 0
    snaps = data.load(args.data, split=args.split, allow_mixed_protocols=args.allow_mixed_protocols)
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    for spec in args.models:
        models = [load(p) for p in spec.split("+")]
        rows = [score_snapshot(models, s, samples=args.samples) for s in snaps]
        result[spec] = {"samples": args.samples, "split": args.split, "data": args.data, "snapshots": rows,
                        "members": [_member(p, m) for p, m in zip(spec.split("+"), models)]}
        for r in rows:
            extra = ""
            if "open_space" in r:
                o = r["open_space"]
                extra += f"  open: n={o['n_points']} cov1={o['coverage_1sigma_pct']:.1f} rms(e/s)={o['rms_err_over_sigma']:.2f}"
            if "bonds" in r:
                extra += "  bonds: " + " ".join(f"{k}={v['rel_error_pct']:.2f}" for k, v in r["bonds"].items())
            print(f"{spec:40s} {r['name']:28s} NMAE {r['nmae_pct']:.3f} dN {r['electron_count_error_pct']:+.3f} "
                  f"cov {r['coverage_1sigma_pct']:.1f}/{r['coverage_2sigma_pct']:.1f} sp {r['spearman_sigma_error']:.2f}{extra}")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
