"""Accuracy and calibration metrics of predicted densities (DESIGN §5).

All functions take flat or gridded arrays of the same shape: predicted mean
``pred`` and reference ``ref`` in e/Å³, and the total predictive standard
deviation ``sigma`` in e/Å³.  Percentages are returned as percentages.
"""

from __future__ import annotations

import numpy as np

#: Points at least this far (Å) from every atom are *open space* (DESIGN §5): none in a crystal.
OPEN_SPACE = 2.3
#: *Near-defect* points (DESIGN §5) lie within this distance (Å) of an under-coordinated atom.
NEAR_DEFECT = 2.0
#: Coordination shell of each element's crystal, by atomic number: (radius Å, neighbours within it).
#: An atom with fewer neighbours (any species) within the radius is under-coordinated.  FCC Al has
#: 12 within 3.3 Å (DESIGN §5); diamond Si and Ge have 4 within 2.9 Å (bonds 2.35–2.45 Å, the second
#: shell at 3.8–4.0 Å).
COORDINATION = {13: (3.3, 12), 14: (2.9, 4), 32: (2.9, 4)}
#: Number of equal-count σ bins of the binned calibration (DESIGN §5).
SIGMA_BINS = 10


def nmae(pred, ref) -> float:
    """Σ|ρ̂ − ρ| / Σ|ρ|, in %."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    return float(100.0 * np.abs(pred - ref).sum() / np.abs(ref).sum())


def nrmse(pred, ref) -> float:
    """sqrt(mean((ρ̂ − ρ)²)) / (max ρ − min ρ), in %."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    return float(100.0 * np.sqrt(np.mean((pred - ref) ** 2)) / (ref.max() - ref.min()))


def electron_count_error(pred, ref, *, dv: float, n_electrons: float) -> float:
    """(Σρ̂ − Σρ)·dV / N_electrons, in %; ``dv`` in Å³."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    return float(100.0 * (pred.sum() - ref.sum()) * dv / n_electrons)


def coverage(pred, ref, sigma, k: float) -> float:
    """Fraction of points with |ρ̂ − ρ| ≤ k·σ_total, in % (ideal 68.3 for k=1, 95.4 for k=2)."""
    pred, ref, sigma = (np.asarray(a, np.float64) for a in (pred, ref, sigma))
    return float(100.0 * np.mean(np.abs(pred - ref) <= k * sigma))


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long arrays (average ranks for ties)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def block_spearman(pred, ref, sigma, *, block: int = 8) -> float:
    """Spearman correlation between mean σ and mean |ρ̂ − ρ| over blocks of ``block``³ points.

    Gridded arrays (n1, n2, n3) are cut into boxes; the correlation is taken
    over the boxes' means, so it says whether σ points at where the error is.
    """
    pred, ref, sigma = (np.asarray(a, np.float64) for a in (pred, ref, sigma))
    if pred.ndim != 3:
        return spearman(sigma, np.abs(pred - ref))
    err = np.abs(pred - ref)
    n = [s // block for s in pred.shape]
    if min(n) < 1:
        return spearman(sigma, err)
    trim = tuple(slice(0, k * block) for k in n)

    def means(x):
        x = x[trim].reshape(n[0], block, n[1], block, n[2], block)
        return x.mean(axis=(1, 3, 5)).ravel()

    return spearman(means(sigma), means(err))


def binned_calibration(pred, ref, sigma, *, bins: int = SIGMA_BINS) -> dict:
    """Binned calibration (DESIGN §5, Levi et al.): points sorted by σ into ``bins`` equal-count bins.

    Returns
    -------
    dict
        ``rmse``, ``rmv`` (e/Å³) and ``ratio`` = RMSE/RMV (ideal 1) per bin, lowest σ first;
        ``sigma_edges`` (e/Å³, bins + 1 values: the smallest σ, the bins' upper σ);
        ``ence`` = mean over bins of |RMV − RMSE| / RMV (ideal 0).
    """
    err = np.ravel(np.asarray(pred, np.float64) - np.asarray(ref, np.float64))
    sig = np.ravel(np.asarray(sigma, np.float64))
    order = np.argsort(sig, kind="stable")
    parts = [p for p in np.array_split(order, bins) if len(p)]
    rmse = np.array([np.sqrt(np.mean(err[p] ** 2)) for p in parts])
    rmv = np.array([np.sqrt(np.mean(sig[p] ** 2)) for p in parts])
    edges = [float(sig[order[0]])] + [float(sig[p[-1]]) for p in parts] if len(order) else []
    return {"rmse": rmse.tolist(), "rmv": rmv.tolist(), "ratio": (rmse / rmv).tolist(), "sigma_edges": edges,
            "ence": float(np.mean(np.abs(rmv - rmse) / rmv)) if len(parts) else float("nan")}


def region_calibration(pred, ref, sigma, mask) -> dict | None:
    """Coverage and rms(|ρ̂ − ρ|/σ) of the points where ``mask`` is true (None when there are none).

    Returns ``{"n_points", "coverage_1sigma_pct", "rms_err_over_sigma", "nmae_pct"}``: ideal 68.3 % and 1.
    """
    mask = np.ravel(np.asarray(mask, bool))
    if not mask.any():
        return None
    p, r, s = (np.ravel(np.asarray(a, np.float64))[mask] for a in (pred, ref, sigma))
    z = (p - r) / s
    return {"n_points": int(mask.sum()), "coverage_1sigma_pct": float(100.0 * np.mean(np.abs(z) <= 1.0)),
            "rms_err_over_sigma": float(np.sqrt(np.mean(z ** 2))), "nmae_pct": nmae(p, r)}


def undercoordinated_atoms(positions, numbers, cell) -> np.ndarray:
    """Indices of the atoms with fewer neighbours than their element's crystal (:data:`COORDINATION`).

    ``positions`` (n, 3) Å, ``numbers`` (n,), ``cell`` (3, 3) rows Å, periodic.  Elements without an
    entry are never counted as under-coordinated.
    """
    from ase.neighborlist import neighbor_list

    numbers = np.asarray(numbers)
    known = [z for z in np.unique(numbers) if int(z) in COORDINATION]
    if not known:
        return np.zeros(0, dtype=np.int64)
    from ase import Atoms

    radius = max(COORDINATION[int(z)][0] for z in known)
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    i, d = neighbor_list("id", atoms, radius)
    out = []
    for z in known:
        r, n = COORDINATION[int(z)]
        counts = np.bincount(i[d <= r], minlength=len(numbers))
        out.append(np.flatnonzero((numbers == z) & (counts < n)))
    return np.sort(np.concatenate(out))


def near_atoms_mask(points, centres, cell, radius: float) -> np.ndarray:
    """True for each point (n, 3) Å within ``radius`` Å of any of ``centres`` (m, 3) Å, periodic ``cell``.

    Brute force over the 27 nearest images (exact while ``radius`` is below the cell's widths).
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    cell = np.asarray(cell, np.float64)
    inv = np.linalg.inv(cell)
    mask = np.zeros(len(points), bool)
    shifts = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], np.float64) @ cell
    for c in np.asarray(centres, np.float64).reshape(-1, 3):
        frac = (points - c) @ inv
        delta = (frac - np.round(frac)) @ cell
        best = np.min(np.stack([np.einsum("ij,ij->i", delta + s, delta + s) for s in shifts]), axis=0)
        mask |= best <= radius * radius
    return mask


def summary(pred, ref, sigma, *, dv: float, n_electrons: float) -> dict:
    """Every metric of DESIGN §5 for one snapshot (or a concatenation), as a dict."""
    return {
        "nmae_pct": nmae(pred, ref),
        "nrmse_pct": nrmse(pred, ref),
        "electron_count_error_pct": electron_count_error(pred, ref, dv=dv, n_electrons=n_electrons),
        "coverage_1sigma_pct": coverage(pred, ref, sigma, 1.0),
        "coverage_2sigma_pct": coverage(pred, ref, sigma, 2.0),
        "spearman_sigma_error": block_spearman(pred, ref, sigma),
    }
