"""The prediction passes of the two network kinds (:meth:`DensityModel.predict <bigdens.bnn.model.DensityModel.predict>`
calls them): format 2 (last-layer) and format 1 (mean-field), on scaled-unit buffers, results in e/Å³.

Each pass takes the network, its :class:`~bigdens.bnn.settings.Scaling` and the weight noise already
drawn, not the model: the model calls the passes, the passes know nothing of the model."""

from __future__ import annotations

import numpy as np

from .sampling import (_accumulate_deviations, _cpu_chunk, _device_features, _empty_results, _reduce_head,
                       _sampled_weights, _silu_, _torch)
from .settings import GROUP_POINTS, LAST_LAYER_CHUNK, LOGVAR_RANGE, Scaling


def predict_last_layer(net, scaling: Scaling, features, noise, *, device: str, batch: int, acc=None):
    """Format 2 (see :mod:`bigdens.bnn`): trunk once per point, S samples of the head only.

    For sample s with last-layer noise ε_s and slope noise η_s,
    ``z_s = z̄ + [φ, 1]·(L ε_s) + e_lo·(g_lo ∘ η_lo,s) + e_hi·(g_hi ∘ η_hi,s)`` and
    ``ρ_s = target_std · softplus(z_s)``; mean and epistemic variance over s (float64
    reduction, divisor S), aleatoric ``target_std² · exp(clip(logvar))``.

    Returns mean, var_epistemic and var_aleatoric, each ndarray (n_points,), float32, e/Å³ and (e/Å³)²,
    with ``variance_scale`` applied (the per-region and disorder factors are applied by the caller,
    :meth:`DensityModel._predict <bigdens.bnn.model.DensityModel._predict>`).  ``acc``: as
    :func:`~bigdens.bnn.sampling._accumulate_deviations` (None: no per-group sums).
    ``features``: the raw descriptors, (n_points, n_features) float32, an ndarray or a tensor on ``device``
    (as :meth:`DensityModel._predict <bigdens.bnn.model.DensityModel._predict>` leaves them).
    ``net``: the format-2 network (moved to ``device``); ``scaling``: the model's;
    ``noise``: ``(e_w, e_lo, e_hi)`` of :meth:`DensityModel.draw_head_eps
    <bigdens.bnn.model.DensityModel.draw_head_eps>`, whose first dimension is S.
    """
    torch = _torch()
    n = len(features)
    mean, epi, ale = _empty_results(n)
    dev = torch.device(device)
    net = net.to(dev)
    e_w, e_lo, e_hi = noise
    samples = e_w.shape[0]
    ts, tm = scaling.target_std, scaling.target_mean
    vs = ts * ts * scaling.variance_scale
    chunk = min(batch, LAST_LAYER_CHUNK if dev.type == "cpu" else batch, n)
    with torch.inference_mode():
        delta = (net.post_chol.double() @ e_w.double().T).float().to(dev)  # (H+1, S)
        d_w, d_b = delta[:-1].contiguous(), delta[-1]
        g_lo = (net.slope_lo[:, None] * e_lo.T.to(dev)).contiguous()  # (F, S)
        g_hi = (net.slope_hi[:, None] * e_hi.T.to(dev)).contiguous()
        f_mean = torch.tensor(scaling.feature_mean, dtype=torch.float32, device=dev)
        f_std = torch.tensor(scaling.feature_std, dtype=torch.float32, device=dev)
        feats = _device_features(features, dev)
        res = torch.empty(3, n, dtype=torch.float64, device=dev)
        head = net.layers[-1]
        # One GEMM gives the head's two outputs and the S samples' offsets of z: (H, 2 + S).
        w_cat = torch.cat([head.weight, d_w.T]).T.contiguous()
        b_cat = torch.cat([head.bias, d_b])
        for a in range(0, n, chunk):
            x = (feats[a : a + chunk] - f_mean) / f_std
            phi = x
            for layer in net.layers[:-1]:
                phi = torch.addmm(layer.bias, phi, layer.weight.T)
                _silu_(phi)
            out = torch.addmm(b_cat, phi, w_cat)  # (c, 2 + S): z̄, log-variance, z_s − z̄
            rows = _outside_rows(net, x)
            if len(rows):  # the extrapolation term, on the rows outside the training range only
                xr = x[rows]
                lo = (net.range_lo - xr).clamp_min_(0)
                hi = (xr - net.range_hi).clamp_min_(0)
                out[rows, 2:] += lo @ g_lo + hi @ g_hi
            rho = torch.nn.functional.softplus(out[:, 2:] + out[:, :1]).double()  # (c, S)
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


def _outside_rows(net, x):
    """Rows of the scaled features ``x`` (c, F) with a feature outside the training range, int64.

    On the CPU one numba pass (:func:`bigdens._bnn_kernels.outside_mask`); elsewhere torch.  The
    excess beyond the range is then computed for those rows only (most rows have none).
    """
    torch = _torch()
    if x.device.type == "cpu":
        from .._bnn_kernels import outside_mask

        mask = outside_mask(x.numpy(), net.range_lo.numpy(), net.range_hi.numpy())
        return torch.from_numpy(np.flatnonzero(mask))
    return torch.nonzero(((x < net.range_lo) | (x > net.range_hi)).any(1)).flatten()


def predict_mean_field(net, scaling: Scaling, features, eps, *, device: str, batch: int, acc=None):
    """Format 1: every layer sampled (the transposed, cache-sized layout described in
    :meth:`DensityModel.predict <bigdens.bnn.model.DensityModel.predict>`).

    ``eps``: the weight noise of :meth:`DensityModel.draw_eps <bigdens.bnn.model.DensityModel.draw_eps>`
    (S samples).  Returns, ``features`` and ``acc`` as :func:`predict_last_layer`.
    """
    torch = _torch()
    n = len(features)
    mean, epi, ale = _empty_results(n)
    dev = torch.device(device)
    net = net.to(dev)
    samples = eps[0][0].shape[0]
    widths = [layer.w_mu.shape[1] for layer in net.layers]
    chunk = int(batch)
    if dev.type == "cpu":
        chunk = min(chunk, _cpu_chunk(samples, max(widths[:-1])))
    chunk = min(chunk, n)
    ts, tm = scaling.target_std, scaling.target_mean
    vs = ts * ts * scaling.variance_scale
    group = min(chunk * max(1, GROUP_POINTS // chunk), n)  # points scaled and reduced together
    with torch.inference_mode():
        weights, biases = _sampled_weights(net, eps, dev)
        w0 = weights[0].reshape(-1, weights[0].shape[-1])  # (S·h1, F): all samples in one GEMM
        b0 = biases[0].reshape(-1, 1)
        f_mean = torch.tensor(scaling.feature_mean, dtype=torch.float32, device=dev)[:, None]
        f_std = torch.tensor(scaling.feature_std, dtype=torch.float32, device=dev)[:, None]
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
