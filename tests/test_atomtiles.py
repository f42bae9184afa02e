"""Atoms read tile by tile (bigdens.atomtiles): the same halos as the in-memory cell list and as brute
force, only the tiles a block's neighbourhood overlaps, and damaged tiles are caught."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import bigdens.store as zstore
from bigdens import structure
from bigdens.atomtiles import tile_counts, tile_of, tile_order
from bigdens.blocks import block_halo, make_blocks
from bigdens.celllist import build_cell_list, fractional, plane_normals_norm
from bigdens.charges import assign_block
from bigdens.grid import make_grid

from helpers import thin_al, triclinic_sige
from bruteforce import all_images_within


def _tiled(tmp_path, atoms, grid, block, *, rows=None, monkeypatch=None):
    if rows is not None:
        monkeypatch.setattr(zstore.layout, "TILE_ROWS", rows)  # chunks not aligned with tiles
    root = zarr.open_group(str(tmp_path / "t.zarr"), mode="w", zarr_format=3)
    zstore._create_tiles(root, grid=grid, block=block, positions=[atoms.positions],
                         numbers=np.asarray(atoms.numbers), trajectory=False)
    attrs = {"cell": np.asarray(atoms.cell[:]).tolist(), "grid_shape": list(grid.shape)}
    return zstore.open_tiles(tmp_path / "t.zarr", attrs)


def _cases():
    al = structure.rattle(structure.fcc_al((3, 3, 2)), 0.08, seed=1)
    tri = triclinic_sige((2, 1, 1))
    thin = thin_al()
    return {"cubic": (al, (17, 18, 12), (5, 4, 12)), "triclinic": (tri, (20, 11, 11), (6, 6, 4)),
            "thin": (thin, (7, 10, 10), (3, 4, 10))}


@pytest.mark.parametrize("case", ["cubic", "triclinic", "thin"])
def test_tiled_halo_equals_cell_list_and_brute_force(case, tmp_path, monkeypatch):
    atoms, shape, block = _cases()[case]
    grid = make_grid(atoms.cell[:], shape=shape)
    tiled = _tiled(tmp_path, atoms, grid, block, rows=7, monkeypatch=monkeypatch)
    cl = build_cell_list(atoms.cell[:], atoms.positions)
    assert tiled.n_atoms == len(atoms)
    for b in make_blocks(grid.shape, block):
        for r in (2.5, 6.0):
            got = block_halo(tiled, None, grid, b, r)
            ref = block_halo(cl, atoms.numbers, grid, b, r)
            # Same images in the same (canonical) order, bit for bit.
            np.testing.assert_array_equal(got.indices, ref.indices)
            np.testing.assert_array_equal(got.positions, ref.positions)
            np.testing.assert_array_equal(got.numbers, atoms.numbers[got.indices])
        # Brute force: every image within r of a point of the block is in the halo.
        for x in grid.points(b.start, b.stop)[::5]:
            disp, _, idx = all_images_within(atoms.positions, atoms.cell[:], x, 6.0)
            for i, p in zip(idx, disp + x):
                assert np.linalg.norm(got.positions[got.indices == i] - p, axis=1).min() < 1e-9


def test_tiled_voronoi_owners_equal_the_cell_list(tmp_path):
    atoms, shape, block = _cases()["triclinic"]
    grid = make_grid(atoms.cell[:], shape=shape)
    tiled = _tiled(tmp_path, atoms, grid, block)
    cl = build_cell_list(atoms.cell[:], atoms.positions)
    for b in make_blocks(grid.shape, block):
        got = assign_block(tiled, None, grid, b)
        ref = assign_block(cl, atoms.numbers, grid, b)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_a_block_reads_exactly_the_tiles_its_neighbourhood_overlaps(tmp_path):
    # 2,048 atoms, 64 tiles: a block with a 4 Å halo reads its 27 neighbour tiles' atoms and no others,
    # counted by brute force over the tiles' fractional boxes.
    atoms = structure.rattle(structure.fcc_al((8, 8, 8)), 0.05, seed=5)
    grid = make_grid(atoms.cell[:], shape=(40, 40, 40))
    block = (10, 10, 10)
    tiled = _tiled(tmp_path, atoms, grid, block)
    frac = fractional(atoms.cell[:], atoms.positions)
    tiles = tile_of(frac, grid.shape, block)
    counts = tile_counts(grid.shape, block)
    pad = 4.0 * plane_normals_norm(atoms.cell[:])
    for b in make_blocks(grid.shape, block)[::7]:
        tiled._cache.clear()
        before = tiled.rows_read
        block_halo(tiled, None, grid, b, 4.0)
        lo = np.array(b.start) / 40 - pad
        hi = (np.array(b.stop) - 1) / 40 + pad
        want = set()
        for t in range(int(np.prod(counts))):
            tx, ty, tz = np.unravel_index(t, counts)
            t_lo = np.array([tx, ty, tz]) * 10 / 40
            t_hi = t_lo + 10 / 40
            # The tile (or a periodic image of it) overlaps the padded box along every axis.
            if all(any(t_lo[d] + s <= hi[d] and t_hi[d] + s >= lo[d] for s in (-1, 0, 1)) for d in range(3)):
                want.add(t)
        assert tiled.rows_read - before == int(np.isin(tiles, list(want)).sum())
        assert tiled.rows_read - before < len(atoms)  # not the whole structure


def test_tile_order_sorts_by_tile_and_keeps_every_atom():
    atoms = structure.rattle(structure.diamond_sige((3, 2, 2), x=0.3, seed=1), 0.1, seed=2)
    grid = make_grid(atoms.cell[:], shape=(21, 14, 14))
    order, starts = tile_order(atoms.cell[:], atoms.positions, grid.shape, (8, 8, 8))
    assert sorted(order) == list(range(len(atoms)))
    tiles = tile_of(fractional(atoms.cell[:], atoms.positions[order]), grid.shape, (8, 8, 8))
    assert (np.diff(tiles) >= 0).all() and starts[-1] == len(atoms)
    np.testing.assert_array_equal(np.bincount(tiles, minlength=len(starts) - 1), np.diff(starts))
    # An atom's tile is the block holding the grid point just below it.
    for i in order[::9]:
        f = fractional(atoms.cell[:], atoms.positions[i : i + 1])[0]
        point = np.floor(f * grid.shape).astype(int)
        blk = [b for b in make_blocks(grid.shape, (8, 8, 8))
               if all(a <= p < z for a, p, z in zip(b.start, point, b.stop))]
        assert tile_of(f[None], grid.shape, (8, 8, 8))[0] == blk[0].index
