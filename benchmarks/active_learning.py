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
    python -m benchmarks.active_learning run       # the strategies; writes the results JSON
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
    todo = [c for c in pool if c not in cache and (only is None or (c.n_atoms < 64) == (only == "32"))]
    todo.sort(key=lambda c: c.n_atoms)
    print(f"{len(pool) - len(todo)} of {len(pool)} in the cache; computing {len(todo)}", flush=True)
    for i, c in enumerate(todo):
        snap = compute(c, dft=DFTSettings())
        cache.put(c, snap)
        t = snap.provenance["timing"]
        print(f"[{i + 1}/{len(todo)}] {c.name}: {c.n_atoms} atoms, {t['core_seconds']:.0f} core-s", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["pool", "dft", "run"])
    ap.add_argument("--only", choices=["32", "108"], help="dft: only the small or the large cells")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.stage == "pool":
        make_pool()
    elif args.stage == "dft":
        run_dft(args.only)
    else:
        raise SystemExit("the run stage comes with `bigdens learn`")


if __name__ == "__main__":
    main()
