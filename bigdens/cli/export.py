"""``bigdens export``: a variable of a predicted store as a Gaussian cube, VASP CHGCAR, XSF or QE file.

The QE form is ``pw.x``'s ``charge-density.dat``, the starting density of a run with
``startingpot='file'`` (:mod:`bigdens.io.qe`); it needs the run's ``--ecutrho`` (and ``--alat`` where
the run's lattice parameter is not the first lattice vector's length).

The format comes from ``--format`` or else from the output's name, both
through the registry :data:`bigdens.io.formats.FORMATS`; every writer streams
the field (memory of one block-thick slab of the store, whatever the grid
size), each block checked against its ledger checksum as it is read.
"""

from __future__ import annotations

import argparse

from ..io.formats import pattern_list, units_list, writable
from ._common import add_frame_argument, add_output_argument

HELP = (f"write a variable of a predicted store as a {units_list(writable())} file, streamed block by block "
        "(memory of one block-thick slab), each block checked against its ledger checksum")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store written by `bigdens predict`")
    fmts = writable()
    add_output_argument(parser, metavar="FILE", aliases=("--cube",),
                        help=f"output file; its name gives the format unless --format is given: "
                             f"{pattern_list(fmts, compressed=False)}")
    parser.add_argument("--format", choices=[f.name for f in fmts], default=None,
                        help="the format to write, whatever the output's name: "
                             + "; ".join(f"{f.name}: {f.label} ({f.units}{'; ' + f.write_note if f.write_note else ''})"
                                         for f in fmts))
    parser.add_argument("--var", default="density",
                        help="variable: density (default), density_std, density_std_epistemic, "
                             "density_std_aleatoric")
    add_frame_argument(parser)
    qe = parser.add_argument_group("for --format qe (pw.x's charge-density.dat)")
    qe.add_argument("--ecutrho", type=float, metavar="RY",
                    help="the pw.x run's ecutrho, Ry (its default is 4 x ecutwfc); required for qe")
    qe.add_argument("--alat", type=float, metavar="A",
                    help="the pw.x run's lattice parameter, Å (celldm(1) or A); default: the length of the first "
                         "lattice vector, as with ibrav=0 and CELL_PARAMETERS angstrom (what ASE writes)")
    qe.add_argument("--electrons", type=float, metavar="N",
                    help="rescale the density to N electrons, the valence count of the run's pseudopotentials "
                         "(default: as predicted)")


def _writer_options(args, fmt) -> dict:
    # --ecutrho/--alat/--electrons for the writers that take them; refused for the others.
    from ..errors import SetupError

    given = {"ecutrho": args.ecutrho, "alat": args.alat, "n_electrons": args.electrons}
    flags = {"ecutrho": "--ecutrho", "alat": "--alat", "n_electrons": "--electrons"}
    wrong = [flags[k] for k, v in given.items() if v is not None and k not in fmt.write_options]
    if wrong:
        raise SetupError(f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for --format qe only; "
                         f"the {fmt.label} writer takes no such option")
    for key in fmt.write_options:
        if given[key] is not None and not given[key] > 0:
            raise SetupError(f"{flags[key]} must be positive, got {given[key]!r}")
    if "ecutrho" in fmt.write_options and given["ecutrho"] is None:
        raise SetupError(f"a {fmt.label} file lists the G-vectors of one pw.x run: give its cutoff, --ecutrho RY "
                         "(4 x ecutwfc unless the run sets ecutrho)")
    return {k: v for k, v in given.items() if k in fmt.write_options and v is not None}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ase import Atoms

    from .. import store
    from ..errors import SetupError
    from ..io.formats import get_format, output_format

    if Path(args.output).is_dir():
        example = (get_format(args.format, mode="w") if args.format else writable()[0]).example_name
        raise SetupError(f"cannot write {args.output!r}: it is a folder; give a file name, e.g. -o {example}")
    fmt = output_format(args.output, args.format, option="--format")
    options = _writer_options(args, fmt)
    attrs = store.require_attrs(args.store)
    if args.var not in store.VARIABLES:
        raise SetupError(f"unknown variable {args.var!r}; choose one of {', '.join(store.VARIABLES)}")
    if not Path(args.output).absolute().parent.is_dir():
        raise SetupError(f"cannot write {args.output!r}: its folder does not exist; create it first")
    # Metadata, coordinates, atoms and ledger first (damage is not fixed by finishing the run); each block's
    # checksum as its slab is written.
    reader = store.open_checked(args.store, attrs=attrs, frame=args.frame)
    if not attrs.get("complete"):
        raise SetupError(f"{args.store!r} is incomplete (unwritten points read NaN); finish it with "
                         "`bigdens predict ... --resume` first")
    import zarr

    root = zarr.open_group(args.store, mode="r", use_consolidated=False)
    positions = root["positions"][() if reader.frame is None else reader.frame]
    atoms = Atoms(numbers=root["numbers"][:], positions=positions, cell=attrs["cell"], pbc=True)
    label = store.VARIABLES[args.var]
    try:
        fmt.writer(args.output, atoms, store.CheckedSlabs(reader, args.var, axis=fmt.write_axis),
                   comment=f"bigdens {args.var}: {label} ({fmt.units_ascii})", **options)
    except OSError as exc:
        raise SetupError(f"cannot write {args.output!r} ({exc.strerror or exc}); choose a writable destination") \
            from None
    which = "" if reader.frame is None else f"frame {reader.frame}, "
    note = f"; {fmt.write_note}" if fmt.write_note else ""
    print(f"wrote {args.output}: {which}{args.var}, grid {tuple(attrs['grid_shape'])}, {len(atoms)} atoms, "
          f"{fmt.label} ({fmt.units}{note})")
    return 0
