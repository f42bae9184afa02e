"""Bayesian neural network: descriptor → density, with epistemic and aleatoric uncertainty.

Every weight and bias has a mean-field Gaussian variational posterior
``N(μ, softplus(ρ)²)`` and a Gaussian prior ``N(0, σ_p²)``; training minimises
the negative expected log-likelihood plus the KL divergence scaled by the
number of training points (Bayes by backprop).  The output layer has two
units: the mean and the log-variance of a Gaussian (heteroscedastic aleatoric
noise).

Prediction draws S weight samples, each shared by all points of a block (so
integrated quantities keep their correlations), batched as a leading tensor
dimension of one batched matmul::

    mean       = avg_s μ_s
    epistemic  = var_s μ_s
    aleatoric  = avg_s σ²_s

The samples come from a generator seeded by ``(seed, block_index)``, drawn on
the CPU, so a recomputed block reproduces its numbers on any device.

:meth:`DensityModel.predict` runs the S samples in a transposed layout
(features × points), float32, over chunks of points small enough to stay in
cache: the first layer is one GEMM for all samples at once, later layers one
batched GEMM each, the activation is applied in place into preallocated
buffers (on the CPU by a vectorised numba kernel, :mod:`bigdens._bnn_kernels`:
torch's SiLU costs as much as the GEMMs on AVX2), and only the output head, (S, 2) per point, is reduced, in float64.

Feature standardisation and target scaling are part of the model.  Model
files are safetensors (no pickle) with the JSON metadata in the header.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._files import file_hash  # noqa: F401  (re-exported: bigdens.bnn.file_hash)
from ._version import __version__
from .descriptors import DescriptorParams
from .errors import InputError, SetupError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Version of the model file layout; files with a larger number are refused.  Format 2 adds the
#: network kind, the cross-species descriptor block and per-region variance factors; format-1
#: files load as mean-field models without the cross block.
FORMAT_VERSION = 2
#: Network kinds (:class:`Architecture`).
KINDS = ("mean-field", "last-layer")
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

    Parameters
    ----------
    hidden : tuple of int
        Widths of the hidden layers.
    prior_sigma : float
        Standard deviation of the Gaussian prior on every weight.
    init_rho : float
        Initial ρ of the posterior scales (σ = softplus(ρ)).
    kind : {"mean-field", "last-layer"}
        ``"mean-field"`` (model format 1): every weight Bayesian, linear output;
        ``prior_sigma`` and ``init_rho`` apply.  ``"last-layer"`` (format 2): a
        deterministic trunk and a softplus density head with a Gaussian
        posterior over its last layer (see the module docstring).
    """

    hidden: tuple[int, ...] = (64, 64)
    prior_sigma: float = 1.0
    init_rho: float = -7.0
    kind: str = "mean-field"

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

    def __post_init__(self):
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


def resolve_device(request: str) -> str:
    """``"cuda"`` or ``"cpu"`` for a requested device (``"auto"`` uses CUDA when torch sees it)."""
    if request == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if request == "cuda":
        raise SetupError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return "cpu"


def _torch():
    import torch

    return torch


def _softplus(x):
    return _torch().nn.functional.softplus(x)


def _make_net(n_in: int, arch: Architecture):
    from ._nets import make_net

    return make_net(n_in, arch)


def sample_seed(seed: int, block_index: int) -> int:
    """Seed of the weight samples of one block, from the run seed and the block index."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(block_index) & 0xFFFFFFFF, SAMPLE_SALT]).generate_state(1, np.uint64)[0] >> 1)


def _cpu_chunk(samples: int, width: int) -> int:
    """Points per CPU pass: S·chunk·width float32 ≈ :data:`CPU_CHUNK_BYTES`, a multiple of 16, ≥ 16."""
    return max(16, CPU_CHUNK_BYTES // (4 * samples * width) // 16 * 16)


def _sampled_weights(net, eps, device) -> tuple[list, list]:
    """The S sampled weights of every layer, transposed for the (width × points) layout.

    Parameters
    ----------
    net
        The network (its ``layers`` hold ``w_mu, w_rho`` (in, out) and
        ``b_mu, b_rho`` (out,)).
    eps : list of (Tensor (S, in, out), Tensor (S, 1, out))
        Standard-normal noise from :meth:`DensityModel.draw_eps`.
    device
        Where the weights go.

    Returns
    -------
    weights : list of Tensor, shape (S, out, in), float32, contiguous
    biases : list of Tensor, shape (S, out, 1), float32, contiguous
        ``w = w_mu + softplus(w_rho) · eps_w``, computed exactly as the
        training code's ``forward_samples`` does, then transposed (no
        rounding).
    """
    weights, biases = [], []
    for layer, (ew, eb) in zip(net.layers, eps):
        w = layer.w_mu + _softplus(layer.w_rho) * ew.to(device)
        b = layer.b_mu + _softplus(layer.b_rho) * eb.to(device)
        weights.append(w.transpose(1, 2).contiguous().float())
        biases.append(b.transpose(1, 2).contiguous().float())
    return weights, biases


def _silu_(h) -> None:
    """SiLU in place; on the CPU through :func:`bigdens._bnn_kernels.silu_inplace` (twice torch's speed)."""
    if h.device.type == "cpu" and h.dtype == _torch().float32 and h.is_contiguous():
        from ._bnn_kernels import silu_inplace

        silu_inplace(h.numpy().reshape(-1))  # a view: writes go to h
    else:
        _torch().nn.functional.silu(h, inplace=True)


def _reduce_head(out, head, res) -> None:
    """Mean, epistemic and aleatoric variance over the samples of one chunk (scaled units).

    Parameters
    ----------
    out : Tensor, shape (S, 2, c), float32
        Network output per sample and point: predicted mean and log-variance.
    head : Tensor, shape (S, 2, c), float64
        Scratch space (overwritten).
    res : Tensor, shape (3, c), float64
        Receives avg_s μ_s, var_s μ_s (two-pass, divisor S) and
        avg_s exp(clip(logvar_s)).
    """
    torch = _torch()
    s = out.shape[0]
    head.copy_(out)
    mu, logvar = head[:, 0], head[:, 1]
    torch.sum(mu, 0, out=res[0]).div_(s)
    mu.sub_(res[0])
    torch.sum(mu.square_(), 0, out=res[1]).div_(s)
    torch.sum(logvar.clamp_(*LOGVAR_RANGE).exp_(), 0, out=res[2]).div_(s)


def _accumulate_deviations(dev, start: int, acc) -> None:
    """Add one pass's per-sample deviations into the group sums of :meth:`DensityModel.predict_grouped`.

    ``dev``: Tensor (S, c), float64, scaled units, points ``start .. start+c``;
    ``acc``: (groups (n,), weights (n,), sums (K, S)) with the weights in e/Å³ per scaled unit.
    """
    from ._charge_kernels import accumulate

    groups, weights, sums = acc
    c = dev.shape[1]
    accumulate(dev.detach().cpu().numpy(), groups[start : start + c], weights[start : start + c], sums)


def _device_features(features, dev):
    """Raw features as a float32 tensor on ``dev`` for the network passes.

    A tensor (already float32, C-contiguous and on ``dev`` after :meth:`DensityModel._predict`) is
    used as it is; an ndarray is wrapped without a copy (a read-only one is copied first: torch
    warns about those) and moved to ``dev``.
    """
    torch = _torch()
    if isinstance(features, torch.Tensor):
        return features.to(dev)
    if not features.flags.writeable:
        features = features.copy()
    return torch.from_numpy(features).to(dev)


def _empty_results(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, epistemic and aleatoric variance buffers for ``n`` points, float32."""
    return tuple(np.empty(n, dtype=np.float32) for _ in range(3))


@dataclass
class DensityModel:
    """A trained (or fresh) Bayesian density model and its metadata.

    Attributes
    ----------
    params : DescriptorParams
        Descriptor settings the model was trained with.
    arch : Architecture
    scaling : Scaling
    net : torch.nn.Module
    info : dict
        Free metadata: training data provenance, metrics, grid spacing, ...
    """

    params: DescriptorParams
    arch: Architecture
    scaling: Scaling
    net: object
    info: dict = field(default_factory=dict)

    @classmethod
    def new(cls, params: DescriptorParams, arch: Architecture, scaling: Scaling, *, seed: int = 0, info=None):
        """A model with freshly initialised weights (seeded)."""
        torch = _torch()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _make_net(params.n_features, arch)
        return cls(params=params, arch=arch, scaling=scaling, net=net, info=dict(info or {}))

    # -- scaling -----------------------------------------------------------------
    def scale_features(self, features: np.ndarray):
        torch = _torch()
        mean = np.asarray(self.scaling.feature_mean, dtype=np.float32)
        std = np.asarray(self.scaling.feature_std, dtype=np.float32)
        return torch.from_numpy((np.asarray(features, dtype=np.float32) - mean) / std)

    def scale_target(self, density: np.ndarray):
        torch = _torch()
        y = (np.asarray(density, dtype=np.float64) - self.scaling.target_mean) / self.scaling.target_std
        return torch.from_numpy(y.astype(np.float32))

    # -- prediction ----------------------------------------------------------------
    def draw_eps(self, samples: int, *, seed: int, block_index: int = 0):
        """Standard-normal weight noise for ``samples`` samples, seeded by (seed, block_index)."""
        torch = _torch()
        g = torch.Generator(device="cpu")
        g.manual_seed(sample_seed(seed, block_index))
        eps = []
        for layer in self.net.layers:
            n_in, n_out = layer.w_mu.shape
            eps.append((torch.randn(samples, n_in, n_out, generator=g), torch.randn(samples, 1, n_out, generator=g)))
        return eps

    def predict(self, features: np.ndarray | torch.Tensor, *, samples: int = 20, seed: int = 0,
                block_index: int = 0, device: str = "cpu", batch: int = 65536,
                disorder: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Monte Carlo prediction for the points of one block.

        All points share the same S weight samples, drawn by :meth:`draw_eps`
        from ``(seed, block_index)``.  With ``ρ_s`` and ``σ²_s`` the mean and
        the variance that sample s predicts at a point (after target scaling),
        the results are ``mean = avg_s ρ_s``, ``var_epistemic = var_s ρ_s``
        (population variance, divisor S) and ``var_aleatoric = avg_s σ²_s``,
        both variances times ``scaling.variance_scale``.

        The network runs in float32 in a transposed layout (width × points):
        the first layer is one GEMM ``(S·h1, F) @ (F, chunk)`` for all samples
        at once, each later layer one batched GEMM ``(S, out, in) @ (S, in,
        chunk)``, with the bias added by the GEMM, the activation (SiLU)
        applied in place and every buffer allocated once.  Only the output
        head, shape (S, 2, ≤ :data:`GROUP_POINTS`), is reduced, in float64.
        The numbers equal a per-sample loop over the network up to float32
        rounding (on the CPU, SiLU's approximation adds at most 5·10⁻⁶
        absolute per activation).

        Parameters
        ----------
        features : ndarray or torch.Tensor, shape (n_points, n_features), float32
            Raw (unscaled) descriptors of the points; other float dtypes are
            converted to float32.  A tensor (e.g. the CUDA descriptors of
            :func:`bigdens._descriptor_cuda.compute_block_cuda` wrapped by
            ``torch.as_tensor(x, device="cuda")``) is used where it lies
            and never goes through numpy: it is copied only when it is on
            another device than ``device``, not float32 or not C-contiguous.
            Its scaling and the nearest-atom distances of the variance
            factors are computed on ``device``; of the features, only those
            distances come to the host (one float32 per point; needed when
            the model has per-region factors, and always by
            :meth:`predict_grouped`).  The same values as an ndarray or as
            a CPU tensor give the same results bit for bit.
        samples
            Number S of weight samples (≥ 1), shared by all points.
        seed, block_index
            Seed the samples: the same pair gives the same numbers (bit for
            bit on the same machine, device, thread count and ``batch``).
        device
            Torch device for the matmuls ("cpu", "cuda", ...).  The model is
            moved there.
        batch
            At most this many points per pass through the network (memory:
            about ``S · batch · sum(hidden)`` float32 values, plus 24 bytes
            per point for the results).  On the CPU
            the pass is further capped so that one layer's activations fit
            :data:`CPU_CHUNK_BYTES` (400 points for S = 20 and width 64),
            which is what makes it fast; on other devices ``batch`` is
            used as given.  The thread count is torch's
            (:func:`torch.get_num_threads`); it is not changed here.
        disorder
            Bond spread of the structure the points belong to, Å
            (:func:`bigdens.thermal.bond_spread`): the aleatoric variance is
            multiplied by :meth:`Scaling.aleatoric_factor` of it.  None: factor 1.

        Returns
        -------
        mean : ndarray, shape (n_points,), float32
            Predicted density, e/Å³ (on the host, whatever ``device`` and the
            type of ``features``).
        var_epistemic, var_aleatoric : ndarray, shape (n_points,), float32
            Epistemic and aleatoric variances of the density, (e/Å³)².

        Raises
        ------
        InputError
            If ``samples`` < 1, ``batch`` < 1, or ``features`` does not have
            shape (n_points, n_features).
        """
        mean, epi, ale, _ = self._predict(features, samples=samples, seed=seed, block_index=block_index,
                                          device=device, batch=batch, disorder=disorder)
        return mean, epi, ale

    def predict_grouped(self, features: np.ndarray | torch.Tensor, groups: np.ndarray, n_groups: int, *,
                        samples: int = 20, seed: int = 0, block_index: int = 0, device: str = "cpu",
                        batch: int = 65536,
                        disorder: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict`, plus per-sample deviations summed over groups of points (per-atom charges).

        The mean, epistemic and aleatoric results are bit for bit those of
        :meth:`predict` with the same arguments.

        Parameters
        ----------
        features : ndarray or torch.Tensor, shape (n_points, n_features), float32
            As :meth:`predict` (a tensor stays on its device).
        groups : ndarray, shape (n_points,), integer
            Group (e.g. the Voronoi cell's atom) of each point, in 0..n_groups−1.
        n_groups
            Number of groups K.

        Returns
        -------
        mean, var_epistemic, var_aleatoric
            As :meth:`predict`.
        sums : ndarray, shape (n_groups, S), float64
            ``Σ_{p in group} w(p)·(ρ_s(p) − ρ̄(p))``, e/Å³ summed over points,
            where ``ρ_s`` is sample s's density, ``ρ̄`` their float64 mean
            and ``w = sqrt(variance factor)`` (``Scaling.variance_factor``
            of the point's nearest-atom distance): the calibrated per-sample
            fields ``ρ̄ + w·(ρ_s − ρ̄)`` have the epistemic variance
            :meth:`predict` returns.  Summed in float64 in point order.
            With ``groups = arange(n_points)`` they are the per-sample
            deviations of every point (a debugging aid).
        """
        groups = np.ascontiguousarray(groups, dtype=np.int32).reshape(-1)
        if len(groups) != len(features):
            raise InputError(f"groups must give one group per point ({len(features)}), got {len(groups)}")
        if len(groups) and (groups.min() < 0 or groups.max() >= n_groups):
            raise InputError(f"groups must lie in 0..{n_groups - 1}")
        return self._predict(features, samples=samples, seed=seed, block_index=block_index, device=device,
                             batch=batch, groups=(groups, int(n_groups)), disorder=disorder)

    def _predict(self, features, *, samples, seed, block_index, device, batch, groups=None, disorder=None):
        if int(samples) < 1:
            raise InputError(f"the number of Monte Carlo samples must be >= 1, got {samples!r}")
        if int(batch) < 1:
            raise InputError(f"batch (points per network pass) must be >= 1, got {batch!r}")
        torch = _torch()
        if isinstance(features, torch.Tensor):
            # Stays on its device: moved only if elsewhere, converted only if not float32 / C-contiguous.
            features = features.detach().to(device=torch.device(device), dtype=torch.float32).contiguous()
        else:
            features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.params.n_features:
            raise InputError(
                f"features must have shape (n_points, {self.params.n_features}), got {tuple(features.shape)}"
            )
        samples = int(samples)
        sums = None
        acc = None
        d_min = None  # nearest-atom distances (host, float32), computed once when needed
        if (groups is not None or self.scaling.region_scales) and len(features):
            d_min = self.nearest_distance(features)
        if groups is not None:
            sums = np.zeros((groups[1], samples))
            if len(features):
                # w = target_std · sqrt(variance factor): deviations in scaled units -> calibrated e/Å³.
                w = self.scaling.target_std * np.sqrt(self.scaling.variance_factor(d_min))
                acc = (groups[0], np.ascontiguousarray(w, dtype=np.float64), sums)
        if len(features) == 0:
            return (*_empty_results(0), sums)
        if self.arch.kind == "last-layer":
            mean, epi, ale = self._predict_last_layer(features, samples=samples, seed=seed,
                                                      block_index=block_index, device=device, batch=int(batch),
                                                      acc=acc)
        else:
            mean, epi, ale = self._predict_mean_field(features, samples=samples, seed=seed,
                                                      block_index=block_index, device=device, batch=int(batch),
                                                      acc=acc)
        if self.scaling.region_scales and len(features):
            # Per-region factors; the global factor is already in (it is part of variance_factor).
            rel = self.scaling.variance_factor(d_min) / self.scaling.variance_scale
            epi = (epi * rel).astype(np.float32)
            ale = (ale * rel).astype(np.float32)
        g = self.scaling.aleatoric_factor(disorder)
        if g != 1.0:
            ale = (ale * g).astype(np.float32)
        return mean, epi, ale, sums

    def nearest_distance(self, features) -> np.ndarray:
        """Distance (Å) from each point to its nearest atom, read off the raw descriptors.

        ``features``: ndarray or torch.Tensor, shape (n_points, n_features).  A tensor's minimum is
        taken on its device and only the result, (n_points,), is brought to the host.  Returns an
        ndarray (n_points,) of ``features``' dtype (float32 for the network's input).
        """
        cols = list(self.params.offsets)
        torch = _torch()
        if isinstance(features, torch.Tensor):
            return features.detach()[:, cols].amin(dim=1).cpu().numpy()
        return np.min(np.asarray(features)[:, cols], axis=1)

    def draw_head_eps(self, samples: int, *, seed: int, block_index: int = 0):
        """Format-2 noise for ``samples`` samples, seeded by (seed, block_index).

        Returns (S, H+1) for the last-layer posterior and two (S, F) for the extrapolation slopes
        below and above the training range, standard normal, float32, on the CPU.
        """
        torch = _torch()
        g = torch.Generator(device="cpu")
        g.manual_seed(sample_seed(seed, block_index))
        h1 = self.net.post_chol.shape[0]
        f = self.params.n_features
        return (torch.randn(samples, h1, generator=g), torch.randn(samples, f, generator=g),
                torch.randn(samples, f, generator=g))

    def _predict_last_layer(self, features, *, samples: int, seed: int, block_index: int,
                            device: str, batch: int, acc=None):
        """Format 2 (see the module docstring): trunk once per point, S samples of the head only.

        For sample s with last-layer noise ε_s and slope noise η_s,
        ``z_s = z̄ + [φ, 1]·(L ε_s) + e_lo·(g_lo ∘ η_lo,s) + e_hi·(g_hi ∘ η_hi,s)`` and
        ``ρ_s = target_std · softplus(z_s)``; mean and epistemic variance over s (float64
        reduction, divisor S), aleatoric ``target_std² · exp(clip(logvar))``.
        """
        torch = _torch()
        n = len(features)
        mean, epi, ale = _empty_results(n)
        dev = torch.device(device)
        net = self.net.to(dev)
        ts, tm = self.scaling.target_std, self.scaling.target_mean
        vs = ts * ts * self.scaling.variance_scale
        chunk = min(batch, LAST_LAYER_CHUNK if dev.type == "cpu" else batch, n)
        with torch.inference_mode():
            e_w, e_lo, e_hi = self.draw_head_eps(samples, seed=seed, block_index=block_index)
            delta = (net.post_chol.double() @ e_w.double().T).float().to(dev)  # (H+1, S)
            d_w, d_b = delta[:-1].contiguous(), delta[-1]
            g_lo = (net.slope_lo[:, None] * e_lo.T.to(dev)).contiguous()  # (F, S)
            g_hi = (net.slope_hi[:, None] * e_hi.T.to(dev)).contiguous()
            f_mean = torch.tensor(self.scaling.feature_mean, dtype=torch.float32, device=dev)
            f_std = torch.tensor(self.scaling.feature_std, dtype=torch.float32, device=dev)
            feats = _device_features(features, dev)
            res = torch.empty(3, n, dtype=torch.float64, device=dev)
            head = net.layers[-1]
            for a in range(0, n, chunk):
                x = (feats[a : a + chunk] - f_mean) / f_std
                phi = x
                for layer in net.layers[:-1]:
                    phi = torch.addmm(layer.bias, phi, layer.weight.T)
                    _silu_(phi)
                out = torch.addmm(head.bias, phi, head.weight.T)
                z = torch.addmm(d_b, phi, d_w).add_(out[:, :1])  # (c, S)
                lo, hi = net.excess(x)
                rows = torch.nonzero((lo.amax(1) > 0) | (hi.amax(1) > 0)).flatten()
                if len(rows):
                    z[rows] += lo[rows] @ g_lo + hi[rows] @ g_hi
                rho = torch.nn.functional.softplus(z).double()
                r = res[:, a : a + chunk]
                torch.mean(rho, 1, out=r[0])
                rho.sub_(r[0][:, None])
                if acc is not None:
                    _accumulate_deviations(rho.T, a, acc)
                torch.sum(rho.square_(), 1, out=r[1]).div_(samples)
                torch.exp(out[:, 1].double().clamp_(*LOGVAR_RANGE), out=r[2])
            res[0].mul_(ts).add_(tm)
            res[1:].mul_(vs)
            res = res.cpu()
            for arr, row in zip((mean, epi, ale), res):
                torch.from_numpy(arr).copy_(row)
        return mean, epi, ale

    def _predict_mean_field(self, features, *, samples: int, seed: int, block_index: int,
                            device: str, batch: int, acc=None):
        """Format 1: every layer sampled (the transposed, cache-sized layout described in :meth:`predict`)."""
        torch = _torch()
        n = len(features)
        mean, epi, ale = _empty_results(n)
        dev = torch.device(device)
        net = self.net.to(dev)
        widths = [layer.w_mu.shape[1] for layer in net.layers]
        chunk = int(batch)
        if dev.type == "cpu":
            chunk = min(chunk, _cpu_chunk(samples, max(widths[:-1])))
        chunk = min(chunk, n)
        ts, tm = self.scaling.target_std, self.scaling.target_mean
        vs = ts * ts * self.scaling.variance_scale
        group = min(chunk * max(1, GROUP_POINTS // chunk), n)  # points scaled and reduced together
        with torch.inference_mode():
            weights, biases = _sampled_weights(net, self.draw_eps(samples, seed=seed, block_index=block_index), dev)
            w0 = weights[0].reshape(-1, weights[0].shape[-1])  # (S·h1, F): all samples in one GEMM
            b0 = biases[0].reshape(-1, 1)
            f_mean = torch.tensor(self.scaling.feature_mean, dtype=torch.float32, device=dev)[:, None]
            f_std = torch.tensor(self.scaling.feature_std, dtype=torch.float32, device=dev)[:, None]
            feats = _device_features(features, dev)
            # Buffers, allocated once: scaled inputs (F, group); per layer (S, width, chunk); the
            # outputs of a group (S, 2, group) and their float64 copy; the results (3, n), scaled.
            x_buf = torch.empty(features.shape[1], group, device=dev)
            bufs = [torch.empty(samples * w * chunk, device=dev) for w in widths]
            out_buf = torch.empty(samples, widths[-1], group, device=dev)
            head = torch.empty(samples, widths[-1], group, dtype=torch.float64, device=dev)
            res = torch.empty(3, n, dtype=torch.float64, device=dev)
            for g in range(0, n, group):
                gc = min(group, n - g)
                xs = x_buf[:, :gc]
                torch.sub(feats[g : g + gc].T, f_mean, out=xs)  # the float32 ops of scale_features
                xs.div_(f_std)
                for a in range(0, gc, chunk):
                    c = min(chunk, gc - a)
                    h = torch.addmm(b0, w0, xs[:, a : a + c], out=bufs[0][: w0.shape[0] * c].view(w0.shape[0], c))
                    h = h.view(samples, widths[0], c)
                    for i in range(1, len(weights)):
                        _silu_(h)
                        # A contiguous ``out``: torch loops over the samples for a strided one.
                        h = torch.baddbmm(biases[i], weights[i], h,
                                          out=bufs[i][: samples * widths[i] * c].view(samples, widths[i], c))
                    out_buf[:, :, a : a + c] = h
                _reduce_head(out_buf[:, :, :gc], head[:, :, :gc], res[:, g : g + gc])
                if acc is not None:  # the samples' deviations from the mean (float64, scaled units)
                    dev = torch.sub(out_buf[:, 0, :gc], res[0, g : g + gc], out=head[:, 0, :gc])
                    _accumulate_deviations(dev, g, acc)
            res[0].mul_(ts).add_(tm)
            res[1:].mul_(vs)
            res = res.cpu()
            for arr, row in zip((mean, epi, ale), res):
                torch.from_numpy(arr).copy_(row)  # float64 -> float32, rounded to nearest
        return mean, epi, ale

    # -- files -----------------------------------------------------------------------
    def metadata(self) -> dict:
        return {
            "format": "bigdens-model",
            "format_version": FORMAT_VERSION,
            "bigdens_version": __version__,
            "descriptor": self.params.to_dict(),
            "architecture": asdict(self.arch),
            "scaling": asdict(self.scaling),
            "info": self.info,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as one safetensors file (float32 weights, JSON metadata)."""
        from safetensors.torch import save

        from ._files import write_bytes

        path = Path(path)
        tensors = {k: v.detach().to("cpu", dtype=_torch().float32).contiguous() for k, v in self.net.state_dict().items()}
        write_bytes(path, save(tensors, metadata={METADATA_KEY: json.dumps(self.metadata())}))
        return path


#: Quantile of the validation data's epistemic σ above which a predicted point counts as
#: unlike anything the model was checked on (stored in the model by :func:`bigdens.train.calibrate`).
EPISTEMIC_QUANTILE = 0.999


def epistemic_threshold(model: DensityModel) -> float | None:
    """The epistemic σ (e/Å³) above which a point is unlike the model's validation data, or None."""
    ref = model.info.get("epistemic_reference")
    if not isinstance(ref, dict) or EPISTEMIC_QUANTILE not in ref.get("quantiles", ()):
        return None
    return float(ref["std"][ref["quantiles"].index(EPISTEMIC_QUANTILE)])


def load(path: str | Path) -> DensityModel:
    """Read a model file written by :meth:`DensityModel.save`.

    Nothing is unpickled: the file is safetensors, whose header is JSON.

    Raises
    ------
    InputError
        If the file is missing, not a bigdens model, truncated or corrupt, or
        written by a newer incompatible bigdens.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise InputError(f"model {str(path)!r} is a folder; give the model file (.safetensors) written by "
                         "`bigdens train`")
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_raw = (f.metadata() or {}).get(METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        with open(path, "rb") as fh:
            head = fh.read(2)
        # A pickle (torch.save) starts with the protocol opcode 0x80; a zip (torch.save) with PK.
        kind = " (it looks like a pickle/torch.save file, which bigdens never loads)" if head[:1] == b"\x80" or head == b"PK" else ""
        raise InputError(f"{str(path)!r} is not a readable bigdens model file{kind}: bigdens models are "
                         f".safetensors files written by `bigdens train` (safetensors: {exc})") from None
    if meta_raw is None:
        raise InputError(f"{str(path)!r} is a safetensors file but not a bigdens model (no {METADATA_KEY!r} metadata)")
    try:
        meta = json.loads(meta_raw)
        version = int(meta["format_version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{str(path)!r} has corrupt bigdens metadata ({exc})") from None
    if version > FORMAT_VERSION:
        raise InputError(
            f"{str(path)!r} was written by bigdens {meta.get('bigdens_version', '?')} in model format "
            f"{version}; this bigdens ({__version__}) reads format {FORMAT_VERSION} at most: upgrade bigdens"
        )
    try:
        params = DescriptorParams.from_dict(meta["descriptor"])
        arch = Architecture(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["architecture"].items()})
        if version < 2 and (arch.kind != "mean-field" or params.cross):
            raise ValueError("a format-1 file can hold only a mean-field network without the cross-species block")
        sc = meta["scaling"]
        scaling = Scaling(feature_mean=tuple(sc["feature_mean"]), feature_std=tuple(sc["feature_std"]),
                          target_mean=float(sc["target_mean"]), target_std=float(sc["target_std"]),
                          variance_scale=float(sc.get("variance_scale", 1.0)),
                          region_edges=tuple(sc.get("region_edges", ())),
                          region_scales=tuple(sc.get("region_scales", ())),
                          disorder_reference=float(sc.get("disorder_reference", 0.0)),
                          disorder_slope=float(sc.get("disorder_slope", 0.0)),
                          disorder_floor=float(sc.get("disorder_floor", 0.0)))
        if len(scaling.feature_mean) != params.n_features or len(scaling.feature_std) != params.n_features:
            raise ValueError("feature scaling does not match the descriptor size")
        model = DensityModel(params=params, arch=arch, scaling=scaling,
                             net=_make_net(params.n_features, arch), info=meta.get("info", {}))
        model.net.load_state_dict(tensors, strict=True)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{str(path)!r} has inconsistent bigdens metadata or weights ({type(exc).__name__}: {exc})") from None
    for k, v in tensors.items():
        if not _torch().isfinite(v).all():
            raise InputError(f"{str(path)!r} holds non-finite weights in {k!r}")
    return model
