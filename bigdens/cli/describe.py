"""``bigdens describe``: grid, blocks and descriptors of a structure, with a summary."""

from __future__ import annotations

import argparse

from ._common import add_grid_arguments, add_structure_arguments, grid_from_args

HELP = "compute the grid-point descriptors of a structure block by block and summarise them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_structure_arguments(parser)
    add_grid_arguments(parser)
    parser.add_argument("--block", type=int, default=32, help="grid points per block edge (default 32)")
    parser.add_argument("--r-cut", type=float, help="cutoff radius, Å (default 6.0)")
    parser.add_argument("--m", type=int, help="radial neighbours per species (default 32)")
    parser.add_argument("--k", type=int, help="angular neighbours per species (default 6)")
    parser.add_argument("--max-blocks", type=int, help="stop after this many blocks (a sample of a large grid)")
    parser.add_argument("--skip-size-check", action="store_true",
                        help="start even when the estimated memory or block count exceeds what the machine offers")


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    import warnings

    import numpy as np

    from .. import descriptors, structure
    from ..blocks import block_halo, make_blocks
    from ..celllist import build_cell_list
    from ..errors import InputError

    # Zero and negative settings are errors, never a silent default: --m, --k and --r-cut go to
    # DescriptorParams as given (`is not None`: 0 is falsy), which refuses them as `bigdens train` does.
    if args.max_blocks is not None and args.max_blocks < 1:
        raise InputError(f"--max-blocks must be >= 1 (blocks to compute), got {args.max_blocks}")
    with warnings.catch_warnings(record=True) as notes:  # shown once every check has passed (below)
        warnings.simplefilter("always")
        atoms = structure.read(args.structure, format=args.format)
    structure.validate(atoms)
    params = descriptors.default_params(atoms.numbers)
    n = len(params.species)
    params = descriptors.DescriptorParams(
        species=params.species,
        m=(args.m,) * n if args.m is not None else params.m,
        k=(args.k,) * n if args.k is not None else params.k,
        r_cut=args.r_cut if args.r_cut is not None else params.r_cut,
        cross=params.cross,
    )
    grid = grid_from_args(atoms.cell[:], args)
    from ..blocks import block_shape_for
    from ..resources import check, estimate_describe, memory_per_local_worker

    block = block_shape_for(grid.shape, args.block)
    estimate = estimate_describe(n_atoms=len(atoms), volume=grid.volume, grid_shape=grid.shape, block_shape=block,
                                 n_features=params.n_features, r_cut=params.r_cut)
    check(estimate, what="describe", memory_per_worker=memory_per_local_worker(0), disk_at=None,
          skip=args.skip_size_check, advice="lower --r-cut or --block")
    cl = build_cell_list(grid.cell, atoms.positions)
    blocks = make_blocks(grid.shape, block)
    todo = blocks[: args.max_blocks] if args.max_blocks is not None else blocks
    for note in notes:  # one line each, as `bigdens predict` shows them; a refused run shows only its error
        print(f"bigdens describe: warning: {note.message}", file=sys.stderr)
    counts = ", ".join(f"{c} {s}" for s, c in structure.species_counts(atoms).items())
    print(f"structure: {len(atoms)} atoms ({counts}), volume {grid.volume:.2f} Å³")
    print(f"grid: {grid.shape} = {grid.n_points} points, spacing {np.round(grid.spacing, 4).tolist()} Å")
    print(f"descriptor: species {params.species}, M {params.m}, K {params.k}, r_cut {params.r_cut} Å "
          f"-> {params.n_features} features")
    descriptors.compute_block(block_halo(cl, atoms.numbers, grid, blocks[0], params.r_cut), grid, blocks[0], params)
    t0 = time.perf_counter()
    n_points = 0
    lo = np.full(params.n_features, np.inf)
    hi = -lo
    total = np.zeros(params.n_features)
    for b in todo:
        feats = descriptors.compute_block(block_halo(cl, atoms.numbers, grid, b, params.r_cut), grid, b, params)
        feats = feats.reshape(-1, params.n_features)
        lo = np.minimum(lo, feats.min(axis=0))
        hi = np.maximum(hi, feats.max(axis=0))
        total += feats.sum(axis=0, dtype=np.float64)
        n_points += len(feats)
    dt = time.perf_counter() - t0
    print(f"blocks: {len(todo)} of {len(blocks)} computed ({n_points} points) in {dt:.2f} s "
          f"= {n_points / max(dt, 1e-9):,.0f} points/s")
    names = params.feature_names()
    for c in [0] + [o + m - 1 for o, m in zip(params.offsets, params.m)][:2]:
        print(f"  {names[c]:>10}: min {lo[c]:.3f}  mean {total[c] / n_points:.3f}  max {hi[c]:.3f} Å")
    return 0
