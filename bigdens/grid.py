"""Uniform real-space grids over periodic cells.

A grid of shape ``(n1, n2, n3)`` over a cell with lattice vectors ``a1, a2,
a3`` (rows, Å) has point ``(i, j, k)`` at fractional position
``(i/n1, j/n2, k/n3)``, i.e. Cartesian ``r = (i/n1)·a1 + (j/n2)·a2 + (k/n3)·a3``.
Point (0, 0, 0) sits on the cell origin: the convention of GPAW's periodic
grids and of Gaussian cube files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Grid:
    """A periodic grid over a cell.

    Attributes
    ----------
    cell : ndarray, shape (3, 3), float64
        Lattice vectors as rows, Å.
    shape : tuple of 3 int
        Number of points along each lattice vector.
    """

    cell: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self):
        cell = np.array(self.cell, dtype=np.float64)
        if cell.shape != (3, 3) or not np.isfinite(cell).all() or abs(np.linalg.det(cell)) < 1e-9:
            raise InputError(f"a grid needs a non-singular 3×3 cell (Å), got {np.asarray(self.cell).tolist()!r}")
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"grid shape must be three positive integers, got {tuple(self.shape)!r}")
        cell.setflags(write=False)
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "shape", shape)

    @property
    def n_points(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def volume(self) -> float:
        """Cell volume, Å³."""
        return float(abs(np.linalg.det(self.cell)))

    @property
    def dv(self) -> float:
        """Volume element per grid point, Å³ (``∫ρ dV ≈ Σρ · dv``)."""
        return self.volume / self.n_points

    @property
    def spacing(self) -> np.ndarray:
        """Distance between neighbouring points along each lattice vector, Å, shape (3,)."""
        return np.linalg.norm(self.cell, axis=1) / np.array(self.shape)

    def axis_coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distances along each lattice vector, ``i·|a1|/n1`` etc., Å (float64)."""
        lengths = np.linalg.norm(self.cell, axis=1)
        return tuple(np.arange(n) * (lengths[d] / n) for d, n in enumerate(self.shape))

    def frac(self, i, j, k) -> np.ndarray:
        """Fractional coordinates of points ``(i, j, k)`` (broadcast arrays), shape (..., 3)."""
        i, j, k = np.broadcast_arrays(np.asarray(i), np.asarray(j), np.asarray(k))
        return np.stack([i / self.shape[0], j / self.shape[1], k / self.shape[2]], axis=-1)

    def cartesian(self, i, j, k) -> np.ndarray:
        """Cartesian positions (Å) of points ``(i, j, k)`` (broadcast arrays), shape (..., 3)."""
        return self.frac(i, j, k) @ self.cell

    def points(self, start=(0, 0, 0), stop=None) -> np.ndarray:
        """Cartesian positions (Å) of the box ``[start, stop)`` of grid indices.

        Returns
        -------
        ndarray, shape (n_points, 3), float64
            Points in C order (last index fastest).
        """
        stop = self.shape if stop is None else stop
        ranges = [np.arange(a, b) for a, b in zip(start, stop)]
        i, j, k = np.meshgrid(*ranges, indexing="ij")
        return self.cartesian(i.ravel(), j.ravel(), k.ravel())

    def to_frac(self, positions: np.ndarray) -> np.ndarray:
        """Fractional coordinates of Cartesian ``positions`` (Å), shape (..., 3)."""
        return np.linalg.solve(self.cell.T, np.asarray(positions, dtype=np.float64).reshape(-1, 3).T).T.reshape(
            np.shape(positions)
        )


def shape_from_spacing(cell: np.ndarray, spacing: float) -> tuple[int, int, int]:
    """Smallest grid shape whose spacing along each lattice vector is ≤ ``spacing`` Å."""
    if not (isinstance(spacing, (int, float, np.floating)) and math.isfinite(spacing) and spacing > 0):
        raise InputError(f"grid spacing must be a positive number of Å, got {spacing!r}")
    lengths = np.linalg.norm(np.asarray(cell, dtype=np.float64), axis=1)
    # The tolerance keeps 8.1 Å / 0.2025 Å = 40 from becoming 41 by round-off.
    return tuple(max(1, math.ceil(length / spacing - 1e-9)) for length in lengths)


def make_grid(cell, *, spacing: float | None = None, shape=None) -> Grid:
    """Grid over ``cell`` from exactly one of ``spacing`` (Å) or ``shape``.

    Raises
    ------
    InputError
        If both or neither are given, the spacing is not positive, or the
        shape has a non-positive entry.
    """
    if (spacing is None) == (shape is None):
        raise InputError("give exactly one of spacing (e.g. --spacing 0.2) or shape (e.g. --grid 40 40 40)")
    if shape is None:
        shape = shape_from_spacing(cell, spacing)
    else:
        shape = tuple(shape)
        if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
            raise InputError(f"grid shape must be three positive integers, got {shape!r}")
    return Grid(cell=np.asarray(cell, dtype=np.float64), shape=tuple(int(n) for n in shape))
