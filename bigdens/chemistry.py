"""Chemistry tables: valence electrons of the DFT protocol's pseudopotentials.

The one place where per-element electron counts live; the data sets, the
engine (``--renormalize``, the electron-count check), the per-atom charges
and the DFT cost model all read them from here.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .errors import InputError

#: Valence electrons of GPAW's default (non-semicore) HGH setups, by element.
HGH_VALENCE: dict[str, int] = {
    "H": 1, "He": 2, "Li": 1, "Be": 2, "B": 3, "C": 4, "N": 5, "O": 6, "F": 7, "Ne": 8,
    "Na": 1, "Mg": 2, "Al": 3, "Si": 4, "P": 5, "S": 6, "Cl": 7, "Ar": 8, "K": 1, "Ca": 2,
    "Sc": 3, "Ti": 4, "V": 5, "Cr": 6, "Mn": 7, "Fe": 8, "Co": 9, "Ni": 10, "Cu": 1, "Zn": 2,
    "Ga": 3, "Ge": 4, "As": 5, "Se": 6, "Br": 7, "Kr": 8, "Rb": 1, "Sr": 2, "Y": 3, "Zr": 4,
    "Nb": 5, "Mo": 6, "Tc": 7, "Ru": 8, "Rh": 9, "Pd": 10, "Ag": 1, "Cd": 2, "In": 3, "Sn": 4,
    "Sb": 5, "Te": 6, "I": 7, "Xe": 8, "Cs": 1, "Ba": 2, "Ta": 5, "W": 6, "Re": 7, "Os": 8,
    "Ir": 9, "Pt": 10, "Au": 1, "Hg": 2, "Tl": 3, "Pb": 4, "Bi": 5, "Po": 6, "At": 7, "Rn": 8,
}


def hgh_valence(numbers: Iterable[int]) -> int:
    """Number of valence electrons of the default HGH setups for the atoms ``numbers``.

    Parameters
    ----------
    numbers
        Atomic numbers, one per atom: an array, a list or any iterable
        (read once).

    Raises
    ------
    InputError
        If an element has no HGH setup, naming it, or an atomic number is no element.
    """
    from ase.data import chemical_symbols

    z, counts = np.unique(np.fromiter((int(n) for n in numbers), dtype=np.int64), return_counts=True)
    total = 0
    for zi, n in zip(z.tolist(), counts.tolist()):
        if not 0 < zi < len(chemical_symbols):
            raise InputError(f"atomic number {zi} is no element (1-{len(chemical_symbols) - 1}): the atom list is damaged")
        symbol = chemical_symbols[zi]
        if symbol not in HGH_VALENCE:
            raise InputError(
                f"element {symbol!r} has no HGH pseudopotential setup in GPAW; the bigdens DFT protocol "
                f"supports {', '.join(HGH_VALENCE)}"
            )
        total += HGH_VALENCE[symbol] * n
    return total


__all__ = ["HGH_VALENCE", "hgh_valence"]
