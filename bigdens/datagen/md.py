"""Thermalization: one seeded Langevin MD trajectory per structure and temperature.

ASE's :class:`~ase.md.langevin.Langevin` thermostat with Maxwell-Boltzmann
initial velocities and the classical potentials of
:mod:`bigdens.datagen.potentials`.  After ``equilibration_ps`` the
configuration is taken every ``interval_ps``; temperatures at or above
``melt_above_K`` first run ``melt_ps`` at ``melt_temperature_K`` so that they
are liquid.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import InputError, RunError
from .potentials import classical_calculator
from .settings import MDSettings

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: One progress line per MD snapshot, at INFO (a child of ``bigdens.datagen``; ``bigdens datagen`` shows them).
logger = logging.getLogger(__name__)

#: What the ``potential`` names of :func:`~bigdens.datagen.potentials.potential_name` are, for the provenance.
_POTENTIALS = {"emt": "EMT (ase.calculators.emt)",
               "tersoff-sige": "Tersoff Si-Ge, PRB 39, 5566 (1989), matscipy Manybody"}


def check_temperatures(temperatures: Sequence[float]) -> tuple[float, ...]:
    """Validate thermostat temperatures (K), or raise InputError."""
    temps = tuple(float(t) for t in temperatures)
    if not temps:
        raise InputError("give at least one temperature, e.g. --temperatures 300 600")
    for t in temps:
        if not (math.isfinite(t) and t > 0):
            raise InputError(f"temperatures must be > 0 K, got {t!r}; e.g. --temperatures 300 600 900")
    if len(set(temps)) != len(temps):
        raise InputError(f"temperatures must be distinct, got {list(temps)}")
    return temps


def _thermalize_momenta(atoms: "Atoms", temperature_K: float, *, rng: np.random.Generator) -> None:
    # Maxwell-Boltzmann velocities: ASE >= 3.29's thermalize_momenta, else its older (deprecated) name.
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        return
    thermalize_momenta(atoms, temperature_K, rng=rng)


class _Trajectory:
    """Langevin MD of one structure: runs at given temperatures and counts the time since the start."""

    def __init__(self, atoms: "Atoms", md: MDSettings, rng: np.random.Generator):
        self.atoms, self.md, self.rng = atoms, md, rng
        self.time_ps = 0.0

    def steps(self, ps: float) -> int:
        return max(1, int(round(ps * 1000.0 / self.md.timestep_fs)))

    def run(self, temperature_K: float, ps: float) -> None:
        """Run ``ps`` (rounded to whole steps, at least one) at ``temperature_K``."""
        from ase import units
        from ase.md.langevin import Langevin

        n = self.steps(ps)
        dyn = Langevin(self.atoms, timestep=self.md.timestep_fs * units.fs, temperature_K=temperature_K,
                       friction=self.md.friction_per_fs / units.fs, rng=self.rng, fixcm=False)
        dyn.run(n)
        self.time_ps += n * self.md.timestep_fs / 1000.0


def _start(atoms: "Atoms", temperature: float, md: MDSettings, seed: int) -> tuple[_Trajectory, str, bool]:
    # A copy of atoms with the potential, no centre-of-mass drift and Maxwell-Boltzmann velocities
    # (at the melt temperature when it melts first); its trajectory, the potential's name and the melt flag.
    from ase.constraints import FixCom
    from ase.md.velocitydistribution import Stationary

    atoms = atoms.copy()
    atoms.pbc = True
    atoms.calc, potential = classical_calculator(atoms, potential=md.potential)
    atoms.set_constraint(FixCom())  # no drift of the centre of mass
    rng = np.random.default_rng(seed)
    melt = md.melt_above_K is not None and temperature >= md.melt_above_K
    _thermalize_momenta(atoms, md.melt_temperature_K if melt else temperature, rng=rng)
    Stationary(atoms)
    return _Trajectory(atoms, md, rng), potential, melt


def _provenance(md: MDSettings, *, potential: str, temperature: float, melt: bool, seed: int) -> dict[str, Any]:
    # The description every snapshot of one trajectory shares (JSON-compatible).
    return {
        "method": "Langevin MD (ase.md.langevin.Langevin), Maxwell-Boltzmann initial velocities",
        "potential": _POTENTIALS[potential],
        "potential_name": potential,
        "temperature_K": temperature,
        "timestep_fs": md.timestep_fs,
        "friction_per_fs": md.friction_per_fs,
        "equilibration_ps": md.equilibration_ps,
        "interval_ps": md.interval_ps,
        "melt": {"temperature_K": md.melt_temperature_K, "duration_ps": md.melt_ps} if melt else None,
        "seed": seed,
        "ase_version": __import__("ase").__version__,
    }


def _msd(a: np.ndarray, b: np.ndarray) -> float:
    """Mean-square displacement between two (n_atoms, 3) position arrays, Å²."""
    return float(((a - b) ** 2).sum(axis=1).mean())


def thermalize(
    atoms: "Atoms",
    temperature: float,
    *,
    n_snapshots: int,
    md: MDSettings,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Run seeded Langevin MD and return ``n_snapshots`` configurations.

    One progress line per snapshot goes to ``progress`` if given, else to the
    module logger (``bigdens.datagen.md``, INFO).

    Returns
    -------
    list of (positions, info)
        Positions (n_atoms, 3) Å and a JSON-compatible description of the
        thermalization of each snapshot (potential, temperatures, time step,
        friction, time since velocity initialisation, seed, mean-square
        displacement from the start).
    """
    (temperature,) = check_temperatures([temperature])
    if n_snapshots < 1:
        raise InputError(f"number of snapshots per temperature must be >= 1, got {n_snapshots!r}")
    traj, potential, melt = _start(atoms, temperature, md, seed)
    atoms = traj.atoms
    start = atoms.positions.copy()
    if melt:
        traj.run(md.melt_temperature_K, md.melt_ps)
    base = _provenance(md, potential=potential, temperature=temperature, melt=melt, seed=seed)
    out = []
    previous = atoms.positions.copy()
    for k in range(n_snapshots):
        traj.run(temperature, md.equilibration_ps if k == 0 else md.interval_ps)
        info = dict(base, time_ps=round(traj.time_ps, 6),
                    instantaneous_temperature_K=round(float(atoms.get_temperature()), 2),
                    msd_from_start_A2=round(_msd(atoms.positions, start), 4),
                    msd_since_previous_A2=round(_msd(atoms.positions, previous), 4),
                    potential_energy_eV=round(float(atoms.get_potential_energy()), 6))
        previous = atoms.positions.copy()
        out.append((previous, info))
        (progress or logger.info)(f"  MD {temperature:g} K: snapshot {k + 1}/{n_snapshots} at {traj.time_ps:.2f} ps "
                                  f"(T_inst {info['instantaneous_temperature_K']:.0f} K, MSD "
                                  f"{info['msd_from_start_A2']:.3f} Å², {info['msd_since_previous_A2']:.3f} Å² since "
                                  "the previous one)")
    if not np.isfinite(atoms.positions).all():
        raise RunError(f"the MD at {temperature} K blew up (non-finite positions); lower the time step")
    return out
