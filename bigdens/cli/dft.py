"""``bigdens dft``: run GPAW to self-consistency starting from a predicted store's density; write a .gpw file.

The DFT settings are a protocol's (``--protocol``, v2 unless told otherwise, as ``bigdens datagen``):
LDA, HGH setups, Fermi-Dirac 0.1 eV, its cutoff, k-point rule and grid rule; ``--ecut``, ``--kpts``
and ``--gpts`` override single settings.  The density is Fourier-interpolated to GPAW's grid when
the two differ, clipped at zero and rescaled to GPAW's valence electron count
(:mod:`bigdens.dft.start` says how, and what is set inside GPAW).

The σ gate (``--start auto``, the default): a store whose epistemic flag marks more than
:data:`GATE_FLAGGED_SHARE` of its points is a structure the model has not seen; there the run starts
from GPAW's own atomic densities, as the measurements in README "Start DFT from a prediction" advise.
``--start predicted`` and ``--start atomic`` choose either start whatever the flag says.

``--harris-foulkes`` runs no SCF: it gives the Harris–Foulkes energy of the store's density (one
fixed-density GPAW run, :mod:`bigdens.dft.harris`) and its σ from ``--samples`` sample densities of
the store's model, written as JSON.
"""

from __future__ import annotations

import argparse

from ._common import add_frame_argument, add_output_argument

#: Largest share of flagged points (epistemic σ above the model's validation 99.9 % quantile) at which
#: ``--start auto`` starts from the predicted density (README "Start DFT from a prediction": the measurement).
GATE_FLAGGED_SHARE = 0.01

HELP = ("run GPAW (plane waves, HGH setups) to self-consistency starting from a predicted store's density "
        "instead of atomic densities, and write the converged calculation as a .gpw file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..dft.start import FIXED_DENSITY_STEPS

    parser.add_argument("store", help="a complete store written by `bigdens predict`")
    add_output_argument(parser, metavar="FILE.gpw",
                        help="the GPAW restart file to write (read it with gpaw.GPAW(FILE)); with --harris-foulkes, "
                             "a FILE.json of the energies")
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
    start = parser.add_argument_group("start and energy")
    start.add_argument("--start", choices=("auto", "predicted", "atomic"), default="auto",
                       help="the SCF's initial density: auto (default) the store's, unless the model flags more than "
                            f"{GATE_FLAGGED_SHARE * 100:g} %% of its points, then GPAW's atomic densities; predicted: the "
                            "store's always; atomic: GPAW's own start (for comparison)")
    start.add_argument("--harris-foulkes", action="store_true",
                       help="no SCF: the Harris-Foulkes energy of the store's density (eigenstates in its fixed "
                            "potential), with σ from --samples sample densities of the store's model; -o FILE.json")
    start.add_argument("--samples", type=int, default=4, metavar="K",
                       help="with --harris-foulkes: sample densities whose energies give σ (default 4; 0: no σ). "
                            "Each costs one more fixed-density run")
    parser.add_argument("--log", metavar="FILE",
                        help="GPAW's text log (default: the output's name with .txt, e.g. out.txt beside out.gpw)")
    parser.add_argument("--with-wave-functions", action="store_true",
                        help="also write the wave functions into the .gpw file (GPAW's mode='all'; much larger)")


def _check_args(args) -> None:
    from pathlib import Path

    from ..errors import InputError, SetupError

    output = Path(args.output)
    suffix = ".json" if args.harris_foulkes else ".gpw"
    if output.suffix != suffix:
        what = ("a JSON file of the energies, named *.json, e.g. -o hf.json" if args.harris_foulkes else
                "a GPAW restart file named *.gpw, e.g. -o out.gpw")
        raise SetupError(f"the output {args.output!r} must be {what}")
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
    if args.samples < 0 or args.samples == 1:
        raise InputError(f"--samples must be 0 (no σ) or at least 2, got {args.samples}")
    if args.harris_foulkes and args.start == "atomic":
        raise SetupError("--harris-foulkes is the energy of the store's density; it takes no --start atomic")


def _structure(args):
    # The store's atoms (or the --structure file, checked to be the same) and its density.
    from ..dft.start import check_same_structure, read_store_density
    from ..errors import InputError

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
    return atoms, density


def _gate(args, attrs) -> bool:
    """Whether the SCF starts from the store's density (``--start``, and the σ gate for auto); says why not."""
    if args.start != "auto":
        return args.start == "predicted"
    flagged = ((attrs.get("domain") or {}).get("measured") or {}).get("flagged_share")
    if flagged is None or flagged <= GATE_FLAGGED_SHARE:
        return True
    print(f"the model flags {flagged:.1%} of the store's points (epistemic σ above its validation 99.9 % quantile; "
          f"gate {GATE_FLAGGED_SHARE:.0%}): a structure it has not seen, where a predicted start may cost more "
          "than it saves. Starting from GPAW's atomic densities (--start predicted overrides)")
    return False


def _calculator_factory(args, atoms, log):
    from .._imports import attempt_import
    from ..datagen.settings import protocol_settings

    settings = protocol_settings(args.protocol)
    gpaw = attempt_import("gpaw", purpose="bigdens dft (GPAW runs)")
    cell = atoms.cell[:]
    kpts = tuple(args.kpts) if args.kpts else settings.kpts_for(cell)
    gpts = tuple(args.gpts) if args.gpts else settings.gpts_for(cell)
    ecut = args.ecut if args.ecut is not None else settings.ecut
    extra = {} if args.maxiter is None else {"maxiter": args.maxiter}
    overridden = " with overrides" if (args.ecut or args.kpts or args.gpts) else ""
    print(f"GPAW {gpaw.__version__}: {settings.xc}, {settings.setups} setups, {ecut:g} eV, k-points "
          f"{'x'.join(map(str, kpts))}, grid {'x'.join(map(str, gpts))} (protocol {settings.protocol}{overridden}); "
          f"log {log}")

    def make():
        return gpaw.GPAW(mode=gpaw.PW(ecut), setups=settings.setups, xc=settings.xc,
                         occupations=gpaw.FermiDirac(settings.smearing), kpts=kpts, gpts=gpts,
                         convergence={"density": settings.density_convergence}, txt=log, **extra)

    return make, gpts


def _scf(args, atoms, density, make, log, predicted: bool) -> None:
    from ..dft.start import warm_start
    from ..errors import RunError

    calc = make()
    steps = 0
    if predicted:
        report = warm_start(calc, atoms, density, fixed_density_steps=args.fixed_density_steps)
        print(report.describe())
        steps = report.details["fixed_density_steps"]
    atoms.calc = calc
    try:
        energy = atoms.get_potential_energy()
    except Exception as exc:  # noqa: BLE001  (GPAW's convergence and numerical errors)
        raise RunError(f"GPAW did not converge ({type(exc).__name__}: {exc}); see {log}") from None
    start = f"after {steps} fixed-density steps" if predicted else "from GPAW's atomic densities"
    print(f"converged in {calc.get_number_of_iterations()} SCF iterations ({start}): energy {energy:.6f} eV")
    calc.write(str(args.output), mode="all" if args.with_wave_functions else "")


def _harris(args, attrs, atoms, density, make, gpts) -> None:
    import json

    from pathlib import Path

    from .. import bnn
    from .._files import write_text
    from ..dft.harris import density_samples, harris_foulkes, harris_foulkes_with_sigma
    from ..errors import SetupError

    fields = None
    if args.samples:
        path = attrs.get("model_path")
        if not path or not Path(path).is_file():
            raise SetupError(f"the store's model file {path!r} is not here; use --samples 0 for the energy without σ")
        model = bnn.load(path, expected_hash=attrs.get("model_hash"))
        _, fields = density_samples(model, atoms, tuple(gpts), samples=args.samples, seed=int(attrs.get("seed", 0)))
    if fields is None:
        centre = harris_foulkes(make, atoms, density)
        runs, sigma = (), None
    else:
        hf = harris_foulkes_with_sigma(make, atoms, density, fields, n_samples=args.samples)
        centre, runs, sigma = hf.mean, hf.samples, hf.sigma
    n = len(atoms)
    result = {"energy_eV": centre.energy, "free_energy_eV": centre.free_energy,
              "energy_eV_per_atom": centre.energy / n, "eigensolver_steps": centre.eigensolver_steps,
              "wall_seconds": round(centre.wall_seconds, 2), "store": str(args.store), "n_atoms": n,
              "sigma_eV": sigma, "sample_energies_eV": [r.energy for r in runs]}
    write_text(args.output, json.dumps(result, indent=1) + "\n")
    sigma = "" if result["sigma_eV"] is None else f" ± {result['sigma_eV'] / n * 1000:.3f} meV/atom (σ, " \
                                                  f"{args.samples} sample densities)"
    print(f"Harris-Foulkes energy {centre.energy:.6f} eV = {centre.energy / n:.6f} eV/atom{sigma}; "
          f"{centre.eigensolver_steps} fixed-density steps; wrote {args.output}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import store

    _check_args(args)
    atoms, density = _structure(args)
    attrs = store.read_attrs(args.store) or {}
    log = args.log if args.log is not None else str(Path(args.output).with_suffix(".txt"))
    make, gpts = _calculator_factory(args, atoms, log)
    if args.harris_foulkes:
        _harris(args, attrs, atoms, density, make, gpts)
        return 0
    _scf(args, atoms, density, make, log, predicted=_gate(args, attrs))
    print(f"wrote {args.output}")
    return 0
