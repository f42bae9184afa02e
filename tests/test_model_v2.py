"""Model format 2: the last-layer network, its extrapolation term, per-region calibration, files."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import bigdens
from bigdens.bnn import REGION_EDGES, Architecture, DensityModel, Scaling, load
from bigdens.descriptors import DescriptorParams
from bigdens.errors import InputError
from bigdens.train import RANGE_QUANTILE, _calibrate, fit_posterior

MODELS = Path(bigdens.__file__).parent / "models"
#: The Al model bigdens 0.1 shipped (format 1), kept with the model-v2 results.
V1_AL = Path(__file__).parents[1] / "benchmarks" / "results" / "model_v2" / "models" / "al_v1.safetensors"
PARAMS = DescriptorParams(species=(13,), m=(6,), k=(3,), r_cut=5.0)
ARCH = Architecture(hidden=(16, 12), kind="last-layer")


def _features(rng, n):
    """Synthetic descriptors: sorted distances in 0.4–3 Å, then scalar products in [-1, 1]."""
    d = np.sort(rng.uniform(0.4, 3.0, size=(n, PARAMS.m[0])), axis=1)
    u = rng.uniform(-1, 1, size=(n, PARAMS.n_features - PARAMS.m[0]))
    return np.concatenate([d, u], axis=1).astype(np.float32)


@pytest.fixture
def model(rng):
    """A format-2 model with random trunk weights and a posterior fitted on synthetic training features."""
    X = _features(rng, 3000)
    y = (0.05 * np.exp(-X[:, 0]) + 0.01).astype(np.float32)
    m = DensityModel.new(PARAMS, ARCH, Scaling.fit(X, y, positive=True), seed=2)
    fit_posterior(m, X, seed=0, prior_precision=1.0)
    return m, X, y


def test_fresh_model_has_no_range_and_a_positive_head(rng):
    X = _features(rng, 200)
    m = DensityModel.new(PARAMS, ARCH, Scaling.fit(X, np.ones(200), positive=True), seed=0)
    assert m.scaling.target_mean == 0.0
    out = m.net(m.scale_features(X))
    assert out.shape == (200, 2) and (out[:, 0] >= 0).all()
    assert float(m.net.kl()) == 0.0


def test_mean_and_variances_equal_a_per_sample_loop(model):
    m, X, _ = model
    x = X[:300].copy()
    x[:40, 0] += 2.5  # beyond the training range: the extrapolation term is exercised too
    mean, epi, ale = m.predict(x, samples=6, seed=4, block_index=7, batch=97)
    e_w, e_lo, e_hi = m.draw_head_eps(6, seed=4, block_index=7)
    net = m.net
    ts = m.scaling.target_std
    with torch.no_grad():
        xs = m.scale_features(x).double()
        h = xs
        for layer in net.layers[:-1]:
            h = torch.nn.functional.silu(h @ layer.weight.double().T + layer.bias.double())
        head = net.layers[-1]
        z0 = h @ head.weight[0].double() + head.bias[0].double()
        logvar = h @ head.weight[1].double() + head.bias[1].double()
        phi1 = torch.cat([h, torch.ones(len(h), 1, dtype=torch.float64)], 1)
        lo = (net.range_lo.double() - xs).clamp_min(0)
        hi = (xs - net.range_hi.double()).clamp_min(0)
        rho = []
        for s in range(6):
            w = net.post_chol.double() @ e_w[s].double()
            z = z0 + phi1 @ w + lo @ (net.slope_lo.double() * e_lo[s].double()) \
                + hi @ (net.slope_hi.double() * e_hi[s].double())
            rho.append(torch.nn.functional.softplus(z).numpy() * ts)
    rho = np.array(rho)
    f = m.scaling.variance_factor(m.nearest_distance(x))
    np.testing.assert_allclose(mean, rho.mean(0), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(epi, rho.var(0) * f, rtol=1e-3, atol=1e-10)
    np.testing.assert_allclose(ale, np.exp(np.clip(logvar.numpy(), -16, 4)) * ts**2 * f, rtol=1e-4)


def test_samples_are_shared_per_block_and_reproducible(model):
    m, X, _ = model
    a = m.predict(X, samples=8, seed=1, block_index=3)
    for u, v in zip(a, m.predict(X, samples=8, seed=1, block_index=3)):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[1], m.predict(X, samples=8, seed=1, block_index=4)[1])
    # The same points predicted in two calls (one block): the first call's numbers, point by point.
    half = m.predict(X[:100], samples=8, seed=1, block_index=3)
    np.testing.assert_allclose(half[0], a[0][:100], rtol=1e-6)
    _, epi1, _ = m.predict(X, samples=1, seed=0)
    assert (epi1 == 0).all()


def test_density_is_never_negative_even_far_outside(model):
    m, X, _ = model
    wild = X * np.float32(40.0) - np.float32(30.0)
    mean, epi, ale = m.predict(np.concatenate([X, wild]), samples=16, seed=0)
    assert (mean >= 0).all() and np.isfinite(mean).all() and np.isfinite(epi).all()


def test_epistemic_sigma_grows_beyond_the_training_range(model):
    m, X, _ = model
    d1_max = X[:, 0].max()  # beyond every training point, so beyond the range too
    base = X[X[:, 0] > np.quantile(X[:, 0], 0.99)]  # training points near the edge, inside the range
    xs = m.scale_features(base).numpy()
    base = base[((xs >= m.net.range_lo.numpy()) & (xs <= m.net.range_hi.numpy())).all(1)][:50].copy()
    assert len(base) >= 10
    _, epi_in, _ = m.predict(base, samples=64, seed=0)
    spreads = []
    for step in (0.5, 1.5, 3.0):
        far = base.copy()
        far[:, 0] = d1_max + step  # the nearest atom farther than any training point had it
        far[:, 1:PARAMS.m[0]] = np.maximum(far[:, 1:PARAMS.m[0]], far[:, :1])  # keep distances sorted
        _, epi, _ = m.predict(far, samples=64, seed=0)
        spreads.append(np.median(np.sqrt(epi)))
    assert spreads[0] > 1.5 * np.median(np.sqrt(epi_in)) and spreads[2] > 3 * np.median(np.sqrt(epi_in))
    assert spreads[0] < spreads[1] < spreads[2]
    # The extrapolation term: a steeper slope prior beyond the range widens σ there, not inside.
    with torch.no_grad():
        m.net.slope_hi.zero_()
        flat = np.median(np.sqrt(m.predict(far, samples=64, seed=0)[1]))
        m.net.slope_hi[0] = 1.0
        steep = np.median(np.sqrt(m.predict(far, samples=64, seed=0)[1]))
        inside = m.predict(base, samples=64, seed=0)[1]
    assert steep > 2 * flat
    np.testing.assert_array_equal(inside, epi_in)


def test_posterior_is_the_laplace_precision(model):
    m, X, _ = model
    net = m.net
    cov = (net.post_chol @ net.post_chol.T).double()
    with torch.no_grad():
        phi = net.trunk(m.scale_features(X)).double()
        out = net.head(net.trunk(m.scale_features(X))).double()
    j = torch.sigmoid(out[:, 0])[:, None] * torch.cat([phi, torch.ones(len(phi), 1, dtype=torch.float64)], 1)
    prec = sum(torch.outer(j[i], j[i]) / torch.exp(out[i, 1].clamp(-16, 4)) for i in range(len(j)))
    expect = torch.linalg.inv(prec + torch.eye(len(prec), dtype=torch.float64))
    torch.testing.assert_close(cov, expect, rtol=2e-3, atol=1e-9)
    # The range holds all but RANGE_QUANTILE of the training points at either end, per feature.
    xs = m.scale_features(X).numpy()
    inside_hi = (xs <= net.range_hi.numpy() + 1e-6).mean(0)
    inside_lo = (xs >= net.range_lo.numpy() - 1e-6).mean(0)
    np.testing.assert_allclose(inside_hi, 1 - RANGE_QUANTILE, atol=1.5 / len(X))
    np.testing.assert_allclose(inside_lo, 1 - RANGE_QUANTILE, atol=1.5 / len(X))


def test_per_region_calibration_covers_each_region(model, rng):
    m, X, y = model
    yv = m.predict(X, samples=8, seed=0)[0] + rng.normal(scale=0.002, size=len(X)) * (1 + 3 * (X[:, 0] < 0.6))
    scaling, ref = _calibrate(m, X, yv, samples=8, seed=0)
    assert scaling.region_edges == REGION_EDGES and len(scaling.region_scales) == len(REGION_EDGES) + 1
    cal = dataclasses.replace(m, scaling=scaling)
    mean, epi, ale = cal.predict(X, samples=8, seed=0, block_index=0)
    z = np.abs(mean - yv) / np.sqrt(epi.astype(np.float64) + ale)
    d = cal.nearest_distance(X)
    cls = np.searchsorted(np.asarray(REGION_EDGES), d, side="right")
    for k in range(len(REGION_EDGES) + 1):
        if (cls == k).sum() >= 2000:
            assert abs(np.mean(z[cls == k] <= 1) - 0.683) < 0.01
    assert ref["quantiles"][-1] == 0.999


def test_save_load_round_trip_identical(model, tmp_path):
    m, X, y = model
    m.scaling, _ = _calibrate(m, X, y, samples=4, seed=0)
    back = load(m.save(tmp_path / "m.safetensors"))
    assert back.arch == m.arch and back.scaling == m.scaling and back.params == m.params
    for u, v in zip(m.predict(X, samples=5, seed=2, block_index=9), back.predict(X, samples=5, seed=2, block_index=9)):
        np.testing.assert_array_equal(u, v)


def _rewrite_metadata(path, edit):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["bigdens"])
    header["__metadata__"]["bigdens"] = json.dumps(edit(meta))
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])


def test_format_1_files_load_and_cannot_claim_format_2_features(model, tmp_path):
    old = load(V1_AL)
    assert old.arch.kind == "mean-field" and old.params.cross is False
    m, _, _ = model
    path = m.save(tmp_path / "v2.safetensors")
    _rewrite_metadata(path, lambda meta: dict(meta, format_version=1))
    with pytest.raises(InputError, match="format-1 file can hold only a mean-field"):
        load(path)


def test_old_model_with_the_new_descriptor_is_refused():
    old = load(V1_AL.with_name("sige_v1.safetensors"))
    cross = dataclasses.replace(old.params, cross=True)
    feats = np.zeros((4, cross.n_features), dtype=np.float32)
    with pytest.raises(InputError, match=f"shape \\(n_points, {old.params.n_features}\\)"):
        old.predict(feats, samples=2)


@pytest.mark.parametrize("model, cell", [
    ("al.safetensors", "al108/al108-T0600-01.npz"),
    ("sige.safetensors", "sige216/sige216-x0.50-T0900-00.npz"),
])
def test_shipped_models_conserve_electrons_on_a_test_cell(model, cell):
    """|ΔN| ≤ 0.1 % on a held-out DFT cell (docs/models.md lists every test cell's ΔN; not all meet it)."""
    from bigdens import data
    from bigdens.train import evaluate

    m = load(MODELS / model)
    assert m.arch.kind == "last-layer" and m.info["epistemic_reference"]
    snap = data.read_snapshot(Path(__file__).parents[1] / "datasets" / cell, split="test")
    row = evaluate(m, [snap], samples=20)["snapshots"][0]
    assert abs(row["electron_count_error_pct"]) <= 0.1
    assert row["nmae_pct"] < {"al.safetensors": 0.45, "sige.safetensors": 1.3}[model]


def test_shipped_models_match_their_recorded_hashes_and_a_damaged_copy_is_refused(tmp_path):
    """bigdens/models/SHA256SUMS names every shipped model with its file's sha256 (`sha256sum -c` reads it);
    a file named there that differs by one bit is refused at load, naming both hashes; files not named load,
    unless their weights fail the digest written with them."""
    import hashlib
    import shutil

    from bigdens.bnn.modelfile import RECORDED_HASHES, recorded_hashes
    from bigdens.models import SHIPPED

    record = recorded_hashes(MODELS)
    assert set(record) == {f"{name}.safetensors" for name in SHIPPED}
    for name, digest in record.items():
        assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == digest
    shutil.copy(MODELS / RECORDED_HASHES, tmp_path / RECORDED_HASHES)
    raw = bytearray((MODELS / "al.safetensors").read_bytes())
    raw[-5] ^= 0x01  # one low bit of the last tensor's data
    (tmp_path / "al.safetensors").write_bytes(bytes(raw))
    (tmp_path / "mine.safetensors").write_bytes(bytes(raw))  # the same bytes under a name the record lacks
    with pytest.raises(InputError, match=rf"is damaged or was replaced: its sha256 is .* records {record['al.safetensors'][:16]}"):
        load(tmp_path / "al.safetensors")
    # Unnamed in the record, the damaged bytes are still refused: the weights' own digest (written since model v4).
    with pytest.raises(InputError, match="is damaged: its weights do not match the digest written with them"):
        load(tmp_path / "mine.safetensors")
    shutil.copy(MODELS / "al.safetensors", tmp_path / "intact.safetensors")  # a name the record lacks: loads
    assert load(tmp_path / "intact.safetensors").params.n_features == load(MODELS / "al.safetensors").params.n_features
    # sha256sum's binary-mode lines ("<hex> *name") read the same.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / RECORDED_HASHES).write_text(f"{record['al.safetensors']} *al.safetensors\n")
    assert recorded_hashes(tmp_path / "b") == {"al.safetensors": record["al.safetensors"]}
