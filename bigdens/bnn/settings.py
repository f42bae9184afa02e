"""The model's settings: the network's shape and prior (:class:`Architecture`), its feature and target
scaling (:class:`Scaling`), and the constants of the model format and of prediction."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: Version of the model file layout; files with a larger number are refused.  Format 2 adds the
#: network kind, the cross-species descriptor block and per-region variance factors; format-1
#: files load as mean-field models without the cross block.  Format 3 adds the σ map
#: (:meth:`Scaling.sigma_ratio`); a model without one is still written as format 2.
FORMAT_VERSION = 3
#: The format a model without a σ map is written in (readers of format 2 read it unchanged).
FORMAT_VERSION_NO_SIGMA_MAP = 2
#: Network kinds (:class:`Architecture`), its default first; ``bigdens train --kind`` offers these.
KINDS = ("last-layer", "mean-field")
#: Salt of the Monte Carlo seed (:func:`sample_seed`); changing it changes every prediction.
SAMPLE_SALT = 0xB16D
#: Edges (Å, nearest-atom distance) of the region classes whose variance factors are fitted
#: separately by calibration (format 2): nuclear cores, the bonding shell, open space.
REGION_EDGES = (0.6, 1.4)
#: A region class with fewer calibration points than this takes the global factor.
REGION_MIN_POINTS = 2000
#: The disorder factor on the aleatoric variance (:meth:`Scaling.aleatoric_factor`) never falls below this.
DISORDER_FACTOR_MIN = 0.1
#: Key of the JSON metadata in the safetensors header.
METADATA_KEY = "bigdens"
#: Log-variance of the aleatoric head is clipped to this range (scaled units).
LOGVAR_RANGE = (-16.0, 4.0)
#: Bytes of one layer's activations (S · chunk · width float32) that a CPU
#: prediction chunk aims at, about a core's L2 cache: 400 points for S = 20
#: and width 64.  On an AMD EPYC (1 MiB L2 per core, AVX2, one thread)
#: 1–4 MiB ran about equally fast, 0.25 MiB about 10 % slower and 64 MiB
#: (16384 points, the engine's default ``batch``) about 1.8× slower.
CPU_CHUNK_BYTES = 2 << 20
#: Points whose features are scaled, and whose samples are reduced, in one go
#: (a multiple of the chunk); amortises the per-call overhead of small ops.
GROUP_POINTS = 4096
#: Points per pass of a format-2 (last-layer) prediction on the CPU.
LAST_LAYER_CHUNK = 2048


@dataclass(frozen=True)
class Architecture:
    """Shape of the network and its prior.

    The defaults are the network ``bigdens train`` trains when given no
    ``--hidden``/``--kind`` (it reads them from here): last-layer, 128 × 128.

    Parameters
    ----------
    hidden : tuple of int
        Widths of the hidden layers.
    prior_sigma : float
        Standard deviation of the Gaussian prior on every weight.
    init_rho : float
        Initial ρ of the posterior scales (σ = softplus(ρ)).
    kind : {"last-layer", "mean-field"}
        ``"mean-field"`` (model format 1): every weight Bayesian, linear output;
        ``prior_sigma`` and ``init_rho`` apply.  ``"last-layer"`` (format 2): a
        deterministic trunk and a softplus density head with a Gaussian
        posterior over its last layer (see :mod:`bigdens.bnn`).
    """

    hidden: tuple[int, ...] = (128, 128)
    prior_sigma: float = 1.0
    init_rho: float = -7.0
    kind: str = "last-layer"

    def __post_init__(self):
        hidden = tuple(int(h) for h in self.hidden)
        if not hidden or min(hidden) < 1:
            raise InputError(f"hidden layer widths must be positive integers, got {self.hidden!r}")
        if not self.prior_sigma > 0:
            raise InputError(f"prior_sigma must be > 0, got {self.prior_sigma!r}")
        if self.kind not in KINDS:
            raise InputError(f"network kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "hidden", hidden)

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1


@dataclass(frozen=True)
class Scaling:
    """Feature standardisation and target scaling (part of the model).

    ``x_scaled = (x − feature_mean) / feature_std``;
    ``ρ = target_mean + target_std · y_scaled`` (e/Å³).  Both predicted
    variances are multiplied by ``variance_scale``, a factor fitted on
    validation data so that the 1σ interval has its nominal coverage.
    """

    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    target_mean: float
    target_std: float
    variance_scale: float = 1.0
    region_edges: tuple[float, ...] = ()
    region_scales: tuple[float, ...] = ()
    #: The aleatoric variance of a structure whose bond spread (:func:`bigdens.thermal.bond_spread`) is
    #: ``u`` Å is multiplied by ``max(DISORDER_FACTOR_MIN, 1 + disorder_slope · (u² − disorder_reference²))``
    #: (slope in 1/Å², reference in Å; slope 0: no dependence).  Fitted by :func:`bigdens.train.calibrate`.
    #: Below ``disorder_floor`` (Å; the coldest calibration cell's spread) ``u`` counts as the floor: no
    #: calibration data says how far σ may shrink in a colder structure, so it does not shrink further.
    disorder_reference: float = 0.0
    disorder_slope: float = 0.0
    disorder_floor: float = 0.0
    #: The σ map (format 3), fitted by :func:`bigdens.train.calibrate` so that RMSE = RMV in every σ
    #: decile of the calibration data: a point whose σ (total, after every other factor) is s gets
    #: both variances times ``exp(2·h(ln s))``, ``h`` piecewise linear through (``sigma_knots``,
    #: ``sigma_log_ratios``) (ln of σ in e/Å³, ln of the ratio), constant beyond the end knots, and
    #: ``ln s + h(ln s)`` non-decreasing (a larger σ stays at least as large).  Empty: no map.
    sigma_knots: tuple[float, ...] = ()
    sigma_log_ratios: tuple[float, ...] = ()

    def __post_init__(self):
        knots = tuple(float(v) for v in self.sigma_knots)
        logs = tuple(float(v) for v in self.sigma_log_ratios)
        if len(knots) != len(logs) or not all(math.isfinite(v) for v in knots + logs) or any(
                b <= a for a, b in zip(knots, knots[1:])):
            raise InputError(f"the σ map needs as many finite log ratios as increasing knots, got {len(knots)} knots "
                             f"and {len(logs)} ratios")
        if any((b + hb) < (a + ha) - 1e-9 for a, b, ha, hb in zip(knots, knots[1:], logs, logs[1:])):
            raise InputError("the σ map must not make a larger σ smaller (ln s + h(ln s) must be non-decreasing)")
        object.__setattr__(self, "sigma_knots", knots)
        object.__setattr__(self, "sigma_log_ratios", logs)
        if not all(math.isfinite(v) and v >= 0 for v in (self.disorder_slope, self.disorder_reference,
                                                          self.disorder_floor)):
            raise InputError(f"the disorder factor needs a slope >= 0, a reference >= 0 and a floor >= 0, got "
                             f"{self.disorder_slope!r}, {self.disorder_reference!r} and {self.disorder_floor!r}")
        edges = tuple(float(v) for v in self.region_edges)
        scales = tuple(float(v) for v in self.region_scales)
        if scales and len(scales) != len(edges) + 1:
            raise InputError(f"{len(edges)} region edges need {len(edges) + 1} region factors, got {len(scales)}")
        if any(not (math.isfinite(v) and v > 0) for v in scales):
            raise InputError(f"region variance factors must be finite and > 0, got {scales!r}")
        object.__setattr__(self, "region_edges", edges)
        object.__setattr__(self, "region_scales", scales)

    def variance_factor(self, d_min: np.ndarray) -> np.ndarray:
        """Variance factor of each point, shape like ``d_min`` (nearest-atom distance, Å), float64.

        ``variance_scale`` times the factor of the point's region class (when fitted).
        """
        d_min = np.asarray(d_min)
        if not self.region_scales:
            return np.full(d_min.shape, self.variance_scale)
        cls = np.searchsorted(np.asarray(self.region_edges), d_min, side="right")
        return self.variance_scale * np.asarray(self.region_scales)[cls]

    def sigma_ratio(self, sigma: np.ndarray) -> np.ndarray:
        """The σ map's factor on σ (≥ 0, float64) for total σ ``sigma`` (e/Å³, any shape); 1 without a map."""
        sigma = np.asarray(sigma, dtype=np.float64)
        if not self.sigma_knots:
            return np.ones(sigma.shape)
        x = np.log(np.maximum(sigma, 1e-300))
        return np.exp(np.interp(x, self.sigma_knots, self.sigma_log_ratios))

    def aleatoric_factor(self, disorder: float | None) -> float:
        """Factor on the aleatoric variance of a structure of bond spread ``disorder`` (Å).

        1 when the model has no disorder dependence or ``disorder`` is None or NaN (unknown);
        a structure colder than ``disorder_floor`` gets the floor's factor.
        """
        if not self.disorder_slope or disorder is None or not math.isfinite(disorder):
            return 1.0
        u2, r2 = max(float(disorder), self.disorder_floor) ** 2, self.disorder_reference ** 2
        return max(DISORDER_FACTOR_MIN, 1.0 + self.disorder_slope * (u2 - r2))

    @classmethod
    def fit(cls, features: np.ndarray, density: np.ndarray, *, positive: bool = False) -> "Scaling":
        """From training features (n, F) and densities (n,) e/Å³.

        ``positive`` (format 2, softplus output): no target shift (``target_mean`` 0), so that
        a non-negative scaled output is a non-negative density.
        """
        mean = features.mean(axis=0, dtype=np.float64)
        std = features.std(axis=0, dtype=np.float64)
        std = np.where(std > 1e-6, std, 1.0)  # constant columns (padding) stay as they are
        return cls(
            feature_mean=tuple(float(v) for v in mean),
            feature_std=tuple(float(v) for v in std),
            target_mean=0.0 if positive else float(np.mean(density, dtype=np.float64)),
            target_std=float(np.std(density, dtype=np.float64)) or 1.0,
        )
