"""Readers and writers of density files; the only place where units are converted.

One module per format, each declared once in the registry
:data:`bigdens.io.formats.FORMATS` (name, file-name patterns, units in the
file, whether bigdens reads and/or writes it), from which
:func:`guess_format`, :func:`read_density_file`, :func:`write_density_file`,
``bigdens export --format`` and the messages listing formats are derived:

* :mod:`bigdens.io.cube` — Gaussian cube (Bohr, e/Bohr³), reader and writer;
* :mod:`bigdens.io.chgcar` — VASP CHGCAR/CHG/PARCHG/AECCAR (Å, ρ·V_cell in
  electrons), reader and writer;
* :mod:`bigdens.io.xsf` — XCrySDen XSF 3-D data grid, e.g. Quantum ESPRESSO
  ``pp.x`` output (Å, e/Bohr³), reader and writer;
* :mod:`bigdens.io.gpw` — GPAW restart files (Å, e/Å³; needs GPAW), reader.

Each reader ``read_<name>(path)`` returns a :class:`DensityFile` in Å and
e/Å³, density of shape (n1, n2, n3), on the grid of DESIGN §1 (point
(0, 0, 0) on the cell origin); each writer ``write_<name>(path, atoms, data,
*, comment=...)`` takes atoms in Å and a field of shape (n1, n2, n3) in e/Å³
on that grid, read slab by slab along the format's
:attr:`~bigdens.io.formats.DensityFormat.write_axis` (memory of one slab).
:func:`bigdens.data.from_density_file` turns a :class:`DensityFile` into a
snapshot (this package imports nothing of :mod:`bigdens.data`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import file_hash
from .formats import (  # the registry; it imports no format module until one is used
    FORMATS,
    DensityFormat,
    get_format,
    guess_format,
    output_format,
    read_density_file,
    write_density_file,
)


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


def _provenance(path: Path, fmt: str, **extra: Any) -> dict[str, Any]:
    return {"source_file": str(path), "source_format": fmt, "source_sha256": file_hash(path),
            "protocol": f"import-{fmt}", **extra}


__all__ = ["DensityFile", "DensityFormat", "FORMATS", "get_format", "guess_format", "output_format",
           "read_density_file", "write_density_file"]
