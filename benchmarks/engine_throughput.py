"""End-to-end throughput of ``bigdens predict`` (grid points per second) with 2 workers.

Bulk Al (rattled FCC) at about 10^4, 10^5 and 10^6 atoms, grid spacing 0.2 Å,
S = 20 Monte Carlo samples, 64³ blocks, an untrained network of the default
shape (hidden 64, 64), a LocalCluster of 2 worker processes with 1 thread
each.  Large grids are sampled: the engine computes ``--blocks`` blocks (its
``max_blocks`` setting) and stops, exactly as a full run computes each block.

Per size it records: wall time and points/s (end to end, including cluster
start and worker setup; and steady state, from the summed task times), the
split into descriptor / network / write time, worker setup (imports, atoms,
cell list, model: once per process), peak RSS per worker, and the network
stage's achieved GFLOP/s next to torch's own fp32 GEMM rate for the same
shapes (best over pass sizes and layouts, see benchmarks/bnn_throughput.py),
measured in the same run with one thread.

Run:  python -m benchmarks.engine_throughput [--smoke] [--blocks N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import bnn_throughput
from benchmarks.bnn_throughput import flops_per_point
from benchmarks._common import al_bulk, machine_info, run_record, write_result
from bigdens import engine
from bigdens.bnn import Architecture, DensityModel, Scaling
from bigdens.config import PredictConfig
from bigdens.descriptors import DescriptorParams

PARAMS = DescriptorParams(species=(13,), m=(32,), k=(6,), r_cut=6.0)
ARCH = Architecture(hidden=(64, 64))
#: FCC cells per edge: 4·n³ = 10,976, 97,556, 1,000,188 atoms.
CELLS = [14, 29, 63]
SPACING = 0.2
SAMPLES = 20
WORKERS = 2
BATCH = 16384


def make_model(path: Path, params: DescriptorParams = PARAMS, arch: Architecture = ARCH) -> Path:
    """An untrained model of the benchmarked shape (the timings do not depend on the weights)."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 6.0, size=(1000, params.n_features)).astype(np.float32)
    return DensityModel.new(params, arch, Scaling.fit(X, rng.uniform(0.0, 0.1, 1000)), seed=0).save(path)


def torch_gemm_gflops(params: DescriptorParams, arch: Architecture, samples: int, batch: int, *,
                      repeats: int = 3) -> float:
    """torch's fp32 GEMM rate (GFLOP/s, one thread) on the network's layer shapes.

    The best over pass sizes (predict's CPU chunk, 256, 1024, ``batch``
    points) and layouts (see :func:`benchmarks.bnn_throughput.gemm_timer`),
    so the network's rate is compared with the best torch reaches.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = bnn_throughput.torch_gemm_gflops(params, arch, samples,
                                                 bnn_throughput.gemm_points_per_pass(samples, arch.hidden, batch),
                                                 points=batch, rounds=repeats)
    finally:
        torch.set_num_threads(threads)
    return max(rates.values())


def measure(cells: int, *, model: Path, workdir: Path, blocks: int, block: int = 64, samples: int = SAMPLES,
            spacing: float = SPACING, workers: int = WORKERS) -> dict:
    """One system size through the real engine; returns a JSON-ready record."""
    atoms = al_bulk(cells)
    out = workdir / f"al{cells}.zarr"
    cfg = PredictConfig(out=out, model=model, spacing=spacing, mc_samples=samples, block=block, workers=workers,
                        threads_per_worker=1, max_blocks=blocks, overwrite=True, progress=False, batch=BATCH,
                        device="cpu", allow_out_of_domain=True)  # throughput: smoke runs use an untrained model
    s = engine.run(atoms, cfg)
    shutil.rmtree(out, ignore_errors=True)
    st = s.stage_s
    busy = st["descriptors"] + st["bnn"] + st["write"]
    pts = s.points_computed
    return {
        **run_record(s, workers=workers),
        "n_blocks_computed": s.n_computed,
        "points_computed": pts,
        "points_per_s_end_to_end": s.points_per_s,
        "points_per_s_steady": pts / max(busy / workers, 1e-9),
        "stage_fraction": {k: st[k] / max(busy, 1e-9) for k in ("descriptors", "bnn", "write")},
        "descriptor_points_per_s_per_worker": pts / max(st["descriptors"], 1e-9),
        "bnn_points_per_s_per_worker": pts / max(st["bnn"], 1e-9),
        "bnn_gflops_per_worker": flops_per_point(PARAMS, ARCH, samples) * pts / max(st["bnn"], 1e-9) / 1e9,
        "full_grid_estimate_s": s.n_points / max(pts / max(busy / workers, 1e-9), 1e-9),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny cell only (for the test suite)")
    ap.add_argument("--blocks", type=int, default=6, help="blocks computed per size (default 6 = 1.6M points)")
    ap.add_argument("--sizes", type=int, nargs="+", help=f"FCC cells per edge (default {CELLS})")
    ap.add_argument("--out", default="benchmarks/results/engine_throughput.json")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bigdens-bench-"))
    try:
        model = make_model(workdir / "model.safetensors")
        records = []
        gemm = torch_gemm_gflops(PARAMS, ARCH, SAMPLES, BATCH if not args.smoke else 1024)
        sizes = [2] if args.smoke else (args.sizes or CELLS)
        for n in sizes:
            kw = {"blocks": 2, "block": 8, "samples": 4, "spacing": 0.4} if args.smoke else {"blocks": args.blocks}
            rec = measure(n, model=model, workdir=workdir, **kw)
            rec["torch_bmm_gflops_1_thread"] = gemm  # best torch fp32 GEMM (bmm or mm), 1 thread
            rec["bnn_fraction_of_gemm"] = rec["bnn_gflops_per_worker"] / gemm
            records.append(rec)
            print(f"Al {rec['n_atoms']:>9,} atoms  grid {rec['grid']}  {rec['points_computed']:,} points: "
                  f"{rec['points_per_s_steady']:>9,.0f} points/s steady, {rec['points_per_s_end_to_end']:>9,.0f} end "
                  f"to end; descriptors/bnn/write {rec['stage_fraction']['descriptors']:.0%}/"
                  f"{rec['stage_fraction']['bnn']:.0%}/{rec['stage_fraction']['write']:.0%}; network "
                  f"{rec['bnn_gflops_per_worker']:.1f} GFLOP/s/worker vs torch GEMM {gemm:.1f} "
                  f"({rec['bnn_fraction_of_gemm']:.0%}); "
                  f"RSS {rec['peak_rss_mb_per_worker']} MB", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "engine_throughput",
        "settings": {"spacing_A": SPACING, "mc_samples": SAMPLES, "workers": WORKERS, "threads_per_worker": 1,
                     "block": 64, "batch": BATCH, "params": PARAMS.to_dict(), "hidden": list(ARCH.hidden),
                     "smoke": args.smoke, "note": "CPU with AVX2 only (no AVX-512); machine shared with DFT runs"},
        "machine": machine_info(),
        "records": records,
    }
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
