"""How hot a structure looks: the spread of its first-shell bond lengths.

A model's errors grow with temperature even where its inputs stay inside the
training range: on the shipped Al model the squared error of a 108-atom cell
at 900 K is 3× that at 300 K at the same predicted aleatoric σ, in cores,
bonds and open space alike (docs/models.md, "σ and temperature").  No
per-point input sees it, so the calibration (:func:`bigdens.train.calibrate`)
scales the aleatoric variance by a factor of one structure-level number, read
off the atoms alone, with no temperature given:

``bond_spread``
    the pooled standard deviation (Å) of the first-shell bond lengths within
    each species pair: for each sampled atom of species a and each species b,
    the distances to the atoms of b no farther than :data:`SHELL_FACTOR` times
    the median nearest a–b distance, less their a–b mean.  A perfect crystal
    reads 0; thermal vibration, a melt or a distorted defect raise it.  Bond
    lengths that differ between pairs (Si–Si against Ge–Ge) do not count.

Larger structures are sampled (:data:`SAMPLE` atoms, seeded), so the cost is
bounded for millions of atoms.
"""

from __future__ import annotations

import math

import numpy as np

#: Atoms measured (a random sample, seeded, of larger structures).
SAMPLE = 20000
#: Neighbours of each species looked at around each atom (FCC has 12 in the first shell, BCC 8 + 6).
NEIGHBOURS = 16
#: The first shell of pair a–b: distances up to this factor times the median nearest a–b distance
#: (FCC's second shell lies at 1.41×, diamond's at 1.63×).
SHELL_FACTOR = 1.3
#: Distances beyond this (Å) are not looked at.
REACH = 8.0


def neighbour_distances(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, *, neighbours: int,
                        sample: int = SAMPLE, seed: int = 0, reach: float = REACH):
    """Distances from (a sample of) the atoms to their nearest atoms of each species, themselves excluded.

    The search runs on wrapped positions (:func:`bigdens.descriptors.compute`
    moves the measured atoms into the cell by whole lattice vectors), so
    unwrapped MD coordinates cost what wrapped ones do.

    Parameters
    ----------
    positions : ndarray, shape (n_atoms, 3), Å
        Within :data:`bigdens.structure.MAX_CELLS_AWAY` cell lengths of the cell (else InputError).
    numbers : ndarray, shape (n_atoms,)
    cell : ndarray, shape (3, 3), Å (rows are lattice vectors; periodic)
    neighbours
        Nearest atoms of each species kept per atom.
    sample
        At most this many atoms, drawn at random (seeded), are measured.
    reach
        Distances beyond ``reach`` Å read ``inf``.

    Returns
    -------
    pick : ndarray, shape (n,), int64
        The measured atoms (sorted indices).
    species : tuple of int
        Atomic numbers, ascending.
    dist : list of ndarray, shape (n, neighbours), float64, Å
        ``dist[s][i]``: ascending distances from atom ``pick[i]`` to atoms of ``species[s]``.
    """
    from .descriptors import DescriptorParams, compute

    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(numbers)
    n = len(positions)
    rng = np.random.default_rng(seed)
    pick = np.arange(n) if n <= sample else np.sort(rng.choice(n, size=sample, replace=False))
    species = tuple(sorted({int(z) for z in numbers.tolist()}))
    m = int(neighbours) + 1  # an atom's own species lists itself first (at 0 Å)
    params = DescriptorParams(species=species, m=(m,) * len(species), k=(0,) * len(species), r_cut=reach)
    feats = compute(positions, numbers, cell, positions[pick], params).astype(np.float64)
    dist = []
    for s, z in enumerate(species):
        block = feats[:, params.offsets[s]: params.offsets[s] + m]
        own = (numbers[pick] == z)[:, None]
        d = np.where(own, block[:, 1:], block[:, :-1])
        d[d >= reach - 1e-6] = np.inf
        dist.append(d)
    return pick, species, dist


def bond_spread(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, *, sample: int = SAMPLE,
                seed: int = 0) -> float:
    """Pooled standard deviation of first-shell bond lengths within each species pair, Å.

    Parameters
    ----------
    positions : ndarray, shape (n_atoms, 3), Å
    numbers : ndarray, shape (n_atoms,)
    cell : ndarray, shape (3, 3), Å (rows are lattice vectors; periodic)
    sample, seed
        At most ``sample`` atoms are measured (drawn with ``seed``).

    Returns
    -------
    float
        Å; 0 for a perfect crystal, NaN when no atom has a neighbour within :data:`REACH`.
    """
    pick, species, dist = neighbour_distances(positions, numbers, cell, neighbours=NEIGHBOURS, sample=sample,
                                              seed=seed)
    centre = np.asarray(numbers)[pick]
    ss = 0.0
    dof = 0
    for a in species:
        rows = centre == a
        for d in dist:
            d = d[rows]
            nearest = d[:, 0][np.isfinite(d[:, 0])]
            if len(nearest) == 0:
                continue
            shell = d[d <= SHELL_FACTOR * float(np.median(nearest))]
            if len(shell) < 2:
                continue
            ss += float(np.sum((shell - shell.mean()) ** 2))
            dof += len(shell) - 1
    return math.sqrt(ss / dof) if dof else math.nan


__all__ = ["NEIGHBOURS", "REACH", "SAMPLE", "SHELL_FACTOR", "bond_spread", "neighbour_distances"]
