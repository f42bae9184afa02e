"""``bigdens finetune``: stage 2 of transfer learning, retraining a model's last layers."""

from __future__ import annotations

import argparse

from ._common import add_keep_variance_argument
from .train import add_data_arguments, add_optimiser_arguments

HELP = "fine-tune a trained model's last layers on new (larger-cell) data (stage 2)"

def defaults():
    """The :class:`~bigdens.train.TrainConfig` behind ``bigdens finetune`` without flags: the default
    ``config`` of :func:`bigdens.train.finetune`."""
    import inspect

    from ..train import finetune

    return inspect.signature(finetune).parameters["config"].default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = defaults()
    parser.add_argument("model", help="stage-1 model file")
    add_data_arguments(parser)
    parser.add_argument("--layers", type=int, default=d.train_layers,
                        help=f"number of final layers retrained (default {d.train_layers}; 2 is the last hidden "
                             "layer and the output); the others are frozen unless --frozen-lr-scale > 0")
    parser.add_argument("--frozen-lr-scale", type=float, default=d.frozen_lr_scale,
                        help=f"learning-rate factor for the other layers (default {d.frozen_lr_scale:g}; 0 freezes "
                             "them)")
    add_keep_variance_argument(parser, aliases=("--keep-calibration",),
                               help="keep the stage-1 model's variance factor instead of fitting it on the "
                                    "validation data; the epistemic reference is refitted either way (use when the "
                                    "validation data are not of the new kind)")
    add_optimiser_arguments(parser, defaults=d)


def run(args: argparse.Namespace) -> int:
    from ..bnn import load
    from ..errors import InputError
    from ..train import finetune
    from .train import check_output, check_run_arguments, config_from_args, load_split, set_threads, written

    check_run_arguments(args)
    check_output(args.output)
    set_threads(args.threads)
    model = load(args.model)
    if not 1 <= args.layers <= model.arch.n_layers:
        raise InputError(f"--layers must be within 1..{model.arch.n_layers} for this model, got {args.layers}")
    train_s, val_s = load_split(args)
    from ._common import progress_lines

    with progress_lines("bigdens.train"):  # one line per epoch, as the command's own output
        new = finetune(model, train_s, val_s,
                       config=config_from_args(args, train_layers=args.layers, frozen_lr_scale=args.frozen_lr_scale),
                       recalibrate=not args.keep_variance)
    new.save(args.output)
    print(written(args.output, new.info["training"]))
    return 0
