"""GPAW restart files (``.gpw``): reader (needs GPAW).

The density is GPAW's smooth valence pseudo-density,
``calc.get_pseudo_density()``, already in e/Å³ on GPAW's periodic grid, whose
point (0, 0, 0) sits on the cell origin (DESIGN §1; see
:mod:`bigdens.datagen`).  The calculator parameters stored in the file go into
the provenance; files of identical parameters share a protocol name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .._imports import attempt_import
from ..errors import InputError
from . import DensityFile, _provenance


def _jsonable(value):
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def _parameters(calc) -> dict:
    # GPAW >= 25 (new code) keeps a Parameters object with todict(); older GPAW a dict.
    p = calc.parameters
    if hasattr(p, "todict"):
        return p.todict()
    try:
        return dict(p)
    except TypeError:
        return {"repr": repr(p)}


def read_gpw(path: str | Path) -> DensityFile:
    """Read atoms and pseudo-density from a GPAW ``.gpw`` file.

    Raises
    ------
    MissingDependencyError
        If GPAW is not installed.
    InputError
        If GPAW cannot read the file.
    """
    path = Path(path)
    gpaw = attempt_import("gpaw", purpose=f"reading the GPAW file {str(path)!r}")
    try:
        calc = gpaw.GPAW(str(path), txt=None)
        atoms = calc.get_atoms()
        density = np.asarray(calc.get_pseudo_density(), dtype=np.float64)
        params = _jsonable(_parameters(calc))
    except Exception as exc:
        raise InputError(f"GPAW cannot read {str(path)!r} ({type(exc).__name__}: {exc}); "
                         "the file is damaged or not a .gpw file") from None
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    prov = _provenance(path, "gpw", code="GPAW", code_version=gpaw.__version__, settings=params,
                       density_kind="smooth valence pseudo-density, calc.get_pseudo_density(), e/A^3")
    prov["protocol"] = f"import-gpw-{digest}"
    return DensityFile(cell=np.asarray(atoms.cell[:], dtype=np.float64), positions=atoms.positions.copy(),
                       numbers=atoms.numbers.astype(np.int64), density=density, provenance=prov)


__all__ = ["read_gpw"]
