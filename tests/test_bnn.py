"""The Bayesian network: gradients, KL, Monte Carlo reproducibility, model files."""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
import struct

import numpy as np
import pytest
import torch

from bigdens.bnn import Architecture, DensityModel, Scaling, load, sample_seed
from bigdens.descriptors import DescriptorParams
from bigdens.errors import InputError

PARAMS = DescriptorParams(species=(13,), m=(6,), k=(3,), r_cut=5.0)
#: sample_seed(1, 4) as bigdens 0.1.0 computes it (numpy SeedSequence): recomputed blocks rely on it.
SAMPLE_SEED_1_4 = 9135799944750005330


@pytest.fixture
def model(rng):
    X = rng.normal(size=(500, PARAMS.n_features)).astype(np.float32)
    y = (0.03 + 0.01 * np.tanh(X[:, 0])).astype(np.float32)
    return DensityModel.new(PARAMS, Architecture(hidden=(16, 16), kind="mean-field"), Scaling.fit(X, y), seed=3), X, y


def test_gradients_flow_and_kl_is_finite(model):
    m, X, y = model
    out = m.net(m.scale_features(X[:64]))
    assert out.shape == (64, 2)
    kl = m.net.kl()
    assert torch.isfinite(kl) and kl > 0
    (out.pow(2).mean() + kl / 1e4).backward()
    for name, p in m.net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_mc_prediction_reproducible_per_seed_and_block(model):
    m, X, _ = model
    a = m.predict(X, samples=8, seed=1, block_index=4)
    b = m.predict(X, samples=8, seed=1, block_index=4)
    for u, v in zip(a, b):
        assert u.dtype == np.float32 and u.shape == (len(X),)
        np.testing.assert_array_equal(u, v)
    c = m.predict(X, samples=8, seed=2, block_index=4)
    d = m.predict(X, samples=8, seed=1, block_index=5)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])
    assert (a[1] >= 0).all() and (a[2] > 0).all()
    # Batching the points differently does not change a block's numbers.
    e = m.predict(X, samples=8, seed=1, block_index=4, batch=77)
    np.testing.assert_allclose(e[0], a[0], rtol=1e-6, atol=1e-9)
    assert sample_seed(1, 4) != sample_seed(4, 1)


def test_samples_shared_by_all_points(model):
    # With one sample there is no spread: epistemic variance is exactly zero.
    m, X, _ = model
    _, epi, _ = m.predict(X, samples=1, seed=0)
    assert (epi == 0).all()


def test_mean_and_variances_match_explicit_loop(model):
    m, X, _ = model
    mean, epi, ale = m.predict(X[:50], samples=5, seed=9, block_index=2)
    eps = m.draw_eps(5, seed=9, block_index=2)
    mus, vars_ = [], []
    with torch.no_grad():
        for s in range(5):
            one = [(w[s : s + 1], b[s : s + 1]) for w, b in eps]
            out = m.net.forward_samples(m.scale_features(X[:50]), one)[0].double()
            mus.append(out[:, 0].numpy() * m.scaling.target_std + m.scaling.target_mean)
            vars_.append(np.exp(np.clip(out[:, 1].numpy(), -16, 4)) * m.scaling.target_std**2)
    mus = np.array(mus)
    np.testing.assert_allclose(mean, mus.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(epi, mus.var(axis=0), rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(ale, np.mean(vars_, axis=0), rtol=1e-4)


def test_epistemic_variance_grows_far_from_training_data(model):
    m, X, y = model
    # Widen the posterior a little, as training leaves it, then compare near and far inputs.
    with torch.no_grad():
        for layer in m.net.layers:
            layer.w_rho.fill_(-4.0)
    _, epi_near, _ = m.predict(X, samples=32, seed=0)
    far = X + 25.0 * np.asarray(m.scaling.feature_std, dtype=np.float32)
    _, epi_far, _ = m.predict(far, samples=32, seed=0)
    assert np.median(epi_far) > 10 * np.median(epi_near)


def test_save_load_round_trip_identical(model, tmp_path):
    m, X, _ = model
    m.info = {"note": "round trip"}
    path = m.save(tmp_path / "m.safetensors")
    back = load(path)
    assert back.params == m.params and back.arch == m.arch and back.scaling == m.scaling
    assert back.info == {"note": "round trip"}
    for u, v in zip(m.predict(X, samples=4, seed=5, block_index=1), back.predict(X, samples=4, seed=5, block_index=1)):
        np.testing.assert_array_equal(u, v)


def test_bad_model_files(model, tmp_path):
    m, _, _ = model
    with pytest.raises(InputError, match="does not exist"):
        load(tmp_path / "none.safetensors")
    (tmp_path / "text.safetensors").write_text("hello, I am not a model")
    with pytest.raises(InputError, match="not a readable bigdens model"):
        load(tmp_path / "text.safetensors")
    good = m.save(tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="not a readable bigdens model"):
        load(tmp_path / "trunc.safetensors")
    # A pickle (what torch.save writes) is refused, and its payload never runs.
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(InputError):
        load(tmp_path / "evil.safetensors")
    assert not (tmp_path / "PWNED").exists()
    # A newer format version is refused with a clear message.
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["bigdens"])
    meta["format_version"] = 99
    meta["bigdens_version"] = "9.0"
    header["__metadata__"]["bigdens"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    (tmp_path / "new.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + good[8 + n :])
    with pytest.raises(InputError, match="bigdens 9.0 .* upgrade bigdens"):
        load(tmp_path / "new.safetensors")


def test_bad_prediction_input(model):
    m, X, _ = model
    with pytest.raises(InputError, match="samples must be >= 1"):
        m.predict(X, samples=0)
    with pytest.raises(InputError, match="features must have shape"):
        m.predict(X[:, :3])


# -- the fast Monte Carlo path against a plain per-sample loop ------------------------------

def plain_loop_predict(m, X, *, samples, seed, block_index):
    """What ``predict`` computes, written the obvious way: one sample at a time, (N, in) @ (in, out)."""
    F = torch.nn.functional
    eps = m.draw_eps(samples, seed=seed, block_index=block_index)
    mean = np.asarray(m.scaling.feature_mean, dtype=np.float32)
    std = np.asarray(m.scaling.feature_std, dtype=np.float32)
    x = torch.from_numpy((X.astype(np.float32) - mean) / std)
    mus, variances = [], []
    with torch.no_grad():
        for s in range(samples):
            h = x
            for i, (layer, (ew, eb)) in enumerate(zip(m.net.layers, eps)):
                w = layer.w_mu + F.softplus(layer.w_rho) * ew[s]
                b = layer.b_mu + F.softplus(layer.b_rho) * eb[s, 0]
                h = h @ w + b
                if i < len(m.net.layers) - 1:
                    h = F.silu(h)
            mus.append(h[:, 0].double().numpy())
            variances.append(np.exp(np.clip(h[:, 1].double().numpy(), -16.0, 4.0)))
    ts, tm = m.scaling.target_std, m.scaling.target_mean
    vs = ts * ts * m.scaling.variance_scale
    mus = np.array(mus)
    return mus.mean(axis=0) * ts + tm, mus.var(axis=0) * vs, np.mean(variances, axis=0) * vs


@pytest.mark.parametrize("hidden, samples, batch", [
    ((16, 16), 20, 65536),   # CPU chunks sized for the cache, several groups of points
    ((16, 16), 5, 77),       # chunks of 77 points, a partial last chunk
    ((24, 8, 12), 1, 65536),  # three hidden layers; one sample: no epistemic spread
    ((64, 64), 20, 1000),
])
def test_fast_predict_equals_plain_per_sample_loop(rng, hidden, samples, batch):
    n = 5000 if hidden == (16, 16) else 700
    X = rng.normal(size=(n, PARAMS.n_features)).astype(np.float32)
    y = (0.03 + 0.01 * np.tanh(X[:, 0])).astype(np.float32)
    m = DensityModel.new(PARAMS, Architecture(hidden=hidden, kind="mean-field"), Scaling.fit(X, y), seed=11)
    m.scaling = dataclasses.replace(m.scaling, variance_scale=1.7)
    with torch.no_grad():  # a posterior as wide as training leaves it, so the spread is well above rounding
        for layer in m.net.layers:
            layer.w_rho.fill_(-4.0)
            layer.b_rho.fill_(-5.0)
    got = m.predict(X, samples=samples, seed=4, block_index=9, batch=batch)
    want = plain_loop_predict(m, X, samples=samples, seed=4, block_index=9)
    for name, u, v in zip(("mean", "var_epistemic", "var_aleatoric"), got, want):
        assert u.dtype == np.float32 and u.shape == (n,)
        # The epistemic variance is a spread of nearly equal numbers: it amplifies the CPU
        # SiLU kernel's 2e-7 relative error (bigdens._bnn_kernels) more than the means.
        np.testing.assert_allclose(u, v, rtol=5e-5 if name == "var_epistemic" else 1e-5, atol=0, err_msg=name)
    if samples == 1:
        assert (got[1] == 0).all()
    else:
        assert (got[1] > 0).all()


@pytest.mark.cuda
@pytest.mark.parametrize("hidden, samples, batch", [((16, 16), 20, 65536), ((64, 64), 20, 1000), ((24, 8, 12), 1, 77)])
def test_cuda_predict_equals_plain_per_sample_loop(rng, hidden, samples, batch):
    n = 5000
    X = rng.normal(size=(n, PARAMS.n_features)).astype(np.float32)
    y = (0.03 + 0.01 * np.tanh(X[:, 0])).astype(np.float32)
    m = DensityModel.new(PARAMS, Architecture(hidden=hidden, kind="mean-field"), Scaling.fit(X, y), seed=11)
    with torch.no_grad():
        for layer in m.net.layers:
            layer.w_rho.fill_(-4.0)
            layer.b_rho.fill_(-5.0)
    want = plain_loop_predict(m, X, samples=samples, seed=4, block_index=9)  # on the CPU, before the model moves
    got = m.predict(X, samples=samples, seed=4, block_index=9, batch=batch, device="cuda")
    again = m.predict(X, samples=samples, seed=4, block_index=9, batch=batch, device="cuda")
    for name, u, w, v in zip(("mean", "var_epistemic", "var_aleatoric"), got, again, want):
        assert u.dtype == np.float32 and u.shape == (n,)
        assert u.tobytes() == w.tobytes(), name  # the same seed and block: the same numbers on the GPU too
        np.testing.assert_allclose(u, v, rtol=5e-5 if name == "var_epistemic" else 1e-5, atol=0, err_msg=name)
    assert m.net.layers[0].w_mu.device.type == "cuda"
    cpu = m.predict(X, samples=samples, seed=4, block_index=9, device="cpu")  # and back: the model moves
    np.testing.assert_allclose(cpu[0], got[0], rtol=1e-5, atol=0)


def test_same_seed_and_block_reproduce_bit_for_bit(model):
    m, X, _ = model
    X = np.concatenate([X] * 10)  # 5000 points: more than one chunk and group
    a = m.predict(X, samples=20, seed=7, block_index=123)
    X2 = X.copy()
    X2.setflags(write=False)  # read-only input (e.g. a view of a store) is fine and gives the same numbers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = m.predict(X2, samples=20, seed=7, block_index=123)
    for u, v in zip(a, b):
        assert u.tobytes() == v.tobytes()
    # Repeated points of one block get the same numbers, wherever they fall in the chunks.
    for u in a:
        np.testing.assert_allclose(u[:500], u[4500:], rtol=1e-6, atol=0)
    # The seeding of the weight samples is part of the file format's promise: pin it.
    assert sample_seed(1, 4) == SAMPLE_SEED_1_4


def test_predict_of_no_points_and_bad_batch(model):
    m, X, _ = model
    for arr in m.predict(X[:0], samples=3):
        assert arr.shape == (0,) and arr.dtype == np.float32
    with pytest.raises(InputError, match="batch"):
        m.predict(X, batch=0)


def test_bnn_throughput_benchmark_smoke(tmp_path):
    from benchmarks import bnn_throughput

    out = tmp_path / "bnn.json"
    result = bnn_throughput.main(["--smoke", "--out", str(out)])
    rec = result["records"][0]
    assert json.loads(out.read_text())["benchmark"] == "bnn_throughput"
    assert rec["allclose_rtol_1e-5"] and rec["predict_points_per_s"] > 0 and rec["torch_gemm_gflops_best"] > 0


def test_saved_model_is_readable_by_others(model, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = model[0].save(tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_cpu_silu_kernel_matches_exact_silu():
    from bigdens._bnn_kernels import silu_inplace

    x = np.concatenate([np.linspace(-40, 40, 400_001), [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0]]).astype(np.float32)
    got = x.copy()
    silu_inplace(got)
    exact = x / (1 + np.exp(-x.astype(np.float64)))
    err = np.abs(got - exact)
    pos = x >= 0  # relative accuracy; for x < 0 1 + tanh(x/2) cancels: absolute accuracy
    assert (err[pos] / np.maximum(np.abs(exact[pos]), 1e-30)).max() <= 3e-7
    assert err[~pos].max() <= 5e-6
    # torch's SiLU (what predict swapped out) agrees to the same bounds.
    ref = torch.nn.functional.silu(torch.from_numpy(x)).numpy().astype(np.float64)
    diff = np.abs(got - ref)
    assert (diff[pos] / np.maximum(np.abs(ref[pos]), 1e-30)).max() <= 4e-7 and diff[~pos].max() <= 5e-6


def test_outside_mask_kernel_is_the_any_of_the_range_comparisons(rng):
    """The rows that get the extrapolation term: brute force over every feature, with the bounds
    themselves (inside), values just beyond them, NaN (inside: no comparison with it holds) and ±inf."""
    from bigdens._bnn_kernels import outside_mask

    lo = np.array([-1.0, 0.0, 2.0, -3.0, 0.5], dtype=np.float32)
    hi = np.array([1.0, 0.0, 4.0, 3.0, 0.5], dtype=np.float32)
    x = np.tile((lo + hi) / 2, (400, 1))
    x[::3] = lo
    x[1::3] = hi
    j = rng.integers(0, 5, size=400)
    beyond = rng.choice([np.nextafter(np.float32(0), np.float32(1)), np.float32(0.3)], size=400)
    step = np.where(rng.random(400) < 0.5, -1, 1)
    pick = rng.random(400) < 0.4
    for i in np.flatnonzero(pick):
        edge = lo[j[i]] if step[i] < 0 else hi[j[i]]
        x[i, j[i]] = np.nextafter(edge, np.float32(-np.inf) if step[i] < 0 else np.float32(np.inf)) + step[i] * beyond[i]
    x[5:8] = (lo + hi) / 2
    x[5, 2], x[6, 0], x[7, 3] = np.nan, np.inf, -np.inf
    want = ((x < lo) | (x > hi)).any(axis=1)
    got = outside_mask(x, lo, hi)
    assert got.dtype == np.bool_ and np.array_equal(got, want)
    assert not got[5] and got[6] and got[7] and got.any() and not got.all()


def test_a_model_file_replaced_during_a_run_is_refused_where_it_is_loaded(tmp_path):
    # Workers load the model by path with the run's model_hash (recorded by the driver at the start): a file
    # replaced meanwhile must stop the run, not feed it under the original's name.
    from bigdens._files import file_hash
    from bigdens.engine.worker import load_model
    from bigdens.errors import RunError

    from helpers import make_model

    path = tmp_path / "m.safetensors"
    make_model(path)
    recorded = file_hash(path)
    assert load_model(path, recorded) is load_model(path, recorded)  # loaded once per process
    make_model(path, seed=7)  # another model under the same name
    assert file_hash(path) != recorded
    with pytest.raises(RunError, match="changed since the run started"):
        load_model(path, recorded + "x")  # a fresh cache key: the file is read and checked
    with pytest.raises(RunError, match="changed since the run started"):
        load(path, expected_hash=recorded)
    assert load(path, expected_hash=file_hash(path)).params is not None
