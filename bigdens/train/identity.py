"""A snapshot's identity (name, atomic numbers, positions, cell): its digest and its Monte Carlo block index;
which snapshots a model trained on (:func:`trained_on`)."""

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


def trained_on(info: dict, snapshots) -> list[tuple[str, str]]:
    """The snapshots among ``snapshots`` that a model, at any stage of its lineage, trained on.

    Each training record (``info["data"]["train"]`` of the model and of every model it was
    fine-tuned from, :func:`bigdens.lineage.lineage`) is matched by the most telling key it holds:

    1. ``structure_digest`` (:func:`bigdens.data.structure_digest`: cell, positions, atomic numbers;
       recorded by :func:`bigdens.train.train` and :func:`bigdens.train.finetune` since it existed):
       a renamed or moved copy of a training cell is that cell;
    2. else ``digest`` (:func:`snapshot_digest`: the name and the structure; older models): a
       renamed copy goes unseen, another data set's cell named alike is not the training cell;
    3. else (models that recorded names only) the name: a cell named alike counts as trained on.

    Parameters
    ----------
    info
        The model's ``info`` (:attr:`bigdens.bnn.DensityModel.info`).
    snapshots
        Snapshots (anything with ``name``, ``cell``, ``positions`` and ``numbers``).

    Returns
    -------
    list of (str, str)
        ``(snapshot name, name of the training record it matches)`` per matching snapshot, in the
        order of ``snapshots``; the two names differ for a renamed copy.
    """
    from ..data import structure_digest
    from ..lineage import lineage

    records = [d for r in lineage(info) for d in (r.get("data") or {}).get("train") or []]
    structures = {d["structure_digest"]: d.get("name") for d in records if "structure_digest" in d}
    identities = {d["digest"]: d.get("name") for d in records if "structure_digest" not in d and "digest" in d}
    names = {d.get("name") for d in records if "structure_digest" not in d and "digest" not in d}
    out = []
    for s in snapshots:
        if (key := structure_digest(s)) in structures:
            out.append((s.name, structures[key]))
        elif (key := snapshot_digest(s)) in identities:
            out.append((s.name, identities[key]))
        elif s.name in names:
            out.append((s.name, s.name))
    return out
