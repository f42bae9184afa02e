"""Strong scaling: one fixed ~10⁵-atom Al prediction on 1, 2, … workers and 1–4 SLURM jobs.

The same whole prediction (every block computed and written) runs on a
LocalCluster of 1 and 2 worker processes, then on the local single-node SLURM
(cluster_configs/local-slurm.yaml: one worker per job) with 1, 2, 3, 4 jobs.
Speed-up is wall time of 1 worker (of 1 job) over wall time of N; efficiency
is speed-up / N.  Wall time includes starting the cluster (and, for SLURM,
queueing and starting the jobs).  Every store must be identical to the first,
bit for bit (checked by checksum).

A machine with fewer cores than jobs is oversubscribed: for such runs the
benchmark sets the partition to ``OverSubscribe=FORCE:<jobs>`` with scontrol
(root on the local SLURM) and restores ``OverSubscribe=NO`` afterwards; the
JSON and the figure label them.  Writes JSON and benchmarks/results/strong_scaling.png.

Run:  python -m benchmarks.strong_scaling [--cells 29] [--workers 1 2] [--slurm-jobs 1 2 3 4] [--out FILE.json]
      (start the local SLURM first: cluster_configs/local-slurm/slurm.sh start)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import yaml

from benchmarks._common import al_bulk, machine_info, run_record, write_result
from bigdens import engine
from bigdens.config import PredictConfig

PROFILE = Path(__file__).resolve().parent.parent / "cluster_configs" / "local-slurm.yaml"


def store_digest(path: Path) -> str:
    """SHA-256 over the predicted fields of a store (bit-identity check)."""
    import xarray as xr

    h = hashlib.sha256()
    with xr.open_zarr(path) as ds:
        for name in sorted(v for v in ds.data_vars if v.startswith("density")):
            h.update(np.ascontiguousarray(ds[name].values).tobytes())
    return h.hexdigest()


def slurm_available() -> str | None:
    """None if the local SLURM answers, else why not."""
    if shutil.which("sinfo") is None:
        return "sinfo is not installed (cluster_configs/local-slurm/slurm.sh start installs and starts SLURM)"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 15 s"
    if r.returncode != 0 or not r.stdout.strip():
        return f"sinfo failed: {r.stderr.strip() or 'no nodes'}"
    return None


def set_oversubscribe(partition: str, value: str) -> None:
    subprocess.run(["scontrol", "update", f"PartitionName={partition}", f"OverSubscribe={value}"],
                   check=True, capture_output=True, text=True, timeout=30)


def slurm_profile(jobs: int, directory: Path) -> Path:
    """The local-slurm profile with ``jobs`` jobs, written to ``directory``."""
    raw = yaml.safe_load(PROFILE.read_text())
    raw["bigdens"]["jobs"] = jobs
    raw["jobqueue"]["log_directory"] = str(directory)  # the jobs' slurm-*.out, removed with it
    path = directory / f"local-slurm-{jobs}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=29, help="FCC cells per edge (default 29: 97,556 atoms)")
    ap.add_argument("--spacing", type=float, default=0.8, help="grid spacing, Å (default 0.8)")
    ap.add_argument("--mc-samples", type=int, default=20)
    ap.add_argument("--block", type=int, default=32, help="block edge (default 32: enough blocks for 4 workers)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="LocalCluster sizes (default 1 2)")
    ap.add_argument("--slurm-jobs", type=int, nargs="*", default=[1, 2, 3, 4],
                    help="SLURM job counts (default 1 2 3 4; none to skip SLURM)")
    ap.add_argument("--smoke", action="store_true", help="a tiny cell (for the test suite)")
    ap.add_argument("--out", default="benchmarks/results/strong_scaling.json")
    args = ap.parse_args(argv)
    if args.smoke:
        args.cells, args.spacing, args.mc_samples, args.block = 2, 0.6, 2, 8
    atoms = al_bulk(args.cells)
    cores = os.cpu_count() or 1
    why_no_slurm = slurm_available() if args.slurm_jobs else "not requested"
    runs = [("local", w) for w in args.workers]
    if why_no_slurm is None:
        runs += [("slurm", j) for j in args.slurm_jobs]
    else:
        print(f"SLURM part skipped: {why_no_slurm}", flush=True)
    partition = yaml.safe_load(PROFILE.read_text())["jobqueue"]["queue"]
    oversubscribe = why_no_slurm is None and max(args.slurm_jobs) > cores
    workdir = Path(tempfile.mkdtemp(prefix="bigdens-strong-"))
    records, digests = [], set()
    try:
        if oversubscribe:
            set_oversubscribe(partition, f"FORCE:{max(args.slurm_jobs)}")
        for kind, n in runs:
            common = dict(out=workdir / "al.zarr", spacing=args.spacing, mc_samples=args.mc_samples,
                          block=args.block, threads_per_worker=1, overwrite=True, progress=False, device="cpu",
                          allow_out_of_domain=True)
            if kind == "local":
                cfg = PredictConfig(workers=n, **common)
            else:
                cfg = PredictConfig(cluster=f"slurm:{slurm_profile(n, workdir)}", **common)
            rec = dict(run_record(engine.run(atoms, cfg), workers=n), kind=kind, workers=n,
                       oversubscribed=n > cores)
            digests.add(store_digest(cfg.out))
            shutil.rmtree(cfg.out, ignore_errors=True)
            records.append(rec)
            print(f"{kind:5s} {n} worker(s): {rec['wall_s']:7.1f} s wall, {rec['busy_s']:7.1f} s busy"
                  f"{' (oversubscribed)' if rec['oversubscribed'] else ''}"
                  f"{'; jobs ' + str(rec['slurm_jobs']) if rec['slurm_jobs'] else ''}", flush=True)
    finally:
        if oversubscribe:
            set_oversubscribe(partition, "NO")
        shutil.rmtree(workdir, ignore_errors=True)
    if len(digests) > 1:
        raise SystemExit(f"the runs wrote {len(digests)} different stores; they must be bit-identical")
    for kind in ("local", "slurm"):
        base = next((r for r in records if r["kind"] == kind and r["workers"] == 1), None)
        for r in records:
            if r["kind"] == kind and base is not None:
                r["speedup"] = base["wall_s"] / r["wall_s"]
                r["efficiency"] = r["speedup"] / r["workers"]
    result = {
        "benchmark": "strong_scaling",
        "machine": machine_info(),
        "settings": {"n_atoms": len(atoms), "grid_points": records[0]["grid_points"], "spacing_A": args.spacing,
                     "mc_samples": args.mc_samples, "block": args.block, "threads_per_worker": 1,
                     "slurm": why_no_slurm or f"local single-node SLURM, profile {PROFILE.name}, 1 worker per job",
                     "oversubscribed_partition": f"OverSubscribe=FORCE:{max(args.slurm_jobs)}" if oversubscribe else None,
                     "stores_bit_identical": len(digests) == 1, "smoke": args.smoke},
        "records": records,
    }
    write_result(args.out, result)
    from benchmarks import plots

    plots.strong_scaling(result, Path(args.out).with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
