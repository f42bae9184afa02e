"""VASP CHGCAR (also CHG, PARCHG, AECCAR*) files: reader and (streaming) writer.

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

:func:`write_chgcar` writes what VASP writes and reads back with ICHARG=1:
the POSCAR block in VASP 5 form (comment; scale 1.0; lattice vectors, Å;
element symbols; counts; ``Direct`` fractional positions, the atoms grouped
by element in the order of the symbols line, as VASP requires), a blank line,
``n1 n2 n3`` and the values ρ·V_cell (e/Å³ × Å³ = electrons) with the first
index fastest, five per line in VASP's ``E17.11``-like form
(``%17.11E``: 12 significant digits, more than a float32 holds).  No PAW
augmentation occupancies follow: a bigdens density is a smooth valence
density with no one-centre part (VASP then starts the one-centre
occupancies from atomic values).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from . import DensityFile, _provenance, _write_grid

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: Values per line of the data section (VASP's CHGCAR layout).
VALUES_PER_LINE = 5


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


def species_order(numbers) -> tuple[list[int], np.ndarray]:
    """The elements in order of first appearance and the permutation grouping atoms by element.

    Parameters
    ----------
    numbers : array_like, shape (n_atoms,), int
        Atomic numbers.

    Returns
    -------
    elements : list of int
        Atomic numbers, each once, in order of first appearance (the CHGCAR symbols line).
    order : ndarray, shape (n_atoms,), int64
        Atom indices grouped by element in that order, stable within an element:
        ``numbers[order]`` is contiguous per element, as VASP requires.
    """
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    elements = list(dict.fromkeys(numbers.tolist()))
    rank = np.array([elements.index(z) for z in numbers.tolist()], dtype=np.int64)
    return elements, np.argsort(rank, kind="stable").astype(np.int64)


def write_chgcar(
    path: str | Path | IO[str],
    atoms: "Atoms",
    data_e_per_A3,
    *,
    comment: str = "bigdens density (rho*V_cell, electrons; lengths A)",
) -> None:
    """Write a periodic density as a VASP CHGCAR file (Å; values ρ·V_cell, electrons).

    Streaming: ``data_e_per_A3`` is read one ``[:, :, k]`` plane at a time,
    ``k = 0 .. n3-1`` in order, each once (a ``numpy.memmap``, a zarr array or
    a :class:`bigdens.store.CheckedSlabs` along axis 2 works): the file's
    order (first index fastest, then the second, the third slowest) is plane
    after plane along the third axis.  Memory: one (n1, n2) plane as float64
    and its text, besides what the source holds (a ``CheckedSlabs`` keeps one
    block-thick slab, n1·n2·block float32).  A path is written atomically
    (temporary file + rename).

    The atoms are written grouped by element, elements in order of first
    appearance (:func:`species_order`); a reader gets them in that order,
    which differs from ``atoms`` when elements interleave.  Grid point
    ``(i, j, k)`` is at ``(i/n1)·a1 + (j/n2)·a2 + (k/n3)·a3`` (DESIGN §1, as
    in VASP).

    Parameters
    ----------
    path
        Output path or an open text file.
    atoms
        The structure (Å); its cell defines the grid.
    data_e_per_A3
        Density, shape (n1, n2, n3), e/Å³; anything with ``shape`` giving an
        (n1, n2) array for ``[:, :, k]``.
    comment
        First line of the file (one line).

    Raises
    ------
    InputError
        A field that is not 3-D, a structure without a 3-D cell, or a plane of the wrong shape.
    """
    if len(atoms) == 0:
        raise InputError("cannot write a CHGCAR file for a structure without atoms (VASP needs at least one)")
    _write_grid(path, atoms, data_e_per_A3, label="CHGCAR",
                body=lambda fh, shape, cell: _write_chgcar(fh, atoms, data_e_per_A3, shape, cell, comment))


def _write_chgcar(fh: IO[str], atoms: "Atoms", data: Any, shape, cell: np.ndarray, comment: str) -> None:
    from ase.data import chemical_symbols

    volume = abs(float(np.linalg.det(cell)))  # Å³: ρ (e/Å³) · V = electrons per grid point × n1·n2·n3
    elements, order = species_order(atoms.numbers)
    numbers = np.asarray(atoms.numbers)[order]
    frac = np.linalg.solve(cell.T, np.asarray(atoms.positions, dtype=np.float64)[order].T).T
    fh.write(comment.replace("\n", " ").strip() + "\n")
    fh.write(f"  {1.0:.14f}\n")
    for v in cell:
        fh.write(f"  {v[0]:22.16f}{v[1]:22.16f}{v[2]:22.16f}\n")
    fh.write("".join(f" {chemical_symbols[z]:>4s}" for z in elements) + "\n")
    fh.write("".join(f" {int(np.count_nonzero(numbers == z)):4d}" for z in elements) + "\n")
    fh.write("Direct\n")
    for p in frac:
        fh.write(f" {p[0]:20.16f}{p[1]:20.16f}{p[2]:20.16f}\n")
    fh.write(f"\n {shape[0]:4d} {shape[1]:4d} {shape[2]:4d}\n")
    carry = np.empty(0)
    for k in range(shape[2]):
        plane = np.asarray(data[:, :, k], dtype=np.float64)  # (n1, n2), e/Å³
        if plane.shape != shape[:2]:
            raise InputError(f"CHGCAR data plane {k} has shape {plane.shape}, expected {shape[:2]}")
        values = np.concatenate([carry, plane.T.ravel() * volume])  # first index fastest; ρ·V
        n_full = values.size // VALUES_PER_LINE * VALUES_PER_LINE
        fh.write(_lines(values[:n_full]))
        carry = values[n_full:]
    if carry.size:
        fh.write(_lines(carry))


def _lines(values: np.ndarray) -> str:
    # Values as lines of VALUES_PER_LINE (the last may be shorter), " %17.11E" each, one text.
    if values.size == 0:
        return ""
    full, rest = divmod(values.size, VALUES_PER_LINE)
    fmt = (" {:17.11E}" * VALUES_PER_LINE + "\n") * full + (" {:17.11E}" * rest + "\n" if rest else "")
    return fmt.format(*values.tolist())


__all__ = ["VALUES_PER_LINE", "read_chgcar", "species_order", "write_chgcar"]
