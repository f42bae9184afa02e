"""Damage outside the blocks' data (every array's metadata, the coordinates, the atoms and their tiles)
and the repair of what can be rebuilt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import RunError
from .creation import _create_axis, _create_variable, create_ledger, update_attrs
from .damage import repairable
from .layout import (DENSITY_UNITS, LEDGER, TILES, VARIABLES, _Frame, _quiet, _tile_layout, _zarr, frame_coordinates,
                     n_frames, read_attrs, structure_hash_chunks, variable_layout)


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
    if not (path / LEDGER).is_dir():
        problems.append((LEDGER, "folder missing (every block's record is lost)"))
    if values:
        bad = {name for name, _ in problems}
        problems += _check_values(path, attrs, skip=bad)
    return problems


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


def repair_metadata(path: str | Path, problems: list[tuple[str, str]]) -> list[str]:
    """Rebuild what :func:`check_metadata` found damaged and :func:`repairable` can rebuild.

    A density variable is made again empty (NaN) and every ledger entry is
    dropped, so ``bigdens predict --resume`` recomputes every block;
    coordinates are written again from the cell; a missing ledger folder is
    made again (empty: every block is recomputed); the consolidated metadata
    is rewritten.  The store is marked incomplete (which is all that edited
    ``"attributes"`` need: ``--resume`` writes the run's results again).

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
                elif name == LEDGER:
                    create_ledger(root)
            zarr.consolidate_metadata(str(path))
    except OSError as exc:
        raise RunError(f"cannot repair {str(path)!r} ({exc.strerror or exc}); check permissions and free "
                       "space") from None
    update_attrs(path, complete=False)
    return [n for n in names if n not in ("zarr.json", "attributes") and not n.startswith("charge")]
