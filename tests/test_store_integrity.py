"""export, plot and verify on really damaged stores: chunks deleted, flipped, swapped, truncated; metadata edited."""

from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest
import zarr
from ase.io.cube import read_cube_data
from ase.units import Bohr

from bigdens import engine, store, structure
from bigdens.errors import BigdensError
from bigdens.cli import main
from bigdens.io import cube

from helpers import config as engine_config, make_model

REPAIR = "repair it with `bigdens verify --repair"


def config(out, model, **kw):
    # The random test model is out of the domain checks' range: they are not what is tested here.
    return engine_config(out, model, **{"domain_check": False, **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A complete 18³ store in 27 blocks of 8³ (one chunk each), its model and atoms; tests work on copies."""
    d = tmp_path_factory.mktemp("store")
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=2)
    model = make_model(d / "m.safetensors")
    engine.run(atoms, config(d / "o.zarr", model))
    return d / "o.zarr", model, atoms


@pytest.fixture
def out(built, tmp_path):
    shutil.copytree(built[0], tmp_path / "o.zarr")
    return tmp_path / "o.zarr"


def block_at(path, start):
    return {b.start: b.index for b in store.blocks_of(store.read_attrs(path))}[start]


def chunk(path, name, i, j, k):
    return path / name / "c" / str(i) / str(j) / str(k)


def run_cli(capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    got = capsys.readouterr()
    return rc, got.out, got.err


def assert_one_line(err, command, *parts):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bigdens {command}: error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix in (".cube", ".png"))


def damage(path, kind):
    """Damage the store as `kind` says; return the damaged blocks of 'density' (by start) it must name."""
    if kind == "deleted-chunk":
        chunk(path, "density", 1, 0, 2).unlink()
        return [(8, 0, 16)]
    if kind == "flipped-bytes":
        f = chunk(path, "density", 0, 1, 1)
        data = bytearray(f.read_bytes())
        for pos in range(len(data) // 2, len(data) // 2 + 8):
            data[pos] ^= 0xFF
        f.write_bytes(bytes(data))
        return [(0, 8, 8)]
    if kind == "swapped-chunks":
        a, b = chunk(path, "density", 0, 0, 0), chunk(path, "density", 2, 2, 0)
        tmp = a.read_bytes()
        a.write_bytes(chunk(path, "density", 0, 0, 1).read_bytes())
        chunk(path, "density", 0, 0, 1).write_bytes(tmp)
        return [(0, 0, 0), (0, 0, 8)]
    if kind == "truncated-chunk":
        f = chunk(path, "density", 2, 1, 0)
        f.write_bytes(f.read_bytes()[:10])
        return [(16, 8, 0)]
    if kind == "missing-ledger-entry":
        store.ledger_file(path, block_at(path, (8, 8, 8))).unlink()
        return [(8, 8, 8)]
    raise AssertionError(kind)


KINDS = ["deleted-chunk", "flipped-bytes", "swapped-chunks", "truncated-chunk", "missing-ledger-entry"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_blocks_stop_export_plot_and_verify_with_one_line(out, tmp_path, capsys, kind):
    starts = damage(out, kind)
    named = [f"block {block_at(out, s)}:" for s in starts]
    rc, _, err = run_cli(capsys, "export", out, "--cube", tmp_path / "d.cube")
    assert rc == 2
    line = assert_one_line(err, "export", f"{str(out)!r} is damaged: {len(starts)} of 27 blocks", *named,
                           f"{REPAIR} {out}`, then `bigdens predict ... --resume`")
    assert "Traceback" not in err and "nan" not in line.lower()
    # The plane through the damaged blocks: plot stops too (z index of the first block).
    z = starts[0][2] + 1
    rc, _, err = run_cli(capsys, "plot", out, "--plane", f"z={z / 18}", "-o", tmp_path / "p.png")
    assert rc == 2
    assert_one_line(err, "plot", "is damaged", named[0], REPAIR)
    assert leftovers(tmp_path) == []  # no cube, no image, no hidden temporary
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1
    for s in starts:
        where = "missing blocks:" if kind == "missing-ledger-entry" else f"corrupt block {block_at(out, s)}:"
        assert where in text and str(block_at(out, s)) in text
    assert store.read_attrs(out)["complete"] is False  # verify marked it


def test_plot_of_a_plane_away_from_the_damage_still_works(out, tmp_path, capsys):
    damage(out, "deleted-chunk")  # block starting at z=16
    rc, _, err = run_cli(capsys, "plot", out, "--plane", "z=0.0", "-o", tmp_path / "p.png")
    assert rc == 0, err
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_clean_store_exports_and_plots_as_before(out, tmp_path, capsys, built):
    root = zarr.open_group(str(out), mode="r")
    rc, _, err = run_cli(capsys, "export", out, "--cube", tmp_path / "d.cube")
    assert rc == 0 and err == ""
    # Byte for byte what the writer makes from the raw array (the unchecked path of before).
    atoms = built[2]
    cube.write_cube(tmp_path / "raw.cube", atoms, root["density"],
                    comment="bigdens density: " + store.VARIABLES["density"] + " (Bohr, e/Bohr^3)")
    assert (tmp_path / "d.cube").read_bytes() == (tmp_path / "raw.cube").read_bytes()
    data, _ = read_cube_data(str(tmp_path / "d.cube"))
    np.testing.assert_allclose(data, root["density"][:] * Bohr**3, rtol=1e-6)
    reader = store.open_checked(out)
    names = ("density", "density_std", "density_std_epistemic")
    for axis in range(3):
        for index in (0, 7, 8, 17):
            planes = reader.plane(names, axis, index)
            sel = [slice(None)] * 3
            sel[axis] = index
            for name in names:
                assert np.array_equal(planes[name], root[name][tuple(sel)])
    rc, _, err = run_cli(capsys, "plot", out, "--plane", "y=0.5", "-o", tmp_path / "p.png")
    assert rc == 0 and err == "" and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 0 and "0 other problems" in text and "ok: every block" in text
    assert leftovers(tmp_path) == ["d.cube", "p.png", "raw.cube"]


def test_incomplete_store_plots_written_blocks_checked_and_unwritten_blank(built, tmp_path, capsys):
    _, model, atoms = built
    part = tmp_path / "part.zarr"
    engine.run(atoms, config(part, model, max_blocks=3))  # blocks 0, 1, 2: x 0-7, y 0-7, z all
    reader = store.open_checked(part, blocks=False)
    planes = reader.plane(["density"], 2, 3)["density"]
    assert np.isfinite(planes[:8, :8]).all() and np.isnan(planes[8:]).all()
    chunk(part, "density", 0, 0, 0).write_bytes(b"garbage")
    rc, _, err = run_cli(capsys, "plot", part, "--plane", "z=0.1", "-o", tmp_path / "p.png")
    assert rc == 2
    assert_one_line(err.split("\n", 1)[1], "plot", "block 0: density chunk unreadable", REPAIR)
    assert not (tmp_path / "p.png").exists()


def test_deleted_variable_folder_is_named_and_repaired(out, built, tmp_path, capsys):
    _, model, atoms = built
    rc, _, _ = run_cli(capsys, "export", out, "--cube", tmp_path / "clean.cube")
    assert rc == 0
    shutil.rmtree(out / "density_std")
    chunk(out, "density", 1, 1, 1).unlink()
    for args in (["export", out, "--cube", tmp_path / "d.cube", "--var", "density_std"],
                 ["export", out, "--cube", tmp_path / "d.cube"],
                 ["plot", out, "-o", tmp_path / "p.png"]):
        rc, _, err = run_cli(capsys, *args)
        assert rc == 2
        assert_one_line(err, args[0], "is damaged (density_std: array missing (no folder)", REPAIR)
    assert leftovers(tmp_path) == ["clean.cube"]
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1 and "problem in density_std: array missing (no folder)" in text
    assert f"corrupt block {block_at(out, (8, 8, 8))}: density checksum differs" in text
    rc, text, _ = run_cli(capsys, "verify", out, "--repair")
    assert rc == 1 and "rebuilt density_std" in text and "dropped every ledger entry" in text
    assert store.read_ledger(out) == {}
    result = engine.run(atoms, config(out, model, resume=True))
    assert result.complete and result.n_computed == 27
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 0, text
    rc, _, _ = run_cli(capsys, "export", out, "--cube", tmp_path / "d.cube")
    assert rc == 0 and (tmp_path / "d.cube").read_bytes() == (tmp_path / "clean.cube").read_bytes()


def test_corrupt_blocks_repaired_by_verify_and_resume(out, built, tmp_path, capsys):
    _, model, atoms = built
    before = {name: zarr.open_group(str(out), mode="r")[name][:] for name in store.VARIABLES}
    damage(out, "swapped-chunks")
    damage(out, "truncated-chunk")
    rc, text, _ = run_cli(capsys, "verify", out, "--repair")
    assert rc == 1 and "dropped 3 ledger entries" in text
    result = engine.run(atoms, config(out, model, resume=True))
    assert result.n_computed == 3 and result.complete
    assert run_cli(capsys, "verify", out)[0] == 0
    root = zarr.open_group(str(out), mode="r")
    for name in store.VARIABLES:
        assert np.array_equal(root[name][:], before[name]), name


def edit_json(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("kind, problem", [
    ("x-value", "problem in x: coordinates are not the grid's (index 3"),
    ("density-fill", "problem in density: fill_value is 0.0, expected 'NaN'"),
    ("density-chunks", "problem in density: chunks is (6, 6, 6), expected (8, 8, 8)"),
    ("std-units", "problem in density_std: units is 'bohr', expected 'electron/angstrom^3'"),
    ("epi-json", "problem in density_std_epistemic: unreadable zarr.json (JSONDecodeError)"),
    ("consolidated", "problem in zarr.json: consolidated metadata of 'density_std_aleatoric': dimension_names"),
    ("numbers-missing", "problem in numbers: array missing (no zarr.json)"),
])
def test_metadata_and_coordinate_damage_is_reported_and_repaired(out, built, tmp_path, capsys, kind, problem):
    _, model, atoms = built
    if kind == "x-value":
        arr = zarr.open_array(str(out / "x"), mode="r+")
        arr[3] = arr[3] + 0.1
    elif kind == "density-fill":
        edit_json(out / "density" / "zarr.json", lambda m: m.update(fill_value=0.0))
    elif kind == "density-chunks":
        edit_json(out / "density" / "zarr.json",
                  lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[6, 6, 6]))
    elif kind == "std-units":
        edit_json(out / "density_std" / "zarr.json", lambda m: m["attributes"].update(units="bohr"))
    elif kind == "epi-json":
        f = out / "density_std_epistemic" / "zarr.json"
        f.write_text(f.read_text()[:40])
    elif kind == "consolidated":
        edit_json(out / "zarr.json", lambda m: m["consolidated_metadata"]["metadata"]["density_std_aleatoric"]
                  .update(dimension_names=["a", "b", "c"]))
    elif kind == "numbers-missing":
        (out / "numbers" / "zarr.json").unlink()
    rc, text, err = run_cli(capsys, "verify", out)
    assert rc == 1 and problem in text and "Traceback" not in err, text + err
    rc, _, err = run_cli(capsys, "export", out, "--cube", tmp_path / "d.cube")
    assert rc == 2
    line = assert_one_line(err, "export", "is damaged (")
    rc, _, err = run_cli(capsys, "plot", out, "-o", tmp_path / "p.png")
    assert rc == 2
    assert_one_line(err, "plot", "is damaged (")
    assert leftovers(tmp_path) == []
    if kind == "numbers-missing":
        assert "predict it again with `bigdens predict ... --overwrite`" in line
        rc, text, _ = run_cli(capsys, "verify", out, "--repair")
        assert rc == 1 and "cannot repair numbers" in text
        return
    assert REPAIR in line
    rc, text, _ = run_cli(capsys, "verify", out, "--repair")
    assert rc == 1
    engine.run(atoms, config(out, model, resume=True))
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 0, text
    assert run_cli(capsys, "export", out, "--cube", tmp_path / "d.cube")[0] == 0


def test_moved_atom_fails_the_structure_hash(out, tmp_path, capsys):
    arr = zarr.open_array(str(out / "positions"), mode="r+")
    arr[5, 0] = arr[5, 0] + 0.01
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1 and "problem in positions/numbers: the atoms do not match the store's structure hash" in text
    assert "cannot repair positions/numbers" in text
    rc, _, err = run_cli(capsys, "export", out, "--cube", tmp_path / "d.cube")
    assert rc == 2
    assert_one_line(err, "export", "positions/numbers: the atoms do not match",
                    "predict it again with `bigdens predict ... --overwrite`")


@pytest.mark.parametrize("command", ["export", "plot"])
def test_interrupted_write_leaves_the_old_file_and_no_temporary(out, tmp_path, capsys, monkeypatch, command):
    target = tmp_path / ("d.cube" if command == "export" else "p.png")
    target.write_bytes(b"the old file")

    def interrupted(fh, *args, **kwargs):
        fh.write("partial " if command == "export" else b"partial")  # a part written, then Ctrl-C
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("SIGINT was not delivered")

    if command == "export":
        monkeypatch.setattr(cube, "_write_cube", interrupted)
        args = ["export", out, "--cube", target]
    else:
        from matplotlib.figure import Figure

        monkeypatch.setattr(Figure, "savefig", lambda self, fh, **kw: interrupted(fh))
        args = ["plot", out, "-o", target]
    rc, _, err = run_cli(capsys, *args)
    assert rc == 130 and err.startswith(f"bigdens {command}: interrupted"), err
    assert target.read_bytes() == b"the old file"
    assert leftovers(tmp_path) == [target.name]


@pytest.mark.parametrize("command", ["export", "plot"])
def test_unwritable_destination_one_line(out, tmp_path, capsys, command):
    flag = "--cube" if command == "export" else "-o"
    name = "d.cube" if command == "export" else "p.png"
    (tmp_path / name).mkdir()  # a folder where the file should go: even root cannot write it
    rc, _, err = run_cli(capsys, command, out, flag, tmp_path / name)
    assert rc == 2
    assert_one_line(err, command, f"cannot write {str(tmp_path / name)!r}: it is a folder")
    (tmp_path / "afile").write_text("x")  # the folder is a file
    rc, _, err = run_cli(capsys, command, out, flag, tmp_path / "afile" / name)
    assert rc == 2
    assert_one_line(err, command, "its folder does not exist; create it first")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _permissions_bind_root_too(monkeypatch):
    """As root, make ``os.access`` answer as it does for an unprivileged owner: by the owner's mode bits.

    Root writes into read-only folders and files, so as root (which CI always is) a chmod refuses
    nothing.  The commands ask ``os.access`` before they write (:func:`bigdens._files.atomic_write`);
    as root the test gives them the answer a user gets.  As a user it runs on the real permissions.
    """
    import stat

    if os.geteuid() != 0:
        return

    def access(path, mode, **kw):
        try:
            st = os.stat(path)
        except OSError:
            return False
        bits = ((os.R_OK, stat.S_IRUSR), (os.W_OK, stat.S_IWUSR), (os.X_OK, stat.S_IXUSR))
        return all(st.st_mode & bit for flag, bit in bits if mode & flag)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("command", ["export", "plot"])
def test_read_only_destination_one_line(out, tmp_path, capsys, monkeypatch, command):
    flag = "--cube" if command == "export" else "-o"
    suffix = ".cube" if command == "export" else ".png"  # export picks its format by the name
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / f"old{suffix}").write_text("old")
    (folder / f"old{suffix}").chmod(0o444)
    _permissions_bind_root_too(monkeypatch)
    rc, _, err = run_cli(capsys, command, out, flag, folder / f"old{suffix}")  # a read-only file, writable folder
    assert rc == 2 and "permission denied" in assert_one_line(err, command)
    folder.chmod(0o555)
    try:
        rc, _, err = run_cli(capsys, command, out, flag, folder / f"new{suffix}")  # a new file, read-only folder
        assert rc == 2 and "permission denied" in assert_one_line(err, command)
    finally:
        folder.chmod(0o755)
    assert (folder / f"old{suffix}").read_text() == "old"
    assert sorted(p.name for p in folder.iterdir()) == [f"old{suffix}"]


# -- provenance: the ledger's run, the numbers derived from the data, resume, the ledger folder ----------

@pytest.fixture(scope="module")
def other(built, tmp_path_factory):
    """A store of the same shape from another run: other atoms, the same model, grid and blocks."""
    _, model, atoms = built
    d = tmp_path_factory.mktemp("other")
    moved = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=3)
    engine.run(moved, config(d / "o.zarr", model))
    return d / "o.zarr"


def copy_unit(src, dst, start):
    """Copy the block at ``start`` (one 8³ chunk) with its ledger entry and charges file from ``src`` to ``dst``."""
    index = block_at(dst, start)
    for name in store.VARIABLES:
        shutil.copyfile(chunk(src, name, *(s // 8 for s in start)), chunk(dst, name, *(s // 8 for s in start)))
    shutil.copyfile(store.ledger_file(src, index), store.ledger_file(dst, index))
    shutil.copyfile(store.charges_file(src, index), store.charges_file(dst, index))
    return index


def test_block_copied_with_its_ledger_entry_from_another_run_fails_verify(out, other, capsys):
    index = copy_unit(other, out, (8, 0, 8))
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1 and f"corrupt block {index}: its ledger entry was recorded by another run" in text, text
    # The run id is what tells it: the copy is consistent in itself (checksums, sums, charges file), so an
    # entry edited to claim this store's run passes the block checks.
    run_id = store.read_attrs(out)["run_id"]
    edit_json(store.ledger_file(out, index), lambda e: e.update(run_id=run_id))
    report = store.verify(out)
    assert report.corrupt == [], report.corrupt


@pytest.mark.parametrize("field, value", [("density_sum", 1.001), ("negative_sum", -1.0), ("max_std", 0.5),
                                          ("max_std_index", [0, 0, 0])])
def test_edited_ledger_numbers_fail_verify(out, capsys, field, value):
    index = block_at(out, (8, 8, 0))
    entry = json.loads(store.ledger_file(out, index).read_text())
    if field == "density_sum":
        value = entry["density_sum"] * value  # 0.1 % more electrons in one block
    if field == "max_std_index" and entry["max_std_index"] == value:
        value = [1, 1, 1]
    edit_json(store.ledger_file(out, index), lambda e: e.update({field: value}))
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1 and f"corrupt block {index}: its ledger's" in text and "(ledger entry edited)" in text, text


@pytest.mark.parametrize("key, change", [
    ("n_electrons_predicted", lambda v: v * 1.01),
    ("in_domain", lambda v: not v),
    ("max_std", lambda v: v * 0.5),
])
def test_edited_results_fail_verify_and_resume_writes_them_again(out, built, capsys, key, change):
    _, model, atoms = built
    before = store.read_attrs(out)
    store.update_attrs(out, **{key: change(before[key])})
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1 and "problem in attributes:" in text and "(edited" in text, text
    assert "marked the store incomplete" in text and "--resume` writes the run's results again" in text
    result = engine.run(atoms, config(out, model, resume=True))
    assert result.complete and result.n_computed == 0
    after = store.read_attrs(out)
    assert after[key] == before[key] and after["in_domain"] == before["in_domain"]
    assert run_cli(capsys, "verify", out)[0] == 0


def test_edited_charges_fail_verify_and_repair_rewrites_them(out, capsys):
    root = zarr.open_group(str(out), mode="r+")
    charge = root["charge"][:]
    edited = charge.copy()
    edited[3] += 0.25
    root["charge"][:] = edited
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1 and "problem in charge: differs from the sum of the blocks' charges files" in text, text
    rc, text, _ = run_cli(capsys, "verify", out, "--repair")
    assert rc == 1 and "rewrote charge, charge_std" in text
    assert np.array_equal(zarr.open_group(str(out), mode="r")["charge"][:], charge)  # bit for bit
    assert store.read_attrs(out)["complete"] is True
    assert run_cli(capsys, "verify", out)[0] == 0
    attrs = store.read_attrs(out)
    store.update_attrs(out, charges={**attrs["charges"], "n_electrons": 33.0})
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1 and "problem in charges.n_electrons: is 33.0" in text, text


def test_resume_recomputes_damaged_blocks_before_it_declares_the_store_complete(out, other, built, capsys):
    _, model, atoms = built
    before = {name: zarr.open_group(str(out), mode="r")[name][:] for name in store.VARIABLES}
    damage(out, "flipped-bytes")
    copied = copy_unit(other, out, (16, 16, 16))
    result = engine.run(atoms, config(out, model, resume=True))  # no verify first
    assert result.complete and result.n_computed == 2
    assert copied in store.read_ledger(out)
    assert run_cli(capsys, "verify", out)[0] == 0
    root = zarr.open_group(str(out), mode="r")
    for name in store.VARIABLES:
        assert np.array_equal(root[name][:], before[name]), name


def test_deleted_ledger_folder_is_named_rebuilt_and_resumed(out, built, capsys):
    _, model, atoms = built
    before = zarr.open_group(str(out), mode="r")["density"][:]
    shutil.rmtree(out / "ledger")
    rc, text, _ = run_cli(capsys, "verify", out)
    assert rc == 1 and "problem in ledger: folder missing" in text, text
    with pytest.raises(BigdensError) as refused:
        engine.run(atoms, config(out, model, resume=True))
    assert "ledger: folder missing" in str(refused.value) and "verify --repair" in str(refused.value)
    rc, text, _ = run_cli(capsys, "verify", out, "--repair")
    assert rc == 1 and "rebuilt ledger" in text, text
    result = engine.run(atoms, config(out, model, resume=True))
    assert result.complete and result.n_computed == 27
    assert np.array_equal(zarr.open_group(str(out), mode="r")["density"][:], before)
