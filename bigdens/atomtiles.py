"""Atoms sorted by the grid block they lie in, so that a worker reads only its blocks' neighbourhoods.

A prediction's workers must not hold the whole structure: at 10⁷ atoms that is
hundreds of MB per worker, and it grows with the system.  Instead the store
keeps a second copy of the atoms sorted by *tile*, where the tiles are the
run's blocks of grid points (DESIGN §3) seen as boxes of fractional
coordinates: an atom at fractional coordinates f (wrapped into [0, 1)) lies in
the tile of block ``floor(f_i · n_i / b_i)`` along each axis, n the grid
shape and b the block shape.  Tiles are numbered like the blocks (C order), so
``starts[t] : starts[t + 1]`` are tile t's rows, and the tiles of a run of
consecutive blocks along the last axis are one contiguous slice.

:func:`tile_order` computes the sort (the driver, once, when the store is
created); :class:`TiledAtoms` answers a worker's question "every atom image
within r of this box" by reading only the tiles the box overlaps (with their
periodic images), so its memory depends on the block and the cutoff, not on
the number of atoms.  :class:`bigdens.celllist.CellList` answers the same
question over atoms held in memory; :func:`bigdens.blocks.block_halo` takes
either.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .celllist import ROWS, fractional, plane_normals_norm

#: Tiles a worker keeps decoded between queries (a block's halo and its Voronoi assignment read
#: the same tiles; 27 tiles of a 64³ block of Al are about 7 MB).
CACHED_TILES = 64


def tile_counts(grid_shape, block_shape) -> np.ndarray:
    """Number of tiles (blocks) along each axis, shape (3,), int64."""
    n = np.asarray(grid_shape, dtype=np.int64)
    b = np.asarray(block_shape, dtype=np.int64)
    return -(-n // b)


def tile_of(frac: np.ndarray, grid_shape, block_shape) -> np.ndarray:
    """Flat tile index (C order, as the blocks are numbered) of atoms at wrapped fractional coordinates.

    Parameters
    ----------
    frac : ndarray, shape (n_atoms, 3), float64
        Fractional coordinates in [0, 1) (:func:`bigdens.celllist.fractional`).
    grid_shape, block_shape : tuple of 3 int
        The grid and its blocks, points.

    Returns
    -------
    ndarray, shape (n_atoms,), int64
    """
    n = np.asarray(grid_shape, dtype=np.int64)
    b = np.asarray(block_shape, dtype=np.int64)
    counts = tile_counts(grid_shape, block_shape)
    # The grid point below the atom, then its block (floor(floor(x) / b) == floor(x / b) for integer b).
    t = np.minimum(np.floor(frac * n).astype(np.int64) // b, counts - 1)
    return (t[:, 0] * counts[1] + t[:, 1]) * counts[2] + t[:, 2]


def tile_order(cell: np.ndarray, positions: np.ndarray, grid_shape, block_shape) -> tuple[np.ndarray, np.ndarray]:
    """The order that sorts atoms by tile, and each tile's first row in that order.

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    positions : array_like, shape (n_atoms, 3)
        Cartesian positions, Å.
    grid_shape, block_shape : tuple of 3 int
        The run's grid and block shape, points.

    Returns
    -------
    order : ndarray, shape (n_atoms,), int64
        Atom indices sorted by tile (stable: by index within a tile).
    starts : ndarray, shape (n_tiles + 1,), int64
        Tile t holds ``order[starts[t] : starts[t + 1]]``.

    Memory: 16 bytes per atom (the tile numbers and the order) beyond the
    inputs; the fractional coordinates are computed in passes of
    :data:`bigdens.celllist.ROWS` atoms.
    """
    positions = np.asarray(positions)
    n_atoms = len(positions)
    tiles = np.empty(n_atoms, dtype=np.int64)
    for s in range(0, n_atoms, ROWS):
        tiles[s : s + ROWS] = tile_of(fractional(cell, positions[s : s + ROWS]), grid_shape, block_shape)
    order = np.argsort(tiles, kind="stable").astype(np.int64, copy=False)
    counts = np.bincount(tiles, minlength=int(np.prod(tile_counts(grid_shape, block_shape))))
    del tiles
    starts = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return order, starts


def _axis_ranges(lo: float, hi: float, n: int, b: int, count: int) -> list[tuple[int, int, int]]:
    # (shift, first tile, last tile) covering [lo, hi] along one axis: the box in the image `shift`
    # of the cell is [lo - shift, hi - shift] ∩ [0, 1).
    out = []
    for shift in range(math.floor(lo), math.floor(hi) + 1):
        a = max(lo - shift, 0.0)
        z = min(hi - shift, 1.0)
        if z < a:
            continue
        first = min(int(math.floor(a * n)) // b, count - 1)
        last = min(int(math.floor(z * n)) // b, count - 1)
        out.append((shift, first, last))
    return out


class TiledAtoms:
    """Atom images near a box, read tile by tile from arrays sorted by :func:`tile_order`.

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    grid_shape, block_shape : tuple of 3 int
        The grid and block shape the tiles were made with.
    frac : array-like, shape (n_atoms, 3), float64
        Wrapped fractional coordinates in tile order (a zarr array: read by slices).
    numbers : array-like, shape (n_atoms,), integer
        Atomic numbers in tile order.
    atom : array-like, shape (n_atoms,), int64
        Each row's index in the structure.
    starts : ndarray, shape (n_tiles + 1,), int64
        Tile boundaries (held in memory: 8 bytes per block).
    """

    def __init__(self, *, cell, grid_shape, block_shape, frac, numbers, atom, starts):
        self.cell = np.ascontiguousarray(cell, dtype=np.float64)
        self.grid_shape = tuple(int(v) for v in grid_shape)
        self.block_shape = tuple(int(v) for v in block_shape)
        self.counts = tile_counts(self.grid_shape, self.block_shape)
        self._frac, self._numbers, self._atom = frac, numbers, atom
        self.starts = np.asarray(starts, dtype=np.int64)
        if self.starts.shape != (int(np.prod(self.counts)) + 1,):
            raise ValueError(f"{self.starts.shape[0] - 1} tiles for a grid of {int(np.prod(self.counts))} blocks")
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self.rows_read = 0

    @property
    def n_atoms(self) -> int:
        return int(self.starts[-1])

    def _read(self, first: int, last: int) -> None:
        # Tiles first..last (consecutive flat numbers) in one slice of each array, into the cache.
        a, z = int(self.starts[first]), int(self.starts[last + 1])
        frac = np.asarray(self._frac[a:z], dtype=np.float64)
        numbers = np.asarray(self._numbers[a:z]).astype(np.int64)
        atom = np.asarray(self._atom[a:z], dtype=np.int64)
        self.rows_read += z - a
        for t in range(first, last + 1):
            s, e = int(self.starts[t]) - a, int(self.starts[t + 1]) - a
            self._cache[t] = (frac[s:e], numbers[s:e], atom[s:e])
            self._cache.move_to_end(t)

    def tiles(self, wanted: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(frac, numbers, atom index) of each wanted tile, reading the missing ones in contiguous runs."""
        missing = sorted(t for t in set(wanted) if t not in self._cache)
        run_start = None
        for i, t in enumerate(missing):
            if run_start is None:
                run_start = t
            if i + 1 == len(missing) or missing[i + 1] != t + 1:
                self._read(run_start, t)
                run_start = None
        out = {}
        for t in wanted:
            out[t] = self._cache[t]
            self._cache.move_to_end(t)
        while len(self._cache) > max(CACHED_TILES, len(out)):
            self._cache.popitem(last=False)
        return out

    def images(self, frac_lo, frac_hi, radius: float, numbers=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every atom image within ``radius`` Å of the fractional box ``[frac_lo, frac_hi]`` (a superset).

        Same contract as :meth:`bigdens.celllist.CellList.images` (``numbers`` is ignored: the tiles carry
        their own).

        Returns
        -------
        frac : ndarray, shape (m, 3), float64
            Fractional coordinates of the images (may lie outside [0, 1)).
        numbers : ndarray, shape (m,), int64
        indices : ndarray, shape (m,), int64
            Each image's atom index in the structure.
        """
        pad = float(radius) * plane_normals_norm(self.cell)
        lo = np.asarray(frac_lo, dtype=np.float64) - pad
        hi = np.asarray(frac_hi, dtype=np.float64) + pad
        axes = [_axis_ranges(lo[d], hi[d], self.grid_shape[d], self.block_shape[d], int(self.counts[d]))
                for d in range(3)]
        wanted = sorted({(tx * int(self.counts[1]) + ty) * int(self.counts[2]) + tz
                         for _, x0, x1 in axes[0] for tx in range(x0, x1 + 1)
                         for _, y0, y1 in axes[1] for ty in range(y0, y1 + 1)
                         for _, z0, z1 in axes[2] for tz in range(z0, z1 + 1)})
        tiles = self.tiles(wanted)
        parts_f, parts_n, parts_i = [], [], []
        for sx, x0, x1 in axes[0]:
            for sy, y0, y1 in axes[1]:
                for sz, z0, z1 in axes[2]:
                    shift = np.array([sx, sy, sz], dtype=np.float64)
                    for tx in range(x0, x1 + 1):
                        for ty in range(y0, y1 + 1):
                            first = (tx * int(self.counts[1]) + ty) * int(self.counts[2])
                            for tz in range(z0, z1 + 1):
                                f, z, a = tiles[first + tz]
                                g = f + shift
                                inside = np.all((g >= lo) & (g <= hi), axis=1)
                                if inside.any():
                                    parts_f.append(g[inside])
                                    parts_n.append(z[inside])
                                    parts_i.append(a[inside])
        if not parts_f:
            return np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(parts_f), np.concatenate(parts_n), np.concatenate(parts_i)


__all__ = ["CACHED_TILES", "TiledAtoms", "tile_counts", "tile_of", "tile_order"]
