"""``bigdens charges``: the per-atom charges of a predicted store, printed and exported (CSV or extxyz)."""

from __future__ import annotations

import argparse

from ._common import add_frame_argument, add_output_argument

HELP = ("print the per-atom charges of a predicted store (electrons in each atom's Voronoi cell, with their "
        "epistemic σ) and export them as CSV or extxyz")

#: Export formats by file suffix.
FORMATS = {".csv": "csv", ".extxyz": "extxyz", ".xyz": "extxyz"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store written by `bigdens predict`")
    add_output_argument(parser, metavar="FILE", required=False,
                        help="write the charges to FILE.csv (index, symbol, x, y, z, charge_e, charge_std_e, "
                             "net_charge_e) or FILE.extxyz (per-atom arrays of the same names)")
    add_frame_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import charges
    from ..errors import SetupError

    fmt = None
    if args.output is not None:
        out = Path(args.output)
        fmt = FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise SetupError(f"cannot tell the format of {args.output!r}: name it FILE.csv or FILE.extxyz")
        if out.is_dir():
            raise SetupError(f"cannot write {args.output!r}: it is a folder; give a file name, e.g. -o charges.csv")
        if not out.absolute().parent.is_dir():
            raise SetupError(f"cannot write {args.output!r}: its folder does not exist; create it first")
    result = charges.read(args.store, frame=args.frame)
    if fmt is not None:
        writer = charges.write_csv if fmt == "csv" else charges.write_extxyz
        try:
            writer(args.output, result)
        except OSError as exc:
            raise SetupError(f"cannot write {args.output!r} ({exc.strerror or exc}); choose a writable "
                             "destination") from None
    print(result.summary(args.store))
    if fmt is not None:
        print(f"wrote {args.output}: {len(result.charge)} atoms ({fmt})")
    return 0
