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

The package's modules: :mod:`~bigdens.bnn.settings` (:class:`Architecture`, :class:`Scaling`, the
format's and the prediction's constants), :mod:`~bigdens.bnn.sampling` (device, seeds, sampled weights,
the steps of a network pass), :mod:`~bigdens.bnn.prediction` (the mean-field and last-layer passes),
:mod:`~bigdens.bnn.model` (:class:`DensityModel`, writing its file) and :mod:`~bigdens.bnn.modelfile`
(:func:`load`, :func:`epistemic_threshold`).  Every name is importable from ``bigdens.bnn``.
"""

from __future__ import annotations

# The names other modules, tests and benchmarks use, from the modules that define them (private helpers
# too: they were importable from the former single module; benchmarks use _cpu_chunk).
from .._files import file_hash  # noqa: F401  (re-exported: bigdens.bnn.file_hash)
from .model import DensityModel
from .modelfile import EPISTEMIC_QUANTILE, epistemic_threshold, load
from .sampling import (  # noqa: F401
    _accumulate_deviations, _cpu_chunk, _device_features, _empty_results, _make_net, _reduce_head, _sampled_weights,
    _silu_, _softplus, _torch, resolve_device, sample_seed,
)
from .settings import (
    CPU_CHUNK_BYTES, DISORDER_FACTOR_MIN, FORMAT_VERSION, GROUP_POINTS, KINDS, LAST_LAYER_CHUNK, LOGVAR_RANGE,
    METADATA_KEY, REGION_EDGES, REGION_MIN_POINTS, SAMPLE_SALT, Architecture, Scaling,
)

__all__ = [
    "CPU_CHUNK_BYTES", "DISORDER_FACTOR_MIN", "EPISTEMIC_QUANTILE", "FORMAT_VERSION", "GROUP_POINTS", "KINDS",
    "LAST_LAYER_CHUNK", "LOGVAR_RANGE", "METADATA_KEY", "REGION_EDGES", "REGION_MIN_POINTS", "SAMPLE_SALT",
    "Architecture", "DensityModel", "Scaling", "epistemic_threshold", "file_hash", "load", "resolve_device",
    "sample_seed",
]
