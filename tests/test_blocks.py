"""Blocks with halos: exact against brute force, for cubic, triclinic and thin cells."""

from __future__ import annotations

import numpy as np
import pytest

from bigdens import structure
from bigdens.blocks import block_halo, make_blocks
from bigdens.celllist import build_cell_list
from bigdens.descriptors import DescriptorParams, compute_block
from bigdens.errors import InputError
from bigdens.grid import make_grid

from helpers import thin_al, triclinic_sige
from bruteforce import all_images_within, descriptor as brute


def test_blocks_tile_the_grid_once():
    shape = (10, 7, 5)
    blocks = make_blocks(shape, (4, 3, 5))
    seen = np.zeros(shape, dtype=int)
    for b in blocks:
        seen[b.slices] += 1
        assert all(s % e == 0 for s, e in zip(b.start, (4, 3, 5)))  # chunk-aligned
    assert (seen == 1).all()
    assert [b.index for b in blocks] == list(range(len(blocks))) and len(blocks) == 3 * 3 * 1
    with pytest.raises(InputError, match="block edge"):
        make_blocks(shape, 0)


def _cases():
    al = structure.rattle(structure.fcc_al((2, 2, 2)), 0.06, seed=1)
    tri = triclinic_sige((1, 1, 1))
    thin = thin_al()
    return {
        "cubic-1species": (al, DescriptorParams(species=(13,), m=(32,), k=(5,), r_cut=5.0)),
        "triclinic-2species": (tri, DescriptorParams(species=(14, 32), m=(24, 24), k=(4, 4), r_cut=5.5)),
        "thin": (thin, DescriptorParams(species=(13,), m=(48,), k=(6,), r_cut=6.0)),
    }


@pytest.mark.parametrize("case", ["cubic-1species", "triclinic-2species", "thin"])
def test_block_halo_descriptors_equal_brute_force(case, rng):
    atoms, params = _cases()[case]
    grid = make_grid(atoms.cell[:], shape=(9, 10, 11))
    cl = build_cell_list(atoms.cell[:], atoms.positions)
    blocks = make_blocks(grid.shape, 4)
    # First, last (periodic boundary) and a random middle block.
    for b in (blocks[0], blocks[-1], blocks[rng.integers(len(blocks))]):
        halo = block_halo(cl, atoms.numbers, grid, b, params.r_cut)
        got = compute_block(halo, grid, b, params).reshape(-1, params.n_features)
        pts = grid.points(b.start, b.stop)
        # The halo holds every image within r_cut of every point, with its original index.
        for x in pts[:: max(1, len(pts) // 8)]:
            _, d, idx = all_images_within(atoms.positions, atoms.cell[:], x, params.r_cut)
            hd = np.linalg.norm(halo.positions - x, axis=1)
            assert np.sum(hd <= params.r_cut - 1e-9) == np.sum(d <= params.r_cut - 1e-9)
            assert sorted(halo.indices[hd <= params.r_cut - 1e-9]) == sorted(idx[d <= params.r_cut - 1e-9])
        ref = np.array([brute(atoms.positions, atoms.numbers, atoms.cell[:], x, params.species, params.m, params.k, params.r_cut) for x in pts])
        np.testing.assert_allclose(got, ref, atol=3e-6)


def test_halo_size_does_not_depend_on_system_size():
    params_rcut = 5.0
    sizes = []
    for n in (4, 8):
        atoms = structure.fcc_al((n, n, n))
        grid = make_grid(atoms.cell[:], spacing=0.25)
        cl = build_cell_list(atoms.cell[:], atoms.positions)
        b = make_blocks(grid.shape, 8)[5]
        sizes.append(len(block_halo(cl, atoms.numbers, grid, b, params_rcut).positions))
    assert sizes[0] == sizes[1]
