"""The Harris–Foulkes energy of a predicted density: one non-self-consistent GPAW run, and its σ.

What is computed
----------------
The Harris–Foulkes functional (Harris, PRB 31, 1770 (1985); Foulkes & Haydock, PRB 39, 12520
(1989)) of an input density n_in is

    E_HF[n_in] = Σ_i f_i ε_i[v(n_in)] − ∫ v_Hxc(n_in) n_in + E_H[n_in] + E_xc[n_in] + E_ion-ion (− TS),

with the eigenvalues ε_i of the Kohn–Sham Hamiltonian built from n_in.  It equals the self-consistent
energy at the ground-state density and its error is of second order in the density error, so a
good predicted density gives a good energy with no SCF loop.

How GPAW gives it
-----------------
:func:`~bigdens.dft.start.warm_start` puts the density into GPAW's new code; then GPAW's SCF loop
runs with ``update_density_and_potential = False`` (as its own fixed-density band-structure runs)
until its eigenstate and energy criteria hold.  GPAW's energy is then ``E_band − ∫ṽ ñ_in`` plus the
Hartree, XC and ionic terms of n_in, which is E_HF.  (HGH setups: the atomic density matrices
enter the kinetic-energy correction and the non-local energy with equal and opposite signs, so
their atomic values do not change the energy; :mod:`bigdens.dft.start` says why they stay atomic.)

The σ
-----
:func:`density_samples` draws the model's own Monte Carlo density fields (the epistemic samples
that ``bigdens predict`` averages, calibrated as the store's σ).  The Harris–Foulkes energies of
a few of them spread as the energy's epistemic uncertainty (:func:`harris_foulkes_with_sigma`).
The aleatoric part, uncorrelated from point to point, is left out: it averages away in an integral
over the cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .._imports import attempt_import
from ..errors import InputError, RunError
from .start import MAX_RESCALE, warm_start

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: Most eigensolver steps of a fixed-density run (GPAW stops earlier when its criteria hold).
MAX_STEPS = 100


@dataclass(frozen=True)
class HarrisEnergy:
    """The Harris–Foulkes energy of one density.

    Attributes
    ----------
    energy : float
        E_HF extrapolated to zero smearing (what ``get_potential_energy()`` returns for an SCF run), eV per cell.
    free_energy : float
        The free energy (−TS included), eV per cell.
    eigensolver_steps : int
        Fixed-density steps GPAW took until its eigenstate and energy criteria held.
    wall_seconds : float
        Wall time of the set-up and the steps, s.
    rescale_factor : float
        Factor that brought the density to GPAW's valence electron count.
    """

    energy: float
    free_energy: float
    eigensolver_steps: int
    wall_seconds: float
    rescale_factor: float


def harris_foulkes(make_calculator: Callable[[], Any], atoms: "Atoms", density: np.ndarray, *,
                   max_steps: int = MAX_STEPS, max_rescale: float = MAX_RESCALE) -> HarrisEnergy:
    """The Harris–Foulkes energy of ``density`` on ``atoms``: GPAW's eigenstates in its fixed potential.

    Parameters
    ----------
    make_calculator
        Makes a fresh ``gpaw.GPAW(mode=PW(...), setups="hgh", ...)`` calculator; its convergence criteria
        for eigenstates and energy are the ones applied (the density criterion has no role).
    atoms : ase.Atoms
        The structure, Å.
    density : ndarray, shape (n1, n2, n3)
        Valence pseudo-density, e/Å³, on the DESIGN §1 grid over ``atoms.cell`` (any shape).
    max_steps
        Most fixed-density eigensolver steps.
    max_rescale
        As :func:`~bigdens.dft.start.prepare_density`.

    Returns
    -------
    HarrisEnergy

    Raises
    ------
    RunError
        The eigenstates did not converge within ``max_steps``.
    As :func:`~bigdens.dft.start.warm_start` otherwise.
    """
    attempt_import("gpaw", purpose="Harris-Foulkes energies with GPAW")
    from ase.units import Ha
    from gpaw.new.scf import KohnShamConvergenceError

    t0 = time.perf_counter()
    calc = make_calculator()
    report = warm_start(calc, atoms, density, fixed_density_steps=0, max_rescale=max_rescale)
    dft = calc.dft
    steps = 0
    dft.scf_loop.update_density_and_potential = False
    try:
        for _ in dft.iconverge(maxiter=max_steps):
            steps += 1
    except KohnShamConvergenceError:
        raise RunError(f"the eigenstates in the fixed potential of the density did not converge in {max_steps} "
                       "steps") from None
    finally:
        dft.scf_loop.update_density_and_potential = True
    energy = float(dft.calculate_energy())  # eV; GPAW keeps its results in Hartree
    free = float(dft.results["free_energy"]) * Ha
    return HarrisEnergy(energy=energy, free_energy=free, eigensolver_steps=steps,
                        wall_seconds=time.perf_counter() - t0, rescale_factor=report.rescale_factor)


#: Spreads :func:`density_samples` can give its fields.
SPREADS = ("epistemic", "total")
#: Largest factor by which ``spread="total"`` widens a point's epistemic deviations.
MAX_WIDENING = 30.0


def density_samples(model, atoms: "Atoms", shape: tuple[int, int, int], *, samples: int = 20, seed: int = 0,
                    spread: str = "epistemic") -> tuple[np.ndarray, np.ndarray]:
    """The model's mean density and its Monte Carlo sample fields on a grid over ``atoms.cell``.

    Parameters
    ----------
    model : bigdens.bnn.DensityModel
        A loaded model (:func:`bigdens.bnn.load`) whose species include the atoms'.
    atoms : ase.Atoms
        The structure, Å.
    shape : tuple of 3 int
        Grid (DESIGN §1).  Every point is held in memory with all samples:
        ``n1·n2·n3·samples·8`` bytes.
    samples
        Monte Carlo samples S.
    seed
        Seed of the weight samples.
    spread
        ``"epistemic"``: the samples as the model draws them (their per-point spread is the epistemic σ).
        ``"total"``: each point's deviations widened by ``sqrt((σ_epi² + σ_ale²)/σ_epi²)`` (at most
        :data:`MAX_WIDENING`), so that the per-point spread is the total σ while the spatial pattern
        (the correlation between points) stays the epistemic samples'.  The aleatoric part is
        otherwise point-to-point noise that an integral averages away, although the model's errors
        in the bulk are spatially correlated: this is the assumption that they are.

    Returns
    -------
    mean : ndarray, shape (n1, n2, n3), float64
        The predicted density, e/Å³ (as ``bigdens predict`` on this grid, one block).
    fields : ndarray, shape (S, n1, n2, n3), float64
        Sample s's calibrated density ``ρ̄ + w·(ρ_s − ρ̄)`` (:meth:`DensityModel.predict_grouped
        <bigdens.bnn.model.DensityModel.predict_grouped>`), e/Å³, each point's deviations scaled so that
        their spread (divisor S) is the epistemic σ ``predict`` returns (σ map included).
    """
    from ..descriptors import compute
    from ..grid import make_grid
    from ..thermal import bond_spread

    if int(samples) < 2:
        raise InputError(f"a spread needs at least 2 Monte Carlo samples, got {samples!r}")
    grid = make_grid(atoms.cell[:], shape=tuple(int(n) for n in shape))
    positions = atoms.get_positions(wrap=True)
    numbers = atoms.get_atomic_numbers()
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    features = compute(positions, numbers, cell, grid.points(), model.params)
    n = len(features)
    if spread not in SPREADS:
        raise InputError(f"spread must be one of {', '.join(SPREADS)}, got {spread!r}")
    mean, epi, ale, deviations = model.predict_grouped(features, np.arange(n), n, samples=int(samples), seed=seed,
                                                       disorder=bond_spread(positions, numbers, cell))
    mean = mean.astype(np.float64)
    # The deviations carry the calibration's variance factors but not the σ map (format 3), which rescales
    # the returned σ per point: bring each point's spread (divisor S) to the epistemic σ the store holds.
    spread_now = deviations.std(axis=1)
    deviations = deviations * np.where(spread_now > 0, np.sqrt(epi.astype(np.float64)) / np.maximum(spread_now, 1e-300),
                                       0.0)[:, None]
    if spread == "total":
        epi64 = np.maximum(epi.astype(np.float64), 1e-30)
        deviations = deviations * np.minimum(np.sqrt((epi64 + ale) / epi64), MAX_WIDENING)[:, None]
    fields = mean[None, :] + deviations.T
    return mean.reshape(grid.shape), fields.reshape((int(samples), *grid.shape))


@dataclass(frozen=True)
class HarrisWithSigma:
    """The Harris–Foulkes energy of the mean density, and the spread over sample densities.

    Attributes
    ----------
    mean : HarrisEnergy
        Of the predicted (mean) density.
    samples : tuple of HarrisEnergy
        Of the sample densities used.
    sigma : float
        Standard deviation (divisor n − 1) of the sample energies, eV per cell.
    """

    mean: HarrisEnergy
    samples: tuple
    sigma: float

    def as_dict(self, n_atoms: int) -> dict:
        """JSON-ready numbers, with the per-atom values (meV/atom)."""
        return {"energy_eV": self.mean.energy, "free_energy_eV": self.mean.free_energy,
                "sigma_eV": self.sigma, "sigma_meV_per_atom": self.sigma / n_atoms * 1000,
                "eigensolver_steps": self.mean.eigensolver_steps, "wall_seconds": round(self.mean.wall_seconds, 2),
                "sample_energies_eV": [s.energy for s in self.samples],
                "sample_wall_seconds": [round(s.wall_seconds, 2) for s in self.samples]}


def harris_foulkes_with_sigma(make_calculator: Callable[[], Any], atoms: "Atoms", mean: np.ndarray,
                              fields: np.ndarray, *, n_samples: int = 4, **kwargs) -> HarrisWithSigma:
    """:func:`harris_foulkes` of the mean density and of the first ``n_samples`` sample fields.

    ``mean`` and ``fields`` as :func:`density_samples` returns them; ``kwargs`` go to
    :func:`harris_foulkes`.  Cost: ``1 + n_samples`` fixed-density runs.
    """
    if not 2 <= int(n_samples) <= len(fields):
        raise InputError(f"n_samples must lie in 2..{len(fields)} (the fields given), got {n_samples!r}")
    centre = harris_foulkes(make_calculator, atoms, mean, **kwargs)
    runs = tuple(harris_foulkes(make_calculator, atoms, fields[s], **kwargs) for s in range(int(n_samples)))
    return HarrisWithSigma(mean=centre, samples=runs, sigma=sample_sigma(runs))


def sample_sigma(runs) -> float:
    """σ of the Harris–Foulkes energy: the standard deviation (divisor n − 1) over sample densities' runs, eV."""
    return float(np.std([r.energy for r in runs], ddof=1))
