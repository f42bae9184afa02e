"""Start a GPAW self-consistent (SCF) run from a bigdens density instead of GPAW's atomic guess.

What the density is
-------------------
bigdens predicts the smooth valence pseudo-density of GPAW with HGH pseudopotentials,
``calc.get_pseudo_density()`` in e/Å³ (DESIGN §1 grid: point (0, 0, 0) on the cell origin).  HGH
setups are norm-conserving: no PAW augmentation, so GPAW's whole valence density *is* this grid
function.  In GPAW's data structures an HGH atom has no augmentation charges (``Delta_iiL == 0``)
and its compensation charge is the ionic Gaussian ``Delta0 = -Nv/sqrt(4π)``, independent of the
atomic density matrices ``D_asii``; there is no pseudo-core density (``nct == 0``) and no PAW XC
correction.  The grid density ``nt_sR`` therefore fixes the Hartree and XC potentials completely,
and the non-local part ``dH_asii`` is the constant HGH ``h_ij``.  (Checked on FCC Al with GPAW
26.7: ``get_pseudo_density()`` equals ``nt_sR / Bohr³`` to 3e-17 e/Å³.)

PAW setups are refused: there the valence density is ``nt_sR`` plus atom-centred augmentation
``Σ_ij D_ij (φ_iφ_j − φ̃_iφ̃_j)`` and compensation charges built from ``D_asii``, which a grid density
does not carry; setting ``nt_sR`` alone would start from a density of the wrong shape and charge
distribution near every nucleus.

How the run starts (GPAW's new code, ``gpaw.new``, the path ``gpaw.GPAW(mode=PW(...))`` takes)
----------------------------------------------------------------------------------------------
:func:`warm_start` does what ``Parameters.create_dft_calculation_components`` does for a fresh
calculation, with one step replaced:

1. build the components from the calculator's parameters (basis set for the initial LCAO step,
   SCF loop with an empty mixer, potential calculator, setups, k-points, symmetries);
2. make GPAW's own density object (superposition of atomic densities, normalised by GPAW), then
   **overwrite its pseudo-density** ``density.nt_sR`` (spin-paired, e/Bohr³) with the bigdens density,
   resampled to GPAW's grid, clipped at zero, symmetrised with the crystal's symmetry operations
   (as GPAW symmetrises every density it makes) and rescaled so that it integrates to the number of
   valence electrons GPAW expects (``nvalence - charge``).  ``D_asii`` keep their atomic values:
   with HGH they enter no potential, only the first iteration's energy printout;
3. compute the effective potential from this density (``pot_calc.calculate_without_orbitals``);
4. make the initial wave functions by diagonalising the LCAO Hamiltonian *in this potential* and
   converting them to plane waves, as GPAW does for its own start;
5. hand these to a ``DFT`` object (not converged yet) inside the calculator.

The first ``get_potential_energy()`` then runs GPAW's ordinary SCF loop: ``SCFLoop.iterate``
resets the mixer (no history) and records the given density as the first input density; the
first eigensolver step works in the potential of the given density.  Nothing else differs from a
default GPAW run (same convergence criteria, same result to the SCF tolerance).

Measured on FCC Al (4 atoms, cubic, 600 eV, 4×4×4 k-points, 24³ grid, LDA, HGH, FD 0.1 eV,
density tolerance 1e-5): see README "Start DFT from a prediction" and
``benchmarks/results/dft_start.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._imports import attempt_import
from ..errors import InputError, SetupError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

#: Largest accepted ``|rescale factor − 1|``: beyond it the density was made for another electron
#: count (other setups, e.g. semicore ``hgh.sc``, or another structure), not merely slightly off.
MAX_RESCALE = 0.1
#: Eigensolver steps run in the fixed potential of the given density before the SCF (default of
#: :func:`warm_start`).  Without them the first SCF steps mix densities made from the LCAO start's
#: unconverged orbitals, and the mixer (MSR1, a quasi-Newton method) learns from residuals that are
#: orbital error rather than density response: on FCC Al the converged density itself then needed
#: 11 SCF steps against GPAW's own 8.  See README "Start DFT from a prediction" for the measurements.
FIXED_DENSITY_STEPS = 3


# ---------------------------------------------------------------------------------------------
# Grid work (numpy only)
# ---------------------------------------------------------------------------------------------

def _resample_axis(spectrum: np.ndarray, m: int, axis: int) -> np.ndarray:
    # Spectrum (numpy FFT order, unnormalised) of n samples along `axis` -> spectrum of m samples of the
    # same trigonometric interpolant (truncated above the smaller grid's Nyquist frequency).
    n = spectrum.shape[axis]
    if n == m:
        return spectrum
    shape = list(spectrum.shape)
    shape[axis] = m
    out = np.zeros(shape, dtype=complex)

    def ix(s):
        index = [slice(None)] * spectrum.ndim
        index[axis] = s
        return tuple(index)

    h = min(n, m)
    k = (h - 1) // 2  # frequencies -k..k are copied as they are
    out[ix(slice(0, k + 1))] = spectrum[ix(slice(0, k + 1))]
    if k > 0:
        out[ix(slice(m - k, m))] = spectrum[ix(slice(n - k, n))]
    if h % 2 == 0:  # the smaller grid has a Nyquist frequency h/2
        nyq = h // 2
        if n < m:  # split the source's cos(π i) term evenly between +h/2 and -h/2 (a real interpolant)
            out[ix(nyq)] = spectrum[ix(nyq)] / 2
            out[ix(m - nyq)] = spectrum[ix(nyq)] / 2
        else:  # +h/2 and -h/2 of the source land on the one Nyquist term of the target
            out[ix(nyq)] = spectrum[ix(nyq)] + spectrum[ix(n - nyq)]
    return out * (m / n)


def fourier_resample(field: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A periodic field on another grid over the same cell, by Fourier (trigonometric) interpolation.

    Both grids follow DESIGN §1 (point ``(i, j, k)`` at fractional ``(i/n1, j/n2, k/n3)``), so the
    interpolation works in fractional coordinates and holds for any cell, orthogonal or not.

    Why Fourier and not trilinear: a plane-wave density is band-limited, and Fourier interpolation
    reproduces any field whose frequencies the smaller grid holds exactly (a grid change is then
    lossless); it keeps the mean, hence the electron count, exactly (G = 0 term); and it is how
    GPAW itself moves a density to a new grid (``Density.new``: FFT, ``morph``, inverse FFT).
    Trilinear interpolation would flatten every maximum by O(h²) and lose electrons.  Its price:
    frequencies above the smaller grid's Nyquist limit are dropped and a coarse-to-fine change can
    ring slightly negative next to steep features; :func:`prepare_density` clips those points at
    zero and reports the charge removed.

    Parameters
    ----------
    field : ndarray, shape (n1, n2, n3)
        Real values on the source grid (any units; the result has the same).
    shape : tuple of 3 int
        Target grid shape (m1, m2, m3).

    Returns
    -------
    ndarray, shape (m1, m2, m3), float64
        The field's trigonometric interpolant sampled on the target grid; the field itself when
        the shapes are equal.  Frequencies ``|k| < min(n, m)/2`` along each axis are exact; a
        Nyquist term ``n/2`` of an even source is split evenly (refining) or the ``±m/2`` terms
        folded onto the target's (coarsening), so that coarsening undoes refining exactly.
    """
    field = np.asarray(field, dtype=np.float64)
    shape = tuple(int(n) for n in shape)
    if field.ndim != 3 or len(shape) != 3 or min(shape) < 1:
        raise InputError(f"fourier_resample needs a 3-D field and a shape of three positive integers, got "
                         f"{field.shape} -> {shape!r}")
    if field.shape == shape:
        return field.copy()
    spectrum = np.fft.fftn(field)
    for axis, m in enumerate(shape):
        spectrum = _resample_axis(spectrum, m, axis)
    return np.fft.ifftn(spectrum).real


@dataclass(frozen=True)
class StartReport:
    """What was done to a density to start a DFT run from it.

    Attributes
    ----------
    source_shape, target_shape : tuple of 3 int
        Grid of the given density and of the DFT code.
    resampled : bool
        Whether the density was Fourier-interpolated (the shapes differ).
    n_electrons : float
        Valence electrons the DFT code expects (the target integral), e.
    integral_in : float
        Integral of the given density on its own grid, e.
    negative_charge : float
        Electrons removed by clipping negative values at zero (≥ 0), e.
    n_negative : int
        Points clipped (given negative, or made negative by the interpolation).
    rescale_factor : float
        Factor applied after clipping so that the integral equals ``n_electrons``.
    integral_out : float
        Integral of the density handed to the DFT code, e (``n_electrons`` to rounding).
    details : dict
        Code-specific facts (GPAW: version, setups, symmetry operations, grid, how the density was set).
    """

    source_shape: tuple[int, int, int]
    target_shape: tuple[int, int, int]
    resampled: bool
    n_electrons: float
    integral_in: float
    negative_charge: float
    n_negative: int
    rescale_factor: float
    integral_out: float
    details: dict

    def describe(self) -> str:
        """Two lines as the command prints them."""
        grid = (f"grid {'x'.join(map(str, self.source_shape))} -> {'x'.join(map(str, self.target_shape))} "
                f"(Fourier interpolation)" if self.resampled else f"grid {'x'.join(map(str, self.target_shape))} "
                "(same as the density's: no interpolation)")
        return (f"initial density: {grid}; {self.integral_in:.6f} e given, {self.negative_charge:.3g} e clipped at "
                f"{self.n_negative} negative points\n"
                f"rescaled by {self.rescale_factor:.8f} to {self.n_electrons:g} valence electrons "
                f"(integral now {self.integral_out:.12f} e)")


def prepare_density(density: np.ndarray, *, cell: np.ndarray, shape: tuple[int, int, int],
                    n_electrons: float, max_rescale: float = MAX_RESCALE) -> tuple[np.ndarray, StartReport]:
    """A density made ready for a DFT code's grid: resampled, non-negative, integrating to ``n_electrons``.

    Parameters
    ----------
    density : ndarray, shape (n1, n2, n3)
        Density, e/Å³, on the DESIGN §1 grid over ``cell``.
    cell : ndarray, shape (3, 3)
        Lattice vectors (rows), Å.
    shape : tuple of 3 int
        The DFT code's grid (m1, m2, m3); :func:`fourier_resample` moves the density there if it differs.
    n_electrons : float
        Valence electrons the DFT code expects, e.
    max_rescale : float
        Largest accepted ``|rescale factor − 1|`` (:data:`MAX_RESCALE`).

    Returns
    -------
    density : ndarray, shape (m1, m2, m3), float64
        e/Å³, every value ≥ 0, ``density.sum() · V/(m1 m2 m3) == n_electrons`` to rounding (~1e-14 relative).
    report : StartReport

    Raises
    ------
    InputError
        A density that is not 3-D, holds NaN or infinity (an unfinished store reads NaN), has no
        positive charge, or needs a rescale beyond ``max_rescale`` (made for another electron count).
    """
    rho = np.asarray(density, dtype=np.float64)
    if rho.ndim != 3:
        raise InputError(f"the density must be a 3-D grid (n1, n2, n3), got shape {rho.shape}")
    bad = int(np.size(rho) - np.count_nonzero(np.isfinite(rho)))
    if bad:
        raise InputError(f"the density has {bad} NaN or infinite values (an unfinished store reads NaN); "
                         "finish it with `bigdens predict ... --resume` first")
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    integral_in = float(rho.sum()) * volume / rho.size
    target = tuple(int(n) for n in shape)
    resampled = rho.shape != target
    rho = fourier_resample(rho, target) if resampled else rho.copy()
    dv = volume / rho.size
    negative = rho < 0
    n_negative = int(np.count_nonzero(negative))
    negative_charge = float(-rho[negative].sum()) * dv + 0.0  # + 0.0: never -0.0
    rho[negative] = 0.0
    integral = float(rho.sum()) * dv
    if not integral > 0:
        raise InputError(f"the density holds no positive charge (integral {integral:.6g} e after clipping at 0)")
    factor = n_electrons / integral
    if abs(factor - 1) > max_rescale:
        raise InputError(f"the density holds {integral:.4f} electrons but the DFT run expects {n_electrons:g} "
                         f"(rescale factor {factor:.4f}, more than {max_rescale:.0%} off): it was made for other "
                         "setups or another structure; use setups='hgh', the setups of bigdens' labels")
    rho *= factor
    report = StartReport(source_shape=tuple(np.shape(density)), target_shape=target, resampled=resampled,
                         n_electrons=float(n_electrons), integral_in=integral_in, negative_charge=negative_charge,
                         n_negative=n_negative, rescale_factor=factor, integral_out=float(rho.sum()) * dv,
                         details={})
    return rho, report


# ---------------------------------------------------------------------------------------------
# Stores and structures
# ---------------------------------------------------------------------------------------------

def read_store_density(path: str | Path, *, frame: int | None = None) -> tuple["Atoms", np.ndarray]:
    """Atoms and predicted density (``density``, the predictive mean) of a complete bigdens store.

    Every block is checked against its ledger checksum as it is read (:mod:`bigdens.store`).

    Parameters
    ----------
    path
        A store written by ``bigdens predict``.
    frame
        Of a trajectory store, the frame (0-based; required there); None for a single structure.

    Returns
    -------
    atoms : ase.Atoms
        Positions (n_atoms, 3) Å, numbers, cell (rows, Å), ``pbc=True``.
    density : ndarray, shape (n1, n2, n3), float64
        e/Å³ on the store's grid (DESIGN §1).

    Raises
    ------
    SetupError
        ``path`` is not a bigdens store.
    InputError
        The store is incomplete or damaged (one line naming the repair).
    """
    from ase import Atoms

    from .. import store

    attrs = store.require_attrs(path)
    reader = store.open_checked(path, attrs=attrs, frame=frame)
    if not attrs.get("complete"):
        raise InputError(f"{str(path)!r} is incomplete (unwritten points read NaN); finish it with "
                         "`bigdens predict ... --resume` first")
    import zarr

    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    positions = root["positions"][() if reader.frame is None else reader.frame]
    atoms = Atoms(numbers=root["numbers"][:], positions=positions, cell=attrs["cell"], pbc=True)
    rho = np.empty(reader.shape, dtype=np.float64)
    for start, values in reader.slabs("density", axis=0):
        rho[start:start + values.shape[0]] = values
    return atoms, rho


def check_same_structure(atoms: "Atoms", reference: "Atoms", *, what: str = "the store",
                         atol: float = 1e-4) -> None:
    """Refuse ``atoms`` unless it is ``reference``: same species in the same order, cell and positions.

    Positions are compared modulo the lattice (an atom wrapped into the cell is the same atom).

    Parameters
    ----------
    atoms, reference : ase.Atoms
        The structure given and the one the density belongs to.
    what
        How the message names the density's source.
    atol
        Tolerance on cell vectors and positions, Å (the store holds float64 positions).

    Raises
    ------
    InputError
        One line naming the first difference.
    """
    if len(atoms) != len(reference):
        raise InputError(f"the atoms ({len(atoms)}) are not those of {what} ({len(reference)} atoms); "
                         "give the structure the density was predicted for")
    if not np.array_equal(atoms.numbers, reference.numbers):
        i = int(np.flatnonzero(atoms.numbers != reference.numbers)[0])
        raise InputError(f"atom {i} is {atoms[i].symbol} but {reference[i].symbol} in {what}: the species or their "
                         "order differ; give the structure the density was predicted for, in the same order")
    cell_diff = float(np.abs(np.asarray(atoms.cell[:]) - np.asarray(reference.cell[:])).max())
    if cell_diff > atol:
        raise InputError(f"the cell differs from that of {what} by up to {cell_diff:.3g} Å; give the structure the "
                         "density was predicted for")
    frac = np.linalg.solve(np.asarray(reference.cell[:]).T, (atoms.positions - reference.positions).T).T
    frac -= np.round(frac)
    moved = np.linalg.norm(frac @ np.asarray(reference.cell[:]), axis=1)
    if moved.max() > atol:
        i = int(np.argmax(moved))
        raise InputError(f"atom {i} ({atoms[i].symbol}) is {moved[i]:.3g} Å from its place in {what}; give the "
                         "structure the density was predicted for")


# ---------------------------------------------------------------------------------------------
# GPAW
# ---------------------------------------------------------------------------------------------

def _gpaw_checks(calc, atoms: "Atoms") -> None:
    # Refuse, with one line each, what the warm start cannot honour.
    if getattr(calc, "old", True) or not hasattr(calc, "params") or not hasattr(calc, "create_new_calculation"):
        raise SetupError("warm_start needs a calculator of GPAW's new code (gpaw.GPAW(...) in GPAW >= 24 without "
                         "legacy_gpaw=True); the legacy calculator (gpaw.old) is not supported")
    params = calc.params
    mode = getattr(params.mode, "name", str(params.mode))
    if mode != "pw":
        raise SetupError(f"bigdens starts GPAW in plane-wave mode only (mode=PW(...)); got mode {mode!r}")
    if not np.all(atoms.pbc):
        raise InputError(f"the atoms must be periodic in all three directions (pbc={atoms.pbc.tolist()}), as "
                         "bigdens densities are")
    if params.spinpol or params.magmoms is not None or np.any(atoms.get_initial_magnetic_moments()):
        raise SetupError("bigdens densities are spin-paired; start GPAW without spinpol, magmoms or initial "
                         "magnetic moments")
    setups = params.setups if isinstance(params.setups, dict) else {"default": params.setups}
    names = {str(setups.get(i, setups.get(symbol, setups.get("default", "paw"))))
             for i, symbol in enumerate(atoms.get_chemical_symbols())}
    augmented = sorted(name for name in names if not name.lower().startswith("hgh"))
    if augmented:
        raise SetupError(f"setups {', '.join(map(repr, augmented))} are PAW: a bigdens density is the HGH "
                         "pseudo-density, which carries no PAW augmentation (atomic density matrices, compensation "
                         "charges); use setups='hgh'")
    if getattr(params, "background_charge", None) is not None or getattr(params, "external", None) is not None:
        raise SetupError("warm_start does not support background_charge or external potentials")


def _norm_conserving(setups) -> bool:
    # HGH (and other norm-conserving) setups: no augmentation charges and no pseudo-core density.
    for setup in setups:
        if np.any(np.asarray(setup.Delta_iiL)):
            return False
        nct = getattr(getattr(setup, "data", None), "nct_g", None)
        if nct is not None and np.any(np.asarray(nct)):
            return False
    return True


def _fixed_density_steps(dft, n: int, log) -> int:
    # Up to n eigensolver steps of GPAW's SCF loop with density and potential held fixed (as GPAW's fixed-density
    # band-structure runs), then the loop is left; the mixer is reset when the real SCF starts.
    if n < 0 or int(n) != n:
        raise SetupError(f"fixed_density_steps must be an integer >= 0, got {n!r}")
    if n == 0:
        return 0
    maxiter = dft.scf_loop.maxiter
    if maxiter is not None and n >= maxiter:
        raise SetupError(f"fixed_density_steps ({n}) must be below GPAW's maxiter ({maxiter})")
    log(f"bigdens: {n} eigensolver steps in the fixed potential of the given density before the SCF\n")
    done = 0
    dft.scf_loop.update_density_and_potential = False
    try:
        for _ in dft.iconverge():
            done += 1
            if done >= n:
                break
    finally:
        dft.scf_loop.update_density_and_potential = True
    log("bigdens: fixed-density steps done; the SCF starts from the given density (mixer empty)\n")
    return done


def warm_start(calc, atoms: "Atoms", density: np.ndarray, *, fixed_density_steps: int = FIXED_DENSITY_STEPS,
               max_rescale: float = MAX_RESCALE) -> StartReport:
    """Set up GPAW calculator ``calc`` on ``atoms`` so that its SCF starts from ``density``.

    The module docstring says which GPAW objects are set and why the SCF then starts from the
    density.  Afterwards ``atoms.calc = calc; atoms.get_potential_energy()`` converges as usual;
    ``calc.get_number_of_iterations()`` gives the SCF iterations.

    Parameters
    ----------
    calc
        A fresh ``gpaw.GPAW(mode=PW(...), setups="hgh", ...)`` calculator (GPAW's new code), not yet
        run; its parameters (cutoff, k-points, grid, XC, smearing, convergence) are used as given.
    atoms : ase.Atoms
        The structure, periodic, spin-paired (Å).
    density : ndarray, shape (n1, n2, n3)
        Valence pseudo-density, e/Å³, on the DESIGN §1 grid over ``atoms.cell`` (any shape: it is
        Fourier-interpolated to GPAW's grid when that differs).
    fixed_density_steps
        Eigensolver steps in the density's fixed potential before the SCF (:data:`FIXED_DENSITY_STEPS`;
        0: none), run here.  They are not in GPAW's SCF count (``get_number_of_iterations()``); the
        report's ``details["fixed_density_steps"]`` says how many ran (fewer if they converged).
    max_rescale
        Largest accepted ``|rescale factor − 1|`` (:data:`MAX_RESCALE`).

    Returns
    -------
    StartReport
        Grids, clipped charge and rescale factor; ``details`` adds GPAW's version, setups, the number
        of symmetry operations applied and ``max_symmetrization_change`` (e/Å³).

    Raises
    ------
    MissingDependencyError
        GPAW is not installed.
    SetupError
        PAW (or other augmented) setups, a legacy GPAW calculator, a mode other than PW, spin
        polarisation, a grid split over MPI domains.
    InputError
        Non-periodic atoms, or a density :func:`prepare_density` refuses.
    """
    gpaw = attempt_import("gpaw", purpose="starting a GPAW calculation from a density (bigdens dft)")
    from ase.units import Bohr
    from gpaw.new.calculation import DFT, write_atoms
    from gpaw.utilities import check_atoms_too_close, check_atoms_too_close_to_boundary

    _gpaw_checks(calc, atoms)
    atoms = atoms.copy()
    params = calc.params
    log = calc.log
    check_atoms_too_close(atoms)
    check_atoms_too_close_to_boundary(atoms)

    # As Parameters.create_dft_calculation_components (GPAW 26.7), the density replaced before the potential.
    builder = params.dft_component_builder(atoms, log=log, comm=log.comm)
    if not _norm_conserving(builder.setups):
        raise SetupError(f"setups {params.setups!r} carry augmentation charges or a pseudo-core density, which a "
                         "bigdens density (the HGH pseudo-density) does not hold; use setups='hgh'")
    if builder.grid.comm.size != 1:
        raise SetupError("warm_start sets the density on one process; run GPAW without domain decomposition "
                         "(parallel={'domain': 1})")
    basis_set = builder.create_basis_set()
    scf_loop = builder.create_scf_loop()
    pot_calc = builder.create_potential_calculator()
    dens = builder.density_from_superposition(basis_set)
    dens.normalize(pot_calc.charge)
    if dens.ncomponents != 1:
        raise SetupError("bigdens densities are spin-paired; start GPAW without spin polarisation")
    n_electrons = float(dens.nvalence - dens.charge + pot_calc.charge)
    shape = tuple(int(n) for n in dens.nt_sR.desc.size)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    rho, report = prepare_density(density, cell=cell, shape=shape, n_electrons=n_electrons,
                                  max_rescale=max_rescale)

    nt_R = dens.nt_sR.data[0]
    nt_R[:] = rho * Bohr**3  # e/Å³ -> e/Bohr³
    symmetries = builder.ibz.symmetries
    before = nt_R.copy()
    dens.nt_sR.symmetrize(symmetries.rotation_scc, symmetries.translation_sc)  # an average: stays ≥ 0
    sym_change = float(np.abs(nt_R - before).max()) / Bohr**3
    factor2 = n_electrons / float(dens.nt_sR.integrate().sum())
    nt_R *= factor2

    potential, energies, _ = pot_calc.calculate_without_orbitals(dens, kpt_band_comm=builder.communicators["D"])
    ibzwfs = builder.create_ibz_wave_functions(basis_set, potential)
    if ibzwfs._wfs_u[0].has_eigs:
        ibzwfs.calculate_occs(scf_loop.occ_calc, n_electrons)
    write_atoms(atoms, builder.initial_magmom_av, builder.grid, log)
    ibzwfs.summary(log)
    log(dens)
    log(potential)
    log(builder.setups)
    log(scf_loop)
    log(pot_calc)
    integral_out = float(dens.nt_sR.integrate().sum())
    log(f"bigdens: initial pseudo-density set from a bigdens density ({report.describe()}; "
        f"symmetrised, max change {sym_change:.3g} e/Å³)\n")
    calc._dft = DFT.from_components(atoms, ibzwfs, dens, potential, builder.setups, scf_loop, pot_calc, log,
                                    params, energies, converge=False)
    calc._atoms = atoms.copy()
    steps = _fixed_density_steps(calc._dft, fixed_density_steps, log)
    setups = params.setups
    details: dict[str, Any] = {
        "code": "GPAW", "code_version": gpaw.__version__, "setups": repr(setups),
        "grid_spacing_A": (np.linalg.norm(cell, axis=1) / np.array(shape)).round(6).tolist(),
        "symmetry_operations": int(len(symmetries.rotation_scc)),
        "max_symmetrization_change": sym_change,
        "fixed_density_steps": steps,
        "set": "density.nt_sR (pseudo-density); potential and LCAO initial wave functions computed from it; "
               "D_asii atomic (no effect on HGH potentials); mixer empty",
    }
    return replace(report, rescale_factor=report.rescale_factor * factor2, integral_out=integral_out,
                   details=details)


def gpaw_calculator_from_density(atoms: "Atoms", density: np.ndarray | str | Path, *, frame: int | None = None,
                                 fixed_density_steps: int = FIXED_DENSITY_STEPS, max_rescale: float = MAX_RESCALE,
                                 **gpaw_parameters):
    """A GPAW calculator on ``atoms`` whose SCF starts from a bigdens density (a store or an array).

    >>> from ase.build import bulk                                          # doctest: +SKIP
    >>> from gpaw import PW, FermiDirac
    >>> atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    >>> calc, report = gpaw_calculator_from_density(
    ...     atoms, "al.zarr", mode=PW(600), setups="hgh", xc="LDA", kpts=(4, 4, 4),
    ...     occupations=FermiDirac(0.1), txt="al.txt")
    >>> atoms.calc = calc
    >>> energy = atoms.get_potential_energy()                               # eV
    >>> calc.get_number_of_iterations()

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (Å); with a store, it must be the store's (same species and order, cell and
        positions, :func:`check_same_structure`).  Its calculator is not set: do ``atoms.calc = calc``.
    density : ndarray of shape (n1, n2, n3), or str or Path
        Valence pseudo-density in e/Å³ on the DESIGN §1 grid over ``atoms.cell``, or a complete
        bigdens store (its ``density`` variable, :func:`read_store_density`).
    frame
        Of a trajectory store, the frame to read.
    fixed_density_steps
        As :func:`warm_start`.
    max_rescale
        Largest accepted ``|rescale factor − 1|``.
    **gpaw_parameters
        Passed to ``gpaw.GPAW`` (``mode``, ``setups``, ``kpts``, ``gpts``, ``xc``, ``occupations``,
        ``convergence``, ``txt``, ...).  ``setups`` defaults to ``"hgh"`` here (bigdens' labels),
        ``mode`` to ``PW(600)`` and ``txt`` to None (no log).

    Returns
    -------
    calc : gpaw ASECalculator
        Ready to run: the first energy or force call converges from the density.
    report : StartReport
        :func:`warm_start`'s report.

    Raises
    ------
    As :func:`warm_start`, and :func:`read_store_density` for a store.
    """
    gpaw = attempt_import("gpaw", purpose="starting a GPAW calculation from a density (bigdens dft)")
    if isinstance(density, (str, Path)):
        store_atoms, density = read_store_density(density, frame=frame)
        check_same_structure(atoms, store_atoms)
    elif frame is not None:
        raise SetupError("frame is for a trajectory store; an array density has no frames")
    kwargs = {"setups": "hgh", "mode": gpaw.PW(600), "txt": None, **gpaw_parameters}
    calc = gpaw.GPAW(**kwargs)
    report = warm_start(calc, atoms, density, fixed_density_steps=fixed_density_steps, max_rescale=max_rescale)
    return calc, report

