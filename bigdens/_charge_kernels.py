"""The per-sample accumulation of the per-atom charges, below the model that calls it.

:meth:`bigdens.bnn.DensityModel.predict_grouped` adds each pass's per-sample
deviations into the per-atom sums ``D`` of :mod:`bigdens.charges` while it
predicts; the kernel lives here, with nothing above it imported, so that the
model does not depend on the charges module (which reads and writes stores).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, boundscheck=False)
def _accumulate(dev, labels, weights, acc):
    # acc[labels[p], s] += weights[p] * dev[s, p], in point order.
    for p in range(dev.shape[1]):
        lab = labels[p]
        w = weights[p]
        for s in range(dev.shape[0]):
            acc[lab, s] += w * dev[s, p]


def accumulate(dev, labels: np.ndarray, weights: np.ndarray, acc: np.ndarray) -> None:
    """``acc[labels[p], s] += weights[p] · dev[s, p]`` in point order (float64; deterministic).

    ``dev`` is any (S, n) float64 array (strided views allowed), ``acc`` (K, S) float64.
    """
    _accumulate(dev, labels, weights, acc)


__all__ = ["accumulate"]
