"""``bigdens train``: a Bayesian density model from scratch (stage 1 of transfer learning)."""

from __future__ import annotations

import argparse

HELP = "train a Bayesian density model from scratch on DFT data sets (stage 1)"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Data sets and files (cube, CHGCAR, .gpw, XSF) to learn from, and the validation choice."""
    parser.add_argument("data", nargs="+", help="data-set directories and/or density files (cube, CHGCAR, .gpw, XSF)")
    parser.add_argument("--val", nargs="+", metavar="DATA",
                        help="validation data (default: the 'validation' split of DATA)")
    parser.add_argument("--allow-mixed-protocols", action="store_true",
                        help="accept snapshots made with different DFT settings")


def add_optimiser_arguments(parser: argparse.ArgumentParser, *, defaults) -> None:
    """The optimiser, ``--threads``, ``--device`` and ``-o``; every default is the field of ``defaults``
    (a :class:`~bigdens.train.TrainConfig`: what the Python function behind the command uses)."""
    from ..train.config import SCHEDULES
    from ._common import add_device_argument, add_output_argument, add_threads_argument

    d = defaults
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"maximum epochs (default {d.epochs})")
    parser.add_argument("--points-per-epoch", type=int, default=d.points_per_epoch,
                        help=f"grid points drawn per epoch (default {d.points_per_epoch})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"grid points per optimiser step (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    parser.add_argument("--patience", type=int, default=d.patience,
                        help=f"early-stopping patience, epochs (default {d.patience})")
    parser.add_argument("--nll-beta", type=float, default=d.nll_beta,
                        help=f"β-NLL weight in [0, 1] (default {d.nll_beta:g}; 0 is the plain Gaussian NLL, 0.5 "
                             "fits hard points harder)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                        help=f"learning rate: plateau (halved when validation stalls) or cosine (from --lr down to "
                             f"1 %% of it over --epochs); default {d.schedule}")
    parser.add_argument("--time-limit", type=float, default=d.time_limit, metavar="SECONDS",
                        help=f"start no new epoch after this many seconds of training; keep the best so far "
                             f"(default {d.time_limit:g}); Ctrl-C or SIGTERM also keeps the best epoch so far")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help=f"seed of the weights, the points drawn and the training noise (default {d.seed})")
    add_threads_argument(parser)
    add_device_argument(parser, default=d.device, what="the optimisation")
    add_output_argument(parser, metavar="MODEL.safetensors", help="model file to write (.safetensors)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bnn import Architecture
    from ..bnn.settings import KINDS
    from ..descriptors import DEFAULT_K, DEFAULT_M, DEFAULT_R_CUT
    from ..train import TrainConfig

    arch = Architecture()  # the defaults of the Python API: bigdens.train.train(arch=Architecture())
    add_data_arguments(parser)
    parser.add_argument("--r-cut", type=float, default=DEFAULT_R_CUT,
                        help=f"descriptor cutoff, Å (default {DEFAULT_R_CUT})")
    parser.add_argument("--m", type=int, nargs="+", default=[DEFAULT_M],
                        help=f"radial neighbours per species (one value or one per species; default {DEFAULT_M})")
    parser.add_argument("--k", type=int, nargs="+", default=[DEFAULT_K],
                        help=f"angular neighbours per species (default {DEFAULT_K})")
    parser.add_argument("--species", nargs="+", help="chemical symbols in model order (default: those in the data, by Z)")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(arch.hidden),
                        help=f"hidden layer widths (default {' '.join(map(str, arch.hidden))})")
    parser.add_argument("--kind", choices=KINDS, default=arch.kind,
                        help=f"network: last-layer (deterministic trunk, Bayesian last layer, format 2) or mean-field "
                             f"(every weight Bayesian, format 1's network); default {arch.kind}")
    parser.add_argument("--no-cross", dest="cross", action="store_false",
                        help="leave out the cross-species angular block of the descriptor (two or more species)")
    add_optimiser_arguments(parser, defaults=TrainConfig())


def load_split(args) -> tuple[list, list]:
    """Training and validation snapshots from ``DATA`` and ``--val``; never test cells
    (:func:`bigdens.data.refuse_test_cells`)."""
    from ..data import load, refuse_test_cells
    from ..errors import InputError

    mixed = args.allow_mixed_protocols
    snaps = load(args.data, allow_mixed_protocols=mixed)
    if not snaps:
        raise InputError(f"no snapshots in {args.data}: the data sets are empty")
    if args.val:
        val = _load_validation(args.val, mixed)
        train = [s for s in snaps if s.split == "train"] or snaps
        both = sorted({s.name for s in train} & {s.name for s in val})
        if both:
            raise InputError(f"snapshot(s) {', '.join(both)} are in both the training data and --val: a model "
                             "validated on what it trains on stops and calibrates on its own training error; "
                             "leave them out of one of the two")
    else:
        train = [s for s in snaps if s.split == "train"]
        val = [s for s in snaps if s.split == "validation"]
        if not val and len(train) > 1:
            val, train = train[-1:], train[:-1]  # hold out one snapshot, never single points
    if not train:
        raise InputError(f"no training snapshots in {args.data}: the data sets hold only validation/test splits")
    if not val:
        raise InputError("no validation snapshot: give --val DATA or a data set with a 'validation' split")
    # Validation snapshots early-stop the fit and calibrate its σ: neither they nor the training data may be test data.
    refuse_test_cells([*train, *val],
                      todo="train and validate on train and validation snapshots, never on test data (a data-set "
                           "folder gives its train split, --val FOLDER its validation split)")
    return train, val


def _load_validation(paths: list[str], mixed: bool) -> list:
    """``--val`` snapshots: a data-set directory gives its 'validation' split, a file itself."""
    from pathlib import Path

    from ..data import load
    from ..errors import InputError

    val = []
    for path in paths:
        if Path(path).is_dir():
            got = load(path, split="validation", allow_mixed_protocols=mixed)
            if not got:  # never fall back to its train or test snapshots
                raise InputError(f"--val {path}: the data set has no 'validation' split; name the snapshot "
                                 "files (.npz) to validate on instead")
        else:
            got = load(path, allow_mixed_protocols=mixed)
        val.extend(got)
    return val


def check_output(path: str) -> None:
    """Refuse a model path that cannot be written, before any training."""
    from pathlib import Path

    from ..errors import InputError

    if Path(path).is_dir():
        example = str(Path(path) / "model.safetensors")
        raise InputError(f"-o {path!r} is a folder; give a model file, e.g. -o {example!r}")
    if not Path(path).absolute().parent.is_dir():
        raise InputError(f"cannot write the model {path!r}: its folder does not exist; create it first")


def check_run_arguments(args) -> None:
    """Refuse a negative ``--seed`` and a ``--threads`` below 1 before any data is read."""
    from ..errors import InputError

    if args.seed < 0:
        raise InputError(f"--seed must be an integer >= 0, got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}; leave it out to use every core")


def set_threads(n: int | None) -> None:
    import os

    import numba
    import torch

    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def config_from_args(args, **extra):
    from ..train import TrainConfig

    return TrainConfig(epochs=args.epochs, points_per_epoch=args.points_per_epoch, batch_size=args.batch_size,
                       lr=args.lr, patience=args.patience, seed=args.seed, nll_beta=args.nll_beta,
                       device=args.device, time_limit=args.time_limit, schedule=args.schedule, **extra)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from ase.data import atomic_numbers

    from ..bnn import Architecture
    from ..descriptors import DescriptorParams
    from ..errors import InputError
    from ..train import train

    check_run_arguments(args)
    check_output(args.output)
    set_threads(args.threads)
    train_s, val_s = load_split(args)
    if args.species:
        bad = [s for s in args.species if s not in atomic_numbers]
        if bad:
            raise InputError(f"unknown chemical symbol(s) {bad} in --species")
        species = tuple(atomic_numbers[s] for s in args.species)
    else:
        species = tuple(sorted(set(np.concatenate([s.numbers for s in train_s + val_s]).tolist())))
    n = len(species)

    def per_species(values, name):
        if len(values) == 1:
            return tuple(values) * n
        if len(values) != n:
            raise InputError(f"--{name} takes one value or one per species ({n}), got {values}")
        return tuple(values)

    params = DescriptorParams(species=species, m=per_species(args.m, "m"), k=per_species(args.k, "k"), r_cut=args.r_cut,
                              cross=args.cross)
    arch = Architecture(hidden=tuple(args.hidden), kind=args.kind)
    from ._common import progress_lines

    with progress_lines("bigdens.train"):  # one line per epoch, as the command's own output
        model = train(train_s, val_s, params, arch=arch, config=config_from_args(args))
    model.save(args.output)
    print(written(args.output, model.info["training"]) + f", variance scale {model.scaling.variance_scale:.3g}")
    return 0


def written(path, t: dict) -> str:
    """The line after a model is trained and saved (``t``: its ``info["training"]``)."""
    stop = " (interrupted: the best epoch so far)" if t.get("interrupted") else ""
    return (f"wrote {path}: best validation NMAE {t['best_val_nmae_pct']:.3f} % at epoch {t['best_epoch']}{stop}, "
            f"training time {t['train_seconds']:.0f} s")
