"""Quantum ESPRESSO densities in: pp.x's XSF (DATAGRID_3D) and cube files, units and grid convention.

The QE files in tests/data/qe were made with Quantum ESPRESSO 6.7 (Debian's quantum-espresso
package) by tests/data/qe/make.sh: pw.x SCF of a 2-atom Si cell (8 valence electrons), then
pp.x plot_num=0, iflag=3, output_format=5 (XSF) and 6 (cube).  ``si`` is diamond; in
``si_displaced`` the second atom is moved off its site, so that no symmetry of the density
swaps grid axes: a transposed or shifted grid would show.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io.xsf import read_xsf as ase_read_xsf
from ase.units import Bohr

from bigdens.cli import main
from bigdens.data import load
from bigdens.errors import InputError
from bigdens.io import guess_format, read_density_file
from bigdens.io.cube import read_cube, write_cube
from bigdens.io.xsf import read_xsf, write_xsf

QE = Path(__file__).resolve().parent / "data" / "qe"
RUNS = ["si", "si_displaced"]
N_ELECTRONS = 8.0  # 2 Si, Zval = 4 each (Si.pz-vbc.UPF)


def _electrons(dens) -> float:
    return float(dens.density.sum()) * abs(np.linalg.det(dens.cell)) / dens.density.size


def _ulp(values_file_units: np.ndarray, digits: int) -> np.ndarray:
    # Last printed digit of Fortran "0.dddddE+ee" numbers with `digits` digits after the point.
    exponent = np.floor(np.log10(np.abs(values_file_units))) + 1
    return 10.0 ** (exponent - digits)


# -- the QE files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("run", RUNS)
def test_qe_logs_name_version_and_electrons(run):
    log = (QE / f"{run}.scf.out").read_text()
    assert re.search(r"Program PWSCF v\.6\.7", log)
    assert float(re.search(r"number of electrons\s*=\s*([\d.]+)", log).group(1)) == N_ELECTRONS
    assert "convergence has been achieved" in log


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("kind, rel", [("xsf", 1e-7), ("cube", 1e-5)])
def test_qe_files_hold_eight_electrons(run, kind, rel):
    # XSF values have 6 significant digits (QE writes 8.00000006 and 8.00000002 electrons);
    # the cube's have 5 (7.999965 and 8.000023): the tolerance follows the print precision.
    dens = read_density_file(QE / f"{run}.rho.{kind}.gz")
    assert dens.provenance["source_format"] == kind
    assert _electrons(dens) == pytest.approx(N_ELECTRONS, rel=rel)
    assert list(dens.numbers) == [14, 14]
    assert dens.cell == pytest.approx(5.43 / 2 * np.array([[-1, 0, 1], [0, 1, 1], [-1, 1, 0]]), abs=1e-5)


@pytest.mark.parametrize("run", RUNS)
def test_qe_xsf_and_cube_give_the_same_field_on_the_same_grid(run):
    x = read_xsf(QE / f"{run}.rho.xsf.gz")
    c = read_cube(QE / f"{run}.rho.cube.gz")
    assert x.density.shape == c.density.shape
    assert x.provenance["points_in_file"] == [n + 1 for n in x.density.shape]  # the end planes were dropped
    np.testing.assert_allclose(x.cell, c.cell, atol=1e-5)  # the cube's voxels have 6 decimals (Bohr)
    # Atoms: the same up to a lattice vector (QE's cube puts the first atom at 2·(a1 + a2 + a3)).
    frac = np.linalg.solve(x.cell.T, (c.positions - x.positions).T).T
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-5)
    # Values: equal within half a last printed digit of each file (cube 5 digits, XSF 6; e/bohr³).
    xf, cf = x.density * Bohr**3, c.density * Bohr**3
    bound = 0.5 * _ulp(cf, 5) + 0.5 * _ulp(xf, 6)
    assert np.all(np.abs(xf - cf) <= bound * (1 + 1e-9))
    assert np.max(np.abs(xf - cf) / np.abs(xf)) < 6e-5
    if run == "si_displaced":  # the comparison sees a transposed or shifted grid
        for wrong in (x.density.transpose(1, 0, 2), x.density.transpose(0, 2, 1), np.roll(x.density, 1, axis=2)):
            assert np.max(np.abs(wrong - c.density)) > 0.05 * c.density.max()


@pytest.mark.parametrize("run", RUNS)
def test_qe_xsf_matches_ase_reading_of_the_raw_grid(run):
    # ASE reads the general grid as it is: (n+1)^3 values, first index fastest, no units.
    with gzip.open(QE / f"{run}.rho.xsf.gz", "rt") as fh:
        raw, origin, spans, _ = ase_read_xsf(fh, read_data=True)
    dens = read_xsf(QE / f"{run}.rho.xsf.gz")
    assert raw.shape == tuple(n + 1 for n in dens.density.shape)
    np.testing.assert_array_equal(origin, 0.0)
    np.testing.assert_allclose(spans, dens.cell, atol=1e-6)
    np.testing.assert_allclose(dens.density, raw[:-1, :-1, :-1] / Bohr**3, rtol=1e-15)


# -- against files bigdens writes ------------------------------------------------------------------

@pytest.fixture
def field(rng):
    """A non-orthogonal cell, atoms at random, and a periodic field with no symmetry (e/Å³, shape (5, 6, 7))."""
    cell = np.array([[4.1, 0.0, 0.0], [1.3, 3.7, 0.0], [-0.6, 0.9, 5.2]])
    atoms = Atoms("SiGe", scaled_positions=rng.random((2, 3)), cell=cell, pbc=True)
    shape = (5, 6, 7)

    def f(frac):  # frac: (..., 3) fractional coordinates -> e/Å³
        s = 2 * np.pi * np.asarray(frac)
        return (0.05 + 0.02 * np.cos(s[..., 0] + 0.3) + 0.015 * np.sin(s[..., 1] - 2 * s[..., 2] + 1.1)
                + 0.01 * np.cos(s[..., 0] + s[..., 1] + 3 * s[..., 2] + 0.7) + 0.005 * np.sin(2 * s[..., 2]))

    idx = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), axis=-1)
    return atoms, f, f(idx), shape


def test_xsf_written_by_bigdens_follows_the_xsf_convention(field):
    # Independent of read_xsf: ASE's XSF reader and the general-grid rule point (i, j, k) at
    # origin + i/(N1-1)·s1 + ...: with N_i = n_i + 1 and s_i = a_i this is i/n_i·a_i; values e/bohr³.
    atoms, f, rho, shape = field
    write_xsf("a.xsf", atoms, rho)
    with open("a.xsf") as fh:
        raw, origin, spans, _ = ase_read_xsf(fh, read_data=True)
    assert raw.shape == tuple(n + 1 for n in shape)
    np.testing.assert_allclose(spans, atoms.cell[:], atol=1e-9)
    points = np.stack(np.meshgrid(*[np.arange(n + 1) / n for n in shape], indexing="ij"), axis=-1)
    cart = origin + points @ spans
    frac = np.linalg.solve(atoms.cell[:].T, cart.reshape(-1, 3).T).T.reshape(cart.shape)
    np.testing.assert_allclose(raw / Bohr**3, f(frac), rtol=1e-7)


def test_xsf_round_trip_keeps_units_and_grid(field):
    atoms, f, rho, shape = field
    write_xsf("a.xsf", atoms, rho)
    dens = read_xsf("a.xsf")
    assert dens.density.shape == shape
    np.testing.assert_allclose(dens.density, rho, rtol=1e-7)
    np.testing.assert_allclose(dens.cell, atoms.cell[:], atol=1e-9)
    np.testing.assert_allclose(dens.positions, atoms.positions, atol=1e-9)
    np.testing.assert_array_equal(dens.numbers, atoms.numbers)
    # Point (i, j, k) is f at i/n1·a1 + j/n2·a2 + k/n3·a3.
    for i, j, k in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (4, 5, 6), (2, 3, 1)]:
        assert dens.density[i, j, k] == pytest.approx(f((i / 5, j / 6, k / 7)), rel=1e-7)
    # Values in e/Å³ in the file.
    write_xsf("b.xsf", atoms, rho, density_units="e/A^3")
    np.testing.assert_allclose(read_xsf("b.xsf", density_units="e/A^3").density, rho, rtol=1e-7)
    np.testing.assert_allclose(read_xsf("b.xsf").density, rho / Bohr**3, rtol=1e-7)


def test_xsf_and_bigdens_cube_of_one_field_read_the_same(field):
    # bigdens export writes cube files with write_cube: the XSF reader puts the same field on the same grid.
    atoms, _, rho, shape = field
    write_cube("a.cube", atoms, rho)
    write_xsf("a.xsf", atoms, rho)
    c, x = read_density_file("a.cube"), read_density_file("a.xsf")
    assert c.density.shape == x.density.shape == shape
    np.testing.assert_allclose(x.density, c.density, rtol=2e-7)
    np.testing.assert_allclose(x.cell, c.cell, atol=1e-8)
    np.testing.assert_allclose(x.positions, c.positions, atol=1e-7)
    assert _electrons(x) == pytest.approx(_electrons(c), rel=1e-7)


def test_origin_shifts_the_atoms(field):
    atoms, _, rho, _ = field
    write_xsf("a.xsf", atoms, rho)
    text = Path("a.xsf").read_text().splitlines()
    i = next(n for n, line in enumerate(text) if line.startswith("BEGIN_DATAGRID_3D"))
    text[i + 2] = " 0.5 -0.25 1.0"
    Path("o.xsf").write_text("\n".join(text) + "\n")
    dens = read_xsf("o.xsf")
    np.testing.assert_allclose(dens.positions, atoms.positions - [0.5, -0.25, 1.0], atol=1e-9)
    assert dens.provenance["origin_A"] == [0.5, -0.25, 1.0]


def test_guess_format():
    assert guess_format("si.rho.xsf") == guess_format("SI.XSF") == guess_format("a/b.xsf.gz") == "xsf"


# -- bigdens data import ---------------------------------------------------------------------------
# (An XSF without a density, no DATAGRID_3D, is the case density-xsf-no-datagrid of the bad-input
# catalogue, docs/bad-inputs.md, run by tests/test_bad_inputs.py.)

def test_cli_imports_qe_xsf_and_cube(tmp_path, capsys):
    xsf, cube = QE / "si_displaced.rho.xsf.gz", QE / "si_displaced.rho.cube.gz"
    assert main(["data", "import", str(xsf), "-o", str(tmp_path / "xsf-ds"), "--temperature", "300"]) == 0
    assert main(["data", "import", str(cube), "-o", str(tmp_path / "cube-ds")]) == 0
    out = capsys.readouterr().out
    assert "8.0000 electrons" in out
    (sx,), (sc,) = load([tmp_path / "xsf-ds"]), load([tmp_path / "cube-ds"])
    assert sx.protocol == "import-xsf" and sc.protocol == "import-cube"
    assert sx.provenance["temperature_K"] == 300
    assert sx.density.dtype == np.float32 and sx.density.shape == (18, 18, 18)
    np.testing.assert_array_equal(sx.density, read_xsf(xsf).density.astype(np.float32))
    assert sx.electron_integral == pytest.approx(N_ELECTRONS, rel=1e-6)
    assert sx.n_electrons_expected == N_ELECTRONS
    assert sc.electron_integral == pytest.approx(N_ELECTRONS, rel=1e-5)
    np.testing.assert_allclose(sx.density, sc.density, rtol=6e-5)
    # --xsf-units e/A^3 takes the values as they are: 0.148 of the valence electrons, refused unless accepted.
    assert main(["data", "import", str(xsf), "-o", str(tmp_path / "a3"), "--xsf-units", "e/A^3"]) == 2
    assert "ratio 0.1482" in capsys.readouterr().err and not (tmp_path / "a3").exists()
    assert main(["data", "import", str(xsf), "-o", str(tmp_path / "a3"), "--xsf-units", "e/A^3",
                 "--allow-electron-mismatch"]) == 0
    (sa,) = load([tmp_path / "a3"])
    np.testing.assert_allclose(sa.density, sx.density * Bohr**3, rtol=1e-6)
    assert main(["data", "info", str(tmp_path / "xsf-ds")]) == 0


# -- files the reader refuses ----------------------------------------------------------------------

def _qe_text() -> str:
    with gzip.open(QE / "si.rho.xsf.gz", "rt") as fh:
        return fh.read()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t[: len(t) // 2], "is truncated: data grid 'UNKNOWN' has no END_DATAGRID_3D"),
    (lambda t: t.replace("END_DATAGRID_3D\n", "  1.0\nEND_DATAGRID_3D\n"), "the data grid does not match its header"),
    (lambda t: t.replace("          21          21          21", "          21          21          22"),
     "is truncated: its data grid announces 21×21×22 = 9702 values but holds 9261"),
    (lambda t: t.replace(" CRYSTAL", " SLAB"), "is a SLAB (periodic in 2 directions): bigdens reads densities of 3-D"),
    (lambda t: t.replace(" CRYSTAL", " MOLECULE"), "is a molecule (MOLECULE, not periodic)"),
    (lambda t: t.replace(" PRIMVEC", " CONVVEC"), "has no PRIMVEC: bigdens reads densities of 3-D periodic cells"),
    (lambda t: t.replace("0.596438E-02", "0.59x438E-02"), "non-numeric text in data grid 'UNKNOWN'"),
    (lambda t: t.replace("Si       -1.357500000", "Xx       -1.357500000"), "unknown element 'Xx'"),
    (lambda t: t.replace("END_BLOCK_DATAGRID_3D", t[t.index("BEGIN_DATAGRID_3D"):t.index("END_BLOCK")]
                         .replace("UNKNOWN", "SPIN") + "END_BLOCK_DATAGRID_3D"),
     "holds 2 3-D data grids ('UNKNOWN', 'SPIN'); bigdens reads one density per file"),
    (lambda t: t.replace("   -2.715000    0.000000    2.715000\n    0.000000    2.715000    2.715000",
                         "   -2.715000    0.000000    2.715000\n    0.000000    1.357500    1.357500"),
     "the data grid spans"),
])
def test_reader_refuses_broken_files(edit, message):
    Path("bad.xsf").write_text(edit(_qe_text()))
    with pytest.raises(InputError, match=re.escape(message)):
        read_xsf("bad.xsf")


def test_reader_refuses_a_grid_that_does_not_repeat_its_first_plane(field):
    # ASE's XSF writer stores n points per axis over spans (n+1)/n·a: not the cell, refused.
    # n points per axis over the cell, without the repeated end planes, is refused as not periodic.
    from ase.io import write

    atoms, _, rho, _ = field
    write("ase.xsf", atoms, data=rho)
    with pytest.raises(InputError, match="the data grid spans"):
        read_xsf("ase.xsf")
    write_xsf("a.xsf", atoms, rho)  # 6x7x8 points over the cell
    text = Path("a.xsf").read_text().splitlines()
    i = next(n for n, line in enumerate(text) if line.startswith("BEGIN_DATAGRID_3D"))
    text[i + 1] = " 5 6 7"  # keep the first 5x6x7 points: no repeated end planes
    body = [v for line in text[i + 6:-2] for v in line.split()]
    values = np.array(body, dtype=float).reshape(8, 7, 6)[:7, :6, :5].ravel()  # k, j, i without the repeats
    text = text[: i + 6] + [" ".join(f"{v:.7E}" for v in values)] + text[-2:]
    Path("n.xsf").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match="the last grid plane along axis 1 differs from the first"):
        read_xsf("n.xsf")


def test_reader_refuses_bad_units():
    with pytest.raises(InputError, match="density_units must be"):
        read_xsf(QE / "si.rho.xsf.gz", density_units="Ha")
