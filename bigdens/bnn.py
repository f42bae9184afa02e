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

Feature standardisation and target scaling are part of the model.  Model
files are safetensors (no pickle) with the JSON metadata in the header.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .descriptors import DescriptorParams
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Version of the model file layout; files with a larger number are refused.
FORMAT_VERSION = 1
#: Key of the JSON metadata in the safetensors header.
METADATA_KEY = "bigdens"
#: Log-variance of the aleatoric head is clipped to this range (scaled units).
LOGVAR_RANGE = (-16.0, 4.0)


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
    """

    hidden: tuple[int, ...] = (64, 64)
    prior_sigma: float = 1.0
    init_rho: float = -7.0

    def __post_init__(self):
        hidden = tuple(int(h) for h in self.hidden)
        if not hidden or min(hidden) < 1:
            raise InputError(f"hidden layer widths must be positive integers, got {self.hidden!r}")
        if not self.prior_sigma > 0:
            raise InputError(f"prior_sigma must be > 0, got {self.prior_sigma!r}")
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

    @classmethod
    def fit(cls, features: np.ndarray, density: np.ndarray) -> "Scaling":
        """From training features (n, F) and densities (n,) e/Å³."""
        mean = features.mean(axis=0, dtype=np.float64)
        std = features.std(axis=0, dtype=np.float64)
        std = np.where(std > 1e-6, std, 1.0)  # constant columns (padding) stay as they are
        return cls(
            feature_mean=tuple(float(v) for v in mean),
            feature_std=tuple(float(v) for v in std),
            target_mean=float(np.mean(density, dtype=np.float64)),
            target_std=float(np.std(density, dtype=np.float64)) or 1.0,
        )


def _torch():
    import torch

    return torch


def _softplus(x):
    return _torch().nn.functional.softplus(x)


def _make_net(n_in: int, arch: Architecture):
    torch = _torch()
    nn = torch.nn

    class BayesLinear(nn.Module):
        """Linear layer with a mean-field Gaussian posterior on weights and bias."""

        def __init__(self, n_in: int, n_out: int):
            super().__init__()
            bound = 1.0 / math.sqrt(n_in)
            self.w_mu = nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound))
            self.w_rho = nn.Parameter(torch.full((n_in, n_out), arch.init_rho))
            self.b_mu = nn.Parameter(torch.zeros(n_out))
            self.b_rho = nn.Parameter(torch.full((n_out,), arch.init_rho))

        def kl(self) -> "torch.Tensor":
            ps = arch.prior_sigma
            total = 0.0
            for mu, rho in ((self.w_mu, self.w_rho), (self.b_mu, self.b_rho)):
                s = _softplus(rho)
                total = total + (math.log(ps) - torch.log(s) + (s * s + mu * mu) / (2 * ps * ps) - 0.5).sum()
            return total

        def forward_lrt(self, x):
            # Local reparameterisation (training): sample pre-activations, not weights.
            mean = x @ self.w_mu + self.b_mu
            var = (x * x) @ _softplus(self.w_rho) ** 2 + _softplus(self.b_rho) ** 2
            return mean + torch.sqrt(var + 1e-16) * torch.randn_like(mean)

        def forward_samples(self, x, eps_w, eps_b):
            # x: (S, N, in) or (N, in); eps_w: (S, in, out); eps_b: (S, 1, out).
            w = self.w_mu + _softplus(self.w_rho) * eps_w
            b = self.b_mu + _softplus(self.b_rho) * eps_b
            if x.dim() == 2:
                return torch.matmul(x, w) + b  # broadcasts to (S, N, out)
            return torch.baddbmm(b, x, w)

        def forward_mean(self, x):
            return x @ self.w_mu + self.b_mu

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [n_in, *arch.hidden, 2]
            self.layers = nn.ModuleList(BayesLinear(a, b) for a, b in zip(widths[:-1], widths[1:]))

        def kl(self):
            return sum(layer.kl() for layer in self.layers)

        def forward(self, x):
            # Training pass (one stochastic forward, local reparameterisation); (N, 2).
            for i, layer in enumerate(self.layers):
                x = layer.forward_lrt(x)
                if i < len(self.layers) - 1:
                    x = torch.nn.functional.silu(x)
            return x

        def forward_mean(self, x):
            for i, layer in enumerate(self.layers):
                x = layer.forward_mean(x)
                if i < len(self.layers) - 1:
                    x = torch.nn.functional.silu(x)
            return x

        def forward_samples(self, x, eps):
            # eps: list of (eps_w, eps_b) per layer; returns (S, N, 2).
            for i, (layer, (ew, eb)) in enumerate(zip(self.layers, eps)):
                x = layer.forward_samples(x, ew, eb)
                if i < len(self.layers) - 1:
                    x = torch.nn.functional.silu(x)
            return x

    return Net()


def sample_seed(seed: int, block_index: int) -> int:
    """Seed of the weight samples of one block, from the run seed and the block index."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(block_index) & 0xFFFFFFFF, 0xB16D]).generate_state(1, np.uint64)[0] >> 1)


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

    def predict(self, features: np.ndarray, *, samples: int = 20, seed: int = 0, block_index: int = 0,
                device: str = "cpu", batch: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Monte Carlo prediction for the points of one block.

        Parameters
        ----------
        features : ndarray, shape (n_points, n_features), float32
        samples
            Number S of weight samples (≥ 1), shared by all points.
        seed, block_index
            Seed the samples: the same pair gives the same numbers.
        device
            Torch device for the matmuls ("cpu", "cuda", ...).
        batch
            Points per batched matmul (memory: S·batch·width floats).

        Returns
        -------
        mean, var_epistemic, var_aleatoric : ndarray, shape (n_points,), float32
            Density e/Å³ and variances (e/Å³)².
        """
        torch = _torch()
        if int(samples) < 1:
            raise InputError(f"the number of Monte Carlo samples must be >= 1, got {samples!r}")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.params.n_features:
            raise InputError(
                f"features must have shape (n_points, {self.params.n_features}), got {features.shape}"
            )
        eps = [(w.to(device), b.to(device)) for w, b in self.draw_eps(int(samples), seed=seed, block_index=block_index)]
        net = self.net.to(device)
        n = len(features)
        mean = np.empty(n, dtype=np.float32)
        epi = np.empty(n, dtype=np.float32)
        ale = np.empty(n, dtype=np.float32)
        ts, tm = self.scaling.target_std, self.scaling.target_mean
        vs = ts * ts * self.scaling.variance_scale
        with torch.inference_mode():
            for a in range(0, n, batch):
                x = self.scale_features(features[a : a + batch]).to(device)
                out = net.forward_samples(x, eps)  # (S, N, 2)
                mu = out[..., 0].double()
                logvar = out[..., 1].double().clamp(*LOGVAR_RANGE)
                mean[a : a + batch] = (mu.mean(dim=0) * ts + tm).cpu().numpy()
                epi[a : a + batch] = (mu.var(dim=0, unbiased=False) * vs).cpu().numpy()
                ale[a : a + batch] = (logvar.exp().mean(dim=0) * vs).cpu().numpy()
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
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: v.detach().to("cpu", dtype=_torch().float32).contiguous() for k, v in self.net.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(self.metadata())})
        tmp.replace(path)
        return path


def file_hash(path: str | Path) -> str:
    """sha256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_raw = (f.metadata() or {}).get(METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{str(path)!r} is not a readable bigdens model file (safetensors: {exc})") from None
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
        sc = meta["scaling"]
        scaling = Scaling(feature_mean=tuple(sc["feature_mean"]), feature_std=tuple(sc["feature_std"]),
                          target_mean=float(sc["target_mean"]), target_std=float(sc["target_std"]),
                          variance_scale=float(sc.get("variance_scale", 1.0)))
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
