"""Creating a store (empty variables, coordinates, atoms, atom tiles, attributes), opening its variables
and atom tiles for the workers, and updating its attributes."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..errors import RunError, SetupError
from .layout import (DENSITY_UNITS, FRAME_COORDS, LEDGER, STORE_FORMAT, STORE_VERSION, TILES, VARIABLES, _Frame,
                     _jsonable, _quiet, _tile_layout, _zarr, frame_coordinates, n_frames, structure_hash,
                     variable_layout)

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ..atomtiles import TiledAtoms
    from ..bnn import DensityModel
    from ..domain import DomainReport
    from ..grid import Grid


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
    trajectory : bigdens.trajectory.Trajectory, optional
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
        create_ledger(root)
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
    trajectory : bigdens.trajectory.Trajectory, optional
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


def create_ledger(root) -> None:
    """The ``ledger`` group of the open root group ``root`` (empty: no block recorded)."""
    root.create_group(LEDGER, attributes={"description": "one block-NNNNNNN.json per finished block"})


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


def _create_variable(root, name: str, *, shape, chunk, frames: int | None = None, coordinates: str | None = None,
                     overwrite: bool = False) -> None:
    # A density variable as create() makes it (NaN until written); verify() checks against _expected_metadata.
    shape, chunk, dims = variable_layout(shape, chunk, frames)
    attributes = {"units": DENSITY_UNITS, "long_name": VARIABLES[name]}
    if coordinates:
        attributes["coordinates"] = coordinates
    root.create_array(name, shape=shape, chunks=chunk, dtype="float32", fill_value=np.nan,
                      dimension_names=dims, overwrite=overwrite, attributes=attributes)


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
