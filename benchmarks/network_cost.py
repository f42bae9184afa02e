"""Cost of the network stage per grid point, format 1 (mean-field) against format 2 (last-layer).

One CPU thread, S = 20, on the descriptors of a real cell of the model's species (the first test
snapshot of al108 for Al, of sige216 for Si–Ge).  Interleaved rounds, best of each (load from other processes
hits all alike).  For each model it reports µs per point of ``DensityModel.predict`` as the engine
calls it (``batch`` 16384), the FLOP per point of its matmuls, and the GFLOP/s torch's own fp32
GEMMs reach on the same shapes at the same points per pass (the denominator of "fraction of
GEMM").  Format 2's matmuls: the trunk ``(n, F) @ (F, h1)``, ``(n, h1) @ (h1, h2)``, the head
``(n, h2) @ (h2, 2)`` once per point, then ``(n, h2) @ (h2, S)`` for the S samples of the last
layer.

Run:  python -m benchmarks.network_cost [MODEL ...] [--rounds R] [--out FILE.json]
      (default models: bigdens 0.1's Al model, format 1, and the shipped one, format 2)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks._common import best_of_rounds, machine_info, write_result
from bigdens import bnn, data
from bigdens.train import snapshot_features

SAMPLES = 20
#: The Al model bigdens 0.1 shipped (format 1).
ROOT = Path(__file__).resolve().parents[1]
V1_MODEL = ROOT / "benchmarks" / "results" / "model_v2" / "models" / "al_v1.safetensors"
#: The data set whose first test cell gives the descriptors, by the model's species (atomic numbers).
CELLS = {(13,): "al108", (14, 32): "sige216"}
BATCH = 16384
POINTS = 65536


def matmul_shapes(model: DensityModel, samples: int) -> list[tuple[int, int, int]]:
    """(n_points_factor, in, out) of every matmul per point: (1, a, b) is one (n, a) @ (a, b)."""
    widths = [model.params.n_features, *model.arch.hidden]
    if model.arch.kind == "last-layer":
        trunk = [(1, a, b) for a, b in zip(widths[:-1], widths[1:])]
        return trunk + [(1, widths[-1], 2), (1, widths[-1] + 1, samples)]
    return [(samples, a, b) for a, b in zip(widths, [*widths[1:], 2])]


def flop_per_point(model: DensityModel, samples: int) -> int:
    return sum(2 * f * a * b for f, a, b in matmul_shapes(model, samples))


def gemm_timer(model: DensityModel, samples: int, n: int, points: int):
    """A function timing torch fp32 GEMMs of the model's shapes over ``points`` points, n per pass."""
    import torch

    mats = [(torch.randn(f * n, a), torch.randn(a, b)) for f, a, b in matmul_shapes(model, samples)]
    reps = max(1, points // n)

    def run():
        t = time.perf_counter()
        for _ in range(reps):
            for x, w in mats:
                torch.mm(x, w)
        return (time.perf_counter() - t) * points / (reps * n)
    return run


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="model files (default: shipped Al and an untrained 128x128 format-2)")
    ap.add_argument("--points", type=int, default=POINTS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="few points, one round (for the test suite)")
    ap.add_argument("--out", default="benchmarks/results/network_cost.json")
    args = ap.parse_args(argv)
    points, rounds = (2048, 1) if args.smoke else (args.points, args.rounds)
    shipped = bnn.load(bnn_default_model())
    models = {p: bnn.load(p) for p in args.models} or {
        "al v1 (format 1, 64x64 mean-field)": bnn.load(V1_MODEL),
        "al, shipped (format 2, last-layer)": shipped,
    }
    features, cell_names = {}, {}  # per descriptor: the first test cell of a data set of the model's species
    for m in models.values():
        if m.params not in features:
            snap = data.load(ROOT / "datasets" / CELLS[tuple(m.params.species)], split="test")[0]
            features[m.params] = np.ascontiguousarray(snapshot_features(snap, m.params)[0][:points])
            cell_names[m.params] = snap.name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = {"samples": SAMPLES, "seed": 7, "block_index": 3, "batch": BATCH}
        timers = {}
        for name, m in models.items():
            feats = features[m.params]
            m.predict(feats[:4096], **kw)  # warm up (numba kernels)

            def run(m=m, feats=feats):
                t = time.perf_counter()
                m.predict(feats, **kw)
                return time.perf_counter() - t
            timers[("predict", name)] = run
            chunk = bnn.LAST_LAYER_CHUNK if m.arch.kind == "last-layer" else bnn._cpu_chunk(SAMPLES, max(m.arch.hidden))
            for n in sorted({chunk, 1024, 4096}):
                timers[(f"gemm_n{n}", name)] = gemm_timer(m, SAMPLES, n, points)
        best = best_of_rounds(timers, rounds)
    finally:
        torch.set_num_threads(threads)
    records = []
    for name, m in models.items():
        fpp = flop_per_point(m, SAMPLES)
        t = best[("predict", name)]
        gemm = {k[0]: fpp * points / v / 1e9 for k, v in best.items() if k[1] == name and k[0] != "predict"}
        rec = {"model": name, "cell": cell_names[m.params], "kind": m.arch.kind, "hidden": list(m.arch.hidden), "n_features": m.params.n_features,
               "flop_per_point": fpp, "us_per_point": 1e6 * t / points, "predict_gflops": fpp * points / t / 1e9,
               "torch_gemm_gflops": gemm, "torch_gemm_gflops_best": max(gemm.values())}
        rec["fraction_of_gemm"] = rec["predict_gflops"] / rec["torch_gemm_gflops_best"]
        records.append(rec)
        print(f"{name}: {rec['us_per_point']:.2f} µs/point, {rec['predict_gflops']:.1f} GFLOP/s "
              f"({rec['fraction_of_gemm']:.0%} of torch GEMM {rec['torch_gemm_gflops_best']:.1f}), "
              f"{fpp:,} FLOP/point", flush=True)
    result = {"benchmark": "network_cost",
              "settings": {"mc_samples": SAMPLES, "batch": BATCH, "threads": 1, "rounds": rounds, "points": points,
                           "smoke": args.smoke, "torch": torch.__version__},
              "machine": machine_info(), "records": records}
    return write_result(args.out, result)


def bnn_default_model():
    import bigdens

    return Path(bigdens.__file__).parent / "models" / "al.safetensors"


if __name__ == "__main__":
    main()
