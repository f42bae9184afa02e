"""pw.x SCF iterations from its own start against a start from bigdens' prediction (``startingpot='file'``).

For each structure, three pw.x runs (Quantum ESPRESSO, Debian's 6.7, one process, OMP_NUM_THREADS=1)
to the same ``conv_thr``:

(a) ``startingpot='atomic'`` (pw.x's default: superposition of atomic densities);
(b) ``startingpot='file'`` from ``bigdens predict`` on the GPAW protocol's grid, written by
    ``bigdens export --format qe --ecutrho`` (the inference and the export are timed and counted);
(c) ``startingpot='file'`` from (a)'s own converged density (the ceiling).

Physics as close to protocol bigdens-dft-v1 as QE's shipped pseudopotentials allow: LDA (PZ),
Fermi-Dirac 0.1 eV, the protocol's k-point mesh; norm-conserving von Barth-Car pseudopotentials
(``Al.pz-vbc.UPF``, ``Si.pz-vbc.UPF``: 3 and 4 valence electrons, as HGH), ``ecutwfc`` 20 Ry
(Al) / 16 Ry (Si), ``ecutrho`` 4 x ``ecutwfc``.  bigdens' models predict the HGH pseudo-density,
which differs from the vbc pseudo-density near the nuclei: (b) starts from a density made for other
pseudopotentials.  Energies in Ry per cell; density NMAE (DESIGN §5) between final densities from
the ``charge-density.dat`` files.  Debian's QE has no LDA pseudopotential for Ge, so Si-Ge cells
other than pure Si are not run.

    python -m benchmarks.qe_start --structures datasets/al32-vacancy/al32-vac1-T0300-00.npz ... \\
        --out benchmarks/results/qe_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from benchmarks.dft_start import _structure, nmae

PSEUDO = {13: ("Al", 26.98, "Al.pz-vbc.UPF", 20.0), 14: ("Si", 28.0855, "Si.pz-vbc.UPF", 16.0)}
RY_PER_EV = 1 / 13.605693122994


def _input(atoms, kpts, *, ecutwfc: float, outdir: str, startingpot: str, pseudo_dir: str,
           diago_thr_init: float | None = None) -> str:
    from ase.io.espresso import write_espresso_in
    import io

    z = int(atoms.numbers[0])
    sym, mass, upf, _ = PSEUDO[z]
    data = {"control": {"calculation": "scf", "prefix": "x", "outdir": outdir, "pseudo_dir": pseudo_dir},
            "system": {"ecutwfc": ecutwfc, "ecutrho": 4 * ecutwfc, "occupations": "smearing", "smearing": "fd",
                       "degauss": 0.1 * RY_PER_EV},
            "electrons": {"conv_thr": 1e-9 * len(atoms), "startingpot": startingpot}}
    if diago_thr_init is not None and startingpot == "file":
        data["electrons"]["diago_thr_init"] = diago_thr_init
    buf = io.StringIO()
    write_espresso_in(buf, atoms, input_data=data, pseudopotentials={sym: upf}, kpts=tuple(kpts))
    return buf.getvalue()


def _pwx(folder: Path, text: str) -> tuple[str, float]:
    (folder / "x.in").write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(["pw.x", "-in", "x.in"], cwd=folder, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0 or "convergence has been achieved" not in r.stdout:
        raise SystemExit(f"pw.x failed in {folder}:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    return r.stdout, wall


def _parse(out: str) -> dict:
    line = next(x for x in out.splitlines() if "convergence has been achieved" in x)
    energy = float(next(x for x in out.splitlines() if x.startswith("!")).split("=")[1].split()[0])
    accuracy = [float(x.split("<")[1].split()[0]) for x in out.splitlines() if "estimated scf accuracy" in x]
    return {"scf_iterations": int(line.split(" in ")[-1].split()[0]), "energy_Ry": energy,
            "scf_accuracy_Ry": accuracy,
            "starting_charge": next((x.split()[2].rstrip(",") for x in out.splitlines()
                                     if "starting charge" in x), None)}


def run_structure(path: str, *, pseudo_dir: str, model: str | None, diago_thr_init: float | None = None) -> dict:
    from bigdens.datagen.settings import protocol_settings
    from bigdens.io.qe import read_charge_density

    atoms = _structure(path)
    if set(atoms.numbers.tolist()) - {13} and set(atoms.numbers.tolist()) - {14}:
        raise SystemExit(f"{path}: only pure Al or pure Si cells (QE's shipped LDA pseudopotentials)")
    settings = protocol_settings("v1")
    kpts = settings.kpts_for(atoms.cell[:])
    gpts = settings.gpts_for(atoms.cell[:])
    ecutwfc = PSEUDO[int(atoms.numbers[0])][3]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        final = {}

        def run(name, startingpot, density_file=None, extra=None):
            folder = tmp / name
            (folder / "out" / "x.save").mkdir(parents=True)
            if density_file is not None:
                shutil.copy(density_file, folder / "out" / "x.save" / "charge-density.dat")
            out, wall = _pwx(folder, _input(atoms, kpts, ecutwfc=ecutwfc, outdir="./out", startingpot=startingpot,
                                            pseudo_dir=pseudo_dir, diago_thr_init=diago_thr_init))
            row = {"start": name, **_parse(out), "wall_seconds": round(wall, 2), **(extra or {})}
            final[name] = read_charge_density(folder / "out" / "x.save" / "charge-density.dat")["rho_g"][0]
            if name != "pwx-atomic":
                row["energy_minus_default_mRy"] = (row["energy_Ry"] - rows[0]["energy_Ry"]) * 1000
                row["final_density_g_nmae_percent"] = nmae(final[name], final["pwx-atomic"])
            rows.append(row)
            print(json.dumps(row), flush=True)
            return folder

        default = run("pwx-atomic", "atomic")
        structure = tmp / "structure.xyz"
        atoms.write(structure)
        store = tmp / "pred.zarr"
        cmd = [sys.executable, "-m", "bigdens", "predict", str(structure), "--grid", *map(str, gpts), "-o", str(store),
               "--workers", "0"] + (["--model", model] if model else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        predict = time.perf_counter() - t0
        written = tmp / "charge-density.dat"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bigdens", "export", str(store), "-o", str(written), "--ecutrho",
                        str(4 * ecutwfc)], check=True, capture_output=True)
        export = time.perf_counter() - t0
        run("bigdens", "file", written, {"predict_wall_seconds": round(predict, 2),
                                         "export_wall_seconds": round(export, 2)})
        rows[-1]["wall_with_inference_seconds"] = round(rows[-1]["wall_seconds"] + predict + export, 2)
        run("pwx-converged", "file", default / "out" / "x.save" / "charge-density.dat")
    return {"structure": path, "n_atoms": len(atoms), "formula": atoms.get_chemical_formula(),
            "kpts": list(kpts), "bigdens_grid": list(gpts), "ecutwfc_Ry": ecutwfc, "ecutrho_Ry": 4 * ecutwfc,
            "pseudopotential": PSEUDO[int(atoms.numbers[0])][2], "conv_thr_Ry": 1e-9 * len(atoms),
            "diago_thr_init_file_starts": diago_thr_init, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--structures", nargs="+", required=True)
    p.add_argument("--out", default="benchmarks/results/qe_start.json")
    p.add_argument("--pseudo-dir", default=os.environ.get("PSEUDO_DIR", "/usr/share/espresso/pseudo"))
    p.add_argument("--model", help="model file (default: the shipped model for the structure's species)")
    p.add_argument("--diago-thr-init", type=float, help="pw.x's diago_thr_init for the starts from a file (default: "
                                                        "pw.x's own, 1e-2 for an SCF)")
    args = p.parse_args(argv)
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "quantum-espresso"], capture_output=True,
                             text=True).stdout or "unknown"
    result = {"code": "pw.x (Quantum ESPRESSO)", "package_version": version, "processes": 1, "structures": []}
    for path in args.structures:
        result["structures"].append(run_structure(path, pseudo_dir=args.pseudo_dir, model=args.model,
                                                          diago_thr_init=args.diago_thr_init))
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
