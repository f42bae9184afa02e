"""``bigdens calibrate``: refit a model's uncertainty on validation data, weights unchanged."""

from __future__ import annotations

import argparse

HELP = "refit a model's variance factor and epistemic reference on validation data (weights unchanged)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_keep_variance_argument, add_output_argument, add_split_argument, add_threads_argument

    parser.add_argument("model", help="model file")
    parser.add_argument("data", nargs="+",
                        help="validation data-set directories and/or density files, never trained on; test cells "
                             "are refused (split 'test' in the file or its dataset.json, or a shipped test cell's "
                             "structure)")
    add_split_argument(parser, help="only snapshots of this split (files that record none get it)")
    add_keep_variance_argument(parser, help="keep the variance factor; refit only the epistemic reference")
    parser.add_argument("--sigma-map", action="store_true",
                        help="also fit the σ map (model format 3): RMSE = RMV in every σ decile of the data; off by "
                             "default, as it did not calibrate a left-out calibration cell better (docs/models.md)")
    parser.add_argument("--mc-samples", type=int, default=20, help="Monte Carlo weight samples (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo samples (default 0)")
    parser.add_argument("--allow-mixed-protocols", action="store_true",
                        help="accept snapshots made with different DFT settings")
    add_threads_argument(parser)
    add_output_argument(parser, metavar="MODEL.safetensors", help="model file to write (.safetensors)")


def run(args: argparse.Namespace) -> int:
    from ..bnn import load
    from ..data import load as load_data
    from ..errors import InputError
    from ..train import calibrate, epistemic_threshold
    from .train import check_output, check_run_arguments, set_threads

    check_run_arguments(args)
    check_output(args.output)
    set_threads(args.threads)
    model = load(args.model)
    snaps = load_data(args.data, split=args.split, allow_mixed_protocols=args.allow_mixed_protocols)
    if not snaps:
        raise InputError(f"no snapshots{' of split ' + repr(args.split) if args.split else ''} in {args.data}")
    if args.sigma_map and args.keep_variance:
        raise InputError("--sigma-map fits σ and --keep-variance keeps it: give one of them")
    new = calibrate(model, snaps, samples=args.mc_samples, seed=args.seed, fit_variance=not args.keep_variance,
                    sigma_map=args.sigma_map)
    new.save(args.output)
    print(f"wrote {args.output}: variance factor {model.scaling.variance_scale:.4g} -> "
          f"{new.scaling.variance_scale:.4g}, epistemic σ 99.9 % quantile {epistemic_threshold(new):.3g} e/Å³ "
          f"on {len(snaps)} snapshot(s)" + (f"; σ map of {len(new.scaling.sigma_knots)} knots" if args.sigma_map else ""))
    return 0
