"""Reading a store's density variables block by block, each block checked against its ledger entry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SetupError
from .damage import damage_error, problems_error
from .layout import WorkUnits, _quiet, _zarr, blocks_of, checksum, n_frames, require_attrs
from .ledger import read_ledger
from .metadata import check_metadata

if TYPE_CHECKING:  # pragma: no cover
    from ..blocks import Block


class BlockReader:
    """Read the density variables of a store block by block, each block checked against its ledger entry.

    A block passes if its ledger entry holds the checksum of what is read.
    In a store marked complete, a block without an entry fails; in an
    incomplete one it is unwritten and reads NaN without being read.

    Parameters
    ----------
    path
        The store.
    attrs
        Its attributes (read if not given).
    frame
        Of a trajectory store, the frame to read (position along its ``frame`` axis; required there):
        blocks and ledger are that frame's, keyed by block index.  Must be None for a single structure.
    ledger
        The store's ledger (read if not given).
    """

    def __init__(self, path: str | Path, *, attrs: dict | None = None, frame: int | None = None,
                 ledger: dict | None = None):
        self.path = Path(path)
        self.attrs = require_attrs(path) if attrs is None else attrs
        self.complete = bool(self.attrs.get("complete"))
        try:
            self.shape = tuple(int(n) for n in self.attrs["grid_shape"])
            self.blocks = blocks_of(self.attrs)
        except (KeyError, TypeError, ValueError) as exc:
            from ..errors import InputError

            raise InputError(f"{str(path)!r} is damaged: its attributes lack the grid or run settings ({exc!r}); "
                             "predict it again with `bigdens predict ... --overwrite`") from None
        self.frame = check_frame(path, self.attrs, frame)
        ledger = read_ledger(path) if ledger is None else ledger
        self.units = WorkUnits(len(self.blocks), n_frames(self.attrs))
        self.ledger = self.units.frame_ledger(ledger, self.frame)
        self._arrays: dict = {}

    def _array(self, name: str):
        # The variable as its own zarr.json describes it (not the consolidated copy, which hides a deleted folder).
        if name not in self._arrays:
            zarr = _zarr()
            try:
                with _quiet():
                    self._arrays[name] = zarr.open_array(str(self.path / name), mode="r")
            except Exception as exc:  # noqa: BLE001  (missing folder, damaged zarr.json: many types)
                self._arrays[name] = exc
        return self._arrays[name]

    def ledger_problem(self, block: "Block", name: str | None = None) -> str | None:
        """Why ``block``'s ledger entry cannot vouch for it, or None (also None for unwritten blocks)."""
        entry = self.ledger.get(block.index)
        if entry is None:
            return "no ledger entry although the store says complete" if self.complete else None
        if entry.pending is not None and self.complete:
            return "renormalization interrupted (rerun predict with --resume)"
        if entry.run_id is not None and entry.run_id != self.attrs.get("run_id"):
            return (f"its ledger entry was recorded by another run ({entry.run_id}; this store's is "
                    f"{self.attrs.get('run_id')}): a block copied in from another store")
        if name is not None and not isinstance((entry.checksums or {}).get(name), str):
            return f"its ledger entry has no checksum of {name!r}"
        return None

    def check_ledger(self) -> list[tuple[int, str]]:
        """Blocks whose ledger entries are missing (complete store) or unusable, with the reason."""
        out = []
        for b in self.blocks:
            why = self.ledger_problem(b)
            if why is not None:
                out.append((b.index, why))
        return out

    def check(self, name: str, block: "Block", values: np.ndarray) -> str | None:
        """Why ``values`` (the block as read) are not what the ledger recorded, or None."""
        why = self.ledger_problem(block, name)
        if why is not None:
            return why
        entry = self.ledger[block.index]
        have = checksum(values)
        if have == entry.checksums[name]:
            return None
        if name == "density" and have == (entry.pending or {}).get("checksum"):
            return None  # a run is renormalizing this block now: scaled, ledger not yet updated
        return f"{name} checksum differs (chunk missing, changed or swapped)"

    def _read(self, name: str, selection) -> tuple[np.ndarray | None, str | None]:
        arr = self._array(name)
        if isinstance(arr, Exception):
            return None, f"{name} array unreadable ({type(arr).__name__}; folder or zarr.json missing or damaged)"
        if self.frame is not None:
            selection = (self.frame,) + (selection if isinstance(selection, tuple) else (selection,))
        try:
            return np.asarray(arr[selection]), None
        except Exception as exc:  # noqa: BLE001  (a truncated chunk fails in the codec with many error types)
            return None, f"{name} chunk unreadable ({type(exc).__name__})"

    def read_block(self, name: str, block: "Block") -> tuple[np.ndarray | None, str | None]:
        """``(values, None)`` for a block that passes, ``(None, reason)`` for one that fails.

        An unwritten block of an incomplete store gives ``(None, None)``.
        """
        if block.index not in self.ledger:
            return None, self.ledger_problem(block, name)
        why = self.ledger_problem(block, name)
        if why is not None:
            return None, why
        values, why = self._read(name, block.slices)
        if why is None:
            why = self.check(name, block, values)
        return (values, None) if why is None else (None, why)

    def slabs(self, name: str, axis: int = 0):
        """Yield ``(start, values)``: block-thick slabs of a variable along ``axis``, every block checked.

        Along axis 0 a slab is ``[start:stop, :, :]``, along axis 2
        ``[:, :, start:stop]`` (``stop - start`` is the block edge along that
        axis); the slabs come in order and cover the grid once.

        Memory: one slab, e.g. ``block[0] · n2 · n3`` float32 values along
        axis 0, ``n1 · n2 · block[2]`` along axis 2.  Unwritten blocks of an
        incomplete store read NaN.

        Raises
        ------
        InputError
            At the first slab with a failing block, after checking the rest
            of the variable, naming every failing block and the repair.
        """
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        starts = sorted({b.start[axis] for b in self.blocks})
        for s in starts:
            members = [b for b in self.blocks if b.start[axis] == s]
            stop = members[0].stop[axis]
            bad = []
            selection = tuple(slice(s, stop) if d == axis else slice(None) for d in range(3))
            values, why = self._read(name, selection)
            if why is not None:  # some chunk of the slab fails: find which blocks
                bad = [(b.index, w) for b in members if (w := self.read_block(name, b)[1]) is not None]
                bad = bad or [(members[0].index, why)]
            else:
                for b in members:
                    local = tuple(slice(None) if d == axis else b.slices[d] for d in range(3))
                    if b.index not in self.ledger and not self.complete:
                        values[local] = np.nan
                        continue
                    why = self.check(name, b, values[local])
                    if why is not None:
                        bad.append((b.index, why))
            if bad:
                rest = [b for b in self.blocks if b.start[axis] > s]
                for b in rest:
                    _, why = self.read_block(name, b)
                    if why is not None:
                        bad.append((b.index, why))
                raise damage_error(self.path, bad, n_blocks=len(self.blocks))
            yield s, values

    def plane(self, names, axis: int, index: int) -> dict[str, np.ndarray]:
        """The lattice plane ``index`` along ``axis`` of each variable in ``names``, every block it cuts checked.

        Returns
        -------
        dict
            Name -> float32 array of the plane's shape; unwritten blocks of
            an incomplete store read NaN.

        Raises
        ------
        InputError
            If a block the plane cuts fails, naming every such block and the repair.
        """
        keep = [d for d in range(3) if d != axis]
        out = {name: np.full([self.shape[d] for d in keep], np.nan, dtype=np.float32) for name in names}
        bad = []
        for b in self.blocks:
            if not b.start[axis] <= index < b.stop[axis]:
                continue
            for name in names:
                values, why = self.read_block(name, b)
                if why is not None:
                    bad.append((b.index, why))
                    break
                if values is not None:
                    sel = [slice(None)] * 3
                    sel[axis] = index - b.start[axis]
                    out[name][b.slices[keep[0]], b.slices[keep[1]]] = values[tuple(sel)]
        if bad:
            raise damage_error(self.path, bad, n_blocks=len(self.blocks))
        return out


class CheckedSlabs:
    """A variable of a store as a forward-only array for writers, read through :meth:`BlockReader.slabs`.

    With ``axis=0`` (default), ``[i]`` (or ``[i, :, :]``) gives the (n2, n3)
    slab ``i``, as :func:`bigdens.io.cube.write_cube` asks; with ``axis=2``,
    ``[:, :, k]`` gives the (n1, n2) plane ``k``, as
    :func:`bigdens.io.chgcar.write_chgcar` and :func:`bigdens.io.xsf.write_xsf`
    ask.  Indices must come in increasing order (each block is read and checked
    once); memory is one block-thick slab along ``axis``.  Values float32,
    the store's units (e/Å³).

    Attributes
    ----------
    shape : tuple of int
        The grid shape (n1, n2, n3).
    axis : int
        The axis along which indices are taken.
    """

    def __init__(self, reader: BlockReader, name: str, *, axis: int = 0):
        if axis not in (0, 2):
            raise ValueError(f"CheckedSlabs reads along axis 0 or 2, got {axis!r}")
        self.shape = reader.shape
        self.axis = axis
        self.dtype = np.dtype(np.float32)
        self._slabs = reader.slabs(name, axis)
        self._lo = None
        self._values = None

    def _index(self, key) -> int:
        # The index along self.axis that `key` asks for; anything else (a second axis, a range) is refused.
        full = slice(None)
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (full,) * (3 - len(key))
        rest = [k for d, k in enumerate(key) if d != self.axis]
        i = key[self.axis]
        if len(key) != 3 or any(k != full for k in rest) or not isinstance(i, (int, np.integer)):
            raise IndexError(f"CheckedSlabs along axis {self.axis} gives single planes only, got {key!r}")
        return int(i)

    def __getitem__(self, key) -> np.ndarray:
        i = self._index(key)
        while self._values is None or not self._lo <= i < self._lo + self._values.shape[self.axis]:
            try:
                self._lo, self._values = next(self._slabs)
            except StopIteration:
                raise IndexError(f"plane {i} along axis {self.axis} asked for out of order or beyond "
                                 f"{self.shape[self.axis]}") from None
        return self._values[i - self._lo] if self.axis == 0 else self._values[:, :, i - self._lo]


def check_frame(path: str | Path, attrs: dict, frame: int | None) -> int | None:
    """``frame`` checked against the store: a position on a trajectory store's frame axis, None otherwise.

    Raises
    ------
    SetupError
        A frame asked of a single structure's store, none of a trajectory store, or one out of range.
    """
    frames = n_frames(attrs)
    if frames is None:
        if frame is not None:
            raise SetupError(f"{str(path)!r} holds one structure, not a trajectory: drop --frame")
        return None
    if frame is None:
        raise SetupError(f"{str(path)!r} holds {frames} frames: choose one with --frame K (0 to {frames - 1})")
    if not -frames <= frame < frames:
        raise SetupError(f"--frame {frame} is out of range: {str(path)!r} holds {frames} frames (0 to {frames - 1})")
    return frame % frames


def open_checked(path: str | Path, *, attrs: dict | None = None, blocks: bool = True,
                 frame: int | None = None) -> BlockReader:
    """A :class:`BlockReader` of a store whose metadata, coordinates and atoms pass :func:`check_metadata`.

    With ``blocks`` and a store marked complete, every block (of ``frame``, in a trajectory store) must
    also have a usable ledger entry.

    Raises
    ------
    InputError
        One line naming the damage and the repair.
    """
    reader = BlockReader(path, attrs=attrs, frame=frame)
    problems = check_metadata(path, reader.attrs)
    if problems:
        raise problems_error(path, problems)
    if blocks:
        bad = reader.check_ledger()
        if bad:
            raise damage_error(path, bad, n_blocks=len(reader.blocks))
    return reader
