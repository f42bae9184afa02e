"""What a model was trained on: its lineage and the compositions of its training data.

A model's ``info`` (:attr:`bigdens.bnn.DensityModel.info`) records its
training data, one entry per snapshot with the snapshot's composition
(:func:`composition`); a fine-tuned model keeps its parent's record under
``info["parent"]``, recursively.  Training writes these records; the engine
(the composition check of ``bigdens predict``) and active learning read them.
"""

from __future__ import annotations

from typing import Iterable


def composition(numbers: Iterable[int]) -> dict[str, float]:
    """Atom fraction of each species, chemical symbol -> fraction (rounded to 1e-4).

    ``numbers``: atomic numbers, one per atom (array, list or :class:`ase.Atoms`).
    """
    from .structure import species_counts

    counts = species_counts(numbers)
    total = sum(counts.values())
    return {sym: round(n / total, 4) for sym, n in counts.items()}


def lineage(info: dict) -> list[dict]:
    """A model's record and those of the models it was fine-tuned from, newest first."""
    records = []
    while info:
        records.append(info)
        info = info.get("parent") or {}
    return records


def training_compositions(info: dict) -> dict[str, tuple[float, float]]:
    """Smallest and largest atom fraction of each species in a model's training data (both stages).

    Empty when the model records no compositions (models trained before they were recorded).
    """
    entries = [e for record in lineage(info) for e in (record.get("data") or {}).get("train") or []]
    comps = [e["composition"] for e in entries if isinstance(e.get("composition"), dict)]
    if not comps:
        return {}
    species = sorted({sym for c in comps for sym in c})
    return {sym: (min(c.get(sym, 0.0) for c in comps), max(c.get(sym, 0.0) for c in comps)) for sym in species}


def training_protocols(info: dict) -> set[str]:
    """The DFT protocols of a model's training data (both stages), as its snapshot records name them.

    Empty when the model records none (models trained before protocols were recorded).
    """
    entries = [e for record in lineage(info) for e in (record.get("data") or {}).get("train") or []]
    return {e["protocol"] for e in entries if isinstance(e.get("protocol"), str)}


__all__ = ["composition", "lineage", "training_compositions", "training_protocols"]
