"""VASP CHGCAR (also CHG, PARCHG, AECCAR*) files: reader.

A CHGCAR holds a POSCAR block (comment, scale, lattice vectors in Å, element
names (VASP ≥ 5), counts, optional "Selective dynamics", "Direct" or
"Cartesian" coordinates), a blank line, the grid shape ``n1 n2 n3`` and then
``n1·n2·n3`` values of **ρ·V_cell** (electrons, V_cell in Å³) with the
*first* index fastest (Fortran order).  Here they become ρ in e/Å³
(``value / V_cell``) on an ``(n1, n2, n3)`` C-ordered array.  Grid point
``(i, j, k)`` sits at fractional ``(i/n1, j/n2, k/n3)``, the convention of
DESIGN §1.  Only the first (total) density is read; augmentation occupancies
and the magnetization block of spin-polarized runs are ignored.

The densities of VASP are PAW pseudo-densities whose electron count is that
of the PAW potentials used (not recorded in the file): the provenance stores
the integral, and ``n_electrons_expected`` of the resulting snapshot falls
back on HGH valences unless you set it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import DensityFile, _provenance


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def read_chgcar(path: str | Path) -> DensityFile:
    """Read the total density of a VASP CHGCAR-style file.

    Returns
    -------
    DensityFile
        Cell (Å), positions (Å), numbers, density (n1, n2, n3) float64 e/Å³.

    Raises
    ------
    InputError
        If the POSCAR block is malformed, the data are truncated, or the file
        holds more values than its grid header announces.
    """
    path = Path(path)
    where = f"CHGCAR file {str(path)!r}"
    lines = _read_lines(path, where)
    comment = lines[0].strip()
    scale, cell = _lattice(lines, where)
    numbers, line = _species(lines, comment, where)
    positions, line = _positions(lines, line, len(numbers), scale, cell, where)
    shape, line = _grid_shape(lines, line, where)
    values = _grid_values(lines, line, shape, where)
    volume = abs(np.linalg.det(cell))
    density = values.reshape(shape[::-1]).transpose(2, 1, 0) / volume  # Fortran order; ρ·V -> ρ
    prov = _provenance(path, "chgcar", comment=comment)
    return DensityFile(cell=cell, positions=positions, numbers=numbers, density=np.ascontiguousarray(density),
                       provenance=prov)


def _read_lines(path: Path, where: str) -> list[str]:
    # The file's lines; refuses one too short for a POSCAR block and a grid.
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {where} ({type(exc).__name__}: {exc})") from None
    if len(lines) < 9:
        raise InputError(f"{where}: too short for a POSCAR block and a grid; the file is truncated")
    return lines


def _lattice(lines: list[str], where: str) -> tuple[float, np.ndarray]:
    """The scale factor (line 2; a negative one is the cell volume, Å³) and the scaled cell (lines 3-5), (3, 3) Å."""
    scale = _floats(lines[1].split()[:1])
    vectors = [_floats(lines[i].split()[:3]) for i in (2, 3, 4)]
    if not scale or any(v is None or len(v) != 3 for v in vectors):
        raise InputError(f"{where}: malformed header (line 2: scale factor; lines 3-5: lattice vectors in Å)")
    cell = np.array(vectors, dtype=np.float64)
    with np.errstate(all="ignore"):
        det = abs(float(np.linalg.det(cell)))
        lengths = float(np.linalg.norm(cell, axis=1).prod())
        if not (np.isfinite(scale[0]) and scale[0] != 0) or not det > 1e-6 * max(lengths, 1e-300):
            raise InputError(
                f"{where}: the cell is singular (scale {scale[0]:g}, lattice vectors {cell.tolist()} Å): a zero "
                "or degenerate lattice vector means the file is damaged"
            )
    if scale[0] < 0:  # a negative scale is the cell volume
        cell *= (-scale[0] / abs(np.linalg.det(cell))) ** (1.0 / 3.0)
    else:
        cell *= scale[0]
    return scale[0], cell


def _species(lines: list[str], comment: str, where: str) -> tuple[np.ndarray, int]:
    """The atomic numbers, shape (n_atoms,) int64, and the index of the line after the counts line."""
    from ase.data import atomic_numbers

    line = 5
    tokens = lines[line].split()
    if _floats(tokens) is None:  # VASP 5: element names, then counts
        symbols = tokens
        line += 1
    else:  # VASP 4: names only in the comment, if at all
        symbols = comment.split()
    counts = _floats(lines[line].split())
    if not counts or any(c != int(c) or c < 0 for c in counts):
        raise InputError(f"{where}: line {line + 1} must hold the number of atoms per element, got {lines[line]!r}")
    counts = [int(c) for c in counts]
    symbols = symbols[: len(counts)]
    if len(symbols) != len(counts) or any(s.split("_")[0].split("/")[0] not in atomic_numbers for s in symbols):
        raise InputError(
            f"{where}: the element names are missing or unknown (VASP 4 files keep them nowhere); add a line "
            "with the element symbols after the lattice vectors, as VASP 5 writes it"
        )
    numbers = np.repeat([atomic_numbers[s.split("_")[0].split("/")[0]] for s in symbols], counts).astype(np.int64)
    return numbers, line + 1


def _positions(lines: list[str], line: int, n_atoms: int, scale: float, cell: np.ndarray,
               where: str) -> tuple[np.ndarray, int]:
    """The atom positions, shape (n_atoms, 3), Å, from ``lines[line]`` on, and the index of the line after them.

    ``lines[line]`` is the optional "Selective dynamics" line or the coordinate mode ("Direct" or "Cartesian").
    """
    if lines[line].strip()[:1].lower() == "s":  # Selective dynamics
        line += 1
    mode = lines[line].strip()[:1].lower()
    cartesian = mode in ("c", "k")
    line += 1
    coords = []
    for i in range(n_atoms):
        xyz = _floats(lines[line + i].split()[:3]) if line + i < len(lines) else None
        if xyz is None or len(xyz) != 3:
            raise InputError(f"{where}: expected {n_atoms} atom positions after line {line}; the file is truncated "
                             "or malformed")
        coords.append(xyz)
    line += n_atoms
    coords = np.array(coords, dtype=np.float64).reshape(n_atoms, 3)
    positions = coords * (scale if scale > 0 else 1.0) if cartesian else coords @ cell
    return positions, line


def _grid_shape(lines: list[str], line: int, where: str) -> tuple[tuple[int, int, int], int]:
    """The grid header ``n1 n2 n3``, the first non-blank line from ``lines[line]`` on, and the index after it."""
    while line < len(lines) and not lines[line].strip():
        line += 1
    shape = _floats(lines[line].split()) if line < len(lines) else None
    if not shape or len(shape) != 3 or any(s != int(s) or s < 1 for s in shape):
        raise InputError(f"{where}: no grid header 'n1 n2 n3' after the positions; the file is truncated or not a "
                         "CHGCAR")
    return tuple(int(s) for s in shape), line + 1


def _grid_values(lines: list[str], line: int, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """The n1·n2·n3 values (ρ·V_cell, electrons) from ``lines[line]`` on, in file order, float64."""
    n_expected = shape[0] * shape[1] * shape[2]
    chunks: list[np.ndarray] = []
    n_read = 0
    while n_read < n_expected and line < len(lines):
        tokens = lines[line].split()
        line += 1
        if not tokens:
            continue
        try:
            row = np.array(tokens, dtype=np.float64)
        except ValueError:
            break  # text (augmentation block) before the grid was complete
        chunks.append(row)
        n_read += row.size
    if n_read < n_expected:
        raise InputError(
            f"{where}: truncated: the grid header announces {shape[0]}×{shape[1]}×{shape[2]} = {n_expected} values "
            f"but the file holds {n_read}; the file was cut off: copy or write it again"
        )
    _check_grid_end(lines, line, n_read - n_expected, shape, where)
    return np.concatenate(chunks)


def _check_grid_end(lines: list[str], line: int, extra: int, shape: tuple[int, int, int], where: str) -> None:
    # The data must end exactly with the grid: extra values on the last line,
    # or a further line of density values, mean the header is wrong.
    next_tokens = []
    while line < len(lines) and not next_tokens:
        next_tokens = lines[line].split()
        line += 1
    if extra or (next_tokens and _floats(next_tokens) is not None and len(next_tokens) > 3):
        raise InputError(
            f"{where}: the grid does not match its header {shape[0]} {shape[1]} {shape[2]}: more than "
            f"{shape[0] * shape[1] * shape[2]} density values follow it; check the header"
        )


__all__ = ["read_chgcar"]
