"""``bigdens evaluate``: accuracy and calibration of a model on DFT snapshots.

Every snapshot's DFT protocol (``bigdens-dft-v1``, ``bigdens-dft-v2``, ``custom-…``,
``import-cube`` ...) is reported with its metrics: a ``protocol`` column in the table, and in
``--json`` a ``protocol`` per snapshot plus ``protocols``, the distinct ones, sorted.  Labels of
different protocols are different targets, so data of several protocols are refused unless
``--allow-mixed-protocols`` (:func:`bigdens.data.load`).
"""

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
                        help="accept snapshots made with different DFT protocols (each snapshot's is reported)")
    add_threads_argument(parser)


def with_protocols(result: dict, snapshots) -> dict:
    """``result`` of :func:`bigdens.train.evaluate` with the DFT protocol of each snapshot.

    Adds ``protocol`` to each row of ``result["snapshots"]`` (the snapshots in
    the order evaluated; ``"unknown"`` where none is recorded) and
    ``protocols``, the distinct ones, sorted.  The metrics are not touched.
    """
    rows = result["snapshots"]
    if [r["name"] for r in rows] != [s.name for s in snapshots]:  # pragma: no cover - evaluate keeps the order
        raise RuntimeError("the evaluation rows are not the snapshots in order")
    rows = [dict(r, protocol=str(s.protocol or "unknown")) for r, s in zip(rows, snapshots)]
    return dict(result, snapshots=rows, protocols=sorted({r["protocol"] for r in rows}))


def format_table(result: dict) -> str:
    cols = [("nmae_pct", "NMAE %"), ("nrmse_pct", "NRMSE %"), ("electron_count_error_pct", "ΔN %"),
            ("coverage_1sigma_pct", "cov1σ %"), ("coverage_2sigma_pct", "cov2σ %"), ("ence", "ENCE"),
            ("spearman_sigma_error", "Spearman")]
    if "epistemic_high_pct" in result["overall"]:
        cols.append(("epistemic_high_pct", "epi>q999 %"))  # 0.1 % where the data are like the validation data
    protocols = result.get("protocols", [])
    overall = protocols[0] if len(protocols) == 1 else "mixed" if protocols else ""
    rows = result["snapshots"] + [dict(result["overall"], name="overall", split="", protocol=overall)]
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'snapshot':<{width}}  {'split':<10}" + "".join(f"{h:>11}" for _, h in cols) + "  protocol"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['split']:<10}" + "".join(f"{r[k]:>11.3f}" for k, _ in cols)
                     + f"  {r.get('protocol', '')}")
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
    result = with_protocols(evaluate(model, snaps, samples=args.mc_samples, seed=args.seed), snaps)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0
