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


def main(argv=None) -> int:
    from ase.build import bulk
    from ase.io import write

    import gpaw

    from bigdens.datagen.settings import DFTSettings
    from bigdens.dft.start import FIXED_DENSITY_STEPS, read_store_density, warm_start

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/dft_start.json")
    p.add_argument("--ecut", type=float, default=None, help="override the protocol's cutoff, eV (quick runs)")
    p.add_argument("--kpts", type=int, default=None, help="override the k-points per direction")
    p.add_argument("--gpts", type=int, default=None, help="override the grid points per direction")
    p.add_argument("--no-prediction", action="store_true", help="skip (d)")
    p.add_argument("--structure", help="another Al structure: a snapshot (.npz of a bigdens data set) or any file "
                                       "ASE reads; then only (a) and (d) on the DFT grid run")
    args = p.parse_args(argv)

    settings = DFTSettings()
    atoms0 = _structure(args.structure) if args.structure else bulk("Al", "fcc", a=4.05, cubic=True)
    cell = atoms0.cell[:]
    kpts = (args.kpts,) * 3 if args.kpts else settings.kpts_for(cell)
    gpts = (args.gpts,) * 3 if args.gpts else settings.gpts_for(cell)
    ecut = args.ecut or settings.ecut

    def calc():
        return gpaw.GPAW(mode=gpaw.PW(ecut), setups=settings.setups, xc=settings.xc,
                         occupations=gpaw.FermiDirac(settings.smearing), kpts=kpts, gpts=gpts, txt=None,
                         convergence={"density": settings.density_convergence})

    rows = []

    def run(name, density=None, nfix=0, reference=None):
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
            row["density_nmae_vs_default_percent"] = nmae(rho, reference[1])
        if report is not None:
            row.update(rescale_factor=report.rescale_factor, resampled=report.resampled,
                       source_shape=list(report.source_shape), negative_charge=report.negative_charge,
                       start_nmae_vs_default_percent=None if reference is None or report.resampled
                       else nmae(np.asarray(density), reference[1]))
        rows.append(row)
        print(json.dumps(row), flush=True)
        return energy, rho

    ref = run("gpaw-default")
    run("gpaw-default", nfix=FIXED_DENSITY_STEPS, reference=ref)
    if not args.structure:
        for nfix in (0, FIXED_DENSITY_STEPS):
            run("converged", ref[1], nfix, ref)
        perturbed = ref[1] * (1 + 0.01 * smooth_noise(ref[1].shape, seed=0))
        perturbed *= ref[1].sum() / perturbed.sum()
        for nfix in (0, FIXED_DENSITY_STEPS):
            run("converged+1%-smooth-noise", perturbed, nfix, ref)
    grids = [("dft-grid", ["--grid", *map(str, gpts)])]
    if not args.structure:
        grids.append(("0.2A-grid", ["--spacing", "0.2"]))
    if not args.no_prediction:
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp) / "structure.xyz", atoms0)
            for label, grid in grids:
                out = Path(tmp) / f"{label}.zarr"
                cmd = [sys.executable, "-m", "bigdens", "predict", str(Path(tmp) / "structure.xyz"), "--model",
                       str(ROOT / "bigdens/models/al.safetensors"), *grid, "-o", str(out), "--workers", "0"]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stdout + r.stderr)
                    raise SystemExit(r.returncode)
                _, rho = read_store_density(out)
                for nfix in (0, FIXED_DENSITY_STEPS):
                    run(f"bigdens-al-model ({label})", rho, nfix, ref)
    system = (f"{args.structure}: {len(atoms0)} atoms, {atoms0.get_chemical_formula()}" if args.structure
              else "Al fcc a=4.05 cubic, 4 atoms")
    result = {"system": system, "gpaw": gpaw.__version__,
              "settings": {"ecut_eV": ecut, "kpts": list(kpts), "gpts": list(gpts), "xc": settings.xc,
                           "setups": settings.setups, "smearing_eV": settings.smearing,
                           "density_convergence": settings.density_convergence},
              "processes": 1, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
