"""The structure's bond spread (bigdens.thermal) and the calibrated aleatoric factor it sets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bigdens import structure
from bigdens.bnn import Architecture, DensityModel, Scaling, load
from bigdens.descriptors import DescriptorParams
from bigdens.errors import InputError
from bigdens.thermal import NEIGHBOURS, SHELL_FACTOR, bond_spread
from bigdens.train import _calibrate, fit_posterior

from bruteforce import all_images_within


def _brute_spread(atoms) -> float:
    """The definition of bond_spread, from every periodic image (no cell list, no descriptor kernel)."""
    pos, num, cell = atoms.positions, atoms.numbers, atoms.cell[:]
    species = sorted(set(num.tolist()))
    per_pair: dict = {}
    for i in range(len(atoms)):
        _, d, idx = all_images_within(pos, cell, pos[i], 8.0)
        keep = d > 1e-9
        d, idx = d[keep], idx[keep]
        for b in species:
            db = np.sort(d[num[idx] == b])[:NEIGHBOURS]
            per_pair.setdefault((num[i], b), []).append(db)
    ss, dof = 0.0, 0
    for rows in per_pair.values():
        nearest = np.median([r[0] for r in rows])
        shell = np.concatenate([r[r <= SHELL_FACTOR * nearest] for r in rows])
        ss += float(np.sum((shell - shell.mean()) ** 2))
        dof += len(shell) - 1
    return math.sqrt(ss / dof)


def test_a_perfect_crystal_reads_zero_whatever_its_bond_lengths():
    assert bond_spread(*_arrays(structure.fcc_al((2, 2, 2)))) < 1e-5
    # Si-Si, Si-Ge and Ge-Ge bonds of one length each (an unrelaxed alloy): no spread within a pair.
    sige = structure.diamond_sige((2, 2, 2), x=0.5, seed=1)
    assert bond_spread(*_arrays(sige)) < 1e-5


def test_spread_equals_brute_force_on_a_rattled_triclinic_alloy(rng):
    atoms = structure.diamond_sige((2, 2, 1), x=0.25, seed=3)
    atoms.set_cell(atoms.cell[:] + np.array([[0, 0, 0], [0.6, 0, 0], [0.3, -0.4, 0]]), scale_atoms=True)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    assert bond_spread(*_arrays(atoms)) == pytest.approx(_brute_spread(atoms), rel=1e-5)


def test_spread_grows_with_displacement_and_ignores_translation_order_and_repetition(rng):
    base = structure.fcc_al((3, 3, 3))
    spreads = []
    for rms in (0.03, 0.06, 0.12):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=rms, size=atoms.positions.shape)
        spreads.append(bond_spread(*_arrays(atoms)))
    assert spreads[0] < spreads[1] < spreads[2]
    # Two independent displacements of size r move a bond length by about r·sqrt(2).
    assert spreads[1] == pytest.approx(0.06 * math.sqrt(2), rel=0.15)
    moved = atoms.copy()
    moved.positions += [1.3, -0.7, 2.9]
    perm = rng.permutation(len(atoms))
    assert bond_spread(*_arrays(moved)) == pytest.approx(spreads[2], rel=1e-5)
    assert bond_spread(*_arrays(atoms[perm])) == pytest.approx(spreads[2], rel=1e-5)
    # The same environments twice over: the pooled spread barely moves (the degrees of freedom change).
    assert bond_spread(*_arrays(atoms.repeat((2, 1, 1)))) == pytest.approx(spreads[2], rel=2e-3)


def test_an_isolated_atom_has_no_spread():
    from ase import Atoms

    assert math.isnan(bond_spread(*_arrays(Atoms("Al", cell=[20, 20, 20], pbc=True))))


# -- the aleatoric factor ----------------------------------------------------------------------

PARAMS = DescriptorParams(species=(13,), m=(6,), k=(3,), r_cut=5.0)


@pytest.fixture
def model(rng):
    d = np.sort(rng.uniform(0.4, 3.0, size=(4000, PARAMS.m[0])), axis=1)
    u = rng.uniform(-1, 1, size=(4000, PARAMS.n_features - PARAMS.m[0]))
    X = np.concatenate([d, u], axis=1).astype(np.float32)
    y = (0.05 * np.exp(-X[:, 0]) + 0.01).astype(np.float32)
    m = DensityModel.new(PARAMS, Architecture(hidden=(16, 12), kind="last-layer"),
                         Scaling.fit(X, y, positive=True), seed=2)
    fit_posterior(m, X, seed=0)
    return m, X


def test_disorder_scales_the_aleatoric_variance_only(model):
    m, X = model
    m = dataclasses.replace(m, scaling=dataclasses.replace(m.scaling, disorder_reference=0.1, disorder_slope=30.0))
    plain = m.predict(X, samples=5, seed=1, block_index=3)
    hot = m.predict(X, samples=5, seed=1, block_index=3, disorder=0.2)
    g = 1 + 30.0 * (0.2**2 - 0.1**2)
    np.testing.assert_array_equal(hot[0], plain[0])
    np.testing.assert_array_equal(hot[1], plain[1])
    np.testing.assert_allclose(hot[2], plain[2] * g, rtol=1e-6)
    # A cold structure: the factor is floored, never zero or negative.
    assert m.scaling.aleatoric_factor(0.0) == pytest.approx(max(0.1, 1 - 30 * 0.01))
    # Below the coldest calibration cell's spread, σ does not shrink further.
    floored = dataclasses.replace(m.scaling, disorder_floor=0.08)
    assert floored.aleatoric_factor(0.02) == floored.aleatoric_factor(0.08) == pytest.approx(1 + 30 * (0.0064 - 0.01))
    assert floored.aleatoric_factor(0.2) == pytest.approx(g)
    assert m.scaling.aleatoric_factor(None) == m.scaling.aleatoric_factor(math.nan) == 1.0
    with pytest.raises(InputError, match="slope >= 0"):
        dataclasses.replace(m.scaling, disorder_slope=-1.0)


def test_calibration_fits_the_growth_with_disorder_and_covers_each_cell(model, rng, tmp_path):
    m, X = model
    mean, epi, ale = m.predict(X, samples=8, seed=0, block_index=0)
    spreads = [0.12, 0.16, 0.20]
    # Errors whose variance grows with u² (as measured on Al at 300-900 K), on the model's own σ pattern.
    cells = [mean + rng.normal(size=len(X)) * np.sqrt(ale * (0.3 + 40 * u**2)) for u in spreads]
    Xv, yv = np.concatenate([X] * 3), np.concatenate(cells)
    scaling, ref = _calibrate(m, Xv, yv, samples=8, seed=0, cells=([len(X)] * 3, spreads))
    assert scaling.disorder_slope > 0 and ref["disorder"]["bond_spread"] == spreads
    assert scaling.disorder_floor == min(spreads)
    cal = dataclasses.replace(m, scaling=scaling)
    for u, y in zip(spreads, cells):
        mu, e, a = cal.predict(X, samples=8, seed=0, block_index=0, disorder=u)
        cover = np.mean(np.abs(mu - y) <= np.sqrt(e.astype(np.float64) + a))
        assert abs(cover - 0.683) < 0.03, (u, cover)
    back = load(cal.save(tmp_path / "m.safetensors"))
    assert back.scaling == scaling
    # One cell (or cells of one spread) cannot fit a dependence: none is fitted.
    one, _ = _calibrate(m, X, cells[0], samples=8, seed=0, cells=([len(X)], spreads[:1]))
    assert one.disorder_slope == 0.0


def _arrays(atoms):
    return atoms.positions, atoms.numbers, atoms.cell[:]
