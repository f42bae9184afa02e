"""Descriptor throughput on a CUDA GPU (bigdens._descriptor_cuda) against the CPU kernel, one block.

Needs a machine where numba sees a CUDA GPU (the project's CI has none; this
is run by hand on a lent GPU machine and its result recorded in
benchmarks/results/gpu_descriptors.json).  It refuses to run without one, and
under numba's CUDA simulator (whose timings mean nothing).

One block of 64³ grid points of rattled FCC Al (``--cells``³ conventional
cells, rms displacement 0.05 Å) on the grid of spacing 0.8 Å (the shipped
spacing), with the descriptor settings of the shipped Al model
(bigdens/models/al.safetensors).  The halo is computed once (it is the same for
both kernels).  Timed, best of ``--rounds`` after a warm-up call (the warm-up
of the GPU includes the kernel's compilation, reported on its own):

* CPU: :func:`bigdens.descriptors.compute_block` with one numba thread and with
  all of them (points/s);
* GPU, call: :func:`bigdens._descriptor_cuda.compute_block_cuda` up to a
  synchronised device array (host work: the grid points and the binned
  halo; their transfer; the kernel), for each ``--threads-per-block``;
* GPU, kernel: the kernel alone (CUDA events around the launch).

It also records how the GPU's features compare with the CPU's (the kernel is
meant to give them bit for bit: the number of differing values and the
largest absolute difference) and whether ``torch.as_tensor(features,
device="cuda")`` wraps the device array without a copy.

Run:  python -m benchmarks.gpu_descriptors [--cells 16] [--rounds 5] [--threads-per-block 64 128 256]
      [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks._common import al_bulk, machine_info, write_result

SPACING = 0.8
BLOCK = 64
MODEL = Path(__file__).resolve().parent.parent / "bigdens" / "models" / "al.safetensors"


def _require_gpu():
    """numba.cuda, or SystemExit saying why this machine cannot run the benchmark."""
    from numba import config

    if config.ENABLE_CUDASIM:
        raise SystemExit("benchmarks.gpu_descriptors times a real GPU; unset NUMBA_ENABLE_CUDASIM "
                         "(the CUDA simulator's timings mean nothing)")
    from numba import cuda

    if not cuda.is_available():
        raise SystemExit("benchmarks.gpu_descriptors needs a CUDA GPU that numba sees "
                         "(numba.cuda.is_available() is False on this machine)")
    return cuda


def _best(fn, rounds: int) -> float:
    """Smallest wall time (s) of ``rounds`` calls of ``fn``."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=16,
                    help="FCC cells per edge (default 16: 16,384 atoms, a 64.8 Å cell holding a 64³ block)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads-per-block", type=int, nargs="+", default=[64, 128, 256],
                    help="CUDA threads per block to time (default 64 128 256)")
    ap.add_argument("--out", default="benchmarks/results/gpu_descriptors.json")
    args = ap.parse_args(argv)
    cuda = _require_gpu()

    import numba
    import torch

    from bigdens import _descriptor_cuda as dc
    from bigdens import bnn
    from bigdens.blocks import block_halo, make_blocks
    from bigdens.celllist import build_cell_list
    from bigdens.descriptors import compute_block, species_index
    from bigdens.grid import make_grid

    gpu_name = cuda.get_current_device().name
    gpu_name = gpu_name.decode() if isinstance(gpu_name, bytes) else str(gpu_name)
    print(f"{gpu_name}, numba {numba.__version__}, {os.cpu_count()} CPU cores", flush=True)
    params = bnn.load(MODEL).params
    atoms = al_bulk(args.cells)
    grid = make_grid(atoms.cell[:], spacing=SPACING)
    if min(grid.shape) < BLOCK:
        raise SystemExit(f"--cells {args.cells} gives a grid of {grid.shape} points; a {BLOCK}³ block needs "
                         f"at least {BLOCK} per axis (--cells ≥ 13)")
    block = make_blocks(grid.shape, BLOCK)[0]
    cl = build_cell_list(atoms.cell[:], atoms.positions)
    t = time.perf_counter()
    halo = block_halo(cl, atoms.numbers, grid, block, params.r_cut)
    t_halo = time.perf_counter() - t
    n = block.n_points
    print(f"Al {len(atoms):,} atoms, grid {grid.shape}, block {block.shape} = {n:,} points, "
          f"halo {len(halo.numbers):,} images, {params.n_features} features", flush=True)

    # CPU kernel: one thread and all threads.
    want = compute_block(halo, grid, block, params)  # warm-up (compiled or loaded from numba's cache)
    threads = numba.get_num_threads()
    cpu = {}
    for nt in sorted({1, threads}):
        numba.set_num_threads(nt)
        s = _best(lambda: compute_block(halo, grid, block, params), args.rounds)
        cpu[str(nt)] = {"s": s, "points_per_s": n / s}
        print(f"  CPU {nt:>3} thread(s): {s * 1e3:9.1f} ms  {n / s:>14,.0f} points/s", flush=True)
    numba.set_num_threads(threads)

    # GPU: the first call compiles the kernel.
    t = time.perf_counter()
    dev = dc.compute_block_cuda(halo, grid, block, params)
    cuda.synchronize()
    t_first = time.perf_counter() - t
    got = dev.copy_to_host()
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    n_differ = int(np.count_nonzero(got != want))
    zero_copy = None  # torch without CUDA here: not checked
    if torch.cuda.is_available():
        tensor = torch.as_tensor(dev, device="cuda")
        zero_copy = tensor.data_ptr() == dev.__cuda_array_interface__["data"][0]
    print(f"  GPU first call (compiles the kernel): {t_first:.2f} s; {n_differ} of {got.size:,} values differ "
          f"from the CPU's (max |diff| {diff.max():.3g}); torch wraps without a copy: {zero_copy}", flush=True)

    # The kernel alone, from its arguments already on the GPU.
    kernel, kargs = dc.launch_args(grid.points(block.start, block.stop), halo.positions,
                                   species_index(halo.numbers, params), params)
    out = cuda.device_array((n, params.n_features), dtype=np.float32)

    gpu = {}
    default_tpb = dc.THREADS_PER_BLOCK
    try:
        for tpb in args.threads_per_block:
            dc.THREADS_PER_BLOCK = tpb

            def call():
                dc.compute_block_cuda(halo, grid, block, params)
                cuda.synchronize()

            call()
            s_call = _best(call, args.rounds)
            blocks = (n + tpb - 1) // tpb
            kernel[blocks, tpb](*kargs, out)  # warm-up at this launch shape
            cuda.synchronize()
            s_kernel = float("inf")
            for _ in range(args.rounds):
                e0, e1 = cuda.event(), cuda.event()
                e0.record()
                kernel[blocks, tpb](*kargs, out)
                e1.record()
                e1.synchronize()
                s_kernel = min(s_kernel, e0.elapsed_time(e1) / 1e3)  # ms -> s
            same = bool(np.array_equal(out.copy_to_host().reshape(want.shape), want))
            gpu[str(tpb)] = {"call_s": s_call, "call_points_per_s": n / s_call, "kernel_s": s_kernel,
                             "kernel_points_per_s": n / s_kernel, "equal_to_cpu": same}
            print(f"  GPU {tpb:>3} threads/block: call {s_call * 1e3:8.2f} ms {n / s_call:>14,.0f} points/s; "
                  f"kernel {s_kernel * 1e3:8.2f} ms {n / s_kernel:>14,.0f} points/s; equal to CPU: {same}",
                  flush=True)
    finally:
        dc.THREADS_PER_BLOCK = default_tpb

    best_call = max(v["call_points_per_s"] for v in gpu.values())
    result = {
        "benchmark": "gpu_descriptors",
        "machine": {**machine_info(), "gpu": gpu_name},
        "settings": {"system": "rattled FCC Al, rms 0.05 Å", "cells": args.cells, "n_atoms": len(atoms),
                     "spacing_A": SPACING, "grid": list(grid.shape), "block": list(block.shape), "n_points": n,
                     "params": params.to_dict(), "params_from": "bigdens/models/al.safetensors",
                     "rounds": args.rounds, "halo_images": len(halo.numbers)},
        "halo_s": t_halo,
        "cpu_by_threads": cpu,
        "gpu_first_call_s": t_first,
        "gpu_by_threads_per_block": gpu,
        "gpu_values_differing_from_cpu": n_differ,
        "gpu_max_abs_diff_from_cpu": float(diff.max()),
        "torch_wraps_without_copy": zero_copy,
        "gpu_call_over_cpu_all_threads": best_call / cpu[str(threads)]["points_per_s"],
    }
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
