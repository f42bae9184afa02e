"""Active learning: the pool, the cost model, the acquisition, `bigdens suggest` and `bigdens learn`.

The learn tests run the whole loop with real GPAW single points on 3- and 4-atom Al cells
(protocol bigdens-dft-v1), on a local Dask cluster and on the single-node SLURM.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bigdens import data, structure
from bigdens.active import acquisition as A
from bigdens.active import candidates as C
from bigdens.active import cost
from bigdens.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "datasets"
SHIPPED_AL = ROOT / "bigdens" / "models" / "al.safetensors"
PROTOCOL = "bigdens-dft-v1"


def _snap(ds: str, name: str):
    return data.read_snapshot(DATASETS / ds / f"{name}.npz", name=name)


def _cand(snapshot) -> C.Candidate:
    return C.from_atoms(snapshot.atoms(), name=snapshot.name, source="test")


def _fresh(snapshot) -> C.Candidate:
    """A candidate that is no shipped cell: ``snapshot``'s atoms moved by a fixed 0.01 Å rattle (every shipped
    vacancy cell is a test cell, and learn never picks test cells)."""
    atoms = snapshot.atoms()
    atoms.rattle(0.01, seed=1)
    return C.from_atoms(atoms, name=f"{snapshot.name}-r", source="test")


@pytest.fixture(scope="module")
def al_model():
    from bigdens import bnn

    return bnn.load(SHIPPED_AL)


# -- cost ---------------------------------------------------------------------------------------
def test_cost_model_reproduces_the_recorded_core_seconds():
    dirs = sorted(p.parent for p in DATASETS.glob("*/dataset.json"))
    records = cost.records_from_datasets(dirs, protocol=PROTOCOL)
    model = cost.fit(records, protocol=PROTOCOL)
    assert model.n_records == len(records) >= 80
    # Each data set's geometric-mean cost is reproduced within 25 % (defect cells need more SCF
    # iterations than the fit's electron count says); single records scatter by the fit's residual.
    for d in dirs:
        recs = [r for r in records if r.source.startswith(d.name + "/")]
        if len(recs) < 3:
            continue
        with np.load(DATASETS / d.name / f"{recs[0].source.split('/')[1]}.npz") as z:
            numbers, cell = z["numbers"], z["cell"]
        predicted = model.core_seconds(numbers, cell)
        recorded = math.exp(np.mean(np.log([r.core_seconds for r in recs])))
        assert abs(math.log(predicted / recorded)) < 0.25, (d.name, predicted, recorded)
    ratios = [math.log(model.core_seconds(*_arrays(r)) / r.core_seconds) for r in records]
    assert abs(np.sqrt(np.mean(np.square(ratios))) - model.rms_log_residual) < 1e-9
    assert model.rms_log_residual < 0.2
    # Al costs grow between N^2 and N^3 over 32 -> 108 atoms (at the same k-point count).
    assert 2.0 < model.electron_exponent < 3.2


def _arrays(record):
    folder, name = record.source.split("/")
    with np.load(DATASETS / folder / f"{name}.npz") as z:
        return z["numbers"], z["cell"]


def test_cost_model_refuses_a_chemistry_without_timings():
    model = cost.fit([cost.CostRecord("Al", 96, 8, 160.0), cost.CostRecord("Al", 324, 8, 3600.0)], protocol=PROTOCOL)
    si = structure.diamond_sige((1, 1, 1), x=0.0)
    with pytest.raises(InputError, match="no recorded DFT timings for Si"):
        model.core_seconds(si.numbers, si.cell[:])
    # Two sizes fix the exponent exactly: 3600/160 = (324/96)^b.
    assert model.electron_exponent == pytest.approx(math.log(3600 / 160) / math.log(324 / 96))


# -- acquisition --------------------------------------------------------------------------------
@pytest.mark.slow  # end to end; the fast lane leaves it to CI
def test_a_bulk_trained_model_ranks_a_vacancy_above_bulk(al_model):
    bulk = [_cand(_snap("al32", n)) for n in ("al32-T0300-01", "al32-T0600-01", "al32-T0900-02")]
    vac = [_cand(_snap("al32-vacancy", n)) for n in ("al32-vac1-T0300-00", "al32-vac1-T0500-00")]
    scores = [A.score(c, al_model) for c in bulk + vac]
    by = {s.name: s for s in scores}
    assert min(by[c.name].value for c in vac) > 2 * max(by[c.name].value for c in bulk)
    costs = [160.0] * len(scores)
    (first,) = A.select(scores, costs, count=1)
    assert scores[first].name in {c.name for c in vac}
    # Without the diversity discount the two vacancy cells are the two picks.
    picks = A.select(scores, costs, count=2, length=1e-9)
    assert {scores[i].name for i in picks} == {c.name for c in vac}


def test_scores_do_not_depend_on_pool_order(al_model):
    c = _cand(_snap("al32-vacancy", "al32-vac1-T0300-00"))
    a = A.score(c, al_model, samples=8)
    b = A.score(C.Candidate("other-name", c.cell, c.positions, c.numbers, "x"), al_model, samples=8)
    assert a.value == b.value and a.fingerprint == b.fingerprint


def test_exact_duplicates_are_removed_and_never_picked_twice(al_model):
    c = _cand(_snap("al32-vacancy", "al32-vac1-T0300-00"))
    twin = C.Candidate("twin", c.cell.copy(), c.positions.copy(), c.numbers.copy(), "elsewhere")
    other = _cand(_snap("al32-vacancy", "al32-vac1-T0400-00"))
    pool, dropped = C.unique([c, twin, other])
    assert [p.name for p in pool] == [c.name, other.name] and dropped == ["twin"]
    s = [A.score(x, al_model, samples=8) for x in (c, twin, other)]
    for strategy in A.STRATEGIES:
        picks = A.select(s, [1.0, 1.0, 1.0], strategy=strategy, count=3)
        assert len({s[i].hash for i in picks}) == len(picks), strategy
        assert not {0, 1} <= set(picks)


def test_diversity_spreads_the_picks():
    """Near-identical candidates are discounted once one of them is picked."""
    fp = lambda *v: tuple(float(x) for x in v)  # noqa: E731
    s = [A.Score(f"a{i}", f"h{i}", 32, "Al", 100, 0.01, 10.0 - 0.1 * i, 1e-5, fp(0, 0.001 * i)) for i in range(3)]
    s.append(A.Score("b", "hb", 32, "Al", 100, 0.01, 8.0, 1e-5, fp(5, 5)))
    picks = A.select(s, [1.0] * 4, count=2, length=1.0)
    assert [s[i].name for i in picks] == ["a0", "b"]


@pytest.mark.parametrize("strategy", A.STRATEGIES)
def test_the_budget_is_never_exceeded(strategy):
    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, 30))
        s = [A.Score(f"c{i}", f"h{i}", int(rng.integers(3, 300)), "Al", 100, 0.01, float(rng.exponential(3.0)),
                     1e-5, tuple(rng.normal(size=3))) for i in range(n)]
        costs = rng.uniform(10, 4000, n)
        budget = float(rng.uniform(5, 20000))
        count = int(rng.integers(1, 10)) if trial % 3 == 0 else None
        picks = A.select(s, costs, strategy=strategy, budget=budget, count=count, seed=trial)
        assert costs[picks].sum() <= budget + 1e-9 if picks else True
        assert len(set(picks)) == len(picks) and (count is None or len(picks) <= count)
        if strategy != "uncertainty":  # baselines fill the budget: nothing left that would fit
            left = budget - costs[picks].sum()
            assert count is not None and len(picks) == count or all(
                costs[i] > left for i in range(n) if i not in picks)


def test_suggest_never_picks_excluded_structures(al_model, tmp_path):
    from bigdens.active.suggest import Request, suggest
    from bigdens.config import PredictConfig

    cands = [_cand(_snap("al32-vacancy", n)) for n in ("al32-vac1-T0300-00", "al32-vac1-T0400-00",
                                                         "al32-vac1-T0500-00")]
    cm = cost.fit([cost.CostRecord("Al", 96, 8, 160.0)], protocol=PROTOCOL)
    cfg = PredictConfig(out=tmp_path / "u.zarr", model=SHIPPED_AL, workers=0)
    plan = suggest(SHIPPED_AL, cands, cost=cm, request=Request(count=3), config=cfg, exclude=[cands[1].hash])
    assert cands[1].name not in plan["picks"] and len(plan["picks"]) == 2
    with pytest.raises(InputError, match="smaller than the cheapest candidate"):
        suggest(SHIPPED_AL, cands, cost=cm, request=Request(budget=10.0), config=cfg)


def test_suggest_reports_and_never_ranks_a_candidate_predict_refuses(al_model, tmp_path):
    # A cell written in Bohr used to rank first (its whole volume unsure) and plan 12,850 core-s of DFT.
    from ase.units import Bohr

    from bigdens.active.suggest import Request, format_plan, suggest
    from bigdens.config import PredictConfig

    good = _fresh(_snap("al32-vacancy", "al32-vac1-T0300-00"))
    atoms = good.atoms()
    atoms.set_cell(atoms.cell / Bohr, scale_atoms=True)
    bohr = C.from_atoms(atoms, name="bohr", source="test")
    pair = structure.fcc_al((2, 2, 2))
    pair.positions[1] = pair.positions[0] + [0.6, 0.0, 0.0]
    pair = C.from_atoms(pair, name="pair", source="test")
    cm = cost.fit([cost.CostRecord("Al", 96, 8, 160.0)], protocol=PROTOCOL)
    cfg = PredictConfig(out=tmp_path / "u.zarr", model=SHIPPED_AL, workers=0)
    plan = suggest(SHIPPED_AL, [bohr, good, pair], cost=cm, request=Request(count=3), config=cfg)
    assert plan["picks"] == [good.name] and plan["pool"]["n_refused"] == 2
    rows = {r["name"]: r for r in plan["candidates"]}
    assert rows["bohr"]["rank"] is None and "is the cell in Bohr?" in rows["bohr"]["refused"]
    assert rows["pair"]["rank"] is None and "atoms 0 and 1 are 0.600 Å apart" in rows["pair"]["refused"]
    assert rows["bohr"]["value"] is None and rows[good.name]["refused"] is None
    text = format_plan(plan)
    assert "out of the model's domain, not ranked: bohr: " in text and "out of the model's domain, not ranked: pair" in text


def test_pool_file_round_trip_and_generator_matches_datagen(tmp_path):
    from bigdens.datagen import MDSettings, build_variants, make_plan

    md = MDSettings(equilibration_ps=0.05, interval_ps=0.02)
    pool = C.from_generator("al", temperatures=[300], snapshots=2, md=md, vacancies=1, seed=3, source="g")
    variants, info = build_variants("al", vacancies=1, seed=3)
    plan = make_plan(variants, temperatures=[300], snapshots_per_temperature=2, md=md, seed=3,
                     split_fractions=(1, 0, 0), variant_info=info)
    assert [c.hash for c in pool] == [C.from_atoms(p.atoms(), name=p.name, source="").hash for p in plan]
    path = C.save_pool(tmp_path / "pool.json", pool)
    back = C.load_pool(path)
    assert [c.hash for c in back] == [c.hash for c in pool] and back[0].info["temperature"] == 300.0
    d = json.loads(path.read_text())
    d["candidates"][0]["positions"][0][0] += 0.1
    path.write_text(json.dumps(d))
    with pytest.raises(InputError, match="does not match its recorded hash"):
        C.load_pool(path)


def test_suggest_cli_writes_a_plan_and_a_figure(tmp_path):
    from ase.io import write

    from bigdens.cli import main

    snaps = [_snap("al32-vacancy", "al32-vac1-T0300-00"), _snap("al32", "al32-T0300-01")]
    write(tmp_path / "c.extxyz", [s.atoms() for s in snaps])
    out = tmp_path / "plan.json"
    status = main(["suggest", str(SHIPPED_AL), str(tmp_path / "c.extxyz"), "--count", "1", "--workers", "1",
                   "--cost-data", str(DATASETS / "al32"), "-o", str(out)])
    assert status == 0
    plan = json.loads(out.read_text())
    assert plan["picks"] == ["c@0"]  # the vacancy cell
    assert (tmp_path / "plan.png").stat().st_size > 1000


def test_learn_refuses_bad_data_before_writing(tmp_path):
    from bigdens.active.cache import DFTCache
    from bigdens.active.loop import Data, LearnConfig, Loop
    from bigdens.config import PredictConfig
    from bigdens.datagen import DFTSettings

    cm = cost.fit([cost.CostRecord("Al", 96, 8, 160.0)], protocol=PROTOCOL)
    hold = _snap("al32-vacancy", "al32-vac1-T0300-00")
    val = _snap("al32", "al32-T0300-06")
    pool = [_fresh(_snap("al32-vacancy", "al32-vac1-T0400-00")), _cand(hold)]
    kw = dict(workdir=tmp_path / "w", cache=DFTCache(tmp_path / "cache", dft=DFTSettings()), cost=cm,
              config=LearnConfig(budget=1000.0), cluster=PredictConfig(out=tmp_path / "u.zarr", workers=0))
    with pytest.raises(InputError, match="hold-out cell 'al32-T0300-06' is also training or calibration"):
        Loop(SHIPPED_AL, pool, data=Data(calibration=[val], holdout=[hold, val]), **kw)
    with pytest.raises(InputError, match="every candidate is a hold-out cell"):
        Loop(SHIPPED_AL, pool[1:], data=Data(calibration=[val], holdout=[hold]), **kw)
    with pytest.raises(InputError, match="smaller than the cheapest"):
        Loop(SHIPPED_AL, pool, data=Data(calibration=[val], holdout=[hold]),
             **{**kw, "config": LearnConfig(budget=5.0)})
    si = C.from_atoms(structure.diamond_sige((1, 1, 1), x=0.0), name="si", source="t")
    with pytest.raises(InputError, match="contains Si, which the model was not trained on"):
        Loop(SHIPPED_AL, [si], data=Data(calibration=[val], holdout=[hold]), **kw)
    assert not (tmp_path / "w").exists() and not (tmp_path / "cache").exists()


def _learn_kw(tmp_path):
    from bigdens.active.cache import DFTCache
    from bigdens.active.loop import LearnConfig
    from bigdens.config import PredictConfig
    from bigdens.datagen import DFTSettings

    return dict(workdir=tmp_path / "w", cache=DFTCache(tmp_path / "cache", dft=DFTSettings()),
                cost=cost.fit([cost.CostRecord("Al", 96, 8, 160.0)], protocol=PROTOCOL),
                config=LearnConfig(budget=1000.0), cluster=PredictConfig(out=tmp_path / "u.zarr", workers=0))


def test_learn_never_trains_or_calibrates_on_test_cells(tmp_path, gpaw):
    import dataclasses

    from bigdens.active.loop import STATE, Data, Loop

    kw = _learn_kw(tmp_path)
    test_cell = _snap("al32", "al32-T0300-01")  # a shipped test cell (by its dataset.json)
    hold = _snap("al32-vacancy", "al32-vac1-T0300-00")
    val, train = _snap("al32", "al32-T0300-06"), _snap("al32", "al32-T0300-00")
    pool = [_fresh(_snap("al32-vacancy", "al32-vac1-T0400-00")), _cand(hold)]
    assert test_cell.split == "test" and val.split == "validation" and train.split == "train"
    with pytest.raises(InputError, match="al32-T0300-01 is in the test split: learn trains on --train data"):
        Loop(SHIPPED_AL, pool, data=Data(train=[train, test_cell], calibration=[val], holdout=[hold]), **kw)
    with pytest.raises(InputError, match="al32-T0300-01 is in the test split: learn calibrates on --val data"):
        Loop(SHIPPED_AL, pool, data=Data(train=[train], calibration=[val, test_cell], holdout=[hold]), **kw)
    # A renamed copy labelled validation is still the shipped test cell.
    copy = dataclasses.replace(test_cell, name="mine", split="validation")
    with pytest.raises(InputError, match=r"mine \(= al32/al32-T0300-01\) is a copy of a test cell shipped"):
        Loop(SHIPPED_AL, pool, data=Data(train=[train], calibration=[val, copy], holdout=[hold]), **kw)
    assert not (tmp_path / "w").exists() and not (tmp_path / "cache").exists()
    # A resumed run too (its state written before the check existed).
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / STATE).write_text(json.dumps({"request": {}, "rounds": [], "stopped": None}))
    with pytest.raises(InputError, match="learn calibrates on --val data"):
        Loop(SHIPPED_AL, pool, data=Data(train=[train], calibration=[val, test_cell], holdout=[hold]), **kw)
    # The hold-out is the place for test cells.
    Loop(SHIPPED_AL, pool, data=Data(train=[train], calibration=[val], holdout=[hold, test_cell]),
         **{**kw, "workdir": tmp_path / "ok"})
    assert (tmp_path / "ok" / STATE).is_file()


def test_learn_cli_refuses_a_test_cell_in_val_before_building_the_pool(tmp_path, monkeypatch, capsys):
    from bigdens.cli import main, suggest

    def no_pool(*a, **k):
        raise AssertionError("the pool was built (generators run MD) before the data were checked")

    monkeypatch.setattr(suggest, "read_candidates", no_pool)
    monkeypatch.chdir(tmp_path)
    status = main(["learn", str(SHIPPED_AL), "--candidates", "al --temperatures 300", "--budget", "1000",
                   "--holdout", str(DATASETS / "al32-vacancy"), "--val", str(DATASETS / "al32"),
                   "--cost-data", str(DATASETS / "al32"), "--workers", "0", "-o", "m.safetensors"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "in the test split: learn calibrates on --val data" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_learn_holdout_is_never_the_models_own_training_data(al_model):
    import dataclasses

    from bigdens.active.loop import Data, check_data
    from bigdens.bnn import DensityModel
    from bigdens.train import _provenance

    train, val = _snap("al32", "al32-T0300-00"), _snap("al32", "al32-T0300-06")
    hold = _snap("al32-vacancy", "al32-vac1-T0300-00")
    pool = [_fresh(_snap("al32-vacancy", "al32-vac1-T0400-00"))]
    renamed = dataclasses.replace(train, name="fresh-cell", split="test")

    def model(records):  # the shipped model, trained (both stages) on `records`
        parent = {**al_model.info, "data": {"train": records}, "parent": None}
        return DensityModel(params=al_model.params, arch=al_model.arch, scaling=al_model.scaling, net=al_model.net,
                            info={**al_model.info, "data": {"train": []}, "parent": parent})

    records = _provenance([train])
    assert records[0]["structure_digest"] == data.structure_digest(train)
    with pytest.raises(InputError, match="hold-out cell 'fresh-cell' is the model's own training data \\(the same "
                                         "structure as its training cell 'al32-T0300-00'\\)"):
        check_data(model(records), Data(calibration=[val], holdout=[hold, renamed]), pool)
    # Older models: by name and structure (a renamed copy goes unseen), or by name only.
    check_data(model([{k: v for k, v in records[0].items() if k != "structure_digest"}]),
               Data(calibration=[val], holdout=[hold, renamed]), pool)
    named = [{"name": "al32-T0300-00"}]
    with pytest.raises(InputError, match="hold-out cell 'al32-T0300-00' is the model's own training data;"):
        check_data(model(named), Data(calibration=[val], holdout=[train]), pool)
    # A renamed copy of a --train or --val cell (a model that records none of its training cells: the check
    # of the data given, not of the model's own).
    with pytest.raises(InputError, match="hold-out cell 'fresh-cell' is also training or calibration data "
                                         "\\(the same structure as 'al32-T0300-00'\\)"):
        check_data(model([]), Data(train=[train], calibration=[val], holdout=[hold, renamed]), pool)


def test_learn_never_calibrates_on_the_models_training_cells_nor_picks_shipped_test_cells(al_model, caplog):
    import logging

    from bigdens.active.loop import Data, check_data, never_picked

    trained = al_model.info["parent"]["data"]["train"][0]["name"]  # a stage-1 cell of the shipped model
    cell = _snap("al32", trained)
    val, hold = _snap("al32", "al32-T0300-06"), _snap("al32-vacancy", "al32-vac1-T0300-00")
    pool = [_fresh(_snap("al32-vacancy", "al32-vac1-T0400-00"))]
    # (The shipped model's records predate structure digests: a training cell is found by name and structure.)
    with pytest.raises(InputError, match=f"--val cell {trained!r} is the model's own training data; σ and early "):
        check_data(al_model, Data(calibration=[val, cell], holdout=[hold]), pool)
    test_cell = _cand(_snap("al32", "al32-T0300-01"))  # shipped test cell, offered in the pool
    assert test_cell.hash in never_picked(Data(calibration=[val], holdout=[hold]))
    assert pool[0].hash not in never_picked(Data(calibration=[val], holdout=[hold]))
    with caplog.at_level(logging.INFO, logger="bigdens.active.loop"):
        check_data(al_model, Data(calibration=[val], holdout=[hold]), [*pool, test_cell])
    assert "1 candidate(s) are test cells shipped in datasets/ and are never picked: " in caplog.text
    with pytest.raises(InputError, match="every candidate is a hold-out cell or a shipped test cell"):
        check_data(al_model, Data(calibration=[val], holdout=[hold]), [test_cell])


def test_learn_without_gpaw_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from bigdens.cli import main

    monkeypatch.setitem(sys.modules, "gpaw", None)  # as if the dft extra were not installed
    monkeypatch.chdir(tmp_path)
    status = main(["learn", str(SHIPPED_AL), "--candidates", "al --temperatures 300", "--budget", "1000",
                   "--holdout", str(DATASETS / "al32-vacancy"), "--val", str(DATASETS / "al32" / "al32-T0300-06.npz"),
                   "--cost-data", str(DATASETS / "al32"), "--workers", "0", "-o", "m.safetensors"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "gpaw" in err[0].lower() and "dft" in err[0], err
    assert list(tmp_path.iterdir()) == []


# -- the loop with real DFT -----------------------------------------------------------------------
POOL_4 = ["al --cells 1 1 1 --vacancies 1 --temperatures 300 --snapshots-per-temperature 2 --equilibration 0.2",
          "al --cells 1 1 1 --temperatures 300 --equilibration 0.2"]


def _learn_argv(tmp_path: Path, workdir: str, *extra: str) -> list[str]:
    return ["learn", str(SHIPPED_AL), "--candidates", *POOL_4, "--budget", "150", "--rounds", "1",
            "--holdout", str(DATASETS / "al32-vacancy" / "al32-vac1-T0300-00.npz"),
            "--val", str(DATASETS / "al32" / "al32-T0300-06.npz"), "--train", str(DATASETS / "al32" / "al32-T0300-00.npz"),
            "--cost-data", str(DATASETS / "al32"), str(DATASETS / "al108"), str(ROOT / "tests" / "data" / "al4"), "--cache", str(tmp_path / "cache"),
            "-w", str(tmp_path / workdir), "--epochs", "2", "--points-per-epoch", "20000", "--threads", "1",
            "-o", str(tmp_path / f"{workdir}.safetensors"), *extra]


def _cli(argv: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "bigdens", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


@pytest.mark.slow
def test_a_killed_learn_resumes_at_the_same_dft_and_gives_the_same_model(tmp_path, gpaw):
    from bigdens import bnn

    argv = _learn_argv(tmp_path, "a", "--workers", "1")
    p = _cli(argv)
    state = tmp_path / "a" / "state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None:  # wait for the round's picks, then its DFT
        if state.is_file() and json.loads(state.read_text())["rounds"]:
            break
        time.sleep(0.5)
    time.sleep(8)  # the DFT is under way (a 3-atom cell takes about a minute)
    assert p.poll() is None, p.communicate()[0]
    assert not list((tmp_path / "cache").rglob("*.npz")), "the DFT finished before the kill"
    picks = json.loads(state.read_text())["rounds"][0]["picks"]
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 143, out
    assert "model" not in json.loads(state.read_text())["rounds"][0]

    p = _cli(argv)
    out = p.communicate(timeout=1200)[0]
    assert p.returncode == 0, out
    st = json.loads(state.read_text())
    assert st["rounds"][0]["picks"] == picks and st["rounds"][0]["dft_core_s"] > 0
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == len(picks)
    model_a = tmp_path / "a.safetensors"
    info = bnn.load(model_a).info
    assert info["active_learning"]["rounds"][0]["picks"] == picks
    assert {d["name"] for d in info["data"]["train"]} == {"al32-T0300-00", *picks}
    assert st["rounds"][0]["estimated_core_s"] <= 150.0  # the budget counts estimates

    # The same run, uninterrupted, in another work folder sharing the cache: no DFT, the same model.
    p = _cli(_learn_argv(tmp_path, "b", "--workers", "0"))
    out = p.communicate(timeout=1200)[0]
    assert p.returncode == 0, out
    assert "DFT of" not in out
    a, b = bnn.load(model_a), bnn.load(tmp_path / "b.safetensors")  # the metadata differ in wall times only
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys() and all(sa[k].equal(sb[k]) for k in sa)
    assert a.scaling == b.scaling and a.info["epistemic_reference"] == b.info["epistemic_reference"]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1] and (tmp_path / "a" / "report.png").is_file()


@pytest.mark.slow
@pytest.mark.slurm
def test_learn_runs_its_dft_as_slurm_jobs(tmp_path, local_slurm, gpaw):
    p = _cli(_learn_argv(tmp_path, "s", "--cluster", "slurm:local-slurm"), cwd=tmp_path)  # job logs land there
    out = p.communicate(timeout=1500)[0]
    assert p.returncode == 0, out
    st = json.loads((tmp_path / "s" / "state.json").read_text())
    (snap_file,) = list((tmp_path / "cache").rglob("*.npz"))
    snap = data.read_snapshot(snap_file)
    assert snap.provenance["code"] == "GPAW" and snap.protocol == PROTOCOL
    assert abs(snap.electron_integral - snap.n_electrons_expected) < 1e-3
    assert st["rounds"][0]["dft_core_s"] == pytest.approx(snap.dft_core_seconds)


def test_a_share_of_the_picks_calibrates_instead_of_training():
    """One pick in four (the 2nd, 6th, ...) joins the calibration split; share 0 keeps them all for training."""
    from bigdens.active.loop import LearnConfig

    config = LearnConfig(budget=100.0)
    assert [i for i in range(10) if config.calibrates(i)] == [1, 5, 9]
    assert not any(LearnConfig(budget=100.0, calibration_share=0).calibrates(i) for i in range(10))
    assert [i for i in range(7) if LearnConfig(budget=1.0, calibration_share=0.5).calibrates(i)] == [1, 3, 5]
    with pytest.raises(InputError, match="calibration-share"):
        LearnConfig(budget=100.0, calibration_share=0.9)


def test_picks_are_computed_in_the_protocol_the_model_trained_on(tmp_path, al_model):
    from bigdens.bnn import DensityModel
    from bigdens.cli.suggest import dft_settings
    from bigdens.datagen import protocol_settings

    # Its stage 1 trained on v2 labels, its stage 2 on v1 and v2 cells: the library default.
    assert dft_settings(None, str(SHIPPED_AL)) == protocol_settings("v1")
    assert dft_settings("v2", str(SHIPPED_AL)) == protocol_settings("v2")

    def saved(protocols):  # the shipped model, its stage-1 records saying these protocols
        parent = {**al_model.info["parent"],
                  "data": {"train": [{"name": f"c{i}", "protocol": p} for i, p in enumerate(protocols)]}}
        m = DensityModel(params=al_model.params, arch=al_model.arch, scaling=al_model.scaling, net=al_model.net,
                         info={**al_model.info, "data": {"train": []}, "parent": parent})
        path = tmp_path / f"m{len(protocols)}.safetensors"
        m.save(path)
        return str(path)

    assert dft_settings(None, saved(["bigdens-dft-v2"])) == protocol_settings("v2")
    assert dft_settings(None, saved([])) == protocol_settings("v1")  # nothing recorded: the library default
    # Mixed, and its own stage records none: the library default; a last stage of one protocol: that one.
    assert dft_settings(None, saved(["bigdens-dft-v1", "bigdens-dft-v2", "bigdens-dft-v2"])) == protocol_settings("v1")
    parent = {**al_model.info["parent"], "data": {"train": [{"name": "a", "protocol": "bigdens-dft-v1"}]}}
    staged = DensityModel(params=al_model.params, arch=al_model.arch, scaling=al_model.scaling, net=al_model.net,
                          info={**al_model.info, "data": {"train": [{"name": "b", "protocol": "bigdens-dft-v2"}]},
                                "parent": parent})
    staged.save(tmp_path / "staged.safetensors")
    assert dft_settings(None, str(tmp_path / "staged.safetensors")) == protocol_settings("v2")
    with pytest.raises(InputError, match="trained on data of protocol\\(s\\) bigdens-dft-v1, bigdens-dft-v9; say "
                                         "which protocol the picks are computed in with --protocol v1 or v2"):
        dft_settings(None, saved(["bigdens-dft-v1", "bigdens-dft-v9"]))


def test_shipped_cost_records_are_the_data_sets_timings_and_work_from_any_folder(tmp_path, monkeypatch):
    # Every shipped record is a timing one of the repository's data sets recorded (a real GPAW run), and the
    # model fitted to them estimates each within a factor of 2; nothing is read from the current folder.
    from bigdens.cli._common import cost_data_dirs

    for protocol in ("bigdens-dft-v1", "bigdens-dft-v2"):
        shipped = cost.shipped_records(protocol=protocol)
        sources = sorted({DATASETS / r.source.split("/")[0] for r in shipped})
        recorded = {r.source: r for r in cost.records_from_datasets(sources, protocol=protocol)}
        assert shipped and all(recorded[r.source] == r for r in shipped)
        monkeypatch.chdir(tmp_path)
        assert cost_data_dirs(None) is None
        model = cost.from_datasets(None, protocol=protocol)
        assert model.n_records == len(shipped)
        for r in shipped:
            folder, name = r.source.split("/")
            with np.load(DATASETS / folder / f"{name}.npz") as z:
                est = model.core_seconds(z["numbers"], z["cell"])
            assert 0.5 < est / r.core_seconds < 2.0, (r.source, est, r.core_seconds)
        monkeypatch.chdir(ROOT)
