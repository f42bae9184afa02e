"""Evaluation of a model on snapshots: the metrics per snapshot and over all of them (:func:`evaluate`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..bnn import DensityModel, epistemic_threshold
from .. import metrics
from .features import _check_snapshots, snapshot_features
from .identity import snapshot_block_index


def evaluate(model: DensityModel, snapshots: Sequence, *, samples: int = 20, seed: int = 0) -> dict:
    """Metrics of DESIGN §5 per snapshot and over all of them.

    Each snapshot is predicted as one block (one set of S weight samples), seeded by
    :func:`snapshot_block_index`: a snapshot reads the same in any list.  Its aleatoric
    variance takes the model's factor of the snapshot's bond spread, as in ``bigdens predict``.

    Returns
    -------
    dict
        ``{"snapshots": [{"name": ..., <metrics>}, ...], "overall": {<metrics>}}``;
        metric names as in :func:`bigdens.metrics.summary`, plus ``epistemic_high_pct``
        (points whose epistemic σ exceeds the model's validation 99.9 % quantile, %;
        only for models with an epistemic reference), the snapshot's ``protocol``, and the σ
        calibration of DESIGN §5 (:func:`calibration_report`): ``ence``, ``sigma_bins`` (RMSE,
        RMV and RMSE/RMV per σ decile), ``open_space`` and ``near_defect`` (None where the cell has
        no such points).  ``overall`` has the binned calibration of all points together and the
        largest per-snapshot ENCE (``ence_max``).
    """
    from ..thermal import bond_spread

    _check_snapshots(snapshots, model.params, "evaluation")
    threshold = epistemic_threshold(model)
    rows, allp, allr, alls = [], [], [], []
    for s in snapshots:
        X, y = snapshot_features(s, model.params)
        mean, epi, ale = model.predict(X, samples=samples, seed=seed, block_index=snapshot_block_index(s),
                                       disorder=bond_spread(s.positions, s.numbers, s.cell))
        sigma = np.sqrt(epi.astype(np.float64) + ale)
        shape = s.density.shape
        grid = s.grid()
        row = {"name": s.name, "split": s.split, "n_atoms": int(len(s.numbers)), "protocol": s.protocol}
        row.update(metrics.summary(mean.reshape(shape), y.reshape(shape), sigma.reshape(shape),
                                   dv=grid.dv, n_electrons=s.n_electrons_expected))
        row.update(calibration_report(mean, y, sigma, snapshot=s, d_min=model.nearest_distance(X)))
        if threshold is not None:
            # 0.1 % on data like the validation data; more where the structure is new (defects).
            row["epistemic_high_pct"] = 100.0 * float(np.mean(np.sqrt(epi.astype(np.float64)) > threshold))
        rows.append(row)
        allp.append(mean)
        allr.append(y)
        alls.append(sigma)
    p, r, sg = np.concatenate(allp), np.concatenate(allr), np.concatenate(alls)
    binned = metrics.binned_calibration(p, r, sg)  # sorts every point once
    overall = {
        "nmae_pct": metrics.nmae(p, r),
        "nrmse_pct": metrics.nrmse(p, r),
        "electron_count_error_pct": float(np.mean([row["electron_count_error_pct"] for row in rows])),
        "coverage_1sigma_pct": metrics.coverage(p, r, sg, 1.0),
        "coverage_2sigma_pct": metrics.coverage(p, r, sg, 2.0),
        "spearman_sigma_error": float(np.nanmean([row["spearman_sigma_error"] for row in rows])),
        "ence": binned["ence"],
        "ence_max": float(max(row["ence"] for row in rows)),
        "sigma_bins": _bins(binned),
        "n_snapshots": len(rows),
        "n_points": int(len(p)),
    }
    if threshold is not None:
        overall["epistemic_high_pct"] = float(np.mean([row["epistemic_high_pct"] for row in rows]))
    return {"snapshots": rows, "overall": overall, "samples": samples, "seed": seed}


def _bins(binned: dict) -> dict:
    return {k: binned[k] for k in ("ratio", "rmse", "rmv", "sigma_edges")}


def calibration_report(mean, ref, sigma, *, snapshot, d_min) -> dict:
    """σ calibration of one snapshot (DESIGN §5): binned (ENCE, RMSE/RMV per σ decile), open space, near-defect.

    ``mean``, ``ref``, ``sigma``: (n_points,) e/Å³ in the grid's C order; ``d_min``: each point's
    nearest-atom distance, Å.  Open space: ``d_min ≥`` :data:`bigdens.metrics.OPEN_SPACE`; near-defect:
    within :data:`bigdens.metrics.NEAR_DEFECT` of an under-coordinated atom
    (:func:`bigdens.metrics.undercoordinated_atoms`).
    """
    binned = metrics.binned_calibration(mean, ref, sigma)
    defects = metrics.undercoordinated_atoms(snapshot.positions, snapshot.numbers, snapshot.cell)
    near = (metrics.near_atoms_mask(snapshot.grid().points(), np.asarray(snapshot.positions)[defects],
                                    snapshot.cell, metrics.NEAR_DEFECT) if len(defects) else np.zeros(len(mean), bool))
    return {"ence": binned["ence"], "sigma_bins": _bins(binned),
            "open_space": metrics.region_calibration(mean, ref, sigma, np.asarray(d_min) >= metrics.OPEN_SPACE),
            "near_defect": metrics.region_calibration(mean, ref, sigma, near),
            "undercoordinated_atoms": int(len(defects))}
