"""Training, fine-tuning and evaluation on a tiny real DFT data set (tests/data/al4, GPAW)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigdens import data, metrics
from bigdens.bnn import Architecture, DensityModel, Scaling, load
from bigdens.descriptors import DescriptorParams
from bigdens.errors import InputError
from bigdens.bnn import epistemic_threshold
from bigdens.train import (TrainConfig, calibrate, evaluate, finetune, lineage, snapshot_block_index,
                           snapshot_features, train)

AL4 = Path(__file__).parent / "data" / "al4"
PARAMS = DescriptorParams(species=(13,), m=(16,), k=(4,), r_cut=5.0)
FAST = TrainConfig(epochs=6, points_per_epoch=8000, batch_size=512, patience=10, seed=1)


def _mean_field(*hidden):
    """A small mean-field network, what these tests are about (Architecture()'s default is last-layer 128 × 128)."""
    return Architecture(hidden=hidden, kind="mean-field")


@pytest.fixture(scope="module")
def snaps(al4_splits):
    return al4_splits


@pytest.fixture(scope="module")
def _trained(snaps):
    tr, va = snaps
    return train(tr, va, PARAMS, arch=_mean_field(16, 16), config=FAST, log=lambda _: None)


@pytest.fixture
def base(_trained):
    """A model trained with FAST on al4 (trained once per module; each test gets its own copy)."""
    import copy

    return copy.deepcopy(_trained)


def test_training_reduces_loss_on_real_snapshot(snaps, base):
    tr, va = snaps
    model = base
    hist = model.info["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert model.info["training"]["best_val_nmae_pct"] < hist[0]["val_nmae_pct"] or len(hist) == 1
    assert model.scaling.variance_scale > 0
    assert model.info["data"]["train"][0]["protocol"] == "bigdens-dft-v1"
    assert model.info["data"]["train"][0]["composition"] == {"Al": 1.0}
    assert [d["structure_digest"] for d in model.info["data"]["train"]] == [data.structure_digest(s) for s in tr]
    # The nearest-neighbour range of the training cells, measured by brute force here.
    nn = np.concatenate([np.where(np.eye(len(s.positions), dtype=bool), np.inf, _pair_distances(s)).min(axis=1)
                         for s in tr])
    np.testing.assert_allclose(model.info["domain_reference"]["nn_distance"], [nn.min(), nn.max()], rtol=1e-5)


def _pair_distances(snap) -> np.ndarray:
    """Minimum-image distances between every pair of atoms of a snapshot (brute force over 27 images), Å."""
    frac = np.linalg.solve(snap.cell.T, snap.positions.T).T
    diff = frac[:, None, :] - frac[None, :, :]
    shifts = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    cart = (diff[:, :, None, :] - np.round(diff)[:, :, None, :] + shifts) @ snap.cell
    return np.linalg.norm(cart, axis=-1).min(axis=-1)


def test_finetune_changes_only_last_layers(snaps, base):
    tr, va = snaps
    cfg = TrainConfig(epochs=3, points_per_epoch=4000, batch_size=512, seed=2, train_layers=1)
    new = finetune(base, va, tr, config=cfg, log=lambda _: None)
    for i, (a, b) in enumerate(zip(base.net.layers, new.net.layers)):
        same = all(np.array_equal(p.detach().numpy(), q.detach().numpy()) for p, q in zip(a.parameters(), b.parameters()))
        assert same == (i < len(base.net.layers) - 1), i
    assert new.info["stage"] == "finetune" and new.scaling.feature_mean == base.scaling.feature_mean
    # The domain's neighbour range is the union of both stages' training cells.
    (lo, hi), (lo2, hi2) = base.info["domain_reference"]["nn_distance"], new.info["domain_reference"]["nn_distance"]
    assert lo2 <= lo and hi2 >= hi
    assert new.info["recalibrated"] and new.scaling.variance_scale != base.scaling.variance_scale
    kept = finetune(base, va, tr, config=cfg, recalibrate=False, log=lambda _: None)
    assert kept.scaling.variance_scale == base.scaling.variance_scale and not kept.info["recalibrated"]
    # Fine-tuned twice: the record keeps the whole chain, and its training data count for calibrate.
    again = finetune(new, tr, va, config=cfg, log=lambda _: None)
    chain = lineage(again.info)
    assert [r["stage"] for r in chain] == ["finetune", "finetune", base.info["stage"]]
    assert chain[2]["data"] == base.info["data"] and chain[1]["data"]["train"] == new.info["data"]["train"]


def _val_coverage_and_high(model, va, *, samples=20, seed=0):
    """1σ coverage (%) and share of points above the epistemic threshold (%) on ``va`` as calibration saw it."""
    from bigdens.thermal import bond_spread

    parts = []
    for s in va:  # one block index for all points, each cell with its own bond spread, as calibration saw them
        X, y = snapshot_features(s, model.params)
        parts.append((*model.predict(X, samples=samples, seed=seed, block_index=0,
                                     disorder=bond_spread(s.positions, s.numbers, s.cell)), y))
    mean, epi, ale, y = (np.concatenate(a) for a in zip(*parts))
    cov = metrics.coverage(mean, y, np.sqrt(epi.astype(np.float64) + ale), 1.0)
    return cov, 100 * np.mean(np.sqrt(epi.astype(np.float64)) > epistemic_threshold(model))


def test_calibration_is_absolute_and_sets_the_epistemic_reference(snaps, base):
    import dataclasses

    tr, va = snaps
    cov, high = _val_coverage_and_high(base, va, seed=FAST.seed)
    assert abs(cov - 68.3) < 0.1 and 0.05 < high < 0.2
    ref = base.info["epistemic_reference"]
    assert ref["validation"] == [s.name for s in va] and ref["n_points"] == sum(s.density.size for s in va)
    # A model that starts far off (a fine-tuned one starts with its parent's factor) ends at 68.3 % too.
    off = DensityModel(params=base.params, arch=base.arch, net=base.net, info=base.info,
                       scaling=dataclasses.replace(base.scaling, variance_scale=7.0 * base.scaling.variance_scale))
    fixed = calibrate(off, va, samples=20, seed=3)
    assert abs(_val_coverage_and_high(fixed, va, seed=3)[0] - 68.3) < 0.1
    assert np.isclose(fixed.scaling.variance_scale, base.scaling.variance_scale, rtol=0.05)
    assert off.scaling.variance_scale == 7.0 * base.scaling.variance_scale  # the input is not changed
    kept = calibrate(off, va, fit_variance=False)
    assert kept.scaling.variance_scale == off.scaling.variance_scale
    assert np.isclose(epistemic_threshold(kept), np.sqrt(7.0) * epistemic_threshold(calibrate(base, va, fit_variance=False)))
    tuned = finetune(off, va, tr, config=TrainConfig(epochs=2, points_per_epoch=4000, batch_size=512, seed=2,
                                                    train_layers=1), log=lambda _: None)
    assert abs(_val_coverage_and_high(tuned, tr, seed=2)[0] - 68.3) < 0.1


def test_evaluate_reads_a_snapshot_the_same_in_any_list(snaps):
    tr, va = snaps
    model = DensityModel.new(PARAMS, _mean_field(8), Scaling.fit(*snapshot_features(tr[0], PARAMS)), seed=0)
    alone = evaluate(model, va[:1], samples=4, seed=3)["snapshots"][0]
    listed = evaluate(model, [*tr, va[0]], samples=4, seed=3)["snapshots"][-1]
    assert alone == listed
    assert snapshot_block_index(va[0]) != snapshot_block_index(tr[0])


def test_evaluate_matches_numpy(snaps, tmp_path):
    tr, va = snaps
    model = DensityModel.new(PARAMS, _mean_field(8), Scaling.fit(*snapshot_features(tr[0], PARAMS)), seed=0)
    res = evaluate(model, va, samples=4, seed=3)
    s = va[0]
    X, y = snapshot_features(s, PARAMS)
    mean, epi, ale = model.predict(X, samples=4, seed=3, block_index=snapshot_block_index(s))
    p, r = mean.astype(np.float64), y.astype(np.float64)
    sig = np.sqrt(epi.astype(np.float64) + ale)
    row = res["snapshots"][0]
    assert np.isclose(row["nmae_pct"], 100 * np.abs(p - r).sum() / np.abs(r).sum())
    assert np.isclose(row["nrmse_pct"], 100 * np.sqrt(((p - r) ** 2).mean()) / (r.max() - r.min()))
    dv = abs(np.linalg.det(s.cell)) / r.size
    assert np.isclose(row["electron_count_error_pct"], 100 * (p.sum() - r.sum()) * dv / 12.0)
    assert np.isclose(row["coverage_1sigma_pct"], 100 * np.mean(np.abs(p - r) <= sig))
    assert np.isclose(row["coverage_2sigma_pct"], 100 * np.mean(np.abs(p - r) <= 2 * sig))
    assert row["n_atoms"] == 4
    assert "epistemic_high_pct" not in row  # a model without an epistemic reference
    ref = float(np.quantile(np.sqrt(epi.astype(np.float64)), 0.9))
    model.info["epistemic_reference"] = {"quantiles": [0.5, 0.999], "std": [0.0, ref]}
    row = evaluate(model, va, samples=4, seed=3)["snapshots"][0]
    assert np.isclose(row["epistemic_high_pct"], 100 * np.mean(np.sqrt(epi.astype(np.float64)) > ref))


def test_metrics_on_known_values():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 4.0])
    assert np.isclose(metrics.nmae(pred, ref), 100 * 1.5 / 10)
    assert np.isclose(metrics.nrmse(pred, ref), 100 * np.sqrt((0.25 + 1) / 4) / 3)
    assert metrics.coverage(pred, ref, np.full(4, 0.6), 1) == 75.0
    assert np.isclose(metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1.0)


def test_bad_training_input(snaps):
    tr, va = snaps
    other = DescriptorParams(species=(14,), m=(4,), k=(2,), r_cut=4.0)
    with pytest.raises(InputError, match=r"holds \['Al'\].*do not include"):
        train(tr, va, other, config=FAST, log=lambda _: None)
    with pytest.raises(InputError, match="no training snapshots"):
        train([], va, PARAMS, config=FAST, log=lambda _: None)
    with pytest.raises(InputError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(InputError, match=r"device must be one of \('auto', 'cpu', 'cuda'\), got 'tpu'"):
        TrainConfig(device="tpu")
    with pytest.raises(InputError, match=r"time_limit must be > 0 seconds \(or None\), got 0"):
        TrainConfig(time_limit=0)


def test_time_limit_stops_at_the_epoch_boundary_and_keeps_the_best(snaps):
    tr, va = snaps
    import dataclasses

    lines = []
    model = train(tr, va, PARAMS, arch=_mean_field(16, 16),
                  config=dataclasses.replace(FAST, time_limit=1e-6), log=lines.append)
    assert len(model.info["history"]) == 1 and model.info["training"]["best_epoch"] == 1
    assert lines[-1] == "time limit (1e-06 s) reached after epoch 1"


def test_cosine_schedule_runs_from_lr_down_to_its_floor_and_plateau_starts_flat(snaps):
    import dataclasses

    tr, va = snaps
    cfg = dataclasses.replace(FAST, epochs=5, patience=10, schedule="cosine", min_lr_factor=0.05)
    lrs = [e["lr"] for e in train(tr, va, PARAMS, arch=_mean_field(8), config=cfg,
                                  log=lambda _: None).info["history"]]
    assert lrs[0] == pytest.approx(cfg.lr) and lrs[-1] == pytest.approx(cfg.lr * 0.05)
    assert lrs[2] == pytest.approx(cfg.lr * (0.05 + 0.95 * 0.5))  # half way down the cosine, mid-run
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    flat = [e["lr"] for e in train(tr, va, PARAMS, arch=_mean_field(8),
                                   config=dataclasses.replace(cfg, schedule="plateau"),
                                   log=lambda _: None).info["history"]]
    assert flat[:3] == [cfg.lr] * 3  # halved only after max(2, patience // 3) epochs without progress


def test_progress_goes_to_the_module_logger(snaps, caplog, capsys):
    # No print: without a handler the lines are dropped; `bigdens train` shows them (tests/test_data.py).
    import dataclasses
    import logging

    tr, va = snaps
    with caplog.at_level(logging.INFO, logger="bigdens.train"):
        train(tr, va, PARAMS, arch=_mean_field(8), config=dataclasses.replace(FAST, epochs=1))
    assert capsys.readouterr().out == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "bigdens.train"]
    assert lines[0].startswith("training on ") and lines[1].startswith("epoch    1  loss")


def test_lineage_helpers_live_next_to_the_model():
    from bigdens import lineage as L, train as T

    assert (T.lineage, T.composition, T.training_compositions) == (L.lineage, L.composition,
                                                                    L.training_compositions)
    child = {"data": {"train": [{"composition": {"Si": 0.5, "Ge": 0.5}}]},
             "parent": {"data": {"train": [{"composition": {"Si": 1.0}}]}}}
    assert [r.get("data") for r in L.lineage(child)] == [child["data"], child["parent"]["data"]]
    assert L.training_compositions(child) == {"Ge": (0.0, 0.5), "Si": (0.5, 1.0)}
    assert L.composition([14, 14, 32, 14]) == {"Si": 0.75, "Ge": 0.25}


def test_same_seed_same_model_on_the_cpu(snaps, base):
    tr, va = snaps
    a = base  # trained earlier in this process, with other tests run in between
    b = train(tr, va, PARAMS, arch=_mean_field(16, 16), config=FAST, log=lambda _: None)
    assert a.info["training"]["device"] == "cpu"
    for p, q in zip(a.net.state_dict().values(), b.net.state_dict().values()):
        assert np.array_equal(p.numpy(), q.numpy())


@pytest.mark.cuda
def test_training_and_finetuning_on_the_gpu(snaps):
    import dataclasses

    tr, va = snaps
    cfg = dataclasses.replace(FAST, device="cuda")
    model = train(tr, va, PARAMS, arch=_mean_field(16, 16), config=cfg, log=lambda _: None)
    hist = model.info["history"]
    assert model.info["training"]["device"] == "cuda" and hist[-1]["loss"] < hist[0]["loss"]
    assert all(p.device.type == "cpu" for p in model.net.parameters())  # handed back on the CPU
    cpu = train(tr, va, PARAMS, arch=_mean_field(16, 16), config=FAST, log=lambda _: None)
    # Same data and schedule on either device: validation errors of the same size.
    assert model.info["training"]["best_val_nmae_pct"] < 1.5 * cpu.info["training"]["best_val_nmae_pct"]
    new = finetune(model, va, tr, config=dataclasses.replace(cfg, epochs=2, train_layers=1), log=lambda _: None)
    assert new.info["training"]["device"] == "cuda"
    assert np.array_equal(new.net.layers[0].w_mu.detach().numpy(), model.net.layers[0].w_mu.detach().numpy())


@pytest.mark.slow
def test_cli_train_evaluate_and_refusals(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "bigdens", *args], capture_output=True, text=True, timeout=600)

    # --val with a data-set folder validates on its validation split only (never its train or test).
    r = run("train", str(AL4), "--val", str(AL4), "--m", "8", "--k", "3", "--r-cut", "4.5", "--hidden", "8",
            "--epochs", "2", "--points-per-epoch", "4000", "-o", str(tmp_path / "m.safetensors"))
    assert r.returncode == 0, r.stderr
    trained = load(tmp_path / "m.safetensors")
    assert trained.params.m == (8,)
    assert [d["name"] for d in trained.info["data"]["validation"]] == ["al4-T0300-01", "al4-T0900-01"]
    r = run("evaluate", str(tmp_path / "m.safetensors"), str(AL4), "--split", "validation", "--mc-samples", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["overall"]["n_snapshots"] == 2 and out["overall"]["nmae_pct"] > 0
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    r = run("evaluate", str(tmp_path / "junk.safetensors"), str(AL4))
    assert r.returncode == 2 and "not a readable bigdens model" in r.stderr and "Traceback" not in r.stderr
    r = run("finetune", str(tmp_path / "m.safetensors"), str(AL4), "--layers", "9", "-o", str(tmp_path / "f.safetensors"))
    assert r.returncode == 2 and "--layers must be within 1..2" in r.stderr
    assert not (tmp_path / "f.safetensors").exists()
    r = run("calibrate", str(tmp_path / "m.safetensors"), str(AL4), "-o", str(tmp_path / "c.safetensors"))
    assert r.returncode == 2 and "was trained on al4-T0300-00, al4-T0900-00" in r.stderr
    assert not (tmp_path / "c.safetensors").exists()
    r = run("calibrate", str(tmp_path / "m.safetensors"), str(AL4), "--split", "validation", "--mc-samples", "5",
            "-o", str(tmp_path / "c.safetensors"))
    assert r.returncode == 0, r.stderr
    cal = load(tmp_path / "c.safetensors")
    assert cal.info["epistemic_reference"]["validation"] == ["al4-T0300-01", "al4-T0900-01"]
    assert cal.info["calibration"]["samples"] == 5 and "epistemic σ 99.9 % quantile" in r.stdout


def test_beta_nll_matches_numpy_and_only_reweights():
    import torch

    from bigdens.train import TrainConfig, _nll

    rng = np.random.default_rng(0)
    mu, logvar, y = rng.normal(size=(3, 50))
    out = torch.tensor(np.stack([mu, logvar], axis=1), requires_grad=True)
    plain = 0.5 * (logvar + (y - mu) ** 2 * np.exp(-logvar))
    for beta in (0.0, 0.5):
        got = _nll(out, torch.tensor(y), beta)
        np.testing.assert_allclose(got.item(), (plain * np.exp(beta * logvar)).mean(), rtol=1e-12)
    # The weight is not differentiated: the mean's gradient is the plain one times σ^(2β).
    _nll(out, torch.tensor(y), 0.5).backward()
    np.testing.assert_allclose(out.grad[:, 0].numpy(), -(y - mu) * np.exp(-0.5 * logvar) / len(y), rtol=1e-10)
    with pytest.raises(InputError, match="nll_beta must be within"):
        TrainConfig(nll_beta=2.0)


def test_calibration_tells_a_trained_cell_from_another_named_alike(snaps):
    import dataclasses

    from bigdens.train import _check_calibration_set, _provenance

    tr, va = snaps
    model = DensityModel.new(PARAMS, _mean_field(8), Scaling.fit(*snapshot_features(tr[0], PARAMS)), seed=0,
                             info={"data": {"train": _provenance(tr)}})
    with pytest.raises(InputError, match=f"was trained on {tr[0].name}"):
        _check_calibration_set(model, [dataclasses.replace(tr[0], split="validation")])
    # Another data set's cell that happens to carry a training cell's name is not the training cell.
    twin = dataclasses.replace(va[0], name=tr[0].name)
    _check_calibration_set(model, [twin])
    # Models that recorded names only (before digests) still refuse it: they cannot tell.
    named = [{k: v for k, v in d.items() if k not in ("digest", "structure_digest")}
             for d in model.info["data"]["train"]]
    old = dataclasses.replace(model, info={"data": {"train": named}})
    with pytest.raises(InputError, match=f"was trained on {tr[0].name}"):
        _check_calibration_set(old, [twin])


def test_calibration_refuses_a_renamed_copy_of_a_trained_cell(snaps):
    import dataclasses

    from bigdens.data import structure_digest
    from bigdens.train import _check_calibration_set, _provenance

    tr, va = snaps
    records = _provenance(tr)
    assert [d["structure_digest"] for d in records] == [structure_digest(s) for s in tr]
    model = DensityModel.new(PARAMS, _mean_field(8), Scaling.fit(*snapshot_features(tr[0], PARAMS)), seed=0,
                             info={"data": {"train": []}, "parent": {"data": {"train": records}}})
    copy = dataclasses.replace(tr[0], name="renamed", split="validation")
    with pytest.raises(InputError, match=rf"was trained on renamed \(= {tr[0].name}\): calibrate on snapshots"):
        _check_calibration_set(model, [va[0], copy])
    _check_calibration_set(model, va)
    # Models from before structure digests (name-and-structure digests only) cannot tell a renamed copy.
    older = [{k: v for k, v in d.items() if k != "structure_digest"} for d in records]
    _check_calibration_set(dataclasses.replace(model, info={"data": {"train": older}}), [copy])


def test_an_interrupt_keeps_the_best_epoch_so_far(snaps):
    # Ctrl-C (or SIGTERM, which the command line turns into the same exception) during epoch 3.
    tr, va = snaps
    import dataclasses

    from bigdens.errors import Interrupted

    lines = []

    def log(line):
        lines.append(line)
        if line.startswith("epoch    3"):
            raise Interrupted("SIGTERM")

    model = train(tr, va, PARAMS, arch=_mean_field(16, 16), config=dataclasses.replace(FAST, epochs=50), log=log)
    t = model.info["training"]
    assert t["interrupted"] is True and len(model.info["history"]) == 3 and 1 <= t["best_epoch"] <= 3
    assert lines[-1] == f"interrupted after epoch 3: keeping the best epoch so far ({t['best_epoch']})"
    assert t["best_val_nmae_pct"] == min(h["val_nmae_pct"] for h in model.info["history"])
