"""``learn``: rounds of suggest → DFT of the picks → fine-tune → calibrate → evaluate on a hold-out.

Every round fine-tunes the *starting* model on its training data plus every pick so far (so a
round's model does not depend on how earlier rounds ended), recalibrates on the calibration
split (``--val`` plus a share of the picks, :attr:`LearnConfig.calibration_share`), and is evaluated on the hold-out cells, which can never be picked.  The loop stops when
the pool's flagged share falls below the validation base rate (the model is sure where it will
be used), when no candidate has anything left to teach, when the rounds are done or when the
budget cannot pay for another pick.

Work directory (``-w``)::

    state.json            what each round did (rewritten atomically after every step)
    pool.json             the candidates (fixed at the first round)
    round-R/plan.json     the round's suggestion (a resumed run keeps the same picks)
    round-R/model.safetensors
    report.json, report.png

The DFT goes through a :class:`~bigdens.active.cache.DFTCache`; a killed run resumes at the same
round and recomputes only the DFT that had not finished.  On the CPU with one thread per process
the resumed run writes the same model, bit for bit.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import InputError
from .acquisition import SCORE_SAMPLES, SCORE_SPACING

if TYPE_CHECKING:
    from ..bnn import DensityModel
    from ..data import Snapshot
    from .cache import DFTCache
    from .candidates import Candidate
    from .cost import CostModel

log = logging.getLogger(__name__)
STATE = "state.json"
POOL = "pool.json"
#: Fewest seconds a DFT task may run before its worker is restarted (the estimate ×20 when larger).
DFT_TIMEOUT_FLOOR_S = 3600.0


#: The fine-tuning of each round unless ``LearnConfig.finetune`` says otherwise (``bigdens learn``'s defaults):
#: :class:`~bigdens.train.TrainConfig` fields.
LEARN_FINETUNE = {"train_layers": 2, "epochs": 40, "points_per_epoch": 100_000, "lr": 1e-3, "patience": 15}


@dataclass(frozen=True)
class LearnConfig:
    """Settings of the loop.

    Attributes
    ----------
    budget : float
        DFT core-seconds (estimated) that all rounds together may spend.
    rounds : int
        Most rounds.
    round_budget : float or None
        Core-seconds per round (default ``budget / rounds``).
    strategy : str
        ``uncertainty``, ``random`` or ``largest``.
    spacing, samples : float, int
        Scoring grid spacing (Å) and Monte Carlo samples.
    seed : int
        Seeds scoring, the random strategy and fine-tuning.
    finetune : dict
        :class:`~bigdens.train.TrainConfig` fields of the fine-tuning (e.g. ``train_layers``,
        ``epochs``, ``points_per_epoch``, ``lr``); its seed is ``seed``.
    calibration_share : float
        Share of the picks that join the calibration split instead of the training data: one in
        ``round(1 / share)``, the 2nd, then every ``round(1 / share)``-th pick in picking order (0:
        none).  Without it, early stopping and σ are fitted only on ``--val``, which rarely holds
        the kind of structure the picks teach.
    """

    budget: float
    rounds: int = 3
    round_budget: float | None = None
    strategy: str = "uncertainty"
    spacing: float = SCORE_SPACING
    samples: int = SCORE_SAMPLES
    seed: int = 0
    finetune: dict = field(default_factory=lambda: dict(LEARN_FINETUNE))
    calibration_share: float = 0.25

    def __post_init__(self):
        from .acquisition import STRATEGIES

        if not 0 <= self.calibration_share <= 0.5:
            raise InputError(f"--calibration-share must be within [0, 0.5], got {self.calibration_share!r}")
        if not self.budget > 0:
            raise InputError(f"--budget must be > 0 core-seconds, got {self.budget!r}")
        if self.rounds < 1:
            raise InputError(f"--rounds must be >= 1, got {self.rounds!r}")
        if self.round_budget is not None and not self.round_budget > 0:
            raise InputError(f"--round-budget must be > 0 core-seconds, got {self.round_budget!r}")
        if self.strategy not in STRATEGIES:
            raise InputError(f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        self.train_config()  # validates the fine-tuning settings

    def train_config(self):
        from ..train import TrainConfig

        return TrainConfig(**{**self.finetune, "seed": self.seed})

    @property
    def per_round(self) -> float:
        return self.round_budget if self.round_budget is not None else self.budget / self.rounds

    def calibrates(self, index: int) -> bool:
        """Whether the pick at ``index`` (0-based, in picking order over all rounds) is calibration data."""
        if self.calibration_share == 0:
            return False
        every = round(1 / self.calibration_share)
        return index % every == 1


@dataclass
class Data:
    """The snapshots of a loop: base training data, calibration split, hold-out."""

    train: list = field(default_factory=list)
    calibration: list = field(default_factory=list)
    holdout: list = field(default_factory=list)


def _hash(s) -> str:
    from ..store import structure_hash

    return structure_hash(s.cell, s.positions, s.numbers)


def check_splits(data: Data) -> None:
    """Refuse test cells in the training and calibration data (:func:`bigdens.data.refuse_test_cells`: split
    ``"test"``, or the structure of a test cell shipped in ``datasets/`` under any name).

    The training data are trained on every round; the calibration data stop the fine-tuning early and
    fit σ and the epistemic threshold: neither may be test data.  Test cells belong in the hold-out.
    """
    from ..data import refuse_test_cells

    folder = "of a folder that also holds test cells (a folder gives all its splits)"
    refuse_test_cells(data.train, todo="learn trains on --train data every round, never on test data: give test "
                                       "cells as --holdout, and give --train the training snapshots (.npz files) "
                                       f"{folder}")
    refuse_test_cells(data.calibration, todo="learn calibrates on --val data every round (early stopping, σ), never "
                                             "on test data: give test cells as --holdout, and give --val the "
                                             f"validation snapshots (.npz files) {folder}")


def never_picked(data: Data) -> set[str]:
    """Structure hashes no round may pick: the hold-out cells, and the test cells shipped in ``datasets/``
    (:func:`bigdens.data.shipped_test_cells`), so that a pool given as a whole data set never trains on its
    test cells."""
    from ..data import shipped_test_cells

    return {_hash(s) for s in data.holdout} | set(shipped_test_cells())


def check_data(model: "DensityModel", data: Data, pool: Sequence["Candidate"]) -> None:
    """Refuse a hold-out cell that the model (at any stage) trained on or that is also training or
    calibration data (by structure: a renamed copy too), and an empty calibration split or hold-out.

    (:class:`Loop` refuses test cells in the training and calibration data first: :func:`check_splits`.)
    """
    from ..data import shipped_test_cells
    from ..train.identity import trained_on
    from .acquisition import check_species

    check_species(model, pool)
    if not data.calibration:
        raise InputError("give a calibration split (--val DATA): snapshots never trained on, to fit σ and the "
                         "epistemic threshold after each round")
    if not data.holdout:
        raise InputError("give hold-out cells (--holdout DATA) to evaluate each round on")
    # The model's training cells by structure where it recorded it, else by name and structure, else by name.
    for name, cell in trained_on(model.info, data.calibration):
        same = "" if name == cell else f" (the same structure as its training cell {cell!r})"
        raise InputError(f"--val cell {name!r} is the model's own training data{same}; σ and early stopping fitted "
                         "on it would see training error: give --val cells the model never trained on")
    for name, cell in trained_on(model.info, data.holdout):
        same = "" if name == cell else f" (the same structure as its training cell {cell!r})"
        raise InputError(f"hold-out cell {name!r} is the model's own training data{same}; a hold-out must be data "
                         "the model never sees")
    seen = {_hash(s): s.name for s in [*data.train, *data.calibration]}
    for s in data.holdout:
        if _hash(s) in seen:
            same = "" if seen[_hash(s)] == s.name else f" (the same structure as {seen[_hash(s)]!r})"
            raise InputError(f"hold-out cell {s.name!r} is also training or calibration data{same}; a hold-out "
                             "must be data the model never sees")
    never = never_picked(data)
    shipped = shipped_test_cells()  # digest -> cell (a dict: membership is a hash lookup)
    tests = [c.name for c in pool if c.hash in shipped]
    if tests:
        log.info("%d candidate(s) are test cells shipped in datasets/ and are never picked: %s", len(tests),
                    ", ".join(tests[:5]) + (", ..." if len(tests) > 5 else ""))
    if all(c.hash in never for c in pool):
        raise InputError("every candidate is a hold-out cell or a shipped test cell; those are never picked: give "
                         "the pool other structures")


def check_affordable(pool: Sequence["Candidate"], data: Data, cost: "CostModel", budget: float) -> None:
    """InputError when the budget cannot pay for the cheapest candidate that may be picked."""
    from .suggest import check_budget

    never = never_picked(data)
    free = [c for c in pool if c.hash not in never]
    check_budget([cost.core_seconds(c.numbers, c.cell) for c in free], [c.name for c in free], budget)


class Loop:
    """One ``learn`` run in a work directory (see the module docstring)."""

    def __init__(self, model_path: str | Path, pool: Sequence["Candidate"], *, workdir: str | Path,
                 cache: "DFTCache", cost: "CostModel", data: Data, config: LearnConfig, cluster):
        from ..bnn import file_hash, load
        from .candidates import load_pool, save_pool

        _need_gpaw()  # before anything is written
        self.model_path = Path(model_path)
        self.start = load(model_path)
        self.workdir = Path(workdir)
        self.cache, self.cost, self.data, self.config, self.cluster = cache, cost, data, config, cluster
        request = {"model_sha256": file_hash(model_path), "pool": sorted(c.hash for c in pool),
                   "config": asdict(config), "protocol": cache.dft.protocol,
                   "data": {k: sorted(_hash(s) for s in getattr(data, k)) for k in ("train", "calibration", "holdout")}}
        check_splits(data)  # a resumed run too: test cells never train or calibrate
        state_file = self.workdir / STATE
        if state_file.is_file():
            self.state = json.loads(state_file.read_text())
            if self.state.get("request") != request:
                raise InputError(f"{str(self.workdir)!r} holds a learn run with other settings (model, pool, data or "
                                 "options); resume with the same ones or use another --workdir")
            self.pool = load_pool(self.workdir / POOL)
            return
        check_data(self.start, data, pool)
        check_affordable(pool, data, cost, config.budget)
        self.pool = list(pool)
        self.workdir.mkdir(parents=True, exist_ok=True)
        save_pool(self.workdir / POOL, self.pool)
        self.state = {"request": request, "rounds": [], "stopped": None}
        self._save()

    # -- bookkeeping --------------------------------------------------------------------------
    def _save(self) -> None:
        from .._files import write_text

        write_text(self.workdir / STATE, json.dumps(self.state, indent=1))

    @property
    def spent(self) -> float:
        """DFT core-seconds the picks so far were estimated at (what the budget counts)."""
        return float(sum(r.get("estimated_core_s", 0.0) for r in self.state["rounds"]))

    def picked(self) -> list["Candidate"]:
        names = [n for r in self.state["rounds"] for n in r.get("picks", [])]
        by_name = {c.name: c for c in self.pool}
        return [by_name[n] for n in names]

    def round_dir(self, r: int) -> Path:
        d = self.workdir / f"round-{r}"
        d.mkdir(exist_ok=True)
        return d

    def current_model(self) -> Path:
        done = [r for r in self.state["rounds"] if r.get("model")]
        return self.workdir / done[-1]["model"] if done else self.model_path

    # -- the loop -----------------------------------------------------------------------------
    def run(self, *, progress: bool = False) -> dict:
        """Run (or resume) rounds until a stopping rule holds; returns the report."""
        if "holdout" not in self.state.get("start", {}):
            self.state["start"] = {"holdout": self.evaluate(self.start)}
            self._save()
        while self.state["stopped"] is None:
            rounds = self.state["rounds"]
            if rounds and "model" not in rounds[-1]:
                self.finish_round(rounds[-1], progress=progress)
                continue
            if len(rounds) >= self.config.rounds:
                self.stop(f"{self.config.rounds} rounds done")
                break
            self.begin_round(len(rounds) + 1, progress=progress)
        return self.report()

    def stop(self, why: str) -> None:
        log.info("stopping: %s", why)
        self.state["stopped"] = why
        self._save()

    def begin_round(self, r: int, *, progress: bool) -> None:
        from .suggest import Request, suggest, write_plan

        left = self.config.budget - self.spent
        budget = min(self.config.per_round, left)
        exclude = never_picked(self.data) | {c.hash for c in self.picked()}
        cheapest = min((self.cost.core_seconds(c.numbers, c.cell) for c in self.pool if c.hash not in exclude),
                       default=None)
        if cheapest is None or cheapest > left:
            self.stop(f"the budget is spent ({self.spent:.0f} of {self.config.budget:.0f} core-seconds; the cheapest "
                      "candidate left costs more)" if cheapest is not None else "every candidate is picked")
            return
        budget = max(budget, cheapest)
        request = Request(budget=budget, strategy=self.config.strategy, spacing=self.config.spacing,
                          samples=self.config.samples, seed=self.config.seed * 1000 + r)
        plan = suggest(self.current_model(), self.pool, cost=self.cost, request=request, config=self.cluster,
                       exclude=sorted(exclude), progress=progress)
        write_plan(self.round_dir(r) / "plan.json", plan)
        flagged, base = plan["pool"]["flagged_share"], plan["pool"]["base_rate"]
        if self.config.strategy == "uncertainty" and flagged < base:
            self.stop(f"the model is sure on the pool: {100 * flagged:.3f} % of its points flagged, below the "
                      f"validation base rate {100 * base:.2g} %")
            return
        if not plan["picks"]:
            self.stop("no candidate has anything left to teach the model (no excess flagged volume)")
            return
        est = sum(row["cost_core_s"] for row in plan["candidates"] if row["name"] in plan["picks"])
        self.state["rounds"].append({"round": r, "plan": f"round-{r}/plan.json", "picks": plan["picks"],
                                     "estimated_core_s": est, "pool_flagged_share": flagged})
        self._save()

    def finish_round(self, rec: dict, *, progress: bool) -> None:
        by_name = {c.name: c for c in self.pool}
        picks = [by_name[n] for n in rec["picks"]]
        rec["dft_core_s"] = self.run_dft(picks, progress=progress)
        first = len(self.picked()) - len(picks)
        rec["calibration_picks"] = [c.name for i, c in enumerate(picks, first) if self.config.calibrates(i)]
        model = self.fit(rec["round"])
        rec["holdout"] = self.evaluate(model)
        rec["spent_core_s"] = self.spent
        rec["dft_core_s_total"] = float(sum(r.get("dft_core_s", 0.0) for r in self.state["rounds"]))
        path = self.round_dir(rec["round"]) / "model.safetensors"
        model.info["active_learning"] = {"round": rec["round"], "strategy": self.config.strategy,
                                         "start_model_sha256": self.state["request"]["model_sha256"],
                                         "rounds": [dict(r) for r in self.state["rounds"]]}
        model.save(path)
        rec["model"] = str(path.relative_to(self.workdir))
        self._save()
        log.info("round %d: %d picks, %.0f core-s of DFT; hold-out NMAE %.3f %%, 1σ coverage %.1f %%", rec["round"],
                 len(picks), rec["dft_core_s"], rec["holdout"]["nmae_pct"], rec["holdout"]["coverage_1sigma_pct"])

    def run_dft(self, picks: Sequence["Candidate"], *, progress: bool) -> float:
        """DFT of the picks not in the cache yet (Dask tasks); returns the picks' recorded core-seconds."""
        todo = [c for c in picks if c not in self.cache]
        if todo:
            log.info("DFT of %d structures (%d cached)", len(todo), len(picks) - len(todo))
            run_dft(todo, cache=self.cache, cluster=self.cluster, cost=self.cost, progress=progress)
        return float(sum(self.cache.get(c).dft_core_seconds or 0.0 for c in picks))

    def split_picks(self) -> tuple[list["Snapshot"], list["Snapshot"]]:
        """The picks' DFT snapshots: (training, calibration), by :meth:`LearnConfig.calibrates`."""
        train, calibration = [], []
        for i, c in enumerate(self.picked()):
            into = self.config.calibrates(i)
            (calibration if into else train).append(self.cache.get(c, split="validation" if into else "train"))
        return train, calibration

    def fit(self, r: int) -> "DensityModel":
        from ..train import finetune

        picks, held = self.split_picks()
        train, calibration = [*self.data.train, *picks], [*self.data.calibration, *held]
        log.info("round %d: fine-tuning on %d snapshots (%d picked), calibrating on %d (%d picked)", r, len(train),
                 len(picks), len(calibration), len(held))
        return finetune(self.start, train, calibration, config=self.config.train_config())

    def evaluate(self, model: "DensityModel") -> dict:
        from ..train import evaluate

        res = evaluate(model, self.data.holdout, seed=self.config.seed)
        keep = ("name", "nmae_pct", "electron_count_error_pct", "coverage_1sigma_pct", "coverage_2sigma_pct",
                "epistemic_high_pct")
        return {**res["overall"], "cells": [{k: row[k] for k in keep if k in row} for row in res["snapshots"]]}

    def report(self) -> dict:
        """The loop's record: hold-out metrics against DFT core-seconds, per round (also report.json/.png)."""
        from .._files import write_text

        rows = [{"round": 0, "spent_core_s": 0.0, "dft_core_s": 0.0, "picks": [], "calibration_picks": [],
                 **self.state["start"]["holdout"]}]
        for r in self.state["rounds"]:
            if "holdout" in r:
                rows.append({"round": r["round"], "spent_core_s": r["spent_core_s"], "dft_core_s": r["dft_core_s_total"],
                             "picks": r["picks"], "calibration_picks": r.get("calibration_picks", []),
                             **r["holdout"]})
        report = {"strategy": self.config.strategy, "budget": self.config.budget, "stopped": self.state["stopped"],
                  "rounds": rows, "model": str(self.current_model())}
        write_text(self.workdir / "report.json", json.dumps(report, indent=1))
        plot_report(self.workdir / "report.png", [report])
        return report

    def finish(self, output: str | Path) -> Path:
        """Copy the last round's model to ``output`` (atomically)."""
        from .._files import atomic_write

        src = self.current_model()
        with open(src, "rb") as fi, atomic_write(Path(output)) as fo:
            shutil.copyfileobj(fi, fo)
        return Path(output)


def _dft_task(index: int, *, todo: list, cache_dir: str, dft) -> dict:
    from .cache import DFTCache, compute

    cache = DFTCache(cache_dir, dft=dft)
    c = todo[index]
    if c not in cache:  # another run sharing the cache may have computed it meanwhile
        cache.put(c, compute(c, dft=dft))
    return {"index": index}


def run_dft(todo: Sequence["Candidate"], *, cache: "DFTCache", cluster, cost: "CostModel",
            progress: bool = False) -> None:
    """Compute the DFT of ``todo`` into ``cache``, one Dask task per structure on the cluster of ``cluster``."""
    from ..engine import _run_tasks, make_client

    _need_gpaw()
    longest = max(cost.core_seconds(c.numbers, c.cell) for c in todo)
    with make_client(cluster, len(todo)) as client:
        for _ in _run_tasks(client, _dft_task, list(range(len(todo))), progress=progress, desc="DFT",
                            timeout=max(DFT_TIMEOUT_FLOOR_S, 20 * longest), todo=list(todo),
                            cache_dir=str(cache.directory.resolve()), dft=cache.dft):
            pass


def _need_gpaw() -> None:
    from .._imports import attempt_import

    attempt_import("gpaw", purpose="computing DFT densities (bigdens learn)")


def plot_report(path: str | Path, reports: Sequence[dict], *, labels: Sequence[str] | None = None) -> Path:
    """Hold-out NMAE and 1σ coverage against DFT core-seconds spent, one line per report (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._files import write_figure

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, rep in enumerate(reports):
        x = [r["dft_core_s"] for r in rep["rounds"]]
        label = labels[k] if labels else rep["strategy"]
        a1.plot(x, [r["nmae_pct"] for r in rep["rounds"]], "o-", label=label)
        a2.plot(x, [r["coverage_1sigma_pct"] for r in rep["rounds"]], "o-", label=label)
    a1.set_xlabel("DFT core-seconds spent")
    a1.set_ylabel("hold-out NMAE (%)")
    a2.set_xlabel("DFT core-seconds spent")
    a2.set_ylabel("hold-out 1σ coverage (%)")
    a2.axhspan(63, 73, color="tab:green", alpha=0.1)
    a1.legend(fontsize=8)
    fig.tight_layout()
    return write_figure(path, fig)
