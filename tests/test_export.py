"""bigdens export to every format the registry writes: a real predicted store, read back, checked, streamed.

The store is predicted by the engine with the untrained test model (tests/helpers.py) on a small grid
cut into blocks along every axis, so that the writers' slabs (axis 0 for cube, axis 2 for CHGCAR and
XSF) cross block boundaries.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from bigdens import engine, store, structure
from bigdens.cli import main
from bigdens.io import read_density_file
from bigdens.io.formats import get_format, writable

from helpers import config as engine_config, make_model

#: 10×9×12 points in blocks of 4: 3×3×3 blocks (edges 4, 4, 2 / 4, 4, 1 / 4, 4, 4).
GRID = (10, 9, 12)
BLOCK = 4
#: Float rounding of each writer's printed digits (relative): cube and XSF "%.7E", CHGCAR "%17.11E".
DIGITS = {"cube": 1e-7, "xsf": 1e-7, "chgcar": 1e-10}
#: The real-space grid writers, which bigdens reads back (pw.x's charge-density.dat: test_export_qe_for_pwx).
WRITABLE = [f.name for f in writable() if f.read]


def config(out, model, **kw):
    return engine_config(out, model, **{"spacing": None, "grid": GRID, "block": BLOCK, "domain_check": False, **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A complete store of a rattled 4-atom Al cell, and a 2-frame trajectory store of the same cell."""
    from bigdens.trajectory import Trajectory

    d = tmp_path_factory.mktemp("export")
    atoms = structure.rattle(structure.fcc_al((1, 1, 1)), 0.05, seed=2)
    model = make_model(d / "m.safetensors")
    engine.run(atoms, config(d / "o.zarr", model))
    frames = [structure.rattle(atoms, 0.04, seed=10 + k) for k in range(2)]
    engine.run(Trajectory(frames=frames, index=[0, 1]), config(d / "t.zarr", model))
    return d / "o.zarr", d / "t.zarr"


def run_cli(capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    got = capsys.readouterr()
    return rc, got.out, got.err


def one_line(err, *parts):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigdens export: error: ") and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def electrons(density, cell):
    return float(np.asarray(density, dtype=np.float64).sum()) * abs(np.linalg.det(cell)) / density.size


def assert_same_atoms(back, positions, numbers):
    # As a set: CHGCAR groups the atoms by element (here all Al, so even the order holds).
    key = lambda z, p: (int(z), *np.round(p, 5))  # noqa: E731
    assert sorted(map(key, back.numbers, back.positions)) == sorted(map(key, numbers, positions))


@pytest.mark.parametrize("name", WRITABLE)
def test_export_each_format_reads_back_as_the_store(built, tmp_path, capsys, name):
    out, _ = built
    fmt = get_format(name, mode="w")
    target = tmp_path / fmt.example_name  # the format from the name alone
    rc, text, err = run_cli(capsys, "export", out, "-o", target)
    assert rc == 0 and err == "", err
    assert text == (f"wrote {target}: density, grid {GRID}, 4 atoms, {fmt.label} ({fmt.units}"
                    f"{'; ' + fmt.write_note if fmt.write_note else ''})\n")
    root = zarr.open_group(str(out), mode="r")
    rho = root["density"][:]
    back = read_density_file(target)
    assert back.provenance["source_format"] == name and back.density.shape == GRID
    np.testing.assert_allclose(back.density, rho, rtol=DIGITS[name])
    cell = np.array(store.read_attrs(out)["cell"])
    np.testing.assert_allclose(back.cell, cell, atol=1e-7)
    assert_same_atoms(back, root["positions"][:], root["numbers"][:])
    assert electrons(back.density, back.cell) == pytest.approx(electrons(rho, cell), rel=1e-6)
    assert electrons(back.density, back.cell) == pytest.approx(store.read_attrs(out)["n_electrons_predicted"],
                                                               rel=1e-6)


def test_export_qe_for_pwx(built, tmp_path, capsys):
    # The store's density as pw.x's starting density: pw.x's G-vectors for this cell and cutoff, in its order,
    # ρ(0)·Ω the store's electrons, --electrons rescaling; checked block by block like every export.
    from ase.units import Bohr

    from bigdens.io.qe import density_from_charge_density, qe_miller_indices, read_charge_density

    out, _ = built
    target = tmp_path / "charge-density.dat"
    rc, text, err = run_cli(capsys, "export", out, "-o", target, "--ecutrho", "30")
    assert rc == 0 and err == "" and text.startswith(f"wrote {target}: density, grid {GRID}"), err
    cell = np.array(store.read_attrs(out)["cell"])
    rec = read_charge_density(target)
    assert np.array_equal(rec["miller"], qe_miller_indices(cell, 30.0))
    volume = abs(np.linalg.det(cell))
    predicted = store.read_attrs(out)["n_electrons_predicted"]
    assert rec["rho_g"][0][0].real * volume / Bohr**3 == pytest.approx(predicted, rel=1e-6)
    rho = zarr.open_group(str(out), mode="r")["density"][:]
    back = density_from_charge_density(target, GRID)  # the sphere's part of the store's field
    assert np.abs(back - rho).mean() < 0.05 * np.abs(rho).mean()
    assert run_cli(capsys, "export", out, "-o", target, "--ecutrho", "30", "--electrons", "5")[0] == 0
    assert read_charge_density(target)["rho_g"][0][0].real * volume / Bohr**3 == pytest.approx(5.0, rel=1e-9)


def test_export_chgcar_is_what_ase_reads(built, tmp_path, capsys):
    from ase.calculators.vasp import VaspChargeDensity

    out, _ = built
    assert run_cli(capsys, "export", out, "-o", tmp_path / "CHGCAR", "--var", "density_std")[0] == 0
    c = VaspChargeDensity(str(tmp_path / "CHGCAR"))
    std = zarr.open_group(str(out), mode="r")["density_std"][:]
    np.testing.assert_allclose(c.chg[0], std, rtol=1e-10)
    assert c.atoms[0].get_chemical_symbols() == ["Al"] * 4


def test_format_option_overrides_the_name(built, tmp_path, capsys):
    out, _ = built
    rho = zarr.open_group(str(out), mode="r")["density"][:]
    rc, text, _ = run_cli(capsys, "export", out, "-o", tmp_path / "d.cube", "--format", "xsf")
    assert rc == 0 and "XSF (Å, e/Bohr³)" in text
    back = read_density_file(tmp_path / "d.cube", format="xsf")
    np.testing.assert_allclose(back.density, rho, rtol=1e-7)
    rc, text, _ = run_cli(capsys, "export", out, "--cube", tmp_path / "rho.dat", "--format", "chgcar")
    assert rc == 0 and "VASP CHGCAR" in text
    np.testing.assert_allclose(read_density_file(tmp_path / "rho.dat", format="chgcar").density, rho, rtol=1e-10)


@pytest.mark.parametrize("name, parts", [
    ("d.dat", ["cannot tell which format to write", "'d.dat'", "*.cube", "*CHGCAR*", "*.vasp", "*.xsf",
               "or choose one with --format cube, chgcar, xsf or qe"]),
    ("d.gpw", ["'d.gpw' names a GPAW restart file, which export does not write",
               "(`bigdens dft STORE -o FILE.gpw` starts a DFT run from the store and writes one)",
               "--format cube, chgcar, xsf or qe"]),
    ("d.cube.gz", ["cannot write the compressed file 'd.cube.gz'"]),
])
def test_unwritable_names_are_one_line_exit_2(built, tmp_path, capsys, monkeypatch, name, parts):
    out, _ = built
    monkeypatch.chdir(tmp_path)
    rc, text, err = run_cli(capsys, "export", out, "-o", name)
    assert rc == 2 and text == ""
    one_line(err, *parts)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_format_choice_is_one_usage_line(built, tmp_path, capsys):
    rc, text, err = run_cli(capsys, "export", built[0], "-o", tmp_path / "d.cube", "--format", "gpw")
    assert rc == 2 and text == "" and err == ("bigdens export: error: argument --format: invalid choice: 'gpw' "
                                              "(choose from 'cube', 'chgcar', 'xsf', 'qe'); see `bigdens export --help`\n")


@pytest.mark.parametrize("name", WRITABLE)
def test_frame_of_a_trajectory_store(built, tmp_path, capsys, name):
    _, traj = built
    target = tmp_path / get_format(name, mode="w").example_name
    rc, text, _ = run_cli(capsys, "export", traj, "-o", target, "--frame", "1", "--var", "density_std_epistemic")
    assert rc == 0 and "frame 1, density_std_epistemic" in text
    root = zarr.open_group(str(traj), mode="r")
    back = read_density_file(target)
    np.testing.assert_allclose(back.density, root["density_std_epistemic"][1], rtol=DIGITS[name])
    assert_same_atoms(back, root["positions"][1], root["numbers"][:])
    assert not np.allclose(root["positions"][1], root["positions"][0], atol=1e-3)  # frame 1, not frame 0


@pytest.mark.parametrize("name", WRITABLE)
def test_damaged_block_stops_every_format_with_one_line_and_no_file(built, tmp_path, capsys, name):
    out = tmp_path / "o.zarr"
    shutil.copytree(built[0], out)
    blocks = {b.start: b.index for b in store.blocks_of(store.read_attrs(out))}
    (out / "density" / "c" / "1" / "2" / "2").unlink()  # the block starting at (4, 8, 8)
    target = tmp_path / get_format(name, mode="w").example_name
    rc, _, err = run_cli(capsys, "export", out, "-o", target)
    assert rc == 2
    one_line(err, f"is damaged: 1 of 27 blocks fail their ledger check (block {blocks[(4, 8, 8)]}: density checksum "
             "differs", "bigdens verify --repair")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]  # no file, no temporary


def test_checked_slabs_along_z_read_each_block_once(built, monkeypatch):
    out, _ = built
    reader = store.open_checked(out)
    reads = []
    original = reader._read

    def counting(name, selection):
        reads.append(selection)
        return original(name, selection)

    monkeypatch.setattr(reader, "_read", counting)
    planes = store.CheckedSlabs(reader, "density", axis=2)
    rho = zarr.open_group(str(out), mode="r")["density"][:]
    for k in range(GRID[2]):
        np.testing.assert_array_equal(planes[:, :, k], rho[:, :, k])
    assert len(reads) == 3 and all(s[:2] == (slice(None), slice(None)) for s in reads)  # one per z-slab of blocks
    with pytest.raises(IndexError, match="out of order"):
        planes[:, :, 0]
    with pytest.raises(IndexError, match="single planes only"):
        store.CheckedSlabs(reader, "density", axis=2)[0]
