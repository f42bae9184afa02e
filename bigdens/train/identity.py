"""A snapshot's identity (name, atomic numbers, positions, cell): its digest and its Monte Carlo block index."""

from __future__ import annotations

import numpy as np


def _identity_hash(snapshot):
    import hashlib

    h = hashlib.sha256(str(snapshot.name).encode())
    for arr, dtype in ((snapshot.numbers, np.int64), (snapshot.positions, np.float64), (snapshot.cell, np.float64)):
        h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    return h


def snapshot_digest(snapshot) -> str:
    """A snapshot's identity (name, atomic numbers, positions, cell) as 16 hex digits; recorded in a
    model's training data so that calibration can tell a cell it trained on from one named alike."""
    return _identity_hash(snapshot).hexdigest()[:16]


def snapshot_block_index(snapshot) -> int:
    """Block index that seeds a snapshot's Monte Carlo samples in :func:`evaluate`, from its identity.

    A hash of the name, atomic numbers, positions and cell: the same snapshot reads the same
    numbers in any list of snapshots.
    """
    return int.from_bytes(_identity_hash(snapshot).digest()[:4], "little")
