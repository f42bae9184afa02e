"""``bigdens verify``: a store's metadata, coordinates and atoms, then every block against the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SetupError
import numpy as np

from .layout import VARIABLES, n_frames, require_attrs
from .ledger import read_block_charges, read_ledger
from .metadata import check_metadata
from .reader import BlockReader

if TYPE_CHECKING:  # pragma: no cover
    from ..blocks import Block
    from .ledger import LedgerEntry


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
    if attrs.get("complete") and report.ok:
        report.problems += attribute_problems(attrs, readers[0].units.frame_ledgers(ledger))
    return report


def frame_electrons(frame_ledgers: list[dict], dv: float) -> list[float]:
    """Each frame's predicted electrons, e: its ledger's raw ``density_sum`` in block order times ``dv`` (Å³), as
    the run records them in ``n_electrons_predicted`` (``frame_ledgers``: each frame's ledger keyed by block)."""
    return [sum(fl[b].density_sum for b in range(len(fl))) * dv for fl in frame_ledgers]


def attribute_problems(attrs: dict, frame_ledgers: list[dict]) -> list[tuple[str, str]]:
    """The run's results in a complete store's attributes, recomputed from its ledger: what differs.

    ``frame_ledgers``: each frame's ledger keyed by block (one for a single structure).  Checks the
    predicted electrons (Σ density_sum · dV per frame, in block order, as the run summed them), the largest
    σ, the flagged points, and the domain verdict: ``in_domain`` must say whether ``domain_reasons`` is
    empty, and those must hold every reason the checks after the run give on these numbers
    (:func:`bigdens.domain.check_after`).  Returns ``("attributes", reason)`` pairs.
    """
    from ..domain import check_after

    problems = []
    dv = float(attrs.get("volume_element") or 0.0)
    n_pred = frame_electrons(frame_ledgers, dv)
    recorded = attrs.get("n_electrons_predicted")
    want = n_pred if isinstance(recorded, list) else n_pred[0]
    if recorded is not None and not np.allclose(np.asarray(recorded, dtype=np.float64), want, rtol=1e-12, atol=0):
        problems.append(("attributes", f"n_electrons_predicted is {recorded!r}, the ledger gives {want!r} (edited)"))
    entries = [e for fl in frame_ledgers for e in fl.values()]
    top = max((e.max_std for e in entries), default=None)
    if attrs.get("max_std") is not None and attrs["max_std"] != top:
        problems.append(("attributes", f"max_std is {attrs['max_std']!r}, the ledger gives {top!r} (edited)"))
    threshold = attrs.get("epistemic_threshold")
    counts = [[e.n_epistemic_high for e in fl.values()] for fl in frame_ledgers]
    flagged = None if threshold is None or any(None in c for c in counts) else [sum(c) for c in counts]
    if attrs.get("n_epistemic_high") is not None and flagged is not None and attrs["n_epistemic_high"] != sum(flagged):
        problems.append(("attributes", f"n_epistemic_high is {attrs['n_epistemic_high']!r}, the ledger gives "
                                       f"{sum(flagged)} (edited)"))
    reasons = attrs.get("domain_reasons")
    if not isinstance(reasons, list) or attrs.get("in_domain") is not (not reasons):
        problems.append(("attributes", f"in_domain is {attrs.get('in_domain')!r} with domain_reasons {reasons!r} "
                                       "(edited: in_domain is true exactly when there are no reasons)"))
        return problems
    n_points = int(np.prod(attrs["grid_shape"]))
    for k, fl in enumerate(frame_ledgers):
        negatives = [e.negative_sum for e in fl.values()]
        after = check_after(n_points=n_points, n_flagged=None if flagged is None else flagged[k],
                            n_electrons=n_pred[k], n_expected=attrs.get("n_electrons_expected"),
                            negative_electrons=None if None in negatives else max(0.0, -sum(negatives) * dv))
        lost = [r for r in after.reasons if r not in reasons]
        if lost:
            problems.append(("attributes", f"domain_reasons lack what the ledger's numbers give: {lost[0]} (edited)"))
            break
    return problems


def damaged_units(path: str | Path, attrs: dict, ledger: dict) -> list[tuple[int, str]]:
    """Recorded units of the store whose data, charges file or entry fail :func:`unit_problem`: (unit, reason).

    What ``bigdens predict --resume`` checks before it counts a unit as done.  Units with an unfinished
    renormalization are left to it (it finishes them).  Memory: one block of one variable at a time.
    """
    frames = n_frames(attrs)
    bad = []
    for k in range(frames or 1):
        reader = BlockReader(path, attrs=attrs, frame=None if frames is None else k, ledger=ledger)
        for b in reader.blocks:
            entry = reader.ledger.get(b.index)
            if entry is None or entry.pending is not None:
                continue
            why = unit_problem(reader, b, entry)
            if why is not None:
                bad.append((entry.key, why))
    return bad


def _verify_unit(report: VerifyReport, reader: BlockReader, b: "Block", unit: int) -> None:
    # One (frame, block) unit of verify(): missing, corrupt or fine.
    entry = reader.ledger.get(b.index)
    if entry is None:
        report.missing.append(unit)
        return
    why = unit_problem(reader, b, entry)
    if why is not None:
        report.corrupt.append((unit, why))


def unit_problem(reader: BlockReader, b: "Block", entry: "LedgerEntry") -> str | None:
    """Why the recorded unit ``b`` of ``reader``'s frame is not what its ledger entry says, or None.

    Checks the entry (:meth:`BlockReader.ledger_problem`: its run, so that a block copied in with its entry
    from another store fails), every variable's checksum, the numbers the entry derived from the data (electron sum, negative sum, largest σ and where)
    and the block's charges file.  Reads the block once.
    """
    if entry.pending is not None:
        return "renormalization interrupted (rerun predict with --resume)"
    values = {}
    for name in VARIABLES:
        values[name], why = reader.read_block(name, b)
        if why is not None:
            return why
    why = derived_problem(entry, values, b)
    if why is not None:
        return why
    if entry.charges is not None:
        try:
            read_block_charges(reader.path, entry.key, entry)
        except SetupError:
            return "its charges file is missing or differs from the ledger"
    return None


#: Relative tolerance of an electron sum recomputed from a ``--renormalize``d block (float32 rounding of the
#: scaled values: about 6e-8 a point, at most that in the sum).
SCALED_SUM_RTOL = 1e-6


def derived_problem(entry: "LedgerEntry", values: dict[str, np.ndarray], b: "Block") -> str | None:
    """Why the numbers ``entry`` derived from its block differ from ``values`` (the block as read), or None.

    ``density_sum`` and ``negative_sum`` (e/Å³ summed over points, of the unscaled mean) are recomputed from
    ``density`` divided by the entry's ``--renormalize`` factor; the largest σ (``density_std``,
    ``density_std_epistemic``) and its grid index exactly.
    """
    density = np.asarray(values["density"], dtype=np.float64)
    raw = density if entry.scale == 1.0 else density / float(entry.scale)
    tol = 0.0 if entry.scale == 1.0 else SCALED_SUM_RTOL * float(np.abs(raw).sum())
    tol += 1e-12 * float(np.abs(raw).sum())  # float64 summation order
    sums = {"density_sum": float(raw.sum()), "negative_sum": float(raw[raw < 0].sum())}
    for name, have in sums.items():
        recorded = getattr(entry, name)
        if recorded is not None and not abs(float(recorded) - have) <= tol:
            return f"its ledger's {name} is {recorded!r}, the block's data give {have!r} (ledger entry edited)"
    for name, value_attr, index_attr in (("density_std", "max_std", "max_std_index"),
                                         ("density_std_epistemic", "max_std_epistemic", "max_std_epistemic_index")):
        recorded = getattr(entry, value_attr)
        if recorded is None:
            continue
        std = values[name]
        where = np.unravel_index(int(np.argmax(std)), std.shape)
        index = tuple(int(a + w) for a, w in zip(b.start, where))
        if float(std[where]) != float(recorded) or tuple(getattr(entry, index_attr) or ()) != index:
            return (f"its ledger's {value_attr} is {recorded!r} at {getattr(entry, index_attr)}, the block's data "
                    f"give {float(std[where])!r} at {index} (ledger entry edited)")
    return None
