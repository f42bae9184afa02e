"""Is a structure inside the domain a model can answer?  Checked before and after a prediction.

A model trained on bulk cells of one material at a 0.2 Å grid cannot answer
for a slab in 20 Å of vacuum, a cell written in Bohr, one atom in a 40 Å box
or a 50 Å grid: it returns numbers all the same.  This module measures, in
this order:

Before the run (:func:`check_before`, cheap: no block is computed)
    * **grid spacing**: the electron count of a density summed on a coarse
      grid is off by aliasing; :data:`SPACING_ERROR` is the worst case
      measured on DFT densities (``benchmarks/grid_integration.py``).  A
      spacing whose worst case exceeds :data:`ELECTRON_MAX` is out of domain;
      one coarser than the model's training spacing warns with that number.
    * **nearest-neighbour distances** of the atoms against the range in the
      model's training cells (``info["domain_reference"]``), per atom and as a
      share: any one atom whose nearest neighbour lies outside the range by
      more than the training spread (and outside ±:data:`NN_MARGIN`) is out of
      domain, named with its distance (two atoms 0.6 Å apart, an interstitial
      0.55 Å from an atom); so is a structure with more than
      :data:`NN_SHARE_MAX` of its atoms outside the range widened by
      :data:`NN_MARGIN` (a cell in Bohr has every distance 1.89× too long, an
      isolated atom has none within reach).  Every atom is measured, on
      wrapped positions, in time linear in the atoms.
    * **a probe**: the model predicts at :data:`PROBE_POINTS` grid points
      drawn at random (seeded); the share of points flagged by the epistemic
      σ, the share of negative electrons and the electron count estimated from
      the probe (with its sampling error) are checked against twice the
      limits below.

After the run (:func:`check_after`, exact: from the ledger's per-block sums)
    * the share of grid points whose epistemic σ exceeds the model's
      threshold (its validation 99.9 % quantile) above :data:`FLAGGED_MAX`;
    * the electron count against the valence count, off by more than
      :data:`ELECTRON_MAX`;
    * negative density integrating to more than :data:`NEGATIVE_MAX` of the
      electrons;
    * a ``--renormalize`` factor that is not positive or is off 1 by more than
      :data:`ELECTRON_MAX` (it is then not applied).

``bigdens predict`` refuses a structure that fails the first group (nothing
is computed) and marks a store that fails the second (``in_domain: false``,
``domain_reasons``; exit 3), unless ``--allow-out-of-domain``.  A trajectory
is checked frame by frame (:func:`check_before_frames`), each failed check
naming its frame.  ``bigdens suggest`` applies the structure checks
(:func:`check_structure`) to every candidate and ranks none that fails them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import BigdensError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from .bnn import DensityModel
    from .grid import Grid

#: Largest share of grid points with epistemic σ above the model's threshold: 100× its base rate
#: (0.1 % in validation cells; up to 1.3 % in the 1400 K liquid training cells with model v2; with Al
#: model v3 0.28 % in the Al vacancy example and 3.7 % in a 256-site Al cell with a 13-atom void).
FLAGGED_MAX = 0.10
#: Largest relative electron-count error, |N_predicted − N_valence| / N_valence.
ELECTRON_MAX = 0.02
#: Largest share of the electrons that negative density may hold (format-2 models: 0 by construction).
NEGATIVE_MAX = 0.005
#: Nearest-neighbour distances may lie this factor outside the training range (strain, temperature).
NN_MARGIN = 1.25
#: Largest share of atoms whose nearest-neighbour distance lies outside the widened range.
NN_SHARE_MAX = 0.05
#: Atoms named in a refusal (the rest are counted).
NN_NAMED = 3
#: Atoms recorded in the report's measured values (``nn_refused_atoms``).
NN_RECORDED = 10
#: Frames of a trajectory whose failed checks are spelled out (the rest are listed by index).
FRAMES_NAMED = 3
#: Reach (Å) of the nearest-neighbour search: farther neighbours read ``inf``.
NN_REACH = 8.0
#: Grid points the probe predicts before a run.
PROBE_POINTS = 8192
#: Grids with fewer points than this are not probed (too few points to judge a share).
PROBE_MIN_POINTS = 1000
#: Monte Carlo samples of the probe.
PROBE_SAMPLES = 8
#: The probe's limits are this factor looser than the exact ones after the run.
PROBE_FACTOR = 2.0
#: Worst-case relative electron-count error of a density summed on a grid of this spacing (Å): the
#: running maximum over spacings up to it, measured on DFT densities of Al and Si–Ge cells
#: (``python -m benchmarks.grid_integration``, benchmarks/results/domain/grid_integration.json).
SPACING_ERROR = ((0.4, 2.1e-6), (0.5, 3.1e-4), (0.6, 3.9e-4), (0.7, 0.0111), (1.1, 0.0435), (1.4, 0.5111),
                 (2.0, 0.5111))
#: A grid coarser than the training grid gets a note only when its worst-case electron-count error
#: (:data:`SPACING_ERROR`) reaches this (below it the coarser grid integrates as well).
SPACING_NOTE_MIN = 1e-4
#: The probe's Monte Carlo samples are drawn as for this block index (no real block has it).
PROBE_BLOCK = 2**31 - 1
#: Salt of the random generator that picks the probe's grid points (from the run's ``seed``);
#: changing it changes which points the domain probe checks.
PROBE_SALT = 0x0D0A


class OutOfDomainError(BigdensError):
    """Raised when a structure or a prediction lies outside the model's domain.

    Before a run nothing was computed; after one the store is written and
    marked ``in_domain: false``.  ``bigdens predict`` exits 3 with its message.
    """

    def __init__(self, message: str, report: "DomainReport"):
        super().__init__(message)
        self.report = report


@dataclass
class DomainReport:
    """What the domain checks measured and which limits failed.

    Attributes
    ----------
    reasons : list of str
        One phrase per failed check (empty: in domain).
    measured : dict
        The measured values (shares, relative errors, distances in Å).
    warnings : list of str
        Checks that passed with a caveat (a coarse grid).
    """

    reasons: list[str] = field(default_factory=list)
    measured: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def in_domain(self) -> bool:
        return not self.reasons

    def merge(self, other: "DomainReport") -> "DomainReport":
        return DomainReport(reasons=self.reasons + [r for r in other.reasons if r not in self.reasons],
                            measured={**self.measured, **other.measured},
                            warnings=self.warnings + [w for w in other.warnings if w not in self.warnings])

    def to_attrs(self, *, accepted: bool) -> dict:
        """Store attributes: ``in_domain``, ``domain_reasons`` and ``domain`` (values and limits)."""
        return {"in_domain": self.in_domain, "domain_reasons": list(self.reasons),
                "domain": {"measured": self.measured, "accepted_out_of_domain": bool(accepted and self.reasons),
                           "limits": limits()}}

    def message(self) -> str:
        return "; ".join(self.reasons)


#: Trajectories of at least this many frames show a progress bar (on a terminal) while their frames are checked.
PROGRESS_FRAMES = 50


def limits() -> dict:
    """The documented thresholds (recorded in every store)."""
    return {"flagged_share": FLAGGED_MAX, "electron_error": ELECTRON_MAX, "negative_share": NEGATIVE_MAX,
            "nn_margin": NN_MARGIN, "nn_share": NN_SHARE_MAX, "probe_factor": PROBE_FACTOR}


def spacing_error(spacing: float) -> float:
    """Worst-case relative electron-count error of summing a density on a grid of ``spacing`` Å (see :data:`SPACING_ERROR`)."""
    err = 0.0
    for h, e in SPACING_ERROR:
        if spacing >= h - 1e-9:
            err = e
    if spacing > SPACING_ERROR[-1][0]:
        err = max(err, 1.0)  # unmeasured: anything
    return err


# -- nearest-neighbour distances -----------------------------------------------------------

def nearest_neighbours(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, *,
                       reach: float = NN_REACH) -> tuple[np.ndarray, np.ndarray]:
    """Each atom's nearest other atom (periodic images included) and its distance, for every atom.

    Wrapped positions, in time linear in the atoms: a first pass looks
    within 1.5 mean interatomic spacings, a second within ``reach`` for the
    atoms the first found alone (:func:`bigdens.celllist.nearest_neighbours`,
    interruptible between passes of atoms).

    Parameters
    ----------
    positions : ndarray, shape (n_atoms, 3), Å
        Within :data:`bigdens.structure.MAX_CELLS_AWAY` cell lengths of the cell (else InputError).
    numbers : ndarray, shape (n_atoms,)
    cell : ndarray, shape (3, 3), Å (rows are lattice vectors; periodic)
    reach
        Å; farther neighbours are not looked for.

    Returns
    -------
    distance : ndarray, shape (n_atoms,), float64
        Å; ``inf`` where no other atom lies within ``reach``.
    index : ndarray, shape (n_atoms,), int64
        The nearest atom (an atom's own periodic image gives its own index); -1 where none.
    """
    from .celllist import build_cell_list, nearest_neighbours as nearest
    from .structure import check_cell, check_positions

    cell = check_cell(cell)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    check_positions(cell, positions)
    cl = build_cell_list(cell, positions)
    spacing = (abs(float(np.linalg.det(cell))) / max(1, len(positions))) ** (1 / 3)
    first = min(float(reach), 1.5 * spacing)
    dist, index = nearest(cl, first)
    alone = np.flatnonzero(~np.isfinite(dist))
    if len(alone) and first < reach:
        dist[alone], index[alone] = nearest(cl, float(reach), atoms=alone)
    return dist, index


def nearest_neighbour_distances(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, *,
                                sample: int | None = None, seed: int = 0, reach: float = NN_REACH) -> np.ndarray:
    """Distance (Å) from each of (a sample of) the atoms to its nearest other atom, periodic images included.

    Arguments as :func:`nearest_neighbours`; ``sample``: at most this many
    atoms, drawn with ``seed`` (default: all).  Returns shape (n,), float64,
    ``inf`` beyond ``reach``.
    """
    dist, _ = nearest_neighbours(positions, numbers, cell, reach=reach)
    if sample is not None and len(dist) > sample:
        dist = dist[np.sort(np.random.default_rng(seed).choice(len(dist), size=sample, replace=False))]
    return dist


def refusal_range(lo: float, hi: float) -> tuple[float, float]:
    """Nearest-neighbour distances (Å) beyond which one atom puts a structure out of domain.

    The training range ``[lo, hi]`` widened by its own spread ``hi − lo`` or
    by :data:`NN_MARGIN`, whichever is wider: Al's 2.17–2.85 Å gives
    1.49–3.57 Å, Si–Ge's 2.16–2.50 Å gives 1.73–3.13 Å.
    """
    spread = hi - lo
    return min(lo / NN_MARGIN, lo - spread), max(hi * NN_MARGIN, hi + spread)


def training_reference(snapshots) -> dict:
    """``info["domain_reference"]`` of a model trained on ``snapshots``: the nearest-neighbour distance range, Å."""
    lo, hi = math.inf, 0.0
    for s in snapshots:
        d = nearest_neighbour_distances(s.positions, s.numbers, s.cell)
        d = d[np.isfinite(d)]
        if len(d):
            lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
    return {"nn_distance": [lo, hi]} if hi > 0 else {}


def merge_references(a: dict | None, b: dict | None) -> dict:
    """The union of two ``domain_reference`` records (a fine-tuned model keeps its parent's range)."""
    ranges = [r["nn_distance"] for r in (a, b) if isinstance(r, dict) and "nn_distance" in r]
    if not ranges:
        return {}
    return {"nn_distance": [min(r[0] for r in ranges), max(r[1] for r in ranges)]}


# -- before a run ----------------------------------------------------------------------------

def check_before(atoms: "Atoms", model: "DensityModel", grid: "Grid", *, n_expected: float | None,
                 seed: int = 0, device: str = "cpu") -> DomainReport:
    """The checks that need no block computed: grid spacing, neighbour distances and a probe.

    Parameters
    ----------
    atoms
        The structure (Å), validated.
    model
        The model that will predict it.
    grid
        The run's grid.
    n_expected
        Valence electrons, or None when unknown (the count is then not checked).
    """
    report = DomainReport()
    _check_spacing(report, model, grid)
    _check_neighbours(report, atoms, model)
    _probe(report, atoms, model, grid, n_expected=n_expected, seed=seed, device=device)
    return report


def check_before_frames(frames: list, model: "DensityModel", grid: "Grid", *, labels: list[int],
                        n_expected: float | None, seed: int = 0, device: str = "cpu") -> DomainReport:
    """:func:`check_before` of every frame of a trajectory (one cell, one grid).

    The grid spacing is checked once; the neighbour distances and the probe
    of each frame, each failed check named ``frame K: ...`` with ``K`` from
    ``labels`` (the frame's index in its file).  The measured values are
    frame 0's, plus ``frames_out_of_domain`` (the labels of the frames that
    failed).
    """
    report = DomainReport()
    _check_spacing(report, model, grid)
    bad = []
    from tqdm import tqdm

    # A bar on a terminal for long trajectories (each frame runs the network on its probe points).
    shown = tqdm(list(zip(frames, labels)), unit="frame", desc="domain checks",
                 disable=None if len(frames) >= PROGRESS_FRAMES else True)
    for k, (atoms, label) in enumerate(shown):
        one = DomainReport()
        _check_neighbours(one, atoms, model)
        _probe(one, atoms, model, grid, n_expected=n_expected, seed=seed, device=device)
        if k == 0:
            report.measured.update(one.measured)
        if one.reasons:
            bad.append(int(label))
            if len(bad) <= FRAMES_NAMED:
                report.reasons += [f"frame {label}: {r}" for r in one.reasons]
    if len(bad) > FRAMES_NAMED:
        rest = bad[FRAMES_NAMED:]
        report.reasons.append(f"{len(rest)} more frame(s) fail these checks too: "
                              + ", ".join(str(b) for b in rest[:20]) + (" ..." if len(rest) > 20 else ""))
    report.measured["frames_out_of_domain"] = bad
    return report


def check_structure(atoms: "Atoms", model: "DensityModel") -> DomainReport:
    """The checks of the atoms alone (neighbour distances, per atom and as a share); no grid, no prediction.

    ``bigdens suggest`` applies them to every candidate.
    """
    report = DomainReport()
    _check_neighbours(report, atoms, model)
    return report


def _check_spacing(report: DomainReport, model: "DensityModel", grid: "Grid") -> None:
    h = float(np.max(grid.spacing))
    err = spacing_error(h)
    report.measured["grid_spacing"] = h
    report.measured["spacing_electron_error_worst"] = err
    trained = model.info.get("grid_spacing")
    if err > ELECTRON_MAX:
        report.reasons.append(f"the grid spacing {h:.3g} Å is too coarse: summed on it, a density's electron count "
                              f"can be off by {100 * err:.3g} % (use the model's spacing"
                              + (f", {float(np.max(trained)):.3g} Å" if trained else "") + ")")
    elif trained and h > float(np.max(trained)) * (1 + 1e-6) and err >= SPACING_NOTE_MIN:
        report.warnings.append(f"the grid spacing {h:.3f} Å is coarser than the model's training spacing "
                               f"{float(np.max(trained)):.3f} Å: the values at the grid points are as good, but the "
                               f"electron count summed on this grid can be off by up to {100 * err:.2g} % "
                               "(measured on DFT densities)")


def _check_neighbours(report: DomainReport, atoms: "Atoms", model: "DensityModel") -> None:
    ref = model.info.get("domain_reference")
    if not isinstance(ref, dict) or "nn_distance" not in ref:
        return
    lo, hi = (float(v) for v in ref["nn_distance"])
    d, nearest = nearest_neighbours(atoms.positions, atoms.numbers, atoms.cell[:])
    outside = (d < lo / NN_MARGIN) | (d > hi * NN_MARGIN)
    share = float(np.mean(outside)) if len(d) else 0.0
    finite = d[np.isfinite(d)]
    median = float(np.median(finite)) if len(finite) else math.inf
    a, b = refusal_range(lo, hi)
    refused = np.flatnonzero((d < a) | (d > b))
    report.measured.update(nn_distance_median=median, nn_outside_share=share, nn_training_range=[lo, hi],
                           nn_refusal_range=[a, b], nn_refused_count=int(len(refused)),
                           nn_refused_atoms=[[int(i), int(nearest[i]), float(d[i]) if np.isfinite(d[i]) else None]
                                             for i in refused[:NN_RECORDED]])
    if share > NN_SHARE_MAX:
        if not len(finite):
            what = f"no atom has another within {NN_REACH:g} Å"
        else:
            what = f"the median nearest-neighbour distance is {median:.3g} Å"
        hint = ""
        if len(finite) and 1.7 < median / hi < 2.1:
            hint = " (about 1.89×: is the cell in Bohr? bigdens reads Å)"
        report.reasons.append(f"{100 * share:.0f} % of the atoms have their nearest neighbour outside the training "
                              f"cells' {lo:.2f}–{hi:.2f} Å (±{100 * (NN_MARGIN - 1):.0f} %): {what}{hint}")
    whole = share > NN_SHARE_MAX and not a <= median <= b  # the structure as a whole is off: no atom to name
    if len(refused) and not whole:
        report.reasons.append(f"{len(refused)} atom(s) have their nearest neighbour outside {a:.2f}–{b:.2f} Å (the "
                              f"training cells' {lo:.2f}–{hi:.2f} Å widened by their spread or "
                              f"±{100 * (NN_MARGIN - 1):.0f} %): " + _atom_phrases(refused, d, nearest))


def _atom_phrases(refused: np.ndarray, d: np.ndarray, nearest: np.ndarray) -> str:
    """The first :data:`NN_NAMED` refused atoms and their nearest neighbours, in words (mutual pairs once)."""
    bad = set(refused.tolist())
    phrases, told = [], set()
    for i in refused.tolist():
        if i in told:
            continue
        if len(phrases) == NN_NAMED:
            break
        j = int(nearest[i])
        told.add(i)
        if not np.isfinite(d[i]):
            phrases.append(f"atom {i} has no other atom within {NN_REACH:g} Å")
        elif j == i:
            phrases.append(f"atom {i} is {d[i]:.3f} Å from its own periodic image")
        elif j in bad and int(nearest[j]) == i:
            phrases.append(f"atoms {i} and {j} are {d[i]:.3f} Å apart")
            told.add(j)
        else:
            phrases.append(f"atom {i} is {d[i]:.3f} Å from atom {j}")
    more = len(bad) - len(told)
    return "; ".join(phrases) + (f" (and {more} more)" if more else "")


def _probe(report: DomainReport, atoms: "Atoms", model: "DensityModel", grid: "Grid", *,
           n_expected: float | None, seed: int, device: str) -> None:
    from .bnn import epistemic_threshold
    from .descriptors import compute

    if grid.n_points < PROBE_MIN_POINTS:
        return
    rng = np.random.default_rng([seed, PROBE_SALT])
    n = int(min(PROBE_POINTS, grid.n_points))
    idx = np.stack([rng.integers(0, s, size=n) for s in grid.shape], axis=1)
    points = (idx / np.asarray(grid.shape)) @ np.asarray(grid.cell)
    feats = compute(atoms.positions, atoms.numbers, atoms.cell[:], points, model.params)
    mean, epi, _ = model.predict(feats, samples=PROBE_SAMPLES, seed=seed, block_index=PROBE_BLOCK,
                                 device=device)
    mean = mean.astype(np.float64)
    threshold = epistemic_threshold(model)
    m = report.measured
    if threshold is not None:
        flagged = float(np.mean(np.sqrt(epi.astype(np.float64)) > threshold))
        m["probe_flagged_share"] = flagged
        if flagged > PROBE_FACTOR * FLAGGED_MAX:
            report.reasons.append(f"the model is unsure at {100 * flagged:.0f} % of a {n}-point probe (epistemic σ "
                                  f"above its validation 99.9 % quantile; at most {100 * FLAGGED_MAX:g} % allowed): "
                                  "the structure is unlike its training cells (vacuum, other phase or units?)")
    n_est = float(mean.mean() * grid.volume)
    se = float(mean.std() / math.sqrt(n) * grid.volume)
    m["probe_electrons"] = n_est
    m["probe_electrons_error"] = se
    neg = max(0.0, float(-mean[mean < 0].sum() * grid.volume / n))
    if n_expected:
        m["probe_negative_share"] = neg / n_expected
        if neg / n_expected > PROBE_FACTOR * NEGATIVE_MAX:
            report.reasons.append(f"negative density holds about {100 * neg / n_expected:.2g} % of the electrons in "
                                  "a probe of the grid")
        tol = max(PROBE_FACTOR * ELECTRON_MAX, 5 * se / n_expected)
        if abs(n_est - n_expected) > tol * n_expected:
            report.reasons.append(f"a probe of the grid integrates to about {n_est:.4g} ± {se:.2g} electrons for the "
                                  f"{n_expected:g} valence electrons")


# -- after a run -----------------------------------------------------------------------------

def check_after(*, n_points: int, n_flagged: int | None, n_electrons: float, n_expected: float | None,
                negative_electrons: float | None) -> DomainReport:
    """The exact checks of a finished run, from the ledger's sums.

    Parameters
    ----------
    n_points
        Grid points.
    n_flagged
        Points whose epistemic σ exceeds the model's threshold (None: no threshold).
    n_electrons
        The raw integral of the mean density, electrons.
    n_expected
        Valence electrons, or None.
    negative_electrons
        Integral of the negative part of the mean density (≥ 0), or None when
        the ledger does not record it.
    """
    report = DomainReport()
    m = report.measured
    if n_flagged is not None:
        share = n_flagged / n_points
        m["flagged_share"] = share
        if share > FLAGGED_MAX:
            report.reasons.append(f"the model is unsure at {100 * share:.3g} % of the grid points (epistemic σ above "
                                  f"its validation 99.9 % quantile; at most {100 * FLAGGED_MAX:g} % allowed)")
    if n_expected:
        rel = (n_electrons - n_expected) / n_expected
        m["electron_error"] = rel
        if abs(rel) > ELECTRON_MAX:
            report.reasons.append(f"the density integrates to {n_electrons:.5g} electrons for {n_expected:g} valence "
                                  f"electrons ({100 * rel:+.3g} %; at most ±{100 * ELECTRON_MAX:g} % allowed)")
        if negative_electrons is not None:
            m["negative_share"] = negative_electrons / n_expected
            if negative_electrons / n_expected > NEGATIVE_MAX:
                report.reasons.append(f"negative density holds {100 * negative_electrons / n_expected:.3g} % of the "
                                      f"electrons (at most {100 * NEGATIVE_MAX:g} % allowed)")
    return report


def renormalization_refusal(factor: float, *, allow: bool) -> str | None:
    """Why ``--renormalize`` must not apply ``factor`` (None: apply it).

    A factor ≤ 0 (or not finite) is never applied: it would flip or erase the
    density.  One off 1 by more than :data:`ELECTRON_MAX` is applied only when
    out-of-domain answers are accepted.
    """
    if not math.isfinite(factor) or factor <= 0:
        return f"--renormalize would multiply the density by {factor:.4g}: not applied"
    if abs(factor - 1) > ELECTRON_MAX and not allow:
        return (f"--renormalize would multiply the density by {factor:.4g}, more than ±{100 * ELECTRON_MAX:g} % "
                "from 1: not applied")
    return None


__all__ = ["ELECTRON_MAX", "FLAGGED_MAX", "NEGATIVE_MAX", "DomainReport", "OutOfDomainError", "check_after",
           "check_before", "check_before_frames", "check_structure", "limits", "nearest_neighbour_distances",
           "nearest_neighbours", "refusal_range", "renormalization_refusal", "spacing_error", "training_reference"]
