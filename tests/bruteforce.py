"""Independent numpy reference implementations used by the tests (no numba, no cell list)."""

from __future__ import annotations

import itertools
import math

import numpy as np


def all_images_within(positions, cell, point, r_cut):
    """Displacements (Å) from ``point`` to every periodic image within ``r_cut``, and atom indices."""
    recip = np.linalg.inv(cell).T
    reach = [math.ceil(r_cut * np.linalg.norm(recip[i])) + 1 for i in range(3)]
    shifts = np.array(list(itertools.product(*[range(-r, r + 1) for r in reach])), dtype=float)
    # Work from the point's own cell so the shift range suffices wherever the point is.
    frac_p = np.linalg.solve(cell.T, point)
    base = np.floor(frac_p)
    frac = np.linalg.solve(cell.T, positions.T).T
    frac -= np.floor(frac)
    img = (frac[None, :, :] + shifts[:, None, :] + base).reshape(-1, 3) @ cell
    idx = np.tile(np.arange(len(positions)), len(shifts))
    disp = img - point
    d = np.linalg.norm(disp, axis=1)
    sel = d <= r_cut
    return disp[sel], d[sel], idx[sel]


def descriptor(positions, numbers, cell, point, species, m, k, r_cut):
    """Brute-force descriptor of one point, float64 (DESIGN §2)."""
    disp, d, idx = all_images_within(np.asarray(positions, float), np.asarray(cell, float), np.asarray(point, float), r_cut)
    feats = []
    for z, ms, ks in zip(species, m, k):
        sel = np.asarray(numbers)[idx] == z
        ds, vs = d[sel], disp[sel]
        order = np.argsort(ds, kind="stable")
        ds, vs = ds[order], vs[order]
        radial = np.full(ms, r_cut)
        radial[: min(ms, len(ds))] = ds[:ms]
        radial[radial < 1e-6] = 0.0
        u = np.zeros((ks, 3))
        for i in range(min(ks, len(ds))):
            u[i] = 0.0 if ds[i] < 1e-6 else vs[i] / ds[i]
        ang = [u[i] @ u[j] for i in range(ks) for j in range(i + 1, ks)]
        feats += list(radial) + ang
    return np.array(feats)


def voronoi_owner(points: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest atom of each point by brute force over the 125 periodic images within two cells (O(n·N)).

    Returns the atom index (n,) and the distance (n,), Å.
    """
    cell = np.asarray(cell, dtype=np.float64)
    frac = np.linalg.solve(cell.T, np.asarray(positions, dtype=np.float64).T).T
    frac -= np.floor(frac)
    pos = frac @ cell
    span = 2
    shifts = np.array([(i, j, k) for i in range(-span, span + 1) for j in range(-span, span + 1)
                       for k in range(-span, span + 1)], dtype=np.float64) @ cell
    best = np.full(len(points), np.inf)
    owner = np.full(len(points), -1, dtype=np.int64)
    for a, p in enumerate(pos):
        d = np.min(np.linalg.norm(points[:, None, :] - (p + shifts)[None], axis=2), axis=1)
        better = d < best
        best[better] = d[better]
        owner[better] = a
    return owner, best
