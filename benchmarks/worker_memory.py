"""Peak memory per worker against the number of atoms, at equal work per worker.

A worker reads only the atoms near its blocks (the store's atom tiles,
:mod:`bigdens.atomtiles`), so its memory should not depend on how many atoms
the structure has.  A whole prediction of a larger structure also runs more
blocks per worker, for longer, which can raise a process's high-water mark on
its own (allocator fragmentation, Dask's bookkeeping).  This benchmark
separates the two: for each size it computes the same number of 64³ blocks
(``--max-blocks``, the first ones in block order) through the real engine and
records each worker's peak RSS after its first block and at the end.

Run:  python -m benchmarks.worker_memory [--cells 14 29 63 136] [--max-blocks 48]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks._common import al_bulk, machine_info, write_result
from bigdens import engine
from bigdens.config import PredictConfig

#: FCC cells per edge: 10,976, 97,556, 1,000,188 and 10,061,824 atoms.
CELLS = [14, 29, 63, 136]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=CELLS, help=f"FCC cells per edge (default {CELLS})")
    ap.add_argument("--max-blocks", type=int, default=48, help="blocks computed per size (default 48)")
    ap.add_argument("--spacing", type=float, default=0.8)
    ap.add_argument("--mc-samples", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/worker_memory.json")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bigdens-memory-"))
    records = []
    try:
        for n in args.cells:
            atoms = al_bulk(n)
            cfg = PredictConfig(out=workdir / "al.zarr", spacing=args.spacing, mc_samples=args.mc_samples,
                                block=args.block, workers=args.workers, threads_per_worker=1, overwrite=True,
                                progress=False, device="cpu", allow_out_of_domain=True, max_blocks=args.max_blocks)
            s = engine.run(atoms, cfg)
            shutil.rmtree(cfg.out, ignore_errors=True)
            rec = {"n_atoms": len(atoms), "grid": list(s.grid_shape), "n_blocks_total": s.n_blocks,
                   "n_blocks_computed": s.n_computed,
                   "first_block_rss_mb": sorted(s.first_rss_mb.values()),
                   "peak_rss_mb_per_worker": sorted(s.max_rss_mb.values()),
                   "driver_peak_rss_mb": engine.peak_rss_mb()}
            records.append(rec)
            print(f"Al {rec['n_atoms']:>11,} atoms, {s.n_computed} of {s.n_blocks} blocks: RSS per worker after "
                  f"its first block {rec['first_block_rss_mb']} MB, at the end {rec['peak_rss_mb_per_worker']} MB",
                  flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    peaks = [max(r["peak_rss_mb_per_worker"]) for r in records]
    result = {"benchmark": "worker_memory", "machine": machine_info(),
              "settings": {"system": "rattled FCC Al (0.05 Å rms), a = 4.05 Å", "spacing_A": args.spacing,
                           "mc_samples": args.mc_samples, "workers": args.workers, "block": args.block,
                           "max_blocks": args.max_blocks},
              "records": records,
              "peak_spread": {"min_mb": min(peaks), "max_mb": max(peaks),
                              "max_over_min": max(peaks) / min(peaks)}}
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
