"""How far the electron count of a density summed on a coarser grid can be off (worst case over the grid origin).

A density sampled on a periodic grid of shape n integrates every Fourier component exactly except
those at reciprocal vectors that are multiples of n (aliasing); shifting the grid's origin changes
their phases.  The worst case over the origin is therefore Σ_{m≠0} |ρ̂(n·m)| / ρ̂(0), computed here
from the FFT of real DFT densities (training cells, protocol bigdens-dft-v1) for coarse grids of
each spacing.  `bigdens.domain` warns with these numbers before a run on a coarse grid.

    python -m benchmarks.grid_integration --out benchmarks/results/domain/grid_integration.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CELLS = ("datasets/al108/al108-T0600-00.npz", "datasets/al32/al32-T0300-00.npz",
         "datasets/sige216/sige216-x0.50-T0300-00.npz", "datasets/sige64/sige64-x0.25-T0300-00.npz")
SPACINGS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 2.0)


def worst_case_error(density: np.ndarray, coarse: tuple[int, int, int]) -> float:
    """Largest relative electron-count error (over grid origins) of ``density`` summed on a grid of shape ``coarse``."""
    nf = np.array(density.shape)
    nc = np.array(coarse)
    F = np.abs(np.fft.fftn(density.astype(np.float64))) / density.size
    ms = [np.arange(-((nf[i] // 2) // nc[i]), (nf[i] // 2) // nc[i] + 1) * nc[i] for i in range(3)]
    ga, gb, gc = np.meshgrid(*ms, indexing="ij")
    keep = (np.abs(ga) < nf[0] // 2) & (np.abs(gb) < nf[1] // 2) & (np.abs(gc) < nf[2] // 2)
    keep &= ~((ga == 0) & (gb == 0) & (gc == 0))
    return float(F[ga[keep], gb[keep], gc[keep]].sum() / F[0, 0, 0])


def main(argv=None) -> int:
    from bigdens.data import read_snapshot
    from bigdens.grid import shape_from_spacing

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/domain/grid_integration.json"))
    args = p.parse_args(argv)
    rows = {}
    for path in CELLS:
        snap = read_snapshot(path)
        rows[Path(path).stem] = {
            "fine_shape": list(snap.density.shape),
            "fine_spacing": float(np.max(snap.grid().spacing)),
            "relative_error_worst": {f"{h:g}": worst_case_error(snap.density, shape_from_spacing(snap.cell, h))
                                     for h in SPACINGS},
        }
    worst = {f"{h:g}": max(r["relative_error_worst"][f"{h:g}"] for r in rows.values()) for h in SPACINGS}
    result = {"command": "python -m benchmarks.grid_integration", "cells": rows, "max_over_cells": worst}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for h, e in worst.items():
        print(f"spacing {h:>4} Å: electron count off by up to {100 * e:.3g} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
