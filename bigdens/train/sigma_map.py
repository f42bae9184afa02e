"""The σ map (model format 3): a monotone recalibration of σ so that every σ decile of the calibration
data has RMSE = RMV (:func:`fit_sigma_map`), not only the 1σ coverage of all points together."""

from __future__ import annotations

import numpy as np

from ..metrics import SIGMA_BINS

#: Fixed-point passes of :func:`fit_sigma_map` (each re-measures RMV per bin under the current map).
SIGMA_MAP_PASSES = 8
#: The map's ratio stays within [1/SIGMA_MAP_LIMIT, SIGMA_MAP_LIMIT] of the unmapped σ.
SIGMA_MAP_LIMIT = 4.0


def _monotone(knots: np.ndarray, logs: np.ndarray) -> np.ndarray:
    """Raise each log ratio just enough that ``knots + logs`` never decreases (a larger σ stays larger)."""
    out = logs.copy()
    for k in range(1, len(out)):
        out[k] = max(out[k], out[k - 1] - (knots[k] - knots[k - 1]))
    return out


def fit_sigma_map(err: np.ndarray, sigma: np.ndarray, *, bins: int = SIGMA_BINS) -> tuple[tuple, tuple]:
    """Knots and log ratios of the σ map (:meth:`bigdens.bnn.Scaling.sigma_ratio`) from calibration points.

    The points are sorted by ``sigma`` into ``bins`` equal-count bins (DESIGN §5).  Each bin's knot is
    ln of its RMV; its log ratio starts at ln(RMSE/RMV) and is corrected in
    :data:`SIGMA_MAP_PASSES` fixed-point passes, each re-measuring the bin's RMV under the
    interpolated map (the map varies inside a bin), then made monotone (:func:`_monotone`) and
    clipped to ±ln :data:`SIGMA_MAP_LIMIT`.

    Parameters
    ----------
    err : ndarray (n,)
        Errors ρ̂ − ρ on calibration points, e/Å³.
    sigma : ndarray (n,)
        Total σ there under every other factor of the model, e/Å³ (> 0).

    Returns
    -------
    knots, log_ratios : tuple of float
        Increasing ln σ knots and the log ratios at them; both empty when there are fewer than
        ``bins`` distinct σ values (no map).
    """
    err = np.ravel(np.asarray(err, np.float64))
    sigma = np.ravel(np.asarray(sigma, np.float64))
    ok = np.isfinite(err) & np.isfinite(sigma) & (sigma > 0)
    err, sigma = err[ok], sigma[ok]
    if len(np.unique(sigma)) < bins:
        return (), ()
    parts = np.array_split(np.argsort(sigma, kind="stable"), bins)
    ms_err = np.array([np.mean(err[p] ** 2) for p in parts])
    knots = np.log(np.sqrt([np.mean(sigma[p] ** 2) for p in parts]))
    keep = np.concatenate([[True], np.diff(knots) > 1e-12])  # equal knots (ties) merge into the first
    logs = np.zeros(len(knots))
    x = np.log(sigma)
    for _ in range(SIGMA_MAP_PASSES):
        mapped = sigma * np.exp(np.interp(x, knots[keep], logs[keep]))
        rmv = np.sqrt([np.mean(mapped[p] ** 2) for p in parts])
        logs = logs + 0.5 * np.log(np.maximum(ms_err, 1e-300)) - np.log(rmv)
        logs = np.clip(_monotone(knots, logs), -np.log(SIGMA_MAP_LIMIT), np.log(SIGMA_MAP_LIMIT))
    logs = _monotone(knots, logs)
    return tuple(float(v) for v in knots[keep]), tuple(float(v) for v in logs[keep])
