"""DFT densities cached by structure and protocol, so that no single point is computed twice.

Layout: ``CACHE/<protocol>/<structure hash>.npz``, each a snapshot file of the data-set format
(:func:`bigdens.data.write_snapshot`: density in e/Å³, structure, provenance with the DFT timing).
Writes are atomic, so a killed run leaves either a whole entry or none.  Active-learning runs,
strategies and seeds that share a cache share every DFT already run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..data import Snapshot
    from ..datagen import DFTSettings
    from .candidates import Candidate


class DFTCache:
    """A directory of DFT snapshots keyed by (protocol, structure hash)."""

    def __init__(self, directory: str | Path, *, dft: "DFTSettings"):
        self.directory = Path(directory)
        self.dft = dft
        if self.directory.exists() and not self.directory.is_dir():
            raise InputError(f"DFT cache {str(self.directory)!r} exists and is not a folder; choose another")

    @property
    def folder(self) -> Path:
        return self.directory / self.dft.protocol

    def path(self, candidate: "Candidate") -> Path:
        return self.folder / f"{candidate.hash}.npz"

    def __contains__(self, candidate: "Candidate") -> bool:
        return self.path(candidate).is_file()

    def get(self, candidate: "Candidate", *, split: str = "train") -> "Snapshot | None":
        """The cached snapshot of ``candidate`` (named after it, in ``split``), or None."""
        from ..data import read_snapshot

        path = self.path(candidate)
        if not path.is_file():
            return None
        return read_snapshot(path, name=candidate.name, split=split)

    def put(self, candidate: "Candidate", snapshot: "Snapshot") -> Path:
        """Store ``snapshot`` (the DFT of ``candidate``) atomically."""
        from ..data import write_snapshot
        from ..store import structure_hash

        if structure_hash(snapshot.cell, snapshot.positions, snapshot.numbers) != candidate.hash:
            raise InputError(f"the snapshot given for {candidate.name!r} is of another structure")
        self.folder.mkdir(parents=True, exist_ok=True)
        return write_snapshot(self.path(candidate), snapshot)


def compute(candidate: "Candidate", *, dft: "DFTSettings", txt: str | Path | None = None) -> "Snapshot":
    """The DFT single point of ``candidate`` (GPAW, ``dft``'s protocol), as a snapshot with provenance."""
    from ..datagen import PlannedSnapshot, compute_snapshot

    info = candidate.info
    p = PlannedSnapshot(candidate.name, str(info.get("variant", candidate.source)), float(info.get("temperature", 0.0)),
                        int(info.get("index", 0)), "train", candidate.cell, candidate.positions, candidate.numbers,
                        dict(info.get("thermalization") or {}, candidate_source=candidate.source))
    return compute_snapshot(p, dft=dft, txt=txt)
