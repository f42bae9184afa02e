"""The last-layer posterior and extrapolation terms of a format-2 model (:func:`fit_posterior`)."""

from __future__ import annotations

import numpy as np

from ..bnn import LOGVAR_RANGE, DensityModel


#: Training points used to fit the last-layer posterior and the extrapolation slopes (format 2).
POSTERIOR_POINTS = 200_000
#: Share of each feature's training values, at either end, whose ∂z/∂x sets that end's slope.
EDGE_SHARE = 0.01
#: Share of each feature's training values left outside the training range at either end: the range
#: is where the training data are, not where a few of them reach (a 1400 K liquid cell puts a
#: handful of Al points 2.31 Å from any atom; 99.9 % of the training points lie within 1.96 Å).
#: The same share as the epistemic flag's base rate (:data:`bigdens.bnn.EPISTEMIC_QUANTILE`).
RANGE_QUANTILE = 0.001


def fit_posterior(model: DensityModel, X: np.ndarray, *, seed: int = 0, prior_precision: float = 1.0,
                  keep_range: bool = False) -> None:
    """Fit a format-2 model's last-layer posterior and extrapolation terms, in place.

    Parameters
    ----------
    model
        A trained ``"last-layer"`` model.
    X : ndarray, shape (n_points, n_features), float32
        Raw descriptors of its training points.
    seed
        Seeds the subsample of at most :data:`POSTERIOR_POINTS` points.
    prior_precision
        Precision of the Gaussian prior on the head's (w_z, b_z), scaled units.
    keep_range
        Fine-tuning: the training range becomes the union of the model's and ``X``'s.

    Notes
    -----
    The posterior is the Laplace (generalised Gauss-Newton) approximation for the Gaussian
    likelihood of ``ρ = softplus(z)``: precision ``N/n Σ_i sig(z_i)² φ̃_i φ̃_iᵀ / v_i + λ I`` over
    the subsample, φ̃ = [φ, 1], v_i the aleatoric variance.  The range is each scaled feature's
    :data:`RANGE_QUANTILE` and 1 − :data:`RANGE_QUANTILE` quantiles over all of ``X``; the slope at each end is the RMS of ∂z/∂x_j over the
    subsample's points in the :data:`EDGE_SHARE` nearest that end: beyond the range, the
    prediction continues with an unknown slope of that size.
    """
    import torch

    net = model.net
    xs = model.scale_features(X)
    q = np.quantile(xs.numpy(), [RANGE_QUANTILE, 1 - RANGE_QUANTILE], axis=0)
    lo, hi = torch.from_numpy(q[0]).float(), torch.from_numpy(q[1]).float()
    if keep_range:
        lo, hi = torch.minimum(lo, net.range_lo), torch.maximum(hi, net.range_hi)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(xs), size=min(len(xs), POSTERIOR_POINTS), replace=False))
    xsub = xs[torch.from_numpy(pick)]
    prec = torch.zeros(net.post_chol.shape, dtype=torch.float64)
    grads = []
    for a in range(0, len(xsub), 20_000):
        x = xsub[a : a + 20_000].clone().requires_grad_(True)
        phi = net.trunk(x)
        out = net.head(phi)
        (g,) = torch.autograd.grad(out[:, 0].sum(), x)
        grads.append(g)
        with torch.no_grad():
            var = torch.exp(out[:, 1].clamp(*LOGVAR_RANGE)).double()
            j = torch.sigmoid(out[:, 0]).double()[:, None] * torch.cat([phi, torch.ones(len(phi), 1)], 1).double()
            prec += (j / var[:, None]).T @ j
    prec *= len(xs) / len(xsub)
    prec += prior_precision * torch.eye(len(prec), dtype=torch.float64)
    cov = torch.cholesky_inverse(torch.linalg.cholesky(prec))
    g = torch.cat(grads).double()
    xsd = xsub.double()
    slope_lo, slope_hi = torch.zeros(len(lo)), torch.zeros(len(hi))
    for j in range(xs.shape[1]):
        col = xsd[:, j]
        for slope, mask in ((slope_lo, col <= torch.quantile(col, EDGE_SHARE)),
                            (slope_hi, col >= torch.quantile(col, 1 - EDGE_SHARE))):
            slope[j] = float(g[mask, j].square().mean().sqrt())
    with torch.no_grad():
        net.post_chol.copy_(torch.linalg.cholesky(cov).float())
        net.range_lo.copy_(lo)
        net.range_hi.copy_(hi)
        net.slope_lo.copy_(slope_lo)
        net.slope_hi.copy_(slope_hi)
