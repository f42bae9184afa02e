"""DFT single points with GPAW: one pseudo-density per planned snapshot.

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

import os
import resource
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._imports import attempt_import
from ..errors import RunError
from .settings import DFTSettings

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ..data import Snapshot
    from .plan import PlannedSnapshot


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _single_point(gpaw, atoms: "Atoms", settings: DFTSettings, *, kpts, gpts,
                  txt: str | Path | None) -> tuple[float, np.ndarray, float | None]:
    # GPAW on atoms (changed: its calculator is set): energy (eV), pseudo-density (e/Å³) and Fermi level (eV or None).
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
    return energy, density, fermi


def _settings_record(settings: DFTSettings, cell: np.ndarray, kpts, gpts) -> dict[str, Any]:
    # The GPAW settings as they ran, for the provenance (JSON-compatible).
    return {
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
    }


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
    from ..chemistry import hgh_valence

    n_expected = hgh_valence(atoms.numbers) if settings.setups == "hgh" else None
    gpaw = attempt_import("gpaw", purpose="computing DFT densities (bigdens datagen)")
    cell = np.asarray(atoms.cell[:])
    kpts = settings.kpts_for(cell)
    gpts = settings.gpts_for(cell)
    atoms = atoms.copy()
    atoms.pbc = True
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    energy, density, fermi = _single_point(gpaw, atoms, settings, kpts=kpts, gpts=gpts, txt=txt)
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
        "settings": _settings_record(settings, cell, kpts, gpts),
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


def compute_snapshot(p: "PlannedSnapshot", *, dft: DFTSettings = DFTSettings(),
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
    from .._version import __version__
    from ..data import Snapshot

    density, info = dft_density(p.atoms(), settings=dft, txt=txt)
    provenance = dict(info, thermalization=p.thermalization, snapshot=p.name, variant=p.variant,
                      bigdens_version=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return Snapshot(name=p.name, cell=p.cell, positions=p.positions, numbers=p.numbers,
                    density=density.astype(np.float32), split=p.split, provenance=provenance)
