"""Descriptor throughput (grid points per second per core) and memory per block.

Bulk Al (rattled FCC) and Si0.5Ge0.5 (rattled diamond) at about 10^3 … 10^6
atoms, Si0.5Ge0.5 also with the cross-species angular block (``SiGe-cross``:
the same M, K and r_cut plus K_Si·K_Ge = 25 Si–Ge products), grid spacing 0.2 Å, blocks of 32³ points, one numba thread (so the
rate is per core).  Large grids are sampled: a fixed number of blocks spread
over the grid.  Per block, the memory that the block needs (points, halo and
feature arrays) is recorded, to show it does not grow with the system.

Run:  NUMBA_NUM_THREADS=1 python -m benchmarks.descriptor_throughput [--smoke] [--systems Al SiGe SiGe-cross]
      [--max-atoms N] [--out FILE.json]
      (``Al-K8``, ``Al-K12``: Al with 8 or 12 angular neighbours, candidates of accuracy v3)
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from benchmarks._common import machine_info, write_result
from bigdens import structure
from bigdens.blocks import block_halo, make_blocks
from bigdens.celllist import build_cell_list
from bigdens.descriptors import DescriptorParams, compute_block, species_index
from bigdens.grid import make_grid

#: Descriptor settings benchmarked (the values the shipped models are meant to use).
PARAMS = {
    "Al": DescriptorParams(species=(13,), m=(32,), k=(6,), r_cut=6.0),
    "SiGe": DescriptorParams(species=(14, 32), m=(24, 24), k=(5, 5), r_cut=6.5),
    "SiGe-cross": DescriptorParams(species=(14, 32), m=(24, 24), k=(5, 5), r_cut=6.5, cross=True),
    # Candidates of accuracy v3 (more angular neighbours for Al); not run unless named in --systems.
    "Al-K8": DescriptorParams(species=(13,), m=(32,), k=(8,), r_cut=6.0),
    "Al-K12": DescriptorParams(species=(13,), m=(32,), k=(12,), r_cut=6.0),
}
#: What --systems runs by default.
DEFAULT_SYSTEMS = ("Al", "SiGe", "SiGe-cross")
#: Conventional cells per edge for ~10^3, 10^4, 10^5, 10^6 atoms.
CELLS = {"Al": [6, 14, 29, 63], "SiGe": [5, 11, 23, 50], "SiGe-cross": [5, 11, 23, 50],
         "Al-K8": [6, 14, 29, 63], "Al-K12": [6, 14, 29, 63]}
SPACING = 0.2
BLOCK = 32


def _build(system: str, n: int):
    if system.startswith("Al"):
        return structure.rattle(structure.fcc_al((n, n, n)), 0.05, seed=1)
    return structure.rattle(structure.diamond_sige((n, n, n), x=0.5, seed=1), 0.05, seed=1)


def measure(system: str, cells: int, *, sample_blocks: int = 6) -> dict:
    """Throughput of one system size; returns a JSON-ready record."""
    import numba

    numba.set_num_threads(1)
    params = PARAMS[system]
    atoms = _build(system, cells)
    grid = make_grid(atoms.cell[:], spacing=SPACING)
    t = time.perf_counter()
    cl = build_cell_list(grid.cell, atoms.positions)
    t_cells = time.perf_counter() - t
    blocks = make_blocks(grid.shape, BLOCK)
    full = [b for b in blocks if b.shape == (BLOCK, BLOCK, BLOCK)] or blocks
    pick = [full[i] for i in np.linspace(0, len(full) - 1, min(sample_blocks, len(full))).astype(int)]
    species_index(atoms.numbers, params)
    compute_block(block_halo(cl, atoms.numbers, grid, pick[0], params.r_cut), grid, pick[0], params)  # compile
    t_halo = t_desc = 0.0
    n_points = 0
    mem = []
    for b in pick:
        t = time.perf_counter()
        halo = block_halo(cl, atoms.numbers, grid, b, params.r_cut)
        t_halo += time.perf_counter() - t
        t = time.perf_counter()
        feats = compute_block(halo, grid, b, params)
        t_desc += time.perf_counter() - t
        n_points += b.n_points
        mem.append(halo.positions.nbytes + halo.numbers.nbytes + halo.indices.nbytes + feats.nbytes + b.n_points * 3 * 8 * 2)
    return {
        "system": system,
        "n_atoms": len(atoms),
        "grid": list(grid.shape),
        "n_blocks_total": len(blocks),
        "n_blocks_timed": len(pick),
        "points_timed": n_points,
        "n_features": params.n_features,
        "cell_list_s": t_cells,
        "halo_s_per_block": t_halo / len(pick),
        "descriptor_s_per_block": t_desc / len(pick),
        "points_per_s_per_core": n_points / (t_halo + t_desc),
        "block_bytes_max": int(max(mem)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes only (for the test suite)")
    ap.add_argument("--systems", nargs="+", choices=list(PARAMS), default=list(DEFAULT_SYSTEMS),
                    help=f"systems to run (default: {' '.join(DEFAULT_SYSTEMS)})")
    ap.add_argument("--max-atoms", type=float, default=None,
                    help="leave out the sizes above this many atoms (default: all four, to ~10^6)")
    ap.add_argument("--out", default="benchmarks/results/descriptor_throughput.json")
    args = ap.parse_args(argv)
    smoke = {name: [2] if name.startswith("SiGe") else [3] for name in PARAMS}
    per_cell = {name: 8 if name.startswith("SiGe") else 4 for name in PARAMS}  # atoms per conventional cell
    sizes = {name: [n for n in (smoke if args.smoke else CELLS)[name]
                    if args.max_atoms is None or per_cell[name] * n**3 <= args.max_atoms] for name in args.systems}
    records = []
    for system, cells in sizes.items():
        for n in cells:
            rec = measure(system, n, sample_blocks=2 if args.smoke else 6)
            records.append(rec)
            print(f"{system:>10} {rec['n_atoms']:>9,} atoms  grid {rec['grid']}  "
                  f"{rec['points_per_s_per_core']:>10,.0f} points/s/core  "
                  f"block memory {rec['block_bytes_max'] / 1e6:.1f} MB", flush=True)
    result = {
        "benchmark": "descriptor_throughput",
        "settings": {"spacing_A": SPACING, "block": BLOCK, "threads": 1,
                     "params": {k: PARAMS[k].to_dict() for k in sizes}},
        "machine": machine_info(),
        "records": records,
    }
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
