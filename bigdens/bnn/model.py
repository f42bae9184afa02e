"""The density model (:class:`DensityModel`): weights, scaling and metadata, Monte Carlo prediction
and writing the model file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..descriptors import DescriptorParams
from ..errors import InputError
from .prediction import predict_last_layer, predict_mean_field
from .sampling import _empty_results, _make_net, _torch, sample_seed
from .settings import FORMAT_VERSION, FORMAT_VERSION_NO_SIGMA_MAP, METADATA_KEY, Architecture, Scaling

if TYPE_CHECKING:  # pragma: no cover
    import torch


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
            Last, a model with a σ map (format 3) multiplies both variances by
            :meth:`Scaling.sigma_ratio` ² of the point's total σ.

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
            :meth:`predict` returns before the σ map (format 3), which is a
            per-point recalibration of σ and does not enter these sums.  Summed in float64 in point order.
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
        if self.scaling.sigma_knots:
            # The σ map (format 3) scales both variances alike; the per-group sums keep the factors above.
            r2 = self.scaling.sigma_ratio(np.sqrt(epi.astype(np.float64) + ale)) ** 2
            epi = (epi * r2).astype(np.float32)
            ale = (ale * r2).astype(np.float32)
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
        """Format 2: :func:`bigdens.bnn.prediction.predict_last_layer` of this model."""
        noise = self.draw_head_eps(samples, seed=seed, block_index=block_index)
        return predict_last_layer(self.net, self.scaling, features, noise, device=device, batch=batch, acc=acc)

    def _predict_mean_field(self, features, *, samples: int, seed: int, block_index: int,
                            device: str, batch: int, acc=None):
        """Format 1: :func:`bigdens.bnn.prediction.predict_mean_field` of this model."""
        eps = self.draw_eps(samples, seed=seed, block_index=block_index)
        return predict_mean_field(self.net, self.scaling, features, eps, device=device, batch=batch, acc=acc)

    # -- files -----------------------------------------------------------------------
    def metadata(self) -> dict:
        """The file's JSON metadata (without ``tensor_digest``, which :meth:`save` adds); a model without a σ map
        is written as format 2, field for field."""
        scaling = asdict(self.scaling)
        if not self.scaling.sigma_knots:
            del scaling["sigma_knots"], scaling["sigma_log_ratios"]
        return {
            "format": "bigdens-model",
            "format_version": FORMAT_VERSION if self.scaling.sigma_knots else FORMAT_VERSION_NO_SIGMA_MAP,
            "bigdens_version": __version__,
            "descriptor": self.params.to_dict(),
            "architecture": asdict(self.arch),
            "scaling": scaling,
            "info": self.info,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as one safetensors file (float32 weights, JSON metadata)."""
        from safetensors.torch import save

        from .._files import write_bytes

        path = Path(path)
        tensors = {k: v.detach().to("cpu", dtype=_torch().float32).contiguous() for k, v in self.net.state_dict().items()}
        meta = {**self.metadata(), "tensor_digest": tensor_digest(tensors)}
        write_bytes(path, save(tensors, metadata={METADATA_KEY: json.dumps(meta)}))
        return path


def tensor_digest(tensors: dict) -> str:
    """blake2b-128 (hex) of a model's weights: every tensor's name, dtype, shape and bytes, by name.

    Written into a model file by :meth:`DensityModel.save` and checked by :func:`bigdens.bnn.load`, so that
    a flipped bit in the weights (which a safetensors file does not notice) refuses the file.
    """
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
