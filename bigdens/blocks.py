"""Cutting a grid into chunk-aligned blocks, and the halo atoms of each block.

A block is a box of grid indices ``[start, stop)``.  Its halo is every
periodic image of every atom within the cutoff of any of its points, found
through the structure's :class:`~bigdens.celllist.CellList` (built once and
shared): the block's fractional box is widened along each lattice direction
by ``r_cut`` over that direction's lattice-plane spacing, which contains every
point within ``r_cut`` of the block for any triclinic cell.  The halo may hold
a few atoms slightly beyond ``r_cut`` (the corners of the widened box); the
descriptor kernel applies the exact cutoff.  Cells thinner than ``2·r_cut``
are exact: one atom then appears through several images.

Memory per block depends on the block size and the cutoff only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .celllist import CellList
from .errors import InputError
from .grid import Grid


@dataclass(frozen=True)
class Block:
    """A box of grid points ``[start, stop)`` (indices along a1, a2, a3)."""

    index: int
    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def n_points(self) -> int:
        s = self.shape
        return s[0] * s[1] * s[2]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Slices selecting this block from a full-grid array."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))


@dataclass(frozen=True)
class Halo:
    """Atoms around one block, periodic images resolved.

    Attributes
    ----------
    positions : ndarray, shape (m, 3), float64
        Cartesian positions of the atom images, Å.
    numbers : ndarray, shape (m,), int64
        Atomic numbers.
    indices : ndarray, shape (m,), int64
        Index of each image's atom in the original structure.
    """

    positions: np.ndarray
    numbers: np.ndarray
    indices: np.ndarray


def block_shape_for(grid_shape, block) -> tuple[int, int, int]:
    """Validated block edge lengths (grid points), clipped to the grid.

    ``block`` is an int (same along all axes) or three ints.
    """
    b = tuple(int(v) for v in np.broadcast_to(np.asarray(block), (3,)))
    if min(b) < 1:
        raise InputError(f"block edge must be a positive number of grid points, got {block!r}")
    return tuple(min(v, n) for v, n in zip(b, grid_shape))


def make_blocks(grid_shape, block) -> list[Block]:
    """Cut a grid of ``grid_shape`` into boxes of ``block`` points (the last ones smaller).

    Blocks are numbered in C order of their position; block edges are
    multiples of ``block``, so blocks align to chunks of that shape.
    """
    b = block_shape_for(grid_shape, block)
    starts = [range(0, n, e) for n, e in zip(grid_shape, b)]
    out = []
    for index, (i, j, k) in enumerate(itertools.product(*starts)):
        start = (i, j, k)
        stop = tuple(min(s + e, n) for s, e, n in zip(start, b, grid_shape))
        out.append(Block(index=index, start=start, stop=stop))
    return out


def block_halo(cell_list: CellList, numbers: np.ndarray, grid: Grid, block: Block, r_cut: float) -> Halo:
    """Atom images within ``r_cut`` Å of the points of ``block``.

    Parameters
    ----------
    cell_list
        Cell list of the whole structure (built once, shared by all blocks).
    numbers : ndarray, shape (n_atoms,)
        Atomic numbers of the structure.
    grid
        The grid the block belongs to (same cell as the cell list).
    block
        The block.
    r_cut
        Cutoff radius, Å.
    """
    n = np.array(grid.shape, dtype=np.float64)
    lo = np.array(block.start) / n
    hi = (np.array(block.stop) - 1) / n
    idx, shifts = cell_list.query_sphere_box(lo, hi, r_cut)
    frac = cell_list.frac[idx] + shifts
    return Halo(positions=frac @ cell_list.cell, numbers=np.asarray(numbers)[idx], indices=idx)
