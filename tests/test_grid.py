"""Grids: spacing rule, point positions, volume element."""

from __future__ import annotations

import numpy as np
import pytest

from bigdens.errors import InputError
from bigdens.grid import make_grid, shape_from_spacing

TRICLINIC = np.array([[5.0, 0.0, 0.0], [1.2, 4.6, 0.0], [-0.8, 0.9, 6.1]])


def test_spacing_picks_smallest_shape():
    h = 0.23
    shape = shape_from_spacing(TRICLINIC, h)
    lengths = np.linalg.norm(TRICLINIC, axis=1)
    for n, length in zip(shape, lengths):
        assert length / n <= h < length / (n - 1)
    assert shape_from_spacing(np.eye(3) * 8.1, 0.2025) == (40, 40, 40)  # no round-off growth


def test_points_follow_design_convention():
    g = make_grid(TRICLINIC, shape=(5, 6, 7))
    assert np.allclose(g.cartesian(0, 0, 0), 0)
    i, j, k = 2, 5, 3
    assert np.allclose(g.cartesian(i, j, k), i / 5 * TRICLINIC[0] + j / 6 * TRICLINIC[1] + k / 7 * TRICLINIC[2])
    pts = g.points((1, 2, 3), (3, 4, 5))
    assert pts.shape == (8, 3)
    assert np.allclose(pts[1], g.cartesian(1, 2, 4))  # C order: last index fastest
    assert np.allclose(g.to_frac(pts[1]), [1 / 5, 2 / 6, 4 / 7])
    assert np.isclose(g.dv * g.n_points, abs(np.linalg.det(TRICLINIC)))
    x, y, z = g.axis_coords()
    assert np.isclose(x[1], 5.0 / 5) and np.isclose(y[1], np.linalg.norm(TRICLINIC[1]) / 6) and len(z) == 7


def test_grid_bad_input():
    with pytest.raises(InputError, match="exactly one"):
        make_grid(TRICLINIC)
    with pytest.raises(InputError, match="exactly one"):
        make_grid(TRICLINIC, spacing=0.2, shape=(2, 2, 2))
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(InputError, match="positive number of Å"):
            make_grid(TRICLINIC, spacing=bad)
    with pytest.raises(InputError, match="three positive integers"):
        make_grid(TRICLINIC, shape=(4, 0, 4))
    with pytest.raises(InputError, match="non-singular"):
        make_grid(np.zeros((3, 3)), shape=(4, 4, 4))
