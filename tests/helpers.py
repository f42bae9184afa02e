"""Small engine-test helpers shared by several test modules: an untrained Al model, run settings, store readers."""

from __future__ import annotations

import numpy as np
import zarr

from bigdens import descriptors, store
from bigdens.bnn import Architecture, DensityModel, Scaling
from bigdens.config import PredictConfig

PARAMS = descriptors.DescriptorParams(species=(13,), m=(8,), k=(3,), r_cut=4.0)
#: Small enough for a busy 2-core machine: an 18³ grid in 27 blocks (edges 8, 8, 2).
SPACING = 0.45
BLOCK = 8


def make_model(path, *, seed=1, info=None):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.5, 4.0, size=(300, PARAMS.n_features)).astype(np.float32)
    y = rng.uniform(0.01, 0.05, size=300)
    DensityModel.new(PARAMS, Architecture(hidden=(16, 16)), Scaling.fit(X, y), seed=seed, info=info).save(path)
    return path


def config(out, model, **kw):
    # An untrained model lies outside any domain (its electron count is far off): accepted explicitly.
    kw = {"spacing": SPACING, "block": BLOCK, "workers": 0, "mc_samples": 5, "seed": 3, "progress": False,
          "allow_out_of_domain": True, **kw}
    return PredictConfig(out=out, model=model, **kw)


def variables(path):
    root = zarr.open_group(str(path), mode="r")
    return {name: root[name][:] for name in store.VARIABLES}


def assert_identical(a, b):
    for name in store.VARIABLES:
        assert np.array_equal(a[name], b[name], equal_nan=True), name
