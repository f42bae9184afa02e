"""Numba kernels of :mod:`bigdens.celllist` (pure functions over arrays)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _bin_range(lo, hi, nb):
    # Bins (possibly outside 0..nb-1, meaning periodic images) overlapping [lo, hi].
    return int(np.floor(lo * nb)), int(np.floor(hi * nb))


@njit(cache=True)
def _scan(frac, nbins, order, starts, lo, hi, indices, shifts, fill):
    # Visit every bin image overlapping [lo, hi]; count (and, if fill, store) the hits.
    a0, a1 = _bin_range(lo[0], hi[0], nbins[0])
    b0, b1 = _bin_range(lo[1], hi[1], nbins[1])
    c0, c1 = _bin_range(lo[2], hi[2], nbins[2])
    m = 0
    for a in range(a0, a1 + 1):
        sa = a // nbins[0]
        wa = a - sa * nbins[0]
        for b in range(b0, b1 + 1):
            sb = b // nbins[1]
            wb = b - sb * nbins[1]
            for c in range(c0, c1 + 1):
                sc = c // nbins[2]
                wc = c - sc * nbins[2]
                flat = (wa * nbins[1] + wb) * nbins[2] + wc
                for p in range(starts[flat], starts[flat + 1]):
                    i = order[p]
                    f0 = frac[i, 0] + sa
                    f1 = frac[i, 1] + sb
                    f2 = frac[i, 2] + sc
                    if lo[0] <= f0 <= hi[0] and lo[1] <= f1 <= hi[1] and lo[2] <= f2 <= hi[2]:
                        if fill:
                            indices[m] = i
                            shifts[m, 0] = sa
                            shifts[m, 1] = sb
                            shifts[m, 2] = sc
                        m += 1
    return m


@njit(cache=True)
def query_box(frac, nbins, order, starts, lo, hi):
    """Indices and integer shifts of the atom images inside the fractional box [lo, hi]."""
    # Two passes, count then fill, so memory is exactly the result size.
    indices = np.empty(0, dtype=np.int64)
    shifts = np.empty((0, 3), dtype=np.int64)
    count = _scan(frac, nbins, order, starts, lo, hi, indices, shifts, False)
    indices = np.empty(count, dtype=np.int64)
    shifts = np.empty((count, 3), dtype=np.int64)
    _scan(frac, nbins, order, starts, lo, hi, indices, shifts, True)
    return indices, shifts


@njit(cache=True, inline="always")
def _displacement(cell, frac, i, j, shift):
    """Cartesian displacement (Å) from atom i to the image of atom j shifted by ``shift`` cells."""
    df0 = frac[j, 0] + shift[0] - frac[i, 0]
    df1 = frac[j, 1] + shift[1] - frac[i, 1]
    df2 = frac[j, 2] + shift[2] - frac[i, 2]
    return (df0 * cell[0, 0] + df1 * cell[1, 0] + df2 * cell[2, 0],
            df0 * cell[0, 1] + df1 * cell[1, 1] + df2 * cell[2, 1],
            df0 * cell[0, 2] + df1 * cell[1, 2] + df2 * cell[2, 2])


@njit(cache=True, parallel=True)
def close_pairs(cell, frac, nbins, order, starts, dmin, max_report, i0, i1):
    """Up to ``max_report`` rows (i, j, d) of atom pairs (any images) closer than dmin, for atoms i0 <= i < i1."""
    m = i1 - i0
    recip = np.linalg.inv(cell).T
    pad = np.empty(3)
    for d in range(3):
        pad[d] = dmin * np.sqrt(recip[d, 0] ** 2 + recip[d, 1] ** 2 + recip[d, 2] ** 2)
    found = np.full((m,), -1, dtype=np.int64)
    dist = np.zeros(m)
    for q in prange(m):
        i = i0 + q
        lo = frac[i] - pad
        hi = frac[i] + pad
        idx, sh = query_box(frac, nbins, order, starts, lo, hi)
        for p in range(idx.shape[0]):
            j = idx[p]
            if j < i:
                continue
            if j == i and sh[p, 0] == 0 and sh[p, 1] == 0 and sh[p, 2] == 0:
                continue
            x, y, z = _displacement(cell, frac, i, j, sh[p])
            r = np.sqrt(x * x + y * y + z * z)
            if r < dmin:
                found[q] = j
                dist[q] = r
                break
    out = np.empty((max_report, 3))
    k = 0
    for q in range(m):
        if found[q] >= 0 and k < max_report:
            out[k, 0] = i0 + q
            out[k, 1] = found[q]
            out[k, 2] = dist[q]
            k += 1
    return out[:k]


@njit(cache=True, parallel=True)
def nearest_images(cell, frac, nbins, order, starts, atoms, radius):
    """For each atom of ``atoms``: the distance (Å) to its nearest other atom image within ``radius`` and
    that atom's index (inf and -1 when none is within reach).  An atom's own images at non-zero shifts count."""
    m = atoms.shape[0]
    recip = np.linalg.inv(cell).T
    pad = np.empty(3)
    for d in range(3):
        pad[d] = radius * np.sqrt(recip[d, 0] ** 2 + recip[d, 1] ** 2 + recip[d, 2] ** 2)
    best = np.full((m,), np.inf)
    who = np.full((m,), -1, dtype=np.int64)
    r2max = radius * radius
    for q in prange(m):
        i = atoms[q]
        lo = frac[i] - pad
        hi = frac[i] + pad
        idx, sh = query_box(frac, nbins, order, starts, lo, hi)
        b = np.inf
        w = -1
        for p in range(idx.shape[0]):
            j = idx[p]
            if j == i and sh[p, 0] == 0 and sh[p, 1] == 0 and sh[p, 2] == 0:
                continue
            x, y, z = _displacement(cell, frac, i, j, sh[p])
            r2 = x * x + y * y + z * z
            if r2 <= r2max and (r2 < b or (r2 == b and j < w)):
                b = r2
                w = j
        if w >= 0:
            best[q] = np.sqrt(b)
            who[q] = w
    return best, who
