"""Weak scaling: whole predictions of bulk Al from 10³ to 10⁷ atoms at fixed grid spacing and S.

Each size is a complete ``bigdens predict`` run through the real engine (a
LocalCluster of worker processes, every block computed and written to a Zarr
store on disk, the shipped model).  Per size it records wall time, summed task
time per worker ("busy"), points/s, the stage split, peak RSS per worker and the
electron count, the store's size and the driver's peak RSS (workers read only
the atoms near their blocks, :mod:`bigdens.atomtiles`, so their RSS should not
grow with the structure); then fits the exponent p of time ∝ N^p (wall time over sizes
of at least ``--fit-from`` atoms, where start-up is a small part, and busy time
over all sizes) and extrapolates the fit to 4·10⁶ atoms (labelled as an
extrapolation, not a measurement).  Draws benchmarks/results/weak_scaling.png
(time and memory against atoms; with the DFT points of
benchmarks/results/ml_vs_dft.json when that file exists).

Run:  python -m benchmarks.weak_scaling [--cells 6 10 14 22 29 46 63 136] [--spacing 0.8] [--out FILE.json]
(the records so far are kept in FILE.json.partial while it runs; 10⁷ atoms take about 45 minutes here)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks._common import al_bulk, reset_peak_rss, fit_exponent, machine_info, run_record, write_result
from bigdens import engine
from bigdens.config import PredictConfig

#: FCC cells per edge: 864, 4,000, 10,976, 42,592, 97,556, 389,344, 1,000,188 and 10,061,824 atoms.
CELLS = [6, 10, 14, 22, 29, 46, 63, 136]
EXTRAPOLATE_TO = 4_000_000


def summarize(records: list[dict], *, settings: dict, fit_from: int, machine: dict | None = None) -> dict:
    """The result: records, exponent fits and the labelled extrapolation to :data:`EXTRAPOLATE_TO` atoms.

    The extrapolation scales the largest measured wall time by (N / N_max)^max(p, 1):
    never better than linear, whatever the fit (start-up costs make the small
    runs look sublinear).
    """
    big = [r for r in records if r["n_atoms"] >= fit_from]
    p_wall = fit_exponent([r["n_atoms"] for r in big], [r["wall_s"] for r in big])
    p_busy = fit_exponent([r["n_atoms"] for r in records], [r["busy_s"] for r in records])
    extrapolation = None
    if p_wall is not None:
        last = max(big, key=lambda r: r["n_atoms"])
        p = max(p_wall, 1.0)
        extrapolation = {"n_atoms": EXTRAPOLATE_TO, "measured": False,
                         "wall_s": last["wall_s"] * (EXTRAPOLATE_TO / last["n_atoms"]) ** p,
                         "how": f"largest measured wall time x (N / {last['n_atoms']:,})^{p:.3f} "
                                f"(the larger of the fitted {p_wall:.3f} and 1)"}
    return {
        "benchmark": "weak_scaling",
        "machine": machine or machine_info(),
        "settings": settings,
        "records": records,
        "fit": {"wall_exponent": p_wall, "wall_fit_min_atoms": fit_from, "busy_exponent": p_busy},
        "extrapolation": extrapolation,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=CELLS, help=f"FCC cells per edge (default {CELLS})")
    ap.add_argument("--spacing", type=float, default=0.8, help="grid spacing, Å (default 0.8)")
    ap.add_argument("--mc-samples", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--fit-from", type=int, default=10_000, help="fit wall time over sizes of at least this many atoms")
    ap.add_argument("--smoke", action="store_true", help="two tiny cells, 1 worker (for the test suite)")
    ap.add_argument("--out", default="benchmarks/results/weak_scaling.json")
    ap.add_argument("--dft", default="benchmarks/results/ml_vs_dft.json", help="DFT timings to draw, if present")
    ap.add_argument("--from-json", metavar="FILE", help="no runs: refit and redraw the records of an earlier result")
    args = ap.parse_args(argv)
    if args.from_json:
        old = json.loads(Path(args.from_json).read_text())
        return _finish(summarize(old["records"], settings=old["settings"], fit_from=old["fit"]["wall_fit_min_atoms"],
                                 machine=old["machine"]), args)
    if args.smoke:
        args.cells, args.spacing, args.mc_samples, args.workers, args.block, args.fit_from = [1, 2], 0.6, 2, 1, 8, 0
    workdir = Path(tempfile.mkdtemp(prefix="bigdens-weak-"))
    records = []
    try:
        for n in args.cells:
            atoms = al_bulk(n)
            cfg = PredictConfig(out=workdir / "al.zarr", spacing=args.spacing, mc_samples=args.mc_samples,
                                block=args.block, workers=args.workers, threads_per_worker=1, overwrite=True,
                                progress=False, device="cpu", allow_out_of_domain=True)
            reset_peak_rss()
            rec = run_record(engine.run(atoms, cfg), workers=args.workers)
            rec["store_bytes"] = sum(f.stat().st_size for f in cfg.out.rglob("*") if f.is_file())
            shutil.rmtree(cfg.out, ignore_errors=True)
            records.append(rec)
            settings = _settings(args)
            write_result(args.out + ".partial", {"settings": settings, "records": records})  # survives a stop
            print(f"Al {rec['n_atoms']:>9,} atoms  grid {rec['grid']}: {rec['wall_s']:8.1f} s wall "
                  f"({rec['busy_s']:8.1f} s busy), {rec['points_per_s']:>9,.0f} points/s, RSS "
                  f"{rec['peak_rss_mb_per_worker']} MB, {rec['n_electrons_predicted']:,.1f} of "
                  f"{rec['n_electrons_expected']:,.0f} e", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = _finish(summarize(records, settings=_settings(args), fit_from=args.fit_from), args)
    Path(args.out + ".partial").unlink(missing_ok=True)
    return result


def _settings(args) -> dict:
    return {"system": "rattled FCC Al (0.05 Å rms), a = 4.05 Å", "spacing_A": args.spacing,
            "mc_samples": args.mc_samples, "workers": args.workers, "threads_per_worker": 1, "block": args.block,
            "model": "shipped (bigdens/models/al.safetensors)", "smoke": args.smoke}


def _finish(result: dict, args) -> dict:
    """Print the fit, write the JSON and draw the figure (with the DFT points when ``args.dft`` exists)."""
    fit, ex = result["fit"], result["extrapolation"]
    if fit["wall_exponent"] is not None:
        print(f"time ∝ N^p: wall p = {fit['wall_exponent']:.3f} (N ≥ {fit['wall_fit_min_atoms']:,}), busy p = "
              f"{fit['busy_exponent']:.3f}; {ex['n_atoms']:,} atoms extrapolated (not measured): {ex['wall_s']:.0f} s",
              flush=True)
    write_result(args.out, result)
    dft = json.loads(Path(args.dft).read_text()) if args.dft and Path(args.dft).is_file() else None
    from benchmarks import plots

    plots.weak_scaling(result, dft, Path(args.out).with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
