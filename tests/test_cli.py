"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ase.io import read

from bigdens import __version__


def bigdens(*args):
    return subprocess.run([sys.executable, "-m", "bigdens", *args], capture_output=True, text=True, timeout=300)


def test_version_and_help():
    r = bigdens("--version")
    assert r.returncode == 0 and __version__ in r.stdout
    r = bigdens("--help")
    assert r.returncode == 0 and "build" in r.stdout and "describe" in r.stdout


def test_build_then_describe():
    r = bigdens("build", "sige", "--x", "0.25", "--cells", "1", "1", "2", "--rattle", "0.03", "--seed", "4", "-o", "s.vasp", "--out-format", "vasp")
    assert r.returncode == 0, r.stderr
    atoms = read("s.vasp", format="vasp")
    assert len(atoms) == 16 and (atoms.numbers == 32).sum() == 4
    r = bigdens("describe", "s.vasp", "--format", "vasp", "--grid", "12", "12", "24", "--block", "8", "--r-cut", "5")
    assert r.returncode == 0, r.stderr
    assert "3456 points" in r.stdout and "(14, 32)" in r.stdout


def test_build_al_with_defects_and_rattle():
    r = bigdens("build", "al", "--cells", "3", "3", "3", "--a", "4.1", "--void", "3.0", "--vacancies", "5",
                "--rattle", "0.04", "--seed", "7", "-o", "al.xyz")
    assert r.returncode == 0, r.stderr
    atoms = read("al.xyz")
    # 108 sites; the centre (1.5a, 1.5a, 1.5a) is an octahedral hole: the void takes its 6 neighbours at a/2.
    assert len(atoms) == 108 - 6 - 5 and set(atoms.numbers) == {13} and atoms.pbc.all()
    assert abs(atoms.cell.lengths() - 12.3).max() < 1e-9
    assert f"wrote al.xyz: {len(atoms)} atoms ({len(atoms)} Al)" in r.stdout
    again = bigdens("build", "al", "--cells", "3", "3", "3", "--a", "4.1", "--void", "3.0", "--vacancies", "5",
                    "--rattle", "0.04", "--seed", "7", "-o", "again.xyz")
    assert again.returncode == 0 and (read("again.xyz").positions == atoms.positions).all()  # seeded
    other = bigdens("build", "al", "--cells", "3", "3", "3", "--a", "4.1", "--void", "3.0", "--vacancies", "5",
                    "--rattle", "0.04", "--seed", "8", "-o", "other.xyz")
    assert other.returncode == 0 and len(read("other.xyz")) == len(atoms)
    assert not __import__("numpy").allclose(read("other.xyz").positions, atoms.positions, atol=1e-3)


@pytest.mark.parametrize("out, fmt", [("POSCAR", "vasp"), ("s.cif", "cif"), ("s.extxyz", "extxyz"),
                                      ("s.data", "lammps-data")])
def test_build_sige_any_ase_format_reads_back(out, fmt):
    extra = ["--out-format", fmt] if fmt == "lammps-data" else []
    r = bigdens("build", "sige", "--x", "0.5", "--cells", "2", "1", "1", "--seed", "3", "-o", out, *extra)
    assert r.returncode == 0, r.stderr
    atoms = read(out, format=fmt)
    # The species survive every format (LAMMPS data through its Masses section).
    assert len(atoms) == 16 and (atoms.numbers == 32).sum() == 8 and (atoms.numbers == 14).sum() == 8
    a = (5.431 + 5.658) / 2
    assert abs(atoms.cell.lengths() - [2 * a, a, a]).max() < 1e-4
    r = bigdens("describe", out, "--format", fmt, "--grid", "8", "4", "4", "--block", "4", "--r-cut", "4")
    assert r.returncode == 0, r.stderr
    assert "16 atoms (8 Si, 8 Ge)" in r.stdout and "128 points" in r.stdout


@pytest.fixture(scope="module")
def struct(tmp_path_factory):
    """A rattled 4-atom Al cell that would work (built once; `bigdens build` has tests of its own)."""
    from ase.io import write

    from bigdens import structure

    path = tmp_path_factory.mktemp("struct") / "al.xyz"
    write(path, structure.rattle(structure.fcc_al((1, 1, 1)), 0.02, seed=0))
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", "sige", "--cells", "1", "1", "1", "-o", "x.xyz"], "needs the Ge fraction"),
        (["build", "al", "--cells", "1", "1", "1", "--vacancies", "9", "-o", "x.xyz"], "number of vacancies"),
        (["describe", "missing.xyz"], "does not exist"),
        (["describe", "--spacing", "0", "STRUCT"], "grid spacing must be a positive"),
        (["describe", "--grid", "4", "0", "4", "STRUCT"], "three positive integers"),
        (["describe", "--r-cut", "-1", "STRUCT"], "r_cut must be a positive"),
        (["describe", "--m", "1000", "STRUCT"], "radial count M"),
    ],
)
def test_bad_input_one_clear_line(args, message, struct):
    args = [a.replace("STRUCT", str(struct)) for a in args]
    r = bigdens(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (args[-1].endswith("x.xyz") and __import__("os").path.exists("x.xyz"))
