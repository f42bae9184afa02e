"""The CUDA path: network stage and whole predictions on a GPU, against the CPU of the same machine.

Needs a machine where torch sees a CUDA GPU (the project's CI has none; this
is run by hand on a lent GPU machine and its result recorded in
benchmarks/results/gpu_throughput.json).

1. **Network stage** (``DensityModel.predict``, the model shape of
   :mod:`benchmarks.bnn_throughput`: 47 features, hidden (64, 64), S = 20) on
   ``--points`` points: points/s on the GPU for several ``batch`` values (best
   of ``--rounds`` after a warm-up), and on the CPU with one thread and with
   all threads.  It also reports how far the GPU's numbers are from the CPU's
   (float32; the CPU's SiLU kernel differs by ≤ 5·10⁻⁶ per activation).
2. **Whole predictions** (``engine.run``: a LocalCluster of ``--workers``
   processes, one thread each, the shipped Al model, every block written to a
   Zarr store on disk) of rattled FCC Al at the shipped 0.8 Å spacing and
   S = 20, with ``device="cuda"`` (all workers share the GPU) and with
   ``device="cpu"``: wall time, points/s, stage split, electron count.

Run:  python -m benchmarks.gpu_throughput [--points N] [--cells 29 63] [--workers W] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import al_bulk, machine_info, run_record, write_result
from benchmarks.bnn_throughput import ARCH, PARAMS, SAMPLES, flops_per_point, make_model
from bigdens import engine
from bigdens.config import PredictConfig

BATCHES = (16384, 65536, 262144)


def network_stage(points: int, rounds: int) -> dict:
    """Points/s of ``predict`` on the GPU per batch, and on the CPU (1 thread, all threads)."""
    import torch

    model = make_model()
    feats = np.random.default_rng(1).uniform(0.5, 6.0, size=(points, PARAMS.n_features)).astype(np.float32)
    kw = {"samples": SAMPLES, "seed": 7, "block_index": 3}

    def best(device: str, batch: int, n: int = points) -> tuple[float, tuple]:
        out = model.predict(feats[:n], device=device, batch=batch, **kw)  # warm-up (and the numbers)
        t_best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            model.predict(feats[:n], device=device, batch=batch, **kw)
            t_best = min(t_best, time.perf_counter() - t)
        return n / t_best, out

    fpp = flops_per_point(PARAMS, ARCH, SAMPLES)
    gpu, gpu_out = {}, None
    for b in BATCHES:
        rate, gpu_out = best("cuda", b)
        gpu[str(b)] = {"points_per_s": rate, "gflops": rate * fpp / 1e9}
        print(f"  GPU batch {b:>7,}: {rate:>12,.0f} points/s  {rate * fpp / 1e9:8.1f} GFLOP/s", flush=True)
    threads = torch.get_num_threads()
    cpu = {}
    n_cpu = min(points, 131072)  # the CPU is slower: fewer points keep the run short
    for nt in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(nt)
        rate, cpu_out = best("cpu", 16384, n_cpu)
        cpu[str(nt)] = {"points_per_s": rate, "gflops": rate * fpp / 1e9}
        print(f"  CPU {nt:>2} thread(s):  {rate:>12,.0f} points/s  {rate * fpp / 1e9:8.1f} GFLOP/s", flush=True)
    torch.set_num_threads(threads)
    diff = {name: float(np.max(np.abs(g[:n_cpu] - c) / np.maximum(np.abs(c), 1e-30)))
            for name, g, c in zip(("mean", "var_epistemic", "var_aleatoric"), gpu_out, cpu_out)}
    print(f"  GPU vs CPU, max relative difference: {diff}", flush=True)
    best_gpu = max(v["points_per_s"] for v in gpu.values())
    return {"points": points, "cpu_points": n_cpu, "flop_per_point": fpp, "gpu_by_batch": gpu,
            "cpu_by_threads": cpu, "gpu_best_points_per_s": best_gpu,
            "gpu_over_cpu_all_threads": best_gpu / cpu[str(max(int(k) for k in cpu))]["points_per_s"],
            "max_rel_diff_gpu_vs_cpu": diff, "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}


def whole_runs(cells: list[int], workers: int, batches: list[int]) -> list[dict]:
    """``engine.run`` of FCC Al per size: on the GPU (per batch) and on the CPU, same workers."""
    workdir = Path(tempfile.mkdtemp(prefix="bigdens-gpu-"))
    records = []
    try:
        for n in cells:
            atoms = al_bulk(n)
            for device, batch in [*(("cuda", b) for b in batches), ("cpu", 16384)]:
                cfg = PredictConfig(out=workdir / "al.zarr", spacing=0.8, mc_samples=SAMPLES, block=64,
                                    workers=workers, threads_per_worker=1, overwrite=True, progress=False,
                                    device=device, batch=batch, allow_out_of_domain=True)
                rec = run_record(engine.run(atoms, cfg), workers=workers)
                rec.update(device=device, batch=batch, workers=workers)
                shutil.rmtree(cfg.out, ignore_errors=True)
                records.append(rec)
                st = rec["stage_s"]
                print(f"Al {rec['n_atoms']:>9,} atoms, {device} (batch {batch}), {workers} workers: "
                      f"{rec['wall_s']:7.1f} s wall, {rec['points_per_s']:>11,.0f} points/s; worker time "
                      f"descriptors {st.get('descriptors', 0):.0f} s, network {st.get('bnn', 0):.0f} s, "
                      f"write {st.get('write', 0):.0f} s; {rec['n_electrons_predicted']:,.1f} of "
                      f"{rec['n_electrons_expected']:,.0f} e", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return records


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1 << 21, help="points per timed network pass (default 2^21)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cells", type=int, nargs="*", default=[29, 63],
                    help="FCC cells per edge for whole runs (default 29 63: 97,556 and 1,000,188 atoms)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--engine-batches", type=int, nargs="+", default=[16384, 65536],
                    help="batch values for the GPU whole runs (default 16384 65536)")
    ap.add_argument("--out", default="benchmarks/results/gpu_throughput.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu_throughput needs a CUDA GPU that torch sees; this machine has none")
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPU cores", flush=True)
    result = {
        "benchmark": "gpu_throughput",
        "machine": {**machine_info(), "gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda},
        "settings": {"mc_samples": SAMPLES, "params": PARAMS.to_dict(), "hidden": list(ARCH.hidden),
                     "rounds": args.rounds, "cells": args.cells, "workers": args.workers, "spacing_A": 0.8,
                     "block": 64, "model_network_stage": "untrained, shape of the shipped Al model",
                     "model_whole_runs": "shipped (bigdens/models/al.safetensors)"},
        "network": network_stage(args.points, args.rounds),
    }
    write_result(args.out, result)  # keep the network numbers if a whole run fails
    result["whole_runs"] = whole_runs(args.cells, args.workers, args.engine_batches)
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
