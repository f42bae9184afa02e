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
    arch = Architecture(hidden=(16, 16), kind="mean-field")
    DensityModel.new(PARAMS, arch, Scaling.fit(X, y), seed=seed, info=info).save(path)
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


def triclinic_sige(cells=(1, 1, 1)):
    """A rattled Si-Ge cell sheared into a triclinic one (the halo and tile tests' oblique case)."""
    from bigdens import structure

    tri = structure.rattle(structure.diamond_sige(cells, x=0.5, seed=2), 0.05, seed=3)
    cell = tri.cell[:].copy()
    cell[1] += 0.35 * cell[0]
    cell[2] += -0.2 * cell[0] + 0.3 * cell[1]
    tri.set_cell(cell, scale_atoms=True)
    return tri


def thin_al():
    """One rattled FCC Al cell squeezed to 2.835 Å along a1: thinner than 2·r_cut, so atoms appear as several images."""
    from bigdens import structure

    thin = structure.rattle(structure.fcc_al((1, 1, 1)), 0.05, seed=4)
    thin.set_cell(np.diag([4.05, 4.05, 4.05]) @ np.diag([0.7, 1, 1]), scale_atoms=True)
    return thin


def run_with_and_without_ci(node: str, env: dict | None = None) -> dict:
    """Run one test (pytest node id) in a fresh pytest process with ``CI=true`` and with ``CI`` empty.

    ``env``: more environment for both runs (e.g. a broken optional dependency on ``PYTHONPATH``).
    Returns ``{"true": (exit code, stdout), "": (...)}``: a test whose requirement is missing must error
    under CI and skip without it.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    results = {}
    for ci in ("true", ""):
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", node],
                              cwd=root, env={**os.environ, **(env or {}), "CI": ci}, capture_output=True, text=True,
                              timeout=300)
        results[ci] = (proc.returncode, proc.stdout)
    return results
