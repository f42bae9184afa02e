"""From a bigdens density to DFT: start a GPAW self-consistent run from a predicted density.

:mod:`bigdens.dft.start` holds the pieces: :func:`~bigdens.dft.start.fourier_resample` (a periodic
field onto another grid), :func:`~bigdens.dft.start.prepare_density` (interpolate, clip at zero,
rescale to the valence electron count), :func:`~bigdens.dft.start.read_store_density` (atoms and
density of a complete store), :func:`~bigdens.dft.start.warm_start` (put a density into a GPAW
calculator) and :func:`~bigdens.dft.start.gpaw_calculator_from_density` (all of it in one call).
:mod:`bigdens.dft.harris` gives the Harris–Foulkes energy of a density without SCF
(:func:`~bigdens.dft.harris.harris_foulkes`), the model's Monte Carlo sample densities
(:func:`~bigdens.dft.harris.density_samples`) and the energy's σ over them.  ``bigdens dft STORE -o OUT.gpw``
and ``bigdens dft STORE --harris-foulkes -o OUT.json`` are the commands; Quantum ESPRESSO's starting
density is written by :func:`bigdens.io.qe.write_qe` (``bigdens export --format qe``).  GPAW is imported
only inside the functions that need it.
"""

from __future__ import annotations

from .harris import HarrisEnergy, HarrisWithSigma, density_samples, harris_foulkes, harris_foulkes_with_sigma
from .start import (StartReport, check_same_structure, fourier_resample, gpaw_calculator_from_density,
                    prepare_density, read_store_density, warm_start)

__all__ = ["HarrisEnergy", "HarrisWithSigma", "StartReport", "density_samples", "harris_foulkes",
           "harris_foulkes_with_sigma", "check_same_structure", "fourier_resample", "gpaw_calculator_from_density",
           "prepare_density", "read_store_density", "warm_start"]
