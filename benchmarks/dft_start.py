"""GPAW SCF iterations from GPAW's own start against starts from a given density (bigdens.dft.start).

On FCC Al (``bulk('Al', 'fcc', a=4.05, cubic=True)``, 4 atoms) with the DFT settings of protocol
bigdens-dft-v1 (LDA, HGH, Fermi-Dirac 0.1 eV, 600 eV, 4×4×4 k-points, 24³ grid, density tolerance
1e-5), one GPAW process:

(a) GPAW's default start (superposition of atomic densities, LCAO orbitals), and the same with the
    fixed-density steps that the warm start uses (a control: do those steps alone help?);
(b) the converged density of (a) itself (the upper bound);
(c) that density times (1 + 1 % smooth noise), electrons renormalised;
(d) bigdens' shipped Al model's prediction (``bigdens predict`` on the DFT grid and on a 0.2 Å grid,
    Fourier-interpolated).

Each start from a density runs with 0 and with the default fixed-density steps.  Counts are GPAW's
own (``calc.get_number_of_iterations()``), plus the fixed-density eigensolver steps (reported
separately and summed: each costs about one SCF step).  Energies in eV per cell, density NMAE
(DESIGN §5) against (a) in %.

    nice -n 10 python -m benchmarks.dft_start --out benchmarks/results/dft_start.json

``--structure FILE`` runs (a) and (d) (on the DFT grid only) for another Al structure, e.g. a
32-atom thermal snapshot: ``--structure datasets/al32/al32-T0300-01.npz --out
benchmarks/results/dft_start_al32.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def smooth_noise(shape, *, seed: int, kmax2: int = 9) -> np.ndarray:
    """Noise of Fourier components |k|² ≤ kmax2 (grid units), scaled to max |noise| = 1."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fftn(rng.standard_normal(shape))
    k = [np.fft.fftfreq(n) * n for n in shape]
    k2 = k[0][:, None, None] ** 2 + k[1][None, :, None] ** 2 + k[2][None, None, :] ** 2
    spectrum[k2 > kmax2] = 0
    noise = np.fft.ifftn(spectrum).real
    return noise / np.abs(noise).max()


def _structure(path: str):
    """Atoms of a bigdens snapshot (.npz) or of any file ASE reads (its last frame)."""
    if path.endswith(".npz"):
        from bigdens import data

        return data.load(path)[0].atoms()
    from ase.io import read

    return read(path)


def nmae(a, b) -> float:
    return float(np.abs(a - b).sum() / np.abs(b).sum() * 100)


def _predict(atoms, grid_args, tmp: Path, label: str, model: str | None):
    """``bigdens predict`` of ``atoms`` (a subprocess, as a user runs it): density (e/Å³), wall seconds, flags %."""
    from ase.io import write

    from bigdens.dft.start import read_store_density

    structure = tmp / "structure.xyz"
    write(structure, atoms)
    out = tmp / f"{label}.zarr"
    cmd = [sys.executable, "-m", "bigdens", "predict", str(structure), *grid_args, "-o", str(out), "--workers", "0"]
    if model:
        cmd += ["--model", model]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        raise SystemExit(r.returncode)
    from bigdens.store import read_attrs

    attrs = read_attrs(out)
    _, rho = read_store_density(out)
    return rho, {"predict_wall_seconds": round(wall, 2),
                 "flagged_points_pct": 100 * attrs["domain"]["measured"]["flagged_share"]}


def _resume(path: str) -> dict:
    """Rows of an earlier, partial run of the same output, by their ``start`` name."""
    p = Path(path)
    if not p.exists():
        return {}
    return {row["start"]: row for row in json.loads(p.read_text()).get("rows", [])}


def main(argv=None) -> int:
    from ase.build import bulk

    import gpaw

    from bigdens.datagen.settings import protocol_settings
    from bigdens.dft.start import FIXED_DENSITY_STEPS, warm_start

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/dft_start.json")
    p.add_argument("--protocol", default="v1", help="DFT settings of this protocol (default v1: the shipped "
                                                    "models' labels)")
    p.add_argument("--ecut", type=float, default=None, help="override the protocol's cutoff, eV (quick runs)")
    p.add_argument("--kpts", type=int, default=None, help="override the k-points per direction")
    p.add_argument("--gpts", type=int, default=None, help="override the grid points per direction")
    p.add_argument("--no-prediction", action="store_true", help="skip (d)")
    p.add_argument("--model", help="model file (default: the shipped model for the structure's species)")
    p.add_argument("--structure", help="another structure: a snapshot (.npz of a bigdens data set) or any file "
                                       "ASE reads; then GPAW's start, the prediction's start (on the DFT grid, "
                                       "default fixed-density steps) and the Harris-Foulkes energy run")
    p.add_argument("--harris-samples", type=int, default=4,
                   help="with --structure: sample densities whose Harris-Foulkes energies give σ (0: no Harris-"
                        "Foulkes rows)")
    args = p.parse_args(argv)

    settings = protocol_settings(args.protocol)
    atoms0 = _structure(args.structure) if args.structure else bulk("Al", "fcc", a=4.05, cubic=True)
    cell = atoms0.cell[:]
    kpts = (args.kpts,) * 3 if args.kpts else settings.kpts_for(cell)
    gpts = (args.gpts,) * 3 if args.gpts else settings.gpts_for(cell)
    ecut = args.ecut or settings.ecut

    def calc():
        return gpaw.GPAW(mode=gpaw.PW(ecut), setups=settings.setups, xc=settings.xc,
                         occupations=gpaw.FermiDirac(settings.smearing), kpts=kpts, gpts=gpts, txt=None,
                         convergence={"density": settings.density_convergence})

    system = (f"{args.structure}: {len(atoms0)} atoms, {atoms0.get_chemical_formula()}" if args.structure
              else "Al fcc a=4.05 cubic, 4 atoms")
    result = {"system": system, "n_atoms": len(atoms0), "gpaw": gpaw.__version__, "protocol": settings.protocol,
              "settings": {"ecut_eV": ecut, "kpts": list(kpts), "gpts": list(gpts), "xc": settings.xc,
                           "setups": settings.setups, "smearing_eV": settings.smearing,
                           "density_convergence": settings.density_convergence},
              "processes": 1, "rows": []}
    done = _resume(args.out) if args.structure else {}

    def save(row):
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out + ".part")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.out)

    def run(name, density=None, nfix=0, reference=None, extra=None):
        if name in done:  # a partial earlier run of this output: keep its row
            save(done[name])
            return done[name]["energy_eV"], None
        atoms = atoms0.copy()
        c = calc()
        t0 = time.perf_counter()
        report = None
        if density is not None:
            report = warm_start(c, atoms, density, fixed_density_steps=nfix)
        elif nfix:  # the control: GPAW's own start, then the same fixed-density steps
            c.create_new_calculation(atoms)
            from bigdens.dft.start import _fixed_density_steps

            _fixed_density_steps(c.dft, nfix, c.log)
        atoms.calc = c
        energy = float(atoms.get_potential_energy())
        wall = time.perf_counter() - t0
        rho = c.get_pseudo_density()
        steps = report.details["fixed_density_steps"] if report else nfix
        row = {"start": name, "fixed_density_steps": steps, "scf_iterations": c.get_number_of_iterations(),
               "eigensolver_steps_total": steps + c.get_number_of_iterations(), "energy_eV": energy,
               "wall_seconds": round(wall, 2)}
        if reference is not None:
            row["energy_minus_default_meV"] = (energy - reference[0]) * 1000
            row["density_nmae_vs_default_percent"] = nmae(rho, reference[1]) if reference[1] is not None else None
        if report is not None:
            row.update(rescale_factor=report.rescale_factor, resampled=report.resampled,
                       source_shape=list(report.source_shape), negative_charge=report.negative_charge,
                       start_nmae_vs_default_percent=None if reference is None or report.resampled
                       or reference[1] is None else nmae(np.asarray(density), reference[1]))
        row.update(extra or {})
        save(row)
        return energy, rho

    if args.structure:
        _structure_rows(args, atoms0, gpts, calc, run, save, done)
    else:
        ref = run("gpaw-default")
        run("gpaw-default", nfix=FIXED_DENSITY_STEPS, reference=ref)
        for nfix in (0, FIXED_DENSITY_STEPS):
            run("converged", ref[1], nfix, ref)
        perturbed = ref[1] * (1 + 0.01 * smooth_noise(ref[1].shape, seed=0))
        perturbed *= ref[1].sum() / perturbed.sum()
        for nfix in (0, FIXED_DENSITY_STEPS):
            run("converged+1%-smooth-noise", perturbed, nfix, ref)
        if not args.no_prediction:
            with tempfile.TemporaryDirectory() as tmp:
                for label, grid in (("dft-grid", ["--grid", *map(str, gpts)]), ("0.2A-grid", ["--spacing", "0.2"])):
                    rho, _ = _predict(atoms0, grid, Path(tmp), label, args.model)
                    for nfix in (0, FIXED_DENSITY_STEPS):
                        run(f"bigdens-al-model ({label})", rho, nfix, ref)
    print(f"wrote {args.out}")
    return 0


def _structure_rows(args, atoms0, gpts, calc, run, save, done) -> None:
    """GPAW's start, the prediction's start and the Harris-Foulkes energy of one structure, resumable."""
    from bigdens import bnn
    from bigdens.dft.harris import density_samples, harris_foulkes_with_sigma
    from bigdens.dft.start import FIXED_DENSITY_STEPS
    from bigdens.models import shipped_model_for

    ref = run("gpaw-default")
    name = "bigdens (dft-grid)"
    with tempfile.TemporaryDirectory() as tmp:
        rho, info = (None, {}) if name in done else _predict(atoms0, ["--grid", *map(str, gpts)], Path(tmp),
                                                             "dft-grid", args.model)
    energy, _ = run(name, rho, FIXED_DENSITY_STEPS, ref, extra=info)
    if args.harris_samples < 2 or "harris-foulkes" in done:
        if "harris-foulkes" in done:
            save(done["harris-foulkes"])
        return
    model_path = args.model or shipped_model_for(atoms0.numbers)
    model = bnn.load(model_path)
    t0 = time.perf_counter()
    mean, fields = density_samples(model, atoms0, tuple(gpts), samples=20)
    infer = time.perf_counter() - t0
    hf = harris_foulkes_with_sigma(calc, atoms0, mean, fields, n_samples=args.harris_samples)
    n = len(atoms0)
    row = {"start": "harris-foulkes", "model": str(model_path), "inference_seconds": round(infer, 2),
           **hf.as_dict(n), "scf_energy_eV": ref[0],
           "error_meV_per_atom": (hf.mean.energy - ref[0]) / n * 1000,
           "sample_mean_minus_mean_meV_per_atom": (float(np.mean([s.energy for s in hf.samples])) - hf.mean.energy)
           / n * 1000}
    save(row)


if __name__ == "__main__":
    raise SystemExit(main())
