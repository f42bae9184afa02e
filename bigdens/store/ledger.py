"""The ledger (one entry per finished work unit, the truth about which blocks are done), the per-atom
sums beside it, and writing a block's data and the per-atom charge variables."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._files import write_text
from ..errors import RunError
from .damage import repair_hint
from .layout import (CHARGE_UNITS, CHARGE_VARIABLES, LEDGER, _jsonable, _quiet, _zarr, checksum, frame_coordinates,
                     read_attrs)

if TYPE_CHECKING:  # pragma: no cover
    from ..blocks import Block


@dataclass(frozen=True)
class LedgerEntry:
    """The record of one finished work unit (a block; in a trajectory store a (frame, block) pair).

    Densities e/Å³, grid indices of the whole grid.  :meth:`from_json` is the one place that knows the
    older layouts of a store's ledger (fields a bigdens before them did not write read as None, and
    ``scale`` as 1); :meth:`to_json` writes the current layout, key for key as before.
    """

    block: int
    start: tuple
    stop: tuple
    #: Variable name -> blake2b-128 of the block as read back (``density``: as now scaled).
    checksums: dict
    #: ``density``'s checksum before ``--renormalize``.
    raw_checksum: str
    #: The raw mean density summed over the block's points (times dV: electrons).
    density_sum: float
    max_std: float
    max_std_index: tuple
    #: Largest epistemic σ and where (None: recorded before bigdens counted them).
    max_std_epistemic: float | None = None
    max_std_epistemic_index: tuple | None = None
    #: Sum of the negative mean values (≤ 0; None: recorded before bigdens counted them).
    negative_sum: float | None = None
    #: Points above the model's epistemic threshold (None: no threshold, or recorded before it was counted).
    n_epistemic_high: int | None = None
    #: The ``--renormalize`` factor applied (1: none).
    scale: float = 1.0
    #: The block's per-atom sums file: ``{"n_atoms", "checksum"}`` (None: recorded before charges existed).
    charges: dict | None = None
    #: In a trajectory store, the unit and the frame (None otherwise).
    unit: int | None = None
    frame: int | None = None
    #: An unfinished renormalization: ``{"scale", "checksum"}`` the block has once scaled (None: none).
    pending: dict | None = None
    #: The store's ``run_id`` when the block was recorded (None: recorded before entries carried it), so that
    #: a block copied in from another store, with its entry, is told apart.
    run_id: str | None = None

    #: The fields older ledgers may lack, and what they read as.
    _LATER = ("max_std_epistemic", "max_std_epistemic_index", "negative_sum", "n_epistemic_high", "charges",
              "unit", "frame", "pending", "run_id")

    @property
    def key(self) -> int:
        """The work unit this entry records (the ledger's key)."""
        return self.block if self.unit is None else self.unit

    def replace(self, **changes) -> "LedgerEntry":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """The entry as the ledger file holds it (``unit``/``frame``, ``pending`` and ``run_id`` only when set)."""
        out = {"block": self.block, "start": list(self.start), "stop": list(self.stop),
               "checksums": dict(self.checksums), "raw_checksum": self.raw_checksum,
               "density_sum": self.density_sum, "max_std": self.max_std, "max_std_index": list(self.max_std_index),
               "max_std_epistemic": self.max_std_epistemic,
               "max_std_epistemic_index": None if self.max_std_epistemic_index is None
               else list(self.max_std_epistemic_index),
               "negative_sum": self.negative_sum, "n_epistemic_high": self.n_epistemic_high, "scale": self.scale,
               "charges": self.charges}
        if self.unit is not None:
            out.update(unit=self.unit, frame=self.frame)
        if self.pending is not None:
            out["pending"] = self.pending
        if self.run_id is not None:
            out["run_id"] = self.run_id
        return _jsonable(out)

    @classmethod
    def from_json(cls, data: dict) -> "LedgerEntry":
        """An entry from its JSON form, of this or an older layout.

        Raises
        ------
        KeyError, TypeError, ValueError
            If ``data`` is not a ledger entry.
        """
        later = {name: data.get(name) for name in cls._LATER}
        for name in ("max_std_epistemic_index",):
            if later[name] is not None:
                later[name] = tuple(later[name])
        return cls(block=int(data["block"]), start=tuple(data["start"]), stop=tuple(data["stop"]),
                   checksums=dict(data["checksums"]), raw_checksum=data["raw_checksum"],
                   density_sum=data["density_sum"], max_std=data["max_std"],
                   max_std_index=tuple(data["max_std_index"]), scale=data.get("scale", 1.0), **later)


def ledger_file(path: str | Path, index: int) -> Path:
    return Path(path) / LEDGER / f"block-{index:07d}.json"


def write_ledger(path: str | Path, index: int, entry: LedgerEntry) -> None:
    """Record a finished block (temporary file + rename: never half written)."""
    target = ledger_file(path, index)
    try:
        write_text(target, json.dumps(entry.to_json()), fsync=False)
    except OSError as exc:
        raise RunError(f"cannot record block {index} in the ledger of {str(path)!r} ({exc.strerror or exc}); "
                       "free space and rerun with --resume") from None


def read_ledger(path: str | Path) -> dict[int, LedgerEntry]:
    """Finished units: index (the block; in a trajectory store the unit) -> ledger entry (unreadable ones: missing)."""
    out = {}
    folder = Path(path) / LEDGER
    for f in folder.glob("block-*.json"):
        try:
            entry = LedgerEntry.from_json(json.loads(f.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        out[entry.key] = entry
    return out


def read_ledger_entry(path: str | Path, index: int) -> LedgerEntry:
    """The ledger entry of one block.

    Raises
    ------
    RunError
        If the block has no readable entry.
    """
    try:
        return LedgerEntry.from_json(json.loads(ledger_file(path, index).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunError(f"block {index} has no readable ledger entry in {str(path)!r} ({exc})") from None


def write_block(arrays: dict, block: "Block", values: dict[str, np.ndarray], *, path: str | Path,
                frame: int | None = None) -> dict[str, str]:
    """Write one block of every variable, read it back and checksum it.

    Parameters
    ----------
    arrays
        The store's variables (from :func:`open_variables`).
    block
        The block (whole chunks).
    values
        Variable name -> float32 array of shape ``block.shape``.
    path
        The store (for messages).
    frame
        The frame (position along the store's ``frame`` axis) of a trajectory store; None otherwise.

    Returns
    -------
    dict
        Variable name -> checksum of what was read back.

    Raises
    ------
    RunError
        If writing fails (disk full, permissions) or the read-back differs.
    """
    sums = {}
    where = block.slices if frame is None else (frame,) + block.slices
    try:
        for name, arr in arrays.items():
            arr[where] = values[name]
        for name, arr in arrays.items():
            sums[name] = checksum(arr[where])
    except OSError as exc:
        raise RunError(f"cannot write block {block.index} to {str(path)!r} ({exc.strerror or exc}); the ledger "
                       "is consistent: free space and rerun with --resume") from None
    for name in arrays:
        if sums[name] != checksum(values[name]):
            raise RunError(f"block {block.index} of {name!r} reads back differently from what was written "
                           f"to {str(path)!r}; check the file system and rerun with --resume")
    return sums


def charges_file(path: str | Path, index: int) -> Path:
    """The file of block ``index``'s per-atom sums (beside its ledger entry)."""
    return Path(path) / LEDGER / f"charges-{index:07d}.npy"


def write_block_charges(path: str | Path, index: int, owners: np.ndarray, sums: np.ndarray,
                        deviations: np.ndarray) -> dict:
    """Write one block's per-atom sums (:mod:`bigdens.charges`) atomically; returns the ledger's ``charges`` field.

    The file is one float64 ``.npy`` table of shape (K, 2 + S): the atom
    index, ``M`` and the S values of ``D`` per owning atom.  Its blake2b
    digest goes into the block's ledger entry, written after it.
    """
    import io

    from .._files import write_bytes

    owners = np.asarray(owners, dtype=np.int64)
    table = np.empty((len(owners), 2 + deviations.shape[1]))
    table[:, 0] = owners
    table[:, 1] = sums
    table[:, 2:] = deviations
    buf = io.BytesIO()
    np.save(buf, table, allow_pickle=False)
    data = buf.getvalue()
    try:
        write_bytes(charges_file(path, index), data, fsync=False)
    except OSError as exc:
        raise RunError(f"cannot write the charges of block {index} to {str(path)!r} ({exc.strerror or exc}); "
                       "free space and rerun with --resume") from None
    return {"n_atoms": len(owners), "checksum": hashlib.blake2b(data, digest_size=16).hexdigest()}


def read_block_charges(path: str | Path, index: int, entry: LedgerEntry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block ``index``'s per-atom sums ``(owners (K,), M (K,), D (K, S))``, checked against its ledger entry.

    Raises
    ------
    InputError
        If the file is missing, unreadable or differs from what the ledger recorded.
    """
    import io

    from ..errors import InputError

    want = (entry.charges or {}).get("checksum")
    try:
        data = charges_file(path, index).read_bytes()
    except OSError as exc:
        raise InputError(f"the charges of block {index} of {str(path)!r} are unreadable ({exc.strerror or exc}); "
                         f"{repair_hint(path)}") from None
    if hashlib.blake2b(data, digest_size=16).hexdigest() != want:
        raise InputError(f"the charges of block {index} of {str(path)!r} differ from its ledger entry; "
                         f"{repair_hint(path)}")
    table = np.load(io.BytesIO(data), allow_pickle=False)
    return table[:, 0].astype(np.int64), table[:, 1].copy(), table[:, 2:].copy()


def write_charges(path: str | Path, charge: np.ndarray, charge_std: np.ndarray) -> None:
    """Write (or replace) the per-atom variables ``charge`` and ``charge_std`` (float64, e).

    Shape (n_atoms,), dims atom; or (n_frames, n_atoms), dims (frame, atom), for a trajectory store.
    """
    zarr = _zarr()
    charge = np.asarray(charge)
    n = charge.shape[-1]
    lead = charge.shape[:-1]
    coordinates = frame_coordinates(read_attrs(path) or {}) if lead else None
    try:
        with _quiet():
            root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
            for name, values in (("charge", charge), ("charge_std", charge_std)):
                arr = root.create_array(name, shape=charge.shape, chunks=(1,) * len(lead) + (min(max(n, 1), 1 << 20),),
                                        dtype="float64", dimension_names=("frame",) * len(lead) + ("atom",),
                                        overwrite=True,
                                        attributes={"units": CHARGE_UNITS, "long_name": CHARGE_VARIABLES[name],
                                                    **({"coordinates": coordinates} if coordinates else {})})
                arr[:] = np.asarray(values, dtype=np.float64)
            zarr.consolidate_metadata(str(path))
    except OSError as exc:
        raise RunError(f"cannot write the charges to {str(path)!r} ({exc.strerror or exc}); free space and rerun "
                       "with --resume") from None
