"""σ calibrated per σ decile: the binned metrics (DESIGN §5), the regions, the σ map (model format 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bigdens import metrics
from bigdens.bnn import Architecture, DensityModel, Scaling, load
from bigdens.descriptors import DescriptorParams
from bigdens.errors import InputError
from bigdens.train import TrainConfig, calibrate, snapshot_features, train
from bigdens.train.sigma_map import fit_sigma_map

AL4 = Path(__file__).parent / "data" / "al4"
PARAMS = DescriptorParams(species=(13,), m=(16,), k=(4,), r_cut=5.0)


def test_binned_calibration_on_known_values():
    # Ten σ levels of 50 points each; errors ±c_k·σ_k exactly, so RMSE_k = c_k·σ_k and RMV_k = σ_k.
    levels = np.geomspace(1e-4, 1e-2, 10)
    c = np.linspace(0.5, 1.4, 10)
    sig = np.repeat(levels, 50)
    sign = np.tile([1.0, -1.0], 250)
    err = sign * np.repeat(c * levels, 50)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(sig))  # the order of the points does not matter
    ref = rng.uniform(0.01, 0.1, len(sig))
    res = metrics.binned_calibration(ref[order] + err[order], ref[order], sig[order])
    np.testing.assert_allclose(res["ratio"], c, rtol=1e-9)
    np.testing.assert_allclose(res["rmv"], levels, rtol=1e-12)
    assert res["ence"] == pytest.approx(np.mean(np.abs(1 - c)), rel=1e-9)
    assert res["sigma_edges"][0] == levels[0] and res["sigma_edges"][1:] == pytest.approx(levels)


def test_region_calibration_on_known_values():
    pred, ref = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 1.0, 4.0])
    sigma = np.array([1.0, 1.0, 1.0, 2.0])
    out = metrics.region_calibration(pred, ref, sigma, [True, True, True, False])
    assert out["n_points"] == 3 and out["coverage_1sigma_pct"] == pytest.approx(200 / 3)
    assert out["rms_err_over_sigma"] == pytest.approx(np.sqrt((0.25 + 0 + 4) / 3))
    assert metrics.region_calibration(pred, ref, sigma, [False] * 4) is None


@pytest.mark.parametrize("kind, a, neighbours", [("fcc", 4.05, 12), ("diamond", 5.43, 4)])
def test_undercoordinated_atoms_are_the_neighbours_of_a_vacancy(kind, a, neighbours):
    from ase.build import bulk

    symbol = "Al" if kind == "fcc" else "Si"
    atoms = bulk(symbol, kind, a=a, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.02, seed=1)
    assert len(metrics.undercoordinated_atoms(atoms.positions, atoms.numbers, atoms.cell[:])) == 0
    site = atoms.positions[5].copy()
    del atoms[5]
    found = metrics.undercoordinated_atoms(atoms.positions, atoms.numbers, atoms.cell[:])
    from ase.geometry import get_distances

    # The first shell of the empty site: a/√2 (FCC) or a·√3/4 (diamond), by minimum-image brute force.
    _, dist = get_distances(atoms.positions, [site], cell=atoms.cell, pbc=True)
    expected = np.flatnonzero(dist[:, 0] < (0.75 if kind == "fcc" else 0.45) * a)
    assert len(expected) == neighbours and np.array_equal(found, expected)


def test_near_atoms_mask_equals_brute_force_on_a_triclinic_cell():
    from ase.geometry import get_distances

    rng = np.random.default_rng(3)
    cell = np.array([[7.0, 0.0, 0.0], [2.1, 6.5, 0.0], [1.3, -1.7, 7.2]])
    points = rng.uniform(-0.2, 1.2, (3000, 3)) @ cell  # some outside the cell: wrapped by the metric
    centres = rng.uniform(0, 1, (4, 3)) @ cell
    _, dist = get_distances(points, centres, cell=cell, pbc=True)
    mask = metrics.near_atoms_mask(points, centres, cell, 2.0)
    assert np.array_equal(mask, dist.min(axis=1) <= 2.0) and 0 < mask.sum() < len(points)


def _synthetic(n, seed):
    """σ log-uniform over two decades; true error scale c(σ)·σ with c from 1.6 (small σ) to 0.5 (large)."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), n))
    c = np.interp(np.log(sigma), np.log([1e-4, 1e-2]), [1.6, 0.5])
    return rng.normal(0.0, c * sigma), sigma


def test_the_sigma_map_calibrates_every_decile_of_new_data():
    err, sigma = _synthetic(200_000, 0)
    before = metrics.binned_calibration(err, 0 * err, sigma)["ratio"]
    assert before[0] > 1.4 and before[-1] < 0.6  # the test data really are miscalibrated per decile
    knots, logs = fit_sigma_map(err, sigma)
    scaling = Scaling(feature_mean=(0.0,), feature_std=(1.0,), target_mean=0.0, target_std=1.0,
                      sigma_knots=knots, sigma_log_ratios=logs)
    err2, sigma2 = _synthetic(200_000, 1)  # fresh points from the same law
    mapped = sigma2 * scaling.sigma_ratio(sigma2)
    after = metrics.binned_calibration(err2, 0 * err2, mapped)
    assert np.all(np.abs(np.array(after["ratio"]) - 1) < 0.06) and after["ence"] < 0.03
    order = np.argsort(sigma2)
    assert np.all(np.diff(mapped[order]) >= -1e-15)  # a larger σ stays at least as large
    # Already calibrated data give a map near the identity.
    knots, logs = fit_sigma_map(np.random.default_rng(2).normal(0, sigma2), sigma2)
    assert np.max(np.abs(logs)) < 0.02


def test_a_sigma_map_that_shrinks_a_larger_sigma_is_refused():
    base = dict(feature_mean=(0.0,), feature_std=(1.0,), target_mean=0.0, target_std=1.0)
    with pytest.raises(InputError, match="must not make a larger σ smaller"):
        Scaling(**base, sigma_knots=(-8.0, -7.0), sigma_log_ratios=(0.5, -0.6))
    with pytest.raises(InputError, match="increasing knots"):
        Scaling(**base, sigma_knots=(-7.0, -8.0), sigma_log_ratios=(0.0, 0.0))
    s = Scaling(**base, sigma_knots=(-8.0, -7.0), sigma_log_ratios=(0.2, -0.3))
    # Piecewise linear in ln σ between the knots, constant beyond them.
    np.testing.assert_allclose(s.sigma_ratio(np.exp([-9.0, -8.0, -7.5, -7.0, -5.0])),
                               np.exp([0.2, 0.2, -0.05, -0.3, -0.3]))


@pytest.fixture(scope="module")
def model(al4_splits):
    tr, va = al4_splits
    config = TrainConfig(epochs=4, points_per_epoch=6000, batch_size=512, patience=10, seed=1)
    return train(tr, va, PARAMS, arch=Architecture(hidden=(16, 16), kind="last-layer"), config=config,
                 log=lambda _: None)


def _deciles(m, snapshots, *, seed=0):
    from bigdens.thermal import bond_spread

    parts = []
    for s in snapshots:  # block index 0 and each cell's bond spread, as calibration sees them
        X, y = snapshot_features(s, m.params)
        mean, epi, ale = m.predict(X, samples=20, seed=seed, block_index=0,
                                   disorder=bond_spread(s.positions, s.numbers, s.cell))
        parts.append((mean, np.sqrt(epi.astype(np.float64) + ale), y))
    mean, sigma, y = (np.concatenate(a) for a in zip(*parts))
    return metrics.binned_calibration(mean, y, sigma), (mean, sigma, y)


def test_calibrate_fits_the_map_on_real_snapshots_and_the_file_keeps_it(al4_splits, model, tmp_path):
    tr, va = al4_splits
    plain = calibrate(model, va)
    assert not plain.scaling.sigma_knots  # the map is opt-in
    before = _deciles(plain, va)[0]
    mapped = calibrate(model, va, sigma_map=True)
    assert len(mapped.scaling.sigma_knots) >= 5 and mapped.info["calibration"]["sigma_map"] is True
    after, (mean, sigma, y) = _deciles(mapped, va)
    # This small model's RMSE peaks in the 6th decile and falls above it: no monotone map makes the
    # top deciles exact (they would need a larger σ to get a smaller one).  Where RMSE still grows
    # with σ the deciles are exact; ENCE falls by more than three times.
    grows = np.flatnonzero(np.diff(before["rmse"]) > 0)
    assert len(grows) >= 3 and np.all(np.abs(np.array(after["ratio"])[grows] - 1) < 0.01), after["ratio"]
    assert after["ence"] < before["ence"] / 3 and after["ence"] < 0.05
    # The map multiplies σ by its ratio of the unmapped σ; the mean is untouched.
    _, (mean0, sigma0, _) = _deciles(plain, va)
    np.testing.assert_array_equal(mean, mean0)
    np.testing.assert_allclose(sigma, sigma0 * mapped.scaling.sigma_ratio(sigma0), rtol=2e-6)
    # The file: format 3 with the map; a model without one stays format 2, without the fields.
    path = mapped.save(tmp_path / "mapped.safetensors")
    again = load(path)
    assert again.scaling == mapped.scaling
    meta = json.loads(__import__("safetensors").safe_open(str(path), "np").metadata()["bigdens"])
    assert meta["format_version"] == 3
    meta2 = json.loads(__import__("safetensors").safe_open(str(plain.save(tmp_path / "p.safetensors")),
                                                             "np").metadata()["bigdens"])
    assert meta2["format_version"] == 2 and "sigma_knots" not in meta2["scaling"]
    assert _deciles(again, va)[1][1] == pytest.approx(sigma, rel=1e-6)


def test_cli_calibrate_fits_the_map_only_when_asked(al4_splits, model, tmp_path, capsys):
    from bigdens.cli import main

    src = model.save(tmp_path / "m.safetensors")
    args = ["calibrate", str(src), str(AL4), "--split", "validation", "--mc-samples", "8", "--threads", "1"]
    assert main([*args, "-o", str(tmp_path / "plain.safetensors")]) == 0
    assert not load(tmp_path / "plain.safetensors").scaling.sigma_knots
    assert main([*args, "--sigma-map", "-o", str(tmp_path / "mapped.safetensors")]) == 0
    assert "σ map of" in capsys.readouterr().out
    assert len(load(tmp_path / "mapped.safetensors").scaling.sigma_knots) >= 5
    assert main([*args, "--sigma-map", "--keep-variance", "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--keep-variance" in err and not (tmp_path / "x.safetensors").exists()


def test_evaluate_reports_the_binned_calibration_and_the_regions(al4_splits, model):
    from bigdens.train import evaluate

    tr, va = al4_splits
    res = evaluate(model, va, samples=8)
    for row in res["snapshots"]:
        assert len(row["sigma_bins"]["ratio"]) == metrics.SIGMA_BINS and row["ence"] >= 0
        assert row["protocol"] == "bigdens-dft-v1" and "near_defect" in row and "open_space" in row
    assert res["overall"]["ence_max"] == max(r["ence"] for r in res["snapshots"])
