"""The Bayesian network: gradients, KL, Monte Carlo reproducibility, model files."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch

from bigdens.bnn import Architecture, DensityModel, Scaling, load, sample_seed
from bigdens.descriptors import DescriptorParams
from bigdens.errors import InputError

PARAMS = DescriptorParams(species=(13,), m=(6,), k=(3,), r_cut=5.0)


@pytest.fixture
def model(rng):
    X = rng.normal(size=(500, PARAMS.n_features)).astype(np.float32)
    y = (0.03 + 0.01 * np.tanh(X[:, 0])).astype(np.float32)
    return DensityModel.new(PARAMS, Architecture(hidden=(16, 16)), Scaling.fit(X, y), seed=3), X, y


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
