"""``suggest``: score a pool, estimate each candidate's DFT cost, pick within a budget, write a plan.

The plan (JSON) holds every candidate's score, cost and rank, the picks in order, the budget and
what was spent, the model and the cost model; :func:`plot_plan` draws value against cost.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import InputError
from .acquisition import (SCORE_SAMPLES, SCORE_SPACING, Score, check_model, check_species, domain_refusals,
                          score_pool, select)

if TYPE_CHECKING:
    from .candidates import Candidate
    from .cost import CostModel

log = logging.getLogger(__name__)
PLAN_FORMAT = "bigdens-suggestion"


@dataclass(frozen=True)
class Request:
    """What to pick: a budget and/or a count, a strategy, how candidates are scored.

    Attributes
    ----------
    budget : float or None
        DFT core-seconds the picks may cost together.
    count : int or None
        Most picks.
    strategy : str
        ``uncertainty``, ``random`` or ``largest`` (:mod:`bigdens.active.acquisition`).
    spacing : float
        Scoring grid spacing, Å.
    samples : int
        Monte Carlo samples per candidate.
    seed : int
        Seeds the samples and the random strategy.
    """

    budget: float | None = None
    count: int | None = None
    strategy: str = "uncertainty"
    spacing: float = SCORE_SPACING
    samples: int = SCORE_SAMPLES
    seed: int = 0

    def __post_init__(self):
        if self.budget is None and self.count is None:
            raise InputError("give --budget CORE_SECONDS or --count N")
        if self.budget is not None and not self.budget > 0:
            raise InputError(f"--budget must be > 0 core-seconds, got {self.budget!r}")
        if self.count is not None and self.count < 1:
            raise InputError(f"--count must be >= 1, got {self.count!r}")
        if not self.spacing > 0:
            raise InputError(f"--spacing must be > 0 Å, got {self.spacing!r}")
        if self.samples < 2:
            raise InputError(f"--mc-samples must be >= 2 (an epistemic spread needs two samples), got {self.samples!r}")


def check_budget(costs: Sequence[float], names: Sequence[str], budget: float | None) -> None:
    """InputError when not even the cheapest candidate fits the budget."""
    if budget is None or not len(costs):
        return
    i = min(range(len(costs)), key=lambda j: costs[j])
    if costs[i] > budget:
        raise InputError(f"the budget of {budget:g} core-seconds is smaller than the cheapest candidate "
                         f"({names[i]}: about {costs[i]:.0f} core-seconds of DFT); raise --budget")


def suggest(model_path: str | Path, candidates: Sequence["Candidate"], *, cost: "CostModel", request: Request,
            config, exclude: Sequence[str] = (), progress: bool = False) -> dict:
    """Score ``candidates`` with the model at ``model_path`` and pick within ``request``.

    Parameters
    ----------
    model_path
        A calibrated model file.
    candidates
        The pool (unique structures: :func:`bigdens.active.candidates.unique`).
    cost
        DFT cost model.
    request
        Budget, count, strategy, scoring settings.
    config
        A :class:`~bigdens.config.PredictConfig` naming the Dask cluster to score on.
    exclude
        Structure hashes never to pick (hold-out cells, structures already computed).

    Returns
    -------
    dict
        The plan: ``candidates`` (one row each: name, source, hash, atoms, cost, score, rank or
        None, ``refused``: why the candidate lies outside the model's domain, or None), ``picks``
        (names in order), ``spent`` and ``budget`` (core-seconds), ``pool`` summary.  A candidate
        outside the model's domain (:func:`bigdens.active.acquisition.domain_refusals`) is
        neither scored nor ranked: its score fields are None.
    """
    from ..bnn import EPISTEMIC_QUANTILE, file_hash, load

    if not candidates:
        raise InputError("the candidate pool is empty; give structure files or generators")
    model = load(model_path)
    check_model(model)
    check_species(model, candidates)
    refused = domain_refusals(model, candidates)
    for i, why in refused.items():
        log.warning("candidate %s is outside the model's domain and is not ranked: %s", candidates[i].name, why)
    costs = [cost.core_seconds(c.numbers, c.cell) for c in candidates]
    excluded = set(exclude)
    free = [i for i, c in enumerate(candidates) if c.hash not in excluded and i not in refused]
    if not free:
        if refused:
            i = min(refused)
            raise InputError(f"no candidate is left to rank: {len(refused)} of {len(candidates)} lie outside the "
                             f"model's domain (first: {candidates[i].name!r}: {refused[i]})"
                             + ("" if len(refused) == len(candidates) else ", the others are excluded")
                             + "; give candidates like the model's training cells")
        raise InputError("every candidate is excluded (a hold-out cell or already computed); give new candidates")
    check_budget([costs[i] for i in free], [candidates[i].name for i in free], request.budget)
    scored = [i for i in range(len(candidates)) if i not in refused]
    log.info("scoring %d candidates on a %.2f Å grid, S = %d", len(scored), request.spacing, request.samples)
    found = score_pool([candidates[i] for i in scored], model_path, config=config, spacing=request.spacing,
                       samples=request.samples, seed=request.seed, progress=progress)
    scores: dict[int, Score] = dict(zip(scored, found))
    sub = select([scores[i] for i in free], [costs[i] for i in free], strategy=request.strategy,
                 budget=request.budget, count=request.count, seed=request.seed)
    picks = [free[j] for j in sub]
    rank = {i: r + 1 for r, i in enumerate(picks)}
    rows = [{"name": c.name, "source": c.source, "hash": c.hash, "n_atoms": c.n_atoms, "cost_core_s": costs[i],
             "excluded": c.hash in excluded, "rank": rank.get(i), "refused": refused.get(i),
             **(_score_row(scores[i]) if i in scores else _REFUSED_ROW)}
            for i, c in enumerate(candidates)]
    base = 1.0 - EPISTEMIC_QUANTILE
    return {
        "format": PLAN_FORMAT,
        "model": {"path": str(model_path), "sha256": file_hash(model_path)},
        "request": request.__dict__,
        "cost_model": cost.to_dict(),
        "budget": request.budget,
        "spent": float(sum(costs[i] for i in picks)),
        "picks": [candidates[i].name for i in picks],
        "pool": {"n_candidates": len(candidates), "n_excluded": sum(c.hash in excluded for c in candidates),
                 "n_refused": len(refused),
                 "flagged_share": float(sum(s.flagged_share * s.n_points for s in found)
                                        / max(1, sum(s.n_points for s in found))),
                 "base_rate": base},
        "candidates": rows,
    }


#: The score fields of a candidate outside the model's domain (not scored).
_REFUSED_ROW = {"chemistry": None, "n_points": None, "flagged_share": None, "value": None, "mean_epistemic": None,
                "fingerprint": None}


def _score_row(s: Score) -> dict:
    return {k: v for k, v in s.to_dict().items() if k not in ("name", "hash", "n_atoms")}


def format_plan(plan: dict, *, limit: int = 40) -> str:
    """The plan as a table: picks first (in order), then the best of the rest, then the candidates outside
    the model's domain (tagged ``out``, each with why after the table)."""
    def refused(r):
        return r.get("refused") is not None

    rows = sorted(plan["candidates"], key=lambda r: (r["rank"] is None, r["rank"] or 0, refused(r),
                                                     0.0 if refused(r) else -r["value"] / max(r["cost_core_s"], 1e-9)))
    lines = [f"{'rank':>4}  {'candidate':<28} {'atoms':>6} {'DFT core-s':>10} {'unsure %':>8} "
             f"{'value Å³':>9} {'value/kcore-s':>13}"]
    for r in rows[:limit]:
        tag = "out" if refused(r) else "held" if r["excluded"] else (str(r["rank"]) if r["rank"] else "-")
        if refused(r):
            lines.append(f"{tag:>4}  {r['name'][:28]:<28} {r['n_atoms']:>6} {r['cost_core_s']:>10.0f} {'-':>8} "
                         f"{'-':>9} {'-':>13}")
            continue
        lines.append(f"{tag:>4}  {r['name'][:28]:<28} {r['n_atoms']:>6} {r['cost_core_s']:>10.0f} "
                     f"{100 * r['flagged_share']:>8.2f} {r['value']:>9.2f} "
                     f"{1000 * r['value'] / max(r['cost_core_s'], 1e-9):>13.3f}")
    if len(rows) > limit:
        lines.append(f"      ... {len(rows) - limit} more in the plan file")
    budget = f" of {plan['budget']:.0f}" if plan["budget"] is not None else ""
    lines.append(f"{len(plan['picks'])} picks, {plan['spent']:.0f}{budget} core-seconds of DFT; the pool is unsure "
                 f"at {100 * plan['pool']['flagged_share']:.2f} % of its points "
                 f"(validation base rate {100 * plan['pool']['base_rate']:.2g} %)")
    out = [r for r in plan["candidates"] if refused(r)]
    for r in out[:limit]:
        lines.append(f"out of the model's domain, not ranked: {r['name']}: {r['refused']}")
    if len(out) > limit:
        lines.append(f"... {len(out) - limit} more candidates out of the model's domain in the plan file")
    return "\n".join(lines)


def write_plan(path: str | Path, plan: dict) -> Path:
    """Write the plan as JSON (atomically)."""
    from .._files import write_text

    write_text(Path(path), json.dumps(plan, indent=1))
    return Path(path)


def read_plan(path: str | Path) -> dict:
    """A plan written by :func:`write_plan`."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the plan {str(path)!r} ({exc})") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise InputError(f"{str(path)!r} is not a plan written by bigdens suggest")
    return plan


def plot_plan(path: str | Path, plan: dict) -> Path:
    """Scatter of each candidate's acquisition value against its DFT cost, picks numbered (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._files import write_figure

    rows = plan["candidates"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for held, colour, label in ((False, "tab:blue", "candidates"), (True, "tab:grey", "excluded")):
        sel = [r for r in rows if r["excluded"] == held and r["rank"] is None and r.get("refused") is None]
        if sel:
            ax.scatter([r["cost_core_s"] for r in sel], [r["value"] for r in sel], s=18, c=colour, label=label,
                       alpha=0.7)
    picked = sorted((r for r in rows if r["rank"]), key=lambda r: r["rank"])
    if picked:
        ax.scatter([r["cost_core_s"] for r in picked], [r["value"] for r in picked], s=60, facecolors="none",
                   edgecolors="tab:red", linewidths=1.5, label="picks")
        for r in picked:
            ax.annotate(str(r["rank"]), (r["cost_core_s"], r["value"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8, color="tab:red")
    costs = [r["cost_core_s"] for r in rows]
    if costs and max(costs) > 5 * min(costs):
        ax.set_xscale("log")
    ax.set_xlabel("estimated DFT cost (core-seconds)")
    ax.set_ylabel("excess flagged volume (Å³)")
    budget = f" of {plan['budget']:.0f}" if plan["budget"] is not None else ""
    ax.set_title(f"{plan['request']['strategy']}: {len(plan['picks'])} picks, {plan['spent']:.0f}{budget} core-s",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return write_figure(path, fig)
