"""Building blocks of a prediction: the device, the Monte Carlo seed, the sampled weights and the
in-place steps of a network pass (activation, head reduction, per-group deviations, buffers)."""

from __future__ import annotations

import numpy as np

from ..errors import SetupError
from .settings import CPU_CHUNK_BYTES, LOGVAR_RANGE, SAMPLE_SALT, Architecture


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
    from .._nets import make_net

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
        from .._bnn_kernels import silu_inplace

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
    from .._charge_kernels import accumulate

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
