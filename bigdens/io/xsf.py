"""XCrySDen XSF files with a 3-D data grid: reader and writer.

Quantum ESPRESSO's ``pp.x`` writes the valence density this way with
``plot_num=0, iflag=3, output_format=5``.  XSF lengths are in Å; the values
have no stated unit, and ``pp.x`` writes e/bohr³ (checked here on QE 6.7: a
2-atom Si cell integrates to its 8 valence electrons, tests/test_qe_import.py).
They become e/Å³ (``ase.units.Bohr`` = 0.529177 Å).

Layout read here: ``CRYSTAL``; ``PRIMVEC`` (three lattice vectors, Å);
``PRIMCOORD`` (``n_atoms 1``, then ``symbol-or-Z  x y z`` in Å, optional
forces ignored); one ``BEGIN_BLOCK_DATAGRID_3D`` holding one
``BEGIN_DATAGRID_3D_name`` (or ``DATAGRID_3D_name``): ``N1 N2 N3``, the
origin, three span vectors (Å), then ``N1·N2·N3`` values with the *first*
index fastest (Fortran order), ``END_DATAGRID_3D``.  Comment lines (``#``),
``CONVVEC`` and other blocks (2-D grids, band grids, ``BEGIN_INFO``) are
skipped.

Grid convention: XSF grids are "general" grids: point ``(i, j, k)`` sits at
``origin + i/(N1-1)·s1 + j/(N2-1)·s2 + k/(N3-1)·s3``, so a periodic density
over the cell (span vectors = lattice vectors) holds ``N_i = n_i + 1`` points
per axis, the last plane repeating the first.  The reader checks both (spans
equal to PRIMVEC; last planes equal to the first) and drops the repeated
planes, giving the ``(n1, n2, n3)`` grid of DESIGN §1: point ``(i, j, k)`` at
``(i/n1)·a1 + (j/n2)·a2 + (k/n3)·a3``.  A non-zero origin shifts the atoms by
``-origin`` (the same periodic system with point (0, 0, 0) on the cell
origin), as :mod:`bigdens.io.cube` does; the origin is kept in the provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from ase.data import atomic_numbers
from ase.units import Bohr

from ..errors import InputError
from . import DensityFile, _provenance, _write_grid

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: Bohr radius, Å (``ase.units.Bohr``).
BOHR = Bohr

#: Largest difference, Å, between a span vector and its lattice vector for the grid to cover the cell.
SPAN_TOLERANCE = 1e-4

#: Largest difference between a repeated end plane and the first plane, relative to max |value|.
PERIODIC_TOLERANCE = 1e-4

_UNITS = ("e/bohr^3", "e/A^3")


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt")
    return open(path, "r")


def _floats(line: str, n: int, where: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in line.split()[:n]]
    except ValueError:
        values = []
    if len(values) != n:
        raise InputError(f"{where}: malformed {what} line {line.strip()[:60]!r} (expected {n} numbers)")
    return values


def read_xsf(path: str | Path, *, density_units: str = "e/bohr^3") -> DensityFile:
    """Read a periodic density from an XSF file's 3-D data grid.

    Parameters
    ----------
    path
        The XSF file (``.gz`` compressed is fine).
    density_units
        Units of the values: ``"e/bohr^3"`` (Quantum ESPRESSO ``pp.x``,
        default) or ``"e/A^3"``.

    Returns
    -------
    DensityFile
        Cell (Å, PRIMVEC), positions (Å, relative to the grid origin),
        numbers, and the density, shape (N1 - 1, N2 - 1, N3 - 1), float64,
        e/Å³ (the repeated end planes dropped).

    Raises
    ------
    InputError
        If the file has no 3-D data grid, is not a 3-D periodic structure
        (``CRYSTAL`` with ``PRIMVEC`` and ``PRIMCOORD``), holds more than one
        3-D grid or animation step, is truncated or malformed, or its grid
        does not cover the cell periodically.
    """
    path = Path(path)
    if density_units not in _UNITS:
        raise InputError(f"density_units must be 'e/bohr^3' or 'e/A^3', got {density_units!r}")
    where = f"XSF file {str(path)!r}"
    lines = _Lines(_read_lines(path, where), where)
    kind, cell, atom_lines, grids = _parse(lines)
    g = _one_periodic_grid(grids, kind, cell, atom_lines, where)
    numbers, positions = _parse_atoms(atom_lines, where)
    full = _grid_values(lines, g)
    _check_covers_cell(full, g["spans"], cell, where)
    density = np.ascontiguousarray(full[:-1, :-1, :-1])
    if density_units == "e/bohr^3":
        density /= BOHR**3
    prov = _provenance(path, "xsf", block=g["block"], grid=g["name"], origin_A=g["origin"].tolist(),
                       points_in_file=list(g["counts"]), density_units_in_file=density_units)
    return DensityFile(cell=cell, positions=positions - g["origin"], numbers=numbers, density=density,
                       provenance=prov)


def _read_lines(path: Path, where: str) -> list[str]:
    # The file's non-empty, non-comment lines, stripped.
    try:
        with _open_text(path) as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"cannot read {where} ({type(exc).__name__}: {exc})") from None
    return [s for s in (raw.strip() for raw in text.splitlines()) if s and not s.startswith("#")]


class _Lines:
    """A cursor over the file's lines: ``take`` the next one, refusing a file that ends too early."""

    def __init__(self, lines: list[str], where: str):
        self.lines, self.where, self.pos = lines, where, 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.lines)

    def take(self, what: str) -> str:
        if self.done:
            raise InputError(f"{self.where} is truncated: it ends inside its {what}")
        self.pos += 1
        return self.lines[self.pos - 1]

    def skip_to(self, predicate) -> None:
        # Advance to the first line satisfying predicate (or the end).
        while not self.done and not predicate(self.lines[self.pos]):
            self.pos += 1


def _parse(lines: _Lines) -> tuple[str | None, np.ndarray | None, list[str] | None, list[dict[str, Any]]]:
    """The structure kind, PRIMVEC cell (Å), PRIMCOORD atom lines and the 3-D data grids' headers."""
    where = lines.where
    kind = cell = atom_lines = None
    grids: list[dict[str, Any]] = []
    while not lines.done:
        line = lines.take("header")
        key = line.split()[0].upper()
        if key == "ANIMSTEPS":
            if line.split()[1:2] != ["1"]:
                raise InputError(f"{where} is an animation ({line}); bigdens reads files of one structure")
        elif key in ("CRYSTAL", "SLAB", "POLYMER", "MOLECULE", "ATOMS"):
            kind = key
        elif key == "PRIMVEC":
            cell = np.array([_floats(lines.take("PRIMVEC"), 3, where, "PRIMVEC") for _ in range(3)])
        elif key == "CONVVEC":
            for _ in range(3):
                lines.take("CONVVEC")
        elif key == "PRIMCOORD":
            atom_lines = _primcoord(lines)
        elif key == "BEGIN_BLOCK_DATAGRID_3D":
            grids += _datagrid_block(lines)
        elif key.startswith("BEGIN_"):  # BEGIN_INFO, BEGIN_BLOCK_DATAGRID_2D, BEGIN_BLOCK_BANDGRID_3D, ...
            closing = "END_" + key[len("BEGIN_"):]
            lines.skip_to(lambda s: s.split()[0].upper() == closing)
            lines.pos += 1
        # Other lines (atoms of a non-periodic file, unknown keywords) are skipped.
    return kind, cell, atom_lines, grids


def _primcoord(lines: _Lines) -> list[str]:
    # The atom lines after PRIMCOORD's count line.
    head = lines.take("PRIMCOORD").split()
    try:
        n_atoms = int(head[0])
    except (IndexError, ValueError):
        raise InputError(f"{lines.where}: malformed PRIMCOORD count line {' '.join(head)!r}") from None
    if n_atoms < 0:
        raise InputError(f"{lines.where}: negative atom count {n_atoms} in PRIMCOORD")
    return [lines.take("PRIMCOORD atoms") for _ in range(n_atoms)]


def _datagrid_block(lines: _Lines) -> list[dict[str, Any]]:
    # The headers of the DATAGRID_3D grids of one BEGIN_BLOCK_DATAGRID_3D block, each with its value lines' range.
    where = lines.where
    block = lines.take("BEGIN_BLOCK_DATAGRID_3D")
    grids = []
    while True:
        line = lines.take(f"data block {block!r} (no END_BLOCK_DATAGRID_3D)")
        upper = line.upper()
        if upper.startswith("END_BLOCK_DATAGRID_3D"):
            return grids
        if not (upper.startswith("BEGIN_DATAGRID_3D") or upper.startswith("DATAGRID_3D")):
            raise InputError(f"{where}: unexpected line {line[:60]!r} in data block {block!r}")
        prefix = "BEGIN_DATAGRID_3D" if upper.startswith("BEGIN_") else "DATAGRID_3D"
        name = line[len(prefix):].lstrip("_") or "unnamed"
        head = lines.take(f"data grid {name!r}").split()
        try:
            counts = [int(v) for v in head[:3]]
        except ValueError:
            counts = []
        if len(counts) != 3:
            raise InputError(f"{where}: malformed grid size line {' '.join(head)!r} of data grid {name!r} "
                             "(expected three point counts)")
        origin = np.array(_floats(lines.take(f"data grid {name!r}"), 3, where, "grid origin"))
        spans = np.array([_floats(lines.take(f"data grid {name!r}"), 3, where, "span vector") for _ in range(3)])
        start = lines.pos
        lines.skip_to(lambda s: s.upper().startswith("END_DATAGRID_3D"))
        if lines.done:
            raise InputError(f"{where} is truncated: data grid {name!r} has no END_DATAGRID_3D; "
                             "the file was cut off: write it again")
        grids.append({"block": block, "name": name, "counts": counts, "origin": origin, "spans": spans,
                      "lines": (start, lines.pos)})
        lines.pos += 1


def _one_periodic_grid(grids: list, kind, cell, atom_lines, where: str) -> dict[str, Any]:
    # The file's one 3-D grid, of a 3-D periodic structure; refuses anything else with one line.
    if not grids:
        raise InputError(
            f"{where} holds no 3-D data grid (no BEGIN_BLOCK_DATAGRID_3D with a DATAGRID_3D in it): a structure "
            "without a density; write the density with pp.x (plot_num=0, iflag=3, output_format=5)"
        )
    if len(grids) > 1:
        names = ", ".join(repr(g["name"]) for g in grids)
        raise InputError(f"{where} holds {len(grids)} 3-D data grids ({names}); bigdens reads one density "
                         "per file: write the total valence density alone")
    if kind != "CRYSTAL" or cell is None or atom_lines is None:
        if kind not in (None, "CRYSTAL"):
            what = {"SLAB": "is a SLAB (periodic in 2 directions)", "POLYMER": "is a POLYMER (periodic in 1 "
                    "direction)"}.get(kind, f"is a molecule ({kind}, not periodic)")
        else:
            missing = [k for k, v in (("CRYSTAL", kind), ("PRIMVEC", cell), ("PRIMCOORD", atom_lines)) if v is None]
            what = f"has no {' or '.join(missing)}"
        raise InputError(f"{where} {what}: bigdens reads densities of 3-D periodic cells "
                         "(CRYSTAL with PRIMVEC and PRIMCOORD)")
    counts = grids[0]["counts"]
    if min(counts) < 2:
        raise InputError(f"{where}: grid of {counts[0]}×{counts[1]}×{counts[2]} points; a periodic XSF grid has "
                         "at least 2 points per axis (the last repeats the first)")
    return grids[0]


def _grid_values(lines: _Lines, g: dict[str, Any]) -> np.ndarray:
    """The grid's values, shape ``counts`` (with the repeated end planes), float64, the file's units."""
    where, counts = lines.where, g["counts"]
    a, b = g["lines"]
    try:
        values = np.array(" ".join(lines.lines[a:b]).split(), dtype=np.float64)
    except ValueError:
        raise InputError(f"{where}: non-numeric text in data grid {g['name']!r}") from None
    n_expected = counts[0] * counts[1] * counts[2]
    if values.size < n_expected:
        raise InputError(
            f"{where} is truncated: its data grid announces {counts[0]}×{counts[1]}×{counts[2]} = {n_expected} "
            f"values but holds {values.size}; the file was cut off: write it again"
        )
    if values.size > n_expected:
        raise InputError(
            f"{where}: the data grid does not match its header: {values.size} values for a "
            f"{counts[0]}×{counts[1]}×{counts[2]} grid ({n_expected}); check the header counts"
        )
    return values.reshape(counts[::-1]).transpose(2, 1, 0)  # first index fastest in the file


def _check_covers_cell(full: np.ndarray, spans: np.ndarray, cell: np.ndarray, where: str) -> None:
    # The grid spans the cell's lattice vectors and its last plane along each axis repeats the first.
    if not np.allclose(spans, cell, rtol=0.0, atol=SPAN_TOLERANCE):
        raise InputError(
            f"{where}: the data grid spans {np.round(spans, 6).tolist()} Å, not the cell's lattice vectors "
            f"{np.round(cell, 6).tolist()} Å (PRIMVEC); bigdens reads densities on the whole periodic cell "
            "(pp.x: iflag=3, output_format=5)"
        )
    scale = max(float(np.max(np.abs(full))), np.finfo(np.float64).tiny)
    ends = {0: (full[-1], full[0]), 1: (full[:, -1], full[:, 0]), 2: (full[:, :, -1], full[:, :, 0])}
    for axis, (last, first) in ends.items():
        diff = float(np.max(np.abs(last - first))) if np.all(np.isfinite(last - first)) else np.inf
        if not diff <= PERIODIC_TOLERANCE * scale:
            raise InputError(
                f"{where}: the last grid plane along axis {axis + 1} differs from the first (by up to {diff:.3g}; "
                f"max |value| {scale:.3g}): a periodic XSF grid repeats its first plane at the end, and this one "
                "does not; write the whole cell with pp.x (iflag=3, output_format=5)"
            )


def _parse_atoms(atom_lines: list[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    # (numbers (n,), positions (n, 3) Å) from PRIMCOORD lines "symbol-or-Z x y z [fx fy fz]".
    numbers, positions = [], []
    for line in atom_lines:
        parts = line.split()
        if len(parts) < 4:
            raise InputError(f"{where}: malformed PRIMCOORD atom line {line[:60]!r} (expected: symbol-or-Z x y z)")
        tag = parts[0]
        if tag.isdigit():
            z = int(tag)
        else:
            z = atomic_numbers.get(tag.capitalize(), -1)
        if not 0 < z < 119:
            raise InputError(f"{where}: unknown element {tag!r} in PRIMCOORD")
        numbers.append(z)
        positions.append(_floats(" ".join(parts[1:4]), 3, where, "PRIMCOORD atom"))
    return np.array(numbers, dtype=np.int64), np.array(positions, dtype=np.float64).reshape(-1, 3)


def write_xsf(
    path: str | Path | IO[str],
    atoms: "Atoms",
    data_e_per_A3,
    *,
    density_units: str = "e/bohr^3",
    name: str = "bigdens_density",
    comment: str | None = None,
) -> None:
    """Write a periodic density as an XSF file with a 3-D data grid (Å; values e/bohr³ by default).

    The file is what ``pp.x`` writes (and :func:`read_xsf` reads): a general
    grid of ``(n1+1)×(n2+1)×(n3+1)`` points over the cell, origin 0, span
    vectors = lattice vectors, the last plane along each axis repeating the
    first, values with the first index fastest.  ``data_e_per_A3`` is read
    one ``[:, :, k]`` plane at a time, ``k = 0 .. n3-1`` in order, each once
    (a ``numpy.memmap``, a zarr array or a
    :class:`bigdens.store.CheckedSlabs` along axis 2 works); memory: the
    current (n1, n2) plane and the first (kept to repeat it at the end), as
    float64, and one plane's text.  A path is written atomically (temporary
    file + rename).

    Parameters
    ----------
    path
        Output path or an open text file.
    atoms
        The structure (Å); its cell defines the grid.
    data_e_per_A3
        Density, shape (n1, n2, n3), e/Å³ (the grid of DESIGN §1).
    density_units
        Units to write the values in: ``"e/bohr^3"`` (as QE, default) or ``"e/A^3"``.
    name
        Name of the data block and grid (no spaces).
    comment
        One line written first as an XSF comment (``# ...``), if given.
    """
    if density_units not in _UNITS:
        raise InputError(f"density_units must be 'e/bohr^3' or 'e/A^3', got {density_units!r}")
    if not name or any(c.isspace() for c in name):
        raise InputError(f"XSF grid name must be one word, got {name!r}")
    scale = BOHR**3 if density_units == "e/bohr^3" else 1.0
    _write_grid(path, atoms, data_e_per_A3, label="XSF",
                body=lambda fh, shape, cell: _write_xsf(fh, atoms, data_e_per_A3, shape, cell, scale, name, comment))


def _write_xsf(fh: IO[str], atoms: "Atoms", data: Any, shape, cell: np.ndarray, scale: float, name: str,
               comment: str | None = None) -> None:
    if comment is not None:
        fh.write("# " + comment.replace("\n", " ").strip() + "\n")
    fh.write("CRYSTAL\nPRIMVEC\n")
    for v in cell:
        fh.write(f" {v[0]:16.10f} {v[1]:16.10f} {v[2]:16.10f}\n")
    fh.write(f"PRIMCOORD\n {len(atoms)} 1\n")
    for z, p in zip(atoms.numbers, np.asarray(atoms.positions)):
        fh.write(f" {int(z):3d} {p[0]:16.10f} {p[1]:16.10f} {p[2]:16.10f}\n")
    fh.write(f"BEGIN_BLOCK_DATAGRID_3D\n {name}\nBEGIN_DATAGRID_3D_{name}\n")
    fh.write(f" {shape[0] + 1} {shape[1] + 1} {shape[2] + 1}\n {0.0:.10f} {0.0:.10f} {0.0:.10f}\n")
    for v in cell:
        fh.write(f" {v[0]:16.10f} {v[1]:16.10f} {v[2]:16.10f}\n")
    wrap1 = np.arange(shape[0] + 1) % shape[0]
    wrap2 = np.arange(shape[1] + 1) % shape[1]
    first = None
    for k in range(shape[2] + 1):
        if k < shape[2]:  # each plane read once, in order (streaming sources); the last repeats the first
            plane = np.asarray(data[:, :, k], dtype=np.float64) * scale  # (n1, n2)
            if plane.shape != shape[:2]:
                raise InputError(f"XSF data plane {k} has shape {plane.shape}, expected {shape[:2]}")
            if k == 0:
                first = plane
        else:
            plane = first
        column_major = plane[np.ix_(wrap1, wrap2)].T.ravel()  # first index fastest
        fh.write("\n".join(" ".join(f"{v:.7E}" for v in column_major[i:i + 6])
                           for i in range(0, column_major.size, 6)))
        fh.write("\n")
    fh.write("END_DATAGRID_3D\nEND_BLOCK_DATAGRID_3D\n")


__all__ = ["BOHR", "read_xsf", "write_xsf"]
