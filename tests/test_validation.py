"""Hostile inputs: the bad-input table, empty batches, and the promise that inputs are
never modified and outputs never alias them.

``BAD_INPUTS`` lists each kind of bad input with the error it must raise and, for
every public function it applies to, the arguments that trigger it. Every entry is
tried on every backend; the message must name the problem (``match``).
"""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from conftest import tally

# Valid arguments that each bad-input entry spoils in one way.
X = np.ones((2, 4, 6, 6))                       # input (N, C, H, W)
W = np.ones((6, 4, 3, 3))                       # conv2d weight (O, C, kh, kw)
GY = np.ones((2, 6, 4, 4))                      # conv2d grad_output
TW = np.ones((4, 3, 3, 3))                      # conv_transpose2d weight (C_in, C_out, kh, kw)
TGY = np.ones((2, 3, 8, 8))                     # conv_transpose2d grad_output
PGY = np.ones((2, 4, 3, 3))                     # pooling grad_output for kernel_size=2
IDX = cconv.max_pool2d(X, 2, return_indices=True, backend="numpy")[1]
HUGE = 2 ** 40                                  # HUGE**2 elements do not fit in 64 bits


def _conv2d(backend, x=X, w=W, bias=None, **kw):
    return cconv.conv2d(x, w, bias, **kw, backend=backend)


def _conv2d_backward(backend, gy=GY, x=X, w=W, **kw):
    return cconv.conv2d_backward(gy, x, w, **kw, backend=backend)


def _conv_transpose2d(backend, x=X, w=TW, bias=None, **kw):
    return cconv.conv_transpose2d(x, w, bias, **kw, backend=backend)


def _conv_transpose2d_backward(backend, gy=TGY, x=X, w=TW, **kw):
    return cconv.conv_transpose2d_backward(gy, x, w, **kw, backend=backend)


def _max_pool2d(backend, x=X, kernel_size=2, **kw):
    return cconv.max_pool2d(x, kernel_size, **kw, return_indices=True, backend=backend)


def _max_pool2d_backward(backend, gy=PGY, indices=IDX, input_shape=X.shape):
    return cconv.max_pool2d_backward(gy, indices, input_shape, backend=backend)


def _avg_pool2d(backend, x=X, kernel_size=2, **kw):
    return cconv.avg_pool2d(x, kernel_size, **kw, backend=backend)


def _avg_pool2d_backward(backend, gy=PGY, input_shape=X.shape, kernel_size=2, **kw):
    return cconv.avg_pool2d_backward(gy, input_shape, kernel_size, **kw, backend=backend)


OPS = {
    "conv2d": _conv2d, "conv2d_backward": _conv2d_backward,
    "conv_transpose2d": _conv_transpose2d, "conv_transpose2d_backward": _conv_transpose2d_backward,
    "max_pool2d": _max_pool2d, "max_pool2d_backward": _max_pool2d_backward,
    "avg_pool2d": _avg_pool2d, "avg_pool2d_backward": _avg_pool2d_backward,
}
CONV_OPS = ["conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward"]
FORWARD_POOL_OPS = ["max_pool2d", "avg_pool2d"]
POOL_GEOMETRY_OPS = ["max_pool2d", "avg_pool2d", "avg_pool2d_backward"]


def _every(ops, **kwargs):
    return {op: [kwargs] for op in ops}


def _array_kind(dtype):
    """Arrays of an unsupported dtype, as each argument of each op."""
    def bad(a):
        return a.astype(dtype)
    return {
        "conv2d": [dict(x=bad(X)), dict(w=bad(W)), dict(bias=np.ones(6, dtype=dtype))],
        "conv2d_backward": [dict(gy=bad(GY)), dict(x=bad(X)), dict(w=bad(W))],
        "conv_transpose2d": [dict(x=bad(X)), dict(w=bad(TW))],
        "conv_transpose2d_backward": [dict(gy=bad(TGY)), dict(x=bad(X)), dict(w=bad(TW))],
        "max_pool2d": [dict(x=bad(X))],
        "max_pool2d_backward": [dict(gy=bad(PGY))],
        "avg_pool2d": [dict(x=bad(X))],
        "avg_pool2d_backward": [dict(gy=bad(PGY))],
    }


# kind -> (exception, message regex, {op: [keyword overrides, ...]})
BAD_INPUTS = {
    "input of the wrong ndim": (ValueError, r"must be 4-d \(N, C, H, W\) or 3-d", {
        **{op: [dict(x=X[0, 0]), dict(x=X[None])] for op in CONV_OPS + FORWARD_POOL_OPS},
    }),
    "grad_output of the wrong ndim": (ValueError, r"(must be 4-d|as many dims as grad_output|grad_output has shape)", {
        "max_pool2d_backward": [dict(gy=PGY[0, 0]), dict(gy=PGY[None])],
        "avg_pool2d_backward": [dict(gy=PGY[0, 0]), dict(gy=PGY[None])],
        "conv2d_backward": [dict(gy=GY[0])],
        "conv_transpose2d_backward": [dict(gy=TGY[None])],
    }),
    "weight of the wrong ndim": (ValueError, r"weight must be 4-d", _every(CONV_OPS, w=np.ones((6, 4, 3)))),
    "channel mismatch": (ValueError, r"input channels", {
        "conv2d": [dict(w=np.ones((6, 3, 3, 3)))], "conv2d_backward": [dict(w=np.ones((6, 3, 3, 3)))],
        "conv_transpose2d": [dict(w=np.ones((5, 3, 3, 3)))],
        "conv_transpose2d_backward": [dict(w=np.ones((5, 3, 3, 3)))],
    }),
    "groups not dividing the input channels": (ValueError, r"not divisible by groups=3", {
        "conv2d": [dict(groups=3, w=np.ones((6, 1, 3, 3)))],
        "conv2d_backward": [dict(groups=3, w=np.ones((6, 1, 3, 3)))],
        "conv_transpose2d": [dict(groups=3, w=np.ones((4, 1, 3, 3)))],
        "conv_transpose2d_backward": [dict(groups=3, w=np.ones((4, 1, 3, 3)))],
    }),
    "groups not dividing the output channels": (ValueError, r"out_channels=5 is not divisible by groups=2", {
        "conv2d": [dict(groups=2, w=np.ones((5, 2, 3, 3)))],
        "conv2d_backward": [dict(groups=2, w=np.ones((5, 2, 3, 3)))],
    }),
    "groups < 1": (ValueError, r"groups must be >= 1", {
        op: [dict(groups=0), dict(groups=-2)] for op in CONV_OPS}),
    "kernel larger than the padded input": (ValueError, r"output size would be", {
        "conv2d": [dict(w=np.ones((6, 4, 7, 3))), dict(w=np.ones((6, 4, 3, 4)), dilation=(1, 3))],
        "conv2d_backward": [dict(w=np.ones((6, 4, 3, 8)))],
        "conv_transpose2d": [dict(padding=9)],
        "conv_transpose2d_backward": [dict(padding=(0, 9))],
        "max_pool2d": [dict(kernel_size=7), dict(kernel_size=(2, 4), dilation=(1, 2))],
        "avg_pool2d": [dict(kernel_size=(2, 7))],
        "avg_pool2d_backward": [dict(kernel_size=7)],
    }),
    "empty kernel": (ValueError, r"(non-zero sizes|kernel_size must be >= 1)", {
        "conv2d": [dict(w=np.ones((6, 4, 0, 3))), dict(w=np.ones((0, 4, 3, 3)))],
        "conv2d_backward": [dict(w=np.ones((6, 4, 3, 0)))],
        "conv_transpose2d": [dict(w=np.ones((4, 3, 0, 3)))],
        "max_pool2d": [dict(kernel_size=0)], "avg_pool2d": [dict(kernel_size=(2, 0))],
        "avg_pool2d_backward": [dict(kernel_size=0)],
    }),
    "stride 0 or negative": (ValueError, r"stride must be >= 1", {
        **{op: [dict(stride=0), dict(stride=(1, -1))] for op in CONV_OPS + POOL_GEOMETRY_OPS},
    }),
    "dilation 0 or negative": (ValueError, r"dilation must be >= 1", {
        op: [dict(dilation=0), dict(dilation=(-1, 1))] for op in CONV_OPS + ["max_pool2d"]}),
    "negative padding": (ValueError, r"padding must be >= 0", {
        **{op: [dict(padding=-1), dict(padding=(0, -2))] for op in CONV_OPS + POOL_GEOMETRY_OPS},
        "conv_transpose2d": [dict(padding=-1), dict(output_padding=(-1, 0))],
    }),
    "pool padding over half the kernel": (ValueError, r"at most half of kernel_size", {
        op: [dict(padding=2), dict(kernel_size=(4, 3), padding=(2, 2))] for op in POOL_GEOMETRY_OPS}),
    "dilated pool window covering only padding": (ValueError, r"covers no input pixel", {
        "max_pool2d": [dict(x=np.ones((1, 1, 1, 6)), kernel_size=(2, 2), padding=(1, 0), dilation=(2, 1))],
    }),
    "output_padding too large": (ValueError, r"output_padding .* must be smaller than either stride", {
        "conv_transpose2d": [dict(output_padding=1), dict(stride=2, output_padding=(0, 2))],
        "conv_transpose2d_backward": [dict(stride=(2, 3), dilation=(1, 3), output_padding=(2, 0))],
    }),
    "'same' padding with stride > 1": (ValueError, r"'same' is not supported for strided", {
        op: [dict(padding="same", stride=2), dict(padding="same", stride=(1, 2))]
        for op in ("conv2d", "conv2d_backward")}),
    "unknown padding string": (ValueError, r"padding string must be 'valid' or 'same'", {
        op: [dict(padding="full"), dict(padding="SAME")] for op in ("conv2d", "conv2d_backward")}),
    "padding string where only ints are allowed": ((ValueError, TypeError), r"padding", {
        **{op: [dict(padding="same")] for op in ("conv_transpose2d", "conv_transpose2d_backward")},
        **{op: [dict(padding="valid")] for op in POOL_GEOMETRY_OPS},
    }),
    "tuples of the wrong length": (ValueError, r"must be an int or a tuple of 2 ints \(h, w\)", {
        **{op: [dict(stride=(1, 1, 1)), dict(padding=(1, 1, 1)), dict(dilation=())] for op in CONV_OPS},
        "conv_transpose2d": [dict(output_padding=(0, 0, 0))],
        **{op: [dict(kernel_size=(2, 2, 2)), dict(padding=[0, 0, 0])] for op in POOL_GEOMETRY_OPS},
        "max_pool2d": [dict(dilation=(1, 1, 1))],
    }),
    "float where an int is required": (TypeError, r"must be an int, got float", {
        **{op: [dict(stride=1.0), dict(padding=(1, 0.5)), dict(groups=1.0)] for op in CONV_OPS},
        **{op: [dict(kernel_size=2.0), dict(stride=(2.0, 2))] for op in POOL_GEOMETRY_OPS},
        "avg_pool2d": [dict(divisor_override=2.0)],
    }),
    "bool where an int is required": (TypeError, r"must be an int, got bool", {
        **{op: [dict(stride=True), dict(groups=True), dict(dilation=(1, False))] for op in CONV_OPS},
        **{op: [dict(kernel_size=True), dict(padding=(False, 0))] for op in POOL_GEOMETRY_OPS},
        "max_pool2d_backward": [dict(input_shape=(2, 4, True, 6))],
    }),
    "other non-int where an int is required": (TypeError, r"must be an int", {
        **{op: [dict(stride="2"), dict(padding=None), dict(groups=np.array([1]))] for op in CONV_OPS},
        **{op: [dict(kernel_size=None), dict(kernel_size="2"), dict(kernel_size=np.array(2.5))]
           for op in POOL_GEOMETRY_OPS},
    }),
    "non-bool where a bool is required": (TypeError, r"must be a bool", {
        "max_pool2d": [dict(ceil_mode=1), dict(ceil_mode="yes")],
        "avg_pool2d": [dict(ceil_mode=0), dict(count_include_pad=1)],
        "avg_pool2d_backward": [dict(count_include_pad=None)],
    }),
    "integer arrays": (TypeError, r"dtype int64; cconv supports float32 and float64", _array_kind(np.int64)),
    "bool arrays": (TypeError, r"dtype bool; cconv supports float32 and float64", _array_kind(np.bool_)),
    "complex arrays": (TypeError, r"dtype complex128; cconv supports", _array_kind(np.complex128)),
    "object arrays": (TypeError, r"dtype object; cconv supports", _array_kind(object)),
    "float16 mixed with float64": (TypeError, r"must share one float dtype, got .*float16", {
        "conv2d": [dict(x=X.astype(np.float16)), dict(bias=np.ones(6, np.float16))],
        "conv2d_backward": [dict(gy=GY.astype(np.float16))],
        "conv_transpose2d_backward": [dict(w=TW.astype(np.float16))],
    }),
    "array-likes of integers": (TypeError, r"dtype int64", {
        "conv2d": [dict(x=X.astype(int).tolist())], "max_pool2d": [dict(x=[[[1, 2], [3, 4]]])]}),
    "unconvertible array-likes": ((TypeError, ValueError), r"(could not be converted|dtype object)", {
        "conv2d": [dict(x=[[[1.0, 2.0], [3.0]]])], "avg_pool2d": [dict(x=[[[1.0], [2.0, 3.0]]])]}),
    "mixed float dtypes": (TypeError, r"must share one float dtype, got .*(float32.*float64|float64.*float32)", {
        "conv2d": [dict(x=X.astype(np.float32)), dict(bias=np.ones(6, np.float32))],
        "conv2d_backward": [dict(gy=GY.astype(np.float32)), dict(w=W.astype(np.float32))],
        "conv_transpose2d": [dict(w=TW.astype(np.float32))],
        "conv_transpose2d_backward": [dict(x=X.astype(np.float32))],
    }),
    "grad_output of the wrong shape": (ValueError, r"grad_output has shape .* expected", {
        "conv2d_backward": [dict(gy=np.ones((2, 6, 4, 5))), dict(gy=np.ones((2, 5, 4, 4))),
                            dict(gy=np.ones((3, 6, 4, 4)))],
        "conv_transpose2d_backward": [dict(gy=np.ones((2, 3, 8, 7))), dict(gy=np.ones((2, 4, 8, 8)))],
        "avg_pool2d_backward": [dict(input_shape=(2, 4, 8, 6)), dict(input_shape=(2, 4, 6, 6), kernel_size=3)],
    }),
    "input_shape not matching grad_output": (ValueError, r"(does not match input_shape|has shape|as many dims)", {
        "max_pool2d_backward": [dict(input_shape=(2, 3, 6, 6)), dict(input_shape=(1, 4, 6, 6)),
                                dict(input_shape=(4, 6, 6))],
        "avg_pool2d_backward": [dict(input_shape=(3, 4, 6, 6)), dict(input_shape=(4, 6, 6))],
    }),
    "input_shape of the wrong type or sign": ((TypeError, ValueError), r"input_shape", {
        op: [dict(input_shape=24), dict(input_shape="2x4x6x6"), dict(input_shape=(2, 4, -6, 6))]
        for op in ("max_pool2d_backward", "avg_pool2d_backward")}),
    "indices of the wrong shape": (ValueError, r"indices has shape", {
        "max_pool2d_backward": [dict(indices=IDX[:, :, :2]), dict(indices=IDX[0])]}),
    "indices of the wrong dtype": (TypeError, r"indices must be an int64 ndarray", {
        "max_pool2d_backward": [dict(indices=IDX.astype(np.int32)), dict(indices=IDX.astype(float)),
                                dict(indices=IDX.tolist())]}),
    "indices out of range": (ValueError, r"indices must lie in \[0, 36\)", {
        "max_pool2d_backward": [dict(indices=np.where(IDX == IDX.max(), 36, IDX)),
                                dict(indices=np.where(IDX == IDX.min(), -1, IDX)),
                                dict(indices=np.full_like(IDX, 2 ** 62))]}),
    "sizes whose element count overflows 64 bits": (ValueError, r"too many", {
        "conv2d": [dict(padding=HUGE)], "conv2d_backward": [dict(padding=(HUGE, HUGE))],
        "conv_transpose2d": [dict(stride=HUGE)], "conv_transpose2d_backward": [dict(stride=HUGE)],
        "max_pool2d_backward": [dict(input_shape=(2, 4, HUGE, HUGE))],
        "avg_pool2d_backward": [dict(input_shape=(2, 4, HUGE, HUGE))],
    }),
    "bias of the wrong length or ndim": (ValueError, r"bias must have shape \(\d+,\)", {
        "conv2d": [dict(bias=np.ones(5)), dict(bias=np.ones((6, 1))), dict(bias=np.float64(1.0))],
        "conv_transpose2d": [dict(bias=np.ones(4)), dict(bias=np.ones((1, 3)))],
    }),
    "bad output_mask": ((ValueError, TypeError), r"output_mask must", {
        op: [dict(output_mask=(True, True)), dict(output_mask=(1, 0, 1)), dict(output_mask="abc"),
             dict(output_mask=None)]
        for op in ("conv2d_backward", "conv_transpose2d_backward")}),
    "divisor_override zero": (ValueError, r"divisor_override must not be zero", {
        "avg_pool2d": [dict(divisor_override=0)], "avg_pool2d_backward": [dict(divisor_override=0)]}),
}


# Unknown backend names, tried through every public entry point that takes one.
UNKNOWN_BACKENDS = [("cuda", ValueError, r"unknown or unavailable backend 'cuda'"),
                    ("", ValueError, r"unknown or unavailable backend ''"),
                    (3, TypeError, r"backend name must be a str")]


CASES = [pytest.param(kind, op, i, id=f"{kind}-{op}-{i}")
         for kind, (_, _, calls) in BAD_INPUTS.items()
         for op, overrides in calls.items()
         for i in range(len(overrides))]


def test_table_is_broad():
    kinds = len(BAD_INPUTS) + 1   # + unknown backend names, tested below
    assert kinds >= 25
    # every public function appears in the table
    assert {op for _, _, calls in BAD_INPUTS.values() for op in calls} == set(OPS)


@pytest.mark.parametrize("kind,op,i", CASES)
def test_bad_input(backend, kind, op, i):
    error, match, calls = BAD_INPUTS[kind]
    with pytest.raises(error, match=match):
        OPS[op](backend, **calls[op][i])
    tally("bad-input table", kind)


@pytest.mark.parametrize("op", OPS)
def test_unknown_backend_name(op):
    for name, error, match in UNKNOWN_BACKENDS:
        with pytest.raises(error, match=match):
            OPS[op](name)
        tally("bad-input table", "unknown backend names")
    for name, error, match in UNKNOWN_BACKENDS:
        with pytest.raises(error, match=match):
            cconv.set_backend(name)
        with pytest.raises(error, match=match):
            with cconv.use_backend(name):
                pass


# --------------------------------------------------------------------------
# empty batch
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_batch(backend, dtype):
    """N = 0 gives empty outputs of the right shape and dtype (and zero weight/bias gradients), like PyTorch."""
    x = np.ones((0, 4, 6, 5), dtype)
    w = np.ones((6, 2, 3, 2), dtype)
    b = np.ones(6, dtype)
    y = cconv.conv2d(x, w, b, stride=2, padding=1, groups=2, backend=backend)
    assert y.shape == (0, 6, 3, 3) and y.dtype == dtype
    gx, gw, gb = cconv.conv2d_backward(y, x, w, stride=2, padding=1, groups=2, backend=backend)
    assert gx.shape == x.shape and gx.dtype == dtype
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    np.testing.assert_array_equal(gb, np.zeros_like(b))
    assert gw.dtype == gb.dtype == dtype

    tw = np.ones((4, 3, 2, 2), dtype)
    t = cconv.conv_transpose2d(x, tw, np.ones(3, dtype), stride=2, backend=backend)
    assert t.shape == (0, 3, 12, 10) and t.dtype == dtype
    gx, gw, gb = cconv.conv_transpose2d_backward(t, x, tw, stride=2, backend=backend)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros_like(tw))
    np.testing.assert_array_equal(gb, np.zeros(3, dtype))

    out, idx = cconv.max_pool2d(x, 2, return_indices=True, backend=backend)
    assert out.shape == idx.shape == (0, 4, 3, 2) and out.dtype == dtype and idx.dtype == np.int64
    assert cconv.max_pool2d_backward(out, idx, x.shape, backend=backend).shape == x.shape
    avg = cconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, backend=backend)
    assert avg.shape == (0, 4, 4, 3) and avg.dtype == dtype
    g = cconv.avg_pool2d_backward(avg, x.shape, 3, 2, 1, ceil_mode=True, backend=backend)
    assert g.shape == x.shape and g.dtype == dtype


def test_empty_batch_like_torch(backend):
    torch = pytest.importorskip("torch")
    x = np.ones((0, 4, 6, 5))
    w = np.ones((6, 2, 3, 2))
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=1, groups=2)
    assert cconv.conv2d(x, w, stride=2, padding=1, groups=2, backend=backend).shape == tuple(expected.shape)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True)
    assert cconv.max_pool2d(x, 3, 2, 1, ceil_mode=True, backend=backend).shape == tuple(expected.shape)


# --------------------------------------------------------------------------
# inputs are never modified; outputs never alias inputs
# --------------------------------------------------------------------------

def _layouts(a):
    """``a`` as C-ordered, Fortran-ordered and as a strided view into a bigger buffer."""
    big = np.full(tuple(2 * s for s in a.shape), -7.0, dtype=a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return {"C": a.copy(), "F": np.asfortranarray(a), "strided": view}


def _all_calls(rng, dtype):
    """(name, function of the input arrays, input arrays) for every public op."""
    def r(*shape):
        a = rng.standard_normal(shape).astype(dtype)
        a.flat[::7] = np.nan
        return a

    x, w, b = r(2, 4, 6, 5), r(6, 2, 3, 2), r(6)
    gy = r(*cconv.conv2d(x, w, groups=2, padding=1, backend="numpy").shape)
    tw, tb = r(4, 3, 2, 2), r(3)
    tgy = r(*cconv.conv_transpose2d(x, tw, stride=2, backend="numpy").shape)
    px = x.copy()
    px[0, 0] = -np.inf
    pgy = r(2, 4, 3, 2)
    _, idx = cconv.max_pool2d(px, 2, return_indices=True, backend="numpy")
    return [
        ("conv2d", lambda x, w, b, bk: cconv.conv2d(x, w, b, padding=1, groups=2, backend=bk), (x, w, b)),
        ("conv2d_backward", lambda gy, x, w, bk: cconv.conv2d_backward(gy, x, w, padding=1, groups=2, backend=bk),
         (gy, x, w)),
        ("conv_transpose2d", lambda x, w, b, bk: cconv.conv_transpose2d(x, w, b, stride=2, backend=bk), (x, tw, tb)),
        ("conv_transpose2d_backward",
         lambda gy, x, w, bk: cconv.conv_transpose2d_backward(gy, x, w, stride=2, backend=bk), (tgy, x, tw)),
        ("max_pool2d", lambda x, bk: cconv.max_pool2d(x, 2, return_indices=True, backend=bk), (px,)),
        ("max_pool2d_backward", lambda gy, i, bk: cconv.max_pool2d_backward(gy, i, (2, 4, 6, 5), backend=bk),
         (pgy, idx)),
        ("avg_pool2d", lambda x, bk: cconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, backend=bk), (px,)),
        ("avg_pool2d_backward",
         lambda gy, bk: cconv.avg_pool2d_backward(gy, (2, 4, 6, 5), 2, count_include_pad=False, backend=bk),
         (pgy,)),
        ("conv2d unbatched", lambda x, w, bk: cconv.conv2d(x, w, backend=bk), (x[0], r(3, 4, 2, 2))),
        ("max_pool2d unbatched", lambda x, bk: cconv.max_pool2d(x, 1, return_indices=True, backend=bk), (x[0],)),
        ("avg_pool2d kernel 1", lambda x, bk: cconv.avg_pool2d(x, 1, backend=bk), (x,)),
    ]


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inputs_untouched_and_outputs_fresh(backend, layout, dtype, rng):
    for name, call, arrays in _all_calls(rng, dtype):
        inputs = [_layouts(a)[layout] for a in arrays]
        buffers = [a if a.base is None else a.base for a in inputs]
        before = [buf.copy() for buf in buffers]
        result = call(*inputs, backend)
        outputs = [r for r in (result if isinstance(result, tuple) else (result,)) if r is not None]
        for buf, old in zip(buffers, before):
            assert buf.tobytes() == old.tobytes(), f"{name} modified its input ({layout})"
        for out in outputs:
            for buf in buffers:
                assert not np.shares_memory(out, buf), f"{name} returned memory shared with an input"
            assert out.flags.writeable, f"{name} returned a read-only array"
        # writing to the results must not reach the inputs either
        for out in outputs:
            out[...] = 0
        for buf, old in zip(buffers, before):
            assert buf.tobytes() == old.tobytes(), f"{name}: writing its output changed an input"
        tally("untouched inputs", name)
