"""Accuracy and calibration metrics of predicted densities (DESIGN §5).

All functions take flat or gridded arrays of the same shape: predicted mean
``pred`` and reference ``ref`` in e/Å³, and the total predictive standard
deviation ``sigma`` in e/Å³.  Percentages are returned as percentages.
"""

from __future__ import annotations

import numpy as np


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
