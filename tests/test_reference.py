"""The NumPy reference is the oracle of the differential tests; these tests check the oracle.

- the seed document's worked example (grad_weight to 1e-6), on every backend;
- central finite differences in float64 for every gradient, on every backend;
- hand-computed pooling cases: ties, NaN, all -inf windows, ceil_mode, padding;
- independent loop definitions of conv2d, conv_transpose2d and pooling (PyTorch's
  own algorithms, written out naively) on random configurations;
- conv_transpose2d as the adjoint of conv2d: <conv2d(a), b> == <a, conv_transpose2d(b)>;
- when PyTorch is importable, the reference against ``torch.nn.functional``.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import cconv
from conftest import REFERENCE, assert_close, assert_identical, numerical_gradient, tally

# --------------------------------------------------------------------------
# the seed example
# --------------------------------------------------------------------------

SEED_INPUT = np.array([[0.51, 0.9, 0.88, 0.84, 0.05],
                       [0.4, 0.62, 0.22, 0.59, 0.1],
                       [0.11, 0.2, 0.74, 0.33, 0.14],
                       [0.47, 0.01, 0.85, 0.7, 0.09],
                       [0.76, 0.19, 0.72, 0.17, 0.57]])
SEED_DELTA = np.array([[0, 0, 0.0686, 0],
                       [0, 0.0364, 0, 0],
                       [0, 0.0467, 0, 0],
                       [0, 0, 0, -0.0681]])
SEED_GRAD_WEIGHT = np.array([[0.044606, 0.094061],
                             [0.011262, 0.068288]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batched", [False, True], ids=["1x5x5", "1x1x5x5"])
def test_seed_example(backend, dtype, batched):
    """The worked example: a 2x2 kernel's weight gradient from a 5x5 input and 4x4 delta."""
    lead = (1, 1) if batched else (1,)
    x = SEED_INPUT.reshape(lead + (5, 5)).astype(dtype)
    gy = SEED_DELTA.reshape(lead + (4, 4)).astype(dtype)
    w = np.full((1, 1, 2, 2), 0.25, dtype=dtype)  # any weight: grad_weight does not depend on it
    grad_input, grad_weight, grad_bias = cconv.conv2d_backward(gy, x, w, backend=backend)
    assert grad_weight.shape == (1, 1, 2, 2) and grad_weight.dtype == dtype
    np.testing.assert_allclose(grad_weight[0, 0], SEED_GRAD_WEIGHT, rtol=0, atol=1e-6)
    assert grad_input.shape == x.shape
    np.testing.assert_allclose(grad_bias, [SEED_DELTA.sum()], rtol=1e-6)
    _, only_weight, _ = cconv.conv2d_backward(gy, x, w, output_mask=(False, True, False), backend=backend)
    np.testing.assert_array_equal(only_weight, grad_weight)


# --------------------------------------------------------------------------
# finite differences
# --------------------------------------------------------------------------

def assert_gradient(numerical, analytic, what):
    err = np.linalg.norm(numerical - analytic)
    assert err <= 1e-8 * max(1.0, np.linalg.norm(numerical)), f"{what}: finite-difference error {err:.3e}"
    tally("finite differences", what)


CONV_CONFIGS = [
    dict(x=(2, 2, 5, 6), w=(3, 2, 3, 2)),
    dict(x=(1, 2, 7, 6), w=(2, 2, 3, 3), stride=(2, 3), padding=(1, 2)),
    dict(x=(2, 2, 5, 4), w=(2, 2, 2, 4), padding="same", dilation=(1, 2)),     # asymmetric 'same'
    dict(x=(1, 4, 7, 6), w=(4, 2, 2, 3), dilation=2, groups=2, padding=1),
    dict(x=(2, 3, 5, 5), w=(6, 1, 3, 3), stride=2, padding=1, groups=3),       # depthwise
    dict(x=(1, 2, 8, 7), w=(2, 2, 3, 2), stride=3, padding="valid"),           # stride does not divide
]


def _conv_args(config):
    return {k: v for k, v in config.items() if k not in ("x", "w")}


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=lambda c: str(_conv_args(c)))
def test_conv2d_gradients_finite_differences(backend, config, rng):
    args = _conv_args(config)
    x = rng.standard_normal(config["x"])
    w = rng.standard_normal(config["w"])
    b = rng.standard_normal(config["w"][0])
    r = rng.standard_normal(cconv.conv2d(x, w, b, **args, backend=backend).shape)

    def loss():
        return float(np.sum(cconv.conv2d(x, w, b, **args, backend=backend) * r))

    grad_input, grad_weight, grad_bias = cconv.conv2d_backward(r, x, w, **args, backend=backend)
    assert_gradient(numerical_gradient(loss, x, 1e-3), grad_input, "conv2d input")
    assert_gradient(numerical_gradient(loss, w, 1e-3), grad_weight, "conv2d weight")
    assert_gradient(numerical_gradient(loss, b, 1e-3), grad_bias, "conv2d bias")


TRANSPOSE_CONFIGS = [
    dict(x=(2, 2, 4, 3), w=(2, 3, 3, 2)),
    dict(x=(1, 2, 3, 4), w=(2, 2, 3, 3), stride=2, padding=1, output_padding=1),
    dict(x=(1, 4, 3, 3), w=(4, 1, 2, 3), stride=(2, 3), padding=(0, 1), output_padding=(1, 2), groups=2),
    dict(x=(2, 2, 3, 3), w=(2, 2, 2, 2), stride=3, dilation=2, output_padding=(2, 1)),
]


@pytest.mark.parametrize("config", TRANSPOSE_CONFIGS, ids=lambda c: str(_conv_args(c)))
def test_conv_transpose2d_gradients_finite_differences(backend, config, rng):
    args = _conv_args(config)
    x = rng.standard_normal(config["x"])
    w = rng.standard_normal(config["w"])
    b = rng.standard_normal(config["w"][1] * args.get("groups", 1))
    r = rng.standard_normal(cconv.conv_transpose2d(x, w, b, **args, backend=backend).shape)

    def loss():
        return float(np.sum(cconv.conv_transpose2d(x, w, b, **args, backend=backend) * r))

    grad_input, grad_weight, grad_bias = cconv.conv_transpose2d_backward(r, x, w, **args, backend=backend)
    assert_gradient(numerical_gradient(loss, x, 1e-3), grad_input, "conv_transpose2d input")
    assert_gradient(numerical_gradient(loss, w, 1e-3), grad_weight, "conv_transpose2d weight")
    assert_gradient(numerical_gradient(loss, b, 1e-3), grad_bias, "conv_transpose2d bias")


POOL_CONFIGS = [
    dict(shape=(2, 2, 6, 5), kernel_size=2),
    dict(shape=(1, 2, 7, 6), kernel_size=3, stride=2, padding=1),                    # overlapping windows
    dict(shape=(1, 1, 7, 8), kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True),
    dict(shape=(1, 2, 5, 5), kernel_size=2, stride=1, ceil_mode=True),
    dict(shape=(2, 1, 8, 9), kernel_size=(2, 3), stride=2, padding=(1, 0), dilation=(2, 1)),
]


@pytest.mark.parametrize("config", POOL_CONFIGS, ids=lambda c: str(c))
def test_max_pool2d_gradient_finite_differences(backend, config, rng):
    args = {k: v for k, v in config.items() if k != "shape"}
    shape = config["shape"]
    # Distinct values 0.01 apart: a 1e-3 step never changes which pixel is a window's maximum.
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.01
    out, indices = cconv.max_pool2d(x, **args, return_indices=True, backend=backend)
    r = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(cconv.max_pool2d(x, **args, backend=backend) * r))

    analytic = cconv.max_pool2d_backward(r, indices, shape, backend=backend)
    assert_gradient(numerical_gradient(loss, x, 1e-3), analytic, "max_pool2d input")


AVG_CONFIGS = [
    dict(shape=(2, 2, 6, 5), kernel_size=2),
    dict(shape=(1, 2, 7, 6), kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(shape=(1, 1, 7, 8), kernel_size=(3, 2), stride=(2, 3), padding=1, ceil_mode=True),
    dict(shape=(1, 2, 6, 7), kernel_size=(3, 4), stride=2, padding=(1, 2), ceil_mode=True,
         count_include_pad=False),
    dict(shape=(2, 1, 5, 5), kernel_size=3, stride=1, padding=1, divisor_override=5),
]


@pytest.mark.parametrize("config", AVG_CONFIGS, ids=lambda c: str(c))
def test_avg_pool2d_gradient_finite_differences(backend, config, rng):
    args = {k: v for k, v in config.items() if k != "shape"}
    shape = config["shape"]
    x = rng.standard_normal(shape)
    r = rng.standard_normal(cconv.avg_pool2d(x, **args, backend=backend).shape)

    def loss():
        return float(np.sum(cconv.avg_pool2d(x, **args, backend=backend) * r))

    analytic = cconv.avg_pool2d_backward(r, shape, **args, backend=backend)
    assert_gradient(numerical_gradient(loss, x, 1e-3), analytic, "avg_pool2d input")


# --------------------------------------------------------------------------
# hand-computed pooling cases
# --------------------------------------------------------------------------

NAN, INF = np.nan, np.inf

# (input plane, max_pool2d arguments, expected output, expected indices)
MAX_POOL_CASES = {
    "ties go to the first maximum in row-major order": (
        [[5, 5, 1, 2], [5, 5, 2, 1]], dict(kernel_size=2),
        [[5, 2]], [[0, 3]]),
    "tie across rows": (
        [[1, 2], [2, 0]], dict(kernel_size=2),
        [[2]], [[1]]),
    "NaN wins and the last NaN owns the index": (
        [[NAN, 1, 1, NAN], [2, NAN, NAN, 9]], dict(kernel_size=2),
        [[NAN, NAN]], [[5, 6]]),
    "NaN beats +inf": (
        [[INF, NAN]], dict(kernel_size=(1, 2)),
        [[NAN]], [[1]]),
    "all -inf window points at its first in-bounds pixel": (
        np.full((3, 3), -INF), dict(kernel_size=3, stride=2, padding=1),
        [[-INF, -INF], [-INF, -INF]], [[0, 1], [3, 4]]),
    "ceil_mode clips the last windows": (
        [[1, 2, 3], [4, 5, 6], [7, 8, 9]], dict(kernel_size=2, ceil_mode=True),
        [[5, 6], [8, 9]], [[4, 5], [7, 8]]),
    "padding is -inf, never the maximum": (
        [[-1, -2, -3], [-4, -5, -6]], dict(kernel_size=3, stride=2, padding=1),
        [[-1, -2]], [[0, 1]]),
    "dilation skips pixels": (
        np.arange(16).reshape(4, 4)[::-1], dict(kernel_size=2, stride=1, dilation=2),
        [[14, 15], [10, 11]], [[2, 3], [6, 7]]),
}


@pytest.mark.parametrize("case", MAX_POOL_CASES)
def test_max_pool2d_hand_computed(backend, case):
    plane, args, expected, expected_idx = MAX_POOL_CASES[case]
    for dtype in (np.float64, np.float32):
        x = np.asarray(plane, dtype=dtype)[None, None]
        out, idx = cconv.max_pool2d(x, **args, return_indices=True, backend=backend)
        assert_identical(out[0, 0], np.asarray(expected, dtype=dtype), context=case)
        assert_identical(idx[0, 0], np.asarray(expected_idx, dtype=np.int64), context=case)


# x = arange(1, 10) as 3x3 unless stated: [[1 2 3] [4 5 6] [7 8 9]];  y = arange(16) as 4x4.
X3 = np.arange(1, 10).reshape(3, 3)
Y4 = np.arange(16).reshape(4, 4)
AVG_POOL_CASES = {
    # windows start at -1 and 1: {pad, pad, pad, 1}, {pad, pad, 2, 3}, {pad, 4, pad, 7}, {5, 6, 8, 9}
    "padding counts in the divisor": (X3, dict(kernel_size=2, stride=2, padding=1),
                                      [[1 / 4, 5 / 4], [11 / 4, 28 / 4]]),
    "padding left out of the divisor": (X3, dict(kernel_size=2, stride=2, padding=1, count_include_pad=False),
                                        [[1 / 1, 5 / 2], [11 / 2, 28 / 4]]),
    # windows {1 2 4 5}, {3 6}, {7 8}, {9}: the overhang past the input never counts
    "ceil_mode overhang never counts": (X3, dict(kernel_size=2, ceil_mode=True),
                                        [[12 / 4, 9 / 2], [15 / 2, 9 / 1]]),
    "divisor_override": (X3, dict(kernel_size=2, stride=1, divisor_override=3),
                         [[12 / 3, 16 / 3], [24 / 3, 28 / 3]]),
    # 4x4, k=3, s=2, p=1, ceil: windows start at -1, 1, 3 and cover input rows {0, 1}, {1, 2, 3},
    # {3}; the last one also covers one padding row (counted: divisor 2) and one overhang row
    # (never counted). Same for columns; y[r, c] = 4r + c.
    "ceil_mode with padding": (Y4, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                               [[10 / 9, 24 / 9, 10 / 6],
                                [51 / 9, 90 / 9, 33 / 6],
                                [25 / 6, 42 / 6, 15 / 4]]),
    "ceil_mode with padding, padding not counted": (
        Y4, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        [[10 / 4, 24 / 6, 10 / 2],
         [51 / 6, 90 / 9, 33 / 3],
         [25 / 2, 42 / 3, 15 / 1]]),
}


@pytest.mark.parametrize("case", AVG_POOL_CASES)
def test_avg_pool2d_hand_computed(backend, case):
    plane, args, expected = AVG_POOL_CASES[case]
    x = np.asarray(plane, dtype=np.float64)[None, None]
    np.testing.assert_allclose(cconv.avg_pool2d(x, **args, backend=backend)[0, 0], expected, rtol=1e-14)


CEIL_MODE_SIZES = [
    # (input size, kernel, stride, padding, floor-mode size, ceil-mode size)
    (5, 2, 2, 0, 2, 3),   # the extra window starts inside the input
    (3, 2, 2, 1, 2, 2),   # it would start in the right padding: dropped
    (6, 3, 2, 1, 3, 4),
    (4, 2, 2, 0, 2, 2),   # stride divides: no difference
    (7, 3, 3, 1, 3, 3),
    (8, 3, 3, 1, 3, 3),   # the extra window would start at 9 = size + padding: dropped
    (9, 3, 3, 1, 3, 4),
]


@pytest.mark.parametrize("size,kernel,stride,padding,floor,ceil", CEIL_MODE_SIZES)
def test_pool_output_sizes(backend, size, kernel, stride, padding, floor, ceil):
    x = np.zeros((1, 1, size, size + 1))
    for ceil_mode, expected in ((False, floor), (True, ceil)):
        out = cconv.max_pool2d(x, (kernel, 1), (stride, 1), (padding, 0), ceil_mode=ceil_mode, backend=backend)
        assert out.shape == (1, 1, expected, size + 1)
        out = cconv.avg_pool2d(x, (kernel, 1), (stride, 1), (padding, 0), ceil_mode=ceil_mode, backend=backend)
        assert out.shape == (1, 1, expected, size + 1)


def test_max_pool2d_backward_accumulates_overlapping_windows(backend):
    """Every 2x2 window of this plane has its maximum at the centre: it gets all four gradients."""
    x = np.array([[[[1., 2, 1], [0, 5, 0], [1, 0, 1]]]])
    out, idx = cconv.max_pool2d(x, 2, stride=1, return_indices=True, backend=backend)
    np.testing.assert_array_equal(idx, [[[[4, 4], [4, 4]]]])
    gy = np.array([[[[1., 2], [3, 4]]]])
    expected = np.zeros((1, 1, 3, 3))
    expected[0, 0, 1, 1] = 10
    np.testing.assert_array_equal(cconv.max_pool2d_backward(gy, idx, x.shape, backend=backend), expected)


def test_avg_pool2d_backward_hand_computed(backend):
    """3x3 input, k=2, s=1, no padding: each pixel gets a quarter of every window covering it."""
    gy = np.array([[[[4., 8], [12, 16]]]])
    expected = np.array([[1, 3, 2], [4, 10, 6], [3, 7, 4]], dtype=float)
    np.testing.assert_allclose(cconv.avg_pool2d_backward(gy, (1, 1, 3, 3), 2, 1, backend=backend)[0, 0],
                               expected, rtol=1e-15)


# --------------------------------------------------------------------------
# independent definitions, written out with loops
# --------------------------------------------------------------------------

def _same_padding(kernel, dilation):
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2      # PyTorch: the extra one goes after


def naive_conv2d(x, w, b, stride, padding, dilation, groups):
    """y[n, o, i, j] = b[o] + sum over the window of group(o) of x_padded * w[o]."""
    (sh, sw), (dh, dw) = stride, dilation
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if padding == "same":
        (top, bottom), (left, right) = _same_padding(kh, dh), _same_padding(kw, dw)
    else:
        (top, left) = padding
        bottom, right = top, left
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top:top + h, left:left + wd] = x
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, ho, wo))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, g * cg:(g + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                           j * sw:j * sw + dw * (kw - 1) + 1:dw]
                y[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + (0 if b is None else b[oc])
    return y


def naive_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """PyTorch's definition: each input pixel scatters ``x * w`` into the (uncropped) output,
    which is then cropped by ``padding`` on each side (output_padding extends the bottom/right)."""
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    full = np.zeros((n, cog * groups, (h - 1) * sh + dh * (kh - 1) + 1 + oph,
                     (wd - 1) * sw + dw * (kw - 1) + 1 + opw))
    cig = cin // groups
    for ci in range(cin):
        g = ci // cig
        for i in range(h):
            for j in range(wd):
                full[:, g * cog:(g + 1) * cog, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                     j * sw:j * sw + dw * (kw - 1) + 1:dw] += x[:, ci, i, j, None, None, None] * w[ci]
    y = full[:, :, ph:ph + ho, pw:pw + wo]
    return y + (0 if b is None else b.reshape(1, -1, 1, 1))


def _pool_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's pooling_output_shape."""
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def naive_max_pool2d(x, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's CPU max-pool loop: first in-bounds pixel as the start, ``val > max or isnan(val)``."""
    n, c, h, w = x.shape
    ho = _pool_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    wo = _pool_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    out = np.empty((n, c, ho, wo))
    idx = np.empty((n, c, ho, wo), dtype=np.int64)
    for a, b, i, j in itertools.product(range(n), range(c), range(ho), range(wo)):
        h0, w0 = i * stride[0] - padding[0], j * stride[1] - padding[1]
        h1 = min(h0 + (kernel[0] - 1) * dilation[0] + 1, h)
        w1 = min(w0 + (kernel[1] - 1) * dilation[1] + 1, w)
        while h0 < 0:
            h0 += dilation[0]
        while w0 < 0:
            w0 += dilation[1]
        best, best_index = -np.inf, h0 * w + w0
        for y in range(h0, h1, dilation[0]):
            for z in range(w0, w1, dilation[1]):
                v = x[a, b, y, z]
                if v > best or np.isnan(v):
                    best, best_index = v, y * w + z
        out[a, b, i, j], idx[a, b, i, j] = best, best_index
    return out, idx


def naive_avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """PyTorch's CPU avg-pool loop."""
    n, c, h, w = x.shape
    ho = _pool_size(h, kernel[0], stride[0], padding[0], 1, ceil_mode)
    wo = _pool_size(w, kernel[1], stride[1], padding[1], 1, ceil_mode)
    out = np.empty((n, c, ho, wo))
    for i, j in itertools.product(range(ho), range(wo)):
        h0, w0 = i * stride[0] - padding[0], j * stride[1] - padding[1]
        h1, w1 = min(h0 + kernel[0], h + padding[0]), min(w0 + kernel[1], w + padding[1])
        pool_size = (h1 - h0) * (w1 - w0)
        h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
        total = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3))
        if divisor_override is not None:
            divisor = divisor_override
        else:
            divisor = pool_size if count_include_pad else (h1 - h0) * (w1 - w0)
        out[:, :, i, j] = total / divisor
    return out


def _random_conv(rng):
    groups = int(rng.integers(1, 4))
    c, o = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    kernel = rng.integers(1, 4, size=2)
    dilation = rng.integers(1, 3, size=2)
    if rng.random() < 0.3:
        stride, padding, total = (1, 1), "same", dilation * (kernel - 1)
    else:
        stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
        padding = tuple(int(p) for p in rng.integers(0, 3, size=2))
        total = 2 * np.array(padding)
    size = np.maximum(1, dilation * (kernel - 1) + 1 - total) + rng.integers(0, 5, size=2)
    x = rng.standard_normal((int(rng.integers(1, 3)), c, int(size[0]), int(size[1])))
    w = rng.standard_normal((o, c // groups, int(kernel[0]), int(kernel[1])))
    b = rng.standard_normal(o) if rng.random() < 0.5 else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=tuple(int(d) for d in dilation), groups=groups)


def test_conv2d_matches_loop_definition(rng):
    for _ in range(40):
        x, w, b, args = _random_conv(rng)
        assert_close(cconv.conv2d(x, w, b, **args, backend=REFERENCE), naive_conv2d(x, w, b, **args),
                     context=str(args))
        tally("loop definitions", "conv2d")


def _random_transpose(rng, output_padding_below=None):
    """Random conv_transpose2d arguments (output_padding below stride, or below max(stride, dilation)
    as PyTorch allows; the degenerate draws in which no output pixel receives input are redrawn)."""
    while True:
        x, w, b, args = _draw_transpose(rng, output_padding_below)
        try:
            cconv.conv_transpose2d(x, w, b, **args, backend=REFERENCE)
        except ValueError as exc:
            assert "no output pixel would receive input" in str(exc), exc
            continue
        return x, w, b, args


def _draw_transpose(rng, output_padding_below):
    groups = int(rng.integers(1, 3))
    cin, cog = groups * int(rng.integers(1, 3)), int(rng.integers(1, 3))
    kernel = tuple(int(k) for k in rng.integers(1, 4, size=2))
    stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=2))
    padding = tuple(int(min(p, d * (k - 1))) for p, d, k in zip(rng.integers(0, 2, size=2), dilation, kernel))
    if output_padding_below:   # PyTorch's full range: below stride or below dilation
        limit = tuple(max(s, d) for s, d in zip(stride, dilation))
    else:
        limit = stride
    output_padding = tuple(int(rng.integers(0, m)) for m in limit)
    x = rng.standard_normal((int(rng.integers(1, 3)), cin, int(rng.integers(2, 5)), int(rng.integers(2, 5))))
    w = rng.standard_normal((cin, cog) + kernel)
    b = rng.standard_normal(cog * groups) if rng.random() < 0.5 else None
    return x, w, b, dict(stride=stride, padding=padding, output_padding=output_padding,
                         dilation=dilation, groups=groups)


def test_conv_transpose2d_matches_scatter_definition(rng):
    for _ in range(40):
        x, w, b, args = _random_transpose(rng)
        assert_close(cconv.conv_transpose2d(x, w, b, **args, backend=REFERENCE),
                     naive_conv_transpose2d(x, w, b, **args), context=str(args))
        tally("loop definitions", "conv_transpose2d")


def test_conv_transpose2d_output_padding_beyond_stride(backend, rng):
    """PyTorch allows stride <= output_padding < dilation: the extra rows hold only the bias."""
    x, w, b = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 3, 2, 2)), rng.standard_normal(3)
    args = dict(stride=(1, 2), padding=(0, 1), output_padding=(2, 2), dilation=(3, 3), groups=1)
    expected = naive_conv_transpose2d(x, w, b, **args)
    assert expected.shape == (2, 3, 8, 8)
    assert_close(cconv.conv_transpose2d(x, w, b, **args, backend=backend), expected)
    for _ in range(20):
        x, w, b, args = _random_transpose(rng, output_padding_below="max(stride, dilation)")
        assert_close(cconv.conv_transpose2d(x, w, b, **args, backend=backend),
                     naive_conv_transpose2d(x, w, b, **args), context=str(args))
        r = rng.standard_normal(naive_conv_transpose2d(x, w, b, **args).shape)
        grads = cconv.conv_transpose2d_backward(r, x, w, **args, backend=backend)

        def loss():
            return float(np.sum(cconv.conv_transpose2d(x, w, b, **args, backend=backend) * r))

        assert_gradient(numerical_gradient(loss, x, 1e-3), grads[0], "conv_transpose2d input (output_padding >= stride)")
        assert_gradient(numerical_gradient(loss, w, 1e-3), grads[1], "conv_transpose2d weight (output_padding >= stride)")
        if b is not None:
            assert_gradient(numerical_gradient(loss, b, 1e-3), grads[2], "conv_transpose2d bias (output_padding >= stride)")


def _random_pool(rng, dilation=True):
    while True:
        kernel = tuple(int(k) for k in rng.integers(1, 5, size=2))
        stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        dil = tuple(int(d) for d in rng.integers(1, 3, size=2)) if dilation else (1, 1)
        ceil_mode = bool(rng.random() < 0.5)
        size = [max(1, d * (k - 1) + 1 - 2 * p) + int(rng.integers(0, 5)) for k, p, d in zip(kernel, padding, dil)]
        x = rng.integers(-2, 3, size=(2, 2, *size)).astype(float)   # many ties
        x[rng.random(x.shape) < 0.05] = np.nan
        x[rng.random(x.shape) < 0.1] = -np.inf
        args = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
        if dilation:
            args["dilation"] = dil
        try:
            cconv.max_pool2d(x, **dict(args, dilation=dil), backend=REFERENCE)
        except ValueError as exc:   # dilated windows that see only padding are refused
            assert "covers no input pixel" in str(exc)
            continue
        return x, args


def test_max_pool2d_matches_loop_definition(rng):
    for _ in range(60):
        x, args = _random_pool(rng)
        out, idx = cconv.max_pool2d(x, **args, return_indices=True, backend=REFERENCE)
        naive_out, naive_idx = naive_max_pool2d(x, args["kernel_size"], args["stride"], args["padding"],
                                                args["dilation"], args["ceil_mode"])
        assert_identical(out, naive_out, context=str(args))
        assert_identical(idx, naive_idx, context=str(args))
        tally("loop definitions", "max_pool2d")


def test_avg_pool2d_matches_loop_definition(rng):
    for _ in range(60):
        x, args = _random_pool(rng, dilation=False)
        x = rng.standard_normal(x.shape)
        args["count_include_pad"] = bool(rng.random() < 0.5)
        args["divisor_override"] = int(rng.choice([-2, 3])) if rng.random() < 0.3 else None
        expected = naive_avg_pool2d(x, args["kernel_size"], args["stride"], args["padding"], args["ceil_mode"],
                                    args["count_include_pad"], args["divisor_override"])
        assert_close(cconv.avg_pool2d(x, **args, backend=REFERENCE), expected, context=str(args))
        tally("loop definitions", "avg_pool2d")


# --------------------------------------------------------------------------
# conv_transpose2d is the adjoint of conv2d
# --------------------------------------------------------------------------

def test_conv_transpose2d_is_adjoint_of_conv2d(backend, rng):
    """<conv2d(a, w), b> == <a, conv_transpose2d(b, w)>, with output_padding restoring a's size;
    and conv2d's grad_input is that same conv_transpose2d."""
    for _ in range(30):
        a, w, _, args = _random_conv(rng)
        if args["padding"] == "same":
            continue  # conv_transpose2d takes symmetric padding only
        y = cconv.conv2d(a, w, **args, backend=backend)
        b = rng.standard_normal(y.shape)
        stride, padding, dilation = args["stride"], args["padding"], args["dilation"]
        output_padding = tuple((size + 2 * p - d * (k - 1) - 1) % s
                               for size, p, d, k, s in zip(a.shape[2:], padding, dilation, w.shape[2:], stride))
        t = cconv.conv_transpose2d(b, w, None, stride, padding, output_padding, args["groups"], dilation,
                                   backend=backend)
        assert t.shape == a.shape
        lhs, rhs = np.vdot(y, b), np.vdot(a, t)
        assert abs(lhs - rhs) <= 1e-12 * (np.abs(y).sum() * np.abs(b).max() + 1), (args, lhs, rhs)
        grad_input, _, _ = cconv.conv2d_backward(b, a, w, **args, output_mask=(True, False, False),
                                                 backend=backend)
        assert_close(grad_input, t, context=str(args))
        tally("adjoint identity", "conv2d/conv_transpose2d")


# --------------------------------------------------------------------------
# against PyTorch, when it is installed
# --------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
def test_reference_matches_torch(rng):
    """Forward and autograd backward of torch.nn.functional against the NumPy reference (float64)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def t(a):
        return torch.tensor(a, requires_grad=True)

    for _ in range(25):
        x, w, b, args = _random_conv(rng)
        xt, wt, bt = t(x), t(w), None if b is None else t(b)
        yt = F.conv2d(xt, wt, bt, **args)
        gy = rng.standard_normal(tuple(yt.shape))
        yt.backward(torch.from_numpy(gy))
        assert_close(cconv.conv2d(x, w, b, **args, backend=REFERENCE), yt.detach().numpy(), context=str(args))
        gx, gw, gb = cconv.conv2d_backward(gy, x, w, **args, backend=REFERENCE)
        assert_close(gx, xt.grad.numpy(), context=str(args))
        assert_close(gw, wt.grad.numpy(), context=str(args))
        if b is not None:
            assert_close(gb, bt.grad.numpy(), context=str(args))
        tally("against torch", "conv2d")

    for _ in range(25):
        x, w, b, args = _random_transpose(rng, output_padding_below="max(stride, dilation)")
        xt, wt = t(x), t(w)
        yt = F.conv_transpose2d(xt, wt, None if b is None else torch.from_numpy(b), **args)
        gy = rng.standard_normal(tuple(yt.shape))
        yt.backward(torch.from_numpy(gy))
        assert_close(cconv.conv_transpose2d(x, w, b, **args, backend=REFERENCE), yt.detach().numpy(),
                     context=str(args))
        gx, gw, gb = cconv.conv_transpose2d_backward(gy, x, w, **args, backend=REFERENCE)
        assert_close(gx, xt.grad.numpy(), context=str(args))
        assert_close(gw, wt.grad.numpy(), context=str(args))
        np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)
        tally("against torch", "conv_transpose2d")

    for _ in range(40):
        x, args = _random_pool(rng)
        xt = t(x)
        out_t, idx_t = F.max_pool2d(xt, **args, return_indices=True)
        out, idx = cconv.max_pool2d(x, **args, return_indices=True, backend=REFERENCE)
        assert_identical(out, out_t.detach().numpy(), context=str(args))
        assert_identical(idx, idx_t.numpy(), context=str(args))
        gy = rng.standard_normal(out.shape)
        out_t.backward(torch.from_numpy(gy))
        assert_close(cconv.max_pool2d_backward(gy, idx, x.shape, backend=REFERENCE), xt.grad.numpy(),
                     context=str(args))
        tally("against torch", "max_pool2d")

    for _ in range(40):
        x, args = _random_pool(rng, dilation=False)
        x = rng.standard_normal(x.shape)
        args["count_include_pad"] = bool(rng.random() < 0.5)
        args["divisor_override"] = int(rng.choice([-2, 3])) if rng.random() < 0.3 else None
        xt = t(x)
        out_t = F.avg_pool2d(xt, **args)
        assert_close(cconv.avg_pool2d(x, **args, backend=REFERENCE), out_t.detach().numpy(), context=str(args))
        gy = rng.standard_normal(tuple(out_t.shape))
        out_t.backward(torch.from_numpy(gy))
        assert_close(cconv.avg_pool2d_backward(gy, x.shape, **args, backend=REFERENCE), xt.grad.numpy(),
                     context=str(args))
        tally("against torch", "avg_pool2d")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_through_zero_padding_like_torch(value):
    """PyTorch multiplies NaN/Inf by the zero padding (0 * Inf = NaN) and so does the reference:
    a non-finite weight or grad_output poisons every output that the padding touches."""
    torch = pytest.importorskip("torch")
    x = np.linspace(-1, 1, 2 * 3 * 5 * 4).reshape(2, 3, 5, 4)
    w = np.linspace(-1, 1, 2 * 3 * 3 * 3).reshape(2, 3, 3, 3)
    gy = np.linspace(-1, 1, 2 * 2 * 5 * 4).reshape(2, 2, 5, 4)
    w[0, 0, 0, 0] = value
    gy[1, 1, 4, 3] = value
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, padding=1)
    yt.backward(torch.from_numpy(gy))
    with np.errstate(invalid="ignore"):
        y = cconv.conv2d(x, w, padding=1, backend=REFERENCE)
        gx, gw, _ = cconv.conv2d_backward(gy, x, w, padding=1, backend=REFERENCE)
    assert_close(y, yt.detach().numpy())
    assert_close(gx, xt.grad.numpy())
    assert_close(gw, wt.grad.numpy())
    if np.isnan(value):  # every window, every weight tap meets the NaN (in the data or the padding)
        assert np.isnan(y[:, 0]).all() and np.isnan(gw[1]).all()
