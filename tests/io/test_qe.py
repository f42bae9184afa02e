"""pw.x's charge-density.dat (bigdens.io.qe): the real pw.x is the oracle for the G-vector order and values.

pw.x reads the values in its own G-vector order without looking at the Miller indices, so an order
that differs in one tie makes a wrong density silently.  The tests run Debian's pw.x (6.7) on small
cells and compare, record by record, with the files it writes; then pw.x starts from a file bigdens
wrote and must find the converged density at once.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io.cube import read_cube_data
from ase.units import Bohr

from bigdens.errors import InputError
from bigdens.io.formats import write_density_file
from bigdens.io.qe import density_from_charge_density, qe_miller_indices, read_charge_density, write_qe

QE = Path(__file__).resolve().parents[1] / "data" / "qe"
SI_CELL = 5.43 / 2 * np.array([[-1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [-1.0, 1.0, 0.0]])  # ibrav = 2, A = 5.43


def _run_pwx(pwx, folder: Path, name: str, *, system: str, cell: str, positions: str, kpts: str = "2 2 2 0 0 0",
             electrons: str = "") -> str:
    exe, pseudo = pwx
    text = f"""&CONTROL
  calculation = 'scf', prefix = '{name}', outdir = './out', pseudo_dir = '{pseudo}'
/
&SYSTEM
  {system}
/
&ELECTRONS
  conv_thr = 1.0d-10
  {electrons}
/
ATOMIC_SPECIES
  Si 28.0855 Si.pz-vbc.UPF
{cell}
{positions}
K_POINTS automatic
  {kpts}
"""
    (folder / f"{name}.in").write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([exe, "-in", f"{name}.in"], cwd=folder, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def _iterations(out: str) -> int:
    line = next(x for x in out.splitlines() if "convergence has been achieved" in x)
    return int(line.split("in")[-1].split()[0])


def _energy(out: str) -> float:
    return float(next(x for x in out.splitlines() if x.startswith("!")).split("=")[1].split()[0])


CASES = {
    # ibrav 2 with A: alat = 5.43 Å, not |a1|.
    "si-fcc-ibrav2": dict(system="ibrav = 2, A = 5.43, nat = 2, ntyp = 1, ecutwfc = 12.0", cell="",
                          positions="ATOMIC_POSITIONS crystal\n  Si 0.00 0.00 0.00\n  Si 0.27 0.25 0.22",
                          lattice=SI_CELL, alat=5.43, ecutrho=48.0),
    # ibrav 0 in Å (ASE's form), a triclinic cell and a non-default ecutrho: alat = |a1|.
    "si-triclinic": dict(system="ibrav = 0, nat = 2, ntyp = 1, ecutwfc = 10.0, ecutrho = 52.0",
                         cell="CELL_PARAMETERS angstrom\n  3.9 0.1 0.0\n  0.6 3.7 0.2\n  -0.3 0.5 4.4",
                         positions="ATOMIC_POSITIONS crystal\n  Si 0.00 0.00 0.00\n  Si 0.26 0.24 0.21",
                         lattice=np.array([[3.9, 0.1, 0.0], [0.6, 3.7, 0.2], [-0.3, 0.5, 4.4]]), alat=None,
                         ecutrho=52.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_g_vectors_are_pwx_s_own_list_in_its_order(pwx, tmp_path, case):
    c = CASES[case]
    _run_pwx(pwx, tmp_path, "x", system=c["system"], cell=c["cell"], positions=c["positions"])
    theirs = read_charge_density(tmp_path / "out" / "x.save" / "charge-density.dat")
    mine = qe_miller_indices(c["lattice"], c["ecutrho"], alat=c["alat"])
    assert theirs["gamma_only"] is False and theirs["nspin"] == 1
    assert mine.shape == theirs["miller"].shape
    assert np.array_equal(mine, theirs["miller"])
    np.testing.assert_allclose(2 * np.pi * np.linalg.inv(c["lattice"] / Bohr).T, theirs["b"], rtol=1e-9)


def test_the_file_written_from_pwx_s_density_is_pwx_s_file_and_starts_it_at_once(pwx, tmp_path):
    # pp.x's cube of the displaced-Si run (tests/data/qe): the real-space density pw.x converged to.  Written
    # back as charge-density.dat it must equal pw.x's own file value for value (a transposed, shifted or mirrored
    # grid, or the conjugate convention, fails here: the displaced atom breaks every symmetry that would hide it),
    # and pw.x must start from it converged.
    c = CASES["si-fcc-ibrav2"]
    default = _run_pwx(pwx, tmp_path, "si_displaced", system=c["system"], cell="", positions=c["positions"],
                       kpts="4 4 4 1 1 1")
    theirs = read_charge_density(tmp_path / "out" / "si_displaced.save" / "charge-density.dat")
    with gzip.open(QE / "si_displaced.rho.cube.gz", "rt") as f:
        rho_bohr, _ = read_cube_data(f)
    atoms = Atoms("Si2", scaled_positions=[[0, 0, 0], [0.27, 0.25, 0.22]], cell=SI_CELL, pbc=True)
    warm = tmp_path / "warm"
    (warm / "out" / "si_displaced.save").mkdir(parents=True)
    target = warm / "out" / "si_displaced.save" / "charge-density.dat"
    write_density_file(target, atoms, rho_bohr / Bohr**3, ecutrho=48.0, alat=5.43)
    mine = read_charge_density(target)
    assert np.array_equal(mine["miller"], theirs["miller"])
    scale = np.abs(theirs["rho_g"]).max()
    assert np.abs(mine["rho_g"] - theirs["rho_g"]).max() < 1e-6 * scale  # the cube holds 6 digits
    assert np.abs(np.conj(mine["rho_g"]) - theirs["rho_g"]).max() > 0.1 * scale  # the test can tell the sign
    started = _run_pwx(pwx, warm, "si_displaced", system=c["system"], cell="", positions=c["positions"],
                       kpts="4 4 4 1 1 1", electrons="startingpot = 'file'")
    assert "The initial density is read from file" in started
    assert _iterations(default) >= 5
    assert _iterations(started) <= 2
    assert abs(_energy(started) - _energy(default)) < 1e-7  # Ry


def test_round_trip_electrons_and_a_band_limited_field(rng, tmp_path):
    cell = np.array([[4.0, 0.2, 0.0], [0.3, 4.5, 0.1], [0.0, -0.4, 5.0]])
    atoms = Atoms("Al", positions=[[0.4, 0.3, 0.2]], cell=cell, pbc=True)
    shape = (16, 18, 20)
    ecutrho = 25.0
    # A field made of the file's own G-vectors (within the grid): written and read back exactly.
    mill = qe_miller_indices(cell, ecutrho)
    inside = mill[(np.abs(mill) <= (np.array(shape) - 1) // 2).all(axis=1)]
    spectrum = np.zeros(shape, dtype=complex)
    coeff = rng.normal(size=len(inside)) + 1j * rng.normal(size=len(inside))
    spectrum[inside[:, 0] % shape[0], inside[:, 1] % shape[1], inside[:, 2] % shape[2]] = coeff
    field = np.fft.ifftn(spectrum).real
    field = 0.05 + 0.01 * field / np.abs(field).max()  # positive, e/Å³
    out = tmp_path / "charge-density.dat"
    write_qe(out, atoms, field, ecutrho=ecutrho)
    back = density_from_charge_density(out, shape)
    np.testing.assert_allclose(back, field, atol=1e-12)
    electrons = read_charge_density(out)["rho_g"][0][0].real * abs(np.linalg.det(cell)) / Bohr**3
    assert electrons == pytest.approx(field.mean() * abs(np.linalg.det(cell)), rel=1e-12)
    write_qe(out, atoms, field, ecutrho=ecutrho, n_electrons=7.0)
    rec = read_charge_density(out)
    assert rec["rho_g"][0][0].real * abs(np.linalg.det(cell)) / Bohr**3 == pytest.approx(7.0, abs=1e-6)


def test_refusals_are_input_errors(tmp_path):
    atoms = Atoms("Al", positions=[[0, 0, 0]], cell=np.eye(3) * 4.05, pbc=True)
    field = np.full((12, 12, 12), 0.05)
    with pytest.raises(InputError, match="ecutrho"):
        write_qe(tmp_path / "charge-density.dat", atoms, field)
    with pytest.raises(InputError, match="finer grid"):
        write_qe(tmp_path / "charge-density.dat", atoms, field, ecutrho=400.0)
    with pytest.raises(InputError, match="NaN"):
        write_qe(tmp_path / "charge-density.dat", atoms, field * np.nan, ecutrho=20.0)
    (tmp_path / "junk.dat").write_bytes(b"\x01\x02")
    with pytest.raises(InputError, match="not a QE charge-density file"):
        read_charge_density(tmp_path / "junk.dat")
    assert not (tmp_path / "charge-density.dat").exists()  # nothing half-written
