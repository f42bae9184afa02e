"""The settings of a data-generation run: the DFT protocol and the MD thermalization.

An invalid value raises :class:`~bigdens.errors.InputError` naming the
setting (``"MDSettings.timestep_fs must be a positive number, got 0.0"``);
the error's ``setting`` attribute holds the field name, so that a command can
name its own option instead (``bigdens datagen`` does, through
:data:`bigdens.cli.datagen.FLAGS`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

PROTOCOL = "bigdens-dft-v1"


def _invalid(owner: str, name: str, problem: str) -> InputError:
    """``InputError("<owner>.<name> <problem>")`` that carries ``setting=name`` and ``problem``."""
    error = InputError(f"{owner}.{name} {problem}")
    error.setting = name
    error.problem = problem
    return error


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
                raise _invalid("DFTSettings", name, f"must be a positive number, got {value!r}")
        for name in ("kpts", "gpts"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(int(v) for v in value)
                if len(value) != 3 or min(value) < 1:
                    raise _invalid("DFTSettings", name, f"must be three positive integers, got {value!r}")
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
                raise _invalid("MDSettings", name, f"must be a positive number, got {value!r}")
        if self.melt_above_K is not None and not (math.isfinite(self.melt_above_K) and self.melt_above_K > 0):
            raise InputError(f"--melt-above must be a temperature > 0 K, got {self.melt_above_K!r}")
        if self.potential not in ("auto", "emt", "tersoff-sige"):
            raise InputError(f"MD potential must be 'auto', 'emt' or 'tersoff-sige', got {self.potential!r}")
