"""``bigdens build``: write bulk, alloy and defect structures in any ASE format."""

from __future__ import annotations

import argparse

HELP = "build an FCC Al or diamond Si(1-x)Ge(x) structure, with defects and rattle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_output_argument

    parser.add_argument("system", choices=["al", "sige"], help="FCC aluminium or diamond Si(1-x)Ge(x)")
    parser.add_argument("--cells", type=int, nargs=3, default=[1, 1, 1], metavar=("N1", "N2", "N3"),
                        help="conventional cubic cells along each axis (Al: 4 atoms each, SiGe: 8)")
    parser.add_argument("--a", type=float, help="lattice constant, Å (Al 4.05; SiGe by Vegard's law)")
    parser.add_argument("--x", type=float, help="Ge fraction for sige, in [0, 1]")
    parser.add_argument("--vacancies", type=int, default=0, metavar="K", help="remove K random atoms")
    parser.add_argument("--void", type=float, metavar="R", help="remove atoms within R Å of the cell centre")
    parser.add_argument("--cluster", nargs=2, metavar=("SYMBOL", "R"),
                        help="substitute atoms within R Å of the cell centre by SYMBOL")
    parser.add_argument("--rattle", type=float, default=0.0, metavar="RMS",
                        help="Gaussian displacement per Cartesian component, Å")
    parser.add_argument("--seed", type=int, default=0, help="seed for alloy sites, vacancies and rattle")
    add_output_argument(parser, metavar="FILE", help="output structure file; format from its name or --out-format")
    parser.add_argument("--out-format", help="ASE format name for the output (e.g. vasp, lammps-data)")
    parser.add_argument("--skip-size-check", action="store_true",
                        help="build even when the estimated memory or file size exceeds what the machine offers")


def run(args: argparse.Namespace) -> int:
    from .. import structure
    from ..errors import InputError

    _check_size(args)
    if args.system == "al":
        if args.x is not None:
            raise InputError("--x is for sige only")
        atoms = structure.fcc_al(args.cells, a=structure.A_AL if args.a is None else args.a)
    else:
        if args.x is None:
            raise InputError("bigdens build sige needs the Ge fraction, e.g. --x 0.5")
        atoms = structure.diamond_sige(args.cells, x=args.x, a=args.a, seed=args.seed)
    if args.cluster:
        symbol, radius = args.cluster
        try:
            radius = float(radius)
        except ValueError:
            raise InputError(f"--cluster takes SYMBOL R with R a radius in Å, got R={radius!r}; "
                             "e.g. --cluster Cu 3.0") from None
        atoms = structure.substitute_cluster(atoms, radius, symbol=symbol)
    if args.void is not None:
        atoms = structure.carve_void(atoms, args.void)
    if args.vacancies:
        atoms = structure.remove_vacancies(atoms, args.vacancies, seed=args.seed)
    if args.rattle:
        atoms = structure.rattle(atoms, args.rattle, seed=args.seed)
    structure.validate(atoms)
    atoms.wrap()  # rattled atoms back into the cell: readers note atoms outside it (structure.read)
    write_structure(atoms, args.output, format=args.out_format)
    counts = ", ".join(f"{n} {s}" for s, n in structure.species_counts(atoms).items())
    print(f"wrote {args.output}: {len(atoms)} atoms ({counts}), cell {atoms.cell.lengths().round(4).tolist()} Å")
    return 0


def _check_size(args: argparse.Namespace) -> None:
    """Refuse a structure too large for this machine's memory or the output's disk, before building it."""
    import math

    from ..resources import check, estimate_build, memory_per_local_worker
    from ..structure import _check_cells

    n_atoms = (4 if args.system == "al" else 8) * math.prod(_check_cells(args.cells))
    check(estimate_build(n_atoms), what=f"a structure of {n_atoms:,} atoms", memory_per_worker=memory_per_local_worker(0),
          disk_at=args.output, skip=args.skip_size_check, advice="build fewer --cells")


def write_structure(atoms, path: str, *, format: str | None = None) -> None:
    """Write ``atoms`` to ``path`` with ASE, turning its errors into one clear message.

    ``format`` is an ASE format name, guessed from ``path`` when None.  LAMMPS
    data files get a Masses section, so that reading them back (ASE maps
    masses to elements) restores the species rather than H, He, ...
    """
    from pathlib import Path

    from ase.io import write
    from ase.io.formats import filetype

    from ..errors import InputError

    if Path(path).is_dir():
        example = str(Path(path) / "structure.xyz")
        raise InputError(f"-o {path!r} is a folder; give a structure file, e.g. -o {example!r}")
    if not Path(path).absolute().parent.is_dir():
        raise InputError(f"cannot write {path!r}: its folder does not exist; create it first")
    try:
        kind = format or filetype(path, read=False)
    except Exception:  # ASE's own error follows from write() below
        kind = None
    extra = {"masses": True} if kind == "lammps-data" else {}
    try:
        write(path, atoms, format=format, **extra)
    except Exception as exc:
        raise InputError(f"cannot write {path!r} ({type(exc).__name__}: {exc}); "
                         "choose a format ASE writes with --out-format") from None
