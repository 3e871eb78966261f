"""The NumPy reference backend: the oracle for differential tests and the fallback.

Written for clarity, vectorised over pixels (the only Python loops run over the
kh*kw kernel taps). Every function takes C-contiguous arrays of one float dtype and
a validated geometry from :mod:`cconv._shapes`, and returns fresh arrays.
"""
from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided


def ieee_sums(func):
    """Run ``func`` with NumPy's invalid and overflow warnings off: in a convolution's sums
    inf - inf is NaN and a sum past the float's range is inf, in every backend alike (PyTorch
    does not warn either)."""
    @functools.wraps(func)
    def quiet(*args, **kwargs):
        with np.errstate(invalid="ignore", over="ignore"):
            return func(*args, **kwargs)
    return quiet

name = "numpy"


def _pad(x, top, bottom, left, right, value):
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _windows(padded, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, out_h, out_w):
    """Read-only view (N, C, out_h, out_w, kh, kw) of the windows of a padded (N, C, Hp, Wp) array."""
    sn, sc, sh, sw = padded.strides
    return as_strided(
        padded,
        shape=padded.shape[:2] + (out_h, out_w, kernel_h, kernel_w),
        strides=(sn, sc, sh * stride_h, sw * stride_w, sh * dilation_h, sw * dilation_w),
        writeable=False,
    )


def _tap_slices(i, j, g, out_h, out_w):
    """The rows/columns of the padded input that kernel tap (i, j) reads, one per output pixel."""
    top = i * g.dilation_h
    left = j * g.dilation_w
    return (slice(top, top + g.stride_h * (out_h - 1) + 1, g.stride_h),
            slice(left, left + g.stride_w * (out_w - 1) + 1, g.stride_w))


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------

def _conv_windows(x, g):
    """(N, groups, C/groups, Ho, Wo, kh, kw) windows of the zero-padded input."""
    padded = _pad(x, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right, 0)
    win = _windows(padded, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                   g.dilation_h, g.dilation_w, g.out_h, g.out_w)
    return win.reshape(g.batch, g.groups, g.in_channels // g.groups, g.out_h, g.out_w,
                       g.kernel_h, g.kernel_w)


def _grouped_weight(w, g):
    return w.reshape(g.groups, g.out_channels // g.groups, g.in_channels // g.groups,
                     g.kernel_h, g.kernel_w)


@ieee_sums
def conv2d(x, w, b, g):
    """y[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q] * xpad[n, c, i*s + p*d, j*s + q*d]."""
    y = np.einsum("ngchwpq,gocpq->ngohw", _conv_windows(x, g), _grouped_weight(w, g), optimize=True)
    y = y.reshape(g.output_shape)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y, dtype=x.dtype)


@ieee_sums
def conv2d_backward(gy, x, w, g, need_input, need_weight, need_bias):
    """Gradients of conv2d for input, weight and bias (``None`` where not needed)."""
    gy_grouped = gy.reshape(g.batch, g.groups, g.out_channels // g.groups, g.out_h, g.out_w)
    grad_input = grad_weight = grad_bias = None
    if need_bias:
        grad_bias = gy.sum(axis=(0, 2, 3)).astype(gy.dtype)
    if need_weight:
        grad_weight = np.einsum("ngohw,ngchwpq->gocpq", gy_grouped, _conv_windows(x, g), optimize=True)
        grad_weight = np.ascontiguousarray(grad_weight.reshape(g.weight_shape), dtype=x.dtype)
    if need_input:
        # Each tap (p, q) of the kernel sends gy back to the pixels it read in the forward pass:
        # the full correlation of gy with the flipped kernel, written as a scatter per tap.
        wg = _grouped_weight(w, g)
        padded = np.zeros((g.batch, g.groups, g.in_channels // g.groups,
                           g.in_h + g.pad_top + g.pad_bottom, g.in_w + g.pad_left + g.pad_right),
                          dtype=gy.dtype)
        for p in range(g.kernel_h):
            for q in range(g.kernel_w):
                rows, cols = _tap_slices(p, q, g, g.out_h, g.out_w)
                padded[..., rows, cols] += np.einsum("ngohw,goc->ngchw", gy_grouped, wg[..., p, q])
        padded = padded.reshape(g.batch, g.in_channels, padded.shape[-2], padded.shape[-1])
        grad_input = np.ascontiguousarray(
            padded[:, :, g.pad_top:g.pad_top + g.in_h, g.pad_left:g.pad_left + g.in_w])
    return grad_input, grad_weight, grad_bias


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

def _pool_extent(g):
    """Padding after the input so that every (possibly ceil_mode) window fits in the array."""
    need_h = (g.out_h - 1) * g.stride_h + g.dilation_h * (g.kernel_h - 1) + 1
    need_w = (g.out_w - 1) * g.stride_w + g.dilation_w * (g.kernel_w - 1) + 1
    return max(0, need_h - g.in_h - g.pad_h), max(0, need_w - g.in_w - g.pad_w)


def _pool_windows(a, g, fill):
    """(N, C, Ho, Wo, kh*kw) windows of ``a`` padded with ``fill`` (row-major tap order)."""
    after_h, after_w = _pool_extent(g)
    padded = _pad(a, g.pad_h, after_h, g.pad_w, after_w, fill)
    win = _windows(padded, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                   g.dilation_h, g.dilation_w, g.out_h, g.out_w)
    return win.reshape(win.shape[:4] + (g.kernel_h * g.kernel_w,))


def max_pool2d(x, g):
    """Window maxima and int64 flat indices ``h*W + w`` into each unpadded (n, c) plane.

    Ties go to the first maximum in row-major window order; a NaN always wins and the
    last NaN in scan order owns the index; an all -inf window points at its first real pixel.
    """
    plane_index = np.arange(g.in_h * g.in_w, dtype=np.int64).reshape(1, 1, g.in_h, g.in_w)
    index = _pool_windows(plane_index, g, -1)[0, 0]            # (Ho, Wo, K), -1 = padding
    valid = index >= 0
    values = _pool_windows(x, g, -np.inf)                      # (N, C, Ho, Wo, K)
    is_nan = np.isnan(values)
    masked = np.where(valid & ~is_nan, values, -np.inf)
    maxima = masked.max(axis=-1, keepdims=True)
    first_max = np.argmax(valid & (masked == maxima), axis=-1)
    k = values.shape[-1]
    last_nan = k - 1 - np.argmax(is_nan[..., ::-1], axis=-1)
    has_nan = is_nan.any(axis=-1)
    tap = np.where(has_nan, last_nan, first_max)
    indices = np.take_along_axis(np.broadcast_to(index, values.shape), tap[..., None], axis=-1)[..., 0]
    out = np.where(has_nan, np.nan, maxima[..., 0]).astype(x.dtype)
    return np.ascontiguousarray(out), np.ascontiguousarray(indices)


def max_pool2d_backward(gy, indices, input_shape):
    """Scatter-add each output gradient to the input pixel its window's maximum came from."""
    batch, channels, height, width = input_shape
    planes = batch * channels
    plane_size = height * width
    flat = indices.reshape(planes, -1 if planes else 0) + (np.arange(planes, dtype=np.int64) * plane_size)[:, None]
    grad = np.bincount(flat.ravel(), weights=gy.ravel(), minlength=planes * plane_size)
    return grad.astype(gy.dtype).reshape(input_shape)


def _avg_divisors(g, count_include_pad, divisor_override):
    """(Ho, Wo) divisor of each window, PyTorch's rule: padding counts, overhang past it never does."""
    if divisor_override is not None:
        return np.full((g.out_h, g.out_w), float(divisor_override))

    def extent(out, stride, pad, kernel, size):
        start = np.arange(out) * stride - pad
        end = np.minimum(start + kernel, size + pad)
        if count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    rows = extent(g.out_h, g.stride_h, g.pad_h, g.kernel_h, g.in_h)
    cols = extent(g.out_w, g.stride_w, g.pad_w, g.kernel_w, g.in_w)
    return np.outer(rows, cols).astype(np.float64)


def avg_pool2d(x, g, count_include_pad, divisor_override):
    """Window sums (zero padding) divided by the window's divisor."""
    sums = _pool_windows(x, g, 0).sum(axis=-1)
    return np.ascontiguousarray(sums / _avg_divisors(g, count_include_pad, divisor_override), dtype=x.dtype)


def avg_pool2d_backward(gy, g, count_include_pad, divisor_override):
    """Spread each output gradient evenly (1/divisor) over its window's input pixels."""
    share = gy / _avg_divisors(g, count_include_pad, divisor_override)
    after_h, after_w = _pool_extent(g)
    padded = np.zeros((g.batch, g.channels, g.in_h + g.pad_h + after_h, g.in_w + g.pad_w + after_w))
    for p in range(g.kernel_h):
        for q in range(g.kernel_w):
            rows, cols = _tap_slices(p, q, g, g.out_h, g.out_w)
            padded[:, :, rows, cols] += share
    return np.ascontiguousarray(
        padded[:, :, g.pad_h:g.pad_h + g.in_h, g.pad_w:g.pad_w + g.in_w], dtype=gy.dtype)
