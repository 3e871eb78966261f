"""Direct NumPy reference for convolution and pooling over any number of spatial dims.

The oracle of the 1-d/3-d and adaptive tests: written from the definitions, independent of
the 2-d ops that the public N-d ops run on. Every function takes batched (N, C, *spatial)
arrays and explicit per-dimension tuples; no validation (the tests pass valid calls).

Convolutions are sums over kernel taps of einsums on strided slices of the zero-padded input;
pools scan the taps of each window in row-major order with PyTorch's rule (a tap replaces the
running maximum when it is greater or NaN); adaptive pools loop over the output bins.
"""
from __future__ import annotations

import itertools

import numpy as np

from ._reference import ieee_sums


def _taps(kernel):
    return itertools.product(*(range(k) for k in kernel))


def _tap_slices(tap, dilation, stride, out):
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dilation, stride, out))


def _s(spatial):
    """einsum letters for the spatial dims."""
    return "xyz"[:len(spatial)]


def _grouped(a, groups):
    """(N, C, *S) -> (N, G, C/G, *S)."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, *a.shape[2:])


def conv_out_size(size, before, after, kernel, dilation, stride):
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

@ieee_sums
def conv(x, w, b, stride, pads, dilation, groups):
    """x (N, C, *S), w (O, C/G, *K), pads ((before, after), ...) -> (N, O, *out)."""
    kernel = w.shape[2:]
    out = [conv_out_size(n, a, z, k, d, s) for n, (a, z), k, d, s in zip(x.shape[2:], pads, kernel, dilation, stride)]
    xp = _grouped(np.pad(x, ((0, 0), (0, 0)) + tuple(pads)), groups)
    wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    y = np.zeros((x.shape[0], groups, w.shape[0] // groups, *out), x.dtype)
    for tap in _taps(kernel):
        window = xp[(Ellipsis,) + _tap_slices(tap, dilation, stride, out)]
        y += np.einsum("ngc...,goc->ngo...", window, wg[(Ellipsis,) + tap])
    y = y.reshape(x.shape[0], w.shape[0], *out)
    if b is not None:
        y += b.reshape((1, -1) + (1,) * len(out))
    return y


@ieee_sums
def conv_backward(gy, x, w, stride, pads, dilation, groups):
    """Gradients of :func:`conv`: (grad_input, grad_weight, grad_bias)."""
    kernel, out = w.shape[2:], gy.shape[2:]
    xp = _grouped(np.pad(x, ((0, 0), (0, 0)) + tuple(pads)), groups)
    wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    gyg = _grouped(gy, groups)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(wg)
    for tap in _taps(kernel):
        sl = (Ellipsis,) + _tap_slices(tap, dilation, stride, out)
        gxp[sl] += np.einsum("ngo...,goc->ngc...", gyg, wg[(Ellipsis,) + tap])
        gw[(Ellipsis,) + tap] = np.einsum(f"ngc{_s(out)},ngo{_s(out)}->goc", xp[sl], gyg)
    crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, x.shape[2:]))
    gx = gxp.reshape(xp.shape[0], -1, *xp.shape[3:])[(slice(None), slice(None)) + crop]
    return gx, gw.reshape(w.shape), gy.sum(axis=(0,) + tuple(range(2, gy.ndim)))


def _transpose_full_size(size, kernel, dilation, stride):
    return (size - 1) * stride + dilation * (kernel - 1) + 1


@ieee_sums
def conv_transpose(x, w, b, stride, padding, output_padding, dilation, groups):
    """Scatter form: each input pixel adds ``x * w`` at ``i*stride + t*dilation``; then the
    ``padding`` border is cut off and ``output_padding`` appended. x (N, Ci, *S), w (Ci, Co/G, *K)."""
    kernel, size = w.shape[2:], x.shape[2:]
    full = [_transpose_full_size(n, k, d, s) for n, k, d, s in zip(size, kernel, dilation, stride)]
    wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    xg = _grouped(x, groups)
    extra = [max(0, op - p) for p, op in zip(padding, output_padding)]
    yf = np.zeros((x.shape[0], groups, w.shape[1], *(f + e for f, e in zip(full, extra))), x.dtype)
    for tap in _taps(kernel):
        yf[(Ellipsis,) + _tap_slices(tap, dilation, stride, size)] += np.einsum(
            "ngc...,gco->ngo...", xg, wg[(Ellipsis,) + tap])
    out = [f - 2 * p + op for f, p, op in zip(full, padding, output_padding)]
    y = yf.reshape(x.shape[0], -1, *yf.shape[3:])[(slice(None), slice(None)) +
                                                  tuple(slice(p, p + o) for p, o in zip(padding, out))]
    y = np.ascontiguousarray(y)
    if b is not None:
        y += b.reshape((1, -1) + (1,) * len(out))
    return y


@ieee_sums
def conv_transpose_backward(gy, x, w, stride, padding, output_padding, dilation, groups):
    """Gradients of :func:`conv_transpose`: (grad_input, grad_weight, grad_bias)."""
    kernel, size = w.shape[2:], x.shape[2:]
    full = [_transpose_full_size(n, k, d, s) for n, k, d, s in zip(size, kernel, dilation, stride)]
    extra = [max(0, op - p) for p, op in zip(padding, output_padding)]
    gf = np.zeros((gy.shape[0], gy.shape[1], *(f + e for f, e in zip(full, extra))), gy.dtype)
    gf[(slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(padding, gy.shape[2:]))] = gy
    gfg = _grouped(gf, groups)
    wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
    xg = _grouped(x, groups)
    gx = np.zeros_like(xg)
    gw = np.zeros_like(wg)
    for tap in _taps(kernel):
        window = gfg[(Ellipsis,) + _tap_slices(tap, dilation, stride, size)]
        gx += np.einsum("ngo...,gco->ngc...", window, wg[(Ellipsis,) + tap])
        gw[(Ellipsis,) + tap] = np.einsum(f"ngc{_s(size)},ngo{_s(size)}->gco", xg, window)
    return gx.reshape(x.shape), gw.reshape(w.shape), gy.sum(axis=(0,) + tuple(range(2, gy.ndim)))


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

def pool_out_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's rule; under ceil_mode the last window must start inside the input or left padding."""
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1
    out = -(-numerator // stride) + 1 if ceil_mode else numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_frame(x, kernel, stride, padding, dilation, ceil_mode, fill):
    """Pad the spatial dims by ``padding`` plus whatever the last ceil_mode window overhangs."""
    size = x.shape[2:]
    out = [pool_out_size(n, k, s, p, d, ceil_mode) for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)]
    after = [max(p, (o - 1) * s + d * (k - 1) + 1 - n - p)
             for n, o, k, s, p, d in zip(size, out, kernel, stride, padding, dilation)]
    pads = ((0, 0), (0, 0)) + tuple(zip(padding, after))
    return np.pad(x, pads, constant_values=fill), out, pads


def max_pool(x, kernel, stride, padding, dilation, ceil_mode):
    """Returns (values, int64 flat indices into each (n, c) input) scanning taps row-major."""
    xp, out, pads = _pool_frame(x, kernel, stride, padding, dilation, ceil_mode, -np.inf)
    inside = np.pad(np.ones(x.shape[2:], bool), pads[2:], constant_values=False)
    flat = np.pad(np.arange(np.prod(x.shape[2:]), dtype=np.int64).reshape(x.shape[2:]), pads[2:])
    best = np.full((*x.shape[:2], *out), -np.inf, x.dtype)
    index = np.full(best.shape, -1, np.int64)
    for tap in _taps(kernel):
        sl = _tap_slices(tap, dilation, stride, out)
        v = xp[(Ellipsis,) + sl]
        take = inside[sl] & ((index < 0) | (v > best) | np.isnan(v))
        best = np.where(take, v, best)
        index = np.where(take, flat[sl], index)
    return best, index


def max_pool_backward(gy, indices, input_shape):
    n, c = input_shape[:2]
    grad = np.zeros((n, c, int(np.prod(input_shape[2:]))), gy.dtype)
    rows = np.arange(n * c).reshape(n, c, *([1] * (gy.ndim - 2)))
    np.add.at(grad.reshape(n * c, -1), (np.broadcast_to(rows, gy.shape), indices), gy)
    return grad.reshape(input_shape)


def _avg_divisors(x_shape, kernel, stride, padding, ceil_mode, count_include_pad, out):
    """Count each window's taps: padded positions count with count_include_pad, the ceil_mode
    overhang beyond the padding never does."""
    size = x_shape[2:]
    frame, _, _ = _pool_frame(np.zeros((1, 1) + tuple(size)), kernel, stride, padding, (1,) * len(size),
                              ceil_mode, 0)
    counted = np.zeros(frame.shape[2:])
    if count_include_pad:
        counted[tuple(slice(0, n + 2 * p) for n, p in zip(size, padding))] = 1
    else:
        counted[tuple(slice(p, p + n) for n, p in zip(size, padding))] = 1
    counts = np.zeros(out)
    for tap in _taps(kernel):
        counts += counted[_tap_slices(tap, (1,) * len(size), stride, out)]
    return counts


def avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
    xp, out, _ = _pool_frame(x, kernel, stride, padding, (1,) * len(kernel), ceil_mode, 0)
    total = np.zeros((*x.shape[:2], *out), x.dtype)
    for tap in _taps(kernel):
        total += xp[(Ellipsis,) + _tap_slices(tap, (1,) * len(kernel), stride, out)]
    divisor = divisor_override or _avg_divisors(x.shape, kernel, stride, padding, ceil_mode, count_include_pad, out)
    return (total / divisor).astype(x.dtype)


def avg_pool_backward(gy, input_shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
    x = np.zeros(input_shape, gy.dtype)
    xp, out, pads = _pool_frame(x, kernel, stride, padding, (1,) * len(kernel), ceil_mode, 0)
    divisor = divisor_override or _avg_divisors(input_shape, kernel, stride, padding, ceil_mode,
                                                count_include_pad, out)
    share = gy / divisor
    for tap in _taps(kernel):
        xp[(Ellipsis,) + _tap_slices(tap, (1,) * len(kernel), stride, out)] += share
    crop = tuple(slice(a, a + n) for (a, _), n in zip(pads[2:], input_shape[2:]))
    return xp[(slice(None), slice(None)) + crop].astype(gy.dtype)


# --------------------------------------------------------------------------
# adaptive pooling
# --------------------------------------------------------------------------

def adaptive_bins(size, out):
    """Bin i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _bin_windows(in_sizes, out_sizes):
    for position in itertools.product(*(range(o) for o in out_sizes)):
        yield position, tuple(slice(*adaptive_bins(n, o)[i]) for i, n, o in zip(position, in_sizes, out_sizes))


def adaptive_avg_pool(x, out_sizes):
    y = np.empty((*x.shape[:2], *out_sizes), x.dtype)
    for position, window in _bin_windows(x.shape[2:], out_sizes):
        block = x[(Ellipsis,) + window]
        y[(Ellipsis,) + position] = block.reshape(*x.shape[:2], -1).mean(axis=-1)
    return y


def adaptive_avg_pool_backward(gy, input_shape):
    grad = np.zeros(input_shape, gy.dtype)
    for position, window in _bin_windows(input_shape[2:], gy.shape[2:]):
        count = np.prod([s.stop - s.start for s in window])
        grad[(Ellipsis,) + window] += (gy[(Ellipsis,) + position] / count)[(Ellipsis,) + (None,) * len(window)]
    return grad


def adaptive_max_pool(x, out_sizes):
    """Values and flat indices; in each bin the first maximum in row-major order, or the last NaN."""
    y = np.empty((*x.shape[:2], *out_sizes), x.dtype)
    idx = np.empty(y.shape, np.int64)
    flat = np.arange(np.prod(x.shape[2:]), dtype=np.int64).reshape(x.shape[2:])
    for position, window in _bin_windows(x.shape[2:], out_sizes):
        block = x[(Ellipsis,) + window].reshape(*x.shape[:2], -1)
        where = flat[window].reshape(-1)
        nan = np.isnan(block)
        last_nan = block.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
        pick = np.where(nan.any(axis=-1), last_nan, np.argmax(np.where(nan, -np.inf, block), axis=-1))
        y[(Ellipsis,) + position] = np.take_along_axis(block, pick[..., None], -1)[..., 0]
        idx[(Ellipsis,) + position] = where[pick]
    return y, idx
