"""The torch modules of :mod:`bigdens.bnn` (imported lazily: ``import bigdens`` loads no torch).

Two network kinds share one interface (``layers``, ``kl()``, ``forward(x)`` for a stochastic
training pass and ``forward_mean(x)`` for validation, both returning ``(N, 2)``: the predicted
density and its log-variance in scaled units):

* :class:`MeanFieldNet` (model format 1): every weight has a mean-field Gaussian posterior
  (Bayes by backprop); the output is linear.
* :class:`LastLayerNet` (model format 2): a deterministic SiLU trunk φ(x) computed once per point,
  a density head ``ρ = softplus(z)`` (non-negative by construction) whose pre-activation
  ``z = φ·w + b`` has a full-covariance Gaussian posterior over ``(w, b)`` (a last-layer Laplace
  approximation, fitted after training), an extrapolation term for inputs outside the training
  range, and a deterministic aleatoric head.  See :mod:`bigdens.bnn` for the prediction formulas.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class BayesLinear(nn.Module):
    """Linear layer with a mean-field Gaussian posterior ``N(μ, softplus(ρ)²)`` on weights and bias.

    Weights are stored (in, out).  ``prior_sigma`` is the standard deviation of the Gaussian prior.
    """

    def __init__(self, n_in: int, n_out: int, *, prior_sigma: float, init_rho: float):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.prior_sigma = prior_sigma
        self.w_mu = nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound))
        self.w_rho = nn.Parameter(torch.full((n_in, n_out), init_rho))
        self.b_mu = nn.Parameter(torch.zeros(n_out))
        self.b_rho = nn.Parameter(torch.full((n_out,), init_rho))

    def kl(self) -> torch.Tensor:
        ps = self.prior_sigma
        total = 0.0
        for mu, rho in ((self.w_mu, self.w_rho), (self.b_mu, self.b_rho)):
            s = F.softplus(rho)
            total = total + (math.log(ps) - torch.log(s) + (s * s + mu * mu) / (2 * ps * ps) - 0.5).sum()
        return total

    def forward_lrt(self, x):
        """Local reparameterisation (training): sample pre-activations, not weights."""
        mean = x @ self.w_mu + self.b_mu
        var = (x * x) @ F.softplus(self.w_rho) ** 2 + F.softplus(self.b_rho) ** 2
        return mean + torch.sqrt(var + 1e-16) * torch.randn_like(mean)

    def forward_mean(self, x):
        return x @ self.w_mu + self.b_mu

    def forward_samples(self, x, eps_w, eps_b):
        """Explicit weight samples: x (S, N, in) or (N, in); eps_w (S, in, out); eps_b (S, 1, out)."""
        w = self.w_mu + F.softplus(self.w_rho) * eps_w
        b = self.b_mu + F.softplus(self.b_rho) * eps_b
        if x.dim() == 2:
            return torch.matmul(x, w) + b  # broadcasts to (S, N, out)
        return torch.baddbmm(b, x, w)


def _chain(layers, x, step):
    """Apply ``step(layer, x)`` through ``layers`` with SiLU between them (not after the last)."""
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        x = step(layer, x)
        if i < last:
            x = F.silu(x)
    return x


class MeanFieldNet(nn.Module):
    """Format 1: a fully Bayesian MLP, output (mean, log-variance) in scaled units."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], *, prior_sigma: float, init_rho: float):
        super().__init__()
        widths = [n_in, *hidden, 2]
        self.layers = nn.ModuleList(BayesLinear(a, b, prior_sigma=prior_sigma, init_rho=init_rho)
                                    for a, b in zip(widths[:-1], widths[1:]))

    def kl(self):
        return sum(layer.kl() for layer in self.layers)

    def forward(self, x):
        return _chain(self.layers, x, lambda layer, h: layer.forward_lrt(h))

    def forward_mean(self, x):
        return _chain(self.layers, x, lambda layer, h: layer.forward_mean(h))

    def forward_samples(self, x, eps):
        """(S, N, 2) for explicit weight noise ``eps``: one (eps_w, eps_b) per layer (the reference loop)."""
        it = iter(eps)
        return _chain(self.layers, x, lambda layer, h: layer.forward_samples(h, *next(it)))


class LastLayerNet(nn.Module):
    """Format 2: deterministic trunk, softplus density head with a Gaussian last-layer posterior.

    ``layers`` are the trunk's linear layers followed by the head (H → 2: row 0 is ``z``, row 1 the
    log-variance).  Buffers (saved with the weights, fitted after training by
    :func:`bigdens.train.fit_posterior`):

    ``post_chol`` (H+1, H+1)
        Lower Cholesky factor L of the posterior covariance of ``(w_z, b_z)``; a sample is
        ``(w_z, b_z) + L ε``.
    ``range_lo``, ``range_hi`` (F,)
        The training range of each scaled feature (its 0.1 % and 99.9 % quantiles over the
        training points, :data:`bigdens.train.RANGE_QUANTILE`).
    ``slope_lo``, ``slope_hi`` (F,)
        RMS of ∂z/∂x_j over the training points in the lowest (highest) percent of feature j:
        the prior scale of the unknown slope beyond the range (see :mod:`bigdens.bnn`).
    """

    def __init__(self, n_in: int, hidden: tuple[int, ...]):
        super().__init__()
        widths = [n_in, *hidden, 2]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        h = hidden[-1]
        self.register_buffer("post_chol", torch.zeros(h + 1, h + 1))
        for name in ("range_lo", "range_hi"):
            self.register_buffer(name, torch.zeros(n_in))
        for name in ("slope_lo", "slope_hi"):
            self.register_buffer(name, torch.zeros(n_in))
        # No range yet (a fresh network): nothing counts as outside it.  Finite, so files stay finite.
        self.range_lo.fill_(-1e30)
        self.range_hi.fill_(1e30)

    def kl(self):
        return torch.zeros(())

    def trunk(self, x):
        """Features φ(x), (N, H)."""
        for layer in self.layers[:-1]:
            x = F.silu(layer(x))
        return x

    def head(self, phi):
        """(z, log-variance) of the mean weights, (N, 2)."""
        return self.layers[-1](phi)

    def forward(self, x):
        out = self.head(self.trunk(x))
        return torch.stack([F.softplus(out[:, 0]), out[:, 1]], dim=1)

    forward_mean = forward


def make_net(n_in: int, arch) -> nn.Module:
    """A fresh network of ``arch`` (a :class:`bigdens.bnn.Architecture`) for ``n_in`` features."""
    if arch.kind == "last-layer":
        return LastLayerNet(n_in, arch.hidden)
    return MeanFieldNet(n_in, arch.hidden, prior_sigma=arch.prior_sigma, init_rho=arch.init_rho)

