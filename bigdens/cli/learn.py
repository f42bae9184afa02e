"""``bigdens learn``: rounds of suggest → DFT → fine-tune → calibrate → evaluate, resumable."""

from __future__ import annotations

import argparse

HELP = ("active learning: pick candidates by uncertainty, compute their DFT, fine-tune and recalibrate, round after "
        "round, within a DFT budget (resumable)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..active.loop import LEARN_FINETUNE, LearnConfig
    from ._common import add_output_argument, add_threads_argument, config_default
    from .suggest import add_selection_arguments

    rounds, share, ft_default = (config_default(LearnConfig, "rounds"), config_default(LearnConfig, "calibration_share"),
                                 LEARN_FINETUNE)

    parser.add_argument("model", help="calibrated starting model (.safetensors)")
    parser.add_argument("--candidates", nargs="+", required=True, metavar="CANDIDATE",
                        help="the pool, as for `bigdens suggest` (files, pool files, generators)")
    parser.add_argument("--budget", type=float, required=True, metavar="CORE_SECONDS",
                        help="DFT core-seconds all rounds may spend together (estimated)")
    parser.add_argument("--rounds", type=int, default=rounds, help=f"most rounds (default {rounds})")
    parser.add_argument("--round-budget", type=float, metavar="CORE_SECONDS",
                        help="core-seconds per round (default: --budget / --rounds)")
    parser.add_argument("--holdout", nargs="+", required=True, metavar="DATA",
                        help="DFT data each round is evaluated on (test cells belong here); never picked, never "
                             "trained on, not the model's own training cells")
    parser.add_argument("--val", nargs="+", required=True, metavar="DATA",
                        help="calibration data (never trained on, never test cells): early stopping, σ and the "
                             "epistemic threshold")
    parser.add_argument("--train", nargs="+", metavar="DATA",
                        help="data each round trains on besides the picks (default: the picks only; never test "
                             "cells)")
    parser.add_argument("--calibration-share", type=float, default=share, metavar="SHARE",
                        help=f"share of the picks that join --val instead of training (default {share}: with 0.25 the "
                             "2nd, 6th, ... pick), so early stopping and σ see the new kind of structure")
    parser.add_argument("--cache", default="dft-cache", metavar="DIR",
                        help="DFT cache, by structure and protocol, shared by runs (default ./dft-cache)")
    parser.add_argument("-w", "--workdir", metavar="DIR",
                        help="state, plans, round models and report (default: OUTPUT without suffix + '.learn')")
    add_selection_arguments(parser)
    ft = parser.add_argument_group("fine-tuning each round (from the starting model)")
    ft.add_argument("--layers", type=int, default=ft_default["train_layers"],
                    help=f"last layers trained (default {ft_default['train_layers']})")
    ft.add_argument("--epochs", type=int, default=ft_default["epochs"], help=f"maximum epochs (default {ft_default['epochs']})")
    ft.add_argument("--points-per-epoch", type=int, default=ft_default["points_per_epoch"],
                    help=f"grid points per epoch (default {ft_default['points_per_epoch']})")
    ft.add_argument("--lr", type=float, default=ft_default["lr"], help=f"learning rate (default {ft_default['lr']:g})")
    ft.add_argument("--patience", type=int, default=ft_default["patience"],
                    help=f"early-stopping patience, epochs (default {ft_default['patience']})")
    add_threads_argument(ft)
    add_output_argument(parser, metavar="MODEL.safetensors", help="the last round's model (.safetensors)")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from ..active import cost as cost_model
    from ..active.cache import DFTCache
    from ..active.loop import Data, LearnConfig, Loop, check_splits
    from ..data import load
    from ..errors import InputError
    from ._common import cluster_config, cost_data_dirs
    from .suggest import dft_settings, read_candidates
    from .train import check_output, check_run_arguments, set_threads

    check_run_arguments(args)
    check_output(args.output)
    config = LearnConfig(budget=args.budget, rounds=args.rounds, round_budget=args.round_budget,
                         strategy=args.strategy, spacing=args.spacing, samples=args.mc_samples, seed=args.seed,
                         finetune={"train_layers": args.layers, "epochs": args.epochs,
                                   "points_per_epoch": args.points_per_epoch, "lr": args.lr,
                                   "patience": args.patience},
                         calibration_share=args.calibration_share)
    workdir = Path(args.workdir) if args.workdir else Path(args.output).with_suffix(".learn")
    if workdir.exists() and not workdir.is_dir():
        raise InputError(f"--workdir {str(workdir)!r} exists and is not a folder")
    set_threads(args.threads)
    dft = dft_settings(args.protocol, args.model)
    cost = cost_model.from_datasets(cost_data_dirs(args.cost_data), protocol=dft.protocol)
    data = Data(train=load(args.train, allow_mixed_protocols=True) if args.train else [],
                calibration=load(args.val, allow_mixed_protocols=True),
                holdout=load(args.holdout, allow_mixed_protocols=True))
    check_splits(data)  # before the pool: its generators run MD
    pool = read_candidates(args.candidates, format=args.format)
    logging.getLogger("bigdens").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
    loop = Loop(args.model, pool, workdir=workdir, cache=DFTCache(args.cache, dft=dft), cost=cost, data=data,
                config=config, cluster=cluster_config(args, model=args.model))
    report = loop.run(progress=True)
    loop.finish(args.output)
    for r in report["rounds"]:
        print(f"round {r['round']}: {len(r['picks'])} picks, {r['dft_core_s']:.0f} DFT core-s in all; hold-out "
              f"NMAE {r['nmae_pct']:.3f} %, 1σ {r['coverage_1sigma_pct']:.1f} %, 2σ {r['coverage_2sigma_pct']:.1f} %")
    print(f"stopped: {report['stopped']}\nwrote {args.output} (report: {workdir / 'report.json'})")
    return 0
