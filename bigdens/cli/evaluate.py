"""``bigdens evaluate``: accuracy and calibration of a model on DFT snapshots."""

from __future__ import annotations

import argparse

HELP = "evaluate a model on DFT data: NMAE, NRMSE, electron count, coverage, Spearman(σ, error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_split_argument, add_threads_argument

    parser.add_argument("model", help="model file")
    parser.add_argument("data", nargs="+", help="data-set directories and/or density files")
    add_split_argument(parser, help="only this split of the data sets")
    parser.add_argument("--mc-samples", type=int, default=20, help="Monte Carlo weight samples (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo samples (default 0)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--allow-mixed-protocols", action="store_true",
                        help="accept snapshots made with different DFT settings")
    add_threads_argument(parser)


def format_table(result: dict) -> str:
    cols = [("nmae_pct", "NMAE %"), ("nrmse_pct", "NRMSE %"), ("electron_count_error_pct", "ΔN %"),
            ("coverage_1sigma_pct", "cov1σ %"), ("coverage_2sigma_pct", "cov2σ %"), ("spearman_sigma_error", "Spearman")]
    if "epistemic_high_pct" in result["overall"]:
        cols.append(("epistemic_high_pct", "epi>q999 %"))  # 0.1 % where the data are like the validation data
    rows = result["snapshots"] + [dict(result["overall"], name="overall", split="")]
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'snapshot':<{width}}  {'split':<10}" + "".join(f"{h:>11}" for _, h in cols)]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['split']:<10}" + "".join(f"{r[k]:>11.3f}" for k, _ in cols))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from ..bnn import load
    from ..data import load as load_data
    from ..errors import InputError
    from ..train import evaluate
    from .train import check_run_arguments, set_threads

    check_run_arguments(args)
    set_threads(args.threads)
    model = load(args.model)
    snaps = load_data(args.data, split=args.split, allow_mixed_protocols=args.allow_mixed_protocols)
    if not snaps:
        raise InputError(f"no snapshots{' of split ' + repr(args.split) if args.split else ''} in {args.data}")
    result = evaluate(model, snaps, samples=args.mc_samples, seed=args.seed)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0
