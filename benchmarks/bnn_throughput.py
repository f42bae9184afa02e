"""Throughput of the network stage (``DensityModel.predict``) against torch's own GEMM rate.

One CPU thread (``torch.set_num_threads(1)``), so every rate is per core.
The model has the shape the shipped Al models use: the default descriptor
(:func:`bigdens.descriptors.default_params` for Al, 47 features), hidden
layers (64, 64), S = 20 Monte Carlo samples; its weights are untrained (the
timings do not depend on them).

In one run, interleaved round by round (best of the rounds, so that load from
other processes on a shared machine hits all alike), it times

* ``predict`` as the engine calls it (``batch`` = 16384, the default of
  ``PredictConfig``), in points/s and GFLOP/s (2 × multiply-adds of the
  network's matmuls, 289,280 FLOP per point at S = 20);
* the previous implementation (copied below as :func:`reference_predict`:
  2-D inputs broadcast against (S, in, out) weights, out-of-place SiLU,
  float64 conversions) at the same ``batch``: the "before" number;
* plain torch fp32 GEMMs on the network's layer shapes: for each point
  count n in {predict's chunk, 256, 1024, 16384} and each layer, the faster
  of ``bmm((S, n, in), (S, in, out))`` and ``bmm((S, out, in), (S, in, n))``
  (and, for the first layer, of one ``(n, F) @ (F, S·h1)`` mm).  The GEMM
  rate is the best over n: the denominator of the reported ratio.

It also checks that ``predict`` and the reference agree (``rtol`` 1e-5).

Run:  python -m benchmarks.bnn_throughput [--smoke] [--points N] [--rounds R] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import best_of_rounds, machine_info, write_result
from bigdens import bnn
from bigdens.bnn import LOGVAR_RANGE, Architecture, DensityModel, Scaling
from bigdens.descriptors import DescriptorParams, default_params

PARAMS = default_params([13])
ARCH = Architecture(hidden=(64, 64), kind="mean-field")
SAMPLES = 20
#: ``batch`` passed to predict: the engine's default (``PredictConfig.batch``).
BATCH = 16384
POINTS = 65536


def make_model(params: DescriptorParams = PARAMS, arch: Architecture = ARCH, *, seed: int = 0) -> DensityModel:
    """An untrained model of the benchmarked shape, posterior widened to ρ = -4 as training leaves it."""
    import torch

    rng = np.random.default_rng(seed)
    X = rng.uniform(0.5, 6.0, size=(1000, params.n_features)).astype(np.float32)
    model = DensityModel.new(params, arch, Scaling.fit(X, rng.uniform(0.0, 0.1, 1000)), seed=seed)
    with torch.no_grad():
        for layer in model.net.layers:
            layer.w_rho.fill_(-4.0)
    return model


def flops_per_point(params: DescriptorParams, arch: Architecture, samples: int) -> float:
    """Multiply-adds × 2 of the network's matmuls for one grid point and S samples."""
    widths = [params.n_features, *arch.hidden, 2]
    return 2.0 * samples * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def reference_predict(model: DensityModel, features: np.ndarray, *, samples: int = 20, seed: int = 0,
                      block_index: int = 0, batch: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``DensityModel.predict`` as it was before the fast path (bigdens 0.1.0, commit 7ac0953), CPU only.

    Same arguments and results (mean, epistemic variance, aleatoric variance;
    each (n_points,) float32, e/Å³ and (e/Å³)²).
    """
    import torch

    features = np.asarray(features, dtype=np.float32)
    eps = model.draw_eps(int(samples), seed=seed, block_index=block_index)
    n = len(features)
    mean = np.empty(n, dtype=np.float32)
    epi = np.empty(n, dtype=np.float32)
    ale = np.empty(n, dtype=np.float32)
    ts, tm = model.scaling.target_std, model.scaling.target_mean
    vs = ts * ts * model.scaling.variance_scale
    with torch.inference_mode():
        for a in range(0, n, batch):
            x = model.scale_features(features[a : a + batch])
            out = model.net.forward_samples(x, eps)  # (S, N, 2)
            mu = out[..., 0].double()
            logvar = out[..., 1].double().clamp(*LOGVAR_RANGE)
            mean[a : a + batch] = (mu.mean(dim=0) * ts + tm).numpy()
            epi[a : a + batch] = (mu.var(dim=0, unbiased=False) * vs).numpy()
            ale[a : a + batch] = (logvar.exp().mean(dim=0) * vs).numpy()
    return mean, epi, ale


def gemm_timer(params: DescriptorParams, arch: Architecture, samples: int, n: int, points: int):
    """A function timing torch's fastest fp32 GEMMs for ``points`` points in passes of ``n``.

    Returns a callable that runs once and returns the seconds the layer
    GEMMs took (per layer, the fastest layout), for ``points`` points in all.
    """
    import torch

    widths = [params.n_features, *arch.hidden, 2]
    reps = max(1, round(points / n))
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        forms = [
            (torch.randn(samples, n, a), torch.randn(samples, a, b)),  # points × width
            (torch.randn(samples, b, a), torch.randn(samples, a, n)),  # width × points
        ]
        layers.append([(lambda x=x, w=w, o=torch.empty(x.shape[0], x.shape[1], w.shape[2]): torch.bmm(x, w, out=o))
                       for x, w in forms])
    x0, w0 = torch.randn(n, widths[0]), torch.randn(widths[0], samples * widths[1])
    layers[0].append(lambda o=torch.empty(n, samples * widths[1]): torch.mm(x0, w0, out=o))

    def run() -> float:
        total = 0.0
        for forms in layers:
            best = float("inf")
            for f in forms:
                f()  # warm up
                t = time.perf_counter()
                for _ in range(reps):
                    f()
                best = min(best, time.perf_counter() - t)
            total += best
        return total * points / (reps * n)

    return run


def gemm_points_per_pass(samples: int, hidden: tuple[int, ...], batch: int) -> list[int]:
    """The pass sizes n at which torch's GEMM rate is measured: predict's CPU chunk, 256, 1024, ``batch``."""
    return sorted({bnn._cpu_chunk(samples, max(hidden)), 256, 1024, int(batch)})


def torch_gemm_gflops(params: DescriptorParams, arch: Architecture, samples: int, ns: list[int], *,
                      points: int, rounds: int = 3) -> dict[int, float]:
    """torch's fp32 GEMM rate (GFLOP/s, current thread count) on the network's layer shapes, per pass size n.

    For each n, per layer the fastest of the layouts timed by
    :func:`gemm_timer`; best of ``rounds``.
    """
    timers = {n: gemm_timer(params, arch, samples, n, points) for n in ns}
    best = {n: min(f() for _ in range(rounds)) for n, f in timers.items()}
    return {n: flops_per_point(params, arch, samples) * points / t / 1e9 for n, t in best.items()}


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="few points and rounds (for the test suite)")
    ap.add_argument("--points", type=int, default=POINTS, help=f"points per timed predict (default {POINTS})")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is kept (default 5)")
    ap.add_argument("--out", default="benchmarks/results/bnn_throughput.json")
    args = ap.parse_args(argv)
    points, rounds = (2048, 1) if args.smoke else (args.points, args.rounds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = make_model()
        rng = np.random.default_rng(1)
        feats = rng.uniform(0.5, 6.0, size=(points, PARAMS.n_features)).astype(np.float32)
        kw = {"samples": SAMPLES, "seed": 7, "block_index": 3, "batch": BATCH}
        chunk = bnn._cpu_chunk(SAMPLES, max(ARCH.hidden))  # what predict uses on the CPU

        new = model.predict(feats, **kw)
        ref = reference_predict(model, feats, **kw)
        max_rel = [float(np.max(np.abs(u - v) / np.maximum(np.abs(v), 1e-30))) for u, v in zip(new, ref)]
        agree = all(np.allclose(u, v, rtol=1e-5, atol=0) for u, v in zip(new, ref))

        timers = {f"gemm_n{n}": gemm_timer(PARAMS, ARCH, SAMPLES, n, points)
                  for n in gemm_points_per_pass(SAMPLES, ARCH.hidden, BATCH)}

        def timed(f):
            def run():
                t = time.perf_counter()
                f()
                return time.perf_counter() - t
            return run

        timers["predict"] = timed(lambda: model.predict(feats, **kw))
        timers["reference"] = timed(lambda: reference_predict(model, feats, **kw))
        best = best_of_rounds(timers, rounds)
    finally:
        torch.set_num_threads(threads)

    fpp = flops_per_point(PARAMS, ARCH, SAMPLES)
    rate = {k: {"points_per_s": points / t, "gflops": fpp * points / t / 1e9} for k, t in best.items()}
    gemm_best_key = max((k for k in rate if k.startswith("gemm_")), key=lambda k: rate[k]["gflops"])
    gemm_gflops = rate[gemm_best_key]["gflops"]
    rec = {
        "points": points,
        "chunk": chunk,
        "flop_per_point": fpp,
        "predict_points_per_s": rate["predict"]["points_per_s"],
        "predict_gflops": rate["predict"]["gflops"],
        "reference_points_per_s": rate["reference"]["points_per_s"],
        "reference_gflops": rate["reference"]["gflops"],
        "speedup": best["reference"] / best["predict"],
        "torch_gemm_gflops": {k.removeprefix("gemm_"): v["gflops"] for k, v in rate.items() if k.startswith("gemm_")},
        "torch_gemm_gflops_best": gemm_gflops,
        "torch_gemm_best_at": gemm_best_key.removeprefix("gemm_"),
        "predict_fraction_of_gemm": rate["predict"]["gflops"] / gemm_gflops,
        "reference_fraction_of_gemm": rate["reference"]["gflops"] / gemm_gflops,
        "max_rel_diff_vs_reference": dict(zip(("mean", "var_epistemic", "var_aleatoric"), max_rel)),
        "allclose_rtol_1e-5": agree,
    }
    gemm_txt = ", ".join(f"{k} {v:.1f}" for k, v in rec["torch_gemm_gflops"].items())
    print(f"S={SAMPLES}, {PARAMS.n_features} features, hidden {list(ARCH.hidden)}, 1 thread, {points:,} points:\n"
          f"  predict    {rec['predict_points_per_s']:>9,.0f} points/s  {rec['predict_gflops']:5.1f} GFLOP/s  "
          f"= {rec['predict_fraction_of_gemm']:.0%} of torch GEMM\n"
          f"  reference  {rec['reference_points_per_s']:>9,.0f} points/s  {rec['reference_gflops']:5.1f} GFLOP/s  "
          f"= {rec['reference_fraction_of_gemm']:.0%} of torch GEMM  (speedup {rec['speedup']:.2f}x)\n"
          f"  torch fp32 GEMM on the layer shapes, GFLOP/s by points per pass: {gemm_txt} "
          f"(best {gemm_gflops:.1f})\n"
          f"  agrees with the reference to rtol 1e-5: {agree} (max rel. diff {max_rel})", flush=True)
    result = {
        "benchmark": "bnn_throughput",
        "settings": {"mc_samples": SAMPLES, "batch": BATCH, "threads": 1, "rounds": rounds,
                     "params": PARAMS.to_dict(), "hidden": list(ARCH.hidden), "smoke": args.smoke,
                     "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "note": "best of interleaved rounds"},
        "machine": machine_info(),
        "records": [rec],
    }
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
