"""Descriptor convergence study: validation error against M, K and r_cut.

Around a base setting, one parameter is varied at a time; for each setting a
model is trained from scratch with the same schedule and seed on the training
split and scored on the validation split (mean-weight NMAE and the Monte
Carlo NMAE).  The shipped values are the smallest ones past which the error
stops improving.

Settings are independent, so ``--jobs N`` trains N of them side by side in
separate processes (each with ``--threads`` CPU threads; with ``--device
cuda`` they share the GPU).  The result file is rewritten as each setting
finishes, so a run stopped early keeps what it finished.

Run:  python -m benchmarks.descriptor_convergence datasets/al32 --species 13 \
          --out benchmarks/results/convergence_al.json
      python -m benchmarks.descriptor_convergence datasets/sige64 --species 14 32 \
          --base 24 5 6.5 --nll-beta 0.5 --epochs 150 --points-per-epoch 250000 \
          --jobs 10 --device cuda --out benchmarks/results/convergence_sige.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from benchmarks._common import machine_info, write_result


def settings(base: dict, m_values, k_values, r_values):
    """(label, m, k, r_cut) tuples: the base, then one parameter varied at a time."""
    out = [("base", base["m"], base["k"], base["r_cut"])]
    out += [("m", m, base["k"], base["r_cut"]) for m in m_values if m != base["m"]]
    out += [("k", base["m"], k, base["r_cut"]) for k in k_values if k != base["k"]]
    out += [("r_cut", base["m"], base["k"], r) for r in r_values if r != base["r_cut"]]
    return out


def run_setting(setting: tuple, args: argparse.Namespace) -> dict:
    """Train and score one (label, m, k, r_cut) setting; one row of the result."""
    import numba
    import torch

    from bigdens import data
    from bigdens.bnn import Architecture
    from bigdens.descriptors import DescriptorParams
    from bigdens.train import TrainConfig, evaluate, train

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    label, m, k, r = setting
    snaps = data.load(args.data)
    tr = [s for s in snaps if s.split == "train"]
    va = [s for s in snaps if s.split == "validation"]
    n = len(args.species)
    params = DescriptorParams(species=tuple(args.species), m=(m,) * n, k=(k,) * n, r_cut=r)
    cfg = TrainConfig(epochs=args.epochs, points_per_epoch=args.points_per_epoch, seed=args.seed,
                      patience=args.patience or max(5, args.epochs // 3), lr=args.lr, nll_beta=args.nll_beta,
                      device=args.device, time_limit=args.time_limit)
    t = time.perf_counter()
    arch = Architecture(hidden=tuple(args.hidden), kind="mean-field")
    model = train(tr, va, params, arch=arch, config=cfg, log=lambda _: None)
    ev = evaluate(model, va, samples=10, seed=args.seed)["overall"]
    training = model.info["training"]
    return {"varied": label, "m": m, "k": k, "r_cut": r, "n_features": params.n_features,
            "val_nmae_mean_weights_pct": training["best_val_nmae_pct"], "best_epoch": training["best_epoch"],
            "epochs_run": len(model.info["history"]), "val_nmae_mc_pct": ev["nmae_pct"],
            "coverage_1sigma_pct": ev["coverage_1sigma_pct"], "seconds": time.perf_counter() - t,
            "n_train": len(tr), "n_validation": len(va)}


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
    ap.add_argument("--patience", type=int, default=None, help="early-stopping patience (default: epochs // 3)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--nll-beta", type=float, default=0.0, help="β of the β-NLL loss (0.5 for alloys)")
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where the models train: cpu (default), cuda or auto")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds of training per setting after which no new epoch starts (a safety net: "
                         "rows record the epochs run)")
    ap.add_argument("--jobs", type=int, default=1, help="settings trained side by side, one process each")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per job")
    ap.add_argument("--out", default="benchmarks/results/convergence.json")
    args = ap.parse_args(argv)

    base = {"m": int(args.base[0]), "k": int(args.base[1]), "r_cut": float(args.base[2])}
    todo = settings(base, args.m_values, args.k_values, args.r_values)
    result = {"benchmark": "descriptor_convergence", "data": [str(p) for p in args.data],
              "species": args.species, "epochs": args.epochs, "points_per_epoch": args.points_per_epoch,
              "patience": args.patience or max(5, args.epochs // 3), "lr": args.lr, "nll_beta": args.nll_beta,
              "time_limit_s": args.time_limit,
              "hidden": args.hidden, "seed": args.seed, "device": args.device, "jobs": args.jobs,
              "machine": machine_info(), "base": base, "settings_planned": len(todo), "rows": []}

    if args.device != "cpu":
        import torch

        if torch.cuda.is_available():
            result["machine"]["gpu"] = torch.cuda.get_device_name(0)

    def done(row: dict) -> None:
        result["rows"].append(row)
        order = {s[:4]: i for i, s in enumerate(todo)}
        result["rows"].sort(key=lambda w: order[(w["varied"], w["m"], w["k"], w["r_cut"])])
        result["n_train"], result["n_validation"] = row["n_train"], row["n_validation"]
        write_result(args.out, result)  # after each setting: a stopped run keeps what it finished
        print(f"{row['varied']:>6}  M={row['m']:<3d} K={row['k']:<2d} r_cut={row['r_cut']:<4}  "
              f"features {row['n_features']:<4d} val NMAE {row['val_nmae_mc_pct']:.3f} %  "
              f"(best epoch {row['best_epoch']}, {row['seconds']:.0f} s)", flush=True)

    if args.jobs <= 1:
        for s in todo:
            done(run_setting(s, args))
    else:
        # spawn: CUDA and numba's thread pools do not survive fork
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(run_setting, s, args) for s in todo]):
                done(fut.result())
    return result


if __name__ == "__main__":
    main()
