"""How much a candidate would teach the model, and which candidates to compute within a budget.

**Score.**  Each candidate is predicted on a coarse regular grid (default 0.4 Å, S = 20 weight
samples shared by its points, seeded from its structure hash).  A point is *flagged* where the
epistemic σ exceeds the model's validation 99.9 % quantile (the threshold ``bigdens predict``
counts).  On data like the validation data 0.1 % of the points are flagged; the acquisition value
is the **excess flagged volume**

    value = max(0, n_flagged − 0.001 · n_points) · ΔV        (Å³),

the volume where the model is unsure beyond its base rate.  It does not grow with the size of a
cell that holds nothing new, so ranking by value per DFT core-second prefers the smallest cell
that shows the model something new.  Ties (value 0) keep the candidates out of an uncertainty
pick: the model is sure there.

**Diversity.**  A candidate's fingerprint is the mean scaled descriptor of its flagged points (of
all points when none is flagged) and its composition.  Picks are greedy; once a candidate is
picked, every other candidate's value is multiplied by 1 − exp(−d²/ℓ²), d the fingerprint
distance (ℓ: twice the median distance from a candidate to its nearest other one), so that
snapshots of one kind do not take every pick.  Exact duplicates (same structure hash) are
never both picked.

**Strategies** for comparison: ``uncertainty`` (the above), ``random`` (seeded order) and
``largest`` (largest cell first).  All three stop before the budget would be exceeded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..bnn import DensityModel
    from .candidates import Candidate

#: Grid spacing (Å) on which candidates are scored.
SCORE_SPACING = 0.4
#: Monte Carlo weight samples per candidate.
SCORE_SAMPLES = 20
#: Weight of the composition in the fingerprint (per unit of atom fraction).
COMPOSITION_WEIGHT = 10.0
STRATEGIES = ("uncertainty", "random", "largest")
#: Salt of :func:`select`'s random order ("random"; the tie order of "largest"), apart from other draws
#: seeded with the same ``seed``; changing it changes every such selection.
SELECT_SALT = 0xAC71


@dataclass(frozen=True)
class Score:
    """What the model says about one candidate.

    Attributes
    ----------
    name, hash : str
        The candidate's name and structure hash.
    n_atoms : int
    chemistry : str
        Element symbols joined by '-'.
    n_points : int
        Grid points scored.
    flagged_share : float
        Share of those points whose epistemic σ is above the model's threshold.
    value : float
        Excess flagged volume, Å³ (see the module docstring).
    mean_epistemic : float
        Mean epistemic σ over the points, e/Å³.
    fingerprint : tuple of float
        For diversity (see the module docstring).
    """

    name: str
    hash: str
    n_atoms: int
    chemistry: str
    n_points: int
    flagged_share: float
    value: float
    mean_epistemic: float
    fingerprint: tuple

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fingerprint"] = [round(v, 6) for v in self.fingerprint]
        return d


def check_model(model: "DensityModel") -> float:
    """The model's epistemic threshold (e/Å³), or InputError if it has none."""
    from ..bnn import epistemic_threshold

    threshold = epistemic_threshold(model)
    if threshold is None:
        raise InputError("the model has no epistemic reference to score candidates against; calibrate it first "
                         "(bigdens calibrate MODEL VALIDATION-DATA -o MODEL2)")
    return threshold


def check_species(model: "DensityModel", candidates: Sequence["Candidate"]) -> None:
    """InputError naming the first candidate with a species the model lacks."""
    from ase.data import chemical_symbols

    known = set(int(z) for z in model.params.species)
    for c in candidates:
        extra = sorted(set(int(z) for z in np.unique(c.numbers)) - known)
        if extra:
            raise InputError(f"candidate {c.name!r} contains {', '.join(chemical_symbols[z] for z in extra)}, which "
                             f"the model was not trained on (it knows "
                             f"{', '.join(chemical_symbols[z] for z in sorted(known))}); remove it from the pool")


def domain_refusals(model: "DensityModel", candidates: Sequence["Candidate"]) -> dict[int, str]:
    """The candidates outside the model's domain: index -> why (:func:`bigdens.domain.check_structure`).

    The structure checks of ``bigdens predict`` (nearest-neighbour distances,
    per atom and as a share): a candidate that ``predict`` would refuse is
    not scored nor ranked (a cell written in Bohr would otherwise look like
    the most instructive structure of the pool).

    Raises
    ------
    InputError
        Naming the candidate, when its positions are not finite or absurdly far from its cell.
    """
    from ..domain import check_structure

    out = {}
    for i, c in enumerate(candidates):
        try:
            report = check_structure(c.atoms(), model)
        except InputError as exc:
            raise InputError(f"candidate {c.name!r}: {exc}") from None
        if not report.in_domain:
            out[i] = report.message()
    return out


def seed_of(candidate: "Candidate", seed: int) -> int:
    """Block index seeding a candidate's Monte Carlo samples: from its structure hash, any pool order."""
    return int(candidate.hash[:8], 16) ^ (int(seed) & 0x7FFFFFFF)


def score(candidate: "Candidate", model: "DensityModel", *, spacing: float = SCORE_SPACING,
          samples: int = SCORE_SAMPLES, seed: int = 0, device: str = "cpu") -> Score:
    """Score one candidate (see the module docstring)."""
    from ..descriptors import compute
    from ..grid import make_grid
    from ..bnn import EPISTEMIC_QUANTILE
    from .cost import chemistry

    threshold = check_model(model)
    grid = make_grid(candidate.cell, spacing=spacing)
    points = grid.points()
    feats = compute(candidate.positions, candidate.numbers, candidate.cell, points, model.params)
    _, epi, _ = model.predict(feats, samples=samples, seed=seed, block_index=seed_of(candidate, seed), device=device)
    sigma = np.sqrt(epi.astype(np.float64))
    flagged = sigma > threshold
    n, n_flag = len(sigma), int(flagged.sum())
    base = (1.0 - EPISTEMIC_QUANTILE) * n
    scaled = (feats - np.asarray(model.scaling.feature_mean, dtype=np.float32)) / np.asarray(
        model.scaling.feature_std, dtype=np.float32)
    where = scaled[flagged] if n_flag else scaled
    comp = [COMPOSITION_WEIGHT * float(np.mean(candidate.numbers == z)) for z in model.params.species]
    return Score(candidate.name, candidate.hash, candidate.n_atoms, chemistry(candidate.numbers), n,
                 n_flag / n, max(0.0, n_flag - base) * grid.dv, float(sigma.mean()),
                 tuple(float(v) for v in where.mean(axis=0)) + tuple(comp))


def _score_task(index: int, *, pool: list, model_path: str, model_hash: str, spacing: float, samples: int,
                seed: int, device: str) -> dict:
    from ..engine import load_model

    return {"index": index, "score": score(pool[index], load_model(model_path, model_hash), spacing=spacing,
                                           samples=samples, seed=seed, device=device)}


def score_pool(candidates: Sequence["Candidate"], model_path: str | Path, *, config, spacing: float = SCORE_SPACING,
               samples: int = SCORE_SAMPLES, seed: int = 0, progress: bool = False) -> list[Score]:
    """Score every candidate, one Dask task each on the cluster of ``config`` (a PredictConfig).

    ``config.workers = 0`` scores them in this process.
    """
    from ..bnn import file_hash, resolve_device
    from ..engine import _run_tasks, make_client

    model_path = str(Path(model_path).resolve())
    kw = dict(pool=list(candidates), model_path=model_path, model_hash=file_hash(model_path), spacing=spacing,
              samples=samples, seed=seed, device=resolve_device(config.device))
    out: list[Score | None] = [None] * len(candidates)
    with make_client(config, len(candidates)) as client:
        for res in _run_tasks(client, _score_task, list(range(len(candidates))), progress=progress,
                              desc="scoring", **kw):
            out[res["index"]] = res["score"]
    return out  # type: ignore[return-value]


def diversity_length(scores: Sequence[Score]) -> float:
    """ℓ of the diversity discount: twice the median distance from a fingerprint to its nearest other one."""
    if len(scores) < 2:
        return 1.0
    f = np.array([s.fingerprint for s in scores])
    d = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    nearest = d.min(axis=1)
    nearest = nearest[np.isfinite(nearest) & (nearest > 0)]
    return 2.0 * float(np.median(nearest)) if len(nearest) else 1.0


def select(scores: Sequence[Score], costs: Sequence[float], *, strategy: str = "uncertainty",
           budget: float | None = None, count: int | None = None, seed: int = 0,
           length: float | None = None) -> list[int]:
    """Indices of the picks, in pick order.

    Parameters
    ----------
    scores, costs
        Per candidate: its score and its estimated DFT core-seconds.
    strategy
        ``"uncertainty"``, ``"random"`` or ``"largest"`` (see the module docstring).
    budget
        Core-seconds not to exceed (None: no limit).
    count
        Most picks (None: no limit).  At least one of ``budget`` and ``count`` is needed.
    seed
        Seeds the random order (``random``, and ties of ``largest``).
    length
        ℓ of the diversity discount (default :func:`diversity_length`).
    """
    if strategy not in STRATEGIES:
        raise InputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if budget is None and count is None:
        raise InputError("give a budget (core-seconds) or a count of picks")
    costs = np.asarray(costs, dtype=np.float64)
    left = math.inf if budget is None else float(budget)
    limit = len(scores) if count is None else int(count)
    rng = np.random.default_rng([int(seed), SELECT_SALT])
    picks: list[int] = []
    hashes: set[str] = set()
    if strategy == "uncertainty":
        value = np.array([s.value for s in scores], dtype=np.float64)
        f = np.array([s.fingerprint for s in scores]) if scores else np.zeros((0, 1))
        ell = length if length is not None else diversity_length(scores)
        while len(picks) < limit:
            ok = (value > 0) & (costs <= left) & ~np.isin(np.arange(len(scores)), picks)
            if not ok.any():
                break
            i = int(np.argmax(np.where(ok, value / costs, -np.inf)))
            picks.append(i)
            hashes.add(scores[i].hash)
            left -= costs[i]
            d2 = ((f - f[i]) ** 2).sum(-1)
            value *= 1.0 - np.exp(-d2 / ell ** 2)
            value[[j for j, s in enumerate(scores) if s.hash in hashes]] = 0.0
        return picks
    order = rng.permutation(len(scores))
    if strategy == "largest":
        order = sorted(order, key=lambda j: -scores[j].n_atoms)  # stable: ties keep the random order
    for i in order:
        if len(picks) >= limit:
            break
        if costs[i] <= left and scores[i].hash not in hashes:
            picks.append(int(i))
            hashes.add(scores[i].hash)
            left -= costs[i]
    return picks
