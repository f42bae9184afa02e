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
      charge/, charge_std/      float64 (n_atoms,), dims ("atom",), e: per-atom charges (written on completion)
      atom_tiles/               the atoms again, sorted by the block they lie in (bigdens.atomtiles), so that a
                                worker reads only the atoms near its blocks:
        frac/                   float64 (n_atoms, 3), wrapped fractional coordinates, in tile order
        numbers/                uint8 (n_atoms,), atomic numbers, in tile order
        atom/                   int64 (n_atoms,), each row's index along ``atom``
        starts/                 int64 (n_blocks + 1,), tile t is rows starts[t]:starts[t + 1]
      ledger/                   a Zarr group holding one ``block-NNNNNNN.json`` per finished block, and
                                ``charges-NNNNNNN.npy``: the block's per-atom sums (:mod:`bigdens.charges`)

A trajectory store (``bigdens predict TRAJ --frames START:STOP:STEP``; attribute ``n_frames``) has a
leading ``frame`` dimension: the density variables are (n_frames, n1, n2, n3) with chunks (1, c1, c2,
c3), ``positions`` (n_frames, n_atoms, 3), ``charge``/``charge_std`` (n_frames, n_atoms), and each
``atom_tiles`` array a leading frame axis (each frame sorted on its own); ``numbers``
and the cell are shared by all frames.  Coordinates along ``frame``: ``frame`` (int64, each frame's
index in the input file), and ``time`` and ``step`` when every frame carried them.  Its work units
are (frame, block) pairs, numbered ``frame · n_blocks + block`` (:func:`unit_index`): the ledger's
``block-NNNNNNN.json`` and ``charges-NNNNNNN.npy`` carry that number, and each entry also records
its ``frame`` and ``block``.  A single structure's store has no frame dimension and its units are
its blocks.

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
file; zarr writes each chunk file atomically.  One run writes a store at a
time: its driver holds ``OUT.zarr.lock`` beside the store
(:mod:`bigdens.storelock`), and every block and ledger write first checks the
store's ``run_id``.

Readers never trust the store blindly: ``bigdens export`` and ``bigdens plot``
read through :class:`BlockReader`, which checks each block they read against
its ledger checksum, after :func:`check_metadata` has compared every array's
metadata, the coordinates and the atoms with what :func:`create` wrote.  Any
damage stops them with one line naming it and the repair (``bigdens verify
--repair``, then ``bigdens predict ... --resume``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from .._files import write_text
from ..errors import RunError, SetupError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ..atomtiles import TiledAtoms
    from ..blocks import Block
    from ..bnn import DensityModel
    from ..domain import DomainReport
    from ..grid import Grid

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


def unit_index(frame: int | None, block: int, n_blocks: int) -> int:
    """The work unit of ``block`` in ``frame`` (None: a single structure, the block itself)."""
    return block if frame is None else frame * n_blocks + block


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


# -- the target path ------------------------------------------------------------------

def read_attrs(path: str | Path) -> dict | None:
    """Global attributes of the bigdens store at ``path``, or None if it is not one."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return None
    return attrs if isinstance(attrs, dict) and attrs.get("format") == STORE_FORMAT else None


def check_folder(path: str | Path) -> None:
    """Refuse an output path whose folder does not exist or cannot be written (writes nothing)."""
    parent = Path(path).absolute().parent
    if not parent.is_dir():
        raise SetupError(f"the output folder {str(parent)!r} does not exist (or is not a folder); create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SetupError(f"the output folder {str(parent)!r} is not writable; choose another --out")


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
    check_folder(path)
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
    """Delete what :func:`check_target` agreed to overwrite.

    A folder is first renamed aside (atomic), so a writer that still holds the
    old path cannot race the deletion or mix files into a new store there.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        aside = path.with_name(f".{path.name}.removing.{os.getpid()}")
        os.rename(path, aside)
        shutil.rmtree(aside)
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
             "grid_shape": "--grid/--spacing", "model_hash": "--model", "structure_hash": "the structure file",
             "frames": "--frames"}
    diffs = [k for k in run if json.loads(json.dumps(have.get(k))) != json.loads(json.dumps(run[k]))]
    if diffs:
        parts = "; ".join(f"{k}: store has {have.get(k)!r}, this run {run[k]!r} (set by {flags.get(k, k)})"
                          for k in diffs)
        raise SetupError(f"cannot resume: the store was made with other settings ({parts}); rerun with the "
                         "store's settings or pass --overwrite to start again")


# -- creating ----------------------------------------------------------------------------

def create(path: str | Path, *, atoms: "Atoms", grid: "Grid", chunk: tuple[int, int, int], attrs: dict,
           trajectory=None) -> None:
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
    trajectory : bigdens.structure.Trajectory, optional
        Frames (``atoms`` is then the first): the store gets a ``frame`` dimension (see the module
        docstring) and the attribute ``n_frames``.

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
    if trajectory is not None:
        attrs["n_frames"] = len(trajectory)
    frames = n_frames(attrs)
    try:
        root = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=_jsonable(attrs))
        for name in VARIABLES:
            _create_variable(root, name, shape=grid.shape, chunk=chunk, frames=frames,
                             coordinates=frame_coordinates(attrs))
        for axis, coords in enumerate(grid.axis_coords()):
            _create_axis(root, axis, coords)
        n = len(atoms)
        lead = () if frames is None else (frames,)
        pos = root.create_array("positions", shape=lead + (n, 3), chunks=(1,) * len(lead) + (min(n, 1 << 20), 3),
                                dtype="float64", dimension_names=("frame",) * len(lead) + ("atom", "xyz"),
                                attributes={"units": "angstrom", "long_name": "atom positions (Cartesian)"})
        if trajectory is None:
            pos[:] = np.asarray(atoms.positions, dtype=np.float64)
        else:
            for k, frame in enumerate(trajectory.frames):
                pos[k] = np.asarray(frame.positions, dtype=np.float64)
            _create_frame_coords(root, trajectory)
        num = root.create_array("numbers", shape=(n,), chunks=(min(n, 1 << 20),), dtype="int32",
                                dimension_names=("atom",),
                                attributes={"units": "1", "long_name": "atomic numbers"})
        num[:] = np.asarray(atoms.numbers, dtype=np.int32)
        frame_positions = [atoms.positions] if trajectory is None else [a.positions for a in trajectory.frames]
        _create_tiles(root, grid=grid, block=tuple(attrs["run"]["block"]), positions=frame_positions,
                      numbers=np.asarray(atoms.numbers), trajectory=trajectory is not None)
        root.create_group(LEDGER, attributes={"description": "one block-NNNNNNN.json per finished block"})
        with _quiet():
            zarr.consolidate_metadata(str(path))
    except OSError as exc:
        raise SetupError(f"cannot create the store {str(path)!r} ({exc.strerror or exc}); check the folder "
                         "and free space") from None


def new_attributes(atoms: "Atoms", grid: "Grid", model: "DensityModel", model_path: str | Path, identity: dict, *,
                   run_id: str, n_expected: float | None, domain: "DomainReport", mc_samples: int, seed: int,
                   allow_out_of_domain: bool, disorders: list, trajectory=None) -> dict:
    """Global attributes of a new store (DESIGN §6): ``attrs`` for :func:`create`.

    Parameters
    ----------
    atoms
        The structure (a trajectory's first frame: cell and numbers are every frame's).
    grid, model, model_path
        The run's grid, its model (:class:`bigdens.bnn.DensityModel`) and the model's file.
    identity
        The ``run`` attribute (structure and model hashes, grid, seed, samples, block, chunk, frames).
    run_id, n_expected, domain
        The run's id, the expected valence electrons (e; None: unknown) and the domain checks before the run
        (:class:`bigdens.domain.DomainReport`).
    mc_samples, seed, allow_out_of_domain
        The run's settings (:class:`bigdens.config.PredictConfig`).
    disorders
        Each frame's first-shell bond spread, Å (None where undefined); one for a single structure.
    trajectory : bigdens.structure.Trajectory, optional
        The frames: a trajectory store adds ``frames`` and per-frame ``bond_spread`` and
        ``aleatoric_disorder_factor``.
    """
    from ..structure import species_counts

    attrs = {
        "title": "bigdens predicted electron density",
        "run_id": run_id,
        "run": identity,
        "cell": np.asarray(grid.cell).tolist(),
        "cell_units": "angstrom",
        "pbc": [bool(v) for v in atoms.pbc],
        "grid_shape": list(grid.shape),
        "grid_spacing": grid.spacing.tolist(),
        "volume_element": grid.dv,
        "n_atoms": len(atoms),
        "species_counts": species_counts(atoms),
        "n_electrons_expected": n_expected,
        "n_electrons_predicted": None,
        "renormalization_factor": None,
        "model_id": str(model.info.get("name") or Path(model_path).stem),
        "model_path": str(Path(model_path).absolute()),
        "model_hash": identity["model_hash"],
        "descriptor": model.params.to_dict(),
        "mc_samples": mc_samples,
        "seed": seed,
        # The structure's first-shell bond spread (Å, bigdens.thermal) and the factor it puts on the
        # aleatoric variance (the model's calibration; 1: none).
        "bond_spread": disorders[0],
        "aleatoric_disorder_factor": model.scaling.aleatoric_factor(disorders[0]),
        "block": identity["block"],
        "chunk": identity["chunk"],
        "bigdens_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # The checks before the run; the exact ones after it replace them when the store completes.
        **domain.to_attrs(accepted=allow_out_of_domain),
    }
    if trajectory is None:
        return attrs
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    numbers = np.asarray(atoms.numbers)
    frames = {"index": list(trajectory.index), "time": trajectory.time, "step": trajectory.step,
              "structure_hash": [structure_hash(cell, a.positions, numbers) for a in trajectory.frames]}
    return {**attrs, "frames": frames, "bond_spread": disorders,
            "aleatoric_disorder_factor": [model.scaling.aleatoric_factor(d) for d in disorders]}


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


def _create_tiles(root, *, grid: "Grid", block: tuple, positions: list, numbers: np.ndarray,
                  trajectory: bool) -> None:
    # The atom_tiles group: each frame's atoms sorted by tile, written in passes of ROWS atoms (a multiple
    # of TILE_ROWS, so each pass writes whole chunks); beyond the structure, 16 bytes per atom at a time.
    from ..atomtiles import tile_counts, tile_order
    from ..celllist import ROWS, fractional

    cell = np.asarray(grid.cell, dtype=np.float64)
    n = len(numbers)
    n_tiles = int(np.prod(tile_counts(grid.shape, block)))
    group = root.create_group(TILES, attributes={
        "description": "atoms sorted by the grid block they lie in (bigdens.atomtiles)", "block": list(block)})
    layout = _tile_layout(n, n_tiles, len(positions) if trajectory else None)
    arrays = {name: group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, dimension_names=dims,
                                       attributes={"units": units})
              for name, (shape, chunks, dtype, dims, units) in layout.items()}
    numbers = np.asarray(numbers)
    for k, pos in enumerate(positions):
        pos = np.asarray(pos, dtype=np.float64)
        at = (k,) if trajectory else ()
        order, starts = tile_order(cell, pos, grid.shape, block)
        arrays["starts"][at] = starts
        for s in range(0, n, ROWS):
            rows = order[s : s + ROWS]
            arrays["frac"][at + (slice(s, s + len(rows)),)] = fractional(cell, pos[rows])
            arrays["numbers"][at + (slice(s, s + len(rows)),)] = numbers[rows].astype(np.uint8)
            arrays["atom"][at + (slice(s, s + len(rows)),)] = rows
        del order


def old_format_error(path: str | Path, attrs: dict) -> SetupError:
    """The refusal to resume a store made before ``atom_tiles`` (format 1), which workers cannot read."""
    return SetupError(f"{str(path)!r} is in store format {attrs.get('format_version', 1)} (bigdens "
                      f"{attrs.get('bigdens_version', 'unknown')}), made before workers read the atoms by tile; "
                      f"this bigdens resumes format {STORE_VERSION}: start it again with --overwrite")


def open_tiles(path: str | Path, attrs: dict, frame: int | None = None) -> "TiledAtoms":
    """The store's atoms as a :class:`bigdens.atomtiles.TiledAtoms` (of ``frame`` in a trajectory store).

    Reads only the tile boundaries (8 bytes per block); the atoms are read by the
    blocks' queries.  A store made before ``atom_tiles`` existed (format 1) is
    refused with a message to rerun.
    """
    from ..atomtiles import TiledAtoms

    zarr = _zarr()
    with _quiet():
        root = zarr.open_group(str(path), mode="r")
    if TILES not in root:
        raise old_format_error(path, attrs)
    group = root[TILES]
    at = () if frame is None else (frame,)

    def view(name):
        arr = group[name]
        return arr if frame is None else _Frame(arr, frame)

    return TiledAtoms(cell=np.asarray(attrs["cell"], dtype=np.float64), grid_shape=tuple(attrs["grid_shape"]),
                      block_shape=tuple(group.attrs["block"]), frac=view("frac"), numbers=view("numbers"),
                      atom=view("atom"), starts=np.asarray(group["starts"][at]))


def check_tiles(path: str | Path, attrs: dict) -> list[tuple[str, str]]:
    """Problems of the ``atom_tiles`` group against ``positions`` and ``numbers`` (empty: none).

    Each frame's tiles must hold every atom once, at the fractional
    coordinates :func:`bigdens.celllist.fractional` gives for its stored
    position (bit for bit), with its atomic number, in the tile its
    coordinates fall in.  Memory: the frame's positions (24 bytes per atom) and
    one flag per atom; the tile arrays are read in passes.
    """
    from ..atomtiles import tile_of
    from ..celllist import ROWS, fractional

    zarr = _zarr()
    try:
        with _quiet():
            root = zarr.open_group(str(path), mode="r", use_consolidated=False)
        group = root[TILES]
        block = tuple(int(b) for b in group.attrs["block"])
        cell = np.asarray(attrs["cell"], dtype=np.float64)
        shape = tuple(int(v) for v in attrs["grid_shape"])
        pos_all, numbers = root["positions"], np.asarray(root["numbers"][:])
        frames = [None] if pos_all.ndim == 2 else list(range(pos_all.shape[0]))
        for k in frames:
            at = () if k is None else (k,)
            pos = np.asarray(pos_all[at], dtype=np.float64)
            starts = np.asarray(group["starts"][at])
            seen = np.zeros(len(numbers), dtype=bool)
            for s in range(0, len(numbers), ROWS):
                sel = at + (slice(s, s + ROWS),)
                atom = np.asarray(group["atom"][sel])
                frac = np.asarray(group["frac"][sel])
                if atom.min(initial=0) < 0 or atom.max(initial=0) >= len(numbers) or seen[atom].any():
                    return [(TILES, "the atom index is not a permutation of the atoms")]
                seen[atom] = True
                want_tile = np.searchsorted(starts, np.arange(s, s + len(atom)), side="right") - 1
                if (not np.array_equal(frac, fractional(cell, pos[atom]))
                        or not np.array_equal(np.asarray(group["numbers"][sel]), numbers[atom])
                        or not np.array_equal(tile_of(frac, shape, block), want_tile)):
                    where = "" if k is None else f" of frame {k}"
                    return [(TILES, f"rows {s}–{s + len(atom) - 1}{where} do not match the stored atoms")]
            if not seen.all():
                return [(TILES, "some atoms are missing from the tiles")]
    except Exception as exc:  # noqa: BLE001  (zarr raises many types on damaged arrays)
        return [(TILES, f"unreadable ({type(exc).__name__})")]
    return []


def _create_variable(root, name: str, *, shape, chunk, frames: int | None = None, coordinates: str | None = None,
                     overwrite: bool = False) -> None:
    # A density variable as create() makes it (NaN until written); verify() checks against _expected_metadata.
    shape, chunk, dims = variable_layout(shape, chunk, frames)
    attributes = {"units": DENSITY_UNITS, "long_name": VARIABLES[name]}
    if coordinates:
        attributes["coordinates"] = coordinates
    root.create_array(name, shape=shape, chunks=chunk, dtype="float32", fill_value=np.nan,
                      dimension_names=dims, overwrite=overwrite, attributes=attributes)


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


def _create_frame_coords(root, trajectory) -> None:
    # frame, and time/step when every frame carried them.
    for name, values in (("frame", trajectory.index), ("time", trajectory.time), ("step", trajectory.step)):
        if values is None:
            continue
        dtype, long_name, units = FRAME_COORDS[name]
        arr = root.create_array(name, shape=(len(values),), dtype=dtype, dimension_names=("frame",),
                                attributes={"units": units, "long_name": long_name})
        arr[:] = np.asarray(values, dtype=dtype)


def _create_axis(root, axis: int, coords: np.ndarray, *, overwrite: bool = False) -> None:
    # The coordinate array of one lattice axis (x, y or z), Å.
    dim = "xyz"[axis]
    arr = root.create_array(dim, shape=coords.shape, dtype="float64", dimension_names=(dim,), overwrite=overwrite,
                            attributes={"units": "angstrom", "long_name": f"distance along lattice vector a{axis + 1}"})
    arr[:] = coords


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


def read_block_charges(path: str | Path, index: int, entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block ``index``'s per-atom sums ``(owners (K,), M (K,), D (K, S))``, checked against its ledger entry.

    Raises
    ------
    InputError
        If the file is missing, unreadable or differs from what the ledger recorded.
    """
    import io

    from ..errors import InputError

    want = (entry.get("charges") or {}).get("checksum")
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


def read_ledger(path: str | Path) -> dict[int, dict]:
    """Finished units: index (the block; in a trajectory store the unit) -> ledger entry (unreadable ones: missing)."""
    out = {}
    folder = Path(path) / LEDGER
    for f in folder.glob("block-*.json"):
        try:
            entry = json.loads(f.read_text())
            out[int(entry.get("unit", entry["block"]))] = entry
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


def blocks_of(attrs: dict) -> list["Block"]:
    """The blocks of a store, from its attributes."""
    from ..blocks import make_blocks

    return make_blocks(tuple(attrs["grid_shape"]), tuple(attrs["run"]["block"]))


def verify(path: str | Path, *, progress: bool = False) -> VerifyReport:
    """Check a store: its arrays' metadata, coordinates and atoms, then every block against the ledger.

    Memory: one block of one variable at a time (and the atoms, in passes).

    Raises
    ------
    SetupError
        If ``path`` is not a bigdens store.
    """
    path = Path(path)
    attrs = read_attrs(path)
    if attrs is None:
        raise SetupError(f"{str(path)!r} is not a bigdens store (no zarr.json with format {STORE_FORMAT!r})")
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
                _verify_unit(report, reader, b, unit_index(reader.frame, b.index, nb))
                bar.update()
    return report


def _verify_unit(report: VerifyReport, reader: BlockReader, b: "Block", unit: int) -> None:
    # One (frame, block) unit of verify(): missing, corrupt or fine.
    entry = reader.ledger.get(b.index)
    if entry is None:
        report.missing.append(unit)
        return
    if "pending" in entry:
        report.corrupt.append((unit, "renormalization interrupted (rerun predict with --resume)"))
        return
    for name in VARIABLES:
        _, why = reader.read_block(name, b)
        if why is not None:
            report.corrupt.append((unit, why))
            return
    if "charges" in entry:
        try:
            read_block_charges(reader.path, unit, entry)
        except SetupError:
            report.corrupt.append((unit, "its charges file is missing or differs from the ledger"))


# -- reading with checks -------------------------------------------------------------------

#: How many damaged blocks or problems an error message names.
SHOWN = 5


def repair_hint(path: str | Path) -> str:
    """What to run to recompute damaged blocks of the store at ``path``."""
    return f"repair it with `bigdens verify --repair {path}`, then `bigdens predict ... --resume`"


def damage_error(path: str | Path, bad: list[tuple[int, str]], *, n_blocks: int) -> "InputError":
    """One-line error naming damaged blocks (first :data:`SHOWN` and the count) and the repair."""
    from ..errors import InputError

    first = {}
    for index, why in sorted(bad, key=lambda b: b[0]):
        first.setdefault(index, why)
    items = list(first.items())
    shown = "; ".join(f"block {i}: {why}" for i, why in items[:SHOWN]) + ("; ..." if len(items) > SHOWN else "")
    return InputError(f"{str(path)!r} is damaged: {len(items)} of {n_blocks} blocks fail their ledger check "
                      f"({shown}); {repair_hint(path)}")


def problems_error(path: str | Path, problems: list[tuple[str, str]]) -> "InputError":
    """One-line error for damage found by :func:`check_metadata`, with the repair."""
    from ..errors import InputError

    shown = "; ".join(f"{name}: {why}" for name, why in problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    if all(repairable(name) for name, _ in problems):
        hint = repair_hint(path)
    else:
        hint = ("its atoms cannot be rebuilt from the store: predict it again with `bigdens predict ... "
                "--overwrite`")
    return InputError(f"{str(path)!r} is damaged ({shown}{more}); {hint}")


def repairable(name: str) -> bool:
    """Whether :func:`repair_metadata` can rebuild the array (or file) ``name``."""
    return name in VARIABLES or name in ("x", "y", "z", "zarr.json")


def _expected_metadata(attrs: dict) -> dict[str, dict]:
    # Array name -> the metadata fields create() writes (chunks None: zarr chooses; fill None: not checked).
    shape = tuple(int(n) for n in attrs["grid_shape"])
    chunk = tuple(min(int(c), n) for c, n in zip(attrs["run"]["chunk"], shape))
    frames = n_frames(attrs)
    vshape, vchunk, dims = variable_layout(shape, chunk, frames)
    out = {name: {"shape": vshape, "data_type": "float32", "chunks": vchunk, "dimension_names": dims,
                  "fill_value": "NaN", "units": DENSITY_UNITS} for name in VARIABLES}
    for d, dim in enumerate("xyz"):
        out[dim] = {"shape": (shape[d],), "data_type": "float64", "chunks": None, "dimension_names": (dim,),
                    "fill_value": None, "units": "angstrom"}
    n = attrs.get("n_atoms")
    rows = None if n is None else min(int(n), 1 << 20)
    lead = () if frames is None else (frames,)
    out["positions"] = {"shape": None if n is None else lead + (int(n), 3), "data_type": "float64",
                        "chunks": None if n is None else (1,) * len(lead) + (rows, 3),
                        "dimension_names": ("frame",) * len(lead) + ("atom", "xyz"),
                        "fill_value": None, "units": "angstrom"}
    out["numbers"] = {"shape": None if n is None else (int(n),), "data_type": "int32",
                      "chunks": None if n is None else (rows,), "dimension_names": ("atom",),
                      "fill_value": None, "units": "1"}
    if n is not None and int(attrs.get("format_version", 1)) >= 2:
        from ..atomtiles import tile_counts

        n_tiles = int(np.prod(tile_counts(shape, attrs["run"]["block"])))
        for name, (tshape, tchunks, dtype, tdims, units) in _tile_layout(int(n), n_tiles, frames).items():
            out[f"{TILES}/{name}"] = {"shape": tshape, "data_type": dtype, "chunks": tchunks,
                                      "dimension_names": tdims, "fill_value": None, "units": units}
    return out


def _metadata_differences(meta, want: dict) -> list[str]:
    # What differs between an array's zarr.json document and the fields create() writes.
    if not isinstance(meta, dict) or meta.get("node_type") != "array":
        return ["not an array's metadata"]
    try:
        have = {"shape": tuple(meta["shape"]), "data_type": meta["data_type"],
                "chunks": tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
                "dimension_names": tuple(meta.get("dimension_names") or ()),
                "fill_value": meta.get("fill_value"), "units": (meta.get("attributes") or {}).get("units")}
    except (KeyError, TypeError, AttributeError):
        return ["incomplete metadata (shape, data_type or chunk_grid missing)"]
    return [f"{key} is {have[key]!r}, expected {value!r}" for key, value in want.items()
            if value is not None and have[key] != value]


def check_metadata(path: str | Path, attrs: dict, *, values: bool = True) -> list[tuple[str, str]]:
    """Damage outside the blocks' data: every array's metadata, the coordinates and the atoms.

    Checks each array's ``zarr.json`` (and its copy in the consolidated
    metadata of the root ``zarr.json``) against what :func:`create` writes:
    shape, dtype, chunks, dimension names, fill value and units.  With
    ``values``, also that ``x``, ``y``, ``z`` are the grid's coordinates
    (recomputed from the cell and grid shape) and that positions and numbers
    hash to the stored ``run.structure_hash`` (read in passes of 2²⁰ atoms), and
    that the atom tiles hold the same atoms (:func:`check_tiles`).

    Returns
    -------
    list of (str, str)
        (array or file, reason) for each problem; empty if none.
    """
    path = Path(path)
    try:
        want = _expected_metadata(attrs)
    except (KeyError, TypeError, ValueError) as exc:
        return [("zarr.json", f"attributes lack the grid or run settings ({exc!r})")]
    problems = []
    try:
        consolidated = json.loads((path / "zarr.json").read_text()).get("consolidated_metadata")
    except (OSError, ValueError, AttributeError):
        consolidated = None
    inline = consolidated.get("metadata") if isinstance(consolidated, dict) else None
    for name, fields in want.items():
        meta_file = path / name / "zarr.json"
        if not meta_file.is_file():
            what = "folder" if not (path / name).is_dir() else "zarr.json"
            problems.append((name, f"array missing (no {what})"))
        else:
            try:
                meta = json.loads(meta_file.read_text())
            except (OSError, ValueError) as exc:
                problems.append((name, f"unreadable zarr.json ({type(exc).__name__})"))
            else:
                problems += [(name, why) for why in _metadata_differences(meta, fields)]
        if isinstance(inline, dict):
            if name not in inline:
                problems.append(("zarr.json", f"consolidated metadata lacks {name!r}"))
            else:
                problems += [("zarr.json", f"consolidated metadata of {name!r}: {why}")
                             for why in _metadata_differences(inline[name], fields)]
    if values:
        bad = {name for name, _ in problems}
        problems += _check_values(path, attrs, skip=bad)
    return problems


def _check_values(path: Path, attrs: dict, *, skip: set) -> list[tuple[str, str]]:
    # Coordinates against the grid, atoms against the structure hash (arrays with bad metadata skipped).
    from ..grid import Grid

    zarr = _zarr()
    problems = []
    try:
        with _quiet():
            root = zarr.open_group(str(path), mode="r", use_consolidated=False)
        cell = np.asarray(attrs["cell"], dtype=np.float64)
        coords = Grid(cell=cell, shape=tuple(attrs["grid_shape"])).axis_coords()
    except Exception as exc:  # noqa: BLE001  (zarr raises many types on damaged metadata)
        return [("zarr.json", f"cannot open the store ({type(exc).__name__}: {exc})")]
    for dim, want in zip("xyz", coords):
        if dim in skip:
            continue
        try:
            have = np.asarray(root[dim][:])
        except Exception as exc:  # noqa: BLE001
            problems.append((dim, f"unreadable ({type(exc).__name__})"))
            continue
        if have.shape != want.shape or not np.allclose(have, want, rtol=1e-12, atol=0.0):
            i = int(np.argmax(~np.isclose(have, want, rtol=1e-12, atol=0.0))) if have.shape == want.shape else 0
            got = float(have.flat[i]) if have.size else None
            problems.append((dim, f"coordinates are not the grid's (index {i}: {got!r}, expected {float(want[i])!r} "
                                  "Å)"))
    if "positions" in skip or "numbers" in skip:
        return problems
    try:
        pos, num = root["positions"], root["numbers"]
        n, rows = num.shape[0], 1 << 20
        # Frame by frame (a trajectory store), each in passes of 2^20 atoms: the bytes trajectory_hash hashes.
        frames = [pos] if pos.ndim == 2 else [_Frame(pos, k) for k in range(pos.shape[0])]
        digest = structure_hash_chunks(cell, (np.asarray(p[s : s + rows]) for p in frames for s in range(0, n, rows)),
                                       (np.asarray(num[s : s + rows]) for s in range(0, n, rows)))
    except Exception as exc:  # noqa: BLE001
        return problems + [("positions/numbers", f"unreadable ({type(exc).__name__})")]
    if digest != attrs.get("run", {}).get("structure_hash"):
        problems.append(("positions/numbers", "the atoms do not match the store's structure hash"))
    elif int(attrs.get("format_version", 1)) >= 2 and not any(name.startswith(TILES) for name in skip):
        problems += check_tiles(path, attrs)
    return problems


class _Frame:
    # frame k of a (n_frames, n_atoms, 3) array, sliced along atoms: _Frame(a, k)[s:t] == a[k, s:t].
    def __init__(self, arr, k: int):
        self.arr, self.k = arr, k

    def __getitem__(self, sel):
        return self.arr[self.k, sel]


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
        self.attrs = read_attrs(path) if attrs is None else attrs
        if self.attrs is None:
            raise SetupError(f"{str(path)!r} is not a bigdens store (no zarr.json with format {STORE_FORMAT!r})")
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
        if self.frame is not None:
            nb = len(self.blocks)
            ledger = {u - self.frame * nb: e for u, e in ledger.items() if u // nb == self.frame}
        self.ledger = ledger
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
        if "pending" in entry and self.complete:
            return "renormalization interrupted (rerun predict with --resume)"
        if name is not None and not isinstance((entry.get("checksums") or {}).get(name), str):
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
        if have == entry["checksums"][name]:
            return None
        if name == "density" and have == (entry.get("pending") or {}).get("checksum"):
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

    def slabs(self, name: str):
        """Yield ``(start, values)``: block-thick slabs ``[start:stop, :, :]`` of a variable, every block checked.

        Memory: one slab, ``block[0] · n2 · n3`` float32 values.  Unwritten
        blocks of an incomplete store read NaN.

        Raises
        ------
        InputError
            At the first slab with a failing block, after checking the rest
            of the variable, naming every failing block and the repair.
        """
        starts = sorted({b.start[0] for b in self.blocks})
        for s in starts:
            members = [b for b in self.blocks if b.start[0] == s]
            stop = members[0].stop[0]
            bad = []
            values, why = self._read(name, slice(s, stop))
            if why is not None:  # some chunk of the slab fails: find which blocks
                bad = [(b.index, w) for b in members if (w := self.read_block(name, b)[1]) is not None]
                bad = bad or [(members[0].index, why)]
            else:
                for b in members:
                    local = (slice(None),) + b.slices[1:]
                    if b.index not in self.ledger and not self.complete:
                        values[local] = np.nan
                        continue
                    why = self.check(name, b, values[local])
                    if why is not None:
                        bad.append((b.index, why))
            if bad:
                rest = [b for b in self.blocks if b.start[0] > s]
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
    """``[i]`` -> the (n2, n3) slab ``i`` of a variable, read through :meth:`BlockReader.slabs` (for writers).

    Slabs must be asked for in order (as :func:`bigdens.io.cube.write_cube`
    does); memory is one block-thick slab.
    """

    def __init__(self, reader: BlockReader, name: str):
        self.shape = reader.shape
        self.dtype = np.dtype(np.float32)
        self._slabs = reader.slabs(name)
        self._lo = None
        self._values = None

    def __getitem__(self, i: int) -> np.ndarray:
        while self._values is None or not self._lo <= i < self._lo + len(self._values):
            try:
                self._lo, self._values = next(self._slabs)
            except StopIteration:
                raise IndexError(f"slab {i} asked for out of order or beyond {self.shape[0]}") from None
        return self._values[i - self._lo]


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


def repair_metadata(path: str | Path, problems: list[tuple[str, str]]) -> list[str]:
    """Rebuild what :func:`check_metadata` found damaged and :func:`repairable` can rebuild.

    A density variable is made again empty (NaN) and every ledger entry is
    dropped, so ``bigdens predict --resume`` recomputes every block;
    coordinates are written again from the cell; the consolidated metadata
    is rewritten.  The store is marked incomplete.

    Returns
    -------
    list of str
        Names of the arrays rebuilt.
    """
    from ..grid import Grid

    zarr = _zarr()
    path = Path(path)
    attrs = read_attrs(path)
    names = sorted({name for name, _ in problems if repairable(name)})
    if not names:
        return []
    shape = tuple(int(n) for n in attrs["grid_shape"])
    chunk = tuple(min(int(c), n) for c, n in zip(attrs["run"]["chunk"], shape))
    coords = Grid(cell=np.asarray(attrs["cell"], dtype=np.float64), shape=shape).axis_coords()
    try:
        with _quiet():
            root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
            for name in names:
                if name in VARIABLES:
                    shutil.rmtree(path / name, ignore_errors=True)
                    _create_variable(root, name, shape=shape, chunk=chunk, frames=n_frames(attrs),
                                     coordinates=frame_coordinates(attrs), overwrite=True)
                    for f in (path / LEDGER).glob("block-*.json"):
                        f.unlink()
                elif name in ("x", "y", "z"):
                    shutil.rmtree(path / name, ignore_errors=True)
                    _create_axis(root, "xyz".index(name), coords["xyz".index(name)], overwrite=True)
            zarr.consolidate_metadata(str(path))
    except OSError as exc:
        raise RunError(f"cannot repair {str(path)!r} ({exc.strerror or exc}); check permissions and free "
                       "space") from None
    update_attrs(path, complete=False)
    return [n for n in names if n != "zarr.json"]


__all__ = ["BlockReader", "CHARGE_UNITS", "CHARGE_VARIABLES", "CheckedSlabs", "DENSITY_UNITS", "STORE_FORMAT",
           "VARIABLES", "VerifyReport", "charges_file", "check_frame", "check_identity", "check_metadata",
           "check_target", "checksum", "create", "damage_error", "n_frames", "open_checked", "open_variables",
           "problems_error", "read_attrs", "read_block_charges", "read_ledger", "repair_metadata", "structure_hash",
           "structure_hash_chunks", "trajectory_hash", "unit_index", "update_attrs", "variable_layout", "verify",
           "write_block", "write_block_charges", "write_charges", "write_ledger"]
