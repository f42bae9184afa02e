"""End-to-end throughput of ``bigdens predict`` (grid points per second) with 2 workers.

Bulk Al (rattled FCC) at about 10^4, 10^5 and 10^6 atoms, grid spacing 0.2 Å,
S = 20 Monte Carlo samples, 64³ blocks, the shipped Al model (``--model`` for
another), a LocalCluster of 2 worker processes with 1 thread each.  Large grids are sampled: the engine computes ``--blocks`` blocks (its
``max_blocks`` setting) and stops, exactly as a full run computes each block.

Per size it records: wall time and points/s (end to end, including cluster
start and worker setup; and steady state, from the summed task times), the
split into descriptor / network / write time, worker setup (imports, atoms,
cell list, model: once per process), peak RSS per worker, and the network
stage's achieved GFLOP/s next to torch's own fp32 GEMM rate for the same
shapes (best over pass sizes, see benchmarks/network_cost.py), measured in the
same run with one thread.

Run:  python -m benchmarks.engine_throughput [--smoke] [--blocks N] [--model FILE] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from benchmarks._common import al_bulk, machine_info, run_record, write_result
from benchmarks.network_cost import flop_per_point, gemm_timer
from bigdens import bnn, engine
from bigdens.config import PredictConfig
from bigdens.models import shipped_models

#: FCC cells per edge: 4·n³ = 10,976, 97,556, 1,000,188 atoms.
CELLS = [14, 29, 63]
SPACING = 0.2
SAMPLES = 20
WORKERS = 2
BATCH = 16384


def torch_gemm_gflops(model: bnn.DensityModel, samples: int, *, points: int, repeats: int = 3) -> float:
    """torch's fp32 GEMM rate (GFLOP/s, one thread) on the model's matmul shapes.

    The best over pass sizes (1024, 2048, 4096 points; see
    :func:`benchmarks.network_cost.gemm_timer`), so the network's rate is
    compared with the best torch reaches.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = {n: min(gemm_timer(model, samples, n, points)() for _ in range(repeats)) for n in (1024, 2048, 4096)}
    finally:
        torch.set_num_threads(threads)
    return max(flop_per_point(model, samples) * points / t / 1e9 for t in best.values())


def measure(cells: int, *, model: Path, flop: int, workdir: Path, blocks: int, block: int = 64, samples: int = SAMPLES,
            spacing: float = SPACING, workers: int = WORKERS) -> dict:
    """One system size through the real engine; returns a JSON-ready record."""
    atoms = al_bulk(cells)
    out = workdir / f"al{cells}.zarr"
    cfg = PredictConfig(out=out, model=model, spacing=spacing, mc_samples=samples, block=block, workers=workers,
                        threads_per_worker=1, max_blocks=blocks, overwrite=True, progress=False, batch=BATCH,
                        device="cpu", allow_out_of_domain=True)  # throughput only: no refusal on a coarse smoke grid
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
        "bnn_gflops_per_worker": flop * pts / max(st["bnn"], 1e-9) / 1e9,
        "full_grid_estimate_s": s.n_points / max(pts / max(busy / workers, 1e-9), 1e-9),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny cell only (for the test suite)")
    ap.add_argument("--blocks", type=int, default=6, help="blocks computed per size (default 6 = 1.6M points)")
    ap.add_argument("--sizes", type=int, nargs="+", help=f"FCC cells per edge (default {CELLS})")
    ap.add_argument("--model", help="model file (default: the shipped Al model)")
    ap.add_argument("--out", default="benchmarks/results/engine_throughput.json")
    args = ap.parse_args(argv)
    model = Path(args.model) if args.model else shipped_models()["al"]
    net = bnn.load(model)
    workdir = Path(tempfile.mkdtemp(prefix="bigdens-bench-"))
    try:
        records = []
        gemm = torch_gemm_gflops(net, SAMPLES, points=BATCH if not args.smoke else 4096)
        sizes = [2] if args.smoke else (args.sizes or CELLS)
        for n in sizes:
            kw = {"blocks": 2, "block": 8, "samples": 4, "spacing": 0.4} if args.smoke else {"blocks": args.blocks}
            flop = flop_per_point(net, kw.get("samples", SAMPLES))
            rec = measure(n, model=model, flop=flop, workdir=workdir, **kw)
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
                     "block": 64, "batch": BATCH, "model": model.name, "kind": net.arch.kind,
                     "params": net.params.to_dict(), "hidden": list(net.arch.hidden),
                     "smoke": args.smoke, "torch": torch.__version__,
                     "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "machine": machine_info(),
        "records": records,
    }
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
