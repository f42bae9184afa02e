"""Classical potentials that thermalize the structures: ASE's EMT and the Si–Ge Tersoff potential.

EMT covers Al and ASE's other EMT elements; the Tersoff potential of
J. Tersoff, PRB 39, 5566 (1989), evaluated by matscipy, covers Si and Ge.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .._imports import attempt_import
from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms


#: Tersoff Si–Ge parameters, J. Tersoff, PRB 39, 5566 (1989), Table I, in the
#: layout of matscipy's ``Tersoff_PRB_39_5566_Si_C`` (pairs Si–Si, Si–Ge,
#: Ge–Ge; mixed A, B, R (r1), S (r2) geometric means; λ, μ arithmetic means).
_SI = dict(A=1830.8, B=471.18, lam=2.4799, mu=1.7322, beta=1.1e-6, n=0.78734, c=100390.0, d=16.217,
           h=-0.59825, R=2.7, S=3.0)
_GE = dict(A=1769.0, B=419.23, lam=2.4451, mu=1.7047, beta=9.0166e-7, n=0.75627, c=106430.0, d=15.652,
           h=-0.43884, R=2.8, S=3.1)
Tersoff_PRB_39_5566_Si_Ge: dict[str, Any] = {
    "__ref__": "Tersoff J., Phys. Rev. B 39, 5566 (1989)",
    "style": "Tersoff",
    "el": ["Si", "Ge"],
    "A": [_SI["A"], math.sqrt(_SI["A"] * _GE["A"]), _GE["A"]],
    "B": [_SI["B"], math.sqrt(_SI["B"] * _GE["B"]), _GE["B"]],
    "chi": [1.0, 1.00061, 1.0],
    "lambda": [_SI["lam"], (_SI["lam"] + _GE["lam"]) / 2, _GE["lam"]],
    "mu": [_SI["mu"], (_SI["mu"] + _GE["mu"]) / 2, _GE["mu"]],
    "lambda3": [0.0, 0.0, 0.0],
    "beta": [_SI["beta"], _GE["beta"]],
    "n": [_SI["n"], _GE["n"]],
    "c": [_SI["c"], _GE["c"]],
    "d": [_SI["d"], _GE["d"]],
    "h": [_SI["h"], _GE["h"]],
    "r1": [_SI["R"], math.sqrt(_SI["R"] * _GE["R"]), _GE["R"]],
    "r2": [_SI["S"], math.sqrt(_SI["S"] * _GE["S"]), _GE["S"]],
}


def potential_name(atoms: "Atoms", *, potential: str = "auto") -> str:
    """The classical potential that thermalizes ``atoms``: ``"emt"`` or ``"tersoff-sige"``.

    ``"auto"`` picks ASE's EMT when it has parameters for every species, else
    the Tersoff Si-Ge potential for Si/Ge.

    Raises
    ------
    InputError
        If no potential (or not the one asked for) covers the species.
    """
    from ase.calculators.emt import parameters

    symbols = set(atoms.get_chemical_symbols())
    if potential == "auto":
        if symbols <= set(parameters):
            return "emt"
        if symbols <= {"Si", "Ge"}:
            return "tersoff-sige"
        raise InputError(
            f"no classical potential to thermalize {sorted(symbols)}: bigdens has ASE's EMT "
            f"({', '.join(parameters)}) and Tersoff Si-Ge; thermalize the structures yourself and "
            "import the DFT densities with 'bigdens data import'"
        )
    if potential == "emt" and not symbols <= set(parameters):
        raise InputError(f"EMT has no parameters for {sorted(symbols - set(parameters))}")
    if potential == "tersoff-sige" and not symbols <= {"Si", "Ge"}:
        raise InputError(f"the Tersoff Si-Ge potential has no parameters for {sorted(symbols - {'Si', 'Ge'})}")
    return potential


def classical_calculator(atoms: "Atoms", *, potential: str = "auto"):
    """The classical potential used to thermalize ``atoms`` and its name.

    Returns
    -------
    calc, name
        An ASE calculator and ``"emt"`` or ``"tersoff-sige"`` (see :func:`potential_name`).

    Raises
    ------
    InputError
        If no potential covers the species.
    """
    name = potential_name(atoms, potential=potential)
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT(), "emt"
    attempt_import("matscipy", purpose="thermalizing Si/Ge with the Tersoff potential")
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms import TersoffBrenner

    return Manybody(**TersoffBrenner(Tersoff_PRB_39_5566_Si_Ge)), "tersoff-sige"
