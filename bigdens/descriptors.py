"""Grid-point descriptors: distances to, and angles between, the nearest atoms.

For a point x and each species s (in the model's fixed order), take the atom
images of species s within ``r_cut`` of x, sorted by distance
``d_1 ≤ d_2 ≤ …`` (DESIGN §2):

* radial part: ``d_1 … d_M`` (M = ``m[s]``), padded with ``r_cut`` when fewer
  than M atoms lie within the cutoff;
* angular part: for the nearest K = ``k[s]`` atoms, the scalar products
  ``u_i·u_j`` (i < j, lexicographic order) of the unit vectors from x to
  them, ``K(K−1)/2`` values; missing ones are 0.

With ``cross`` on (model format 2 on) and at least two species, a
cross-species angular block follows the species blocks for each species pair
s < t in the model's order, pairs in lexicographic order (0, 1), (0, 2), …,
(1, 2), …: the ``K_s·K_t`` scalar products ``u_i·u_j`` of the unit vectors to
the nearest K_s atoms of s and the nearest K_t atoms of t, i-major (i over
s's atoms, j over t's); products with a missing atom (fewer within r_cut) are 0.
It carries the angle of every heteronuclear bond, which the per-species blocks
cannot see.

An atom within 1e-6 Å of the point has d = 0 and u = 0, so its scalar products
(in both angular parts) are 0, never NaN.  The feature vector is the
concatenation of the species blocks, radial part first, then the cross
blocks; distances are in Å, scalar products are dimensionless (−1..1), and
:func:`compute` returns float32 rows of ``params.n_features`` values.  It is
invariant to rotations, translations, permutations of the atoms and the
choice of periodic images.  Exact distance ties (symmetric points of perfect
crystals) are broken by the order in which candidate atoms are visited, so
the angular part of such points may depend on that order; thermal disorder
removes the ties.

Feature transforms (1/d, standardisation) belong to the model, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: Largest allowed radial count M per species.
M_MAX = 256
#: Largest allowed angular count K per species (K(K−1)/2 = 120 products).
K_MAX = 16
#: Smallest spatial tile edge used to group points (Å); coarse grids get larger tiles
#: (two point spacings), so that each tile's candidate search serves several points.
TILE_EDGE = 0.8
#: Largest tile edge, Å (scattered points would otherwise make one huge tile).
TILE_EDGE_MAX = 3.0
#: Points per tile at most (a tile larger than this is split).
TILE_MAX_POINTS = 128
#: Edge of the bins atom images are sorted into for the per-tile candidate search, Å.
BIN_EDGE = 2.0


@dataclass(frozen=True)
class DescriptorParams:
    """Descriptor settings, stored in a model's metadata.

    Parameters
    ----------
    species : tuple of int
        Atomic numbers, in the model's fixed order.
    m : tuple of int
        Radial count M_s per species (1..M_MAX).
    k : tuple of int
        Angular count K_s per species (0..K_MAX); K_s(K_s−1)/2 scalar products.
    r_cut : float
        Cutoff radius, Å.
    cross : bool
        Append the cross-species angular blocks (``K_s·K_t`` products per
        species pair s < t).  Model files written before this key existed
        read as False.  With one species it adds nothing.
    """

    species: tuple[int, ...]
    m: tuple[int, ...]
    k: tuple[int, ...]
    r_cut: float
    cross: bool = False

    def __post_init__(self):
        species = tuple(int(z) for z in self.species)
        m = tuple(int(v) for v in self.m)
        k = tuple(int(v) for v in self.k)
        if not species:
            raise InputError("DescriptorParams needs at least one species")
        if len(set(species)) != len(species) or any(not 0 < z < 119 for z in species):
            raise InputError(f"species must be distinct atomic numbers, got {species!r}")
        if len(m) != len(species) or len(k) != len(species):
            raise InputError(
                f"m and k need one entry per species {species!r}, got m={m!r}, k={k!r}"
            )
        if any(not 1 <= v <= M_MAX for v in m):
            raise InputError(f"each radial count M must be within 1..{M_MAX}, got m={m!r}")
        if any(not 0 <= v <= K_MAX for v in k):
            raise InputError(f"each angular count K must be within 0..{K_MAX}, got k={k!r}")
        if not isinstance(self.cross, (bool, np.bool_)):
            raise InputError(
                f"cross must be True or False, got {self.cross!r}; e.g. DescriptorParams(..., cross=True)"
            )
        r_cut = float(self.r_cut)
        if not (math.isfinite(r_cut) and r_cut > 0):
            raise InputError(f"r_cut must be a positive number of Å, got {self.r_cut!r}")
        object.__setattr__(self, "species", species)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "r_cut", r_cut)
        object.__setattr__(self, "cross", bool(self.cross))

    @property
    def block_sizes(self) -> tuple[int, ...]:
        """Number of features of each species block (the cross blocks not included)."""
        return tuple(m + k * (k - 1) // 2 for m, k in zip(self.m, self.k))

    @property
    def cross_pairs(self) -> tuple[tuple[int, int], ...]:
        """Species index pairs (s, t), s < t, of the cross blocks, in column order; () without ``cross``."""
        if not self.cross:
            return ()
        n = len(self.species)
        return tuple((s, t) for s in range(n) for t in range(s + 1, n))

    @property
    def cross_sizes(self) -> tuple[int, ...]:
        """Number of features ``K_s·K_t`` of each cross block."""
        return tuple(self.k[s] * self.k[t] for s, t in self.cross_pairs)

    @property
    def n_features(self) -> int:
        return sum(self.block_sizes) + sum(self.cross_sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """First column of each species block."""
        return tuple(int(v) for v in np.concatenate([[0], np.cumsum(self.block_sizes)[:-1]]))

    @property
    def cross_offset(self) -> int:
        """First column of the cross blocks (= the number of per-species features)."""
        return sum(self.block_sizes)

    @property
    def cross_offsets(self) -> tuple[int, ...]:
        """First column of each cross block, one per :attr:`cross_pairs`."""
        sizes = self.cross_sizes
        return tuple(self.cross_offset + sum(sizes[:q]) for q in range(len(sizes)))

    def radial_mask(self) -> np.ndarray:
        """Boolean mask, shape (n_features,), true for distance columns (Å)."""
        mask = np.zeros(self.n_features, dtype=bool)
        for off, m in zip(self.offsets, self.m):
            mask[off : off + m] = True
        return mask

    def feature_names(self) -> list[str]:
        """Names such as ``Al:d3``, ``Al:u1.u2`` and, for the cross blocks, ``Si.Ge:u1.u2`` (u1 of Si, u2 of Ge)."""
        from ase.data import chemical_symbols

        names = []
        for z, m, k in zip(self.species, self.m, self.k):
            sym = chemical_symbols[z]
            names += [f"{sym}:d{i + 1}" for i in range(m)]
            names += [f"{sym}:u{i + 1}.u{j + 1}" for i in range(k) for j in range(i + 1, k)]
        for s, t in self.cross_pairs:
            pair = f"{chemical_symbols[self.species[s]]}.{chemical_symbols[self.species[t]]}"
            names += [f"{pair}:u{i + 1}.u{j + 1}" for i in range(self.k[s]) for j in range(self.k[t])]
        return names

    def to_dict(self) -> dict:
        return {"species": list(self.species), "m": list(self.m), "k": list(self.k), "r_cut": self.r_cut,
                "cross": self.cross}

    @classmethod
    def from_dict(cls, d: dict) -> "DescriptorParams":
        """Inverse of :meth:`to_dict`; a dict without ``cross`` (older model files) gives ``cross=False``."""
        try:
            return cls(species=tuple(d["species"]), m=tuple(d["m"]), k=tuple(d["k"]), r_cut=d["r_cut"],
                       cross=d.get("cross", False))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"descriptor parameters need species, m, k and r_cut; got {d!r} ({exc})") from None


def species_index(numbers: np.ndarray, params: DescriptorParams) -> np.ndarray:
    """Species index (0..S−1, int64) of each atomic number, or InputError naming unknown ones."""
    from ase.data import chemical_symbols

    numbers = np.asarray(numbers)
    lut = np.full(119, -1, dtype=np.int64)
    lut[list(params.species)] = np.arange(len(params.species))
    if numbers.size and (numbers.min() < 0 or numbers.max() > 118):
        raise InputError(f"atomic numbers must be within 1..118, got {numbers.min()}..{numbers.max()}")
    idx = lut[numbers]
    if (idx < 0).any():
        unknown = sorted({chemical_symbols[int(z)] for z in np.unique(numbers[idx < 0])})
        known = [chemical_symbols[z] for z in params.species]
        raise InputError(
            f"the structure holds species {unknown} that the descriptor parameters do not know "
            f"(known: {known}); use a model trained for these elements"
        )
    return idx


def tile_order(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group points into compact spatial tiles.

    The tile edge is two mean point spacings (estimated from the bounding
    box), at least :data:`TILE_EDGE` and at most :data:`TILE_EDGE_MAX`: on a
    0.8 Å grid a 0.8 Å tile would hold one point and pay a whole candidate
    search for it.

    Returns
    -------
    order : ndarray, shape (n_points,), int64
        Permutation that makes each tile contiguous.
    tile_starts : ndarray, shape (n_tiles + 1,), int64
        Boundaries of the tiles in the permuted order.
    """
    n = points.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    lo = points.min(axis=0)
    extent = np.maximum(points.max(axis=0) - lo, TILE_EDGE)
    spacing = float(np.prod(extent) / n) ** (1 / 3)
    edge = min(max(TILE_EDGE, 2 * spacing), TILE_EDGE_MAX)
    # Shift by half a spacing, so that grid points do not sit on tile boundaries.
    keys = np.floor((points - lo + 0.5 * spacing) / edge).astype(np.int64)
    order = np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0]))
    k = keys[order]
    change = np.flatnonzero(np.any(k[1:] != k[:-1], axis=1)) + 1
    bounds = np.concatenate([[0], change, [n]])
    # Split tiles that hold too many points (skewed cells, fine grids).
    starts = [np.arange(a, b, TILE_MAX_POINTS) for a, b in zip(bounds[:-1], bounds[1:])]
    return order.astype(np.int64), np.concatenate(starts + [[n]]).astype(np.int64)


def atom_bins(positions: np.ndarray, edge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort atom images into a uniform grid of cubic bins.

    Parameters
    ----------
    positions : ndarray, shape (n, 3), Å
    edge : float
        Bin edge, Å.

    Returns
    -------
    order : ndarray, shape (n,), int64
        Permutation that groups the atoms by bin (C order over the bins; stable).
    bin_starts : ndarray, shape (n_bins + 1,), int64
        Bin b holds ``order[bin_starts[b]:bin_starts[b+1]]``.
    origin : ndarray, shape (3,), float64, Å
        Corner of bin (0, 0, 0).
    dims : ndarray, shape (3,), int64
        Bins per axis.
    """
    n = positions.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(2, dtype=np.int64), np.zeros(3), np.ones(3, dtype=np.int64)
    origin = positions.min(axis=0)
    idx = np.floor((positions - origin) / edge).astype(np.int64)
    dims = idx.max(axis=0) + 1
    flat = (idx[:, 0] * dims[1] + idx[:, 1]) * dims[2] + idx[:, 2]
    order = np.argsort(flat, kind="stable").astype(np.int64)
    counts = np.bincount(flat, minlength=int(np.prod(dims)))
    bin_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return order, bin_starts, origin.astype(np.float64), dims.astype(np.int64)


def compute_points(
    points: np.ndarray, atom_positions: np.ndarray, atom_species: np.ndarray, params: DescriptorParams
) -> np.ndarray:
    """Descriptors of Cartesian points given atom images already resolved.

    Parameters
    ----------
    points : ndarray, shape (n_points, 3), Å
    atom_positions : ndarray, shape (n_images, 3), Å
        Every atom image that may lie within ``r_cut`` of a point.
    atom_species : ndarray, shape (n_images,), int64
        Species index (see :func:`species_index`) of each image.
    params
        Descriptor settings.

    Returns
    -------
    ndarray, shape (n_points, n_features), float32
    """
    from . import _descriptor_kernels as kern

    points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    order, tiles = tile_order(points)
    atom_positions = np.ascontiguousarray(atom_positions, dtype=np.float64).reshape(-1, 3)
    atom_species = np.ascontiguousarray(atom_species, dtype=np.int64)
    # One row (s, t, first column) per cross block; no rows: the kernel skips that step.
    cross = np.array([(s, t, off) for (s, t), off in zip(params.cross_pairs, params.cross_offsets)],
                     dtype=np.int64).reshape(-1, 3)
    by_bin, bin_starts, origin, dims = atom_bins(atom_positions, BIN_EDGE)
    raw = kern.descriptors(
        np.ascontiguousarray(points[order]),
        tiles,
        np.ascontiguousarray(atom_positions[by_bin]),
        np.ascontiguousarray(atom_species[by_bin]),
        bin_starts,
        origin,
        BIN_EDGE,
        dims,
        np.array(params.m, dtype=np.int64),
        np.array(params.k, dtype=np.int64),
        np.array(params.offsets, dtype=np.int64),
        params.r_cut,
        params.n_features,
        cross,
    )
    out = np.empty_like(raw)
    out[order] = raw
    return out


#: Points per call of the descriptor kernel in :func:`compute`: Python runs its signal handlers only
#: between calls, so that Ctrl-C and SIGTERM stop a long computation within a fraction of a second.
COMPUTE_POINTS = 8192


def compute(positions, numbers, cell, points, params: DescriptorParams) -> np.ndarray:
    """Descriptors of arbitrary Cartesian points in a periodic structure.

    Points more than half a cell outside the cell are moved by whole lattice
    vectors into it first (their descriptors are those of that image), so the work is linear in the
    atoms and the points wherever they lie; more than :data:`COMPUTE_POINTS`
    points are computed in spatially sorted passes of that many.

    Parameters
    ----------
    positions : array_like, shape (n_atoms, 3)
        Atom positions, Å (within :data:`bigdens.structure.MAX_CELLS_AWAY` cell lengths of the cell).
    numbers : array_like, shape (n_atoms,)
        Atomic numbers; every one must be in ``params.species``.
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å; periodic in all three directions.
    points : array_like, shape (n_points, 3)
        Cartesian points, Å (any position as far as the atoms; periodic images are used).
    params
        Descriptor settings.

    Returns
    -------
    ndarray, shape (n_points, n_features), float32
    """
    from .celllist import build_cell_list
    from .structure import check_cell, check_positions

    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(numbers)
    cell = check_cell(cell)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(positions) == 0:
        raise InputError("the structure is empty (0 atoms)")
    if not np.isfinite(positions).all() or not np.isfinite(points).all():
        raise InputError("positions and points must be finite (found NaN or infinity)")
    check_positions(cell, positions)
    check_positions(cell, points)
    if len(numbers) != len(positions):
        raise InputError(f"{len(numbers)} atomic numbers for {len(positions)} positions")
    species = species_index(numbers, params)
    if len(points) == 0:
        return np.zeros((0, params.n_features), dtype=np.float32)
    cl = build_cell_list(cell, positions)
    fpts = np.linalg.solve(cell.T, points.T).T
    # Whole lattice vectors, for points more than half a cell outside it only: the others stay bit for bit
    # where they are, and the points' bounding box stays within two cells.
    shift = np.where((fpts >= -0.5) & (fpts < 1.5), 0.0, np.floor(fpts))
    if shift.any():
        points = points - shift @ cell
        fpts = fpts - shift
    if len(points) <= COMPUTE_POINTS:
        return _compute_in(cl, cell, species, points, fpts, params)
    out = np.empty((len(points), params.n_features), dtype=np.float32)
    order = np.lexsort((fpts[:, 2], fpts[:, 1], fpts[:, 0]))  # passes are slabs along a1
    for s in range(0, len(order), COMPUTE_POINTS):
        sel = order[s : s + COMPUTE_POINTS]
        out[sel] = _compute_in(cl, cell, species, points[sel], fpts[sel], params)
    return out


def _compute_in(cl, cell, species, points, fpts, params: DescriptorParams) -> np.ndarray:
    # Descriptors of points (fractional coordinates fpts) from the atom images around their bounding box.
    idx, shifts = cl.query_sphere_box(fpts.min(axis=0), fpts.max(axis=0), params.r_cut)
    images = (cl.frac[idx] + shifts) @ cell
    return compute_points(points, images, species[idx], params)


def compute_block(halo, grid, block, params: DescriptorParams) -> np.ndarray:
    """Descriptors of the grid points of one block, from its halo.

    Parameters
    ----------
    halo : bigdens.blocks.Halo
        Atom images around the block.
    grid : bigdens.grid.Grid
    block : bigdens.blocks.Block
    params
        Descriptor settings.

    Returns
    -------
    ndarray, shape (*block.shape, n_features), float32
        Descriptors in the block's C order of grid indices.
    """
    points = grid.points(block.start, block.stop)
    feats = compute_points(points, halo.positions, species_index(halo.numbers, params), params)
    return feats.reshape(*block.shape, params.n_features)


#: Defaults used when no model fixes the parameters (e.g. ``bigdens describe``).
DEFAULT_M = 32
DEFAULT_K = 6
DEFAULT_R_CUT = 6.0


def default_params(species) -> DescriptorParams:
    """Descriptor settings for ``species`` (atomic numbers, sorted) with the default M, K, r_cut.

    The cross-species block is on (it adds nothing for one species).
    """
    species = tuple(sorted(int(z) for z in set(species)))
    n = len(species)
    return DescriptorParams(species=species, m=(DEFAULT_M,) * n, k=(DEFAULT_K,) * n, r_cut=DEFAULT_R_CUT,
                            cross=True)
