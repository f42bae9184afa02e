"""``bigdens verify``: a store's metadata, coordinates and atoms, then every block against the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SetupError
from .layout import VARIABLES, n_frames, require_attrs
from .ledger import read_block_charges, read_ledger
from .metadata import check_metadata
from .reader import BlockReader

if TYPE_CHECKING:  # pragma: no cover
    from ..blocks import Block


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`.

    Attributes
    ----------
    n_blocks : int
        Work units: the blocks, or in a trajectory store the (frame, block) units.
    missing : list of int
        Units without a ledger entry (never finished).
    corrupt : list of (int, str)
        Units whose data do not match their ledger entry, with the reason.
    problems : list of (str, str)
        Damage outside the blocks' data, as (array or file, reason): an array
        missing or with other metadata than :func:`create` writes, coordinates
        that are not the grid's, atoms that do not match the structure hash.
    """

    n_blocks: int
    missing: list = field(default_factory=list)
    corrupt: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    #: Frames of a trajectory store (None: one structure) and blocks per frame.
    n_frames: int | None = None
    blocks_per_frame: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt and not self.problems

    def label(self, unit: int) -> str:
        """``"block B"``, or ``"unit U (frame K, block B)"`` in a trajectory store."""
        if self.n_frames is None:
            return f"block {unit}"
        k, b = divmod(unit, self.blocks_per_frame)
        return f"unit {unit} (frame {k}, block {b})"


def verify(path: str | Path, *, progress: bool = False) -> VerifyReport:
    """Check a store: its arrays' metadata, coordinates and atoms, then every block against the ledger.

    Memory: one block of one variable at a time (and the atoms, in passes).

    Raises
    ------
    SetupError
        If ``path`` is not a bigdens store.
    """
    path = Path(path)
    attrs = require_attrs(path)
    frames = n_frames(attrs)
    ledger = read_ledger(path)
    readers = [BlockReader(path, attrs=attrs, frame=k, ledger=ledger) for k in range(frames or 1)] \
        if frames is not None else [BlockReader(path, attrs=attrs, ledger=ledger)]
    nb = len(readers[0].blocks)
    report = VerifyReport(n_blocks=nb * (frames or 1), problems=check_metadata(path, attrs), n_frames=frames,
                          blocks_per_frame=nb)
    from tqdm import tqdm

    with tqdm(total=report.n_blocks, unit="block", disable=None if progress else True, desc="verify") as bar:
        for reader in readers:
            for b in reader.blocks:
                _verify_unit(report, reader, b, reader.units.unit(reader.frame, b.index))
                bar.update()
    return report


def _verify_unit(report: VerifyReport, reader: BlockReader, b: "Block", unit: int) -> None:
    # One (frame, block) unit of verify(): missing, corrupt or fine.
    entry = reader.ledger.get(b.index)
    if entry is None:
        report.missing.append(unit)
        return
    if entry.pending is not None:
        report.corrupt.append((unit, "renormalization interrupted (rerun predict with --resume)"))
        return
    for name in VARIABLES:
        _, why = reader.read_block(name, b)
        if why is not None:
            report.corrupt.append((unit, why))
            return
    if entry.charges is not None:
        try:
            read_block_charges(reader.path, unit, entry)
        except SetupError:
            report.corrupt.append((unit, "its charges file is missing or differs from the ledger"))
