"""The descriptor kernel against an independent brute-force reference, and its invariances."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from bigdens import structure
from bigdens.descriptors import K_MAX, M_MAX, DescriptorParams, compute
from bigdens.errors import InputError

from bruteforce import all_images_within
from bruteforce import descriptor as _brute_species


def brute(positions, numbers, cell, point, species, m, k, r_cut, cross=False):
    """Brute-force descriptor of one point (float64): the species blocks, then, with ``cross``, the cross blocks.

    Cross block of species pair s < t: ``u_i·u_j`` for the nearest K_s atoms of s (i) and K_t of t (j),
    i-major, 0 for missing atoms, u = 0 for an atom within 1e-6 Å (DESIGN §2).
    """
    feats = _brute_species(positions, numbers, cell, point, species, m, k, r_cut)
    if not cross:
        return feats
    disp, d, idx = all_images_within(np.asarray(positions, float), np.asarray(cell, float),
                                     np.asarray(point, float), r_cut)
    units = []
    for z, ks in zip(species, k):
        sel = np.asarray(numbers)[idx] == z
        ds, vs = d[sel], disp[sel]
        order = np.argsort(ds, kind="stable")[:ks]
        u = np.zeros((ks, 3))
        for i, a in enumerate(order):
            u[i] = 0.0 if ds[a] < 1e-6 else vs[a] / ds[a]
        units.append(u)
    blocks = [(units[s] @ units[t].T).ravel() for s in range(len(species)) for t in range(s + 1, len(species))]
    return np.concatenate([feats, *blocks])


def _check(atoms, points, params, atol=2e-6):
    got = compute(atoms.positions, atoms.numbers, atoms.cell[:], points, params)
    ref = np.array([brute(atoms.positions, atoms.numbers, atoms.cell[:], x, params.species, params.m, params.k,
                          params.r_cut, params.cross) for x in points])
    assert got.dtype == np.float32 and got.shape == (len(points), params.n_features)
    np.testing.assert_allclose(got, ref, atol=atol, rtol=0)
    return got


def test_matches_brute_force_cubic_one_species(rng):
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.08, seed=1)
    points = rng.uniform(-2.0, 10.0, size=(60, 3))
    _check(atoms, points, DescriptorParams(species=(13,), m=(40,), k=(6,), r_cut=5.5))


def _triclinic_sige():
    atoms = structure.rattle(structure.diamond_sige((1, 1, 1), x=0.5, seed=3), 0.05, seed=2)
    cell = atoms.cell[:].copy()
    cell[1] += 0.3 * cell[0]
    cell[2] += 0.2 * cell[0] - 0.25 * cell[1]
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


@pytest.mark.parametrize("cross", [False, True])
def test_matches_brute_force_triclinic_two_species(rng, cross):
    atoms = _triclinic_sige()
    points = rng.uniform(-4.0, 8.0, size=(60, 3))
    params = DescriptorParams(species=(14, 32), m=(30, 25), k=(5, 4), r_cut=6.0, cross=cross)
    got = _check(atoms, points, params)
    if cross:
        assert params.n_features == 30 + 10 + 25 + 6 + 5 * 4
        # Every point has ≥ 5 Si and ≥ 4 Ge within 6 Å: the cross block is filled, not padding.
        assert np.count_nonzero(got[:, params.cross_offset:]) > 0.99 * got[:, params.cross_offset:].size


def test_cross_block_thin_cell_many_images_exact(rng):
    # 2.3 Å along a1, far below 2·r_cut: each atom appears through many images, and the K nearest of
    # one species may be images of the same atom.
    atoms = structure.fcc_al((1, 1, 1))[:3]
    atoms.numbers = [14, 32, 14]
    atoms.set_cell([[2.3, 0.0, 0.0], [0.6, 4.2, 0.0], [0.3, 0.8, 4.4]], scale_atoms=False)
    atoms.positions = [[0.1, 0.2, 0.3], [1.3, 2.1, 2.4], [0.7, 3.3, 1.1]]
    points = rng.uniform(0.0, 4.0, size=(40, 3))
    params = DescriptorParams(species=(14, 32), m=(24, 12), k=(6, 5), r_cut=5.5, cross=True)
    got = _check(atoms, points, params)
    assert (got[:, params.cross_offset:] != 0).all()


def test_cross_block_three_species_pair_order(rng):
    atoms = structure.rattle(structure.diamond_sige((2, 1, 1), x=0.5, seed=8), 0.06, seed=9)
    numbers = atoms.numbers.copy()
    numbers[::5] = 6  # some C on the lattice
    atoms.numbers = numbers
    params = DescriptorParams(species=(14, 32, 6), m=(8, 8, 4), k=(3, 4, 2), r_cut=5.0, cross=True)
    assert params.cross_pairs == ((0, 1), (0, 2), (1, 2))
    assert params.cross_sizes == (12, 6, 8)
    base = sum(params.block_sizes)
    assert params.cross_offset == base and params.cross_offsets == (base, base + 12, base + 18)
    assert params.n_features == base + 26
    names = params.feature_names()
    assert len(names) == params.n_features
    assert names[base:base + 5] == ["Si.Ge:u1.u1", "Si.Ge:u1.u2", "Si.Ge:u1.u3", "Si.Ge:u1.u4", "Si.Ge:u2.u1"]
    assert names[base + 12] == "Si.C:u1.u1" and names[base + 18] == "Ge.C:u1.u1" and names[-1] == "Ge.C:u4.u2"
    points = rng.uniform(0.0, 6.0, size=(40, 3))
    _check(atoms, points, params)
    # Without cross the per-species columns are unchanged.
    plain = DescriptorParams(species=(14, 32, 6), m=(8, 8, 4), k=(3, 4, 2), r_cut=5.0)
    got = compute(atoms.positions, atoms.numbers, atoms.cell[:], points, params)
    np.testing.assert_array_equal(got[:, :base], compute(atoms.positions, atoms.numbers, atoms.cell[:], points, plain))


def test_cross_block_padding_for_missing_atoms():
    # One Ge in a Si lattice and a short cutoff: some points see fewer than K_t Ge (or none).
    atoms = structure.rattle(structure.diamond_sige((2, 2, 2), x=0.0, seed=1), 0.05, seed=2)
    numbers = atoms.numbers.copy()
    numbers[:] = 14
    numbers[0] = 32
    atoms.numbers = numbers
    params = DescriptorParams(species=(14, 32), m=(6, 3), k=(4, 3), r_cut=4.0, cross=True)
    points = np.random.default_rng(3).uniform(0.0, 10.0, size=(80, 3))
    got = _check(atoms, points, params)
    cross = got[:, params.cross_offset:].reshape(-1, 4, 3)
    # At most one Ge image within 4 Å of a point (the cell is 10.9 Å): columns j = 2, 3 are padding.
    assert (cross[:, :, 1:] == 0).all()
    n_ge = (got[:, params.offsets[1]] < 4.0).sum()
    assert 0 < n_ge < len(points)
    far = got[:, params.offsets[1]] == 4.0
    assert (cross[far] == 0).all() and (cross[~far, :, 0] != 0).all()


def test_cross_block_point_on_atom_gives_zero_not_nan():
    atoms = structure.rattle(structure.diamond_sige((1, 1, 1), x=0.5, seed=3), 0.05, seed=4)
    params = DescriptorParams(species=(14, 32), m=(6, 6), k=(4, 3), r_cut=5.0, cross=True)
    si = np.flatnonzero(atoms.numbers == 14)[:3]
    ge = np.flatnonzero(atoms.numbers == 32)[:3]
    f = _check(atoms, atoms.positions[np.concatenate([si, ge])], params)
    assert np.isfinite(f).all()
    cross = f[:, params.cross_offset:].reshape(-1, 4, 3)
    assert (cross[:3, 0, :] == 0).all()  # on a Si atom: u_1 of Si is 0
    assert (cross[3:, :, 0] == 0).all()  # on a Ge atom: u_1 of Ge is 0
    assert (cross[:3, 1:, :] != 0).all() and (cross[3:, :, 1:] != 0).all()


def test_thin_cell_many_images_exact(rng):
    # 2.4 Å along a1, far below 2·r_cut: each atom appears through many images.
    atoms = structure.fcc_al((1, 1, 1))[:2]
    atoms.set_cell([[2.4, 0.0, 0.0], [0.5, 4.0, 0.0], [0.0, 0.7, 4.1]], scale_atoms=False)
    atoms.positions = [[0.1, 0.2, 0.3], [1.3, 2.1, 2.4]]
    points = rng.uniform(0.0, 4.0, size=(40, 3))
    got = _check(atoms, points, DescriptorParams(species=(13,), m=(40,), k=(7,), r_cut=6.0))
    # 2 atoms per 39 Å^3 cell: at least 38 images lie within 6 Å of any point.
    assert (got[:, :30] < 6.0).all()


def test_padding_with_r_cut_and_zero_angles():
    atoms = structure.fcc_al((3, 3, 3))
    params = DescriptorParams(species=(13,), m=(20,), k=(16,), r_cut=3.0)
    # Octahedral hole of FCC: exactly 6 atoms at a/2 = 2.025 Å within 3 Å.
    f = compute(atoms.positions, atoms.numbers, atoms.cell[:], [[2.025, 2.025, 2.025]], params)[0]
    np.testing.assert_allclose(f[:6], 2.025, atol=1e-6)
    np.testing.assert_allclose(f[6:20], 3.0)
    angles = f[20:]
    assert angles.size == 16 * 15 // 2
    n_real = 6 * 5 // 2
    assert np.count_nonzero(angles[np.array([i < 6 and j < 6 for i in range(16) for j in range(i + 1, 16)])]) > 0
    assert np.all(angles[np.array([not (i < 6 and j < 6) for i in range(16) for j in range(i + 1, 16)])] == 0)
    assert n_real == 15


def test_point_on_atom_gives_zero_not_nan():
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=4)
    params = DescriptorParams(species=(13,), m=(10,), k=(4,), r_cut=5.0)
    f = compute(atoms.positions, atoms.numbers, atoms.cell[:], atoms.positions[:5], params)
    assert np.isfinite(f).all()
    assert (f[:, 0] == 0).all()
    assert (f[:, 10:13] == 0).all()  # u_1 = 0, so u_1·u_j = 0


@pytest.fixture(params=[False, True], ids=["plain", "cross"])
def alloy(request):
    atoms = structure.rattle(structure.diamond_sige((2, 1, 1), x=0.4, seed=5), 0.07, seed=6)
    params = DescriptorParams(species=(14, 32), m=(20, 16), k=(5, 5), r_cut=5.0, cross=request.param)
    return atoms, params


def test_rotation_invariance(alloy, rng):
    atoms, params = alloy
    points = rng.uniform(0.0, 6.0, size=(50, 3))
    ref = compute(atoms.positions, atoms.numbers, atoms.cell[:], points, params)
    R = Rotation.random(random_state=7).as_matrix()
    got = compute(atoms.positions @ R.T, atoms.numbers, atoms.cell[:] @ R.T, points @ R.T, params)
    np.testing.assert_allclose(got, ref, atol=3e-6)


def test_translation_invariance(alloy, rng):
    atoms, params = alloy
    points = rng.uniform(0.0, 6.0, size=(50, 3))
    ref = compute(atoms.positions, atoms.numbers, atoms.cell[:], points, params)
    t = np.array([13.7, -4.2, 0.9])
    got = compute(atoms.positions + t, atoms.numbers, atoms.cell[:], points + t, params)
    np.testing.assert_allclose(got, ref, atol=3e-6)


def test_permutation_and_image_invariance(alloy, rng):
    atoms, params = alloy
    points = rng.uniform(0.0, 6.0, size=(50, 3))
    ref = compute(atoms.positions, atoms.numbers, atoms.cell[:], points, params)
    perm = rng.permutation(len(atoms))
    shifts = rng.integers(-2, 3, size=(len(atoms), 3)) @ atoms.cell[:]
    got = compute(atoms.positions[perm] + shifts[perm], atoms.numbers[perm], atoms.cell[:], points, params)
    np.testing.assert_allclose(got, ref, atol=3e-6)
    # A point moved by a lattice vector sees the same environment.
    got2 = compute(atoms.positions, atoms.numbers, atoms.cell[:], points + atoms.cell[1] - 2 * atoms.cell[2], params)
    np.testing.assert_allclose(got2, ref, atol=3e-6)


def test_feature_layout_names():
    params = DescriptorParams(species=(14, 32), m=(3, 2), k=(3, 0), r_cut=4.0)
    assert params.n_features == 3 + 3 + 2
    assert params.feature_names() == ["Si:d1", "Si:d2", "Si:d3", "Si:u1.u2", "Si:u1.u3", "Si:u2.u3", "Ge:d1", "Ge:d2"]
    assert params.radial_mask().tolist() == [True] * 3 + [False] * 3 + [True] * 2
    assert DescriptorParams.from_dict(params.to_dict()) == params
    assert params.cross is False and params.cross_pairs == () and params.cross_sizes == ()


def test_cross_layout_names_and_round_trip():
    params = DescriptorParams(species=(14, 32), m=(3, 2), k=(3, 2), r_cut=4.0, cross=True)
    assert params.block_sizes == (6, 3)
    assert params.cross_pairs == ((0, 1),) and params.cross_sizes == (6,)
    assert params.cross_offset == 9 and params.cross_offsets == (9,)
    assert params.n_features == 15
    names = params.feature_names()
    assert len(names) == params.n_features
    assert names[9:] == ["Si.Ge:u1.u1", "Si.Ge:u1.u2", "Si.Ge:u2.u1", "Si.Ge:u2.u2", "Si.Ge:u3.u1", "Si.Ge:u3.u2"]
    assert params.radial_mask().tolist() == [True] * 3 + [False] * 3 + [True] * 2 + [False] + [False] * 6
    d = params.to_dict()
    assert d["cross"] is True
    assert DescriptorParams.from_dict(d) == params
    import json

    assert DescriptorParams.from_dict(json.loads(json.dumps(d))) == params
    # Model files written before the key existed: no cross block.
    old = {key: v for key, v in d.items() if key != "cross"}
    assert DescriptorParams.from_dict(old) == DescriptorParams(species=(14, 32), m=(3, 2), k=(3, 2), r_cut=4.0)
    assert DescriptorParams.from_dict(old).cross is False


def test_cross_with_one_species_adds_nothing(rng):
    from bigdens.descriptors import default_params

    params = DescriptorParams(species=(13,), m=(10,), k=(4,), r_cut=5.0, cross=True)
    plain = DescriptorParams(species=(13,), m=(10,), k=(4,), r_cut=5.0)
    assert params.cross_pairs == () and params.n_features == plain.n_features == 16
    assert params.feature_names() == plain.feature_names()
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=4)
    points = rng.uniform(0.0, 8.0, size=(20, 3))
    np.testing.assert_array_equal(compute(atoms.positions, atoms.numbers, atoms.cell[:], points, params),
                                  compute(atoms.positions, atoms.numbers, atoms.cell[:], points, plain))
    assert default_params([13]).cross is True and default_params([13]).n_features == 32 + 15
    two = default_params([32, 14, 14])
    assert two.cross and two.species == (14, 32) and two.n_features == 2 * (32 + 15) + 36


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, 1.0])
def test_bad_cross_value(bad):
    with pytest.raises(InputError, match="cross must be True or False, got " + re.escape(repr(bad))):
        DescriptorParams(species=(14, 32), m=(3, 2), k=(3, 2), r_cut=4.0, cross=bad)
    with pytest.raises(InputError, match="cross must be True or False"):
        DescriptorParams.from_dict({"species": [14], "m": [3], "k": [2], "r_cut": 4.0, "cross": bad})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(species=(13,), m=(10,), k=(4,), r_cut=0.0), "r_cut must be a positive"),
        (dict(species=(13,), m=(10,), k=(4,), r_cut=float("nan")), "r_cut must be a positive"),
        (dict(species=(13,), m=(M_MAX + 1,), k=(4,), r_cut=5.0), "radial count M"),
        (dict(species=(13,), m=(10,), k=(K_MAX + 1,), r_cut=5.0), "angular count K"),
        (dict(species=(13, 13), m=(1, 1), k=(0, 0), r_cut=5.0), "distinct atomic numbers"),
        (dict(species=(13,), m=(1, 2), k=(0,), r_cut=5.0), "one entry per species"),
    ],
)
def test_bad_params(kwargs, match):
    with pytest.raises(InputError, match=match):
        DescriptorParams(**kwargs)


def test_bad_structures():
    params = DescriptorParams(species=(13,), m=(4,), k=(2,), r_cut=4.0)
    atoms = structure.fcc_al((1, 1, 1))
    pos = atoms.positions.copy()
    pos[1, 2] = np.nan
    with pytest.raises(InputError, match="finite"):
        compute(pos, atoms.numbers, atoms.cell[:], [[0, 0, 0]], params)
    with pytest.raises(InputError, match=r"species \['Si'\].*known: \['Al'\]"):
        compute(atoms.positions, [13, 13, 14, 13], atoms.cell[:], [[0, 0, 0]], params)
    with pytest.raises(InputError, match="empty"):
        compute(np.zeros((0, 3)), [], atoms.cell[:], [[0, 0, 0]], params)
    flat = atoms.cell[:].copy()
    flat[2] = flat[0] + flat[1]
    with pytest.raises(InputError, match="cell is singular"):
        compute(atoms.positions, atoms.numbers, flat, [[0, 0, 0]], params)


def test_atom_bins_group_every_atom_into_its_bin(rng):
    pos = rng.uniform(-3.0, 9.0, size=(500, 3))
    from bigdens.descriptors import atom_bins

    order, starts, origin, dims = atom_bins(pos, 2.0)
    assert sorted(order.tolist()) == list(range(500)) and starts[-1] == 500 and len(starts) == np.prod(dims) + 1
    for b in range(int(np.prod(dims))):
        members = order[starts[b]:starts[b + 1]]
        idx = np.floor((pos[members] - origin) / 2.0).astype(int)
        assert all(((i[0] * dims[1] + i[1]) * dims[2] + i[2]) == b for i in idx)
        assert list(members) == sorted(members)  # stable: the kernel's tie order stays the atoms' order


def test_coarse_grid_large_block_equals_brute_force(rng):
    # A block much larger than r_cut at a coarse spacing: the binned candidate search must find every neighbour.
    from bigdens.blocks import block_halo, make_blocks
    from bigdens.celllist import build_cell_list
    from bigdens.descriptors import compute_block
    from bigdens.grid import make_grid

    atoms = structure.rattle(structure.fcc_al((5, 5, 5)), 0.1, seed=3)
    params = DescriptorParams(species=(13,), m=(12,), k=(4,), r_cut=5.0)
    grid = make_grid(atoms.cell[:], spacing=0.9)
    block = make_blocks(grid.shape, (16, 16, 16))[0]
    halo = block_halo(build_cell_list(atoms.cell[:], atoms.positions), atoms.numbers, grid, block, params.r_cut)
    got = compute_block(halo, grid, block, params).reshape(-1, params.n_features)
    pts = grid.points(block.start, block.stop)
    pick = rng.choice(len(pts), size=40, replace=False)
    want = np.array([brute(atoms.positions, atoms.numbers, atoms.cell[:], x, params.species, params.m, params.k,
                           params.r_cut) for x in pts[pick]])
    np.testing.assert_allclose(got[pick], want, atol=3e-5)


@pytest.mark.parametrize("spacing", [0.2, 0.8, 1.5])
def test_tiles_are_compact_and_coarse_grids_share_candidate_searches(spacing):
    from bigdens.descriptors import TILE_EDGE_MAX, TILE_MAX_POINTS, tile_order

    idx = np.stack(np.meshgrid(*[np.arange(n) for n in (20, 17, 23)], indexing="ij"), -1).reshape(-1, 3)
    pts = idx * spacing + np.array([0.3, -1.0, 2.0])
    order, starts = tile_order(pts)
    assert sorted(order.tolist()) == list(range(len(pts))) and starts[0] == 0 and starts[-1] == len(pts)
    sizes = np.diff(starts)
    assert sizes.min() >= 1 and sizes.max() <= TILE_MAX_POINTS
    for a, b in zip(starts[:-1], starts[1:]):
        tile = pts[order[a:b]]
        assert (np.ptp(tile, axis=0) <= TILE_EDGE_MAX + 1e-9).all()
    # Two spacings per tile edge: ~8 points per search on coarse grids, not one.
    assert sizes.mean() >= 4
