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
        only for models with an epistemic reference).
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
        row = {"name": s.name, "split": s.split, "n_atoms": int(len(s.numbers))}
        row.update(metrics.summary(mean.reshape(shape), y.reshape(shape), sigma.reshape(shape),
                                   dv=grid.dv, n_electrons=s.n_electrons_expected))
        if threshold is not None:
            # 0.1 % on data like the validation data; more where the structure is new (defects).
            row["epistemic_high_pct"] = 100.0 * float(np.mean(np.sqrt(epi.astype(np.float64)) > threshold))
        rows.append(row)
        allp.append(mean)
        allr.append(y)
        alls.append(sigma)
    p, r, sg = np.concatenate(allp), np.concatenate(allr), np.concatenate(alls)
    overall = {
        "nmae_pct": metrics.nmae(p, r),
        "nrmse_pct": metrics.nrmse(p, r),
        "electron_count_error_pct": float(np.mean([row["electron_count_error_pct"] for row in rows])),
        "coverage_1sigma_pct": metrics.coverage(p, r, sg, 1.0),
        "coverage_2sigma_pct": metrics.coverage(p, r, sg, 2.0),
        "spearman_sigma_error": float(np.nanmean([row["spearman_sigma_error"] for row in rows])),
        "n_snapshots": len(rows),
        "n_points": int(len(p)),
    }
    if threshold is not None:
        overall["epistemic_high_pct"] = float(np.mean([row["epistemic_high_pct"] for row in rows]))
    return {"snapshots": rows, "overall": overall, "samples": samples, "seed": seed}
