"""The output store of ``bigdens predict``: a Zarr v3 group read by ``xarray.open_zarr``.

Layout (DESIGN §6)::

    OUT.zarr/
      zarr.json                 group attributes (cell, grid, model, run, ``complete``, ...)
      density/                  float32 (n1, n2, n3), dims ("x", "y", "z"), e/Å³, fill NaN
      density_std_epistemic/    float32, same shape and chunks
      density_std_aleatoric/
      density_std/              total σ = sqrt(σ_epi² + σ_ale²)
      x/, y/, z/                float64 coordinates, i·|a_i|/n_i, Å
      positions/                float64 (n_atoms, 3), dims ("atom", "xyz"), Å
      numbers/                  int32 (n_atoms,), dims ("atom",)
      ledger/                   a Zarr group holding one ``block-NNNNNNN.json`` per finished block

The ledger is the truth about which blocks are done: a block's entry is
written (temporary file + rename, so it is never half written) only after
all four variables of the block are written, read back and checksummed.  An
entry holds the checksums of the block's arrays, its raw electron sum, its
largest total and epistemic σ and how many of its points exceed the model's
epistemic threshold (summed into the attributes ``n_epistemic_high`` and
``epistemic_threshold`` when the run completes), so ``--resume`` recomputes exactly the missing blocks and
:func:`verify` can tell missing and corrupt chunks apart.  Unwritten regions
read NaN (the fill value), never 0.  ``complete`` is true only after every
block has its entry.

Blocks are boxes of whole chunks, so concurrent writers never share a chunk
file; zarr writes each chunk file atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from ._files import write_text
from .errors import RunError, SetupError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from .blocks import Block
    from .grid import Grid

#: Value of the ``format`` attribute that marks a bigdens store.
STORE_FORMAT = "bigdens-density"
#: Version of this layout; stores with a larger number are refused.
STORE_VERSION = 1
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


# -- the target path ------------------------------------------------------------------

def read_attrs(path: str | Path) -> dict | None:
    """Global attributes of the bigdens store at ``path``, or None if it is not one."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) and attrs.get("format") == STORE_FORMAT else None


def check_target(path: str | Path, *, resume: bool, overwrite: bool) -> str:
    """Decide what to do with the output path, writing nothing.

    Returns
    -------
    str
        ``"new"`` (nothing there), ``"resume"`` (a bigdens store to continue)
        or ``"overwrite"`` (something to replace).

    Raises
    ------
    SetupError
        If the path holds something and neither flag allows it, if ``resume``
        finds no bigdens store, or if the parent folder cannot be written.
    """
    path = Path(path)
    parent = path.absolute().parent
    if not parent.is_dir():
        raise SetupError(f"the output folder {str(parent)!r} does not exist (or is not a folder); create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SetupError(f"the output folder {str(parent)!r} is not writable; choose another --out")
    exists = path.exists() or path.is_symlink()
    attrs = read_attrs(path) if path.is_dir() else None
    if resume:
        if attrs is None:
            what = "does not exist" if not exists else "is not a bigdens store"
            raise SetupError(f"cannot resume: {str(path)!r} {what}; run without --resume to start a new store")
        if int(attrs.get("format_version", 0)) > STORE_VERSION:
            raise SetupError(f"cannot resume {str(path)!r}: written by a newer bigdens "
                             f"({attrs.get('bigdens_version')}); upgrade bigdens")
        return "resume"
    if not exists:
        return "new"
    if not overwrite:
        if attrs is not None:
            raise SetupError(f"{str(path)!r} already holds a bigdens store; pass --resume to continue it or "
                             "--overwrite to replace it")
        raise SetupError(f"{str(path)!r} exists and is not a bigdens store; choose another --out or pass --overwrite")
    if path.is_dir() and not path.is_symlink() and attrs is None and not (path / "zarr.json").exists() \
            and any(path.iterdir()):
        # Refuse to delete a folder of unknown files even when asked: a typo in --out must not cost data.
        raise SetupError(f"{str(path)!r} is a non-empty folder that is not a Zarr store; --overwrite only "
                         "replaces files and stores: remove it yourself or choose another --out")
    return "overwrite"


def remove(path: str | Path) -> None:
    """Delete what :func:`check_target` agreed to overwrite."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_identity(attrs: dict, run: dict) -> None:
    """Refuse to resume a store made by a different run.

    ``run`` holds the fields that fix the numbers of every block (structure
    hash, grid shape, model hash, seed, samples, block, chunk); each must
    equal the store's ``run`` attribute.
    """
    have = attrs.get("run", {})
    flags = {"seed": "--seed", "mc_samples": "--mc-samples", "block": "--block", "chunk": "--block",
             "grid_shape": "--grid/--spacing", "model_hash": "--model", "structure_hash": "the structure file"}
    diffs = [k for k in run if json.loads(json.dumps(have.get(k))) != json.loads(json.dumps(run[k]))]
    if diffs:
        parts = "; ".join(f"{k}: store has {have.get(k)!r}, this run {run[k]!r} (set by {flags.get(k, k)})"
                          for k in diffs)
        raise SetupError(f"cannot resume: the store was made with other settings ({parts}); rerun with the "
                         "store's settings or pass --overwrite to start again")


# -- creating ----------------------------------------------------------------------------

def create(path: str | Path, *, atoms: "Atoms", grid: "Grid", chunk: tuple[int, int, int], attrs: dict) -> None:
    """Create the store: empty density variables (NaN), coordinates, atoms and attributes.

    Parameters
    ----------
    path
        Store folder (must not exist).
    atoms
        The structure; positions (Å) and numbers are stored.
    grid
        The grid; its shape is the variables' shape.
    chunk
        Chunk shape, grid points.
    attrs
        Global attributes (``complete`` is set to False here).

    Raises
    ------
    SetupError
        If the store cannot be written (permissions, disk).
    """
    zarr = _zarr()
    path = Path(path)
    chunk = tuple(min(c, n) for c, n in zip(chunk, grid.shape))
    attrs = {"format": STORE_FORMAT, "format_version": STORE_VERSION, "bigdens_version": __version__,
             **attrs, "complete": False}
    try:
        root = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=_jsonable(attrs))
        for name, long_name in VARIABLES.items():
            root.create_array(name, shape=grid.shape, chunks=chunk, dtype="float32", fill_value=np.nan,
                              dimension_names=("x", "y", "z"),
                              attributes={"units": DENSITY_UNITS, "long_name": long_name})
        for axis, (dim, coords) in enumerate(zip("xyz", grid.axis_coords())):
            arr = root.create_array(dim, shape=coords.shape, dtype="float64", dimension_names=(dim,),
                                    attributes={"units": "angstrom",
                                                "long_name": f"distance along lattice vector a{axis + 1}"})
            arr[:] = coords
        n = len(atoms)
        pos = root.create_array("positions", shape=(n, 3), chunks=(min(n, 1 << 20), 3), dtype="float64",
                                dimension_names=("atom", "xyz"),
                                attributes={"units": "angstrom", "long_name": "atom positions (Cartesian)"})
        pos[:] = np.asarray(atoms.positions, dtype=np.float64)
        num = root.create_array("numbers", shape=(n,), chunks=(min(n, 1 << 20),), dtype="int32",
                                dimension_names=("atom",),
                                attributes={"units": "1", "long_name": "atomic numbers"})
        num[:] = np.asarray(atoms.numbers, dtype=np.int32)
        root.create_group(LEDGER, attributes={"description": "one block-NNNNNNN.json per finished block"})
        with _quiet():
            zarr.consolidate_metadata(str(path))
    except OSError as exc:
        raise SetupError(f"cannot create the store {str(path)!r} ({exc.strerror or exc}); check the folder "
                         "and free space") from None


def _jsonable(obj):
    # numpy scalars and arrays -> plain JSON types.
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def update_attrs(path: str | Path, **values) -> None:
    """Set global attributes of the store (the driver only: workers never touch them)."""
    zarr = _zarr()
    try:
        with _quiet():
            root = zarr.open_group(str(path), mode="r+")
            root.attrs.update(_jsonable(values))
    except OSError as exc:
        raise RunError(f"cannot update the attributes of {str(path)!r} ({exc.strerror or exc})") from None


def open_variables(path: str | Path, *, mode: str = "r+") -> dict:
    """The four density variables of a store as zarr arrays, name -> array."""
    zarr = _zarr()
    with _quiet():
        root = zarr.open_group(str(path), mode=mode)
        return {name: root[name] for name in VARIABLES}


# -- blocks and the ledger ------------------------------------------------------------------

def ledger_file(path: str | Path, index: int) -> Path:
    return Path(path) / LEDGER / f"block-{index:07d}.json"


def write_ledger(path: str | Path, index: int, entry: dict) -> None:
    """Record a finished block (temporary file + rename: never half written)."""
    target = ledger_file(path, index)
    try:
        write_text(target, json.dumps(_jsonable(entry)), fsync=False)
    except OSError as exc:
        raise RunError(f"cannot record block {index} in the ledger of {str(path)!r} ({exc.strerror or exc}); "
                       "free space and rerun with --resume") from None


def read_ledger(path: str | Path) -> dict[int, dict]:
    """Finished blocks: index -> ledger entry (unreadable entries count as missing)."""
    out = {}
    folder = Path(path) / LEDGER
    for f in folder.glob("block-*.json"):
        try:
            entry = json.loads(f.read_text())
            out[int(entry["block"])] = entry
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def read_ledger_entry(path: str | Path, index: int) -> dict:
    """The ledger entry of one block.

    Raises
    ------
    RunError
        If the block has no readable entry.
    """
    try:
        return json.loads(ledger_file(path, index).read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"block {index} has no readable ledger entry in {str(path)!r} ({exc})") from None


def write_block(arrays: dict, block: "Block", values: dict[str, np.ndarray], *, path: str | Path) -> dict[str, str]:
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
    try:
        for name, arr in arrays.items():
            arr[block.slices] = values[name]
        for name, arr in arrays.items():
            sums[name] = checksum(arr[block.slices])
    except OSError as exc:
        raise RunError(f"cannot write block {block.index} to {str(path)!r} ({exc.strerror or exc}); the ledger "
                       "is consistent: free space and rerun with --resume") from None
    for name in arrays:
        if sums[name] != checksum(values[name]):
            raise RunError(f"block {block.index} of {name!r} reads back differently from what was written "
                           f"to {str(path)!r}; check the file system and rerun with --resume")
    return sums


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`.

    Attributes
    ----------
    n_blocks : int
    missing : list of int
        Blocks without a ledger entry (never finished).
    corrupt : list of (int, str)
        Blocks whose data do not match their ledger entry, with the reason.
    """

    n_blocks: int
    missing: list = field(default_factory=list)
    corrupt: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt


def blocks_of(attrs: dict) -> list["Block"]:
    """The blocks of a store, from its attributes."""
    from .blocks import make_blocks

    return make_blocks(tuple(attrs["grid_shape"]), tuple(attrs["run"]["block"]))


def verify(path: str | Path, *, progress: bool = False) -> VerifyReport:
    """Re-read every block of a store and compare it with the ledger.

    Memory: one block of one variable at a time.

    Raises
    ------
    SetupError
        If ``path`` is not a bigdens store.
    """
    path = Path(path)
    attrs = read_attrs(path)
    if attrs is None:
        raise SetupError(f"{str(path)!r} is not a bigdens store (no zarr.json with format {STORE_FORMAT!r})")
    blocks = blocks_of(attrs)
    ledger = read_ledger(path)
    arrays = open_variables(path, mode="r")
    report = VerifyReport(n_blocks=len(blocks))
    from tqdm import tqdm

    for b in tqdm(blocks, unit="block", disable=None if progress else True, desc="verify"):
        entry = ledger.get(b.index)
        if entry is None:
            report.missing.append(b.index)
            continue
        if "pending" in entry:
            report.corrupt.append((b.index, "renormalization interrupted (rerun predict with --resume)"))
            continue
        for name, arr in arrays.items():
            try:
                got = checksum(arr[b.slices])
            except Exception as exc:  # a truncated chunk fails in the codec with many error types
                report.corrupt.append((b.index, f"{name}: unreadable chunk ({type(exc).__name__})"))
                break
            if got != entry["checksums"].get(name):
                report.corrupt.append((b.index, f"{name}: checksum differs (chunk missing or changed)"))
                break
    return report


__all__ = ["DENSITY_UNITS", "STORE_FORMAT", "VARIABLES", "VerifyReport", "check_identity", "check_target",
           "checksum", "create", "open_variables", "read_attrs", "read_ledger", "structure_hash", "structure_hash_chunks",
           "update_attrs", "verify", "write_block", "write_ledger"]
