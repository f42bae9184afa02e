"""The label noise floor: a snapshot's DFT density again on a denser k-mesh, and how far the label moves.

A model cannot be judged below the error of its labels.  This recomputes one
stored snapshot with exactly the settings of its protocol
(:class:`bigdens.datagen.DFTSettings`, through :func:`bigdens.datagen.dft_density`)
except the Monkhorst-Pack mesh, on the same real-space grid (checked), and
compares the two densities with the metrics the models are scored with
(:mod:`bigdens.metrics`): NMAE = Σ|ρ_protocol − ρ_dense| / Σ|ρ_dense| and
NRMSE, both in %, and the largest point difference (e/Å³).  The JSON also
holds both electron integrals, both total energies, the irreducible k-point
counts (the thermalized cells have no point symmetry: time reversal only) and
the core-seconds of both runs (GPAW serial, one thread).  The dense-k density
is kept as a snapshot ``.npz`` beside the JSON when it is under 3 MB.

A run whose JSON exists is skipped (the runs are resumable one snapshot and
mesh at a time).  ``--estimate`` only counts the irreducible k-points and
scales the stored run's core-seconds by their ratio (seconds, no DFT).

Run:  python -m benchmarks.label_noise SNAPSHOT.npz --kpts 4 4 4 [--out benchmarks/results/label_noise/NAME.json]
      python -m benchmarks.label_noise SNAPSHOT.npz --kpts 3 3 3 --estimate
"""

from __future__ import annotations

import os

# One core: GPAW runs serially and its numpy/scipy BLAS with one thread.  Set
# before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from bigdens import __version__, data, datagen, metrics  # noqa: E402
from bigdens.errors import InputError, RunError  # noqa: E402

RESULTS = Path("benchmarks/results/label_noise")
#: Keep the dense-k density beside the JSON only below this size.
MAX_DENSITY_BYTES = 3_000_000


def load(path: str | Path) -> data.Snapshot:
    """The stored snapshot, with its split from the data set's manifest when there is one."""
    path = Path(path)
    snap = data.read_snapshot(path)
    manifest = path.parent / data.MANIFEST
    if manifest.is_file():
        entry = {e["file"]: e for e in data.read_manifest(path.parent)["snapshots"]}.get(path.name)
        if entry is not None:
            snap = snap.with_split(entry["split"])
    return snap


def protocol_settings(snap: data.Snapshot) -> datagen.DFTSettings:
    """The DFT settings the snapshot was made with (protocol ``bigdens-dft-v1`` only), checked against it.

    Raises
    ------
    InputError
        If the snapshot is of another protocol, or its recorded k-mesh or grid
        is not the protocol's for its cell.
    """
    where = f"snapshot {snap.name!r}"
    if snap.protocol != datagen.PROTOCOL:
        raise InputError(f"{where} is of protocol {snap.protocol!r}; this benchmark recomputes {datagen.PROTOCOL!r} "
                         "snapshots only")
    settings = datagen.DFTSettings()
    recorded = snap.provenance.get("settings", {})
    kpts = tuple(recorded.get("kpts", {}).get("size", ()))
    if kpts != settings.kpts_for(snap.cell):
        raise InputError(f"{where} records k-mesh {kpts}, not the protocol's {settings.kpts_for(snap.cell)}")
    if tuple(snap.density.shape) != settings.gpts_for(snap.cell):
        raise InputError(f"{where} has a {snap.density.shape} grid, not the protocol's {settings.gpts_for(snap.cell)}")
    return settings


def irreducible_kpoints(snap: data.Snapshot, kpts) -> int:
    """Number of irreducible k-points GPAW uses for ``kpts`` on the snapshot's structure (its default symmetry)."""
    from gpaw.new.brillouin import MonkhorstPackKPoints
    from gpaw.new.symmetry import create_symmetries_object

    return len(MonkhorstPackKPoints(tuple(kpts)).reduce(create_symmetries_object(snap.atoms())))


def estimate(snap: data.Snapshot, kpts) -> dict:
    """Core-seconds of the dense-k run, scaled from the stored run by the irreducible k-point ratio."""
    settings = protocol_settings(snap)
    n_ref = irreducible_kpoints(snap, settings.kpts_for(snap.cell))
    n_new = irreducible_kpoints(snap, kpts)
    core = snap.dft_core_seconds
    return {
        "protocol_kpts": list(settings.kpts_for(snap.cell)), "kpts": list(kpts),
        "irreducible_kpoints": {"protocol": n_ref, "dense": n_new}, "cost_factor": n_new / n_ref,
        "protocol_core_s": core, "estimated_core_s": None if core is None else core * n_new / n_ref,
    }


def compare(label: np.ndarray, dense: np.ndarray, *, dv: float) -> dict:
    """The stored label against the dense-k density (the reference): NMAE, NRMSE, max |Δ|, integrals."""
    label = np.asarray(label, dtype=np.float64)
    dense = np.asarray(dense, dtype=np.float64)
    return {
        "nmae_pct": metrics.nmae(label, dense),
        "nrmse_pct": metrics.nrmse(label, dense),
        "max_abs_diff_e_per_A3": float(np.abs(label - dense).max()),
        "electron_integral": {"protocol": float(label.sum() * dv), "dense": float(dense.sum() * dv)},
    }


def _kname(kpts) -> str:
    return "k" + "".join(str(int(k)) for k in kpts)


def run(path: str | Path, kpts, *, out: str | Path | None = None, log: str | Path | None = None) -> dict:
    """Recompute the snapshot at ``path`` on the k-mesh ``kpts``; write the comparison (skipped if ``out`` exists)."""
    path = Path(path)
    kpts = tuple(int(k) for k in kpts)
    if len(kpts) != 3 or min(kpts) < 1:
        raise InputError(f"--kpts must be three positive integers, got {list(kpts)}")
    snap = load(path)
    out = Path(out) if out is not None else RESULTS / f"{snap.name}-{_kname(kpts)}.json"
    if out.is_file():
        print(f"{out} exists: skipped", flush=True)
        return json.loads(out.read_text())
    settings = protocol_settings(snap)
    dense_settings = dataclasses.replace(settings, kpts=kpts)
    est = estimate(snap, kpts)
    print(f"{snap.name} ({snap.split}, {len(snap.numbers)} atoms, grid {snap.density.shape}): k {est['protocol_kpts']} "
          f"-> {list(kpts)}, irreducible k {est['irreducible_kpoints']['protocol']} -> "
          f"{est['irreducible_kpoints']['dense']}, ~{(est['estimated_core_s'] or 0):.0f} core-s ...", flush=True)
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    density, info = datagen.dft_density(snap.atoms(), settings=dense_settings, txt=log)
    if density.shape != snap.density.shape:  # dft_density checks its own gpts; this is the label's grid
        raise RunError(f"the dense-k density has shape {density.shape}, the snapshot {snap.density.shape}")
    dense = density.astype(np.float32)  # as a data set stores it
    dv = abs(np.linalg.det(snap.cell)) / snap.density.size
    cmp = compare(snap.density, dense, dv=dv)
    ref_timing = snap.provenance.get("timing", {})
    result = {
        "benchmark": "label_noise",
        "snapshot": snap.name, "file": str(path), "split": snap.split, "temperature_K": snap.temperature,
        "n_atoms": int(len(snap.numbers)), "grid": list(snap.density.shape), "protocol": datagen.PROTOCOL,
        "protocol_kpts": est["protocol_kpts"], "kpts": list(kpts),
        "irreducible_kpoints": est["irreducible_kpoints"],
        **cmp,
        "energy_eV": {"protocol": snap.provenance.get("energy_eV"), "dense": info["energy_eV"]},
        "energy_diff_meV_per_atom": (None if snap.provenance.get("energy_eV") is None else
                                     1000 * (info["energy_eV"] - snap.provenance["energy_eV"]) / len(snap.numbers)),
        "fermi_level_eV": {"protocol": snap.provenance.get("fermi_level_eV"), "dense": info["fermi_level_eV"]},
        "core_s": {"protocol": ref_timing.get("core_seconds"), "dense": info["timing"]["core_seconds"]},
        "wall_s": {"protocol": ref_timing.get("wall_seconds"), "dense": info["timing"]["wall_seconds"]},
        "estimated_core_s": est["estimated_core_s"],
        "gpaw_version": {"protocol": snap.provenance.get("code_version"), "dense": info["code_version"]},
        "dense_settings": info["settings"], "dense_protocol": info["protocol"],
        "omp_num_threads": info["timing"]["omp_num_threads"], "bigdens": __version__,
        "comparison": "NMAE/NRMSE of the stored (protocol) label against the dense-k density, both float32 as stored",
        "dense_density_file": None,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    npz = out.with_suffix(".npz")
    snap_dense = data.Snapshot(
        name=f"{snap.name}-{_kname(kpts)}", cell=snap.cell, positions=snap.positions, numbers=snap.numbers,
        density=dense, split=snap.split,
        provenance=dict(info, thermalization=snap.provenance.get("thermalization"), snapshot=snap.name,
                        variant=snap.provenance.get("variant"), recomputed_from=str(path), bigdens_version=__version__),
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        trial = data.write_snapshot(Path(tmp) / npz.name, snap_dense)
        if trial.stat().st_size < MAX_DENSITY_BYTES:
            trial.replace(npz)
            result["dense_density_file"] = npz.name
    print(f"    NMAE {cmp['nmae_pct']:.4f} %, NRMSE {cmp['nrmse_pct']:.4f} %, max |Δρ| "
          f"{cmp['max_abs_diff_e_per_A3']:.2e} e/Å³; {info['timing']['core_seconds']:.0f} core-s "
          f"(protocol {ref_timing.get('core_seconds')}); -> {out}", flush=True)
    return write_result(out, result)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("snapshot", help="a protocol bigdens-dft-v1 snapshot .npz (e.g. datasets/al32/al32-T0300-01.npz)")
    ap.add_argument("--kpts", type=int, nargs=3, required=True, metavar=("K1", "K2", "K3"),
                    help="the dense Monkhorst-Pack mesh")
    ap.add_argument("--out", help=f"result JSON (default {RESULTS}/NAME-kK1K2K3.json); skipped if it exists")
    ap.add_argument("--log", help="GPAW text log (default none)")
    ap.add_argument("--estimate", action="store_true",
                    help="print the irreducible k-points and the estimated core-seconds only (no DFT)")
    args = ap.parse_args(argv)
    if args.estimate:
        snap = load(args.snapshot)
        est = estimate(snap, args.kpts)
        print(json.dumps(dict(snapshot=snap.name, split=snap.split, **est), indent=1))
        return est
    return run(args.snapshot, args.kpts, out=args.out, log=args.log)


if __name__ == "__main__":
    main()
