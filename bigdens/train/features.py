"""Descriptors and densities of snapshots: the arrays that training, calibration and evaluation use."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..descriptors import DescriptorParams, compute
from ..errors import InputError


def snapshot_features(snapshot, params: DescriptorParams) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors and densities of every grid point of a snapshot.

    Returns
    -------
    features : ndarray, shape (n_points, n_features), float32
    density : ndarray, shape (n_points,), float32, e/Å³
        In the grid's C order (the order of ``snapshot.density.ravel()``).
    """
    grid = snapshot.grid()
    feats = compute(snapshot.positions, snapshot.numbers, snapshot.cell, grid.points(), params)
    return feats, np.asarray(snapshot.density, dtype=np.float32).ravel()


def _check_snapshots(snapshots: Sequence, params: DescriptorParams, what: str) -> None:
    from ase.data import chemical_symbols

    if not snapshots:
        raise InputError(f"no {what} snapshots: give at least one data set with {what} data")
    known = set(params.species)
    for s in snapshots:
        extra = set(np.unique(s.numbers).tolist()) - known
        if extra:
            raise InputError(
                f"snapshot {s.name!r} holds {sorted(chemical_symbols[z] for z in extra)}, which the "
                f"model's species {[chemical_symbols[z] for z in params.species]} do not include"
            )


def _stack(snapshots, params):
    feats, dens = zip(*(snapshot_features(s, params) for s in snapshots))
    return np.concatenate(feats), np.concatenate(dens)
