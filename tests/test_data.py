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


# -- the split travels with the snapshot file (issue 29) ------------------------------------------
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SHIPPED_TEST = ROOT / "datasets" / "al32" / "al32-T0300-01.npz"  # old format: its split is in dataset.json only
SHIPPED_TRAIN = ROOT / "datasets" / "al32" / "al32-T0300-00.npz"


def _without_split(src, dst):
    """A copy of snapshot file ``src`` as bigdens wrote it before files recorded their split."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "split"}
    np.savez_compressed(dst, **arrays)
    return dst


def test_the_split_round_trips_through_the_file(rng, tmp_path):
    from bigdens.data import read_snapshot, write_snapshot

    for split in ("train", "validation", "test"):
        path = write_snapshot(tmp_path / f"{split}.npz", make_snapshot(rng, name=split, split=split))
        with np.load(path, allow_pickle=False) as z:
            assert z["split"].shape == () and str(z["split"]) == split
        # No manifest here: the file alone says it; the caller's default does not override it.
        assert read_snapshot(path).split == split
        assert read_snapshot(path, default="validation").split == split
        assert load([path])[0].split == split
    # An old file (no recorded split, no manifest) takes the caller's default, as before.
    old = _without_split(tmp_path / "test.npz", tmp_path / "old.npz")
    assert read_snapshot(old).split == "train" and read_snapshot(old, default="validation").split == "validation"
    assert load([old], split="validation")[0].split == "validation"
    # Through a data set, too.
    write_dataset(tmp_path / "ds", [make_snapshot(rng, name=f"s{i}", split=sp)
                                    for i, sp in enumerate(["train", "validation", "test"])])
    assert [read_snapshot(tmp_path / "ds" / f"s{i}.npz").split for i in range(3)] == ["train", "validation", "test"]


def test_a_test_cell_stays_one_however_it_is_loaded(rng, tmp_path):
    import shutil

    from bigdens.data import read_snapshot

    # A shipped test cell by path: its split comes from the dataset.json next to it.
    assert read_snapshot(SHIPPED_TEST).split == "test"
    assert load([SHIPPED_TEST])[0].split == "test"
    # No caller relabels it; --split validation filters it out instead of relabelling it.
    assert read_snapshot(SHIPPED_TEST, split="validation").split == "test"
    assert load([SHIPPED_TEST], split="validation") == []
    assert [s.name for s in load([SHIPPED_TEST, SHIPPED_TRAIN], split="test")] == ["al32-T0300-01"]
    # A train cell can be put in another split (the active-learning loop's calibration picks).
    assert read_snapshot(SHIPPED_TRAIN).split == "train"
    assert read_snapshot(SHIPPED_TRAIN, split="validation").split == "validation"
    # A file that records "test" keeps it under another name, in a folder without a manifest.
    write_dataset(tmp_path / "ds", [make_snapshot(rng, name="t", split="test")])
    (tmp_path / "elsewhere").mkdir()
    copy = shutil.copy(tmp_path / "ds" / "t.npz", tmp_path / "elsewhere" / "renamed.npz")
    assert read_snapshot(copy, split="train").split == "test"
    assert load([copy], split="validation") == []
    # "test" wins whether the file or the manifest says it, and the other says otherwise.
    write_dataset(tmp_path / "ds2", [make_snapshot(rng, name="u", split="train")])
    for ds, name, split in (("ds", "t", "train"), ("ds2", "u", "test")):
        manifest = read_manifest(tmp_path / ds)
        manifest["snapshots"][0]["split"] = split
        write_manifest(tmp_path / ds, manifest)
        assert read_snapshot(tmp_path / ds / f"{name}.npz", split="validation").split == "test"
        assert load([tmp_path / ds], split="train") == [] and len(load([tmp_path / ds], split="test")) == 1


def test_a_file_must_match_its_manifest_entry(rng, tmp_path):
    import shutil

    from bigdens.data import read_dataset, read_snapshot

    write_dataset(tmp_path / "ds", [make_snapshot(rng, name="a", split="test"),
                                    make_snapshot(rng, name="b", atoms=fcc_al((1, 1, 1)), shape=(6, 6, 6))])
    entry = read_manifest(tmp_path / "ds")["snapshots"][0]
    assert len(entry["digest"]) == 64
    # Another structure put in place of a test cell cannot take the train split of its own file.
    b = read_snapshot(tmp_path / "ds" / "b.npz")
    shutil.copy(tmp_path / "ds" / "b.npz", tmp_path / "ds" / "a.npz")
    with pytest.raises(InputError, match="does not match its entry in .*dataset.json.*digest"):
        read_snapshot(tmp_path / "ds" / "a.npz")
    with pytest.raises(InputError, match="does not match its entry"):
        read_dataset(tmp_path / "ds")
    # Manifests written before digests: the size is checked.
    old = tmp_path / "old"
    write_dataset(old, [make_snapshot(rng, name="a", split="test")])
    m = read_manifest(old)
    del m["snapshots"][0]["digest"]
    write_manifest(old, m)
    _without_split(tmp_path / "ds" / "b.npz", old / "a.npz")
    with pytest.raises(InputError, match="n_atoms 4, listed 8"):
        read_snapshot(old / "a.npz")
    assert b.split == "train"


def test_structure_digest_is_the_structure_only(rng):
    import dataclasses

    from bigdens.data import structure_digest
    from bigdens.store import structure_hash

    s = make_snapshot(rng)
    d = structure_digest(s)
    assert d == structure_hash(s.cell, s.positions, s.numbers)
    assert structure_digest(dataclasses.replace(s, name="other", split="test", density=s.density * 2)) == d
    moved = s.positions.copy()
    moved[0, 0] += 1e-9
    assert structure_digest(dataclasses.replace(s, positions=moved)) != d


def test_the_registry_of_shipped_test_cells_is_current():
    """bigdens/test_cells.json holds the digest of every test-split snapshot of datasets/ and nothing else;
    rewrite it with `.venv/bin/python -c "from bigdens import data; data.write_test_cells('datasets')"`."""
    from bigdens.data import find_test_cells, read_dataset, shipped_test_cells, structure_digest

    found = find_test_cells(ROOT / "datasets")
    registry = shipped_test_cells()
    assert registry == {c["digest"]: c["cell"] for c in found}, "bigdens/test_cells.json is out of date"
    folders = sorted(p.parent for p in (ROOT / "datasets").glob("*/dataset.json"))
    entries = [(f.name, e) for f in folders for e in read_manifest(f)["snapshots"]]
    tests = {f"{f}/{e['name']}": e.get("digest") for f, e in entries if e["split"] == "test"}
    # Every test cell's structure is listed, once (a relabelled copy shares its original's digest),
    # under a cell that is a test cell; at least the 20-odd v1 test cells.
    assert set(registry.values()) <= set(tests) and len(registry) >= 20
    assert {d for d in tests.values() if d is not None} <= set(registry)
    # No shipped train or validation cell has a test cell's structure (they would be refused).
    for f in folders:
        for s in read_dataset(f):
            assert (structure_digest(s) in registry) == (s.split == "test"), s.name


def test_a_missing_registry_is_a_broken_installation(tmp_path):
    from bigdens.data import shipped_test_cells
    from bigdens.errors import SetupError

    with pytest.raises(SetupError, match="registry of the shipped test cells .* reinstall it"):
        shipped_test_cells(tmp_path / "test_cells.json")
    (tmp_path / "test_cells.json").write_text('{"format": "other"}')
    with pytest.raises(SetupError, match="format 'other'"):
        shipped_test_cells(tmp_path / "test_cells.json")
    shipped_test_cells().clear()  # a copy: the registry itself stays
    assert len(shipped_test_cells()) >= 20


def test_refuse_test_cells(rng):
    import dataclasses

    from bigdens.data import read_snapshot, refuse_test_cells

    refuse_test_cells([make_snapshot(rng, split="validation"), read_snapshot(SHIPPED_TRAIN)], todo="do that")
    with pytest.raises(InputError, match=r"^snapshot x is in the test split: do that$"):
        refuse_test_cells([make_snapshot(rng, name="x", split="test")], todo="do that")
    copy = dataclasses.replace(read_snapshot(SHIPPED_TEST), name="mine", split="validation")
    with pytest.raises(InputError, match=r"^snapshot mine \(= al32/al32-T0300-01\) is a copy of a test cell shipped "
                                         r"in datasets/ \(the same structure\): do that$"):
        refuse_test_cells([copy], todo="do that")


def _refused(capsys, argv, command):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"bigdens {command}: error: "), err
    return err


def test_calibrate_refuses_test_cells_by_path_and_renamed_copies(tmp_path, capsys):
    import shutil

    model = ROOT / "bigdens" / "models" / "al.safetensors"
    out = tmp_path / "cal.safetensors"
    cheap = ["--mc-samples", "2", "--threads", "1"]  # (should a refusal fail to come)
    err = _refused(capsys, ["calibrate", str(model), str(SHIPPED_TEST), *cheap, "-o", str(out)], "calibrate")
    assert "snapshot al32-T0300-01 is in the test split" in err
    # A renamed copy in a folder without a manifest, of the old format (no recorded split), labelled validation.
    (tmp_path / "mine").mkdir()
    copy = shutil.copy(SHIPPED_TEST, tmp_path / "mine" / "val-0.npz")
    for extra in ([], ["--split", "validation"]):
        err = _refused(capsys, ["calibrate", str(model), str(copy), *extra, *cheap, "-o", str(out)], "calibrate")
        assert "snapshot val-0 (= al32/al32-T0300-01) is a copy of a test cell shipped in datasets/" in err
    assert not out.exists()


def test_train_refuses_a_test_cell_as_training_or_validation_data(tmp_path, capsys):
    import shutil

    al4 = ROOT / "tests" / "data" / "al4"
    out = tmp_path / "m.safetensors"
    copy = shutil.copy(SHIPPED_TEST, tmp_path / "renamed.npz")
    shipped = str(ROOT / "bigdens" / "models" / "al.safetensors")
    for argv, why in ((["train", str(al4), "--val", str(SHIPPED_TEST)], "is in the test split"),
                      (["train", str(copy), "--val", str(al4)], "is a copy of a test cell"),
                      (["finetune", shipped, str(SHIPPED_TEST), "--val", str(al4)], "is in the test split")):
        cheap = ["--epochs", "1", "--points-per-epoch", "1000", "--threads", "1"]  # (should a refusal fail to come)
        err = _refused(capsys, [*argv, *cheap, "-o", str(out)], argv[0])
        assert why in err and "never on test data" in err, err
    assert not out.exists()
