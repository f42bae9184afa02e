"""Torch tensors as the network's input: same numbers as an ndarray, and never a trip through numpy."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bigdens import bnn, structure
from bigdens.blocks import block_halo, make_blocks
from bigdens.celllist import build_cell_list
from bigdens.descriptors import compute_block
from bigdens.errors import InputError
from bigdens.grid import make_grid

from helpers import make_model

SHIPPED_AL = Path(__file__).resolve().parents[1] / "bigdens" / "models" / "al.safetensors"
#: Region edges (Å) and factors put on the untrained test model so that the nearest-distance path runs.
REGIONS = {"region_edges": (1.0, 1.6), "region_scales": (0.8, 1.1, 1.3)}


def _helpers_model(tmp_path, regions: bool) -> bnn.DensityModel:
    m = bnn.load(make_model(tmp_path / "m.safetensors"))
    if regions:
        m = dataclasses.replace(m, scaling=dataclasses.replace(m.scaling, **REGIONS))
    return m


def _helpers_features(m: bnn.DensityModel, rng, n: int = 700) -> np.ndarray:
    return rng.uniform(0.5, 4.0, size=(n, m.params.n_features)).astype(np.float32)


@pytest.fixture(scope="module")
def al_case():
    """The shipped Al model and the descriptors of one 6³-point block of a rattled 2×2×2 fcc Al cell."""
    model = bnn.load(SHIPPED_AL)
    params = model.params
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.06, seed=1)
    grid = make_grid(atoms.cell[:], shape=(12, 12, 12))
    cl = build_cell_list(atoms.cell[:], atoms.positions)
    block = make_blocks(grid.shape, 6)[3]
    halo = block_halo(cl, atoms.numbers, grid, block, params.r_cut)
    feats = compute_block(halo, grid, block, params).reshape(-1, params.n_features)
    groups = np.random.default_rng(5).integers(0, len(atoms), size=len(feats))
    return model, np.ascontiguousarray(feats, dtype=np.float32), groups, len(atoms)


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), np.max(np.abs(x - y))


@pytest.mark.parametrize("regions", [False, True])
@pytest.mark.parametrize("batch", [65536, 50])
def test_cpu_tensor_equals_ndarray_mean_field(tmp_path, rng, regions, batch):
    m = _helpers_model(tmp_path, regions)
    X = _helpers_features(m, rng)
    groups = rng.integers(0, 9, size=len(X))
    kw = dict(samples=5, seed=3, block_index=7, batch=batch, disorder=0.1)
    ref = m.predict_grouped(X, groups, 9, **kw)
    got = m.predict_grouped(torch.from_numpy(X.copy()), groups, 9, **kw)
    _assert_same(ref, got)
    _assert_same(m.predict(X, **kw), m.predict(torch.from_numpy(X.copy()), **kw))


@pytest.mark.parametrize("batch", [65536, 100])
def test_cpu_tensor_equals_ndarray_shipped_al_model(al_case, batch):
    model, X, groups, n_atoms = al_case
    assert model.arch.kind == "last-layer" and model.scaling.region_scales  # both tensor-aware paths run
    kw = dict(samples=6, seed=11, block_index=3, batch=batch, disorder=0.08)
    ref = model.predict_grouped(X, groups, n_atoms, **kw)
    got = model.predict_grouped(torch.from_numpy(X.copy()), groups, n_atoms, **kw)
    _assert_same(ref, got)
    assert np.isfinite(ref[0]).all() and ref[3].shape == (n_atoms, 6) and np.any(ref[3] != 0)
    _assert_same(model.predict(X, **kw), model.predict(torch.from_numpy(X.copy()), **kw))


def test_nearest_distance_of_a_tensor(al_case):
    model, X, _, _ = al_case
    d = model.nearest_distance(torch.from_numpy(X.copy()))
    assert isinstance(d, np.ndarray) and d.dtype == np.float32
    assert np.array_equal(d, model.nearest_distance(X))


class _GuardedNumpy:
    """numpy as the modules of bigdens.bnn see it, except that converting a torch tensor fails."""

    GUARDED = ("asarray", "asanyarray", "ascontiguousarray", "array", "min")

    def __getattr__(self, name):
        attr = getattr(np, name)
        if name not in self.GUARDED:
            return attr

        def guarded(a, *args, **kw):
            if isinstance(a, torch.Tensor):
                raise AssertionError(f"np.{name} was given a torch tensor")
            return attr(a, *args, **kw)

        return guarded


def _guard_numpy(monkeypatch) -> list[str]:
    """Put :class:`_GuardedNumpy` in place of ``np`` in every module of bigdens.bnn that uses numpy.

    The prediction code is spread over the package's modules (model, settings, sampling, prediction);
    each one that imports numpy gets the guard.  Returns the guarded modules' names.
    """
    guarded = []
    for info in pkgutil.iter_modules(bnn.__path__, prefix=f"{bnn.__name__}."):
        module = importlib.import_module(info.name)
        if getattr(module, "np", None) is np:
            monkeypatch.setattr(module, "np", _GuardedNumpy())
            guarded.append(info.name)
    return guarded


class _NoArray(torch.Tensor):
    """A tensor that refuses numpy's array protocol (np.asarray, np.array, ... on it fail anywhere)."""

    def __array__(self, *args, **kwargs):
        raise AssertionError("the feature tensor went through numpy")


def _case(which: str, al_case, tmp_path, rng):
    # (model, features, groups, n_groups): the shipped Al model on real descriptors, or a small mean-field model.
    if which == "al":
        return al_case
    m = _helpers_model(tmp_path, regions=True)
    X = _helpers_features(m, rng)
    return m, X, rng.integers(0, 4, size=len(X)), 4


@pytest.mark.parametrize("which", ["mean-field", "al"])
def test_tensor_input_never_goes_through_numpy(tmp_path, rng, monkeypatch, al_case, which):
    m, X, groups, k = _case(which, al_case, tmp_path, rng)
    kw = dict(samples=4, seed=2, block_index=1)
    ref = m.predict_grouped(X, groups, k, **kw)
    # The modules that run the prediction with numpy (the class, its scaling, its buffers) are all guarded.
    assert {"bigdens.bnn.model", "bigdens.bnn.settings", "bigdens.bnn.sampling"} <= set(_guard_numpy(monkeypatch))
    t = torch.from_numpy(X.copy()).as_subclass(_NoArray)
    with pytest.raises(AssertionError, match="numpy"):  # the guard works
        np.asarray(t)
    _assert_same(ref, m.predict_grouped(t, groups, k, **kw))
    _assert_same(ref[:3], m.predict(t, **kw))


def test_tensor_shape_and_dtype(tmp_path, rng):
    m = _helpers_model(tmp_path, regions=True)
    X = _helpers_features(m, rng, n=50)
    with pytest.raises(InputError, match=r"features must have shape .* got \(50, 3\)"):
        m.predict(torch.from_numpy(X[:, :3].copy()), samples=2)
    with pytest.raises(InputError, match="features must have shape"):
        m.predict(torch.from_numpy(X[0].copy()), samples=2)
    with pytest.raises(InputError, match="one group per point"):
        m.predict_grouped(torch.from_numpy(X), np.zeros(49, dtype=int), 1, samples=2)
    # Other float dtypes and layouts are converted as an ndarray would be.
    X64 = X.astype(np.float64) + 1e-9
    _assert_same(m.predict(X64, samples=3), m.predict(torch.from_numpy(X64), samples=3))
    _assert_same(m.predict(X, samples=3), m.predict(torch.from_numpy(np.ascontiguousarray(X.T)).T, samples=3))
    empty = m.predict_grouped(torch.empty(0, m.params.n_features), np.zeros(0, dtype=int), 2, samples=3)
    assert [len(a) for a in empty[:3]] == [0, 0, 0] and empty[3].shape == (2, 3)


def test_tensor_that_requires_grad(tmp_path, rng):
    m = _helpers_model(tmp_path, regions=True)
    X = _helpers_features(m, rng, n=60)
    t = torch.from_numpy(X.copy()).requires_grad_(True)
    _assert_same(m.predict_grouped(X, np.zeros(60, dtype=int), 1, samples=3),
                 m.predict_grouped(t, np.zeros(60, dtype=int), 1, samples=3))


@pytest.mark.cuda
@pytest.mark.parametrize("which", ["mean-field", "al"])
def test_cuda_tensor_stays_on_the_gpu(tmp_path, rng, monkeypatch, al_case, which):
    m, X, groups, k = _case(which, al_case, tmp_path, rng)
    kw = dict(samples=5, seed=4, block_index=2, device="cuda", disorder=0.1)
    ref = m.predict_grouped(X, groups, k, **kw)  # the ndarray is copied to the GPU
    t = torch.from_numpy(X.copy()).cuda()
    _guard_numpy(monkeypatch)
    copies = []

    def watch(name):  # a float32 copy to the host as large as the features would show here
        method = getattr(torch.Tensor, name)

        def watched(self, *args, **kwargs):
            out = method(self, *args, **kwargs)
            if (self.device.type == "cuda" and out.device.type == "cpu" and out.dtype == torch.float32
                    and out.numel() >= t.numel()):
                copies.append((name, tuple(out.shape)))
            return out

        monkeypatch.setattr(torch.Tensor, name, watched)

    for name in ("to", "cpu", "numpy"):
        watch(name)
    got = m.predict_grouped(t, groups, k, **kw)
    assert copies == []
    _assert_same(ref, got)
