"""Each benchmark runs at a tiny size, so it cannot rot.

Timings are not compared with targets; what is checked is what the recorded
numbers mean: a rate is the points over the time, the task time fits in the
wall time of the workers, memory is positive and below the machine's, an Al
atom brings 3 valence electrons, a fitted exponent is finite.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from benchmarks import descriptor_throughput

#: This machine's physical memory, MB.
MEMORY_MB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def _written(out, benchmark):
    # The file is valid JSON of this benchmark (its numbers are checked on the returned dict).
    assert json.loads(out.read_text())["benchmark"] == benchmark


def _check_run(rec, *, workers, points=None):
    """A run record (benchmarks._common.run_record): its numbers agree with each other and the machine."""
    points = rec["grid_points"] if points is None else points
    assert rec["grid_points"] == math.prod(rec["grid"])
    assert rec["wall_s"] > 0 and math.isclose(rec["points_per_s"], points / rec["wall_s"], rel_tol=1e-6)
    tasks = sum(rec["stage_s"][k] for k in ("descriptors", "bnn", "write"))
    assert all(v >= 0 for v in rec["stage_s"].values())
    assert math.isclose(rec["busy_s"], tasks / workers, rel_tol=1e-9)
    assert 0 < tasks <= rec["wall_s"] * workers  # no worker is busy longer than the run
    assert math.isclose(rec["overhead_s"], rec["wall_s"] - rec["busy_s"], rel_tol=1e-9, abs_tol=1e-9)
    assert 0 <= rec["startup_s"] <= rec["wall_s"]
    assert len(rec["peak_rss_mb_per_worker"]) == workers
    assert all(0 < m < MEMORY_MB for m in rec["peak_rss_mb_per_worker"])
    assert rec["n_electrons_expected"] == 3 * rec["n_atoms"]  # Al: 3 valence electrons an atom


def test_descriptor_throughput_smoke(tmp_path):
    out = tmp_path / "d.json"
    result = descriptor_throughput.main(["--smoke", "--out", str(out)])
    _written(out, "descriptor_throughput")
    rec = {r["system"]: r for r in result["records"]}
    assert rec["Al"]["n_atoms"] == 4 * 27 and rec["SiGe"]["n_atoms"] == 8 * 8
    for r in result["records"]:
        # The rate is the timed points over the halo and descriptor time of the timed blocks.
        seconds = r["n_blocks_timed"] * (r["halo_s_per_block"] + r["descriptor_s_per_block"])
        assert math.isclose(r["points_per_s_per_core"], r["points_timed"] / seconds, rel_tol=1e-6)
        assert 0 < r["n_blocks_timed"] <= r["n_blocks_total"] and r["points_timed"] <= math.prod(r["grid"])
        # A block's features (float32) at least, and far below the machine's memory.
        assert r["points_timed"] / r["n_blocks_timed"] * r["n_features"] * 4 <= r["block_bytes_max"]
        assert 0 < r["block_bytes_max"] < r["peak_rss_mb"] * 2**20 < MEMORY_MB * 2**20


@pytest.mark.slow
def test_engine_throughput_smoke(tmp_path):
    from benchmarks import engine_throughput

    out = tmp_path / "e.json"
    result = engine_throughput.main(["--smoke", "--out", str(out)])
    _written(out, "engine_throughput")
    (rec,) = result["records"]
    workers = result["settings"]["workers"]
    assert rec["n_atoms"] == 32 and rec["n_blocks_computed"] == 2
    _check_run(rec, workers=workers, points=rec["points_computed"])
    # Steady rate: the points over the task time per worker, so at least the end-to-end rate.
    assert math.isclose(rec["points_per_s_steady"], rec["points_computed"] / rec["busy_s"], rel_tol=1e-6)
    assert rec["points_per_s_steady"] >= rec["points_per_s_end_to_end"] == rec["points_per_s"]
    assert math.isclose(sum(rec["stage_fraction"].values()), 1.0, rel_tol=1e-9)
    assert rec["bnn_gflops_per_worker"] > 0 and rec["torch_bmm_gflops_1_thread"] > 0


@pytest.mark.slow
def test_million_atoms_smoke(tmp_path):
    from benchmarks import million_atoms

    out = tmp_path / "m.json"
    result = million_atoms.main(["--cells", "2", "--spacing", "0.5", "--mc-samples", "2", "--workers", "1",
                                 "--block", "16", "--out", str(out)])
    _written(out, "million_atoms")
    assert result["n_atoms"] == 32 and result["complete"] and result["grid"] == [17, 17, 17]
    assert result["grid_points"] == 17**3 and result["n_blocks"] == 8  # 17 = 16 + 1 along each axis
    assert result["n_electrons_expected"] == 96  # 3 valence electrons per Al atom
    assert math.isclose(result["points_per_s"], result["grid_points"] / result["wall_s"], rel_tol=1e-6)
    tasks = sum(result["stage_s"][k] for k in ("descriptors", "bnn", "write"))
    assert 0 < tasks <= result["wall_s"] * result["workers"]
    assert len(result["peak_rss_mb_per_worker"]) == 1 and 0 < result["peak_rss_mb_per_worker"][0] < MEMORY_MB
    # The shipped model on a 0.5 Å grid: every electron of the cell, within a few per cent.
    assert abs(result["n_electrons_predicted"] - 96) < 0.05 * 96
    assert 0 < result["store_bytes"] and result["max_std"] > 0


@pytest.mark.slow
def test_weak_scaling_smoke(tmp_path):
    from benchmarks import weak_scaling

    out = tmp_path / "w.json"
    result = weak_scaling.main(["--smoke", "--out", str(out), "--dft", ""])
    _written(out, "weak_scaling")
    assert [r["n_atoms"] for r in result["records"]] == [4, 32]
    for r in result["records"]:
        assert r["complete"]
        _check_run(r, workers=result["settings"]["workers"])
        # Every electron of a whole prediction is in the store.
        assert abs(r["n_electrons_predicted"] - r["n_electrons_expected"]) < 0.02 * r["n_electrons_expected"]
    assert math.isfinite(result["fit"]["wall_exponent"]) and math.isfinite(result["fit"]["busy_exponent"])
    assert not result["extrapolation"]["measured"] and result["extrapolation"]["wall_s"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000


def _strong_smoke(tmp_path, slurm_jobs):
    from benchmarks import strong_scaling

    out = tmp_path / "s.json"
    result = strong_scaling.main(["--smoke", "--workers", "1", "2", "--slurm-jobs", *map(str, slurm_jobs),
                                  "--out", str(out)])
    _written(out, "strong_scaling")
    assert result["settings"]["stores_bit_identical"]
    for r in result["records"]:
        assert r["complete"] and r["grid_points"] == result["settings"]["grid_points"]
        _check_run(r, workers=r["workers"])
        # Speed-up: the 1-worker run's wall time (of the same kind) over this one's; efficiency per worker.
        base = next(b for b in result["records"] if b["kind"] == r["kind"] and b["workers"] == 1)
        assert math.isclose(r["speedup"], base["wall_s"] / r["wall_s"], rel_tol=1e-6)
        assert math.isclose(r["efficiency"], r["speedup"] / r["workers"], rel_tol=1e-6)
    assert out.with_suffix(".png").stat().st_size > 10_000
    return result


@pytest.mark.slow
def test_strong_scaling_smoke_local(tmp_path):
    result = _strong_smoke(tmp_path, [])
    assert [(r["kind"], r["workers"]) for r in result["records"]] == [("local", 1), ("local", 2)]
    assert result["records"][0]["speedup"] == 1.0 and result["records"][1]["efficiency"] > 0


@pytest.mark.slurm
def test_strong_scaling_smoke_slurm_oversubscribed(tmp_path, local_slurm):
    import os
    import subprocess

    jobs = (os.cpu_count() or 1) + 1  # one job more than cores: the oversubscribed path
    result = _strong_smoke(tmp_path, [1, jobs])
    slurm = [r for r in result["records"] if r["kind"] == "slurm"]
    assert [r["workers"] for r in slurm] == [1, jobs] and slurm[1]["oversubscribed"]
    assert all(sum(r["slurm_jobs"].values()) == r["n_blocks"] for r in slurm)  # every block ran in a job
    part = subprocess.run(["scontrol", "show", "partition"], capture_output=True, text=True).stdout
    assert "OverSubscribe=NO" in part  # restored


@pytest.mark.slow
@pytest.mark.gpaw
def test_ml_vs_dft_smoke(tmp_path, gpaw):
    from benchmarks import ml_vs_dft

    out = tmp_path / "m.json"
    result = ml_vs_dft.main(["--smoke", "--mc-samples", "4", "--out", str(out)])
    _written(out, "ml_vs_dft")
    (rec,) = result["records"]
    assert rec["n_atoms"] == 4 and rec["grid"] == [16, 16, 16]
    assert rec["dft"]["core_s"] > 0 and rec["ml_warm"]["core_s"] > 0
    assert abs(rec["dft"]["electron_integral"] - 12) < 1e-3
    # The shipped model on a cell it never saw, on a coarse grid: a few per cent, not garbage.
    assert 0 < rec["accuracy"]["nmae_pct"] < 10


def test_transfer_learning_smoke(tmp_path):
    import shutil
    from pathlib import Path

    from benchmarks import transfer_learning

    # al4 as both the small and the large set, with one snapshot moved to a test split.
    large = tmp_path / "large"
    shutil.copytree(Path(__file__).parent / "data" / "al4", large)
    manifest = json.loads((large / "dataset.json").read_text())
    manifest["snapshots"][-1]["split"] = "test"
    (large / "dataset.json").write_text(json.dumps(manifest))
    small = str(Path(__file__).parent / "data" / "al4")
    tiny = ["--m", "8", "--k", "2", "--r-cut", "4", "--hidden", "8", "8", "--epochs", "2", "--finetune-epochs", "1",
            "--points-per-epoch", "2000", "--samples", "2"]
    # (e)'s budget, 0.6 of (d)'s DFT cost (1207 core-s): 724 core-s.  Two small training cells, two small
    # validation cells and the first large one would cost 1041; one of each 614.  (No fraction below 0.51 fits
    # even one of each here, the default third included: with so few cells the budget could not bind.)
    report = transfer_learning.main(["--small", small, "--large", str(large), "--defect", small, *tiny,
                                     "--budget-fraction", "0.6",
                                     "--out", str(tmp_path / "out"), "--save-models", str(tmp_path / "models")])
    assert set(report["results"]) == set("abcde") and report["test_snapshots"] == ["al4-T0900-01"]
    assert all(r["nmae_pct"] > 0 and r["dft_core_seconds"] > 0 for r in report["results"].values())
    # (e) keeps to its budget by leaving out the second small training cell and its share of validation.
    res, budget = report["results"], report["budget"]
    assert res["e"]["dft_core_seconds"] <= 0.6 * res["d"]["dft_core_seconds"]
    assert budget["small_train"] == ["al4-T0300-00"] and budget["small_validation"] == ["al4-T0300-01"]
    assert (tmp_path / "out" / "sigma_vs_error.png").stat().st_size > 10_000
    # Re-evaluating the saved models gives the same numbers.
    again = transfer_learning.main(["--small", small, "--large", str(large), *tiny, "--out", str(tmp_path / "again"),
                                    "--reuse-models", str(tmp_path / "models")])
    assert {k: r["nmae_pct"] for k, r in again["results"].items()} == \
        {k: r["nmae_pct"] for k, r in report["results"].items()}


def test_transfer_budget_subset_is_the_longest_prefix_within_budget():
    from types import SimpleNamespace

    from benchmarks.transfer_learning import budget_subset, core_seconds

    small = [SimpleNamespace(name=f"s{i}", dft_core_seconds=100.0) for i in range(28)]
    val = [SimpleNamespace(name=f"v{i}", dft_core_seconds=100.0) for i in range(7)]
    large = [SimpleNamespace(name="L", dft_core_seconds=4000.0)]
    t, v = budget_subset(small, val, large, 5050.0)
    # 8 + 2 small cells and the large one: 5000 core-s; 9 would need 9 + 2 + 40 = 5100.
    assert [s.name for s in t] == [f"s{i}" for i in range(8)] and [s.name for s in v] == ["v0", "v1"]
    assert core_seconds(t + v + large) <= 5050.0
    t, v = budget_subset(small, val, large, 100.0)  # below one cell each: still one of each
    assert len(t) == 1 and len(v) == 1


def test_vacancy_contrast_picks_the_deepest_points_and_the_interstitial_shell():
    import numpy as np

    from benchmarks.transfer_learning import vacancy_contrast

    nearest = np.array([0.1, 1.0, 1.7, 1.8, 2.0, 2.4, 2.5, 2.6])  # Å; deepest 2.6 -> vacancy > 2.3
    field = np.array([9.0, 9.0, 1.0, 1.0, 3.0, 4.0, 4.0, 4.0])
    out = vacancy_contrast(nearest, {"f": field})
    assert out["vacancy_points"] == 3 and out["reference_points"] == 3  # 1.6 < d <= 2.05
    assert np.isclose(out["f_ratio"], 4.0 / (5.0 / 3.0))


def test_cross_calibration_smoke(tmp_path):
    """The model's own fold reproduces its fitted factor; the written model carries the pooled one."""
    from pathlib import Path

    import numpy as np

    from benchmarks import cross_calibration
    from bigdens import data
    from bigdens.bnn import Architecture, load
    from bigdens.descriptors import DescriptorParams
    from bigdens.train import TrainConfig, finetune, train

    al4 = Path(__file__).parent / "data" / "al4"
    snaps = data.load([al4])
    tr = [s for s in snaps if s.split == "train"]
    va = [s for s in snaps if s.split == "validation"]
    params = DescriptorParams(species=(13,), m=(8,), k=(2,), r_cut=4.0)
    quick = TrainConfig(epochs=1, points_per_epoch=2000, batch_size=512, seed=0)
    parent = train(tr, va, params, arch=Architecture(hidden=(8, 8), kind="mean-field"), config=quick,
                   log=lambda _: None)
    parent.save(tmp_path / "parent.safetensors")
    model = finetune(parent, tr[1:], tr[:1], config=TrainConfig(epochs=1, points_per_epoch=2000, batch_size=512,
                                                                 seed=0, train_layers=2), log=lambda _: None)
    model.save(tmp_path / "model.safetensors")
    report = cross_calibration.main([str(tmp_path / "model.safetensors"), str(tmp_path / "parent.safetensors"),
                                     str(al4), "--epochs", "1", "--points-per-epoch", "2000",
                                     "--out", str(tmp_path / "out"), "--write", str(tmp_path / "x.safetensors")])
    own, other = report["folds"]
    assert own["held_out"] == [tr[0].name] and other["held_out"] == [tr[1].name]
    assert np.isclose(own["factor_alone"], model.scaling.variance_scale, rtol=1e-6)
    written = load(tmp_path / "x.safetensors")
    assert written.scaling.variance_scale == report["variance_scale_cross"] > 0
    # The epistemic reference moves with the factor: the same points lie above each quantile as before.
    from bigdens.train import _stack

    X, _ = _stack(tr, model.params)
    above = [np.sqrt(m.predict(X, samples=4, seed=0, block_index=0)[1])[:, None]
             > np.array(m.info["epistemic_reference"]["std"]) for m in (model, written)]
    assert np.array_equal(*above) and 0 < above[0][:, 0].sum() < len(X)  # column 0: the median
    assert written.info["epistemic_reference"]["std"] != model.info["epistemic_reference"]["std"]


@pytest.mark.slow
def test_vacancy_contrast_rebuilds_the_removed_site(tmp_path):
    """The site rebuilt from the provenance is the one the MD cell lacks; the regions are as defined."""
    from pathlib import Path

    import numpy as np

    from benchmarks import vacancy_contrast
    from bigdens import data, structure

    root = Path(__file__).parent.parent
    snap = data.load([root / "datasets" / "al32-vacancy"])[0]
    site = vacancy_contrast.removed_sites(snap.provenance)
    assert site.shape == (1, 3)
    st = snap.provenance["thermalization"]["structure"]
    perfect = structure.fcc_al(tuple(st["cells"]), a=st["a_A"]).positions
    nearest = vacancy_contrast._min_image_distance(snap.cell, perfect, snap.positions)
    empty = np.isclose(vacancy_contrast._min_image_distance(snap.cell, perfect, site), 0.0)
    # Thermal motion moves each atom well under 1 Å; the removed site stays ~a nearest-neighbour distance empty.
    assert empty.sum() == 1 and nearest[empty][0] > 2.0 and nearest[~empty].max() < 1.0
    report = vacancy_contrast.main([str(root / "bigdens" / "models" / "al.safetensors"),
                                    str(root / "datasets" / "al32-vacancy" / f"{snap.name}.npz"),
                                    "--samples", "2", "--out", str(tmp_path / "v.json")])
    row = report["snapshots"][0]
    assert row["vacancy_points"] > 0 and row["reference_points"] > 0
    assert row["vacancy_nearest_atom_A"][0] > 1.5  # within 1 Å of a site ~2.8 Å from its neighbours
    assert np.isclose(row["ratio"]["abs_error"], row["vacancy"]["abs_error"] / row["reference"]["abs_error"])


@pytest.mark.slow
def test_descriptor_convergence_side_by_side_matches_one_at_a_time(tmp_path):
    """Settings trained in parallel processes give the rows a serial run gives, in the planned order."""
    from pathlib import Path

    from benchmarks import descriptor_convergence

    al4 = str(Path(__file__).parent / "data" / "al4")
    tiny = [al4, "--base", "8", "2", "4.0", "--m-values", "4", "--k-values", "0", "--r-values", "3.5",
            "--hidden", "8", "8", "--epochs", "2", "--points-per-epoch", "2000", "--nll-beta", "0.5"]
    serial = descriptor_convergence.main([*tiny, "--out", str(tmp_path / "serial.json")])
    parallel = descriptor_convergence.main([*tiny, "--jobs", "2", "--out", str(tmp_path / "parallel.json")])
    assert [(r["varied"], r["m"], r["k"], r["r_cut"]) for r in parallel["rows"]] == \
        [("base", 8, 2, 4.0), ("m", 4, 2, 4.0), ("k", 8, 0, 4.0), ("r_cut", 8, 2, 3.5)]
    key = ("val_nmae_mean_weights_pct", "val_nmae_mc_pct", "n_features", "best_epoch")
    assert [[r[k] for k in key] for r in serial["rows"]] == [[r[k] for k in key] for r in parallel["rows"]]
    assert all(r["val_nmae_mc_pct"] > 0 for r in serial["rows"])
    assert len(json.loads((tmp_path / "parallel.json").read_text())["rows"]) == 4


@pytest.mark.slow
@pytest.mark.gpaw
def test_label_noise_smoke(tmp_path, monkeypatch, gpaw):
    """A 4-atom cell again at Γ only (under a second): same grid, the comparison written, then skipped."""
    from pathlib import Path

    from benchmarks import label_noise
    from bigdens import data, datagen

    src = Path(__file__).parent / "data" / "al4" / "al4-T0300-00.npz"
    est = label_noise.main([str(src), "--kpts", "2", "2", "2", "--estimate"])
    # A thermalized cell has no point symmetry: time reversal halves the mesh.
    assert est["irreducible_kpoints"] == {"protocol": 32, "dense": 4} and est["cost_factor"] == 0.125
    out = tmp_path / "ln" / "al4.json"
    result = label_noise.main([str(src), "--kpts", "1", "1", "1", "--out", str(out)])
    assert out.is_file()  # read back below, without DFT
    assert result["grid"] == [24, 24, 24] and result["protocol_kpts"] == [4, 4, 4] and result["kpts"] == [1, 1, 1]
    assert result["split"] == "train" and result["core_s"]["dense"] > 0
    assert all(abs(v - 12) < 1e-3 for v in result["electron_integral"].values())
    assert 0 < result["nmae_pct"] < 10  # Γ only on 4 atoms moves the density by per cent, not more
    dense = data.read_snapshot(out.parent / result["dense_density_file"])
    assert dense.density.shape == (24, 24, 24) and dense.provenance["settings"]["kpts"]["size"] == [1, 1, 1]
    # Resumable: an existing JSON is read back, no DFT.
    monkeypatch.setattr(datagen, "dft_density", lambda *a, **k: pytest.fail("ran DFT again"))
    assert label_noise.main([str(src), "--kpts", "1", "1", "1", "--out", str(out)]) == result


def test_label_noise_refuses_other_protocols():
    import numpy as np

    from benchmarks import label_noise
    from bigdens import data
    from bigdens.errors import InputError

    snap = data.Snapshot("x", np.eye(3) * 4.05, np.zeros((1, 3)), [13], np.ones((24, 24, 24)),
                         provenance={"protocol": "custom-0123456789"})
    with pytest.raises(InputError, match="recomputes 'bigdens-dft-v1' snapshots only"):
        label_noise.protocol_settings(snap)
    density = np.linspace(0.01, 0.1, 8000).reshape(20, 20, 20)
    snap = data.Snapshot("x", np.eye(3) * 4.05, np.zeros((1, 3)), [13], density,
                         provenance={"protocol": "bigdens-dft-v1", "settings": {"kpts": {"size": [4, 4, 4]}}})
    with pytest.raises(InputError, match="not the protocol's"):
        label_noise.protocol_settings(snap)
    same = label_noise.compare(snap.density, snap.density, dv=0.01)
    assert same["nmae_pct"] == 0 and same["max_abs_diff_e_per_A3"] == 0


def test_network_cost_smoke(tmp_path):
    """Both model formats timed on real Al descriptors; FLOP per point from each model's own widths."""
    from benchmarks import network_cost

    res = network_cost.main(["--smoke", "--out", str(tmp_path / "nc.json")])
    v1, v2 = res["records"]
    assert (v1["kind"], v2["kind"]) == ("mean-field", "last-layer")
    # 47-64-64-2 sampled 20 times, against the shipped trunk (F-128-128, F = 98 since Al model v3) once
    # plus its head (128 -> 2) and (128 + 1) x 20 for the samples.
    assert v1["flop_per_point"] == 2 * 20 * (47 * 64 + 64 * 64 + 64 * 2)
    f = v2["n_features"]
    assert v2["hidden"] == [128, 128] and f >= 47
    assert v2["flop_per_point"] == 2 * (f * 128 + 128 * 128 + 128 * 2 + 129 * 20)
    assert v1["us_per_point"] > 0 and v2["us_per_point"] > 0 and v2["torch_gemm_gflops_best"] > 0
    # A Si-Ge model is timed on Si-Ge descriptors (93 features with the cross block), from a Si-Ge cell.
    sige = network_cost.main([str(network_cost.ROOT / "bigdens" / "models" / "sige.safetensors"), "--smoke",
                              "--out", str(tmp_path / "nc2.json")])["records"][0]
    assert sige["cell"].startswith("sige216-") and sige["n_features"] == 93
    # FLOP from the model's own widths (model v3's Si-Ge trunk is 93-128-128-128): trunk, head, S samples.
    widths = [93, *sige["hidden"]]
    trunk = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    assert len(widths) >= 3 and sige["flop_per_point"] == 2 * (trunk + widths[-1] * 2 + (widths[-1] + 1) * 20)


def test_fit_gap_reads_the_validation_error_that_training_kept(tmp_path, al4_splits):
    """benchmarks.fit_gap scores a model on its own cells; on its one validation cell it must read what the
    training loop recorded for the epoch it kept (two code paths, one number)."""
    from benchmarks import fit_gap
    from bigdens.bnn import Architecture
    from bigdens.descriptors import DescriptorParams
    from bigdens.train import TrainConfig, train

    tr, va = al4_splits
    model = train(tr, va[:1], DescriptorParams(species=(13,), m=(8,), k=(2,), r_cut=4.0),
                  arch=Architecture(hidden=(8, 8)), config=TrainConfig(epochs=3, points_per_epoch=4000,
                                                                       batch_size=512, seed=0), log=lambda _: None)
    model.save(tmp_path / "m.safetensors")
    out = tmp_path / "gap.json"
    al4 = Path(__file__).parent / "data" / "al4"
    assert fit_gap.main([str(tmp_path / "m.safetensors"), "--data", str(al4), "--out", str(out)]) == 0
    row = json.loads(out.read_text())[str(tmp_path / "m.safetensors")]
    assert sorted(row["train"]["cells"]) == sorted(s.name for s in tr)
    assert row["validation"]["mean_nmae_pct"] == pytest.approx(model.info["training"]["best_val_nmae_pct"], rel=1e-5)
    assert row["gap"] == pytest.approx(row["validation"]["mean_nmae_pct"] / row["train"]["mean_nmae_pct"])
    with pytest.raises(SystemExit, match="lack the model's train cells"):
        fit_gap.main([str(tmp_path / "m.safetensors"), "--data", str(al4 / f"{va[0].name}.npz"), "--out", str(out)])


def test_dft_start_takes_the_structure_of_a_snapshot_or_an_ase_file(tmp_path):
    """``benchmarks.dft_start --structure``: a data set's snapshot gives its own atoms (cell, positions,
    numbers); any other file goes through ASE."""
    import numpy as np
    from ase.build import bulk
    from ase.io import write

    from benchmarks import dft_start
    from bigdens import data

    path = Path(__file__).resolve().parents[1] / "datasets" / "al32" / "al32-T0300-01.npz"
    snap = data.load(path)[0]
    atoms = dft_start._structure(str(path))
    assert len(atoms) == 32 and atoms.pbc.all()
    assert np.array_equal(atoms.cell[:], snap.cell) and np.array_equal(atoms.positions, snap.positions)
    write(tmp_path / "al.xyz", bulk("Al", "fcc", a=4.05, cubic=True))
    assert len(dft_start._structure(str(tmp_path / "al.xyz"))) == 4
