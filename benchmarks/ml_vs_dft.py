"""The cost of a density from DFT and from ``bigdens predict``, on the same cells and grids, in one run.

For each planned snapshot of a shipped data set (thermalized Al cells of 32
and 108 atoms by default), this runs

1. the project's GPAW pipeline (protocol bigdens-dft-v1, one serial process,
   :func:`bigdens.datagen.compute_snapshot`), and
2. ``bigdens predict`` with the shipped model on exactly the DFT grid, in this
   process on one core (``workers=0``): once cold (model load and numba
   compilation included) and once warm,

then records wall and core seconds of both, the NMAE / electron-count error /
coverage of the ML density against the DFT density just computed, and fits the
exponent p of cost ∝ N^p for each.  Where the data set already holds the
snapshot, the fresh DFT density is compared with the stored one (it must
reproduce).  ``--add-to-dataset`` adds a snapshot the data set lacks, exactly as
``bigdens datagen`` would have (same plan entry, protocol and provenance).

Run:  python -m benchmarks.ml_vs_dft [--snapshot DIR:NAME ...] [--add-to-dataset] [--out FILE.json]
"""

from __future__ import annotations

import os

# One core for everything: GPAW runs serially and predict with one thread.  Set
# before numpy is imported, so that its BLAS starts with one thread too.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks._common import fit_exponent, machine_info, write_result  # noqa: E402
from bigdens import data, datagen, engine, metrics  # noqa: E402
from bigdens.config import PredictConfig  # noqa: E402
from bigdens.errors import InputError  # noqa: E402

DEFAULT_SNAPSHOTS = ["datasets/al32:al32-T0300-01", "datasets/al108:al108-T0600-01"]
#: The smoke run: a 4-atom cell on a coarse DFT setting (not the protocol).
SMOKE_SNAPSHOT = f"{Path(__file__).resolve().parent.parent / 'tests' / 'data' / 'al4'}:al4-T0300-00"
SMOKE_DFT = datagen.DFTSettings(kpts=(2, 2, 2), gpts=(16, 16, 16))


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def planned(spec: str) -> tuple[Path, datagen.PlannedSnapshot]:
    """``DIR:NAME`` -> the data-set folder and its planned snapshot NAME."""
    directory, _, name = spec.rpartition(":")
    if not directory or not name:
        raise InputError(f"--snapshot {spec!r}: give DIR:NAME, e.g. datasets/al108:al108-T0600-01")
    plan = {p.name: p for p in datagen.read_plan(directory)}
    if name not in plan:
        raise InputError(f"{directory!r} plans no snapshot {name!r}; it plans {', '.join(sorted(plan))}")
    return Path(directory), plan[name]


def predict_timed(snap: data.Snapshot, *, model: Path | None, samples: int, workdir: Path) -> tuple[dict, dict]:
    """``bigdens predict`` on the snapshot's grid in this process; timing and the predicted fields."""
    cfg = PredictConfig(out=workdir / f"{snap.name}.zarr", model=model, grid=snap.density.shape,
                        mc_samples=samples, workers=0, threads_per_worker=1, overwrite=True, progress=False,
                        device="cpu")
    wall0, cpu0 = time.perf_counter(), _cpu_s()
    summary = engine.run(snap.atoms(), cfg)
    timing = {"wall_s": time.perf_counter() - wall0, "core_s": _cpu_s() - cpu0, "stage_s": summary.stage_s}
    import xarray as xr

    with xr.open_zarr(cfg.out) as ds:
        fields = {k: ds[k].values for k in ("density", "density_std_epistemic", "density_std_aleatoric")}
    shutil.rmtree(cfg.out, ignore_errors=True)
    return timing, fields


def measure(directory: Path, p: datagen.PlannedSnapshot, *, dft: datagen.DFTSettings, model: Path | None, samples: int,
            workdir: Path, add: bool) -> dict:
    """One snapshot: DFT, then ML cold and warm; a JSON-ready record."""
    print(f"{p.name}: {len(p.numbers)} atoms, DFT grid {dft.gpts_for(p.cell)}, k {dft.kpts_for(p.cell)} ...",
          flush=True)
    snap = datagen.compute_snapshot(p, dft=dft)
    t = snap.provenance["timing"]
    manifest = data.read_manifest(directory) if (directory / data.MANIFEST).is_file() else None
    stored = {e["name"]: e for e in manifest["snapshots"]} if manifest else {}
    reproduce = None
    if p.name in stored and dft == datagen.DFTSettings():
        old = data.read_snapshot(directory / stored[p.name]["file"])
        reproduce = float(np.abs(old.density - snap.density).max())
    elif add and dft == datagen.DFTSettings():
        data.add_snapshot(directory, snap, manifest=manifest or data.new_manifest(protocol=dft.protocol))
        print(f"    added {p.name} to {str(directory)!r}", flush=True)
    cold, _ = predict_timed(snap, model=model, samples=samples, workdir=workdir)
    warm, fields = predict_timed(snap, model=model, samples=samples, workdir=workdir)
    sigma = np.hypot(fields["density_std_epistemic"], fields["density_std_aleatoric"])
    dv = abs(np.linalg.det(snap.cell)) / snap.density.size
    acc = metrics.summary(fields["density"], snap.density, sigma, dv=dv, n_electrons=snap.n_electrons_expected)
    rec = {
        "snapshot": p.name, "dataset": str(directory), "split": p.split, "temperature_K": p.temperature,
        "n_atoms": int(len(p.numbers)), "grid": list(snap.density.shape), "grid_points": int(snap.density.size),
        "dft": {"wall_s": t["wall_seconds"], "core_s": t["core_seconds"], "processes": t["processes"],
                "kpts": snap.provenance["settings"]["kpts"]["size"], "energy_eV": snap.provenance["energy_eV"],
                "electron_integral": snap.provenance["electron_integral"],
                "max_abs_diff_vs_stored_e_per_A3": reproduce},
        "ml_cold": cold, "ml_warm": warm,
        "speedup_core_s_warm": t["core_seconds"] / warm["core_s"],
        "accuracy": acc,
    }
    print(f"    DFT {t['wall_seconds']:.0f} s wall / {t['core_seconds']:.0f} core-s; ML {warm['wall_s']:.2f} s wall / "
          f"{warm['core_s']:.2f} core-s warm ({cold['wall_s']:.1f} s cold); {rec['speedup_core_s_warm']:,.0f}x; "
          f"NMAE {acc['nmae_pct']:.3f} %", flush=True)
    return rec


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshot", action="append", metavar="DIR:NAME",
                    help=f"planned snapshot to run (repeatable; default {' '.join(DEFAULT_SNAPSHOTS)})")
    ap.add_argument("--model", help="model file (default: the shipped model for the species)")
    ap.add_argument("--mc-samples", type=int, default=20)
    ap.add_argument("--add-to-dataset", action="store_true",
                    help="add each computed snapshot its data set lacks (protocol settings only)")
    ap.add_argument("--smoke", action="store_true", help="a 4-atom cell on a coarse DFT setting (for the tests)")
    ap.add_argument("--out", default="benchmarks/results/ml_vs_dft.json")
    args = ap.parse_args(argv)
    specs = [SMOKE_SNAPSHOT] if args.smoke else (args.snapshot or DEFAULT_SNAPSHOTS)
    dft = SMOKE_DFT if args.smoke else datagen.DFTSettings()
    work = [planned(s) for s in specs]  # every argument checked before hours of DFT
    workdir = Path(tempfile.mkdtemp(prefix="bigdens-mlvsdft-"))
    try:
        records = [measure(d, p, dft=dft, model=args.model and Path(args.model), samples=args.mc_samples, workdir=workdir,
                           add=args.add_to_dataset) for d, p in work]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    n = [r["n_atoms"] for r in records]
    result = {
        "benchmark": "ml_vs_dft",
        "machine": machine_info(),
        "settings": {"protocol": dft.protocol, "model": Path(args.model).name if args.model else "shipped", "mc_samples": args.mc_samples,
                     "dft_processes": 1, "ml_workers": 0, "threads": 1, "smoke": args.smoke,
                     "note": "serial GPAW and single-thread predict on the same machine, one after the other"},
        "records": records,
        "fit": {"dft_exponent_core_s": fit_exponent(n, [r["dft"]["core_s"] for r in records]),
                "ml_exponent_core_s": fit_exponent(n, [r["ml_warm"]["core_s"] for r in records])},
    }
    fit = result["fit"]
    if fit["dft_exponent_core_s"] is not None:
        print(f"cost ∝ N^p: DFT p = {fit['dft_exponent_core_s']:.2f}, ML p = {fit['ml_exponent_core_s']:.2f}")
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
