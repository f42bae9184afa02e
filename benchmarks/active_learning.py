"""The measured demonstration of active learning (issue: uncertainty-driven active learning).

Start: the Al stage-1 model trained on bulk 32-atom cells only.  Pool: 41 thermalized Al cells
of 32 and 108 sites with 0, 1 and 2 vacancies and a 6-atom void, at 300–900 K
(:data:`POOL`).  Hold-out: the al32-vacancy test cells and the al108-vacancy cells, never in the
pool.  Strategies ``uncertainty``, ``random`` and ``largest`` run ``bigdens learn`` at the same
budget with two seeds each; every DFT is cached by structure and protocol, so strategies and
seeds share it.

Stages (each resumable):

    python -m benchmarks.active_learning pool      # MD only: writes the pool file
    python -m benchmarks.active_learning dft [--only 32|108]   # DFT of the pool into the cache
    python -m benchmarks.active_learning run       # the strategies (DFT of picks not cached runs here)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

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
#: Bulk cells each round trains on besides its picks (so that fine-tuning does not forget the bulk).
BASE_TRAIN = ["al32-T0300-00", "al32-T0300-01", "al32-T0600-00", "al32-T0600-01", "al32-T0900-00",
              "al32-T0900-01", "al32-T1400-00", "al32-T1400-01"]
HOLDOUT = ["datasets/al32-vacancy", "datasets/al108-vacancy"]
FINETUNE = {"train_layers": 2, "epochs": 40, "points_per_epoch": 100_000, "lr": 1e-3, "patience": 15}


def _holdout():
    from bigdens import data

    return [s for d in HOLDOUT if (ROOT / d / "dataset.json").is_file() for s in data.read_dataset(ROOT / d)]


def run_strategy(strategy: str, seed: int, *, pool, cost, holdout) -> dict:
    """One ``learn`` run (resumable), and every round's model scored on the hold-out cells."""
    from benchmarks.model_v2 import score_snapshot
    from bigdens import bnn, data
    from bigdens.active.cache import DFTCache
    from bigdens.active.loop import Data, LearnConfig, Loop
    from bigdens.config import PredictConfig
    from bigdens.datagen import DFTSettings

    al32 = {s.name: s for s in data.read_dataset(ROOT / "datasets" / "al32")}
    d = Data(train=[al32[n] for n in BASE_TRAIN], calibration=[s for s in al32.values() if s.split == "validation"],
             holdout=holdout)
    config = LearnConfig(budget=ROUND_BUDGET * ROUNDS, rounds=ROUNDS, round_budget=ROUND_BUDGET, strategy=strategy,
                         seed=seed, finetune=FINETUNE)
    workdir = OUT / "runs" / f"{strategy}-s{seed}"
    loop = Loop(START_MODEL, pool, workdir=workdir, cache=DFTCache(CACHE, dft=DFTSettings()), cost=cost, data=d,
                config=config, cluster=PredictConfig(out=workdir / "unused.zarr", model=START_MODEL, workers=0))
    report = loop.run()
    rows = []
    for r in report["rounds"]:
        path = START_MODEL if r["round"] == 0 else workdir / f"round-{r['round']}" / "model.safetensors"
        model = bnn.load(path)
        cells = [score_snapshot([model], s, samples=20) for s in holdout]
        opened = [c["open_space"] for c in cells if "open_space" in c]
        rows.append({"round": r["round"], "spent_core_s": r["spent_core_s"], "dft_core_s": r["dft_core_s"],
                     "picks": r["picks"], "nmae_pct": r["nmae_pct"], "coverage_1sigma_pct": r["coverage_1sigma_pct"],
                     "coverage_2sigma_pct": r["coverage_2sigma_pct"],
                     "open_space_error_ratio": [o["error_ratio"] for o in opened],
                     "open_space_coverage_1sigma_pct": [o["coverage_1sigma_pct"] for o in opened],
                     "cells": [{k: c[k] for k in ("name", "nmae_pct", "coverage_1sigma_pct", "coverage_2sigma_pct",
                                                  "electron_count_error_pct")} for c in cells]})
    return {"strategy": strategy, "seed": seed, "stopped": report["stopped"], "rounds": rows}


def run_all(strategies=STRATEGIES, seeds=SEEDS) -> dict:
    from benchmarks._common import machine_info, write_result
    from bigdens.active import cost as cost_model
    from bigdens.active.loop import plot_report

    pool = make_pool()
    cost = cost_model.from_datasets([ROOT / "datasets" / d for d in ("al32", "al108", "al32-vacancy")],
                                    protocol="bigdens-dft-v1")
    holdout = _holdout()
    runs = [run_strategy(s, k, pool=pool, cost=cost, holdout=holdout) for s in strategies for k in seeds]
    result = {"benchmark": "active_learning",
              "settings": {"start_model": START_MODEL.name, "pool": len(pool), "round_budget": ROUND_BUDGET,
                           "rounds": ROUNDS, "base_train": BASE_TRAIN, "holdout": [s.name for s in holdout],
                           "finetune": FINETUNE, "cost_model": cost.to_dict()},
              "machine": machine_info(), "runs": runs}
    plot_report(OUT / "demo.png", runs, labels=[f"{r['strategy']} s{r['seed']}" for r in runs])
    return write_result(OUT / "demo.json", result)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["pool", "dft", "run"])
    ap.add_argument("--only", choices=["32", "108"], help="dft: only the small or the large cells")
    ap.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES), help="run: these only")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="run: these seeds only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.stage == "pool":
        make_pool()
    elif args.stage == "dft":
        run_dft(args.only)
    else:
        run_all(args.strategies, args.seeds)


if __name__ == "__main__":
    main()
