"""Training, fine-tuning (transfer learning) and evaluation of density models.

Stage 1 trains every layer from scratch on many small-cell snapshots; stage 2
(:func:`finetune`) starts from a stage-1 model and retrains its last layers
(the others frozen, or at a reduced learning rate) on a few larger cells.
Validation is split by snapshot, never by grid point (neighbouring points are
nearly identical and would leak).  After training, one scalar variance
factor is fitted on the validation snapshots so that the 1σ interval covers
68.3 % of points (recalibration; stored in the model as ``variance_scale``).

Modules, one per concept (every name other modules, tests and benchmarks use is
re-exported here, as :mod:`ase.build` does, so ``from bigdens.train import train`` works):

- :mod:`~bigdens.train.config` — :class:`TrainConfig`, the optimisation settings;
- :mod:`~bigdens.train.features` — descriptors and densities of snapshots (:func:`snapshot_features`);
- :mod:`~bigdens.train.fitting` — Bayes by backprop, :func:`train` (stage 1) and :func:`finetune` (stage 2);
- :mod:`~bigdens.train.posterior` — the last-layer posterior of format-2 models (:func:`fit_posterior`);
- :mod:`~bigdens.train.calibration` — the variance factors and the epistemic reference (:func:`calibrate`);
- :mod:`~bigdens.train.identity` — a snapshot's digest and Monte Carlo block index;
- :mod:`~bigdens.train.evaluation` — the metrics of a model on snapshots (:func:`evaluate`).

Progress lines go to the logger ``bigdens.train`` at INFO; ``bigdens train`` shows them.
"""

from __future__ import annotations

# The names other modules, tests and benchmarks use, from the modules that define them.
from ..bnn import epistemic_threshold  # noqa: F401  (bigdens.cli.calibrate imports it from here)
from ..lineage import composition, lineage, training_compositions  # noqa: F401  (re-exported)
from .calibration import (  # noqa: F401
    DISORDER_MIN_SPREAD, _calibrate, _cell_factor, _cells, _check_calibration_set, _disorder_fit, _region_factors,
    calibrate, with_variance_scale,
)
from .config import TrainConfig
from .evaluation import evaluate
from .features import _check_snapshots, _stack, snapshot_features  # noqa: F401
from .fitting import FINETUNE_CONFIG, _dft_settings, _fit, _nll, _provenance, finetune, logger, train  # noqa: F401
from .identity import _identity_hash, snapshot_block_index, snapshot_digest  # noqa: F401
from .posterior import EDGE_SHARE, POSTERIOR_POINTS, RANGE_QUANTILE, fit_posterior

__all__ = [
    "DISORDER_MIN_SPREAD", "EDGE_SHARE", "FINETUNE_CONFIG", "POSTERIOR_POINTS", "RANGE_QUANTILE", "TrainConfig", "calibrate",
    "composition", "epistemic_threshold", "evaluate", "finetune", "fit_posterior", "lineage", "logger",
    "snapshot_block_index", "snapshot_digest", "snapshot_features", "train", "training_compositions",
    "with_variance_scale",
]
