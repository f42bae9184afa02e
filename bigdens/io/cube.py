"""Gaussian cube files: reader and (streaming) writer.

Cube files store lengths in Bohr and densities in e/Bohr³; here they become
Å and e/Å³ (``ase.units.Bohr`` = 0.529177 Å).

Layout: two comment lines; ``n_atoms  origin_x origin_y origin_z``; three
lines ``n_i  v_ix v_iy v_iz`` (number of points and voxel vector along each
axis); one line per atom ``Z  charge  x y z``; then ``n1·n2·n3`` values with
the last index fastest (C order), conventionally 6 per line with a new line
for each ``(i, j)``.

Grid convention: grid point ``(i, j, k)`` sits at ``origin + i·v1 + j·v2 +
k·v3``.  For a periodic density the cell is ``a_i = n_i · v_i`` and point
(0, 0, 0) is on the origin: the convention of DESIGN §1, as ASE and GPAW
write cube files (no repeated end point).  A cube whose origin is not zero is
read with the atoms shifted by ``-origin``, which describes the same periodic
system with point (0, 0, 0) on the cell origin; the original origin is kept
in the provenance.

Files that repeat the periodic end point (``n_i + 1`` points per axis, as
some plotting tools write) cannot be told apart from the header alone and are
read as they are.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from ase.units import Bohr

from ..errors import InputError
from . import DensityFile, _provenance, _write_grid

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: Bohr radius, Å: ``ase.units.Bohr`` (ASE's default CODATA set), the value ASE and GPAW write cube files with.
BOHR = Bohr


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt")
    return open(path, "r")


def read_cube(path: str | Path, *, density_units: str = "e/bohr^3") -> DensityFile:
    """Read a periodic density from a Gaussian cube file.

    Parameters
    ----------
    path
        The cube file (``.gz`` compressed is fine).
    density_units
        Units of the values: ``"e/bohr^3"`` (the cube standard, default) or
        ``"e/A^3"`` (files written by ``ase.io.write(..., data=rho)`` with a
        density in e/Å³ and no conversion).

    Returns
    -------
    DensityFile
        Cell (Å), positions (Å, relative to the grid origin), numbers, and the
        density, shape (n1, n2, n3), float64, e/Å³.

    Raises
    ------
    InputError
        If the header is malformed, the file is truncated, or it holds more
        values than its header says.
    """
    path = Path(path)
    if density_units not in ("e/bohr^3", "e/A^3"):
        raise InputError(f"density_units must be 'e/bohr^3' or 'e/A^3', got {density_units!r}")
    where = f"cube file {str(path)!r}"
    try:
        with _open_text(path) as fh:
            comments = [fh.readline().rstrip("\n"), fh.readline().rstrip("\n")]
            n_atoms, origin, counts, voxels = _read_header(fh, where)
            numbers, positions = _read_atoms(fh, n_atoms, where)
            text = fh.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"cannot read {where} ({type(exc).__name__}: {exc})") from None
    density = _grid_values(text, counts, where)
    if density_units == "e/bohr^3":
        density /= BOHR**3
    cell = voxels * np.array(counts)[:, None] * BOHR
    origin_A = origin * BOHR
    prov = _provenance(path, "cube", comments=comments, origin_A=origin_A.tolist(),
                       density_units_in_file=density_units)
    return DensityFile(cell=cell, positions=positions * BOHR - origin_A, numbers=numbers, density=density,
                       provenance=prov)


def _read_header(fh: IO[str], where: str) -> tuple[int, np.ndarray, list[int], np.ndarray]:
    """Lines 3-6: the atom count, the origin (3,) and voxel vectors (3, 3) in Bohr, and the point counts."""
    header = [fh.readline().split() for _ in range(4)]
    try:
        n_atoms = int(header[0][0])
        origin = np.array([float(v) for v in header[0][1:4]])
        counts = [int(h[0]) for h in header[1:]]
        voxels = np.array([[float(v) for v in h[1:4]] for h in header[1:]])
    except (IndexError, ValueError):
        raise InputError(f"{where}: malformed header (lines 3-6 must hold a count and three numbers)") from None
    if origin.shape != (3,) or voxels.shape != (3, 3):
        raise InputError(f"{where}: malformed header (lines 3-6 must hold a count and three numbers)")
    if n_atoms < 0:
        raise InputError(f"{where} holds orbitals (negative atom count), not a density")
    if min(counts) <= 0:
        raise InputError(
            f"{where}: grid counts {counts} are not positive (negative counts mean Å units, "
            "which bigdens does not read); convert the file to Bohr"
        )
    return n_atoms, origin, counts, voxels


def _read_atoms(fh: IO[str], n_atoms: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The next ``n_atoms`` lines ``Z charge x y z``: numbers (n_atoms,) int64 and positions (n_atoms, 3) Bohr."""
    atom_lines = [fh.readline().split() for _ in range(n_atoms)]
    try:
        numbers = np.array([int(float(a[0])) for a in atom_lines], dtype=np.int64)
        positions = np.array([[float(v) for v in a[2:5]] for a in atom_lines], dtype=np.float64)
    except (IndexError, ValueError):
        raise InputError(f"{where}: malformed atom lines (expected {n_atoms}: Z charge x y z)") from None
    if positions.shape != (n_atoms, 3):
        raise InputError(f"{where}: truncated or malformed atom lines (expected {n_atoms})")
    return numbers, positions


def _grid_values(text: str, counts: list[int], where: str) -> np.ndarray:
    """The data section's values, shape ``counts`` (C order), float64, the file's units."""
    n_expected = counts[0] * counts[1] * counts[2]
    try:
        values = np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise InputError(f"{where}: non-numeric text in the data section") from None
    if values.size < n_expected:
        raise InputError(
            f"{where} is truncated: its header announces {counts[0]}×{counts[1]}×{counts[2]} = {n_expected} "
            f"values but it holds {values.size}; the file was cut off: write it again"
        )
    if values.size > n_expected:
        raise InputError(
            f"{where}: the grid does not match its header: {values.size} values for a "
            f"{counts[0]}×{counts[1]}×{counts[2]} grid ({n_expected}); check the header counts"
        )
    return values.reshape(counts)


def _row_format(n: int, per_line: int = 6) -> str:
    # Format string for one (i, j) row of n values: `per_line` per line.
    fmt = " {:.7E}"
    full, rest = divmod(n, per_line)
    return ((fmt * per_line + "\n") * full + (fmt * rest + "\n" if rest else ""))


def write_cube(
    path: str | Path | IO[str],
    atoms: "Atoms",
    data_e_per_A3,
    *,
    comment: str = "bigdens density (Bohr, e/Bohr^3)",
) -> None:
    """Write a periodic density as a Gaussian cube file (Bohr, e/Bohr³).

    Streaming-friendly: ``data_e_per_A3`` is read one ``[i]`` slab at a time,
    so a ``numpy.memmap``, a zarr array or an xarray variable of any size
    works with memory of one slab.  The grid follows DESIGN §1 (origin 0,
    voxel vectors ``a_i / n_i``).  A path is written atomically (temporary
    file + rename).

    Parameters
    ----------
    path
        Output path or an open text file.
    atoms
        The structure (Å); its cell defines the grid.
    data_e_per_A3
        Density, shape (n1, n2, n3), e/Å³; anything indexable by ``[i]``
        giving an (n2, n3) array.
    comment
        First line of the file (one line).
    """
    _write_grid(path, atoms, data_e_per_A3, label="cube",
                body=lambda fh, shape, cell: _write_cube(fh, atoms, data_e_per_A3, shape, cell, comment))


def _write_cube(fh: IO[str], atoms: "Atoms", data: Any, shape, cell: np.ndarray, comment: str) -> None:
    scale = BOHR**3  # e/Å³ -> e/Bohr³
    fh.write(comment.replace("\n", " ").strip() + "\n")
    fh.write("OUTER LOOP: X, MIDDLE LOOP: Y, INNER LOOP: Z\n")  # exactly so: ASE parses it
    fh.write(f"{len(atoms):5d} {0.0:12.6f} {0.0:12.6f} {0.0:12.6f}\n")
    for i in range(3):
        v = cell[i] / shape[i] / BOHR
        fh.write(f"{shape[i]:5d} {v[0]:14.10f} {v[1]:14.10f} {v[2]:14.10f}\n")
    for z, p in zip(atoms.numbers, np.asarray(atoms.positions) / BOHR):
        fh.write(f"{int(z):5d} {float(z):12.6f} {p[0]:14.8f} {p[1]:14.8f} {p[2]:14.8f}\n")
    row = _row_format(shape[2])
    for i in range(shape[0]):
        slab = np.asarray(data[i], dtype=np.float64) * scale
        if slab.shape != shape[1:]:
            raise InputError(f"cube data slab {i} has shape {slab.shape}, expected {shape[1:]}")
        buf = io.StringIO()
        for j in range(shape[1]):
            buf.write(row.format(*slab[j].tolist()))
        fh.write(buf.getvalue())


__all__ = ["BOHR", "read_cube", "write_cube"]
