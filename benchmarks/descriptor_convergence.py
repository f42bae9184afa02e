"""Descriptor convergence study: validation error against M, K and r_cut.

Around a base setting, one parameter is varied at a time; for each setting a
model is trained with the same (short) schedule and seed on the training
split and scored on the validation split (mean-weight NMAE and the
Monte Carlo NMAE).  The shipped values are the smallest ones past which the
error stops improving.

Run:  python -m benchmarks.descriptor_convergence datasets/al32 --species 13 \
          --out benchmarks/results/convergence_al.json
"""

from __future__ import annotations

import argparse
import time

from benchmarks._common import write_result
from bigdens import data
from bigdens.bnn import Architecture
from bigdens.descriptors import DescriptorParams
from bigdens.train import TrainConfig, evaluate, train


def settings(base: dict, m_values, k_values, r_values):
    """(label, m, k, r_cut) tuples: the base, then one parameter varied at a time."""
    out = [("base", base["m"], base["k"], base["r_cut"])]
    out += [("m", m, base["k"], base["r_cut"]) for m in m_values if m != base["m"]]
    out += [("k", base["m"], k, base["r_cut"]) for k in k_values if k != base["k"]]
    out += [("r_cut", base["m"], base["k"], r) for r in r_values if r != base["r_cut"]]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+", help="data set(s) with train and validation splits")
    ap.add_argument("--species", type=int, nargs="+", default=[13])
    ap.add_argument("--base", type=float, nargs=3, default=[32, 6, 6.0], metavar=("M", "K", "R_CUT"))
    ap.add_argument("--m-values", type=int, nargs="+", default=[8, 16, 24, 32, 48])
    ap.add_argument("--k-values", type=int, nargs="+", default=[0, 3, 4, 6, 8])
    ap.add_argument("--r-values", type=float, nargs="+", default=[4.5, 5.0, 6.0, 7.0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--points-per-epoch", type=int, default=150_000)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/convergence.json")
    args = ap.parse_args(argv)

    snaps = data.load(args.data)
    tr = [s for s in snaps if s.split == "train"]
    va = [s for s in snaps if s.split == "validation"]
    n = len(args.species)
    base = {"m": int(args.base[0]), "k": int(args.base[1]), "r_cut": float(args.base[2])}
    cfg = TrainConfig(epochs=args.epochs, points_per_epoch=args.points_per_epoch, seed=args.seed,
                      patience=max(5, args.epochs // 3))
    rows = []
    for label, m, k, r in settings(base, args.m_values, args.k_values, args.r_values):
        params = DescriptorParams(species=tuple(args.species), m=(m,) * n, k=(k,) * n, r_cut=r)
        t = time.perf_counter()
        model = train(tr, va, params, arch=Architecture(hidden=tuple(args.hidden)), config=cfg, log=lambda _: None)
        ev = evaluate(model, va, samples=10, seed=args.seed)["overall"]
        rows.append({"varied": label, "m": m, "k": k, "r_cut": r, "n_features": params.n_features,
                     "val_nmae_mean_weights_pct": model.info["training"]["best_val_nmae_pct"],
                     "val_nmae_mc_pct": ev["nmae_pct"], "coverage_1sigma_pct": ev["coverage_1sigma_pct"],
                     "seconds": time.perf_counter() - t})
        print(f"{label:>6}  M={m:<3d} K={k:<2d} r_cut={r:<4}  features {params.n_features:<4d} "
              f"val NMAE {ev['nmae_pct']:.3f} %", flush=True)
    result = {"benchmark": "descriptor_convergence", "data": [str(p) for p in args.data],
              "n_train": len(tr), "n_validation": len(va), "epochs": args.epochs,
              "points_per_epoch": args.points_per_epoch, "base": base, "rows": rows}
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
