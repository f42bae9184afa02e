"""The starting structures of a run ("variants"), from a builder spec or a structure file.

One structure per variant label: FCC Al, one random Si(1−x)Ge(x) alloy per x
(builders of :mod:`bigdens.structure`) or a file that ASE reads, optionally
with vacancies and a void.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms


def build_variants(
    system: str,
    *,
    cells: Sequence[int] = (1, 1, 1),
    x_values: Sequence[float] | None = None,
    vacancies: int = 0,
    void: float | None = None,
    seed: int = 0,
    structure_file: str | Path | None = None,
    structure_format: str | None = None,
) -> tuple[dict[str, "Atoms"], dict[str, dict]]:
    """Starting structures and their description, keyed by variant label.

    ``system`` is ``"al"`` (FCC Al), ``"sige"`` (one random alloy per value of
    ``x_values``) or ``"file"`` (``structure_file`` read with ASE).  ``vacancies``
    random atoms are removed (seeded), then, with ``void`` (Å), every atom within
    that radius of the cell centre.  Labels are e.g. ``"al32"``, ``"al32-vac1"``,
    ``"sige64-x0.25"``, ``"al108-void6"`` (the number of atoms the void removed).
    """
    from .. import structure

    cells = tuple(int(c) for c in cells)
    out: dict[str, Atoms] = {}
    info: dict[str, dict] = {}
    if system == "al":
        if x_values:
            raise InputError("--x is for sige only")
        atoms = structure.fcc_al(cells)
        label = f"al{len(atoms)}"
        desc = {"builder": "fcc_al", "cells": list(cells), "a_A": structure.A_AL}
        entries = [(label, atoms, desc)]
    elif system == "sige":
        if not x_values:
            raise InputError("bigdens datagen sige needs the Ge fraction(s), e.g. --x 0 0.25 0.5")
        entries = []
        for j, x in enumerate(x_values):
            atoms = structure.diamond_sige(cells, x=float(x), seed=seed + j)
            entries.append((f"sige{len(atoms)}-x{float(x):.2f}", atoms,
                            {"builder": "diamond_sige", "cells": list(cells), "x": float(x),
                             "a_A": structure.vegard(float(x)), "site_seed": seed + j}))
    elif system == "file":
        if structure_file is None:
            raise InputError("give a structure file")
        atoms = structure.read(structure_file, format=structure_format)
        stem = Path(structure_file).stem
        entries = [(stem, atoms, {"file": str(structure_file)})]
    else:
        raise InputError(f"system must be 'al', 'sige' or a structure file, got {system!r}")
    for label, atoms, desc in entries:
        if vacancies:
            atoms = structure.remove_vacancies(atoms, vacancies, seed=seed)
            label = f"{label}-vac{vacancies}"
            desc = dict(desc, vacancies=vacancies, vacancy_seed=seed)
        if void:
            n_before = len(atoms)
            atoms = structure.carve_void(atoms, void)
            label = f"{label}-void{n_before - len(atoms)}"
            desc = dict(desc, void_radius_A=float(void), void_atoms_removed=n_before - len(atoms))
        atoms.pbc = True
        out[label] = atoms
        info[label] = desc
    return out, info
