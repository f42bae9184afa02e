"""``bigdens export``: a variable of a predicted store as a Gaussian cube file (Bohr)."""

from __future__ import annotations

import argparse

import numpy as np

HELP = "write a variable of a predicted store as a Gaussian cube file (Bohr, e/Bohr³), slab by slab"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store written by `bigdens predict`")
    parser.add_argument("--cube", required=True, metavar="FILE.cube", help="output cube file")
    parser.add_argument("--var", default="density",
                        help="variable: density (default), density_std, density_std_epistemic, "
                             "density_std_aleatoric")


class SlabReader:
    """Serve ``[i]`` slabs (n2, n3) of a chunked 3-D array, reading one chunk-thick slab at a time.

    Memory: ``chunk[0] · n2 · n3`` values; each chunk is decompressed once.
    """

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)
        self.step = int(array.chunks[0])
        self._lo = -1
        self._slab = None

    def __getitem__(self, i: int) -> np.ndarray:
        lo = (i // self.step) * self.step
        if lo != self._lo:
            self._slab = np.asarray(self.array[lo : lo + self.step])
            self._lo = lo
        return self._slab[i - lo]


def run(args: argparse.Namespace) -> int:
    from ase import Atoms

    from .. import store
    from ..errors import SetupError
    from ..io.cube import write_cube

    attrs = store.read_attrs(args.store)
    if attrs is None:
        raise SetupError(f"{args.store!r} is not a bigdens store")
    if args.var not in store.VARIABLES:
        raise SetupError(f"unknown variable {args.var!r}; choose one of {', '.join(store.VARIABLES)}")
    from pathlib import Path

    if not Path(args.cube).absolute().parent.is_dir():
        raise SetupError(f"cannot write {args.cube!r}: its folder does not exist; create it first")
    if not attrs.get("complete"):
        raise SetupError(f"{args.store!r} is incomplete (unwritten points read NaN); finish it with "
                         "`bigdens predict ... --resume` first")
    import zarr

    root = zarr.open_group(args.store, mode="r")
    atoms = Atoms(numbers=root["numbers"][:], positions=root["positions"][:], cell=attrs["cell"], pbc=True)
    label = store.VARIABLES[args.var]
    write_cube(args.cube, atoms, SlabReader(root[args.var]),
               comment=f"bigdens {args.var}: {label} (Bohr, e/Bohr^3)")
    print(f"wrote {args.cube}: {args.var}, grid {tuple(attrs['grid_shape'])}, {len(atoms)} atoms (Bohr, e/Bohr³)")
    return 0
