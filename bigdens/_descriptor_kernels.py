"""Numba kernels of :mod:`bigdens.descriptors` (pure functions over arrays).

The points arrive grouped in small spatial tiles, the atom images sorted into
a uniform grid of bins.  Per tile, the atoms within ``r_cut + tile radius``
of the tile centre are gathered once from the bins that box overlaps (so the
cost does not grow with the halo, e.g. for coarse grids where a tile holds
one point), grouped by species; per point, only those candidates are tested
against the exact cutoff.  Distances are sorted in place (no allocation per point); the K
nearest of a species are then the candidates at or below the K-th smallest
distance, gathered in a second pass and inserted into a K-long list (the GPU
kernel keeps the one-pass insertion, :func:`_keep_k_nearest`).  The sort is a counting sort on
(d/r_cut)^3 followed by an insertion sort: linear in the number of neighbours.
The unit vectors of the K nearest atoms are kept per species, so that after
the species loop the cross-species block (``u_i·u_j`` between the nearest
atoms of two species) reuses them; without pairs that step is skipped.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: Atoms closer than this to a grid point (Å) count as sitting on it: d = 0, u = 0.
ON_ATOM = 1e-6


@njit(cache=True, inline="always")
def _insertion_sort(a, n):
    for i in range(1, n):
        v = a[i]
        j = i
        while j > 0 and a[j - 1] > v:
            a[j] = a[j - 1]
            j -= 1
        a[j] = v


@njit(cache=True, inline="always")
def _sort_d2(d2, n, rc2, tmp, bucket, counts):
    """Sort ``d2[:n]`` (squared distances in [0, rc2]) in place.

    Atoms are uniform in volume, so (d/r_cut)^3 is roughly uniform on [0, 1]:
    a counting sort on it leaves about one value per bucket, and a final
    insertion sort over the nearly sorted array is linear.
    """
    if n <= 24:
        _insertion_sort(d2, n)
        return
    for b in range(n + 1):
        counts[b] = 0
    for i in range(n):
        u = d2[i] / rc2
        b = int(u * np.sqrt(u) * n)
        if b >= n:
            b = n - 1
        bucket[i] = b
        counts[b + 1] += 1
    for b in range(n):
        counts[b + 1] += counts[b]
    for i in range(n):
        b = bucket[i]
        tmp[counts[b]] = d2[i]
        counts[b] += 1
    for i in range(n):
        d2[i] = tmp[i]
    _insertion_sort(d2, n)


@njit(cache=True, inline="always")
def _tile_reach(points, p0, p1, r_cut):
    """Centre (Å) of the points ``p0:p1`` and the reach (Å) around it,
    ``r_cut + tile radius``: every atom within ``r_cut`` of a point is within reach."""
    cx = 0.0
    cy = 0.0
    cz = 0.0
    for p in range(p0, p1):
        cx += points[p, 0]
        cy += points[p, 1]
        cz += points[p, 2]
    inv = 1.0 / (p1 - p0)
    cx *= inv
    cy *= inv
    cz *= inv
    rad2 = 0.0
    for p in range(p0, p1):
        dx = points[p, 0] - cx
        dy = points[p, 1] - cy
        dz = points[p, 2] - cz
        rad2 = max(rad2, dx * dx + dy * dy + dz * dz)
    reach = r_cut + np.sqrt(rad2) + 1e-9
    return cx, cy, cz, reach


@njit(cache=True, inline="always")
def _tile_candidates(cx, cy, cz, reach, atom_pos, atom_species, bin_starts, bin_origin, bin_edge, bin_dims,
                     n_species):
    """The atom images within reach of a tile centre, grouped by species.

    Returns ``cand`` ((n, 3) float64, Å; species s in rows ``count[s]:count[s+1]``,
    each in bin order), ``count`` ((S + 1,) int64) and ``n``.
    """
    reach2 = reach * reach
    count = np.zeros(n_species + 1, dtype=np.int64)
    lo = np.empty(3, dtype=np.int64)
    hi = np.empty(3, dtype=np.int64)
    c = (cx, cy, cz)
    for ax in range(3):
        lo[ax] = max(0, int(np.floor((c[ax] - reach - bin_origin[ax]) / bin_edge)))
        hi[ax] = min(bin_dims[ax] - 1, int(np.floor((c[ax] + reach - bin_origin[ax]) / bin_edge)))
    n_box = 0
    for bx in range(lo[0], hi[0] + 1):
        for by in range(lo[1], hi[1] + 1):
            b = (bx * bin_dims[1] + by) * bin_dims[2]
            if hi[2] >= lo[2]:
                n_box += bin_starts[b + hi[2] + 1] - bin_starts[b + lo[2]]
    keep = np.empty(max(n_box, 1), dtype=np.int64)
    nk = 0
    for bx in range(lo[0], hi[0] + 1):
        for by in range(lo[1], hi[1] + 1):
            if hi[2] < lo[2]:
                continue
            b = (bx * bin_dims[1] + by) * bin_dims[2]
            # Bins (bx, by, lo..hi) are contiguous in C order: one run of atoms.
            for a in range(bin_starts[b + lo[2]], bin_starts[b + hi[2] + 1]):
                dx = atom_pos[a, 0] - cx
                dy = atom_pos[a, 1] - cy
                dz = atom_pos[a, 2] - cz
                if dx * dx + dy * dy + dz * dz <= reach2:
                    keep[nk] = a
                    nk += 1
                    count[atom_species[a] + 1] += 1
    for s in range(n_species):
        count[s + 1] += count[s]
    fill = count[:n_species].copy()
    cand = np.empty((max(nk, 1), 3))
    for q in range(nk):
        a = keep[q]
        s = atom_species[a]
        cand[fill[s], 0] = atom_pos[a, 0]
        cand[fill[s], 1] = atom_pos[a, 1]
        cand[fill[s], 2] = atom_pos[a, 2]
        fill[s] += 1
    return cand, count, nk


@njit(cache=True, inline="always")
def _keep_k_nearest(dx, dy, dz, d2, s, ks, nkept, kd2, kvec):
    """Insert an atom at displacement (dx, dy, dz) Å, d2 Å², into the ``nkept`` nearest of species s
    (``kd2`` ascending, displacements in ``kvec[s]``) if it is among the ``ks`` nearest; ties keep
    the earlier atom.  Returns the new ``nkept``.  Comparisons and copies only, so the CUDA kernel
    compiles the same Python function as a device function."""
    if ks > 0 and (nkept < ks or d2 < kd2[nkept - 1]):
        j = nkept if nkept < ks else ks - 1
        while j > 0 and kd2[j - 1] > d2:
            kd2[j] = kd2[j - 1]
            kvec[s, j, 0] = kvec[s, j - 1, 0]
            kvec[s, j, 1] = kvec[s, j - 1, 1]
            kvec[s, j, 2] = kvec[s, j - 1, 2]
            j -= 1
        kd2[j] = d2
        kvec[s, j, 0] = dx
        kvec[s, j, 1] = dy
        kvec[s, j, 2] = dz
        if nkept < ks:
            nkept += 1
    return nkept


@njit(cache=True, inline="always")
def _displacement(cand, q, px, py, pz):
    """Displacement (Å) from point (px, py, pz) to candidate atom q, and its square (Å²)."""
    dx = cand[q, 0] - px
    dy = cand[q, 1] - py
    dz = cand[q, 2] - pz
    return dx, dy, dz, dx * dx + dy * dy + dz * dz


@njit(cache=True, inline="always")
def _select_k_nearest(px, py, pz, cand, q0, q1, d2sorted, n, s, ks, kd2, kvec):
    """The ``ks`` nearest of species s to point (px, py, pz), once the ``n`` squared distances within
    r_cut are sorted (``d2sorted``): the K-th smallest is the threshold, and a second pass over the
    candidates keeps those below it (and, of those at it, the earliest), inserted in order of
    distance into ``kd2`` / ``kvec[s]``.  The same atoms, in the same order, as :func:`_keep_k_nearest`
    over all candidates (ties keep the earlier atom), with K insertions instead of one per candidate
    that beats the current K-th.  Returns how many were kept, min(ks, n)."""
    nk = min(ks, n)
    if nk == 0:
        return 0
    t = d2sorted[nk - 1]
    at_t = 0  # how many of the nk nearest lie exactly at the threshold
    while at_t < nk and d2sorted[nk - 1 - at_t] == t:
        at_t += 1
    nkept = 0
    for q in range(q0, q1):
        dx, dy, dz, d2 = _displacement(cand, q, px, py, pz)
        if d2 > t or (d2 == t and at_t == 0):
            continue
        if d2 == t:
            at_t -= 1
        nkept = _keep_k_nearest(dx, dy, dz, d2, s, ks, nkept, kd2, kvec)  # never full here: it inserts
    return nkept


@njit(cache=True, inline="always")
def _unit_vectors(kd2, kvec, s, nkept):
    """Turn the displacements ``kvec[s, :nkept]`` (at squared distances ``kd2``, Å²) into unit
    vectors in place; an atom closer than :data:`ON_ATOM` gets the zero vector.  A square root and
    divisions only (IEEE-rounded on either device), so the CUDA kernel compiles this same function."""
    for i in range(nkept):
        d = math.sqrt(kd2[i])
        if d < ON_ATOM:
            kvec[s, i, 0] = 0.0
            kvec[s, i, 1] = 0.0
            kvec[s, i, 2] = 0.0
        else:
            kvec[s, i, 0] = kvec[s, i, 0] / d
            kvec[s, i, 1] = kvec[s, i, 1] / d
            kvec[s, i, 2] = kvec[s, i, 2] / d


@njit(cache=True, inline="always")
def _species_features(out, p, px, py, pz, cand, q0, q1, s, ms, ks, off, r_cut, d2buf, tmp, bucket, counts,
                      kd2, kvec):
    """Write species s's radial and angular features of point p (at px, py, pz, Å) into ``out[p]``.

    ``cand[q0:q1]`` are the candidate atoms of species s.  The unit vectors to the
    ``ks`` nearest are left in ``kvec[s]`` for the cross block; returns how many there are.
    """
    rc2 = r_cut * r_cut
    n = 0
    for q in range(q0, q1):
        dx, dy, dz, d2 = _displacement(cand, q, px, py, pz)
        if d2 > rc2:
            continue
        d2buf[n] = d2
        n += 1
    # Radial part: the M smallest distances, padded with r_cut.
    _sort_d2(d2buf, n, rc2, tmp, bucket, counts)
    nkept = _select_k_nearest(px, py, pz, cand, q0, q1, d2buf, n, s, ks, kd2, kvec)
    for i in range(ms):
        if i < n:
            out[p, off + i] = np.sqrt(d2buf[i])
        else:
            out[p, off + i] = r_cut
    # Angular part: unit vectors of the K nearest, scalar products (i < j).
    _unit_vectors(kd2, kvec, s, nkept)
    col = off + ms
    for i in range(ks):
        for j in range(i + 1, ks):
            if j < nkept:
                out[p, col] = (kvec[s, i, 0] * kvec[s, j, 0] + kvec[s, i, 1] * kvec[s, j, 1]
                               + kvec[s, i, 2] * kvec[s, j, 2])
            col += 1
    # Distances below ON_ATOM count as zero.
    for i in range(min(ms, n)):
        if out[p, off + i] < ON_ATOM:
            out[p, off + i] = 0.0
    return nkept


@njit(cache=True, inline="always")
def _cross_features(out, p, cross, k, nkept_s, kvec):
    """Cross-species blocks of point p: u_i (species s) · u_j (species t), i-major; missing ones stay 0."""
    for q in range(cross.shape[0]):
        sa = cross[q, 0]
        sb = cross[q, 1]
        col = cross[q, 2]
        kb = k[sb]
        for i in range(nkept_s[sa]):
            c0 = col + i * kb
            for j in range(nkept_s[sb]):
                out[p, c0 + j] = (kvec[sa, i, 0] * kvec[sb, j, 0] + kvec[sa, i, 1] * kvec[sb, j, 1]
                                  + kvec[sa, i, 2] * kvec[sb, j, 2])


@njit(cache=True, parallel=True)
def descriptors(points, tile_starts, atom_pos, atom_species, bin_starts, bin_origin, bin_edge, bin_dims,
                m, k, offsets, r_cut, n_features, cross):
    """Descriptor rows of ``points`` (float32, shape (n_points, n_features)).

    Parameters
    ----------
    points : (P, 3) float64, Å, grouped so that each tile is contiguous.
    tile_starts : (T + 1,) int64, tile t is ``points[tile_starts[t]:tile_starts[t+1]]``.
    atom_pos : (A, 3) float64, Å, atom images (periodic images resolved), sorted by bin.
    atom_species : (A,) int64, species index in 0..S-1 of each image.
    bin_starts : (B + 1,) int64, bin b (C order over ``bin_dims``) holds atoms
        ``bin_starts[b]:bin_starts[b+1]``.
    bin_origin : (3,) float64, Å, corner of bin (0, 0, 0); bins are cubes of ``bin_edge`` Å.
    bin_dims : (3,) int64, bins per axis.
    m, k : (S,) int64, radial count M_s and angular count K_s per species.
    offsets : (S,) int64, first feature column of each species block.
    r_cut : float, Å.
    n_features : int.
    cross : (n_pairs, 3) int64, one row (s, t, first column) per cross-species block,
        which gets the ``k[s]·k[t]`` products of the unit vectors to the nearest atoms
        of s and of t, i-major; 0 rows: no cross block.
    """
    n_points = points.shape[0]
    n_tiles = tile_starts.shape[0] - 1
    n_species = m.shape[0]
    out = np.zeros((n_points, n_features), dtype=np.float32)
    kmax = 1
    for s in range(n_species):
        kmax = max(kmax, k[s])
    for t in prange(n_tiles):
        p0 = tile_starts[t]
        p1 = tile_starts[t + 1]
        if p1 <= p0:
            continue
        cx, cy, cz, reach = _tile_reach(points, p0, p1, r_cut)
        cand, count, nk = _tile_candidates(cx, cy, cz, reach, atom_pos, atom_species, bin_starts, bin_origin,
                                           bin_edge, bin_dims, n_species)
        # Per-point work buffers, reused for every point of the tile.
        d2buf = np.empty(max(nk, 1))
        tmp = np.empty(max(nk, 1))
        bucket = np.empty(max(nk, 1), dtype=np.int64)
        counts = np.empty(max(nk, 1) + 1, dtype=np.int64)
        kd2 = np.empty(kmax)
        # Unit vectors to the K nearest atoms, kept per species for the cross block.
        kvec = np.empty((n_species, kmax, 3))
        nkept_s = np.zeros(n_species, dtype=np.int64)
        for p in range(p0, p1):
            px = points[p, 0]
            py = points[p, 1]
            pz = points[p, 2]
            for s in range(n_species):
                nkept_s[s] = _species_features(out, p, px, py, pz, cand, count[s], count[s + 1], s, m[s], k[s],
                                               offsets[s], r_cut, d2buf, tmp, bucket, counts, kd2, kvec)
            _cross_features(out, p, cross, k, nkept_s, kvec)
    return out
