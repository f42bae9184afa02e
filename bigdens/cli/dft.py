"""``bigdens dft``: run GPAW to self-consistency starting from a predicted store's density; write a .gpw file.

The DFT settings are a protocol's (``--protocol``, v2 unless told otherwise, as ``bigdens datagen``):
LDA, HGH setups, Fermi-Dirac 0.1 eV, its cutoff, k-point rule and grid rule; ``--ecut``, ``--kpts``
and ``--gpts`` override single settings.  The density is Fourier-interpolated to GPAW's grid when
the two differ, clipped at zero and rescaled to GPAW's valence electron count
(:mod:`bigdens.dft.start` says how, and what is set inside GPAW).
"""

from __future__ import annotations

import argparse

from ._common import add_frame_argument, add_output_argument

HELP = ("run GPAW (plane waves, HGH setups) to self-consistency starting from a predicted store's density "
        "instead of atomic densities, and write the converged calculation as a .gpw file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..dft.start import FIXED_DENSITY_STEPS

    parser.add_argument("store", help="a complete store written by `bigdens predict`")
    add_output_argument(parser, metavar="FILE.gpw", help="the GPAW restart file to write (read it with gpaw.GPAW(FILE))")
    parser.add_argument("--structure", metavar="FILE",
                        help="the structure to run (any format ASE reads); it must be the store's (same species in "
                             "the same order, cell and positions). Default: the store's own atoms")
    add_frame_argument(parser)
    dft = parser.add_argument_group("DFT (protocol bigdens-dft-v2 unless told otherwise; docs/data.md, Protocols)")
    dft.add_argument("--protocol", metavar="{v1,v2}", default="v2",
                     help="DFT protocol whose settings to use: v2 (bigdens-dft-v2, converged settings; default) or "
                          "v1 (bigdens-dft-v1, the settings of the shipped models' training data)")
    dft.add_argument("--ecut", type=float, metavar="EV", help="plane-wave cutoff, eV (default: the protocol's)")
    dft.add_argument("--kpts", type=int, nargs=3, metavar=("K1", "K2", "K3"),
                     help="Monkhorst-Pack k-point mesh (default: the protocol's ceil(L/|a_i|))")
    dft.add_argument("--gpts", type=int, nargs=3, metavar=("N1", "N2", "N3"),
                     help="GPAW's grid shape (default: the protocol's M*ceil(|a_i|/h)); the density is "
                          "Fourier-interpolated to it when the store's grid differs")
    dft.add_argument("--maxiter", type=int, metavar="N", help="most SCF iterations (default: GPAW's)")
    dft.add_argument("--fixed-density-steps", type=int, default=FIXED_DENSITY_STEPS, metavar="N",
                     help=f"eigensolver steps in the fixed potential of the store's density before the SCF "
                          f"(default {FIXED_DENSITY_STEPS}; 0: none)")
    parser.add_argument("--log", metavar="FILE",
                        help="GPAW's text log (default: the output's name with .txt, e.g. out.txt beside out.gpw)")
    parser.add_argument("--with-wave-functions", action="store_true",
                        help="also write the wave functions into the .gpw file (GPAW's mode='all'; much larger)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._imports import attempt_import
    from ..datagen.settings import protocol_settings
    from ..dft.start import check_same_structure, read_store_density, warm_start
    from ..errors import InputError, RunError, SetupError

    output = Path(args.output)
    if output.suffix != ".gpw":
        raise SetupError(f"the output {args.output!r} must be a GPAW restart file named *.gpw, e.g. -o out.gpw")
    if output.is_dir() or not output.absolute().parent.is_dir():
        raise SetupError(f"cannot write {args.output!r}: it is a folder or its folder does not exist")
    for name, value in (("--ecut", args.ecut), ("--maxiter", args.maxiter)):
        if value is not None and not value > 0:
            raise InputError(f"{name} must be positive, got {value!r}")
    for name, value in (("--kpts", args.kpts), ("--gpts", args.gpts)):
        if value is not None and min(value) < 1:
            raise InputError(f"{name} must be three positive integers, got {' '.join(map(str, value))}")
    if args.fixed_density_steps < 0:
        raise InputError(f"--fixed-density-steps must be >= 0, got {args.fixed_density_steps}")
    settings = protocol_settings(args.protocol)
    atoms, density = read_store_density(args.store, frame=args.frame)
    if args.structure is not None:
        from ase.io import read

        try:
            given = read(args.structure)
        except Exception as exc:  # noqa: BLE001  (ASE raises many types for unreadable files)
            raise InputError(f"cannot read the structure {args.structure!r} ({type(exc).__name__}: {exc})") from None
        check_same_structure(given, atoms, what=f"the store {args.store!r}")
        given.pbc = True
        atoms = given
    gpaw = attempt_import("gpaw", purpose="bigdens dft (GPAW runs)")
    cell = atoms.cell[:]
    kpts = tuple(args.kpts) if args.kpts else settings.kpts_for(cell)
    gpts = tuple(args.gpts) if args.gpts else settings.gpts_for(cell)
    ecut = args.ecut if args.ecut is not None else settings.ecut
    log = args.log if args.log is not None else str(output.with_suffix(".txt"))
    extra = {} if args.maxiter is None else {"maxiter": args.maxiter}
    calc = gpaw.GPAW(mode=gpaw.PW(ecut), setups=settings.setups, xc=settings.xc,
                     occupations=gpaw.FermiDirac(settings.smearing), kpts=kpts, gpts=gpts,
                     convergence={"density": settings.density_convergence}, txt=log, **extra)
    print(f"GPAW {gpaw.__version__}: {settings.xc}, {settings.setups} setups, {ecut:g} eV, k-points "
          f"{'x'.join(map(str, kpts))}, grid {'x'.join(map(str, gpts))} ({settings.protocol if not (args.ecut or args.kpts or args.gpts) else 'protocol ' + settings.protocol + ' with overrides'}); "
          f"log {log}")
    report = warm_start(calc, atoms, density, fixed_density_steps=args.fixed_density_steps)
    print(report.describe())
    atoms.calc = calc
    try:
        energy = atoms.get_potential_energy()
    except Exception as exc:  # noqa: BLE001  (GPAW's convergence and numerical errors)
        raise RunError(f"GPAW did not converge from the store's density ({type(exc).__name__}: {exc}); see {log}") \
            from None
    steps = report.details["fixed_density_steps"]
    print(f"converged in {calc.get_number_of_iterations()} SCF iterations (after {steps} fixed-density steps): "
          f"energy {energy:.6f} eV")
    calc.write(str(output), mode="all" if args.with_wave_functions else "")
    print(f"wrote {args.output}")
    return 0
