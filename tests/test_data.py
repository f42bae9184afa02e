"""The data-set format and its reader (bigdens.data) and the `bigdens data` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bigdens.cli import main
from bigdens.data import (
    FORMAT_NAME, Snapshot, add_snapshot, hgh_valence, load, new_manifest, read_manifest, write_manifest,
)
from bigdens.errors import InputError
from bigdens.grid import Grid
from bigdens.io.cube import write_cube
from bigdens.structure import diamond_sige, fcc_al


def make_snapshot(rng, *, name="s0", split="train", protocol="p1", shape=(6, 6, 8), atoms=None):
    atoms = atoms if atoms is not None else fcc_al((1, 1, 2))
    dens = rng.random(shape).astype(np.float32)
    dens *= 3 * len(atoms) / (dens.sum(dtype=np.float64) * atoms.get_volume() / dens.size)
    return Snapshot(name=name, cell=atoms.cell[:], positions=atoms.positions, numbers=atoms.numbers,
                    density=dens, split=split,
                    provenance={"protocol": protocol, "thermalization": {"temperature_K": 300.0},
                                "timing": {"core_seconds": 12.5, "wall_seconds": 13.0}})


def write_dataset(path, snaps, protocol="p1"):
    manifest = new_manifest(protocol=protocol)
    path.mkdir(parents=True, exist_ok=True)
    for s in snaps:
        manifest = add_snapshot(path, s, manifest=manifest)
    return manifest


def test_round_trip_and_file_layout(rng, tmp_path):
    snaps = [make_snapshot(rng, name=f"s{i}", split=sp) for i, sp in enumerate(["train", "validation", "test"])]
    write_dataset(tmp_path / "ds", snaps)
    manifest = read_manifest(tmp_path / "ds")
    assert manifest["format"] == FORMAT_NAME and manifest["format_version"] == 1
    e = manifest["snapshots"][0]
    assert e["file"] == "s0.npz" and e["n_atoms"] == 8 and e["species"] == {"Al": 8}
    assert e["grid_shape"] == [6, 6, 8] and e["temperature"] == 300.0 and e["dft_core_seconds"] == 12.5
    assert e["electron_integral"] == pytest.approx(24.0, rel=1e-5)
    with np.load(tmp_path / "ds" / "s0.npz", allow_pickle=False) as z:
        assert z["cell"].dtype == np.float64 and z["cell"].shape == (3, 3)
        assert z["positions"].dtype == np.float64 and z["numbers"].dtype == np.int32
        assert z["density"].dtype == np.float32
        assert z["provenance"].shape == () and z["provenance"].dtype.kind == "U"
        assert json.loads(str(z["provenance"]))["protocol"] == "p1"
    back = load([tmp_path / "ds"])
    assert [s.name for s in back] == ["s0", "s1", "s2"]
    assert [s.split for s in back] == ["train", "validation", "test"]
    np.testing.assert_array_equal(back[0].density, snaps[0].density)
    np.testing.assert_array_equal(back[0].positions, snaps[0].positions)
    assert back[0].provenance == snaps[0].provenance
    assert [s.name for s in load([tmp_path / "ds"], split="test")] == ["s2"]


def test_snapshot_api(rng):
    s = make_snapshot(rng)
    atoms = s.atoms()
    assert atoms.pbc.all() and len(atoms) == 8
    g = s.grid()
    assert isinstance(g, Grid) and g.shape == (6, 6, 8)
    assert s.n_electrons_expected == 24
    assert s.electron_integral == pytest.approx(24.0, rel=1e-5)
    assert s.electron_integral == pytest.approx(float(s.density.sum(dtype=np.float64)) * g.dv)
    with pytest.raises(ValueError):
        s.density[0, 0, 0] = 1.0  # read-only


def test_valences():
    assert hgh_valence(fcc_al((1, 1, 1)).numbers) == 12
    assert hgh_valence(diamond_sige((1, 1, 1), x=0.5).numbers) == 32
    with pytest.raises(InputError, match="no HGH"):
        hgh_valence([57])  # La


def test_valences_of_an_iterator():
    # The numbers are read once: an iterator (a generator, a map) counts as its list does, not 0.
    numbers = diamond_sige((1, 1, 1), x=0.5).numbers
    assert hgh_valence(iter(numbers)) == hgh_valence(list(numbers)) == 32
    assert hgh_valence(int(z) for z in fcc_al((1, 1, 1)).numbers) == 12
    assert hgh_valence([]) == 0
    with pytest.raises(InputError, match="'La'"):
        hgh_valence(iter([13, 57]))


def test_chemistry_is_the_one_valence_table():
    from bigdens import chemistry, data

    assert data.HGH_VALENCE is chemistry.HGH_VALENCE and data.hgh_valence is chemistry.hgh_valence


def test_nan_density_is_refused(rng, tmp_path):
    s = make_snapshot(rng)
    bad = s.density.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        Snapshot(name="x", cell=s.cell, positions=s.positions, numbers=s.numbers, density=bad)
    # A NaN that reached a file is caught on reading.
    write_dataset(tmp_path / "ds", [s])
    path = tmp_path / "ds" / "s0.npz"
    with np.load(path) as z:
        arrays = dict(z)
    arrays["density"] = bad
    np.savez_compressed(path, **arrays)
    with pytest.raises(InputError, match="NaN"):
        load([tmp_path / "ds"])


def test_mixed_protocols(rng, tmp_path):
    write_dataset(tmp_path / "a", [make_snapshot(rng, name="a0", protocol="p1")], protocol="p1")
    write_dataset(tmp_path / "b", [make_snapshot(rng, name="b0", protocol="p2")], protocol="p2")
    with pytest.raises(InputError, match="2 different DFT protocols"):
        load([tmp_path / "a", tmp_path / "b"])
    assert len(load([tmp_path / "a", tmp_path / "b"], allow_mixed_protocols=True)) == 2


def test_raw_files_and_errors(rng, tmp_path):
    s = make_snapshot(rng)
    write_cube(tmp_path / "x.cube", s.atoms(), s.density)
    (raw,) = load([tmp_path / "x.cube"])
    assert raw.split == "train" and raw.provenance["source_format"] == "cube"
    np.testing.assert_allclose(raw.density, s.density, rtol=1e-6)
    assert load([tmp_path / "x.cube"], split="test")[0].split == "test"
    with pytest.raises(InputError, match="does not exist"):
        load([tmp_path / "nope"])
    with pytest.raises(InputError, match="split must be"):
        load([tmp_path / "x.cube"], split="training")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a bigdens data set"):
        load([tmp_path / "empty"])


def test_newer_format_version_is_refused(rng, tmp_path):
    manifest = write_dataset(tmp_path / "ds", [make_snapshot(rng)])
    write_manifest(tmp_path / "ds", dict(manifest, format_version=99))
    with pytest.raises(InputError, match="upgrade bigdens"):
        load([tmp_path / "ds"])


def test_cli_info_and_import(rng, tmp_path, capsys):
    write_dataset(tmp_path / "ds", [make_snapshot(rng, name=f"s{i}") for i in range(2)])
    assert main(["data", "info", str(tmp_path / "ds"), "--snapshots"]) == 0
    out = capsys.readouterr().out
    assert "2 snapshot(s)" in out and "25 core-seconds" in out and "s1" in out
    assert main(["data", "info", str(tmp_path / "ds"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_snapshots"] == 2 and info["dft_core_seconds_total"] == 25.0

    s = make_snapshot(rng)
    write_cube(tmp_path / "a.cube", s.atoms(), s.density)
    write_cube(tmp_path / "b.cube", s.atoms(), s.density)
    assert main(["data", "import", str(tmp_path / "a.cube"), str(tmp_path / "b.cube"),
                 "-o", str(tmp_path / "imp"), "--split", "test"]) == 0
    snaps = load([tmp_path / "imp"])
    assert [x.split for x in snaps] == ["test", "test"]
    assert snaps[0].electron_integral == pytest.approx(24.0, rel=1e-5)
    # Mixing a data set's protocol with imported files is refused with one message.
    assert main(["data", "import", str(tmp_path / "a.cube"), "-o", str(tmp_path / "ds")]) == 2
    assert "--allow-mixed-protocols" in capsys.readouterr().err
    # A truncated file: one message, nothing written.
    text = (tmp_path / "a.cube").read_text()
    (tmp_path / "cut.cube").write_text(text[:-300])
    assert main(["data", "import", str(tmp_path / "cut.cube"), "-o", str(tmp_path / "imp2")]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not (tmp_path / "imp2").exists()


def test_real_snapshots_carry_temperature_and_dft_cost():
    from pathlib import Path

    from bigdens.data import load

    snaps = load([Path(__file__).parent / "data" / "al4"])
    assert {s.temperature for s in snaps} == {300.0, 900.0}
    assert all(s.dft_core_seconds > 0 for s in snaps)
    # the same numbers as the manifest (what the transfer-learning report sums)
    assert all(s.dft_core_seconds == s.provenance["timing"]["core_seconds"] for s in snaps)


def test_add_snapshot_refuses_another_protocol(rng, tmp_path):
    manifest = write_dataset(tmp_path / "ds", [make_snapshot(rng, name="a", protocol="p1")])
    other = make_snapshot(rng, name="b", protocol="p2")
    with pytest.raises(InputError, match="has protocol 'p2' but the data set .* holds 'p1'"):
        add_snapshot(tmp_path / "ds", other, manifest=manifest)
    assert not (tmp_path / "ds" / "b.npz").exists() and len(read_manifest(tmp_path / "ds")["snapshots"]) == 1
    manifest = add_snapshot(tmp_path / "ds", other, manifest=manifest, allow_mixed_protocols=True)
    assert read_manifest(tmp_path / "ds")["protocol"] == "mixed"
    assert len(load([tmp_path / "ds"], allow_mixed_protocols=True)) == 2
    with pytest.raises(InputError, match="2 different DFT protocols"):
        load([tmp_path / "ds"])


def test_temperature_must_be_positive(rng):
    s = make_snapshot(rng)
    for bad in (0.0, -300.0, float("nan")):
        for prov in ({"thermalization": {"temperature_K": bad}}, {"temperature_K": bad}):
            with pytest.raises(InputError, match="temperature must be > 0 K"):
                Snapshot(name="x", cell=s.cell, positions=s.positions, numbers=s.numbers, density=s.density,
                         provenance=prov)
    imported = Snapshot(name="x", cell=s.cell, positions=s.positions, numbers=s.numbers, density=s.density,
                        provenance={"temperature_K": 450.0})
    assert imported.temperature == 450.0 and s.temperature == 300.0


def _write_chgcar(path, atoms, rho):
    from ase.calculators.vasp import VaspChargeDensity

    c = VaspChargeDensity(None)
    c.atoms = [atoms]
    c.chg = [np.asarray(rho, dtype=np.float64)]  # ASE stores rho·V, Fortran order
    c.write(str(path), format="chgcar")


def test_import_cube_and_chgcar_of_real_densities(tmp_path, capsys):
    from pathlib import Path

    al4 = load([Path(__file__).parent / "data" / "al4"])
    a, b = al4[0], al4[1]
    write_cube(tmp_path / "a.cube", a.atoms(), a.density)
    _write_chgcar(tmp_path / "CHGCAR", b.atoms(), b.density)
    for files, out in (([tmp_path / "a.cube"], "cube-ds"), ([tmp_path / "CHGCAR"], "vasp-ds")):
        assert main(["data", "import", *map(str, files), "-o", str(tmp_path / out), "--temperature", "300"]) == 0
    (c,) = load([tmp_path / "cube-ds"])
    (v,) = load([tmp_path / "vasp-ds"])
    for got, ref in ((c, a), (v, b)):
        np.testing.assert_allclose(got.density, ref.density, rtol=1e-6, atol=1e-7 * ref.density.max())
        np.testing.assert_allclose(got.cell, ref.cell, atol=1e-6)
        assert abs(got.electron_integral - 12.0) < 1e-4 and got.temperature == 300.0
    assert c.protocol == "import-cube" and v.protocol == "import-chgcar"
    capsys.readouterr()
    assert main(["data", "info", str(tmp_path / "vasp-ds"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["protocols"] == ["import-chgcar"] and info["temperatures"] == {"300": 1}
    assert info["snapshots"][0]["electron_integral"] == pytest.approx(12.0, abs=1e-4)
    # Bad input, refused before anything is written: a temperature <= 0 and mixed sources.
    assert main(["data", "import", str(tmp_path / "a.cube"), "-o", str(tmp_path / "t0"), "--temperature", "0"]) == 2
    assert "--temperature must be > 0 K, got 0.0" in capsys.readouterr().err
    assert main(["data", "import", str(tmp_path / "a.cube"), str(tmp_path / "CHGCAR"), "-o", str(tmp_path / "mix")]) == 2
    assert "--allow-mixed-protocols" in capsys.readouterr().err
    assert not (tmp_path / "t0").exists() and not (tmp_path / "mix").exists()
    # A CHGCAR whose grid header does not match its data: one message, nothing written.
    text = (tmp_path / "CHGCAR").read_text()
    n = a.density.shape
    header = f"{n[0]:5d}{n[1]:5d}{n[2]:5d}"
    assert header in text
    (tmp_path / "bad_CHGCAR").write_text(text.replace(header, f"{n[0]:5d}{n[1]:5d}{n[2] - 1:5d}", 1))
    assert main(["data", "import", str(tmp_path / "bad_CHGCAR"), "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match its header" in err and not (tmp_path / "bad").exists()


def test_train_and_evaluate_take_cube_and_chgcar_files(tmp_path, capsys):
    from pathlib import Path

    al4 = load([Path(__file__).parent / "data" / "al4"])
    for i, s in enumerate(al4[:3]):
        write_cube(tmp_path / f"s{i}.cube", s.atoms(), s.density)
    _write_chgcar(tmp_path / "s3_CHGCAR", al4[3].atoms(), al4[3].density)
    model = tmp_path / "m.safetensors"
    assert main(["train", str(tmp_path / "s0.cube"), str(tmp_path / "s1.cube"), "--val", str(tmp_path / "s2.cube"),
                 "--m", "8", "--k", "3", "--r-cut", "4.5", "--hidden", "8", "--epochs", "1",
                 "--points-per-epoch", "2000", "-o", str(model)]) == 0
    assert model.is_file()
    # The library logs its progress (bigdens.train); the command shows it on stdout, as printed lines.
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("training on 2 snapshots") and out[1].startswith("epoch    1  loss")
    assert out[-1].startswith(f"wrote {model}: best validation NMAE")
    assert main(["evaluate", str(model), str(tmp_path / "s3_CHGCAR"), "--mc-samples", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["overall"]["n_snapshots"] == 1 and res["snapshots"][0]["name"] == "s3_CHGCAR"
    assert main(["evaluate", str(model), str(tmp_path / "s2.cube"), "--mc-samples", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["n_snapshots"] == 1
    # Cube and CHGCAR together are two sources: refused unless asked.
    assert main(["evaluate", str(model), str(tmp_path / "s2.cube"), str(tmp_path / "s3_CHGCAR")]) == 2
    assert "--allow-mixed-protocols" in capsys.readouterr().err


def _one_line_refusal(capsys, argv, out_dir):
    """Run ``bigdens ARGV``; it must fail with one error line and write nothing; return the message."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("bigdens data: error: ")
    assert not out_dir.exists()
    return err[len("bigdens data: error: "):].rstrip("\n")


def test_import_refuses_densities_that_cannot_be_physical(tmp_path, capsys):
    """Real cube and CHGCAR files: all-negative, negative integral, singular voxels, NaN; PAW dips need a flag."""
    from pathlib import Path

    s = load([Path(__file__).parent / "data" / "al4"])[0]
    atoms, rho = s.atoms(), s.density.astype(np.float64)
    out = tmp_path / "ds"

    write_cube(tmp_path / "neg.cube", atoms, -rho)  # a sign flip
    msg = _one_line_refusal(capsys, ["data", "import", str(tmp_path / "neg.cube"), "-o", str(out)], out)
    assert msg.startswith(f"density file {str(tmp_path / 'neg.cube')!r}: every density value is <= 0 (max -0.00112")
    write_cube(tmp_path / "diff.cube", atoms, rho - 1.01 * rho.mean())  # a difference density
    msg = _one_line_refusal(capsys, ["data", "import", str(tmp_path / "diff.cube"), "-o", str(out)], out)
    assert "the density integrates to -0.12 electrons (<= 0; its negative values hold" in msg
    nan = rho.copy()
    nan[1, 2, 3] = np.nan
    write_cube(tmp_path / "nan.cube", atoms, nan)
    msg = _one_line_refusal(capsys, ["data", "import", str(tmp_path / "nan.cube"), "-o", str(out)], out)
    assert msg.endswith("the density holds 1 NaN or infinite value(s); the DFT run or the file is broken: "
                        "regenerate or drop it")
    # A zero voxel vector, and two equal ones (line 5 holds the second axis' count and voxel vector).
    lines = (tmp_path / "diff.cube").read_text().splitlines(True)
    (tmp_path / "zero.cube").write_text("".join(lines[:4] + [f"{lines[4].split()[0]} 0.0 0.0 0.0\n"] + lines[5:]))
    (tmp_path / "flat.cube").write_text("".join(lines[:4] + [lines[3]] + lines[5:]))
    for name in ("zero.cube", "flat.cube"):
        msg = _one_line_refusal(capsys, ["data", "import", str(tmp_path / name), "-o", str(out)], out)
        assert ": the cell is singular (volume 0 Å³," in msg and "voxel vectors × point counts" in msg

    # A PAW-like pseudo-density: 1 % of its electrons in negative values near the cores.
    paw = rho.copy()
    near = np.zeros(paw.shape, dtype=bool)
    near[:2, :2, :2] = True
    paw[near] = -0.01 * rho.sum() / near.sum()
    share = -paw[near].sum() / paw.sum()
    assert 0.01 < share < 0.02
    _write_chgcar(tmp_path / "CHGCAR", atoms, paw)
    msg = _one_line_refusal(capsys, ["data", "import", str(tmp_path / "CHGCAR"), "-o", str(out)], out)
    assert f"(a share of {share:.3g}) sit in negative density values" in msg
    assert msg.endswith("more than the accepted share 0.001; a PAW pseudo-density can dip below zero: accept it "
                        "with --allow-negative 0.02")
    assert _one_line_refusal(capsys, ["data", "import", str(tmp_path / "CHGCAR"), "-o", str(out),
                                      "--allow-negative", "0.01"], out).endswith("--allow-negative 0.02")
    for bad in ("-0.1", "1", "nan"):
        msg = _one_line_refusal(capsys, ["data", "import", str(tmp_path / "CHGCAR"), "-o", str(out),
                                         "--allow-negative", bad], out)
        assert msg.startswith("--allow-negative must be a fraction of the electrons within [0, 1), got ")
    # With the suggested flag it imports, negative values and all.
    assert main(["data", "import", str(tmp_path / "CHGCAR"), "-o", str(out), "--allow-negative", "0.02"]) == 0
    (got,) = load([out])
    np.testing.assert_allclose(got.density, paw, rtol=1e-5, atol=1e-7)
    assert got.density.min() < 0 and got.electron_integral == pytest.approx(paw.sum() * s.grid().dv, rel=1e-5)


def test_check_physical_and_singular_snapshots(rng):
    from bigdens.data import NEGATIVE_TOLERANCE, check_physical
    from bigdens.cli import data as cli_data

    assert cli_data.NEGATIVE_TOLERANCE == NEGATIVE_TOLERANCE  # the --help default is the library's
    s = make_snapshot(rng)
    check_physical(s.cell, s.density, where="x")  # a real density passes
    dip = s.density.copy()
    dip[0, 0, 0] = -1e-4 * dip.sum()  # 1e-4 of the electrons: within the default tolerance
    check_physical(s.cell, dip, where="x")
    with pytest.raises(InputError, match="more than the accepted share 0;"):
        check_physical(s.cell, dip, where="x", allow_negative=0.0)
    for bad in (-0.1, 1.0, float("nan"), True):
        with pytest.raises(InputError, match="allow_negative must be a fraction"):
            check_physical(s.cell, s.density, where="x", allow_negative=bad)
    flat = s.cell.copy()
    flat[2] = 0.0
    with pytest.raises(InputError, match="snapshot 'y': the cell is singular"):
        Snapshot(name="y", cell=flat, positions=s.positions, numbers=s.numbers, density=s.density)


def test_chgcar_with_a_singular_lattice_is_refused(tmp_path):
    from bigdens.io.chgcar import read_chgcar

    _write_chgcar(tmp_path / "CHGCAR", fcc_al((1, 1, 1)), np.full((4, 4, 4), 0.1))
    lines = (tmp_path / "CHGCAR").read_text().splitlines(True)
    (tmp_path / "flat_CHGCAR").write_text("".join(lines[:4] + [lines[3]] + lines[5:]))
    (tmp_path / "zero_CHGCAR").write_text("".join(lines[:1] + ["0.0\n"] + lines[2:]))
    for name in ("flat_CHGCAR", "zero_CHGCAR"):
        with pytest.raises(InputError, match=f"CHGCAR file '.*{name}': the cell is singular"):
            read_chgcar(tmp_path / name)
