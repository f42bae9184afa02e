"""Argument groups shared by several sub-commands."""

from __future__ import annotations

import argparse

from ..config import DEFAULT_SPACING


def add_grid_arguments(parser: argparse.ArgumentParser, default: str = f"{DEFAULT_SPACING}") -> None:
    """``--spacing H | --grid N1 N2 N3`` (DESIGN §1); ``default`` describes the spacing used without either."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--spacing", type=float, metavar="H",
                   help=f"grid spacing, Å: the largest allowed along each lattice vector (default {default})")
    g.add_argument("--grid", type=int, nargs=3, metavar=("N1", "N2", "N3"), help="exact grid shape")


def add_structure_arguments(parser: argparse.ArgumentParser) -> None:
    """A structure file readable by ASE, with an optional explicit format."""
    parser.add_argument("structure", help="structure file in any format ASE reads (extxyz, POSCAR, CIF, ...)")
    parser.add_argument("--format", help="ASE format name when it cannot be guessed (e.g. lammps-data)")


def grid_from_args(cell, args: argparse.Namespace):
    """The :class:`~bigdens.grid.Grid` that ``--spacing``/``--grid`` ask for over ``cell``."""
    from ..grid import make_grid

    if args.grid is not None:
        return make_grid(cell, shape=args.grid)
    return make_grid(cell, spacing=DEFAULT_SPACING if args.spacing is None else args.spacing)
