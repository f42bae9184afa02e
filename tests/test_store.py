"""The output store: xarray view, NaN fill, completion flag, ledger and verification."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from bigdens import engine, store, structure
from bigdens.errors import SetupError

from helpers import config


def test_open_zarr_dims_coords_units_and_nan_until_complete(tmp_path, model, atoms):  # noqa: F811
    out = tmp_path / "o.zarr"
    engine.run(atoms, config(out, model, max_blocks=2))
    ds = xr.open_zarr(out)
    assert set(store.VARIABLES) <= set(ds.data_vars)
    for name in store.VARIABLES:
        v = ds[name]
        assert v.dims == ("x", "y", "z") and v.dtype == np.float32
        assert v.attrs["units"] == "electron/angstrom^3" and v.attrs["long_name"]
    shape = tuple(ds.attrs["grid_shape"])
    assert ds.density.shape == shape
    lengths = np.linalg.norm(np.asarray(ds.attrs["cell"]), axis=1)
    for d, dim in enumerate("xyz"):
        assert ds[dim].attrs["units"] == "angstrom"
        np.testing.assert_allclose(ds[dim].values, np.arange(shape[d]) * lengths[d] / shape[d])
    assert ds.positions.dims == ("atom", "xyz") and ds.numbers.dims == ("atom",)
    np.testing.assert_array_equal(ds.positions.values, atoms.positions)
    assert ds.attrs["complete"] is False and ds.attrs["n_atoms"] == 32 and ds.attrs["species_counts"] == {"Al": 32}
    for key in ("pbc", "n_electrons_expected", "model_hash", "model_id", "descriptor", "mc_samples", "seed",
                "bigdens_version", "created", "cell"):
        assert key in ds.attrs, key
    rho = ds.density.values
    assert np.isfinite(rho[:8, :8, :16]).all()  # the two blocks written
    assert np.isnan(rho[8:]).all()  # never 0
    engine.run(atoms, config(out, model, resume=True))
    ds = xr.open_zarr(out)
    assert ds.attrs["complete"] is True and not np.isnan(ds.density.values).any()
    assert ds.attrs["n_electrons_predicted"] == pytest.approx(
        float(ds.density.sum(dtype=np.float64)) * ds.attrs["volume_element"], rel=1e-9)


def test_verify_detects_deleted_and_truncated_chunks(tmp_path, model, atoms):  # noqa: F811
    out = tmp_path / "o.zarr"
    engine.run(atoms, config(out, model))
    assert store.verify(out).ok
    (out / "density" / "c" / "0" / "0" / "1").unlink()
    chunk = out / "density_std" / "c" / "1" / "1" / "1"
    chunk.write_bytes(chunk.read_bytes()[:10])
    report = store.verify(out)
    blocks = {b.start: b.index for b in store.blocks_of(store.read_attrs(out))}
    assert not report.ok and report.missing == []
    assert sorted(i for i, _ in report.corrupt) == sorted([blocks[(0, 0, 8)], blocks[(8, 8, 8)]])
    store.ledger_file(out, 3).unlink()
    assert store.verify(out).missing == [3]


def test_check_target_refusals(tmp_path, model, atoms):  # noqa: F811
    assert store.check_target(tmp_path / "new.zarr", resume=False, overwrite=False) == "new"
    with pytest.raises(SetupError, match="cannot resume.*does not exist"):
        store.check_target(tmp_path / "new.zarr", resume=True, overwrite=False)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(SetupError, match="not a bigdens store; choose another -o/--output or pass --overwrite"):
        store.check_target(tmp_path / "plain", resume=False, overwrite=False)
    assert store.check_target(tmp_path / "plain", resume=False, overwrite=True) == "overwrite"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(SetupError, match="non-empty folder that is not a Zarr store"):
        store.check_target(folder, resume=False, overwrite=True)
    out = tmp_path / "o.zarr"
    engine.run(atoms, config(out, model, max_blocks=1))
    with pytest.raises(SetupError, match="already holds a bigdens store; pass --resume"):
        store.check_target(out, resume=False, overwrite=False)
    assert store.check_target(out, resume=True, overwrite=False) == "resume"


def test_ledger_round_trip_ignores_torn_entries(tmp_path, model, atoms):  # noqa: F811
    out = tmp_path / "o.zarr"
    engine.run(atoms, config(out, model, max_blocks=3))
    ledger = store.read_ledger(out)
    assert sorted(ledger) == [0, 1, 2]
    e = ledger[1]
    assert set(e.checksums) == set(store.VARIABLES) and e.max_std > 0 and e.density_sum > 0
    store.ledger_file(out, 2).write_text('{"block": 2, "check')  # a torn file is not an entry
    assert sorted(store.read_ledger(out)) == [0, 1]
    assert not list((out / store.LEDGER).glob(".*.tmp"))
    assert store.structure_hash(atoms.cell[:], atoms.positions, atoms.numbers) == \
        store.read_attrs(out)["run"]["structure_hash"]
    moved = structure.rattle(atoms, 0.01, seed=1)
    assert store.structure_hash(moved.cell[:], moved.positions, moved.numbers) != \
        store.read_attrs(out)["run"]["structure_hash"]


def test_work_units_number_frame_major_and_split_back():
    single = store.WorkUnits(n_blocks=8)
    assert single.n_units == 8 and single.split(5) == (None, 5) and single.unit(None, 5) == 5
    assert single.frame_ledgers({0: "a", 3: "b"}) == [{0: "a", 3: "b"}]
    traj = store.WorkUnits(n_blocks=8, n_frames=3)
    assert traj.n_units == 24
    assert [traj.unit(f, b) for f, b in [(0, 0), (0, 7), (1, 0), (2, 5)]] == [0, 7, 8, 21]
    assert all(traj.split(traj.unit(f, b)) == (f, b) for f in range(3) for b in range(8))
    assert traj.first(2) == 16 and traj.frame_of(21) == 2
    assert traj.frame_ledgers({1: "a", 9: "b", 21: "c"}) == [{1: "a"}, {1: "b"}, {5: "c"}]
    assert store.unit_index(2, 5, 8) == 21 and store.unit_index(None, 5, 8) == 5


def test_ledger_entry_json_round_trip_and_older_layouts():
    from bigdens.engine.messages import Job, TaskReport

    new = {"block": 3, "start": [0, 0, 8], "stop": [8, 8, 16], "checksums": {"density": "a"}, "raw_checksum": "a",
           "density_sum": 1.5, "max_std": 0.1, "max_std_index": [1, 2, 9], "max_std_epistemic": 0.05,
           "max_std_epistemic_index": [1, 2, 9], "negative_sum": 0.0, "n_epistemic_high": None, "scale": 1.0,
           "charges": {"n_atoms": 2, "checksum": "c"}, "unit": 11, "frame": 1}
    e = store.LedgerEntry.from_json(new)
    assert e.key == 11 and e.to_json() == new and list(e.to_json()) == list(new)  # key order is the file's
    pending = {**new, "pending": {"scale": 2.0, "checksum": "b"}}
    assert store.LedgerEntry.from_json(pending).to_json() == pending
    old = {k: new[k] for k in ("block", "start", "stop", "checksums", "raw_checksum", "density_sum", "max_std",
                               "max_std_index")}  # before epistemic fields, charges, scale and trajectories
    o = store.LedgerEntry.from_json(old)
    assert (o.key, o.scale, o.charges, o.max_std_epistemic, o.n_epistemic_high, o.negative_sum) == (3, 1.0, None,
                                                                                                  None, None, None)
    report = TaskReport(entry=e, stage_s={"setup": 1.0, "bnn": 2.0}, n_points=512, pid=7, max_rss_mb=3.0)
    assert report.total_s == 3.0 and TaskReport.from_json(report.to_json()) == report
    job = Job(store="/s", run_id="r", model="/m", model_hash="h", samples=2, seed=0, device="cpu", batch=4,
              threads=1, disorder=[0.1, 0.2], n_frames=2, n_blocks=8)
    assert Job.from_json(job.to_json()) == job and job.disorder_of(1) == 0.2 and job.units.split(9) == (1, 1)
