"""The label noise floor: a snapshot's DFT density again with one numerical setting tightened, and how far the label moves.

A model cannot be judged below the error of its labels.  This recomputes one
stored snapshot with exactly the settings of its protocol
(:class:`bigdens.datagen.DFTSettings`, through :func:`bigdens.datagen.dft_density`)
except one (or more) of: the Monkhorst-Pack mesh (``--kpts``), the plane-wave
cutoff (``--ecut``), the real-space grid (``--grid-factor F``: F times as many
points per direction; the label's points are every F-th of them) and the SCF
density tolerance (``--density-convergence``), and compares the two densities
on the label's grid points with the metrics the models are scored with
(:mod:`bigdens.metrics`): NMAE = Σ|ρ_protocol − ρ_dense| / Σ|ρ_dense| and
NRMSE, both in %, and the largest point difference (e/Å³).  The JSON also
holds both electron integrals, both total energies, the irreducible k-point
counts (the thermalized cells have no point symmetry: time reversal only) and
the core-seconds of both runs (GPAW serial, one thread).  The dense-k density
is kept as a snapshot ``.npz`` beside the JSON when it is under 3 MB.

A run whose JSON exists is skipped (the runs are resumable one snapshot and
mesh at a time).  ``--estimate`` only counts the irreducible k-points and
scales the stored run's core-seconds by their ratio (seconds, no DFT).

The convergence table (``--table``) reads every result of a snapshot and, per
parameter, gives each value's NMAE against the most converged value run.

Run:  python -m benchmarks.label_noise SNAPSHOT.npz --kpts 4 4 4 [--out benchmarks/results/label_noise/NAME.json]
      python -m benchmarks.label_noise SNAPSHOT.npz --ecut 800 | --grid-factor 2 | --density-convergence 1e-7
      python -m benchmarks.label_noise SNAPSHOT.npz --kpts 3 3 3 --estimate
      python -m benchmarks.label_noise --table [-o benchmarks/results/label_convergence.json]
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


def variant_name(kpts, *, ecut: float | None = None, grid_factor: int = 1,
                 density_convergence: float | None = None) -> str:
    """The result's name suffix: ``k444``, ``k222-ecut800``, ``k222-grid2``, ``k222-tol1e-07``."""
    parts = [_kname(kpts)]
    if ecut is not None:
        parts.append(f"ecut{ecut:g}")
    if grid_factor != 1:
        parts.append(f"grid{grid_factor}")
    if density_convergence is not None:
        parts.append(f"tol{density_convergence:.0e}")
    return "-".join(parts)


def run(path: str | Path, kpts=None, *, ecut: float | None = None, grid_factor: int = 1,
        density_convergence: float | None = None, out: str | Path | None = None,
        log: str | Path | None = None) -> dict:
    """Recompute the snapshot at ``path`` with the changed settings; write the comparison (skipped if ``out`` exists).

    ``kpts`` None keeps the protocol's mesh; ``grid_factor`` F runs GPAW on F times as many
    points per direction and compares on every F-th point (the label's grid).
    """
    path = Path(path)
    snap = load(path)
    settings = protocol_settings(snap)
    kpts = settings.kpts_for(snap.cell) if kpts is None else tuple(int(k) for k in kpts)
    if len(kpts) != 3 or min(kpts) < 1:
        raise InputError(f"--kpts must be three positive integers, got {list(kpts)}")
    if not (isinstance(grid_factor, int) and grid_factor >= 1):
        raise InputError(f"--grid-factor must be a positive integer, got {grid_factor!r}")
    name = variant_name(kpts, ecut=ecut, grid_factor=grid_factor, density_convergence=density_convergence)
    out = Path(out) if out is not None else RESULTS / f"{snap.name}-{name}.json"
    if out.is_file():
        print(f"{out} exists: skipped", flush=True)
        return json.loads(out.read_text())
    changes = {"kpts": kpts}
    if ecut is not None:
        changes["ecut"] = float(ecut)
    if density_convergence is not None:
        changes["density_convergence"] = float(density_convergence)
    if grid_factor != 1:
        changes["gpts"] = tuple(grid_factor * n for n in snap.density.shape)
    dense_settings = dataclasses.replace(settings, **changes)
    est = estimate(snap, kpts)
    print(f"{snap.name} ({snap.split}, {len(snap.numbers)} atoms, grid {snap.density.shape}): {name}, irreducible k "
          f"{est['irreducible_kpoints']['protocol']} -> {est['irreducible_kpoints']['dense']} ...", flush=True)
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    density, info = datagen.dft_density(snap.atoms(), settings=dense_settings, txt=log)
    density = density[::grid_factor, ::grid_factor, ::grid_factor]
    if density.shape != snap.density.shape:  # dft_density checks its own gpts; this is the label's grid
        raise RunError(f"the recomputed density has shape {density.shape}, the snapshot {snap.density.shape}")
    dense = np.ascontiguousarray(density).astype(np.float32)  # as a data set stores it
    dv = abs(np.linalg.det(snap.cell)) / snap.density.size
    cmp = compare(snap.density, dense, dv=dv)
    ref_timing = snap.provenance.get("timing", {})
    result = {
        "benchmark": "label_noise",
        "snapshot": snap.name, "file": str(path), "split": snap.split, "temperature_K": snap.temperature,
        "n_atoms": int(len(snap.numbers)), "grid": list(snap.density.shape), "protocol": datagen.PROTOCOL,
        "variant": name, "grid_factor": grid_factor,
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
        "comparison": ("NMAE/NRMSE of the stored (protocol) label against the recomputed density on the label's "
                       "grid points, both float32 as stored"),
        "dense_density_file": None,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    npz = out.with_suffix(".npz")
    snap_dense = data.Snapshot(
        name=f"{snap.name}-{name}", cell=snap.cell, positions=snap.positions, numbers=snap.numbers,
        density=dense, split=snap.split,
        provenance=dict(info, thermalization=snap.provenance.get("thermalization"), snapshot=snap.name,
                        variant=snap.provenance.get("variant"), recomputed_from=str(path), bigdens_version=__version__,
                        grid_factor=grid_factor),
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


#: The parameters of the table, how a result's variant names them, and which direction converges.
PARAMETERS = ("kpts", "ecut", "grid", "tol")


def _parameter_of(result: dict) -> tuple[str, float] | None:
    """(parameter, value) that ``result`` changes from the protocol, or None for the protocol itself / several."""
    variant = result.get("variant") or _kname(result["kpts"])
    parts = variant.split("-", 1)
    kchanged = result["kpts"] != result["protocol_kpts"]
    if len(parts) == 1:
        return ("kpts", float(result["kpts"][0])) if kchanged else None
    if kchanged:
        return None
    rest = parts[1]
    for key in ("ecut", "grid", "tol"):
        if rest.startswith(key) and "-" not in rest[len(key):].replace("e-", ""):
            return key, float(rest[len(key):])
    return None


def table(directory: str | Path = RESULTS) -> dict:
    """Per snapshot and parameter: each value's NMAE (%) and electron change against the most converged value run.

    The most converged value is the largest k-mesh, cutoff or grid factor, or the smallest
    tolerance; the protocol's own label is the starting value of every series.
    """
    directory = Path(directory)
    out: dict = {}
    for f in sorted(directory.glob("*.json")):
        r = json.loads(f.read_text())
        if r.get("benchmark") != "label_noise" or not r.get("dense_density_file"):
            continue
        which = _parameter_of(r)
        if which is None:
            continue
        snap = out.setdefault(r["snapshot"], {"file": r["file"], "n_atoms": r["n_atoms"],
                                              "protocol_kpts": r["protocol_kpts"], "series": {}})
        dens = data.read_snapshot(directory / r["dense_density_file"]).density
        snap["series"].setdefault(which[0], []).append(
            {"value": which[1], "density": dens, "core_s": r["core_s"]["dense"], "result": f.name})
    for name, snap in out.items():
        label = load(snap["file"])
        dv = abs(np.linalg.det(label.cell)) / label.density.size
        for key, runs in snap["series"].items():
            runs.sort(key=lambda e: e["value"], reverse=(key == "tol"))
            protocol_value = {"kpts": float(snap["protocol_kpts"][0]), "grid": 1.0,
                              "ecut": datagen.DFTSettings().ecut, "tol": datagen.DFTSettings().density_convergence}[key]
            ref = runs[-1]["density"].astype(np.float64)
            rows = [{"value": protocol_value, "core_s": label.dft_core_seconds, "result": "protocol label",
                     "density": label.density}] + runs
            n_ref = ref.sum() * dv
            for row in rows:
                dens = row.pop("density").astype(np.float64)
                row["nmae_pct_vs_most_converged"] = metrics.nmae(dens, ref)
                row["electrons_pct_vs_most_converged"] = 100 * (dens.sum() * dv - n_ref) / n_ref
            snap["series"][key] = {"reference": runs[-1]["value"], "rows": rows}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("snapshot", nargs="?",
                    help="a protocol bigdens-dft-v1 snapshot .npz (e.g. datasets/al32/al32-T0300-01.npz)")
    ap.add_argument("--kpts", type=int, nargs=3, metavar=("K1", "K2", "K3"),
                    help="the Monkhorst-Pack mesh (default: the protocol's)")
    ap.add_argument("--ecut", type=float, help="plane-wave cutoff, eV (default: the protocol's)")
    ap.add_argument("--grid-factor", type=int, default=1, help="F times as many grid points per direction")
    ap.add_argument("--density-convergence", type=float, help="GPAW's SCF density tolerance")
    ap.add_argument("--table", action="store_true",
                    help="write the convergence table of every result in benchmarks/results/label_noise")
    ap.add_argument("-o", "--out", help=f"result JSON (default {RESULTS}/NAME-VARIANT.json); skipped if it exists")
    ap.add_argument("--log", help="GPAW text log (default none)")
    ap.add_argument("--estimate", action="store_true",
                    help="print the irreducible k-points and the estimated core-seconds only (no DFT)")
    args = ap.parse_args(argv)
    if args.table:
        result = table()
        print(json.dumps(result, indent=1))
        return write_result(args.out or "benchmarks/results/label_convergence.json", result)
    if args.snapshot is None:
        ap.error("give a snapshot, or --table")
    if args.estimate:
        snap = load(args.snapshot)
        est = estimate(snap, args.kpts or protocol_settings(snap).kpts_for(snap.cell))
        print(json.dumps(dict(snapshot=snap.name, split=snap.split, **est), indent=1))
        return est
    return run(args.snapshot, args.kpts, ecut=args.ecut, grid_factor=args.grid_factor,
               density_convergence=args.density_convergence, out=args.out, log=args.log)


if __name__ == "__main__":
    main()
