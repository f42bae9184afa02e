"""Readers and writers of density files; the only place where units are converted.

One module per format:

* :mod:`bigdens.io.cube` — Gaussian cube (Bohr, e/Bohr³), reader and writer;
* :mod:`bigdens.io.chgcar` — VASP CHGCAR/PARCHG (Å, ρ·V_cell);
* :mod:`bigdens.io.xsf` — XCrySDen XSF 3-D data grid, e.g. Quantum ESPRESSO
  ``pp.x`` output (Å, e/Bohr³), reader and writer;
* :mod:`bigdens.io.gpw` — GPAW restart files (needs GPAW).

Each reader returns a :class:`DensityFile` in Å and e/Å³ on the grid of
DESIGN §1 (point (0, 0, 0) on the cell origin);
:func:`bigdens.data.from_density_file` turns it into a snapshot (this package
imports nothing of :mod:`bigdens.data`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import file_hash
from ..errors import InputError


@dataclass(frozen=True)
class DensityFile:
    """A density read from a file, in bigdens units.

    Attributes
    ----------
    cell : ndarray, shape (3, 3), float64
        Lattice vectors as rows, Å.
    positions : ndarray, shape (n_atoms, 3), float64
        Cartesian positions, Å, relative to the grid's point (0, 0, 0).
    numbers : ndarray, shape (n_atoms,), int64
        Atomic numbers.
    density : ndarray, shape (n1, n2, n3), float32 or float64
        Electron density, e/Å³.
    provenance : dict
        Source file, format and whatever the file says about its origin.
    """

    cell: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    density: np.ndarray
    provenance: dict = field(default_factory=dict)


def guess_format(path: str | Path) -> str:
    """``"cube"``, ``"chgcar"``, ``"gpw"`` or ``"xsf"`` from a file name, or InputError."""
    name = Path(path).name.lower()
    if name.endswith((".cube", ".cub", ".cube.gz")):
        return "cube"
    if name.endswith((".xsf", ".xsf.gz")):
        return "xsf"
    if name.endswith(".gpw"):
        return "gpw"
    if any(tag in name for tag in ("chgcar", "parchg", "aeccar")) or name == "chg" or name.endswith(".vasp"):
        return "chgcar"
    raise InputError(
        f"cannot tell the format of {str(path)!r} from its name; density files must be Gaussian cube "
        "(*.cube), VASP CHGCAR (*CHGCAR*, *.vasp), GPAW (*.gpw) or XSF (*.xsf, e.g. Quantum ESPRESSO pp.x "
        "output); or pass a bigdens data-set directory"
    )


def read_density_file(path: str | Path, *, format: str | None = None) -> DensityFile:
    """Read a cube, CHGCAR, .gpw or XSF density file (format from the name unless given).

    Cube and XSF values are read as e/Bohr³ (the cube standard; Quantum
    ESPRESSO's ``pp.x``); call :func:`bigdens.io.cube.read_cube` or
    :func:`bigdens.io.xsf.read_xsf` with ``density_units="e/A^3"`` for files
    in e/Å³.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"density file {str(path)!r} does not exist")
    format = format or guess_format(path)
    if format == "cube":
        from .cube import read_cube

        return read_cube(path)
    if format == "chgcar":
        from .chgcar import read_chgcar

        return read_chgcar(path)
    if format == "gpw":
        from .gpw import read_gpw

        return read_gpw(path)
    if format == "xsf":
        from .xsf import read_xsf

        return read_xsf(path)
    raise InputError(f"unknown density file format {format!r}; use 'cube', 'chgcar', 'gpw' or 'xsf'")


def _provenance(path: Path, fmt: str, **extra: Any) -> dict[str, Any]:
    return {"source_file": str(path), "source_format": fmt, "source_sha256": file_hash(path),
            "protocol": f"import-{fmt}", **extra}


__all__ = ["DensityFile", "guess_format", "read_density_file"]
