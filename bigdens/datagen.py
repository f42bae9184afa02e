"""Generate DFT density data sets: thermalize, take snapshots, run GPAW.

The pipeline is

1. **structures** — one or more starting structures ("variants", e.g. one
   Si(1−x)Ge(x) alloy per x), from the builders of :mod:`bigdens.structure`
   or from a file;
2. **thermalization** — per variant and temperature, one seeded Langevin MD
   trajectory (ASE's :class:`~ase.md.langevin.Langevin`, Maxwell-Boltzmann
   initial velocities) with a classical potential (ASE's EMT for Al, the
   Si–Ge Tersoff potential of J. Tersoff, PRB 39, 5566 (1989) through
   matscipy for Si/Ge); after ``equilibration_ps`` the configuration is taken
   every ``interval_ps``.  Temperatures at or above ``melt_above_K`` start
   from a melt (``melt_ps`` at ``melt_temperature_K``) so that they are
   liquid;
3. **plan** — the snapshots, their splits and the generation order are
   written to ``plan.json`` in the output directory before any DFT runs;
4. **DFT** — one GPAW single point per snapshot with the settings of
   :class:`DFTSettings` (protocol ``bigdens-dft-v1``), each snapshot written
   atomically into the data set (:mod:`bigdens.data`).

The run is resumable: rerunning the same command on the same directory
reuses ``plan.json`` and computes only the snapshots that the manifest does
not list yet.  A lock file (``.datagen.lock``) keeps two runs from writing the
same directory.

Grid convention
---------------
GPAW's periodic grids put point ``(i, j, k)`` at fractional position
``(i/n1, j/n2, k/n3)`` (point (0, 0, 0) on the cell origin), the convention of
DESIGN §1.  Checked on FCC Al with an atom on the origin: the pseudo-density
from ``calc.get_pseudo_density()`` is inversion-symmetric about grid point 0
(``ρ[i,j,k] == ρ[-i,-j,-k]`` to 2e-16) but not about a half-spacing offset
(differences of 0.12 e/Å³), and ``gd.get_grid_point_coordinates()[:, 0, 0, 0]``
is (0, 0, 0).  So the density is stored as GPAW returns it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ._imports import attempt_import
from .errors import InputError, RunError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms
    from .data import Snapshot

#: Progress lines (MD snapshots, plan, DFT runs) go here, at INFO; ``bigdens datagen`` shows them.
logger = logging.getLogger(__name__)

PROTOCOL = "bigdens-dft-v1"
PLAN_FILE = "plan.json"
LOCK_FILE = ".datagen.lock"
PLAN_VERSION = 1


# -- settings ----------------------------------------------------------------
#: Settings fields -> the ``bigdens datagen`` option that sets them (named in error messages).
_FLAGS = {"timestep_fs": "--timestep", "equilibration_ps": "--equilibration", "interval_ps": "--interval",
          "melt_temperature_K": "--melt-temperature", "kpts": "--kpts", "gpts": "--gpts"}


def _flag(name: str) -> str:
    return f" ({_FLAGS[name]})" if name in _FLAGS else ""


@dataclass(frozen=True)
class DFTSettings:
    """GPAW settings of a DFT single point.

    The defaults are protocol ``bigdens-dft-v1``: plane waves at 600 eV, HGH
    pseudopotentials, LDA, Fermi-Dirac smearing of 0.1 eV, density converged
    to 1e-5, Monkhorst-Pack ``n_i = max(1, ceil(16 Å / |a_i|))`` and a real-space
    grid of ``n_i = 4·ceil(|a_i| / 0.8 Å)`` points.  Any other value makes a
    different protocol (:attr:`protocol` then names it with a hash).

    Attributes
    ----------
    ecut : float
        Plane-wave cutoff, eV.
    setups : str
        GPAW setups (pseudopotentials).
    xc : str
        Exchange-correlation functional.
    smearing : float
        Fermi-Dirac width, eV.
    density_convergence : float
        GPAW's ``convergence={'density': ...}`` (electrons per valence electron).
    kpoint_length : float
        k-points per direction ``max(1, ceil(kpoint_length / |a_i|))``, Å.
    grid_spacing : float
        Real-space grid ``grid_multiple · ceil(|a_i| / grid_spacing)``, Å.
    grid_multiple : int
        See ``grid_spacing``.
    kpts : tuple of 3 int or None
        Fixed Monkhorst-Pack mesh overriding ``kpoint_length`` (tests).
    gpts : tuple of 3 int or None
        Fixed grid shape overriding ``grid_spacing`` (tests).
    """

    ecut: float = 600.0
    setups: str = "hgh"
    xc: str = "LDA"
    smearing: float = 0.1
    density_convergence: float = 1e-5
    kpoint_length: float = 16.0
    grid_spacing: float = 0.8
    grid_multiple: int = 4
    kpts: tuple[int, int, int] | None = None
    gpts: tuple[int, int, int] | None = None

    def __post_init__(self):
        for name in ("ecut", "smearing", "density_convergence", "kpoint_length", "grid_spacing"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"DFTSettings.{name}{_flag(name)} must be a positive number, got {value!r}")
        for name in ("kpts", "gpts"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(int(v) for v in value)
                if len(value) != 3 or min(value) < 1:
                    raise InputError(f"DFTSettings.{name}{_flag(name)} must be three positive integers, got {value!r}")
                object.__setattr__(self, name, value)

    @property
    def protocol(self) -> str:
        """``"bigdens-dft-v1"`` for the default settings, else ``"custom-<hash>"``."""
        if self == DFTSettings():
            return PROTOCOL
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]
        return f"custom-{digest}"

    def kpts_for(self, cell: np.ndarray) -> tuple[int, int, int]:
        """Monkhorst-Pack mesh for ``cell`` (rows, Å)."""
        if self.kpts is not None:
            return self.kpts
        lengths = np.linalg.norm(np.asarray(cell, dtype=np.float64), axis=1)
        return tuple(max(1, math.ceil(self.kpoint_length / length - 1e-9)) for length in lengths)

    def gpts_for(self, cell: np.ndarray) -> tuple[int, int, int]:
        """Real-space grid shape for ``cell`` (rows, Å)."""
        if self.gpts is not None:
            return self.gpts
        lengths = np.linalg.norm(np.asarray(cell, dtype=np.float64), axis=1)
        m = self.grid_multiple
        return tuple(m * math.ceil(length / self.grid_spacing - 1e-9) for length in lengths)


@dataclass(frozen=True)
class MDSettings:
    """Langevin thermalization before the snapshots.

    Attributes
    ----------
    timestep_fs : float
        MD time step, fs.
    friction_per_fs : float
        Langevin friction, 1/fs.
    equilibration_ps : float
        Time from velocity initialisation to the first snapshot, ps.
    interval_ps : float
        Time between snapshots of one trajectory, ps.
    melt_above_K : float or None
        Temperatures ≥ this start from a melt (liquid snapshots).
    melt_temperature_K : float
        Temperature of the melt, K.
    melt_ps : float
        Duration of the melt, ps (before the ``equilibration_ps`` at the target).
    potential : str
        ``"auto"`` (EMT for Al and other EMT elements, Tersoff for Si/Ge),
        ``"emt"`` or ``"tersoff-sige"``.
    """

    timestep_fs: float = 1.0
    friction_per_fs: float = 0.01
    equilibration_ps: float = 2.0
    interval_ps: float = 0.5
    melt_above_K: float | None = None
    melt_temperature_K: float = 2500.0
    melt_ps: float = 1.0
    potential: str = "auto"

    def __post_init__(self):
        for name in ("timestep_fs", "friction_per_fs", "equilibration_ps", "interval_ps", "melt_temperature_K",
                     "melt_ps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"MDSettings.{name}{_flag(name)} must be a positive number, got {value!r}")
        if self.melt_above_K is not None and not (math.isfinite(self.melt_above_K) and self.melt_above_K > 0):
            raise InputError(f"--melt-above must be a temperature > 0 K, got {self.melt_above_K!r}")
        if self.potential not in ("auto", "emt", "tersoff-sige"):
            raise InputError(f"MD potential must be 'auto', 'emt' or 'tersoff-sige', got {self.potential!r}")


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


def check_requirements(variants: dict[str, "Atoms"], *, md: MDSettings, dft: bool = True) -> None:
    """Fail before any MD or DFT if a package the run needs is missing.

    GPAW for the DFT (unless ``dft`` is False: MD only), and matscipy when a
    variant is thermalized with the Tersoff Si-Ge potential.

    Raises
    ------
    MissingDependencyError
        Naming the package and the command that installs the ``dft`` extra.
    """
    if dft:
        attempt_import("gpaw", purpose="computing DFT densities (bigdens datagen)")
    if any(potential_name(atoms, potential=md.potential) == "tersoff-sige" for atoms in variants.values()):
        attempt_import("matscipy", purpose="thermalizing Si/Ge with the Tersoff potential")


# -- plan --------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedSnapshot:
    """One configuration to compute.

    Attributes
    ----------
    name : str
        Snapshot name (file stem).
    variant : str
        Label of the starting structure.
    temperature : float
        Thermostat temperature, K.
    index : int
        Number of the snapshot within its trajectory.
    split : str
        ``"train"``, ``"validation"`` or ``"test"``.
    cell, positions, numbers
        Structure (Å).
    thermalization : dict
        How the configuration was made (JSON-compatible).
    """

    name: str
    variant: str
    temperature: float
    index: int
    split: str
    cell: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    thermalization: dict = field(default_factory=dict)

    def atoms(self) -> "Atoms":
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "variant": self.variant, "temperature": self.temperature, "index": self.index,
            "split": self.split, "cell": np.asarray(self.cell).tolist(),
            "positions": np.asarray(self.positions).tolist(), "numbers": np.asarray(self.numbers).tolist(),
            "thermalization": self.thermalization,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PlannedSnapshot":
        return cls(d["name"], d["variant"], float(d["temperature"]), int(d["index"]), d["split"],
                   np.array(d["cell"], dtype=np.float64), np.array(d["positions"], dtype=np.float64),
                   np.array(d["numbers"], dtype=np.int64), d.get("thermalization", {}))


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


def assign_splits(groups: Sequence[Sequence[str]], *, fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Deterministic train/validation/test assignment, stratified by group.

    Snapshots are visited group by group (each group shuffled with ``seed``);
    each goes to the split whose count lags its quota
    (``fraction · number visited``) the most.  So every group (e.g. one
    temperature) gets close to the requested fractions, and the totals match.

    Parameters
    ----------
    groups
        Snapshot names, one list per group.
    fractions
        Train, validation, test fractions (non-negative, summing to 1).
    """
    from .data import SPLITS

    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not math.isclose(f.sum(), 1.0, abs_tol=1e-6):
        raise InputError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)!r}")
    rng = np.random.default_rng(seed)
    counts = np.zeros(3)
    out: dict[str, str] = {}
    visited = 0
    for group in groups:
        for i in rng.permutation(len(group)):
            visited += 1
            k = int(np.argmax(f * visited - counts - 1e-9 * np.arange(3)))
            counts[k] += 1
            out[group[i]] = SPLITS[k]
    return out


def _temperature_tag(t: float) -> str:
    return f"T{t:04.0f}" if float(t).is_integer() else f"T{t:07.2f}"


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
    module logger (``bigdens.datagen``, INFO).

    Returns
    -------
    list of (positions, info)
        Positions (n_atoms, 3) Å and a JSON-compatible description of the
        thermalization of each snapshot (potential, temperatures, time step,
        friction, time since velocity initialisation, seed, mean-square
        displacement from the start).
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:  # ASE >= 3.29; MaxwellBoltzmannDistribution is its deprecated alias
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _mb

        def thermalize_momenta(atoms, temperature_K, *, rng):
            _mb(atoms, temperature_K=temperature_K, rng=rng)

    (temperature,) = check_temperatures([temperature])
    if n_snapshots < 1:
        raise InputError(f"number of snapshots per temperature must be >= 1, got {n_snapshots!r}")
    atoms = atoms.copy()
    atoms.pbc = True
    atoms.calc, potential = classical_calculator(atoms, potential=md.potential)
    atoms.set_constraint(FixCom())  # no drift of the centre of mass
    start = atoms.positions.copy()
    rng = np.random.default_rng(seed)
    melt = md.melt_above_K is not None and temperature >= md.melt_above_K
    t_init = md.melt_temperature_K if melt else temperature
    thermalize_momenta(atoms, t_init, rng=rng)  # Maxwell-Boltzmann
    Stationary(atoms)
    dt = md.timestep_fs * units.fs

    def steps(ps: float) -> int:
        return max(1, int(round(ps * 1000.0 / md.timestep_fs)))

    def run(t_k: float, n: int) -> None:
        dyn = Langevin(atoms, timestep=dt, temperature_K=t_k, friction=md.friction_per_fs / units.fs, rng=rng,
                       fixcm=False)
        dyn.run(n)

    time_ps = 0.0
    if melt:
        run(md.melt_temperature_K, steps(md.melt_ps))
        time_ps += steps(md.melt_ps) * md.timestep_fs / 1000.0
    base = {
        "method": "Langevin MD (ase.md.langevin.Langevin), Maxwell-Boltzmann initial velocities",
        "potential": {"emt": "EMT (ase.calculators.emt)",
                      "tersoff-sige": "Tersoff Si-Ge, PRB 39, 5566 (1989), matscipy Manybody"}[potential],
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
    out = []
    previous = atoms.positions.copy()
    for k in range(n_snapshots):
        n = steps(md.equilibration_ps if k == 0 else md.interval_ps)
        run(temperature, n)
        time_ps += n * md.timestep_fs / 1000.0
        disp = atoms.positions - start
        info = dict(base, time_ps=round(time_ps, 6),
                    instantaneous_temperature_K=round(float(atoms.get_temperature()), 2),
                    msd_from_start_A2=round(float((disp**2).sum(axis=1).mean()), 4),
                    msd_since_previous_A2=round(float(((atoms.positions - previous) ** 2).sum(axis=1).mean()), 4),
                    potential_energy_eV=round(float(atoms.get_potential_energy()), 6))
        previous = atoms.positions.copy()
        out.append((previous, info))
        (progress or logger.info)(f"  MD {temperature:g} K: snapshot {k + 1}/{n_snapshots} at {time_ps:.2f} ps "
                                  f"(T_inst {info['instantaneous_temperature_K']:.0f} K, MSD "
                                  f"{info['msd_from_start_A2']:.3f} Å², {info['msd_since_previous_A2']:.3f} Å² since "
                                  "the previous one)")
    if not np.isfinite(atoms.positions).all():
        raise RunError(f"the MD at {temperature} K blew up (non-finite positions); lower the time step")
    return out


def make_plan(
    variants: dict[str, "Atoms"],
    *,
    temperatures: Sequence[float],
    snapshots_per_temperature: int,
    md: MDSettings,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    variant_info: dict[str, dict] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[PlannedSnapshot]:
    """Thermalize every variant at every temperature; return the snapshots.

    The returned order is the generation order: round-robin over the
    (variant, temperature) trajectories, so a partly generated data set covers
    all of them.  Each trajectory is seeded from ``(seed, variant number,
    temperature number)``.  Progress lines go to ``progress`` if given, else
    to the module logger (``bigdens.datagen``, INFO).
    """
    from .structure import validate

    temps = check_temperatures(temperatures)
    if snapshots_per_temperature < 1:
        raise InputError(f"--snapshots-per-temperature must be >= 1, got {snapshots_per_temperature!r}")
    trajectories = []
    for iv, (label, atoms) in enumerate(variants.items()):
        validate(atoms)
        for it, t in enumerate(temps):
            traj_seed = int(np.random.SeedSequence([seed, iv, it]).generate_state(1)[0])
            (progress or logger.info)(f"thermalizing {label} at {t:g} K ({len(atoms)} atoms)")
            configs = thermalize(atoms, t, n_snapshots=snapshots_per_temperature, md=md, seed=traj_seed,
                                 progress=progress)
            extra = (variant_info or {}).get(label, {})
            trajectories.append([
                (f"{label}-{_temperature_tag(t)}-{k:02d}", label, t, k, atoms, pos, dict(info, structure=extra))
                for k, (pos, info) in enumerate(configs)
            ])
    splits = assign_splits([[s[0] for s in traj] for traj in trajectories], fractions=split_fractions, seed=seed)
    plan = []
    for k in range(snapshots_per_temperature):
        for traj in trajectories:
            name, label, t, idx, atoms, pos, info = traj[k]
            plan.append(PlannedSnapshot(name, label, t, idx, splits[name], np.asarray(atoms.cell[:]), pos,
                                        atoms.numbers.copy(), info))
    return plan


def save_plan(directory: Path, plan: list[PlannedSnapshot], *, request: dict[str, Any]) -> None:
    """Write ``plan.json`` (atomically)."""
    from ._files import write_text

    write_text(directory / PLAN_FILE, json.dumps({"plan_version": PLAN_VERSION, "request": request,
                                                  "snapshots": [p.to_json() for p in plan]}))


def _read_plan_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise InputError(f"{str(path)!r} is damaged; delete it to plan the run again") from None


def read_plan(directory: str | Path) -> list[PlannedSnapshot]:
    """Every planned snapshot of a data-set directory (its ``plan.json``)."""
    path = Path(directory) / PLAN_FILE
    if not path.is_file():
        raise InputError(f"{str(directory)!r} has no {PLAN_FILE}; give a data-set directory made by bigdens datagen")
    return [PlannedSnapshot.from_json(d) for d in _read_plan_file(path)["snapshots"]]


def load_plan(directory: Path, *, request: dict[str, Any]) -> list[PlannedSnapshot] | None:
    """The saved plan of ``directory`` if any; InputError if made by another request."""
    path = directory / PLAN_FILE
    if not path.is_file():
        return None
    saved = _read_plan_file(path)
    if saved.get("request") != json.loads(json.dumps(request)):
        old, new = saved.get("request", {}), json.loads(json.dumps(request))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise InputError(
            f"{str(directory)!r} was started with other settings (differing: {', '.join(diff)}); "
            "rerun with the same arguments to resume, or write to a new directory with -o"
        )
    return [PlannedSnapshot.from_json(d) for d in saved["snapshots"]]


# -- DFT ---------------------------------------------------------------------
def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def dft_density(
    atoms: "Atoms",
    *,
    settings: DFTSettings = DFTSettings(),
    txt: str | Path | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run a GPAW single point and return its pseudo-density.

    Parameters
    ----------
    atoms
        Periodic structure (Å).
    settings
        DFT settings (protocol).
    txt
        GPAW log file, or None for no log.

    Returns
    -------
    density : ndarray, shape (n1, n2, n3), float64
        ``calc.get_pseudo_density()``, e/Å³, on the grid of DESIGN §1.
    info : dict
        Provenance: code, version, settings, energy, electron integral,
        timing (wall seconds and core-seconds of this process).

    Raises
    ------
    InputError
        If a species has no HGH setup.
    MissingDependencyError
        If GPAW is not installed.
    RunError
        If GPAW fails or the density does not integrate to the valence count.
    """
    from .chemistry import hgh_valence

    if settings.setups == "hgh":
        n_expected = hgh_valence(atoms.numbers)
    else:
        n_expected = None
    gpaw = attempt_import("gpaw", purpose="computing DFT densities (bigdens datagen)")
    cell = np.asarray(atoms.cell[:])
    kpts = settings.kpts_for(cell)
    gpts = settings.gpts_for(cell)
    atoms = atoms.copy()
    atoms.pbc = True
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        calc = gpaw.GPAW(
            mode=gpaw.PW(settings.ecut),
            setups=settings.setups,
            xc=settings.xc,
            occupations=gpaw.FermiDirac(settings.smearing),
            convergence={"density": settings.density_convergence},
            kpts=kpts,
            gpts=gpts,
            txt=str(txt) if txt is not None else None,
        )
        atoms.calc = calc
        energy = float(atoms.get_potential_energy())
        density = np.asarray(calc.get_pseudo_density(), dtype=np.float64)
        try:
            fermi = float(calc.get_fermi_level())
        except Exception:  # not needed for the density
            fermi = None
    except Exception as exc:
        raise RunError(f"GPAW failed on {atoms.get_chemical_formula()} ({type(exc).__name__}: {exc})") from exc
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    if density.shape != tuple(gpts):
        raise RunError(f"GPAW returned a density of shape {density.shape}, expected {gpts}")
    dv = abs(np.linalg.det(cell)) / density.size
    integral = float(density.sum() * dv)
    if n_expected is not None and abs(integral - n_expected) > 1e-4 * n_expected:
        raise RunError(f"the GPAW density integrates to {integral:.6f} electrons, expected {n_expected}")
    info = {
        "code": "GPAW",
        "code_version": gpaw.__version__,
        "protocol": settings.protocol,
        "settings": {
            "mode": "pw", "ecut_eV": settings.ecut, "xc": settings.xc, "setups": settings.setups,
            "occupations": {"name": "fermi-dirac", "width_eV": settings.smearing},
            "convergence": {"density": settings.density_convergence},
            "kpts": {"size": list(kpts), "scheme": "monkhorst-pack",
                     "rule": f"max(1, ceil({settings.kpoint_length} A / |a_i|))" if settings.kpts is None else "fixed"},
            "gpts": list(gpts),
            "gpts_rule": (f"{settings.grid_multiple}*ceil(|a_i| / {settings.grid_spacing} A)"
                          if settings.gpts is None else "fixed"),
            "grid_spacing_A": (np.linalg.norm(cell, axis=1) / np.array(gpts)).round(6).tolist(),
            "spin_polarized": False,
        },
        "density_kind": "smooth valence pseudo-density, calc.get_pseudo_density(), e/A^3",
        "energy_eV": energy,
        "fermi_level_eV": fermi,
        "electron_integral": integral,
        "n_electrons_expected": n_expected,
        "timing": {
            "wall_seconds": round(wall, 3),
            "core_seconds": round(cpu, 3),
            "processes": 1,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "host": socket.gethostname(),
        },
    }
    return density, info


# -- the whole pipeline ------------------------------------------------------
class _DirLock:
    """An exclusive lock file for a data-set directory (stale locks are taken over)."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    host, pid = self.path.read_text().split()
                    pid = int(pid)
                except (OSError, ValueError):
                    host, pid = "", -1
                if host == socket.gethostname() and pid > 0 and self._alive(pid):
                    raise InputError(
                        f"another 'bigdens datagen' (pid {pid}) is writing to {str(self.path.parent)!r}; "
                        "wait for it or stop it first"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{socket.gethostname()} {os.getpid()}\n")
            return self
        raise InputError(f"cannot lock {str(self.path)!r}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def compute_snapshot(p: PlannedSnapshot, *, dft: DFTSettings = DFTSettings(),
                     txt: str | Path | None = None) -> "Snapshot":
    """Run the DFT of one planned configuration; the snapshot with full provenance.

    Parameters
    ----------
    p
        The planned configuration (Å).
    dft
        DFT settings (protocol).
    txt
        GPAW log file, or None for no log.

    Returns
    -------
    Snapshot
        Density in e/Å³ (float32) on the DFT grid; ``provenance`` holds the
        DFT settings, timing and thermalization.
    """
    from ._version import __version__
    from .data import Snapshot

    density, info = dft_density(p.atoms(), settings=dft, txt=txt)
    provenance = dict(info, thermalization=p.thermalization, snapshot=p.name, variant=p.variant,
                      bigdens_version=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return Snapshot(name=p.name, cell=p.cell, positions=p.positions, numbers=p.numbers,
                    density=density.astype(np.float32), split=p.split, provenance=provenance)


def generate(
    directory: str | Path,
    plan_factory: Callable[[], list[PlannedSnapshot]],
    *,
    request: dict[str, Any],
    dft: DFTSettings = DFTSettings(),
    description: str = "",
    max_snapshots: int | None = None,
    progress: Callable[[str], None] | None = None,
    log_dir: str | Path | None = None,
) -> Path:
    """Make or resume a data set in ``directory``.

    Parameters
    ----------
    directory
        Output data-set directory (created if needed).
    plan_factory
        Called (once, when ``plan.json`` does not exist yet) to thermalize and
        plan the snapshots.
    request
        JSON-compatible description of everything that defines the run; a
        resumed run must have the same.
    dft
        DFT settings.
    description
        Free text stored in the manifest.
    max_snapshots
        Stop after computing this many new snapshots (None: all).
    progress
        Receives the progress lines (one per event) instead of the module
        logger (``bigdens.datagen``, INFO); default None: the logger.
    log_dir
        Directory for GPAW's text logs (one per snapshot), or None.

    Returns
    -------
    Path
        The data-set directory.
    """
    from .data import MANIFEST, add_snapshot, new_manifest, read_manifest
    from .structure import species_counts

    say = progress or logger.info
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    request = dict(request, protocol=dft.protocol, dft_settings=asdict(dft))
    with _DirLock(directory):
        plan = load_plan(directory, request=request)
        if plan is None:
            plan = plan_factory()
            save_plan(directory, plan, request=request)
            say(f"planned {len(plan)} snapshots in {str(directory / PLAN_FILE)!r}")
        if (directory / MANIFEST).is_file():
            manifest = read_manifest(directory)
            if manifest.get("protocol") != dft.protocol:
                raise InputError(
                    f"{str(directory)!r} holds protocol {manifest.get('protocol')!r} data, not {dft.protocol!r}; "
                    "write to a new directory"
                )
            if description:
                manifest["description"] = description
        else:
            manifest = new_manifest(protocol=dft.protocol, description=description)
        done = {e["name"] for e in manifest["snapshots"] if (directory / e["file"]).is_file()}
        _check_done_match_plan(directory, manifest, plan, done)
        todo = [p for p in plan if p.name not in done]
        if max_snapshots is not None:
            todo = todo[:max_snapshots]
        say(f"{len(done)} of {len(plan)} snapshots exist; computing {len(todo)}")
        t_start = time.perf_counter()
        for i, p in enumerate(todo):
            atoms = p.atoms()
            counts = ", ".join(f"{n} {s}" for s, n in species_counts(atoms).items())
            say(f"[{len(done) + i + 1}/{len(plan)}] {p.name}: {counts}, {p.temperature:g} K, split {p.split}, "
                f"k {dft.kpts_for(atoms.cell[:])}, grid {dft.gpts_for(atoms.cell[:])} ...")
            txt = Path(log_dir) / f"{directory.name}-{p.name}.txt" if log_dir else None
            snap = compute_snapshot(p, dft=dft, txt=txt)
            manifest = add_snapshot(directory, snap, manifest=manifest)
            elapsed = time.perf_counter() - t_start
            eta = elapsed / (i + 1) * (len(todo) - i - 1)
            timing = snap.provenance["timing"]
            say(f"    done in {timing['wall_seconds']:.0f} s wall, {timing['core_seconds']:.0f} "
                f"core-s; {snap.provenance['electron_integral']:.6f} electrons; ETA {eta / 60:.0f} min")
    return directory


def _check_done_match_plan(directory: Path, manifest: dict, plan: list[PlannedSnapshot], done: set[str]) -> None:
    # A snapshot already in the data set must be the planned configuration
    # (a plan made again, e.g. after deleting plan.json, may differ).
    planned = {p.name: p for p in plan}
    for entry in manifest["snapshots"]:
        p = planned.get(entry["name"])
        if p is None or entry["name"] not in done:
            continue
        with np.load(directory / entry["file"], allow_pickle=False) as z:
            same = z["positions"].shape == p.positions.shape and np.allclose(z["positions"], p.positions, atol=1e-8)
        if not same:
            raise InputError(
                f"snapshot {entry['name']!r} in {str(directory)!r} is not the configuration of plan.json (the plan "
                "was made again?); remove that snapshot (its .npz and manifest entry) or restore the old plan.json"
            )


# -- structures from a builder spec -------------------------------------------
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
    from . import structure

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


__all__ = [
    "PROTOCOL", "DFTSettings", "MDSettings", "PlannedSnapshot", "Tersoff_PRB_39_5566_Si_Ge",
    "assign_splits", "build_variants", "check_requirements", "check_temperatures", "classical_calculator",
    "dft_density", "generate", "make_plan", "potential_name", "thermalize",
]
