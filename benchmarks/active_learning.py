"""The measured demonstrations of active learning (issue: uncertainty-driven active learning).

**Al** (``--system al``, the default).  Start: the Al stage-1 model trained on bulk 32-atom cells only.  Pool: 41 thermalized Al cells
of 32 and 108 sites with 0, 1 and 2 vacancies and a 6-atom void, at 300–900 K
(:data:`POOL`).  Hold-out: the al32-vacancy test cells and the al108-vacancy cells, never in the
pool.  Strategies ``uncertainty``, ``random`` and ``largest`` run ``bigdens learn`` at the same
budget with two seeds each; every DFT is cached by structure and protocol, so strategies and
seeds share it.

**Al, rare defects** (``--system al-rare``): the same with a pool of the twelve 32-site bulk cells
and four of the vacancy cells, so that random picks find the new structures only by chance.

**Si–Ge** (``--system sige``).  Start: a stage-1 model trained on the sige64 cells of x = 0 and
0.5 only (:data:`SIGE_START_TRAIN`, the shipped recipe's settings).  Pool: the other sige64
training cells, of every x (x = 0 and 0.5 included, so that picking the missing compositions is a
choice).  Their DFT exists already: the pool is the data set's cells and a private cache is filled
from the data set's files with their recorded core-seconds, so the loop spends what that DFT cost
without running it again.  Hold-out: the sige64 test cells (x = 0, 0.25, 0.5, 1), the x = 0.75
cell the all-composition stage-1 model validated on, and the sige64-vacancy cells.  Reference:
that all-composition stage-1 model (``sige_stage1_seed0``).

Stages (each resumable):

    python -m benchmarks.active_learning pool      # Al: MD only, writes the pool file
    python -m benchmarks.active_learning dft [--only 32|108]   # Al: DFT of the pool into the cache
    python -m benchmarks.active_learning start --system sige   # Si–Ge: train the start model
    python -m benchmarks.active_learning run [--system sige]   # the strategies
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "active_learning"
POOL_FILE = OUT / "pool.json"
CACHE = ROOT / "datasets" / "dft-cache"
START_MODEL = ROOT / "benchmarks" / "results" / "model_v2" / "models" / "al_stage1_seed0.safetensors"
#: (generator settings, snapshots per temperature): 36 cells of 31-32 atoms, 5 of 102-107.
POOL = [
    (dict(system="al", cells=(2, 2, 2), vacancies=0, temperatures=(300, 600, 900), seed=101), 4),
    (dict(system="al", cells=(2, 2, 2), vacancies=1, temperatures=(300, 600, 900), seed=102), 4),
    (dict(system="al", cells=(2, 2, 2), vacancies=2, temperatures=(300, 600, 900), seed=103), 4),
    (dict(system="al", cells=(3, 3, 3), vacancies=0, temperatures=(600,), seed=104), 1),
    (dict(system="al", cells=(3, 3, 3), vacancies=1, temperatures=(300, 900), seed=105), 1),
    (dict(system="al", cells=(3, 3, 3), void=2.9, temperatures=(300, 900), seed=106), 1),
]


def make_pool() -> list:
    from bigdens.active import candidates as C
    from bigdens.datagen import MDSettings

    if POOL_FILE.is_file():
        return C.load_pool(POOL_FILE)
    pool = []
    for settings, snapshots in POOL:
        pool += C.from_generator(**settings, snapshots=snapshots, md=MDSettings(), source=repr(settings),
                                 progress=print)
    pool, dropped = C.unique(pool)
    assert not dropped, dropped
    OUT.mkdir(parents=True, exist_ok=True)
    C.save_pool(POOL_FILE, pool, request=[[repr(s), n] for s, n in POOL])
    print(f"wrote {POOL_FILE}: {len(pool)} candidates")
    return pool


def run_dft(only: str | None) -> None:
    """Al: the DFT of the pool's cells into the shared cache, smallest first."""
    from bigdens.active.cache import DFTCache, compute
    from bigdens.datagen import DFTSettings

    cache = DFTCache(CACHE, dft=DFTSettings())
    pool = make_pool()
    chosen = [c for c in pool if only is None or (c.n_atoms < 64) == (only == "32")]
    todo = sorted((c for c in chosen if c not in cache), key=lambda c: c.n_atoms)
    print(f"{len(chosen) - len(todo)} of {len(chosen)} in the cache; computing {len(todo)}", flush=True)
    for i, c in enumerate(todo):
        if c in cache:  # a `run` stage computed it meanwhile
            continue
        snap = compute(c, dft=DFTSettings())
        cache.put(c, snap)
        t = snap.provenance["timing"]
        print(f"[{i + 1}/{len(todo)}] {c.name}: {c.n_atoms} atoms, {t['core_seconds']:.0f} core-s", flush=True)


STRATEGIES = ("uncertainty", "random", "largest")
SEEDS = (0, 1)
#: Per round and in all (estimated core-seconds): about three 32-site cells a round.
ROUND_BUDGET = 500.0
ROUNDS = 3
#: Bulk cells each round trains on besides its picks (so that fine-tuning does not forget the bulk): al32
#: training cells only (until issue 29 it held the test cells al32-T0300-01 and al32-T0600-01 too).
BASE_TRAIN = ["al32-T0300-00", "al32-T0600-00", "al32-T0900-00", "al32-T0900-01", "al32-T1400-00",
              "al32-T1400-01"]
HOLDOUT = ["datasets/al32-vacancy", "datasets/al108-vacancy"]
FINETUNE = {"train_layers": 2, "epochs": 40, "points_per_epoch": 100_000, "lr": 1e-3, "patience": 15}

SIGE_OUT = ROOT / "benchmarks" / "results" / "active_learning_sige"
SIGE = ROOT / "datasets" / "sige64"
SIGE_START = SIGE_OUT / "start_x0_x05.safetensors"
SIGE_REFERENCE = ROOT / "benchmarks" / "results" / "model_v2" / "models" / "sige_stage1_seed0.safetensors"
#: The start model's training cells (x = 0 and 0.5, three temperatures each) and validation cells.
SIGE_START_TRAIN = ["sige64-x0.00-T0300-00", "sige64-x0.00-T0600-01", "sige64-x0.00-T0900-01",
                    "sige64-x0.50-T0300-00", "sige64-x0.50-T0600-01", "sige64-x0.50-T0900-00"]
SIGE_START_VAL = ["sige64-x0.00-T0600-00", "sige64-x0.50-T0600-00"]
#: The sige64 validation cell at x = 0.75 joins the hold-out (no test cell has that x).
SIGE_HOLDOUT_EXTRA = ["sige64-x0.75-T0900-00"]
#: The shipped stage-1 recipe, on six cells, for 1,500 s on one core.
SIGE_START_ARGS = ["--m", "24", "24", "--k", "5", "5", "--r-cut", "6.5", "--hidden", "128", "128", "--epochs", "400",
                   "--points-per-epoch", "250000", "--patience", "60", "--nll-beta", "0.5", "--seed", "0",
                   "--threads", "1", "--time-limit", "1500"]
#: About two 64-atom cells a round; every layer is fine-tuned (a new composition, not a new defect), at the
#: stage-1 recipe's points per epoch.
SIGE_ROUND_BUDGET = 2500.0
SIGE_FINETUNE = {"train_layers": 3, "epochs": 150, "points_per_epoch": 250_000, "lr": 1e-3, "patience": 40,
                 "nll_beta": 0.5}


@dataclass(frozen=True)
class Demo:
    """One demonstration: where it writes, what it starts from and what each round is given."""

    name: str
    out: Path
    start: Path
    cache: Path
    cost_data: tuple[str, ...]
    round_budget: float
    rounds: int
    finetune: dict
    pool: Callable[[], list]
    data: Callable[[], object]
    reference: Path | None = None
    strategies: tuple[str, ...] = field(default=STRATEGIES)


def _al_data():
    from bigdens import data
    from bigdens.active.loop import Data

    al32 = {s.name: s for s in data.read_dataset(ROOT / "datasets" / "al32")}
    holdout = [s for d in HOLDOUT if (ROOT / d / "dataset.json").is_file() for s in data.read_dataset(ROOT / d)]
    data.refuse_test_cells([al32[n] for n in BASE_TRAIN], todo="BASE_TRAIN must name al32 training cells")
    return Data(train=[al32[n] for n in BASE_TRAIN],
                calibration=[s for s in al32.values() if s.split == "validation"], holdout=holdout)


def _sige_cells() -> dict:
    from bigdens import data

    return {s.name: s for s in data.read_dataset(SIGE)}


def _sige_data():
    from bigdens import data
    from bigdens.active.loop import Data

    cells = _sige_cells()
    holdout = [s for s in cells.values() if s.split == "test"] + [cells[n] for n in SIGE_HOLDOUT_EXTRA]
    holdout += data.read_dataset(ROOT / "datasets" / "sige64-vacancy")
    return Data(train=[cells[n] for n in SIGE_START_TRAIN], calibration=[cells[n] for n in SIGE_START_VAL],
                holdout=holdout)


def _sige_pool() -> list:
    """The sige64 training cells the start model did not train on, their DFT put in the demo's cache."""
    from bigdens.active.cache import DFTCache
    from bigdens.active.candidates import Candidate
    from bigdens.datagen import DFTSettings

    cache = DFTCache(SIGE_OUT / "cache", dft=DFTSettings())
    pool = []
    for s in _sige_cells().values():
        if s.split != "train" or s.name in SIGE_START_TRAIN:
            continue
        c = Candidate(s.name, s.cell, s.positions, s.numbers, str(SIGE), {"temperature": s.temperature})
        if c not in cache:
            cache.put(c, s)
        pool.append(c)
    return pool


def _rare_pool() -> list:
    """The Al pool's twelve 32-site bulk cells and one in six of its small vacancy cells (4): new structures
    are a quarter of the pool, as in an MD run where a defect shows up now and then."""
    pool = [c for c in make_pool() if c.n_atoms < 64]
    vacancy = sorted((c for c in pool if "vac" in c.name), key=lambda c: c.name)[::6]
    return [c for c in pool if "vac" not in c.name] + vacancy


DEMOS = {
    "al": Demo("al", OUT, START_MODEL, CACHE, ("al32", "al108", "al32-vacancy"), ROUND_BUDGET, ROUNDS, FINETUNE,
               make_pool, _al_data),
    "al-rare": Demo("al-rare", OUT / "rare", START_MODEL, CACHE, ("al32", "al108", "al32-vacancy"), ROUND_BUDGET,
                    ROUNDS, FINETUNE, _rare_pool, _al_data, strategies=("uncertainty", "random")),
    "sige": Demo("sige", SIGE_OUT, SIGE_START, SIGE_OUT / "cache", ("sige64", "sige64-vacancy", "sige216"),
                 SIGE_ROUND_BUDGET, ROUNDS, SIGE_FINETUNE, _sige_pool, _sige_data, reference=SIGE_REFERENCE,
                 strategies=("uncertainty", "random")),
}


def train_sige_start() -> Path:
    """Train the Si–Ge start model on x = 0 and 0.5 (skipped when it exists)."""
    from bigdens.cli import main as cli

    if not SIGE_START.is_file():
        cells = [str(SIGE / f"{n}.npz") for n in SIGE_START_TRAIN]
        val = [str(SIGE / f"{n}.npz") for n in SIGE_START_VAL]
        code = cli(["train", *cells, "--val", *val, *SIGE_START_ARGS, "-o", str(SIGE_START)])
        assert code == 0, code
    return SIGE_START


def score_model(path: Path, holdout) -> dict:
    """Hold-out metrics of one model (S = 20): overall per cell, open space, bond types."""
    from benchmarks.model_v2 import score_snapshot
    from bigdens import bnn

    cells = [score_snapshot([bnn.load(path)], s, samples=20) for s in holdout]
    opened = [c["open_space"] for c in cells if "open_space" in c]
    keep = ("name", "nmae_pct", "coverage_1sigma_pct", "coverage_2sigma_pct", "electron_count_error_pct", "bonds")
    return {"open_space_error_ratio": [o["error_ratio"] for o in opened],
            "open_space_coverage_1sigma_pct": [o["coverage_1sigma_pct"] for o in opened],
            "cells": [{k: c[k] for k in keep if k in c} for c in cells]}


def run_strategy(demo: Demo, strategy: str, seed: int, *, pool, cost, data) -> dict:
    """One ``learn`` run (resumable), and every round's model scored on the hold-out cells."""
    from bigdens.active.cache import DFTCache
    from bigdens.active.loop import LearnConfig, Loop
    from bigdens.config import PredictConfig
    from bigdens.datagen import DFTSettings

    config = LearnConfig(budget=demo.round_budget * demo.rounds, rounds=demo.rounds, round_budget=demo.round_budget,
                         strategy=strategy, seed=seed, finetune=demo.finetune)
    workdir = demo.out / "runs" / f"{strategy}-s{seed}"
    loop = Loop(demo.start, pool, workdir=workdir, cache=DFTCache(demo.cache, dft=DFTSettings()), cost=cost, data=data,
                config=config, cluster=PredictConfig(out=workdir / "unused.zarr", model=demo.start, workers=0))
    report = loop.run()
    rows = []
    for r in report["rounds"]:
        path = demo.start if r["round"] == 0 else workdir / f"round-{r['round']}" / "model.safetensors"
        rows.append({"round": r["round"], "spent_core_s": r["spent_core_s"], "dft_core_s": r["dft_core_s"],
                     "picks": r["picks"], "calibration_picks": r["calibration_picks"], "nmae_pct": r["nmae_pct"],
                     "coverage_1sigma_pct": r["coverage_1sigma_pct"], "coverage_2sigma_pct": r["coverage_2sigma_pct"],
                     **score_model(path, data.holdout)})
    plan = json.loads((workdir / "round-1" / "plan.json").read_text()) if rows[1:] else {"candidates": []}
    values = {c["name"]: {"value": c["value"], "flagged_share": c["flagged_share"], "cost_core_s": c["cost_core_s"]}
              for c in plan["candidates"]}
    return {"strategy": strategy, "seed": seed, "stopped": report["stopped"], "rounds": rows,
            "first_scores": values}


def run_all(demo: Demo, strategies=None, seeds=SEEDS) -> dict:
    from benchmarks._common import machine_info, write_result
    from bigdens.active import cost as cost_model
    from bigdens.active.loop import plot_report

    pool = demo.pool()
    cost = cost_model.from_datasets([ROOT / "datasets" / d for d in demo.cost_data], protocol="bigdens-dft-v1")
    data = demo.data()
    runs = [run_strategy(demo, s, k, pool=pool, cost=cost, data=data) for s in strategies or demo.strategies
            for k in seeds]
    result = {"benchmark": "active_learning", "system": demo.name,
              "settings": {"start_model": demo.start.name, "pool": [c.name for c in pool],
                           "round_budget": demo.round_budget, "rounds": demo.rounds,
                           "base_train": [s.name for s in data.train], "calibration": [s.name for s in data.calibration],
                           "holdout": [s.name for s in data.holdout], "finetune": demo.finetune,
                           "cost_model": cost.to_dict()},
              "machine": machine_info(), "runs": runs}
    if demo.reference is not None:
        result["reference"] = {"model": demo.reference.name, **score_model(demo.reference, data.holdout)}
    result["summary"] = summarize(result)
    plot_report(demo.out / "demo.png", runs, labels=[f"{r['strategy']} s{r['seed']}" for r in runs])
    return write_result(demo.out / "demo.json", result)


def _nmae(row: dict) -> float:
    return row["nmae_pct"]


def _worst_open_space(row: dict) -> float:
    return max(row["open_space_error_ratio"]) if row["open_space_error_ratio"] else float("nan")


def dft_to_reach(runs: list[dict], metric: Callable[[dict], float], *, baseline: str = "random") -> dict:
    """Per strategy and seed: the DFT core-seconds at which its hold-out ``metric`` first reaches the
    baseline's final value (same seed), as a share of the baseline's DFT (None: never reached)."""
    base = {r["seed"]: r for r in runs if r["strategy"] == baseline}
    out: dict = {}
    for r in runs:
        b = base.get(r["seed"])
        if b is None or r["strategy"] == baseline:
            continue
        target, spent = metric(b["rounds"][-1]), b["rounds"][-1]["dft_core_s"]
        reached = next((row["dft_core_s"] for row in r["rounds"] if metric(row) <= target), None)
        out.setdefault(r["strategy"], []).append(
            {"seed": r["seed"], "baseline_final": target, "baseline_dft_core_s": spent, "dft_core_s": reached,
             "share_of_baseline": None if reached is None else reached / spent})
    return out


def composition(name: str) -> float:
    """x of a sige64 cell name (``sige64-x0.25-T0300-00`` → 0.25)."""
    return float(name.split("-x")[1].split("-")[0])


def summarize(result: dict) -> dict:
    """The numbers the issue's targets are judged on, from a demo result."""
    runs = result["runs"]
    summary: dict = {"dft_to_reach_random_final": {"nmae": dft_to_reach(runs, _nmae)}}
    if result["system"].startswith("al"):
        summary["dft_to_reach_random_final"]["open_space_worst_ratio"] = dft_to_reach(runs, _worst_open_space)
        summary["final"] = [{"strategy": r["strategy"], "seed": r["seed"],
                             "open_space_error_ratio": r["rounds"][-1]["open_space_error_ratio"],
                             "coverage_1sigma_pct": [c["coverage_1sigma_pct"] for c in r["rounds"][-1]["cells"]]}
                            for r in runs]
    else:
        ref = {c["name"]: c["nmae_pct"] for c in result["reference"]["cells"]}
        by_x: dict = {}
        for r in runs:
            for name, v in r["first_scores"].items():
                by_x.setdefault(composition(name), []).append(v["value"])
        summary["first_value_by_x"] = {x: {"mean": sum(v) / len(v), "max": max(v), "n": len(v)}
                                       for x, v in sorted(by_x.items())}
        summary["picked_x_by_round"] = [{"strategy": r["strategy"], "seed": r["seed"],
                                         "x": [sorted(composition(n) for n in row["picks"]) for row in r["rounds"][1:]]}
                                        for r in runs]
        summary["final_over_reference"] = [{"strategy": r["strategy"], "seed": r["seed"],
                                            "cells": {c["name"]: c["nmae_pct"] / ref[c["name"]]
                                                      for c in r["rounds"][-1]["cells"]}} for r in runs]
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["pool", "dft", "start", "run", "summary"],
                    help="summary: recompute the summary of the demo's recorded demo.json")
    ap.add_argument("--system", choices=sorted(DEMOS), default="al", help="which demonstration (default al)")
    ap.add_argument("--only", choices=["32", "108"], help="dft: only the small or the large cells")
    ap.add_argument("--strategies", nargs="+", choices=STRATEGIES, help="run: these only (default: the demo's)")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="run: these seeds only")
    ap.add_argument("--threads", type=int, default=1, help="torch/numba threads (default 1)")
    args = ap.parse_args(argv)
    from bigdens.cli.train import set_threads

    set_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    demo = DEMOS[args.system]
    if args.stage == "pool":
        demo.pool()
    elif args.stage == "dft":
        run_dft(args.only)
    elif args.stage == "start":
        train_sige_start()
    elif args.stage == "summary":
        from benchmarks._common import write_result

        result = json.loads((demo.out / "demo.json").read_text())
        result = {"system": demo.name, **result, "summary": summarize({"system": demo.name, **result})}
        print(json.dumps(write_result(demo.out / "demo.json", result)["summary"], indent=1))
    else:
        run_all(demo, args.strategies, args.seeds)


if __name__ == "__main__":
    main()
