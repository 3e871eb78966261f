"""Differential tests: every op of the backend under test against the NumPy reference.

Each test draws many random configurations from a seeded generator (reproducible:
a failure message names the case). Every ``FEATURES`` entry is forced on a share of
the cases so that each one is certainly covered: batch 1 and several, empty batch,
unbatched (C, H, W) input, odd sizes, kh != kw, strides that do not divide, dilation,
groups and depthwise, 'same' with even kernels, asymmetric padding, ceil_mode, ties,
NaN and -inf, non-contiguous and Fortran-ordered inputs; both dtypes throughout.

Also: the same argument space through hypothesis (derandomized), larger problems that
take the compiled GEMM path with K/column blocking on several threads, the non-default
SIMD micro-kernels (CCONV_KERNEL_ISA, in a subprocess), NaN/Inf meeting zero padding,
and determinism (the same call twice is bit-identical).

Tolerance (``assert_close``): norm(diff)/norm(ref) <= 1e-12 in float64, 1e-5 in
float32; max-pool values and indices must be identical. Run counts are printed at
the end of the session. The backend under test is the compiled one;
``CCONV_TEST_BACKENDS=torch`` swaps in another for debugging the tests themselves.
"""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cconv
from conftest import (BACKENDS_UNDER_TEST, REFERENCE, assert_close, assert_identical,
                      backend_params, tally)

DTYPES = [np.float64, np.float32]
CHUNKS = range(6)          # each (op, dtype) runs CHUNKS x CASES_PER_CHUNK random cases
CASES_PER_CHUNK = 100
MASKS = list(itertools.product([True, False], repeat=3))

# Every even-numbered case forces the next feature in turn; odd-numbered cases are fully random.
FEATURES = ["plain", "empty_batch", "unbatched", "depthwise", "groups", "same_even", "asymmetric",
            "stride_no_divide", "dilation", "fortran", "strided", "special_values", "ceil_mode", "ties",
            "medium"]

pytestmark = [
    pytest.mark.parametrize("name", backend_params(BACKENDS_UNDER_TEST)),
    # inf - inf inside the reference's window sums: NaN is the intended result
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


# --------------------------------------------------------------------------
# random data and layouts
# --------------------------------------------------------------------------

def _layout(rng, a, feature):
    """``a``'s values in a random memory layout: C order, Fortran order, or a strided view."""
    kind = {"fortran": 1, "strided": 2}.get(feature, rng.integers(4) if rng.random() < 0.3 else 0)
    if kind == 1:
        return np.asfortranarray(a), "F"
    if kind == 2:  # every other element of a bigger buffer
        fill = np.nan if a.dtype.kind == "f" else -1  # garbage the kernels must never read
        big = np.full(tuple(2 * s + 1 for s in a.shape), fill, dtype=a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view, "strided"
    if kind == 3:  # negative strides on the last axis
        return a[..., ::-1].copy()[..., ::-1], "reversed"
    return a, "C"


def _values(rng, shape, dtype, feature, special=False):
    """Standard normal values; with ``special`` sprinkle NaN, -inf and +inf."""
    a = rng.standard_normal(shape)
    if special or (feature == "special_values"):
        r = rng.random(shape)
        a[r < 0.05] = np.nan
        a[(r >= 0.05) & (r < 0.15)] = -np.inf
        a[(r >= 0.15) & (r < 0.17)] = np.inf
    return a.astype(dtype)


def _feature(index):
    if index % 2 == 0:
        return FEATURES[(index // 2) % len(FEATURES)]
    return "random"


def _pair_or_int(rng, pair):
    """Pass equal pairs as a plain int half the time (both spellings must work)."""
    if pair[0] == pair[1] and rng.random() < 0.5:
        return int(pair[0])
    return (int(pair[0]), int(pair[1]))


def _batch(rng, feature):
    if feature == "empty_batch":
        return 0
    if feature in ("unbatched", "plain"):
        return 1
    return int(rng.choice([1, 1, 2, 3]))


def _maybe_unbatch(arrays, n, feature, rng):
    """Drop the batch axis of every array when the case asks for unbatched (C, H, W) input."""
    if n == 1 and (feature == "unbatched" or (feature == "random" and rng.random() < 0.1)):
        return [a[0] for a in arrays], True
    return arrays, False


# --------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------

def _medium(rng, feature):
    """Enough multiply-adds (> ~32k) for the compiled conv to leave its direct loops for the
    GEMM paths; the default small cases mostly exercise the direct loops."""
    return feature == "medium" or (feature == "random" and rng.random() < 0.35)


def _conv_case(rng, feature):
    """Random conv2d arguments: shapes of input and weight plus stride/padding/dilation/groups."""
    if feature == "depthwise" or (feature == "random" and rng.random() < 0.15):
        groups = int(rng.integers(1, 5))
        c_per_group, o_per_group = 1, int(rng.integers(1, 3))
    elif feature == "groups" or (feature == "random" and rng.random() < 0.25):
        groups = int(rng.integers(2, 4))
        c_per_group, o_per_group = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    else:
        groups, c_per_group, o_per_group = 1, int(rng.integers(1, 5)), int(rng.integers(1, 5))
    kernel = rng.integers(1, 5, size=2)
    if feature == "same_even":
        kernel = 2 * rng.integers(1, 3, size=2)
    stride = rng.integers(1, 4, size=2) if rng.random() < 0.5 else np.array([1, 1])
    if feature == "stride_no_divide":
        stride = rng.integers(2, 4, size=2)
    dilation = rng.integers(1, 4, size=2) if (feature == "dilation" or rng.random() < 0.3) else np.array([1, 1])
    if feature == "same_even" or (feature == "random" and rng.random() < 0.15):
        stride = np.array([1, 1])
        padding = "same"
        pad_total = dilation * (kernel - 1)
    elif feature == "asymmetric" or rng.random() < 0.3:
        pad = rng.integers(0, 4, size=2)
        if pad[0] == pad[1]:
            pad[1] = (pad[1] + 1) % 4
        padding, pad_total = (int(pad[0]), int(pad[1])), 2 * pad
    elif rng.random() < 0.2:
        padding, pad_total = "valid", np.array([0, 0])
    else:
        p = int(rng.integers(0, 3))
        padding, pad_total = p, np.array([2 * p, 2 * p])
    effective = dilation * (kernel - 1) + 1
    low = np.maximum(1, effective - pad_total)
    size = low + rng.integers(0, 7, size=2)
    if feature == "stride_no_divide":  # make (size + pad - effective) % stride != 0
        size += (stride - (size + pad_total - effective) % stride) % stride + 1
    if _medium(rng, feature):
        c_per_group, o_per_group = c_per_group + 3, o_per_group + int(rng.integers(3, 8))
        size += rng.integers(4, 10, size=2)
    n = _batch(rng, feature)
    c, o = groups * c_per_group, groups * o_per_group
    args = dict(stride=_pair_or_int(rng, stride), padding=padding,
                dilation=_pair_or_int(rng, dilation), groups=groups)
    return (n, c, int(size[0]), int(size[1])), (o, c_per_group, int(kernel[0]), int(kernel[1])), args


def _transpose_case(rng, feature):
    """Random conv_transpose2d arguments; weight is (C_in, C_out/groups, kh, kw).

    cconv refuses the degenerate output_padding >= stride configurations in which no output
    pixel receives any input (PyTorch returns just the bias there); those are redrawn.
    """
    while True:
        x_shape, w_shape, args = _draw_transpose_case(rng, feature)
        try:
            cconv.conv_transpose2d(np.zeros((1,) + x_shape[1:]), np.zeros(w_shape), **args, backend=REFERENCE)
        except ValueError as exc:
            assert "no output pixel would receive input" in str(exc), exc
            continue
        return x_shape, w_shape, args


def _draw_transpose_case(rng, feature):
    if feature == "depthwise" or (feature == "random" and rng.random() < 0.15):
        groups, c_per_group, o_per_group = int(rng.integers(1, 5)), 1, int(rng.integers(1, 3))
    elif feature == "groups" or (feature == "random" and rng.random() < 0.25):
        groups, c_per_group, o_per_group = int(rng.integers(2, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    else:
        groups, c_per_group, o_per_group = 1, int(rng.integers(1, 5)), int(rng.integers(1, 5))
    kernel = rng.integers(1, 5, size=2)
    stride = rng.integers(1, 4, size=2) if (feature == "stride_no_divide" or rng.random() < 0.6) else np.array([1, 1])
    dilation = rng.integers(1, 4, size=2) if (feature == "dilation" or rng.random() < 0.3) else np.array([1, 1])
    padding = rng.integers(0, 3, size=2)
    if feature == "asymmetric" and padding[0] == padding[1]:
        padding[1] = (padding[1] + 1) % 3
    # below stride, or (as PyTorch also allows) below dilation
    output_padding = np.array([rng.integers(0, max(s, d)) for s, d in zip(stride, dilation)])
    # out = (H - 1)*s - 2p + d(k - 1) + op + 1 >= 1
    deficit = 2 * padding - dilation * (kernel - 1) - output_padding
    low = 1 + np.maximum(0, -(-deficit // stride))
    size = low + rng.integers(0, 5, size=2)
    if _medium(rng, feature):
        c_per_group, o_per_group = c_per_group + 3, o_per_group + int(rng.integers(3, 8))
        size += rng.integers(3, 7, size=2)
    n = _batch(rng, feature)
    c_in = groups * c_per_group
    args = dict(stride=_pair_or_int(rng, stride), padding=_pair_or_int(rng, padding),
                output_padding=_pair_or_int(rng, output_padding), groups=groups,
                dilation=_pair_or_int(rng, dilation))
    return (n, c_in, int(size[0]), int(size[1])), (c_in, o_per_group, int(kernel[0]), int(kernel[1])), args


def _pool_case(rng, feature, with_dilation=True):
    """Random valid pooling arguments: input shape, kernel_size, stride, padding, dilation, ceil_mode.

    Dilated windows that would cover only padding are refused by cconv (PyTorch returns
    -inf with an out-of-range index there); such draws are redrawn.
    """
    while True:
        shape, args = _draw_pool_case(rng, feature, with_dilation)
        try:
            cconv.max_pool2d(np.zeros((1, 1) + shape[2:]), **dict(args, dilation=args.get("dilation", 1)),
                             backend=REFERENCE)
        except ValueError as exc:
            assert "covers no input pixel" in str(exc), exc
            continue
        return shape, args


def _draw_pool_case(rng, feature, with_dilation):
    kernel = rng.integers(1, 5, size=2)
    stride = None if rng.random() < 0.3 else rng.integers(1, 4, size=2)
    if feature == "stride_no_divide":
        stride = rng.integers(2, 4, size=2)
    padding = np.array([rng.integers(0, k // 2 + 1) for k in kernel])
    if feature == "asymmetric":
        kernel = np.array([4, 2])
        padding = np.array([2, 0])
    dilation = np.array([1, 1])
    if with_dilation and (feature == "dilation" or rng.random() < 0.3):
        dilation = rng.integers(1, 4, size=2)
    ceil_mode = feature == "ceil_mode" or bool(rng.random() < 0.4)
    effective = dilation * (kernel - 1) + 1
    low = np.maximum(1, effective - 2 * padding)
    size = low + rng.integers(0, 7, size=2)
    n = _batch(rng, feature)
    c = int(rng.integers(1, 4)) if feature != "depthwise" else 1
    args = dict(kernel_size=_pair_or_int(rng, kernel),
                stride=None if stride is None else _pair_or_int(rng, stride),
                padding=_pair_or_int(rng, padding), ceil_mode=ceil_mode)
    if with_dilation:
        args["dilation"] = _pair_or_int(rng, dilation)
    return (n, c, int(size[0]), int(size[1])), args


def _pool_values(rng, shape, dtype, feature):
    """Pooling inputs: normal values, heavy ties, or NaN/-inf/+inf (incl. all -inf planes)."""
    kind = {"ties": 1, "special_values": 2}.get(feature, int(rng.choice([0, 0, 1, 2])))
    if kind == 1:
        return rng.integers(-1, 2, size=shape).astype(dtype), "ties"
    if kind == 2:
        a = _values(rng, shape, dtype, feature, special=True)
        if a.size and rng.random() < 0.3:
            a.reshape(-1, shape[-2], shape[-1])[0] = -np.inf  # a whole plane of -inf
        return a, "special"
    return _values(rng, shape, dtype, feature), "normal"


def _cases(count=CASES_PER_CHUNK):
    for index in range(count):
        yield _feature(index)


def _describe(**kwargs):
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_conv2d(name, dtype, chunk):
    rng = np.random.default_rng([1, chunk, np.dtype(dtype).itemsize])
    for feature in _cases():
        x_shape, w_shape, args = _conv_case(rng, feature)
        x = _values(rng, x_shape, dtype, feature)
        w = _values(rng, w_shape, dtype, "plain")
        b = _values(rng, w_shape[:1], dtype, "plain") if rng.random() < 0.6 else None
        (x, ), _ = _maybe_unbatch([x], x_shape[0], feature, rng)
        expected = cconv.conv2d(x, w, b, **args, backend=REFERENCE)
        (xl, layout_x), (wl, layout_w) = _layout(rng, x, feature), _layout(rng, w, feature)
        context = _describe(feature=feature, x=x.shape, w=w.shape, bias=b is not None, **args,
                            layouts=(layout_x, layout_w), dtype=np.dtype(dtype).name)
        actual = cconv.conv2d(xl, wl, b, **args, backend=name)
        assert_close(actual, expected, context=context)
        tally("differential", "conv2d")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_conv2d_backward(name, dtype, chunk):
    """All eight output_mask combinations, in turn; unrequested gradients are None."""
    rng = np.random.default_rng([2, chunk, np.dtype(dtype).itemsize])
    for index, feature in enumerate(_cases()):
        x_shape, w_shape, args = _conv_case(rng, feature)
        x = _values(rng, x_shape, dtype, feature)
        w = _values(rng, w_shape, dtype, "plain")
        y_shape = cconv.conv2d(x, w, **args, backend=REFERENCE).shape
        gy = _values(rng, y_shape, dtype, "plain")
        (x, gy), _ = _maybe_unbatch([x, gy], x_shape[0], feature, rng)
        mask = MASKS[(index + chunk) % len(MASKS)]
        expected = cconv.conv2d_backward(gy, x, w, **args, backend=REFERENCE)
        (gyl, lg), (xl, lx), (wl, lw) = (_layout(rng, a, feature) for a in (gy, x, w))
        context = _describe(feature=feature, x=x.shape, w=w.shape, **args, mask=mask,
                            layouts=(lg, lx, lw), dtype=np.dtype(dtype).name)
        actual = cconv.conv2d_backward(gyl, xl, wl, **args, output_mask=mask, backend=name)
        assert len(actual) == 3
        for wanted, got, ref, what in zip(mask, actual, expected, ("input", "weight", "bias")):
            if wanted:
                assert_close(got, ref, context=f"grad_{what}: {context}")
            else:
                assert got is None, f"grad_{what} computed although output_mask is False ({context})"
        tally("differential", "conv2d_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_conv_transpose2d(name, dtype, chunk):
    rng = np.random.default_rng([3, chunk, np.dtype(dtype).itemsize])
    for feature in _cases():
        x_shape, w_shape, args = _transpose_case(rng, feature)
        x = _values(rng, x_shape, dtype, feature)
        w = _values(rng, w_shape, dtype, "plain")
        b = _values(rng, (w_shape[1] * args["groups"],), dtype, "plain") if rng.random() < 0.5 else None
        (x, ), _ = _maybe_unbatch([x], x_shape[0], feature, rng)
        expected = cconv.conv_transpose2d(x, w, b, **args, backend=REFERENCE)
        (xl, lx), (wl, lw) = _layout(rng, x, feature), _layout(rng, w, feature)
        context = _describe(feature=feature, x=x.shape, w=w.shape, bias=b is not None, **args,
                            layouts=(lx, lw), dtype=np.dtype(dtype).name)
        actual = cconv.conv_transpose2d(xl, wl, b, **args, backend=name)
        assert_close(actual, expected, context=context)
        tally("differential", "conv_transpose2d")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_conv_transpose2d_backward(name, dtype, chunk):
    rng = np.random.default_rng([4, chunk, np.dtype(dtype).itemsize])
    for index, feature in enumerate(_cases()):
        x_shape, w_shape, args = _transpose_case(rng, feature)
        # Non-finite x meets the zero padding of grad_output in grad_weight: that case has its
        # own test, test_nonfinite_through_zero_padding.
        x = _values(rng, x_shape, dtype, "plain")
        w = _values(rng, w_shape, dtype, "plain")
        gy = _values(rng, cconv.conv_transpose2d(x, w, **args, backend=REFERENCE).shape, dtype, "plain")
        (x, gy), _ = _maybe_unbatch([x, gy], x_shape[0], feature, rng)
        mask = MASKS[(index + chunk) % len(MASKS)]
        expected = cconv.conv_transpose2d_backward(gy, x, w, **args, backend=REFERENCE)
        (gyl, lg), (xl, lx), (wl, lw) = (_layout(rng, a, feature) for a in (gy, x, w))
        context = _describe(feature=feature, x=x.shape, w=w.shape, **args, mask=mask,
                            layouts=(lg, lx, lw), dtype=np.dtype(dtype).name)
        actual = cconv.conv_transpose2d_backward(gyl, xl, wl, **args, output_mask=mask, backend=name)
        for wanted, got, ref, what in zip(mask, actual, expected, ("input", "weight", "bias")):
            if wanted:
                assert_close(got, ref, context=f"grad_{what}: {context}")
            else:
                assert got is None, f"grad_{what} computed although output_mask is False ({context})"
        tally("differential", "conv_transpose2d_backward")


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_max_pool2d(name, dtype, chunk):
    """Values and int64 indices identical to the reference (ties, NaN, -inf included)."""
    rng = np.random.default_rng([5, chunk, np.dtype(dtype).itemsize])
    for feature in _cases():
        shape, args = _pool_case(rng, feature)
        x, values = _pool_values(rng, shape, dtype, feature)
        (x, ), _ = _maybe_unbatch([x], shape[0], feature, rng)
        expected, expected_idx = cconv.max_pool2d(x, **args, return_indices=True, backend=REFERENCE)
        xl, layout = _layout(rng, x, feature)
        context = _describe(feature=feature, x=x.shape, values=values, **args, layout=layout,
                            dtype=np.dtype(dtype).name)
        actual, actual_idx = cconv.max_pool2d(xl, **args, return_indices=True, backend=name)
        assert_identical(actual, expected, context=context)
        assert_identical(actual_idx, expected_idx, context=f"indices: {context}")
        assert_identical(cconv.max_pool2d(xl, **args, backend=name), expected, context=context)
        tally("differential", "max_pool2d")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_max_pool2d_backward(name, dtype, chunk):
    """Indices from a real forward pass, or arbitrary in-range ones (heavy accumulation)."""
    rng = np.random.default_rng([6, chunk, np.dtype(dtype).itemsize])
    for feature in _cases():
        shape, args = _pool_case(rng, feature)
        x, values = _pool_values(rng, shape, dtype, feature)
        out, indices = cconv.max_pool2d(x, **args, return_indices=True, backend=REFERENCE)
        if rng.random() < 0.3:
            indices = rng.integers(0, shape[2] * shape[3], size=indices.shape, dtype=np.int64)
            values = "random indices"
        gy = _values(rng, out.shape, dtype, "plain")
        (gy, indices), unbatched = _maybe_unbatch([gy, indices], shape[0], feature, rng)
        input_shape = shape[1:] if unbatched else shape
        input_shape = list(input_shape) if rng.random() < 0.3 else tuple(input_shape)
        expected = cconv.max_pool2d_backward(gy, indices, input_shape, backend=REFERENCE)
        (gyl, lg), (il, li) = _layout(rng, gy, feature), _layout(rng, indices, feature)
        context = _describe(feature=feature, input_shape=input_shape, values=values, **args,
                            layouts=(lg, li), dtype=np.dtype(dtype).name)
        actual = cconv.max_pool2d_backward(gyl, il, input_shape, backend=name)
        assert_close(actual, expected, context=context)
        tally("differential", "max_pool2d_backward")


def _avg_args(rng, args):
    args = dict(args, count_include_pad=bool(rng.random() < 0.5))
    if rng.random() < 0.3:
        args["divisor_override"] = int(rng.choice([-3, -1, 1, 2, 5, 7]))
    return args


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_avg_pool2d(name, dtype, chunk):
    rng = np.random.default_rng([7, chunk, np.dtype(dtype).itemsize])
    for feature in _cases():
        shape, args = _pool_case(rng, feature, with_dilation=False)
        args = _avg_args(rng, args)
        x, values = _pool_values(rng, shape, dtype, feature)
        (x, ), _ = _maybe_unbatch([x], shape[0], feature, rng)
        expected = cconv.avg_pool2d(x, **args, backend=REFERENCE)
        xl, layout = _layout(rng, x, feature)
        context = _describe(feature=feature, x=x.shape, values=values, **args, layout=layout,
                            dtype=np.dtype(dtype).name)
        assert_close(cconv.avg_pool2d(xl, **args, backend=name), expected, context=context)
        tally("differential", "avg_pool2d")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_avg_pool2d_backward(name, dtype, chunk):
    rng = np.random.default_rng([8, chunk, np.dtype(dtype).itemsize])
    for feature in _cases():
        shape, args = _pool_case(rng, feature, with_dilation=False)
        args = _avg_args(rng, args)
        out_shape = cconv.avg_pool2d(np.zeros(shape, dtype), **args, backend=REFERENCE).shape
        gy = _values(rng, out_shape, dtype, "plain")
        (gy, ), unbatched = _maybe_unbatch([gy], shape[0], feature, rng)
        input_shape = shape[1:] if unbatched else shape
        expected = cconv.avg_pool2d_backward(gy, input_shape, **args, backend=REFERENCE)
        gyl, layout = _layout(rng, gy, feature)
        context = _describe(feature=feature, input_shape=input_shape, **args, layout=layout,
                            dtype=np.dtype(dtype).name)
        assert_close(cconv.avg_pool2d_backward(gyl, input_shape, **args, backend=name), expected,
                     context=context)
        tally("differential", "avg_pool2d_backward")


# --------------------------------------------------------------------------
# the same argument space through hypothesis (derandomized: reproducible, shrinks failures)
# --------------------------------------------------------------------------

@st.composite
def conv_problems(draw):
    """conv2d arguments: shapes, stride, padding (incl. 'same' and asymmetric pairs), dilation, groups."""
    groups = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if stride == (1, 1) and draw(st.booleans()):
        padding, totals = "same", [d * (k - 1) for d, k in zip(dilation, kernel)]
    else:
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        totals = [2 * p for p in padding]
    size = [draw(st.integers(max(1, d * (k - 1) + 1 - t), d * (k - 1) + 8))
            for d, k, t in zip(dilation, kernel, totals)]
    return dict(x=(draw(st.integers(0, 3)), c, *size), w=(o, c // groups, *kernel),
                args=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                dtype=draw(st.sampled_from([np.float64, np.float32])), seed=draw(st.integers(0, 2 ** 32 - 1)))


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(problem=conv_problems())
def test_conv2d_hypothesis(name, problem):
    """conv2d forward and all three gradients on hypothesis-drawn arguments."""
    rng = np.random.default_rng(problem["seed"])
    x = rng.standard_normal(problem["x"]).astype(problem["dtype"])
    w = rng.standard_normal(problem["w"]).astype(problem["dtype"])
    args = problem["args"]
    y = cconv.conv2d(x, w, **args, backend=name)
    assert_close(y, cconv.conv2d(x, w, **args, backend=REFERENCE), context=str(problem))
    gy = rng.standard_normal(y.shape).astype(problem["dtype"])
    actual = cconv.conv2d_backward(gy, x, w, **args, backend=name)
    for a, e in zip(actual, cconv.conv2d_backward(gy, x, w, **args, backend=REFERENCE)):
        assert_close(a, e, context=str(problem))
    tally("differential", "conv2d+backward (hypothesis)")


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(shape=st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       pad=st.booleans(), ceil_mode=st.booleans(), levels=st.integers(1, 4), seed=st.integers(0, 2 ** 32 - 1))
def test_max_pool2d_hypothesis(name, shape, kernel, stride, pad, ceil_mode, levels, seed):
    """max_pool2d (values, indices) and its backward; few distinct values, so many ties."""
    padding = (kernel[0] // 2, kernel[1] // 2) if pad else (0, 0)
    if any(k > s + 2 * p for k, s, p in zip(kernel, shape[2:], padding)):
        return   # kernel larger than the padded input: a ValueError, covered by test_validation
    x = np.random.default_rng(seed).integers(0, levels, size=shape).astype(np.float64)
    args = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    out, idx = cconv.max_pool2d(x, **args, return_indices=True, backend=name)
    ref, ref_idx = cconv.max_pool2d(x, **args, return_indices=True, backend=REFERENCE)
    assert_identical(out, ref, context=str(args))
    assert_identical(idx, ref_idx, context=str(args))
    assert_close(cconv.max_pool2d_backward(out, idx, shape, backend=name),
                 cconv.max_pool2d_backward(ref, ref_idx, shape, backend=REFERENCE), context=str(args))
    tally("differential", "max_pool2d+backward (hypothesis)")


# --------------------------------------------------------------------------
# larger problems: the GEMM path, K and column blocking, several threads
# --------------------------------------------------------------------------

def _large_conv_case(rng, symmetric_padding=False):
    """Channels per group >= 4 (GEMM path), K = C/g*kh*kw often > 256, Ho*Wo often > 192,
    enough multiply-adds to run on several threads; tile-unfriendly sizes on purpose."""
    groups = int(rng.choice([1, 1, 2, 3]))
    c_per_group, o_per_group = int(rng.integers(4, 41)) // groups + 1, int(rng.integers(4, 25))
    kernel = rng.integers(1, 6, size=2)
    dilation = rng.integers(1, 3, size=2) if rng.random() < 0.3 else np.array([1, 1])
    stride = rng.integers(1, 3, size=2) if rng.random() < 0.4 else np.array([1, 1])
    if not symmetric_padding and (stride == 1).all() and rng.random() < 0.3:
        padding, pad_total = "same", dilation * (kernel - 1)
    else:
        pad = rng.integers(0, 3, size=2)
        padding, pad_total = (int(pad[0]), int(pad[1])), 2 * pad
    size = np.maximum(1, dilation * (kernel - 1) + 1 - pad_total) + rng.integers(6, 24, size=2)
    x_shape = (int(rng.integers(1, 4)), groups * c_per_group, int(size[0]), int(size[1]))
    w_shape = (groups * o_per_group, c_per_group, int(kernel[0]), int(kernel[1]))
    args = dict(stride=_pair_or_int(rng, stride), padding=padding, dilation=_pair_or_int(rng, dilation),
                groups=groups)
    return x_shape, w_shape, args


def _large_calls(rng, dtype):
    """(op name, call(backend), description) for one large configuration of each conv op."""
    x_shape, w_shape, args = _large_conv_case(rng)
    x, w = _values(rng, x_shape, dtype, "plain"), _values(rng, w_shape, dtype, "plain")
    b = _values(rng, w_shape[:1], dtype, "plain")
    gy = _values(rng, cconv.conv2d(x, w, **args, backend=REFERENCE).shape, dtype, "plain")
    mask = MASKS[int(rng.integers(0, 7))]
    conv = _describe(x=x_shape, w=w_shape, **args)
    # conv_transpose2d maps conv2d's output shape back to its input shape (the adjoint)
    x_shape, w_shape, targs = _large_conv_case(rng, symmetric_padding=True)
    probe = cconv.conv2d(np.zeros(x_shape, dtype), np.zeros(w_shape, dtype), **targs, backend=REFERENCE)
    stride, dilation = (targs["stride"],) * 2 if isinstance(targs["stride"], int) else targs["stride"], \
        (targs["dilation"],) * 2 if isinstance(targs["dilation"], int) else targs["dilation"]
    targs["output_padding"] = tuple(
        (n + 2 * p - d * (k - 1) - 1) % s
        for n, p, d, k, s in zip(x_shape[2:], targs["padding"], dilation, w_shape[2:], stride))
    tx, tw = _values(rng, probe.shape, dtype, "plain"), _values(rng, w_shape, dtype, "plain")
    tgy = _values(rng, x_shape, dtype, "plain")
    tconv = _describe(x=tx.shape, w=w_shape, **targs)
    return [
        ("conv2d", lambda bk: cconv.conv2d(x, w, b, **args, backend=bk), conv),
        ("conv2d_backward", lambda bk: cconv.conv2d_backward(gy, x, w, **args, output_mask=mask, backend=bk),
         f"{conv}, mask={mask}"),
        ("conv_transpose2d", lambda bk: cconv.conv_transpose2d(tx, tw, None, **targs, backend=bk), tconv),
        ("conv_transpose2d_backward", lambda bk: cconv.conv_transpose2d_backward(tgy, tx, tw, **targs, backend=bk),
         tconv),
    ]


LARGE_CASES = int(os.environ.get("CCONV_TEST_LARGE_CASES", "20"))  # per dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_large(name, dtype):
    rng = np.random.default_rng([9, np.dtype(dtype).itemsize])
    for _ in range(LARGE_CASES):
        for op, call, context in _large_calls(rng, dtype):
            expected, actual = call(REFERENCE), call(name)
            expected = expected if isinstance(expected, tuple) else (expected,)
            actual = actual if isinstance(actual, tuple) else (actual,)
            for a, e in zip(actual, expected):
                if e is None:
                    assert a is None, f"{op}: unrequested gradient computed ({context})"
                else:
                    assert_close(a, e, context=f"{op}: {context}")
            tally("differential", f"{op} (large)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_streamed_outputs(name, dtype):
    """Outputs of >= 4 MiB leave the packed-im2col forward through non-temporal stores when its
    pixel blocks span images (maps whose last GEMM panel would be mostly empty): 7x7 maps, odd
    row lengths, so every copy has unaligned ends and panels straddle image boundaries."""
    rng = np.random.default_rng([11, np.dtype(dtype).itemsize])
    if name == "cython":
        panel = cconv.backend_info()["gemm_tile"][np.dtype(dtype).name][1]
        padded = -(-49 // panel) * panel
        assert 16 * (padded - 49) > padded, "7x7 maps must take the image-spanning path"
    x, w = _values(rng, (100, 20, 7, 7), dtype, "plain"), _values(rng, (220, 20, 1, 1), dtype, "plain")
    b = _values(rng, (220,), dtype, "plain")
    wide_x = _values(rng, (100, 20, 13, 13), dtype, "plain")
    gy, wide_in = _values(rng, (100, 20, 7, 7), dtype, "plain"), _values(rng, (100, 220, 7, 7), dtype, "plain")
    calls = {
        "pointwise conv2d": lambda bk: cconv.conv2d(x, w, b, backend=bk),
        "1x1 stride-2 conv2d": lambda bk: cconv.conv2d(wide_x, w, b, stride=2, backend=bk),
        "pointwise grad_input": lambda bk: cconv.conv2d_backward(
            gy, wide_in, np.ascontiguousarray(w.transpose(1, 0, 2, 3)), output_mask=(True, False, False),
            backend=bk)[0],
    }
    for context, call in calls.items():
        expected, actual = call(REFERENCE), call(name)
        assert expected.size * 4 >= 4 * 2**20, context  # big enough to be streamed
        assert_close(actual, expected, context=context)
        tally("differential", "conv2d (streamed output)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_large(name, dtype):
    """Many planes of a larger image, so that the pooling kernels split planes across threads."""
    rng = np.random.default_rng([10, np.dtype(dtype).itemsize])
    for _ in range(LARGE_CASES):
        shape = (int(rng.integers(1, 4)), int(rng.integers(3, 17)),
                 int(rng.integers(20, 41)), int(rng.integers(20, 41)))
        x, _ = _pool_values(rng, shape, dtype, "random")
        k = int(rng.integers(2, 5))
        args = dict(kernel_size=k, stride=int(rng.integers(1, 3)), padding=int(rng.integers(0, k // 2 + 1)),
                    ceil_mode=bool(rng.random() < 0.5))
        context = _describe(x=shape, **args)
        out, idx = cconv.max_pool2d(x, **args, return_indices=True, backend=REFERENCE)
        got, got_idx = cconv.max_pool2d(x, **args, return_indices=True, backend=name)
        assert_identical(got, out, context=context)
        assert_identical(got_idx, idx, context=context)
        gy = _values(rng, out.shape, dtype, "plain")
        assert_close(cconv.max_pool2d_backward(gy, idx, shape, backend=name),
                     cconv.max_pool2d_backward(gy, idx, shape, backend=REFERENCE), context=context)
        assert_close(cconv.avg_pool2d(x, **args, backend=name), cconv.avg_pool2d(x, **args, backend=REFERENCE),
                     context=context)
        assert_close(cconv.avg_pool2d_backward(gy, shape, **args, count_include_pad=False, backend=name),
                     cconv.avg_pool2d_backward(gy, shape, **args, count_include_pad=False, backend=REFERENCE),
                     context=context)
        tally("differential", "pooling (large)", 4)


KERNEL_VARIANTS = [
    # every kernel exists per instruction set (CCONV_KERNEL_ISA); the default is the best the
    # CPU has.  Forced algorithms (CCONV_CONV_ALGO) are covered by test_algorithms.py.
    {"CCONV_KERNEL_ISA": "generic"},
    {"CCONV_KERNEL_ISA": "avx2"},
    {"CCONV_KERNEL_ISA": "avx512f"},
]


@pytest.mark.parametrize("variant", KERNEL_VARIANTS, ids=lambda v: "=".join(*v.items()))
def test_kernel_variants(name, variant):
    """Re-run a cross-section of this module (chunk 0 of every op, the large and the hypothesis
    cases) and test_algorithms.py's in-process tests (every algorithm the planner picks, random
    geometries, thread counts) in a subprocess with the kernels switched to one instruction set."""
    if name != "cython":
        pytest.skip("kernel variants exist only in the compiled backend")
    isa = variant["CCONV_KERNEL_ISA"]
    if isa not in cconv.backend_info()["simd_supported"]:
        pytest.skip(f"this CPU does not run {isa}")
    env = dict(os.environ, CCONV_TEST_BACKENDS="cython", CCONV_TEST_LARGE_CASES="8", **variant)
    env.pop("CCONV_CONV_ALGO", None)
    here = os.path.dirname(os.path.abspath(__file__))
    probe = subprocess.run([sys.executable, "-c", "import cconv; i = cconv.backend_info(); "
                            "print(i['simd'], i['pool_simd'])"],
                           env=env, cwd=here, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[0] == isa
    assert probe.stdout.split()[1] == ("generic" if isa == "generic" else "avx2")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.basename(__file__),
         "test_algorithms.py", "-k",
         "(cython and (conv_large or conv2d_hypothesis or [0- or nonfinite) and not variants) or "
         "planner_choice or unforced or bit_identical"],
        env=env, cwd=here, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{variant}:\n{result.stdout[-4000:]}"
    ran = re.search(r"cconv differential: (\d+) cases", result.stdout)
    assert ran and int(ran.group(1)) > 0, result.stdout[-2000:]
    assert re.search(r"cconv algorithms \(planner's choice\): (\d+) cases", result.stdout), result.stdout[-2000:]
    tally("differential (kernel variants)", "=".join(*variant.items()), int(ran.group(1)))


# --------------------------------------------------------------------------
# NaN and Inf where PyTorch multiplies them by the zero padding
# --------------------------------------------------------------------------

def _nonfinite_cases(dtype=np.float64):
    """A NaN or Inf in an operand that the zero padding multiplies: PyTorch (and the reference)
    compute 0 * NaN = NaN there, so the NaN reaches outputs that a padding-skipping kernel misses."""
    def ramp(*shape):
        return np.linspace(-1, 1, int(np.prod(shape))).reshape(shape).astype(dtype)

    x, w, gy = ramp(2, 3, 5, 4), ramp(2, 3, 3, 3), ramp(2, 2, 5, 4)
    # 16 output channels on 8x8: big enough for the GEMM-class kernels (float32 on AVX-512:
    # channels in the vector lanes), which must multiply the padding like PyTorch.
    x16, w16 = ramp(2, 3, 8, 8), ramp(16, 3, 3, 3)

    def poke(a, value, where=(0, 0, 0, 0)):
        a = a.copy()
        a[where] = value
        return a

    return {
        "conv2d, NaN in weight": lambda b: cconv.conv2d(x, poke(w, np.nan), padding=1, backend=b),
        "conv2d, +inf in weight": lambda b: cconv.conv2d(x, poke(w, np.inf), padding=1, backend=b),
        "conv2d 16 channels, NaN in weight": lambda b: cconv.conv2d(
            x16, poke(w16, np.nan, (5, 1, 2, 0)), padding=1, backend=b),
        "conv2d 16 channels, -inf in weight": lambda b: cconv.conv2d(
            x16, poke(w16, -np.inf, (15, 0, 0, 2)), padding=1, backend=b),
        # one channel on an image whose padded copy is over the compiled kernels' 4M-element
        # bound: too few channels for a GEMM to pay, yet it must not skip the padding
        "conv2d huge image, NaN in weight": lambda b: cconv.conv2d(
            ramp(1, 1, 2100, 2100), poke(ramp(1, 1, 3, 3), np.nan, (0, 0, 2, 2)), padding=1, backend=b),
        "conv2d_backward, NaN in grad_output": lambda b: cconv.conv2d_backward(
            poke(gy, np.nan), x, w, padding=1, backend=b),
        "conv2d_backward, -inf in grad_output": lambda b: cconv.conv2d_backward(
            poke(gy, -np.inf, (1, 1, 4, 3)), x, w, padding=1, backend=b),
        "conv_transpose2d_backward, NaN in input": lambda b: cconv.conv_transpose2d_backward(
            gy, poke(gy, np.nan), ramp(2, 2, 3, 3), padding=1, backend=b),
    }


@pytest.mark.parametrize("case", list(_nonfinite_cases()))
@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_through_zero_padding(name, case, dtype):
    """NaN/Inf propagate exactly as in PyTorch (test_reference checks the reference against torch)."""
    call = _nonfinite_cases(dtype)[case]
    with np.errstate(invalid="ignore"):
        expected, actual = call(REFERENCE), call(name)
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    for a, e in zip(actual, expected):
        assert_close(a, e, context=case)
    tally("differential", "non-finite through padding")


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------

def _determinism_calls(dtype):
    """One call per op, big enough for the kernels to split work across threads."""
    rng = np.random.default_rng(99)
    x = rng.standard_normal((4, 6, 23, 19)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    conv = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    gy = rng.standard_normal(cconv.conv2d(x, w, **conv, backend=REFERENCE).shape).astype(dtype)
    tw = rng.standard_normal((6, 4, 3, 3)).astype(dtype)
    tconv = dict(stride=2, padding=1, output_padding=1, groups=2)
    tgy = rng.standard_normal(cconv.conv_transpose2d(x, tw, **tconv, backend=REFERENCE).shape).astype(dtype)
    pool = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    out, idx = cconv.max_pool2d(x, **pool, return_indices=True, backend=REFERENCE)
    pgy = rng.standard_normal(out.shape).astype(dtype)
    return {
        "conv2d": lambda b_: cconv.conv2d(x, w, b, **conv, backend=b_),
        "conv2d_backward": lambda b_: cconv.conv2d_backward(gy, x, w, **conv, backend=b_),
        "conv_transpose2d": lambda b_: cconv.conv_transpose2d(x, tw, None, **tconv, backend=b_),
        "conv_transpose2d_backward": lambda b_: cconv.conv_transpose2d_backward(tgy, x, tw, **tconv, backend=b_),
        "max_pool2d": lambda b_: cconv.max_pool2d(x, **pool, return_indices=True, backend=b_),
        "max_pool2d_backward": lambda b_: cconv.max_pool2d_backward(pgy, idx, x.shape, backend=b_),
        "avg_pool2d": lambda b_: cconv.avg_pool2d(x, **pool, count_include_pad=False, backend=b_),
        "avg_pool2d_backward": lambda b_: cconv.avg_pool2d_backward(pgy, x.shape, **pool, backend=b_),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic(name, dtype):
    """The same call twice gives bit-identical results (and agrees with the reference)."""
    for op, call in _determinism_calls(dtype).items():
        first, second = call(name), call(name)
        first = first if isinstance(first, tuple) else (first,)
        second = second if isinstance(second, tuple) else (second,)
        for a, b in zip(first, second):
            assert a.tobytes() == b.tobytes(), f"{op}: two identical calls differ"
        expected = call(REFERENCE)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for a, e in zip(first, expected):
            if a.dtype.kind == "f" and op != "max_pool2d":
                assert_close(a, e, context=op)
            else:
                assert_identical(a, e, context=op)
        tally("differential", "determinism")
