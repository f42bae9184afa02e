"""A periodic cell list over a whole structure, built once and shared.

Atoms are binned by their fractional coordinates (wrapped into [0, 1)), and
the bins are stored in compressed-row form (``order`` sorted by bin,
``starts`` offsets).  A query asks for every periodic image of every atom
whose fractional coordinates fall inside a box ``[lo, hi]`` that may extend
past the cell; it visits only the bins that box overlaps, so its cost and
memory depend on the box, not on the system size.  Boxes wider than the cell
(thin cells, large cutoffs) visit the same bin several times with different
image shifts, so every image is found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Target number of atoms per bin: small enough that a query box touches few
#: atoms outside it, large enough that the bin table stays small for 10^7 atoms.
ATOMS_PER_BIN = 8


@dataclass(frozen=True)
class CellList:
    """Atoms binned on a regular grid of fractional-coordinate bins.

    Attributes
    ----------
    cell : ndarray, shape (3, 3), float64
        Lattice vectors as rows, Å.
    frac : ndarray, shape (n_atoms, 3), float64
        Fractional coordinates wrapped into [0, 1).
    nbins : ndarray, shape (3,), int64
        Number of bins along each lattice vector.
    order : ndarray, shape (n_atoms,), int64
        Atom indices sorted by bin.
    starts : ndarray, shape (prod(nbins) + 1,), int64
        ``order[starts[b]:starts[b + 1]]`` are the atoms of flat bin ``b``.
    """

    cell: np.ndarray
    frac: np.ndarray
    nbins: np.ndarray
    order: np.ndarray
    starts: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.frac.shape[0])

    def query_box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every atom image whose fractional coordinates lie in ``[lo, hi]``.

        Parameters
        ----------
        lo, hi : ndarray, shape (3,), float64
            Box corners in fractional coordinates; may lie outside [0, 1).

        Returns
        -------
        indices : ndarray, shape (m,), int64
            Original atom indices (an atom may appear more than once, as
            different images).
        shifts : ndarray, shape (m, 3), int64
            Integer lattice shifts: the image sits at ``frac[indices] + shifts``.
        """
        _kernels = _load_kernels()
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        return _kernels.query_box(self.frac, self.nbins, self.order, self.starts, lo, hi)

    def query_sphere_box(self, frac_lo: np.ndarray, frac_hi: np.ndarray, radius: float):
        """Atom images within ``radius`` (Å) of the fractional box ``[frac_lo, frac_hi]``.

        Returns a superset: the box is widened along each lattice direction by
        ``radius`` divided by the spacing of that family of lattice planes,
        which contains every point within ``radius`` of the box exactly.
        """
        pad = radius * plane_normals_norm(self.cell)
        return self.query_box(np.asarray(frac_lo) - pad, np.asarray(frac_hi) + pad)

    def images(self, frac_lo, frac_hi, radius: float, numbers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Atom images within ``radius`` Å of the fractional box ``[frac_lo, frac_hi]`` (a superset).

        The contract :func:`bigdens.blocks.block_halo` asks of an atom source
        (:class:`bigdens.atomtiles.TiledAtoms` is the other one).

        Parameters
        ----------
        frac_lo, frac_hi : array_like, shape (3,)
            Box corners, fractional coordinates.
        radius
            Å.
        numbers : array_like, shape (n_atoms,)
            Atomic numbers of the structure.

        Returns
        -------
        frac : ndarray, shape (m, 3), float64
            Fractional coordinates of the images (may lie outside [0, 1)).
        numbers : ndarray, shape (m,)
        indices : ndarray, shape (m,), int64
            Each image's atom index.
        """
        idx, shifts = self.query_sphere_box(frac_lo, frac_hi, radius)
        return self.frac[idx] + shifts, np.asarray(numbers)[idx], idx


def plane_normals_norm(cell: np.ndarray) -> np.ndarray:
    """Norms of the reciprocal vectors (without 2π), 1/Å, shape (3,).

    ``1 / result[i]`` is the spacing between lattice planes spanned by the two
    other vectors: a Cartesian displacement of length r changes fractional
    coordinate i by at most ``r * result[i]``.
    """
    recip = np.linalg.inv(np.asarray(cell, dtype=np.float64)).T
    return np.linalg.norm(recip, axis=1)


#: Atoms per pass of the chunked conversions, so that temporaries stay small next
#: to the shared arrays of a 10^7-atom structure.
ROWS = 1 << 16


def fractional(cell: np.ndarray, positions: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Fractional coordinates of ``positions``, wrapped into [0, 1).

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    positions : array_like, shape (n_atoms, 3)
        Cartesian positions, Å (need not lie inside the cell).
    out : ndarray, shape (n_atoms, 3), float64, optional
        Written in place (may be ``positions`` itself); computed in passes of
        :data:`ROWS` atoms, so the temporaries do not grow with the structure.

    Returns
    -------
    ndarray, shape (n_atoms, 3), float64
    """
    cell_t = np.ascontiguousarray(cell, dtype=np.float64).T
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if out is None:
        out = np.empty(positions.shape)
    for s in range(0, len(positions), ROWS):
        f = np.linalg.solve(cell_t, positions[s : s + ROWS].T).T
        f -= np.floor(f)
        f[f >= 1.0] = 0.0  # -1e-17 wraps to 1.0 in floating point
        out[s : s + ROWS] = f
    return out


def build_cell_list(cell: np.ndarray, positions: np.ndarray, *, atoms_per_bin: int = ATOMS_PER_BIN) -> CellList:
    """Bin the atoms of a periodic structure.

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    positions : array_like, shape (n_atoms, 3)
        Cartesian positions, Å (need not lie inside the cell).
    atoms_per_bin
        Target mean occupation of a bin.
    """
    return cell_list_from_fractional(cell, fractional(cell, positions), atoms_per_bin=atoms_per_bin)


def cell_list_from_fractional(cell: np.ndarray, frac: np.ndarray, *, atoms_per_bin: int = ATOMS_PER_BIN) -> CellList:
    """Bin atoms given by wrapped fractional coordinates (kept, not copied).

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    frac : ndarray, shape (n_atoms, 3), float64
        Fractional coordinates in [0, 1), as :func:`fractional` returns them.
    atoms_per_bin
        Target mean occupation of a bin.

    Memory beyond ``frac``: the result's ``order`` and ``starts`` (8 bytes per
    atom, 8 per bin) and one more int64 per atom while sorting.
    """
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    frac = np.ascontiguousarray(frac, dtype=np.float64)
    n = frac.shape[0]
    volume = abs(np.linalg.det(cell))
    width = (volume * atoms_per_bin / max(n, 1)) ** (1.0 / 3.0)
    plane_spacing = 1.0 / plane_normals_norm(cell)
    nbins = np.maximum(1, np.floor(plane_spacing / width)).astype(np.int64)
    flat = np.empty(n, dtype=np.int64)
    for s in range(0, n, ROWS):
        b = np.minimum((frac[s : s + ROWS] * nbins).astype(np.int64), nbins - 1)
        flat[s : s + ROWS] = (b[:, 0] * nbins[1] + b[:, 1]) * nbins[2] + b[:, 2]
    order = np.argsort(flat, kind="stable").astype(np.int64, copy=False)
    counts = np.bincount(flat, minlength=int(np.prod(nbins)))
    del flat
    starts = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return CellList(cell=cell, frac=frac, nbins=nbins, order=order, starts=starts)


_KERNELS = None


def _load_kernels():
    # numba compiles on first use only, so that `import bigdens` stays light.
    global _KERNELS
    if _KERNELS is None:
        from . import _celllist_kernels

        _KERNELS = _celllist_kernels
    return _KERNELS


#: Atoms per call of a neighbour kernel: Python runs its signal handlers only between calls, so that
#: Ctrl-C and SIGTERM stop a check of 10^7 atoms within a fraction of a second (a numba kernel cannot be
#: interrupted while it runs).
KERNEL_ATOMS = 1 << 16


def min_image_pairs_closer_than(cl: CellList, dmin: float, *, max_report: int = 10) -> np.ndarray:
    """Pairs of atoms (any periodic images) closer than ``dmin`` Å.

    Work is linear in the atoms (the cell list holds wrapped coordinates) and
    done in calls of :data:`KERNEL_ATOMS` atoms.

    Returns
    -------
    ndarray, shape (k, 3), float64
        Rows ``(i, j, distance)`` with ``i < j`` (or ``i == j`` for an atom
        close to its own image), at most ``max_report`` of them.
    """
    k = _load_kernels()
    found = []
    n_found = 0
    for i0 in range(0, cl.n_atoms, KERNEL_ATOMS):
        rows = k.close_pairs(cl.cell, cl.frac, cl.nbins, cl.order, cl.starts, float(dmin),
                             int(max_report) - n_found, i0, min(cl.n_atoms, i0 + KERNEL_ATOMS))
        found.append(rows)
        n_found += len(rows)
        if n_found >= max_report:
            break
    return np.concatenate(found) if found else np.zeros((0, 3))


def nearest_neighbours(cl: CellList, radius: float, *, atoms: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Each atom's nearest other atom (any periodic image, its own images included) within ``radius`` Å.

    Work is linear in the atoms: each atom looks at the bins within
    ``radius`` of its wrapped position, in calls of :data:`KERNEL_ATOMS`
    atoms (so that Ctrl-C and SIGTERM are heard between calls).

    Parameters
    ----------
    cl
        The structure's cell list.
    radius
        Å; farther neighbours are not looked for.
    atoms : ndarray, shape (m,), int, optional
        The atoms to measure (default: all).

    Returns
    -------
    distance : ndarray, shape (m,), float64
        Å; ``inf`` where no other atom lies within ``radius``.
    index : ndarray, shape (m,), int64
        The nearest atom (ties: the smaller index); -1 where none.
    """
    k = _load_kernels()
    atoms = np.arange(cl.n_atoms, dtype=np.int64) if atoms is None else np.asarray(atoms, dtype=np.int64)
    dist = np.full(len(atoms), np.inf)
    index = np.full(len(atoms), -1, dtype=np.int64)
    for s in range(0, len(atoms), KERNEL_ATOMS):
        d, j = k.nearest_images(cl.cell, cl.frac, cl.nbins, cl.order, cl.starts,
                                np.ascontiguousarray(atoms[s : s + KERNEL_ATOMS]), float(radius))
        dist[s : s + KERNEL_ATOMS] = d
        index[s : s + KERNEL_ATOMS] = j
    return dist, index
