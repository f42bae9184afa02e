"""predict / verify / export / plot as a user runs them: real subprocesses, a killed run resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from ase.io import write
from ase.io.cube import read_cube_data
from ase.units import Bohr

from bigdens import engine, store, structure

from helpers import BLOCK, SPACING, assert_identical, config, make_model, variables


def bigdens(*args, **kw):
    return subprocess.run([sys.executable, "-m", "bigdens", *args], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture
def files(tmp_path):
    atoms = structure.rattle(structure.fcc_al((2, 2, 2)), 0.05, seed=2)
    write(tmp_path / "al.xyz", atoms)
    make_model(tmp_path / "m.safetensors")
    return atoms, tmp_path / "al.xyz", tmp_path / "m.safetensors"


def predict_args(xyz, model, out, *extra):
    return ["predict", str(xyz), "--model", str(model), "--spacing", str(SPACING), "--block", str(BLOCK),
            "--out", str(out), "--mc-samples", "5", "--seed", "3", "--allow-out-of-domain", *extra]  # untrained model


@pytest.mark.slow  # end to end; the fast lane leaves it to CI
def test_predict_verify_export_plot(files, tmp_path):
    atoms, xyz, model = files
    out = tmp_path / "o.zarr"
    r = bigdens(*predict_args(xyz, model, out, "--workers", "0"))
    assert r.returncode == 0, r.stderr
    assert "complete: 27/27 blocks" in r.stdout and "electrons: expected 96" in r.stdout and "max σ" in r.stdout
    r = bigdens("verify", str(out))
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    r = bigdens("export", str(out), "--cube", str(tmp_path / "d.cube"))
    assert r.returncode == 0, r.stderr
    data, cube_atoms = read_cube_data(str(tmp_path / "d.cube"))
    rho = zarr.open_group(str(out), mode="r")["density"][:]
    np.testing.assert_allclose(data, rho * Bohr**3, rtol=1e-6)  # e/Å³ -> e/Bohr³
    np.testing.assert_allclose(cube_atoms.positions, atoms.positions, atol=1e-5)
    np.testing.assert_allclose(cube_atoms.cell[:], atoms.cell[:], atol=1e-6)
    r = bigdens("export", str(out), "--cube", str(tmp_path / "s.cube"), "--var", "density_std")
    assert r.returncode == 0, r.stderr
    r = bigdens("plot", str(out), "--plane", "z=0.5", "-o", str(tmp_path / "p.png"))
    assert r.returncode == 0 and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG", r.stderr
    (out / "density" / "c" / "1" / "0" / "0").unlink()
    r = bigdens("verify", str(out), "--repair")
    assert r.returncode == 1 and "1 corrupt" in r.stdout
    r = bigdens(*predict_args(xyz, model, out, "--workers", "0", "--resume"))
    assert r.returncode == 0 and "1 computed now" in r.stdout, r.stdout + r.stderr
    assert bigdens("verify", str(out)).returncode == 0


@pytest.mark.slow
def test_killed_run_resumes_on_the_cluster_identically(files, tmp_path):
    atoms, xyz, model = files
    out = tmp_path / "o.zarr"
    # Many samples make each block slow enough to kill the driver part way.
    args = predict_args(xyz, model, out, "--mc-samples", "1000")
    p = subprocess.Popen([sys.executable, "-m", "bigdens", *args, "--workers", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and len(store.read_ledger(out)) < 3:
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = len(store.read_ledger(out))
    assert 3 <= done < 27, "the run finished before it could be killed"
    assert store.read_attrs(out)["complete"] is False
    r = bigdens("verify", str(out))
    assert r.returncode == 1 and f"{27 - done} missing" in r.stdout
    r = bigdens(*args, "--workers", "2", "--resume")
    assert r.returncode == 0, r.stderr
    assert f"{27 - done} computed now" in r.stdout  # only the missing blocks
    # The reference reads the same file (extxyz rounds positions).
    engine.run(structure.read(xyz), config(tmp_path / "ref.zarr", model, mc_samples=1000))
    assert_identical(variables(tmp_path / "ref.zarr"), variables(out))
    assert bigdens("verify", str(out)).returncode == 0


@pytest.mark.parametrize(
    "case, message",
    [
        ("species", "species ['Si'] that the descriptor parameters do not know"),
        ("samples", "Monte Carlo samples must be an integer >= 1"),
        ("chunk", "not a multiple of the chunk"),
        ("unwritable", "does not exist (or is not a folder)"),
        ("not-a-store", "exists and is not a bigdens store"),
        ("other-seed", "cannot resume: the store was made with other settings (seed"),
        ("slurm", "unknown cluster profile 'big'; available: ["),
    ],
)
def test_bad_input_one_clear_line(files, tmp_path, case, message):
    atoms, xyz, model = files
    out = tmp_path / "o.zarr"
    extra = ["--workers", "0"]
    if case == "species":
        write(tmp_path / "si.xyz", structure.diamond_sige((1, 1, 1), x=0.0))
        xyz = tmp_path / "si.xyz"
    elif case == "samples":
        extra += ["--mc-samples", "0"]
    elif case == "chunk":
        extra += ["--block", "12", "--chunk", "8"]
    elif case == "unwritable":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "o.zarr"
    elif case == "not-a-store":
        out.write_text("precious")
    elif case == "other-seed":
        engine.run(structure.read(xyz), config(out, model, max_blocks=1))
        extra += ["--resume"]
    elif case == "slurm":
        extra = ["--cluster", "slurm:big"]
    args = predict_args(xyz, model, out, *extra)
    if case == "other-seed":
        args[args.index("--seed") + 1] = "4"
    r = bigdens(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigdens predict: error:") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    if case == "not-a-store":
        assert out.read_text() == "precious"
    if case != "other-seed":
        assert not (out.is_dir() and store.read_attrs(out) is not None)


def test_plot_of_an_unfinished_store_warns(files, tmp_path):
    atoms, _, model = files
    out = tmp_path / "part.zarr"
    engine.run(atoms, config(out, model, max_blocks=3))
    r = bigdens("plot", str(out), "--plane", "z=0.5", "-o", str(tmp_path / "p.png"))
    assert r.returncode == 0 and (tmp_path / "p.png").stat().st_size > 0
    assert "is incomplete: regions not written yet read NaN and show blank" in r.stderr
    done = tmp_path / "done.zarr"
    engine.run(atoms, config(done, model))
    r = bigdens("plot", str(done), "--plane", "z=0.5", "-o", str(tmp_path / "q.png"))
    assert r.returncode == 0 and "incomplete" not in r.stderr


def test_report_without_bokeh_is_refused_before_any_work(files, tmp_path, monkeypatch, capsys):
    from bigdens.cli import main

    monkeypatch.setitem(sys.modules, "bokeh", None)  # as if bokeh were not installed: its import fails
    _, structure_file, model_file = files
    out = tmp_path / "r.zarr"
    rc = main(["predict", str(structure_file), "--model", str(model_file), "-o", str(out), "--report",
               str(tmp_path / "r.html"), "--workers", "1"])  # a cluster: the report's other need
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--report" in err[0] and "pip install bokeh" in err[0], err
    assert not out.exists() and not (tmp_path / "r.html").exists()
