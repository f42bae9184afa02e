"""``bigdens predict``: the density and its uncertainty of a structure, into a Zarr store."""

from __future__ import annotations

import argparse
import shutil

from ._common import (add_cluster_arguments, add_device_argument, add_grid_arguments, add_output_argument,
                      add_structure_arguments, config_default)

HELP = "predict the electron density and its uncertainty of a structure into a Zarr store"

#: Exit status of a structure or a prediction outside the model's domain (bigdens.domain).
OUT_OF_DOMAIN = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import DEFAULT_BLOCK, DEFAULT_SPACING, PredictConfig

    add_structure_arguments(parser)
    add_grid_arguments(parser, default=f"the model's training spacing, else {DEFAULT_SPACING}")
    parser.add_argument("--model", help="model file (.safetensors); default: the shipped model for the species")
    parser.add_argument("--mc-samples", type=int, default=20, metavar="S",
                        help="Monte Carlo weight samples per block (default 20)")
    add_output_argument(parser, metavar="OUT.zarr", aliases=("--out",), help="output Zarr store, e.g. density.zarr")
    parser.add_argument("--frames", metavar="START:STOP:STEP",
                        help="predict these frames of a multi-frame file (extxyz, --format lammps-dump-text, ASE "
                             ".traj) into one store with a 'frame' dimension, e.g. 0:100:10 (each part optional, "
                             "as a Python slice; a bare K is frame K). The cell must be the same in every frame. "
                             "Without --frames a multi-frame file gives its last frame (with a warning)")
    parser.add_argument("--block", type=int, metavar="B",
                        help=f"block edge in grid points, one task per block (default: the SLURM profile's, "
                             f"else {DEFAULT_BLOCK}: 1 MB chunks)")
    parser.add_argument("--chunk", type=int, metavar="C",
                        help="Zarr chunk edge in grid points (default: the block; the block must be a multiple)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --cluster slurm:NAME: validate everything, print the job script and the number "
                             "of jobs, submit nothing")
    add_cluster_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo samples (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run into -o")
    parser.add_argument("--renormalize", action="store_true",
                        help="scale the density to integrate to the valence electron count")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing -o store")
    add_device_argument(parser, default=config_default(PredictConfig, "device"), what="the network")
    parser.add_argument("--report", metavar="FILE.html", help="write a Dask performance report")
    parser.add_argument("--allow-out-of-domain", action="store_true",
                        help="predict a structure outside the model's domain (vacuum, wrong units, a far too coarse "
                             "grid, ...) and exit 0; the store still records in_domain: false and the reasons. "
                             "Without it such a structure is refused (exit 3) before or after the run")
    parser.add_argument("--block-timeout", type=float, metavar="SECONDS",
                        help="restart a worker whose block runs longer than this and run the block again; three "
                             "timeouts of one block stop the run (default: 10x the slowest block so far, at least "
                             "120 s)")
    parser.add_argument("--skip-size-check", action="store_true",
                        help="start even when the estimated memory per worker, store size or block count exceeds "
                             "what the machine offers (the estimate is refused otherwise)")
    parser.add_argument("--max-blocks", type=int, metavar="N",
                        help="compute at most N missing blocks, then stop (sampling; --resume finishes the store)")


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    # Warnings are shown one line each, as they come (a worker restarted during a long run must not wait
    # for the summary), through a showwarning that catch_warnings() restores when this command ends.
    with warnings.catch_warnings():
        def one_line(message, category, filename, lineno, file=None, line=None) -> None:
            print(f"bigdens predict: warning: {message}", file=sys.stderr, flush=True)

        warnings.showwarning = one_line
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import sys

    from .. import structure, trajectory
    from ..config import PredictConfig
    from ..domain import OutOfDomainError
    from ..engine import out_of_domain_message, run as run_engine

    config = PredictConfig(
        out=args.output, model=args.model, spacing=args.spacing, grid=tuple(args.grid) if args.grid else None,
        mc_samples=args.mc_samples, block=args.block, chunk=args.chunk, cluster=args.cluster,
        scheduler_file=args.scheduler_file, workers=args.workers, threads_per_worker=args.threads_per_worker,
        seed=args.seed, resume=args.resume, renormalize=args.renormalize, overwrite=args.overwrite,
        device=args.device, report=args.report, max_blocks=args.max_blocks, block_timeout=args.block_timeout,
        allow_out_of_domain=args.allow_out_of_domain, skip_size_check=args.skip_size_check,
    )
    if args.report is not None:  # before any work: a missing bokeh must not cost the run (or leave it half-written)
        from .._imports import attempt_import

        attempt_import("bokeh", purpose="--report (Dask's performance report is drawn with bokeh)")
    if args.frames is not None:
        atoms = trajectory.read_trajectory(args.structure, frames=trajectory.parse_frames(args.frames),
                                           text=args.frames, format=args.format)
    else:
        atoms = structure.read(args.structure, format=args.format)
    if args.dry_run:
        return _dry_run(atoms, config)
    try:
        summary = run_engine(atoms, config)
    except OutOfDomainError as exc:  # before the run: nothing was computed
        print(f"bigdens predict: out of domain: {exc}", file=sys.stderr)
        return OUT_OF_DOMAIN
    print(summary.format())
    if summary.complete and not summary.in_domain and not config.allow_out_of_domain:
        print(f"bigdens predict: out of domain: {out_of_domain_message(summary)}", file=sys.stderr)
        return OUT_OF_DOMAIN
    return 0 if summary.complete or args.max_blocks is not None else 1


def _dry_run(atoms, config) -> int:
    """Print what a SLURM run would submit; submit nothing."""
    from ..clusters import check_node_fits, check_submission, job_script, jobs_needed
    from ..engine import plan_run
    from ..errors import SetupError

    if config.profile is None:
        raise SetupError("--dry-run shows the SLURM job script: use it with --cluster slurm:NAME")
    plan = plan_run(atoms, config)  # as the run plans it (one task per (frame, block)); writes nothing
    atoms, grid, n_blocks = plan.atoms, plan.grid, plan.n_units
    prof = config.profile
    print(f"# dry run: {len(atoms)} atoms, grid {grid.shape}, {n_blocks} blocks; would submit "
          f"{jobs_needed(prof, n_blocks)} job(s) of profile {prof.name} ({prof.path}), each like this (the scheduler address is filled in at submission):")
    script = job_script(prof)
    print(script)
    if shutil.which("sbatch") is None:
        print("# not checked against SLURM: no 'sbatch' on PATH here")
    else:  # the checks a real run makes before submitting; SetupError if SLURM would refuse
        check_node_fits(prof)
        check_submission(prof, script)
        print("# SLURM accepts this job script (sbatch --test-only); nothing was submitted")
    return 0
