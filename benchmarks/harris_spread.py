"""Harris-Foulkes σ from sample densities widened to the total σ (``density_samples(spread="total")``).

The Harris-Foulkes rows of ``benchmarks.dft_start`` (4 epistemic samples) give σ the size of the error
on the vacancy cells but 10x too small on a bulk 900 K cell.  This reruns the 4 samples of the same
cells, same seed and mean, with each point's deviations widened to its total σ, and records both σ
beside the error.  Needs the cells' ``benchmarks/results/dft_start/NAME.json``.

    OMP_NUM_THREADS=1 python -m benchmarks.harris_spread
"""
from __future__ import annotations

import json

CELLS = [("al32-T0900-09", "datasets/al32/al32-T0900-09.npz"),
         ("al32-vac1-T0300", "datasets/al32-vacancy/al32-vac1-T0300-00.npz"),
         ("al32-vac1-T0600", "datasets/al32-vacancy/al32-vac1-T0600-00.npz"),
         ("al32-divacancy-T0900", "benchmarks/results/dft_start/al32-divacancy-T0900.xyz")]
OUT = "benchmarks/results/dft_start/harris_total_spread.json"


def main() -> int:
    import gpaw

    from benchmarks.dft_start import _structure
    from bigdens import bnn
    from bigdens.datagen.settings import protocol_settings
    from bigdens.dft.harris import density_samples, harris_foulkes, sample_sigma
    from bigdens.models import shipped_model_for

    res = {"command": "python -m benchmarks.harris_spread (spread='total', 4 samples, seed 0, protocol v1)",
           "rows": []}
    s = protocol_settings("v1")
    for name, path in CELLS:
        atoms = _structure(path)
        rows = {r["start"]: r for r in json.load(open(f"benchmarks/results/dft_start/{name}.json"))["rows"]}
        kpts, gpts = s.kpts_for(atoms.cell[:]), s.gpts_for(atoms.cell[:])

        def make():
            return gpaw.GPAW(mode=gpaw.PW(s.ecut), setups=s.setups, xc=s.xc, occupations=gpaw.FermiDirac(s.smearing),
                             kpts=kpts, gpts=gpts, txt=None, convergence={"density": s.density_convergence})

        model = bnn.load(shipped_model_for(atoms.numbers))
        _, fields = density_samples(model, atoms, tuple(gpts), samples=20, spread="total")
        runs = [harris_foulkes(make, atoms, fields[i]) for i in range(4)]
        n = len(atoms)
        hf = rows["harris-foulkes"]
        row = {"cell": name, "n_atoms": n, "error_meV_per_atom": hf["error_meV_per_atom"],
               "sigma_epistemic_meV_per_atom": hf["sigma_meV_per_atom"],
               "sigma_total_meV_per_atom": sample_sigma(runs) / n * 1000,
               "sample_energies_eV": [r.energy for r in runs], "mean_energy_eV": hf["energy_eV"]}
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
        with open(OUT, "w") as f:
            f.write(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
