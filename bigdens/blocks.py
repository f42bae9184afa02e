"""Cutting a grid into chunk-aligned blocks, and the halo atoms of each block.

A block is a box of grid indices ``[start, stop)``.  Its halo is every
periodic image of every atom within the cutoff of any of its points, found
through an atom source: the structure's :class:`~bigdens.celllist.CellList`
(atoms in memory), or a worker's :class:`~bigdens.atomtiles.TiledAtoms` (atoms
read tile by tile from the store).  The block's fractional box is widened along each lattice direction
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
from typing import TYPE_CHECKING

import numpy as np

from .celllist import CellList
from .errors import InputError
from .grid import Grid

if TYPE_CHECKING:
    from .atomtiles import TiledAtoms


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


def block_halo(cell_list: "CellList | TiledAtoms", numbers: np.ndarray | None, grid: Grid, block: Block,
               r_cut: float) -> Halo:
    """Atom images within ``r_cut`` Å of the points of ``block``, in a canonical order.

    The images are sorted by atom index, then by lattice shift, so the halo,
    and every feature computed from it, does not depend on the atom source or
    its binning.

    Parameters
    ----------
    cell_list
        Atom source: the cell list of the whole structure (built once, shared by all blocks), or a
        :class:`~bigdens.atomtiles.TiledAtoms` reading the store's tiles.
    numbers : ndarray, shape (n_atoms,), or None
        Atomic numbers of the structure (ignored by a ``TiledAtoms``, whose tiles carry them).
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
    frac, z, idx = cell_list.images(lo, hi, r_cut, numbers)
    # Atom index, then the image's integer cell shift (fractional part < 1 ⇒ floor gives the shift).
    shift = np.floor(frac)
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], idx))
    frac = frac[order]
    return Halo(positions=frac @ cell_list.cell, numbers=np.asarray(z)[order], indices=idx[order])
