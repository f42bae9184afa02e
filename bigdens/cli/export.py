"""``bigdens export``: a variable of a predicted store as a Gaussian cube file (Bohr)."""

from __future__ import annotations

import argparse

from ._common import add_frame_argument, add_output_argument

HELP = ("write a variable of a predicted store as a Gaussian cube file (Bohr, e/Bohr³), slab by slab, each block "
        "checked against its ledger checksum")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store written by `bigdens predict`")
    add_output_argument(parser, metavar="FILE.cube", aliases=("--cube",), help="output Gaussian cube file")
    parser.add_argument("--var", default="density",
                        help="variable: density (default), density_std, density_std_epistemic, "
                             "density_std_aleatoric")
    add_frame_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ase import Atoms

    from .. import store
    from ..errors import SetupError
    from ..io.cube import write_cube

    attrs = store.read_attrs(args.store)
    if attrs is None:
        raise SetupError(f"{args.store!r} is not a bigdens store")
    if args.var not in store.VARIABLES:
        raise SetupError(f"unknown variable {args.var!r}; choose one of {', '.join(store.VARIABLES)}")
    if not Path(args.output).absolute().parent.is_dir():
        raise SetupError(f"cannot write {args.output!r}: its folder does not exist; create it first")
    if Path(args.output).is_dir():
        raise SetupError(f"cannot write {args.output!r}: it is a folder; give a file name, e.g. -o density.cube")
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
        write_cube(args.output, atoms, store.CheckedSlabs(reader, args.var),
                   comment=f"bigdens {args.var}: {label} (Bohr, e/Bohr^3)")
    except OSError as exc:
        raise SetupError(f"cannot write {args.output!r} ({exc.strerror or exc}); choose a writable destination") \
            from None
    which = "" if reader.frame is None else f"frame {reader.frame}, "
    print(f"wrote {args.output}: {which}{args.var}, grid {tuple(attrs['grid_shape'])}, {len(atoms)} atoms "
          "(Bohr, e/Bohr³)")
    return 0
