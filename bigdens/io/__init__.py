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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import file_hash
from ..errors import InputError
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


def _write_grid(path, atoms, data, *, label: str, body) -> None:
    """The preamble every grid writer shares: check the field and the cell, then write atomically.

    ``data``: the density, anything with a 3-D ``shape`` (n1, n2, n3), e/Å³; ``atoms``: the
    structure (Å), whose cell must be 3-D.  ``body(fh, shape, cell)`` writes the file's text to
    ``fh`` (``shape``: tuple of 3 ints; ``cell``: (3, 3) float64, Å).  A path is written through
    :func:`bigdens._files.atomic_write` (temporary file + rename); an open text file is written as it is.
    ``label`` names the format in messages (``"cube"``, ``"XSF"``, ``"CHGCAR"``).
    """
    shape = tuple(int(n) for n in np.shape(data)) if hasattr(data, "shape") else None
    if shape is None or len(shape) != 3 or min(shape) < 1:
        raise InputError(f"{label} data must be a 3-D grid (n1, n2, n3), got shape {shape}")
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if abs(np.linalg.det(cell)) < 1e-9:
        article = "an" if label[0].lower() in "aeiox" else "a"
        raise InputError(f"cannot write {article} {label} file for a structure without a 3-D cell")
    if isinstance(path, (str, os.PathLike)):
        from .._files import atomic_write

        with atomic_write(path, mode="w") as fh:
            body(fh, shape, cell)
    else:
        body(path, shape, cell)


__all__ = ["DensityFile", "DensityFormat", "FORMATS", "get_format", "guess_format", "output_format",
           "read_density_file", "write_density_file"]
