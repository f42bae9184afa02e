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
    from ase.data import atomic_numbers

    path = Path(path)
    where = f"CHGCAR file {str(path)!r}"
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {where} ({type(exc).__name__}: {exc})") from None

    def bad(msg: str) -> InputError:
        return InputError(f"{where}: {msg}")

    if len(lines) < 9:
        raise bad("too short for a POSCAR block and a grid; the file is truncated")
    comment = lines[0].strip()
    scale = _floats(lines[1].split()[:1])
    vectors = [_floats(lines[i].split()[:3]) for i in (2, 3, 4)]
    if not scale or any(v is None or len(v) != 3 for v in vectors):
        raise bad("malformed header (line 2: scale factor; lines 3-5: lattice vectors in Å)")
    cell = np.array(vectors, dtype=np.float64)
    with np.errstate(all="ignore"):
        det = abs(float(np.linalg.det(cell)))
        lengths = float(np.linalg.norm(cell, axis=1).prod())
        if not (np.isfinite(scale[0]) and scale[0] != 0) or not det > 1e-6 * max(lengths, 1e-300):
            raise bad(
                f"the cell is singular (scale {scale[0]:g}, lattice vectors {cell.tolist()} Å): a zero or "
                "degenerate lattice vector means the file is damaged"
            )
    if scale[0] < 0:  # a negative scale is the cell volume
        cell *= (-scale[0] / abs(np.linalg.det(cell))) ** (1.0 / 3.0)
    else:
        cell *= scale[0]
    line = 5
    tokens = lines[line].split()
    if _floats(tokens) is None:  # VASP 5: element names, then counts
        symbols = tokens
        line += 1
    else:  # VASP 4: names only in the comment, if at all
        symbols = comment.split()
    counts = _floats(lines[line].split())
    if not counts or any(c != int(c) or c < 0 for c in counts):
        raise bad(f"line {line + 1} must hold the number of atoms per element, got {lines[line]!r}")
    counts = [int(c) for c in counts]
    symbols = symbols[: len(counts)]
    if len(symbols) != len(counts) or any(s.split("_")[0].split("/")[0] not in atomic_numbers for s in symbols):
        raise bad(
            "the element names are missing or unknown (VASP 4 files keep them nowhere); add a line with "
            "the element symbols after the lattice vectors, as VASP 5 writes it"
        )
    numbers = np.repeat([atomic_numbers[s.split("_")[0].split("/")[0]] for s in symbols], counts).astype(np.int64)
    line += 1
    if lines[line].strip()[:1].lower() == "s":  # Selective dynamics
        line += 1
    mode = lines[line].strip()[:1].lower()
    cartesian = mode in ("c", "k")
    line += 1
    n_atoms = len(numbers)
    coords = []
    for i in range(n_atoms):
        xyz = _floats(lines[line + i].split()[:3]) if line + i < len(lines) else None
        if xyz is None or len(xyz) != 3:
            raise bad(f"expected {n_atoms} atom positions after line {line}; the file is truncated or malformed")
        coords.append(xyz)
    line += n_atoms
    coords = np.array(coords, dtype=np.float64).reshape(n_atoms, 3)
    positions = coords * (scale[0] if scale[0] > 0 else 1.0) if cartesian else coords @ cell
    # Grid header: the first non-blank line after the positions.
    while line < len(lines) and not lines[line].strip():
        line += 1
    shape = _floats(lines[line].split()) if line < len(lines) else None
    if not shape or len(shape) != 3 or any(s != int(s) or s < 1 for s in shape):
        raise bad("no grid header 'n1 n2 n3' after the positions; the file is truncated or not a CHGCAR")
    shape = tuple(int(s) for s in shape)
    n_expected = shape[0] * shape[1] * shape[2]
    line += 1
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
        raise bad(
            f"truncated: the grid header announces {shape[0]}×{shape[1]}×{shape[2]} = {n_expected} values "
            f"but the file holds {n_read}; the file was cut off: copy or write it again"
        )
    # The data must end exactly with the grid: extra values on the last line,
    # or a further line of density values, mean the header is wrong.
    next_tokens = []
    while line < len(lines) and not next_tokens:
        next_tokens = lines[line].split()
        line += 1
    extra = n_read - n_expected
    if extra or (next_tokens and _floats(next_tokens) is not None and len(next_tokens) > 3):
        raise bad(
            f"the grid does not match its header {shape[0]} {shape[1]} {shape[2]}: more than {n_expected} "
            "density values follow it; check the header"
        )
    values = np.concatenate(chunks)
    volume = abs(np.linalg.det(cell))
    density = values.reshape(shape[::-1]).transpose(2, 1, 0) / volume  # Fortran order; ρ·V -> ρ
    prov = _provenance(path, "chgcar", comment=comment)
    return DensityFile(cell=cell, positions=positions, numbers=numbers, density=np.ascontiguousarray(density),
                       provenance=prov)


__all__ = ["read_chgcar"]
