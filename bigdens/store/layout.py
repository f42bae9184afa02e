"""What every part of the store shares: its format, variables and array layouts, hashes and checksums.

Also reading a store's global attributes (:func:`read_attrs`) and the quiet opening of its zarr group.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..blocks import Block


#: Value of the ``format`` attribute that marks a bigdens store.
STORE_FORMAT = "bigdens-density"
#: Version of this layout; stores with a larger number are refused.  Version 2 added ``atom_tiles``.
STORE_VERSION = 2
#: Group of the atoms sorted by tile (:mod:`bigdens.atomtiles`), and the rows per chunk of its arrays
#: (small, so that a worker reading a block's neighbourhood decodes little beyond it).
TILES = "atom_tiles"
TILE_ROWS = 1 << 14
#: Name of the ledger group.
LEDGER = "ledger"
#: Density variables: name -> long name (all e/Å³, float32, dims x, y, z).
VARIABLES = {
    "density": "predicted electron density (Monte Carlo mean)",
    "density_std_epistemic": "epistemic standard deviation of the density (weight uncertainty)",
    "density_std_aleatoric": "aleatoric standard deviation of the density (predicted noise)",
    "density_std": "total standard deviation of the density, sqrt(epistemic^2 + aleatoric^2)",
}
DENSITY_UNITS = "electron/angstrom^3"
#: Per-atom variables written when a run completes (:mod:`bigdens.charges`): name -> long name (float64, dims atom).
CHARGE_VARIABLES = {
    "charge": "electrons in the atom's Voronoi cell (grid points nearest to it) of the mean density",
    "charge_std": "epistemic standard deviation of charge over the Monte Carlo samples",
}
CHARGE_UNITS = "electron"


def n_frames(attrs: dict) -> int | None:
    """Frames of a trajectory store (its ``n_frames`` attribute), None for a single structure's store."""
    n = attrs.get("n_frames")
    return None if n is None else int(n)


@dataclass(frozen=True)
class WorkUnits:
    """The work units of a store: the one place that numbers them.

    A single structure's units are its blocks; a trajectory store's are
    (frame, block) pairs numbered ``frame · n_blocks + block``.  The ledger,
    the charges files and the tasks are keyed by unit.

    Parameters
    ----------
    n_blocks
        Blocks per frame.
    n_frames
        Frames of a trajectory store; None for a single structure.
    """

    n_blocks: int
    n_frames: int | None = None

    @property
    def n_units(self) -> int:
        """Units of the whole store (every frame's blocks)."""
        return (self.n_frames or 1) * self.n_blocks

    def unit(self, frame: int | None, block: int) -> int:
        """The unit of ``block`` in ``frame`` (None: a single structure, the block itself)."""
        return block if frame is None else frame * self.n_blocks + block

    def first(self, frame: int | None) -> int:
        """The first unit of ``frame`` (0 for a single structure)."""
        return self.unit(frame, 0)

    def split(self, unit: int) -> tuple[int | None, int]:
        """(frame, block) of ``unit``: frame None for a single structure."""
        if self.n_frames is None:
            return None, unit
        return divmod(unit, self.n_blocks)

    def frame_of(self, unit: int) -> int:
        """The frame of ``unit`` (0 for a single structure)."""
        return unit // self.n_blocks

    def frame_ledger(self, ledger: dict, frame: int | None) -> dict:
        """The entries of ``frame`` (None: a single structure's, all of them), keyed by block index."""
        if frame is None:
            return dict(ledger)
        return {u - self.first(frame): e for u, e in ledger.items() if self.frame_of(u) == frame}

    def frame_ledgers(self, ledger: dict) -> list[dict]:
        """:meth:`frame_ledger` of every frame (one for a single structure)."""
        if self.n_frames is None:
            return [self.frame_ledger(ledger, 0)]
        return [self.frame_ledger(ledger, k) for k in range(self.n_frames)]


def unit_index(frame: int | None, block: int, n_blocks: int) -> int:
    """The work unit of ``block`` in ``frame`` (None: a single structure, the block itself): :meth:`WorkUnits.unit`."""
    return WorkUnits(n_blocks).unit(frame, block)


def trajectory_hash(cell, frames, numbers) -> str:
    """sha256 (hex) of a constant cell (Å), every frame's positions (Å, in order) and the atomic numbers.

    Equals :func:`structure_hash` for one frame (it hashes the same bytes).
    """
    return structure_hash_chunks(cell, frames, [numbers])


def structure_hash(cell, positions, numbers) -> str:
    """sha256 (hex) of a structure's cell (Å), positions (Å) and atomic numbers."""
    return structure_hash_chunks(cell, [positions], [numbers])


def structure_hash_chunks(cell, position_chunks, number_chunks) -> str:
    """:func:`structure_hash` of a structure given as consecutive chunks (iterables of arrays)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(cell, dtype=np.float64).tobytes())
    for p in position_chunks:
        h.update(np.ascontiguousarray(p, dtype=np.float64).tobytes())
    for z in number_chunks:
        h.update(np.ascontiguousarray(z, dtype=np.int64).tobytes())
    return h.hexdigest()


def checksum(values: np.ndarray) -> str:
    """blake2b-128 (hex) of an array's float32 bytes in C order."""
    return hashlib.blake2b(np.ascontiguousarray(values, dtype=np.float32).tobytes(), digest_size=16).hexdigest()


def _zarr():
    import zarr

    return zarr


@contextmanager
def _quiet():
    # Consolidated metadata is "not yet in the v3 spec" and the ledger's JSON
    # files are "not zarr nodes": both warnings are expected here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy.*")
        yield


def read_attrs(path: str | Path) -> dict | None:
    """Global attributes of the bigdens store at ``path``, or None if it is not one."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) and attrs.get("format") == STORE_FORMAT else None


def require_attrs(path: str | Path) -> dict:
    """:func:`read_attrs` of a store that must be one, or a :class:`SetupError` that says what ``path`` is instead.

    Tells apart: nothing there, a file, a folder without ``zarr.json``, a ``zarr.json`` that is not
    readable JSON (a half-written or damaged store: repair or predict again), and another Zarr group.
    """
    from ..errors import SetupError

    attrs = read_attrs(path)
    if attrs is not None:
        return attrs
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise SetupError(f"{name!r} does not exist; give a store written by `bigdens predict`")
    if not p.is_dir():
        raise SetupError(f"{name!r} is a file, not a bigdens store (a folder written by `bigdens predict`)")
    meta = p / "zarr.json"
    if not meta.is_file():
        raise SetupError(f"{name!r} is not a bigdens store (no zarr.json in it); give a store written by "
                         "`bigdens predict`")
    try:
        json.loads(meta.read_text())
    except (OSError, ValueError):
        raise SetupError(f"{name!r} is a damaged store: its zarr.json is not readable JSON (half-written or "
                         "edited); predict it again (--overwrite), or restore that file") from None
    raise SetupError(f"{name!r} is not a bigdens store (its zarr.json is not of format {STORE_FORMAT!r})")


def variable_layout(shape, chunk, frames: int | None) -> tuple[tuple, tuple, tuple]:
    """(shape, chunks, dimension names) of a density variable; a leading ``frame`` axis for a trajectory."""
    if frames is None:
        return tuple(shape), tuple(chunk), ("x", "y", "z")
    return (frames,) + tuple(shape), (1,) + tuple(chunk), ("frame", "x", "y", "z")


def frame_coordinates(attrs: dict) -> str | None:
    """The CF ``coordinates`` attribute of a trajectory store's variables: ``"time step"``, those it has.

    It makes ``xarray.open_zarr`` show ``time`` and ``step`` as coordinates along ``frame``.
    """
    frames = attrs.get("frames") or {}
    names = [name for name in ("time", "step") if frames.get(name) is not None]
    return " ".join(names) or None


#: The per-frame coordinates of a trajectory store: name -> (dtype, long name, units).
FRAME_COORDS = {
    "frame": ("int64", "index of the frame in the input file (0-based)", "1"),
    "time": ("float64", "time of the frame as the input file gives it (atoms.info)", "as in the input file"),
    "step": ("int64", "MD step of the frame as the input file gives it (atoms.info)", "1"),
}


def _tile_layout(n_atoms: int, n_tiles: int, frames: int | None) -> dict[str, tuple]:
    # atom_tiles array -> (shape, chunks, dtype, dimension names, units) as _create_tiles writes it.
    lead = () if frames is None else (frames,)
    one = (1,) * len(lead)
    dims = ("frame",) * len(lead)
    rows = min(max(n_atoms, 1), TILE_ROWS)
    return {"frac": (lead + (n_atoms, 3), one + (rows, 3), "float64", dims + ("tile_row", "xyz"), "1"),
            "numbers": (lead + (n_atoms,), one + (rows,), "uint8", dims + ("tile_row",), "1"),
            "atom": (lead + (n_atoms,), one + (rows,), "int64", dims + ("tile_row",), "1"),
            "starts": (lead + (n_tiles + 1,), one + (n_tiles + 1,), "int64", dims + ("tile_edge",), "1")}


def _jsonable(obj):
    # numpy scalars and arrays -> plain JSON types.
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def blocks_of(attrs: dict) -> list["Block"]:
    """The blocks of a store, from its attributes."""
    from ..blocks import make_blocks

    return make_blocks(tuple(attrs["grid_shape"]), tuple(attrs["run"]["block"]))


class _Frame:
    # frame k of a (n_frames, n_atoms, 3) array, sliced along atoms: _Frame(a, k)[s:t] == a[k, s:t].
    def __init__(self, arr, k: int):
        self.arr, self.k = arr, k

    def __getitem__(self, sel):
        return self.arr[self.k, sel]
