"""Cost of a trajectory store against single frames (issue 18, item 1).

F frames of a thermalized Al cell (4·cells³ atoms; default 10 → 4,000 atoms, 20 frames) are predicted
into one trajectory store (``engine.run`` of a :class:`bigdens.trajectory.Trajectory`: one cluster, workers
set up once, units (frame, block)), and frame 0 alone into a single store with the same settings.
"Thermalized" here: each frame is the ideal FCC cell with independent Gaussian displacements of rms
``--rattle`` Å per Cartesian component (default 0.1 Å, about Al's at 300 K), one seed per frame; the cell
is constant, as in NVT MD.

Recorded (JSON through :func:`benchmarks._common.write_result`):

* ``single``: the run record of frame 0 alone; its ``busy_s`` (summed task time / workers) is one frame's
  steady compute, without cluster start or worker setup.
* ``trajectory``: the run record of all F frames.
* ``ratio_end_to_end`` = trajectory wall time (cluster start included) / (F × single ``busy_s``), and
  ``ratio_after_start`` = (trajectory wall − cluster start) / (F × single ``busy_s``): the issue's target
  is ≤ 1.1 (no per-frame start-up).
* ``frame_equals_single``: whether frame 0 of the trajectory store equals the single store bit for bit.

Defaults: the shipped Al model at its training spacing, S = 20, 2 workers of 1 thread, 64³ blocks.

Run:  python -m benchmarks.trajectory [--cells N] [--frames F] [--mc-samples S] [--spacing H]
                                      [--block B] [--workers W] [--model FILE] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import al_bulk, machine_info, run_record, write_result
from bigdens import engine, store, trajectory
from bigdens.config import PredictConfig
from bigdens.models import shipped_models

CELLS = 10  # 4,000 atoms
FRAMES = 20
SAMPLES = 20
WORKERS = 2
BLOCK = 64
RATTLE = 0.1  # Å, rms per component


def thermal_frames(cells: int, frames: int, *, rattle: float) -> trajectory.Trajectory:
    """``frames`` independent thermal-like snapshots of one Al cell (constant cell), steps 0, 1, ..."""
    snaps = [al_bulk(cells, rattle=rattle, seed=100 + k) for k in range(frames)]
    return trajectory.Trajectory(frames=snaps, index=list(range(frames)), step=list(range(frames)))


def _config(out: Path, args, model: Path) -> PredictConfig:
    # throughput only: the untrained-on-this-cell checks must not refuse a smoke grid
    return PredictConfig(out=out, model=model, spacing=args.spacing, mc_samples=args.mc_samples, block=args.block,
                         workers=args.workers, threads_per_worker=1, overwrite=True, progress=False, device="cpu",
                         allow_out_of_domain=True)


def _same_frame(traj_store: Path, single_store: Path) -> bool:
    import zarr

    t = zarr.open_group(str(traj_store), mode="r")
    s = zarr.open_group(str(single_store), mode="r")
    return all(np.array_equal(t[name][0], s[name][:], equal_nan=True) for name in store.VARIABLES)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=CELLS, help=f"FCC cells per edge (default {CELLS}: 4,000 atoms)")
    ap.add_argument("--frames", type=int, default=FRAMES, help=f"frames (default {FRAMES})")
    ap.add_argument("--mc-samples", type=int, default=SAMPLES, help=f"Monte Carlo samples (default {SAMPLES})")
    ap.add_argument("--spacing", type=float, help="grid spacing, Å (default: the model's training spacing)")
    ap.add_argument("--block", type=int, default=BLOCK, help=f"block edge, grid points (default {BLOCK})")
    ap.add_argument("--workers", type=int, default=WORKERS, help=f"local worker processes (default {WORKERS})")
    ap.add_argument("--rattle", type=float, default=RATTLE, help=f"rms displacement per component, Å ({RATTLE})")
    ap.add_argument("--model", help="model file (default: the shipped Al model)")
    ap.add_argument("--out", default="benchmarks/results/trajectory.json")
    args = ap.parse_args(argv)
    model = Path(args.model) if args.model else shipped_models()["al"]
    traj = thermal_frames(args.cells, args.frames, rattle=args.rattle)
    workdir = Path(tempfile.mkdtemp(prefix="bigdens-bench-traj-"))
    try:
        single = engine.run(traj.frames[0], _config(workdir / "single.zarr", args, model))
        multi = engine.run(traj, _config(workdir / "traj.zarr", args, model))
        same = _same_frame(workdir / "traj.zarr", workdir / "single.zarr")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    one = run_record(single, workers=args.workers)
    many = run_record(multi, workers=args.workers)
    many["n_electrons_per_frame"] = [f["n_electrons_predicted"] for f in multi.frames]
    base = args.frames * one["busy_s"]
    result = {
        "benchmark": "trajectory",
        "settings": {"cells": args.cells, "n_atoms": single.n_atoms, "frames": args.frames,
                     "mc_samples": args.mc_samples, "spacing_A": args.spacing, "grid": list(single.grid_shape),
                     "block": args.block, "workers": args.workers, "threads_per_worker": 1,
                     "rattle_A": args.rattle, "model": model.name},
        "machine": machine_info(),
        "single": one,
        "trajectory": many,
        "ratio_end_to_end": multi.wall_s / base,
        "ratio_after_start": (multi.wall_s - multi.startup_s) / base,
        "target": 1.1,
        "frame_equals_single": same,
    }
    print(f"Al {single.n_atoms:,} atoms, grid {single.grid_shape}, {args.frames} frames: trajectory "
          f"{multi.wall_s:.1f} s (cluster start {multi.startup_s:.1f} s) vs {args.frames} x one frame's steady "
          f"compute {one['busy_s']:.2f} s = {base:.1f} s: ratio {result['ratio_end_to_end']:.3f} end to end, "
          f"{result['ratio_after_start']:.3f} after the cluster start (target <= 1.1); frame 0 equals a single "
          f"prediction bit for bit: {same}", flush=True)
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
