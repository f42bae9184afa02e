"""Trajectories (issue 18, item 1): one store with a frame dimension, units (frame, block), per-frame checks."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from ase.io import write

from bigdens import engine, store, structure
from bigdens.errors import InputError, SetupError
from bigdens.trajectory import Trajectory, parse_frames, read_trajectory

from helpers import config

#: 18³ grid in 8 blocks per frame: small enough for a busy 2-core machine.
BLOCK = 9


def frames(atoms, n=3):
    """``n`` rattled copies of ``atoms`` (same cell), with MD time (fs) and step in their info."""
    out = []
    for k in range(n):
        a = structure.rattle(atoms, 0.04, seed=10 + k)
        a.info.update(time=2.5 * k, step=100 * k)
        out.append(a)
    return out


def trajectory(atoms, n=3):
    fr = frames(atoms, n)
    return Trajectory(frames=fr, index=list(range(n)), time=[2.5 * k for k in range(n)],
                      step=[100 * k for k in range(n)])


def frame_arrays(path, k=None):
    root = zarr.open_group(str(path), mode="r")
    sel = () if k is None else (k,)
    out = {name: root[name][sel] for name in store.VARIABLES}
    out["charge"] = root["charge"][sel]
    out["charge_std"] = root["charge_std"][sel]
    out["positions"] = root["positions"][sel]
    return out


def assert_same(a, b):
    for name in a:
        assert np.array_equal(a[name], b[name], equal_nan=True), name


@pytest.mark.slow  # end to end; the fast lane leaves it to CI
def test_three_frames_equal_three_single_predictions_bit_for_bit(tmp_path, model, atoms):
    traj = trajectory(atoms)
    summary = engine.run(traj, config(tmp_path / "t.zarr", model, block=BLOCK, workers=2))
    assert summary.complete and summary.n_blocks == 3 * 8 and summary.n_computed == 24
    attrs = store.read_attrs(tmp_path / "t.zarr")
    assert attrs["n_frames"] == 3 and len(attrs["n_electrons_predicted"]) == 3
    assert len(attrs["bond_spread"]) == 3 and len(set(attrs["bond_spread"])) == 3  # per frame
    for k, atoms_k in enumerate(traj.frames):
        single = engine.run(atoms_k, config(tmp_path / f"s{k}.zarr", model, block=BLOCK))
        assert_same(frame_arrays(tmp_path / "t.zarr", k), frame_arrays(tmp_path / f"s{k}.zarr"))
        assert attrs["n_electrons_predicted"][k] == single.n_electrons_predicted
        assert attrs["bond_spread"][k] == store.read_attrs(tmp_path / f"s{k}.zarr")["bond_spread"]
        assert summary.frames[k]["n_electrons_predicted"] == single.n_electrons_predicted
    import xarray as xr

    ds = xr.open_zarr(tmp_path / "t.zarr")
    assert ds["density"].dims == ("frame", "x", "y", "z") and ds["charge"].dims == ("frame", "atom")
    assert ds["time"].values.tolist() == [0.0, 2.5, 5.0] and ds["step"].values.tolist() == [0, 100, 200]
    assert "frame 2 (file frame 2, time 5, step 200): electrons predicted" in summary.format()
    assert store.verify(tmp_path / "t.zarr").ok


def test_interrupted_trajectory_resumes_per_unit_to_identical_store(tmp_path, model, atoms):
    traj = trajectory(atoms)
    ref = tmp_path / "ref.zarr"
    engine.run(traj, config(ref, model, block=BLOCK))
    out = tmp_path / "o.zarr"
    part = engine.run(traj, config(out, model, block=BLOCK, max_blocks=11))  # frame 0 and 3 blocks of frame 1
    assert not part.complete and part.n_done == 11
    report = store.verify(out)
    assert report.missing == list(range(11, 24)) and report.label(11) == "unit 11 (frame 1, block 3)"
    rest = engine.run(traj, config(out, model, block=BLOCK, resume=True))
    assert rest.complete and rest.n_computed == 24 - 11
    assert_same(frame_arrays(ref), frame_arrays(out))
    assert store.verify(out).ok
    other = Trajectory(frames=traj.frames[:2], index=[0, 1])
    with pytest.raises(SetupError, match="cannot resume"):
        engine.run(other, config(out, model, block=BLOCK, resume=True))


def test_trajectory_file_frames_and_refusals(tmp_path, atoms):
    fr = frames(atoms, 4)
    write(tmp_path / "md.xyz", fr, format="extxyz")
    t = read_trajectory(tmp_path / "md.xyz", frames=parse_frames("1::2"))
    assert t.index == [1, 3] and t.time == [2.5, 7.5] and t.step == [100, 300]
    np.testing.assert_allclose(t.frames[1].positions, fr[3].positions, atol=1e-6)  # extxyz rounds
    with pytest.raises(InputError, match=r"frame 9 is out of range: .* holds 4 frames \(0 to 3\)"):
        read_trajectory(tmp_path / "md.xyz", frames=parse_frames("0:9"))
    with pytest.raises(InputError, match="selects no frame"):
        read_trajectory(tmp_path / "md.xyz", frames=parse_frames("2:2"))
    with pytest.raises(SetupError, match="START:STOP:STEP"):
        parse_frames("a:b")
    bad = [a.copy() for a in fr]
    bad[2].set_cell(bad[2].cell[:] * 1.01, scale_atoms=True)
    write(tmp_path / "npt.xyz", bad, format="extxyz")
    with pytest.raises(InputError, match="the cell of frame 2 differs from frame 0's"):
        read_trajectory(tmp_path / "npt.xyz", frames=parse_frames(":"))


def test_lammps_dump_gives_steps(tmp_path, atoms):
    fr = frames(atoms, 2)
    lines = []
    for k, a in enumerate(fr):
        lines += ["ITEM: TIMESTEP", str(50 * k), "ITEM: NUMBER OF ATOMS", str(len(a)),
                  "ITEM: BOX BOUNDS pp pp pp"] + [f"0 {a.cell[i, i]}" for i in range(3)]
        lines += ["ITEM: ATOMS id type x y z"] + [f"{i + 1} 1 {x} {y} {z}" for i, (x, y, z) in enumerate(a.positions)]
    (tmp_path / "dump.lammpstrj").write_text("\n".join(lines) + "\n")
    t = read_trajectory(tmp_path / "dump.lammpstrj", frames=slice(None), format="lammps-dump-text")
    assert t.step == [0, 50] and t.index == [0, 1] and t.time is None


def test_cli_predict_frames_then_plot_export_charges_verify(tmp_path, model, atoms, capsys):
    from ase.io.cube import read_cube_data
    from ase.units import Bohr

    from bigdens.cli import main

    from helpers import SPACING

    fr = frames(atoms, 3)
    write(tmp_path / "md.xyz", fr, format="extxyz")
    out = tmp_path / "t.zarr"
    argv = ["predict", str(tmp_path / "md.xyz"), "--frames", "1:3", "--model", str(model), "--spacing",
            str(SPACING), "--block", str(BLOCK), "--mc-samples", "5", "--seed", "3", "--workers", "0",
            "--allow-out-of-domain", "-o", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "16/16 (frame, block) units of 2 frames" in text and "frame 1 (file frame 2, time 5, step 200)" in text
    root = zarr.open_group(str(out), mode="r")
    assert root["frame"][:].tolist() == [1, 2] and root["density"].shape[0] == 2
    assert main(["verify", str(out)]) == 0
    capsys.readouterr()
    # Without --frame a trajectory store is refused with one line; --frame K picks the store's K-th frame.
    assert main(["export", str(out), "--cube", str(tmp_path / "d.cube")]) == 2
    assert "holds 2 frames: choose one with --frame K (0 to 1)" in capsys.readouterr().err
    assert main(["export", str(out), "--cube", str(tmp_path / "d.cube"), "--frame", "1"]) == 0
    data, cube_atoms = read_cube_data(str(tmp_path / "d.cube"))
    np.testing.assert_allclose(data, root["density"][1] * Bohr**3, rtol=1e-5)  # cube files: e/Bohr³
    np.testing.assert_allclose(cube_atoms.positions, fr[2].positions, atol=1e-4)
    assert main(["export", str(out), "--cube", str(tmp_path / "e.cube"), "--frame", "2"]) == 2
    assert "--frame 2 is out of range" in capsys.readouterr().err
    assert main(["plot", str(out), "--frame", "0", "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0 and "frame 0" in capsys.readouterr().out
    assert main(["charges", str(out), "--frame", "-1", "-o", str(tmp_path / "q.csv")]) == 0
    assert "frame 1 (file frame 2)" in capsys.readouterr().out
    import csv

    rows = list(csv.DictReader((tmp_path / "q.csv").open()))
    np.testing.assert_allclose([float(r["charge_e"]) for r in rows], root["charge"][1], rtol=1e-9)
    assert main(["charges", str(out)]) == 2


@pytest.mark.slow  # end to end; the fast lane leaves it to CI
def test_renormalized_trajectory_frames_equal_renormalized_single_predictions(tmp_path, model, atoms):
    # --renormalize with --frames scales each frame by its own factor, n_expected / its raw integral: frame k
    # equals a renormalized prediction of frame k alone bit for bit, and integrates to the valence count.
    traj = trajectory(atoms)
    summary = engine.run(traj, config(tmp_path / "t.zarr", model, block=BLOCK, workers=2, renormalize=True))
    assert summary.complete and len(summary.renormalization_factor) == 3
    assert len(set(summary.renormalization_factor)) == 3  # each frame its own factor
    attrs = store.read_attrs(tmp_path / "t.zarr")
    expected = attrs["n_electrons_expected"]
    for k, atoms_k in enumerate(traj.frames):
        single = engine.run(atoms_k, config(tmp_path / f"s{k}.zarr", model, block=BLOCK, renormalize=True))
        assert summary.renormalization_factor[k] == single.renormalization_factor
        assert_same(frame_arrays(tmp_path / "t.zarr", k), frame_arrays(tmp_path / f"s{k}.zarr"))
        density = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")["density"][k]
        dv = abs(np.linalg.det(atoms_k.cell[:])) / density.size
        assert abs(density.sum(dtype=np.float64) * dv - expected) < 1e-5 * expected
    assert f"(renormalized by a factor {summary.renormalization_factor[2]:.6f})" in summary.format()
    assert store.verify(tmp_path / "t.zarr").ok
