"""Where the shipped example's epistemic flag falls: flagged points by distance to the nearest atom.

Reads a store written by ``bigdens predict examples/al108-vacancy.xyz`` and counts the points whose
epistemic σ exceeds the store's ``epistemic_threshold``, per class of nearest-atom distance (open space
≥ 2.3 Å, 2.05–2.3 Å, bonding shell, cores < 0.6 Å), with the number of grid points in each class, the
mean density's minimum, and the store's bond spread and aleatoric factor.

Run:  bigdens predict examples/al108-vacancy.xyz --out al108-vacancy.zarr
      python -m benchmarks.example_flags al108-vacancy.zarr --out benchmarks/results/example_flags.json
"""

from __future__ import annotations

import argparse

import numpy as np

from bigdens.descriptors import DescriptorParams, compute
from bigdens.grid import Grid

from ._common import write_result

#: Distance classes (Å from the nearest atom): lower edges, ascending.
EDGES = (0.0, 0.6, 1.4, 2.05, 2.3)


def main(argv=None) -> int:
    import xarray as xr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    ds = xr.open_zarr(args.store)
    cell = np.asarray(ds.attrs["cell"])
    grid = Grid(cell=cell, shape=tuple(ds.attrs["grid_shape"]))
    numbers = ds["numbers"].values
    species = tuple(sorted(set(numbers.tolist())))
    params = DescriptorParams(species=species, m=(1,) * len(species), k=(0,) * len(species), r_cut=6.0)
    d = compute(ds["positions"].values, numbers, cell, grid.points(), params).min(axis=1)
    flagged = (ds["density_std_epistemic"].values > np.float32(ds.attrs["epistemic_threshold"])).ravel()
    cls = np.searchsorted(np.asarray(EDGES), d, side="right") - 1
    rows = []
    for k, lo in enumerate(EDGES):
        hi = EDGES[k + 1] if k + 1 < len(EDGES) else None
        sel = cls == k
        rows.append({"from_A": lo, "to_A": hi, "points": int(sel.sum()), "flagged": int(flagged[sel].sum()),
                     "flagged_distance_range_A": ([float(d[sel & flagged].min()), float(d[sel & flagged].max())]
                                                  if (sel & flagged).any() else None)})
    result = {"store": args.store, "n_points": int(flagged.size), "n_flagged": int(flagged.sum()),
              "flagged_pct": float(100 * flagged.mean()), "threshold": float(ds.attrs["epistemic_threshold"]),
              "min_density": float(ds["density"].min()), "bond_spread": ds.attrs.get("bond_spread"),
              "aleatoric_disorder_factor": ds.attrs.get("aleatoric_disorder_factor"), "by_distance": rows}
    for r in rows:
        print(f"{r['from_A']:.2f}-{r['to_A'] if r['to_A'] is not None else '':<5} Å: {r['flagged']:6d} of {r['points']:7d} flagged")
    print(f"total {result['n_flagged']} ({result['flagged_pct']:.2f} %), min density {result['min_density']:.4f} e/Å³")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
