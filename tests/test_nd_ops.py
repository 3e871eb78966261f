"""1-d, 3-d and adaptive ops: differential tests against the independent N-d NumPy reference
(cconv._reference_nd), the reference against finite differences, and every op against PyTorch
where it is installed.

Geometries are drawn at random per test (seeded by the test name): odd sizes, non-square
windows, strides that do not divide, dilation, groups, 'same' with even kernels, ceil_mode;
pool inputs get ties and NaN.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import cconv
from cconv import _reference_nd as ref
from conftest import assert_close, assert_identical, numerical_gradient, tally

DTYPES = [np.float64, np.float32]
ALL = [b for b in cconv.available_backends() if b != "torch"]  # cython (when built) and numpy


# --------------------------------------------------------------------------
# random geometries
# --------------------------------------------------------------------------

def _conv_case(rng, dims, transpose=False):
    groups = int(rng.choice([1, 1, 2, 3]))
    c_in, c_out = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    kernel = tuple(int(k) for k in rng.integers(1, 4 if dims == 3 else 6, size=dims))
    stride = tuple(int(s) for s in rng.integers(1, 4, size=dims))
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=dims))
    size = tuple(int(d * (k - 1) + 1 + rng.integers(0, 5 if dims == 3 else 12)) for k, d in zip(kernel, dilation))
    n = int(rng.integers(1, 3))
    if transpose:
        padding = tuple(int(rng.integers(0, d * (k - 1) + 1)) for k, d in zip(kernel, dilation))
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        w_shape = (c_in, c_out // groups) + kernel
        args = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
        return (n, c_in) + size, w_shape, c_out, args
    mode = rng.integers(0, 4)
    if mode == 0:
        padding, stride = "same", (1,) * dims
    elif mode == 1:
        padding = "valid"
    else:
        padding = tuple(int(rng.integers(0, 3)) for _ in range(dims))
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (n, c_in) + size, (c_out, c_in // groups) + kernel, c_out, args


def _pads(args, kernel):
    """The reference's (before, after) per dimension, from the op's padding argument."""
    p = args["padding"]
    if p == "valid":
        return ((0, 0),) * len(kernel)
    if p == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, args["dilation"])]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((q, q) for q in p)


def _layout(rng, a):
    """The same values as C-, Fortran- or non-contiguously laid out memory."""
    kind = rng.integers(0, 3)
    if kind == 1:
        return np.asfortranarray(a)
    if kind == 2:
        wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    return a


def _pool_input(rng, shape, dtype):
    """Values from a small set (many ties), with a few NaN and -inf."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, size=max(1, flat.size // 40))] = np.nan
    flat[rng.integers(0, flat.size, size=max(1, flat.size // 40))] = -np.inf
    return x


def _pool_case(rng, dims, dilated=True):
    kernel = tuple(int(k) for k in rng.integers(1, 4, size=dims))
    stride = tuple(int(s) for s in rng.integers(1, 4, size=dims))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=dims)) if dilated else (1,) * dims
    size = tuple(int(d * (k - 1) + 1 + rng.integers(0, 6)) for k, d in zip(kernel, dilation))
    ceil_mode = bool(rng.integers(0, 2))
    return (int(rng.integers(1, 3)), int(rng.integers(1, 4))) + size, kernel, stride, padding, dilation, ceil_mode


def _pool_windows_hit_input(shape, kernel, stride, padding, dilation, ceil_mode):
    for n, k, s, p, d in zip(shape[2:], kernel, stride, padding, dilation):
        out = ref.pool_out_size(n, k, s, p, d, ceil_mode)
        for o in range(out):
            if not any(0 <= o * s - p + t * d < n for t in range(k)):
                return False
    return True


def _f(name, dims):
    return getattr(cconv, name.format(dims))


# --------------------------------------------------------------------------
# convolutions
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ALL)
def test_conv_matches_reference(rng, dims, dtype, backend):
    for _ in range(12):
        x_shape, w_shape, c_out, args = _conv_case(rng, dims)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(c_out).astype(dtype)
        stride, dilation, groups = args["stride"], args["dilation"], args["groups"]
        pads = _pads(args, w_shape[2:])
        expected = ref.conv(x, w, b, stride, pads, dilation, groups)
        ctx = f"{dims}-d {x_shape} {w_shape} {args}"
        y = _f("conv{}d", dims)(_layout(rng, x), _layout(rng, w), b, **args, backend=backend)
        assert_close(y, expected, context=ctx)
        gy = rng.standard_normal(y.shape).astype(dtype)
        grads = _f("conv{}d_backward", dims)(gy, x, w, **args, backend=backend)
        for got, want, name in zip(grads, ref.conv_backward(gy, x, w, stride, pads, dilation, groups),
                                   ("grad_input", "grad_weight", "grad_bias")):
            assert_close(got, want, context=f"{name} {ctx}")
        mask = (False, True, False)
        only_w = _f("conv{}d_backward", dims)(gy, x, w, **args, output_mask=mask, backend=backend)
        assert only_w[0] is None and only_w[2] is None
        assert_close(only_w[1], grads[1], context=f"masked {ctx}")
        tally("differential", f"conv{dims}d")


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ALL)
def test_conv_transpose_matches_reference(rng, dims, dtype, backend):
    for _ in range(12):
        x_shape, w_shape, c_out, args = _conv_case(rng, dims, transpose=True)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(c_out).astype(dtype)
        geo = (args["stride"], args["padding"], args["output_padding"], args["dilation"], args["groups"])
        expected = ref.conv_transpose(x, w, b, *geo)
        if min(expected.shape[2:]) < 1:
            continue
        ctx = f"{dims}-d {x_shape} {w_shape} {args}"
        y = _f("conv_transpose{}d", dims)(_layout(rng, x), w, b, **args, backend=backend)
        assert_close(y, expected, context=ctx)
        gy = rng.standard_normal(y.shape).astype(dtype)
        grads = _f("conv_transpose{}d_backward", dims)(gy, x, _layout(rng, w), **args, backend=backend)
        for got, want, name in zip(grads, ref.conv_transpose_backward(gy, x, w, *geo),
                                   ("grad_input", "grad_weight", "grad_bias")):
            assert_close(got, want, context=f"{name} {ctx}")
        tally("differential", f"conv_transpose{dims}d")


def test_conv3d_nonfinite_weight_meets_depth_padding(backend):
    """Depth padding is zero input: 0 * inf = NaN reaches the border outputs, as in PyTorch."""
    x = np.ones((1, 1, 3, 3, 3))
    w = np.zeros((1, 1, 3, 1, 1))
    w[0, 0, 0] = np.inf
    with np.errstate(invalid="ignore"):
        y = cconv.conv3d(x, w, padding=(1, 0, 0), backend=backend)
        expected = ref.conv(x, w, None, (1, 1, 1), ((1, 1), (0, 0), (0, 0)), (1, 1, 1), 1)
    assert np.isnan(y[0, 0, 0]).all() and np.isinf(y[0, 0, 1:]).all()
    assert_close(y, expected)


def test_unbatched_and_length_one_tuples(rng):
    x = rng.standard_normal((3, 11))
    w = rng.standard_normal((4, 3, 3))
    assert_close(cconv.conv1d(x, w, padding=(1,), stride=(2,)), cconv.conv1d(x[None], w, padding=1, stride=2)[0])
    x3 = rng.standard_normal((2, 5, 6, 7))
    w3 = rng.standard_normal((3, 2, 2, 3, 1))
    y = cconv.conv3d(x3, w3, padding=(1,), stride=(2,))
    assert_close(y, cconv.conv3d(x3[None], w3, padding=1, stride=2)[0])
    gx, gw, gb = cconv.conv3d_backward(y, x3, w3, padding=(1,), stride=(2,))
    assert gx.shape == x3.shape and gw.shape == w3.shape and gb.shape == (3,)
    p, i = cconv.max_pool3d(x3, (2,), return_indices=True)
    assert p.shape == i.shape == (2, 2, 3, 3)
    assert cconv.max_pool3d_backward(p, i, x3.shape).shape == x3.shape
    assert cconv.max_pool2d(x3, (2,)).shape == (2, 5, 3, 3)  # 2-d ops broadcast 1-tuples too
    assert cconv.adaptive_avg_pool1d(x, (4,)).shape == (3, 4)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ALL)
def test_max_pool_matches_reference(rng, dims, dtype, backend):
    done = 0
    while done < 15:
        shape, kernel, stride, padding, dilation, ceil_mode = _pool_case(rng, dims)
        if not _pool_windows_hit_input(shape, kernel, stride, padding, dilation, ceil_mode):
            continue
        x = _pool_input(rng, shape, dtype)
        ctx = f"{dims}-d {shape} k{kernel} s{stride} p{padding} d{dilation} ceil={ceil_mode}"
        out, idx = _f("max_pool{}d", dims)(_layout(rng, x), kernel, stride, padding, dilation, ceil_mode,
                                           return_indices=True, backend=backend)
        want, want_idx = ref.max_pool(x, kernel, stride, padding, dilation, ceil_mode)
        assert_identical(out, want, ctx)
        assert_identical(idx, want_idx, ctx)
        gy = rng.standard_normal(out.shape).astype(dtype)
        assert_close(_f("max_pool{}d_backward", dims)(gy, idx, shape, backend=backend),
                     ref.max_pool_backward(gy, want_idx, shape), context=ctx)
        tally("differential", f"max_pool{dims}d")
        done += 1


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ALL)
def test_avg_pool_matches_reference(rng, dims, dtype, backend):
    for _ in range(15):
        shape, kernel, stride, padding, _, ceil_mode = _pool_case(rng, dims, dilated=False)
        include_pad = bool(rng.integers(0, 2))
        extra = {} if dims == 1 or rng.integers(0, 3) else {"divisor_override": int(rng.integers(1, 5))}
        x = rng.standard_normal(shape).astype(dtype)
        ctx = f"{dims}-d {shape} k{kernel} s{stride} p{padding} ceil={ceil_mode} pad={include_pad} {extra}"
        y = _f("avg_pool{}d", dims)(_layout(rng, x), kernel, stride, padding, ceil_mode, include_pad, **extra,
                                    backend=backend)
        override = extra.get("divisor_override")
        assert_close(y, ref.avg_pool(x, kernel, stride, padding, ceil_mode, include_pad, override), context=ctx)
        gy = rng.standard_normal(y.shape).astype(dtype)
        g = _f("avg_pool{}d_backward", dims)(gy, shape, kernel, stride, padding, ceil_mode, include_pad, **extra,
                                             backend=backend)
        assert_close(g, ref.avg_pool_backward(gy, shape, kernel, stride, padding, ceil_mode, include_pad, override),
                     context=ctx)
        tally("differential", f"avg_pool{dims}d")


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ALL)
def test_adaptive_pools_match_reference(rng, dims, dtype, backend):
    for i in range(10):
        size = tuple(int(s) for s in rng.integers(1, 12 if dims < 3 else 7, size=dims))
        if i % 3 == 0:  # uniform bins: the ordinary-pool route
            out = tuple(int(rng.choice([d for d in range(1, s + 1) if s % d == 0])) for s in size)
        else:
            out = tuple(int(rng.integers(1, s + 3)) for s in size)
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4))) + size
        request = tuple(None if rng.integers(0, 4) == 0 else o for o in out)
        out = tuple(s if r is None else r for s, r in zip(size, request))
        x = _pool_input(rng, shape, dtype)
        ctx = f"{dims}-d {shape} -> {request}"
        y, idx = _f("adaptive_max_pool{}d", dims)(_layout(rng, x), request, True, backend=backend)
        want, want_idx = ref.adaptive_max_pool(x, out)
        assert_identical(y, want, ctx)
        assert_identical(idx, want_idx, ctx)
        gy = rng.standard_normal(y.shape).astype(dtype)
        assert_close(_f("adaptive_max_pool{}d_backward", dims)(gy, idx, shape, backend=backend),
                     ref.max_pool_backward(gy, want_idx, shape), context=ctx)
        x = rng.standard_normal(shape).astype(dtype)
        assert_close(_f("adaptive_avg_pool{}d", dims)(_layout(rng, x), request, backend=backend),
                     ref.adaptive_avg_pool(x, out), context=ctx)
        assert_close(_f("adaptive_avg_pool{}d_backward", dims)(gy, shape, backend=backend),
                     ref.adaptive_avg_pool_backward(gy, shape), context=ctx)
        tally("differential", f"adaptive_pool{dims}d")


def test_compiled_kernels_run(monkeypatch):
    """With the compiled backend the N-d ops really run its 2-d kernels."""
    if "cython" not in cconv.available_backends():
        pytest.fail("the compiled extension is not built")
    from cconv import _compiled
    calls = []
    for name in ("conv2d", "conv2d_backward", "max_pool2d", "avg_pool2d", "max_pool2d_backward", "max_pool3d",
                 "adaptive_max_pool", "adaptive_avg_pool", "adaptive_avg_pool_backward"):
        original = getattr(_compiled, name)
        monkeypatch.setattr(_compiled, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    x = np.ones((1, 2, 4, 4, 4), np.float32)
    cconv.conv3d(x, np.ones((2, 2, 3, 3, 3), np.float32), backend="cython")
    cconv.conv1d(x[:, :, 0, 0], np.ones((2, 2, 3), np.float32), backend="cython")
    p, i = cconv.max_pool3d(x, 2, return_indices=True, backend="cython")
    cconv.max_pool3d_backward(p, i, x.shape, backend="cython")
    cconv.avg_pool3d(x, 2, backend="cython")
    cconv.adaptive_avg_pool2d(x[0], 2, backend="cython")  # uniform bins: the ordinary pool
    y, i = cconv.adaptive_max_pool3d(x, 3, True, backend="cython")  # uneven bins: the bin kernels
    cconv.adaptive_max_pool3d_backward(y, i, x.shape, backend="cython")
    cconv.adaptive_avg_pool1d_backward(cconv.adaptive_avg_pool1d(x[:, :, 0, 0], 3, backend="cython"), (1, 2, 4),
                                       backend="cython")
    assert calls == ["conv2d", "conv2d", "max_pool3d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d",
                     "adaptive_max_pool", "max_pool2d_backward", "adaptive_avg_pool", "adaptive_avg_pool_backward"]


# --------------------------------------------------------------------------
# the reference against finite differences
# --------------------------------------------------------------------------

def _check_gradient(f, arrays, grads, eps=1e-6):
    for a, g in zip(arrays, grads):
        assert_close(g, numerical_gradient(f, a, eps), dtype=np.float32)  # 1e-5: FD noise


@pytest.mark.parametrize("dims", [1, 3])
def test_reference_conv_gradients(rng, dims):
    x_shape, w_shape, c_out, args = _conv_case(rng, dims)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(c_out)
    geo = (args["stride"], _pads(args, w_shape[2:]), args["dilation"], args["groups"])
    gy = rng.standard_normal(ref.conv(x, w, b, *geo).shape)
    _check_gradient(lambda: float((ref.conv(x, w, b, *geo) * gy).sum()), (x, w, b), ref.conv_backward(gy, x, w, *geo))
    x_shape, w_shape, c_out, args = _conv_case(rng, dims, transpose=True)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(c_out)
    geo = (args["stride"], args["padding"], args["output_padding"], args["dilation"], args["groups"])
    gy = rng.standard_normal(ref.conv_transpose(x, w, b, *geo).shape)
    _check_gradient(lambda: float((ref.conv_transpose(x, w, b, *geo) * gy).sum()), (x, w, b),
                    ref.conv_transpose_backward(gy, x, w, *geo))


@pytest.mark.parametrize("dims", [1, 3])
def test_reference_pool_gradients(rng, dims):
    shape, kernel, stride, padding, _, ceil_mode = _pool_case(rng, dims, dilated=False)
    x = rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape)  # no ties
    out, idx = ref.max_pool(x, kernel, stride, padding, (1,) * dims, ceil_mode)
    gy = rng.standard_normal(out.shape)
    _check_gradient(lambda: float((ref.max_pool(x, kernel, stride, padding, (1,) * dims, ceil_mode)[0] * gy).sum()),
                    (x,), (ref.max_pool_backward(gy, idx, shape),), eps=1e-3)
    for include_pad in (True, False):
        _check_gradient(lambda p=include_pad: float((ref.avg_pool(x, kernel, stride, padding, ceil_mode, p) * gy).sum()),
                        (x,), (ref.avg_pool_backward(gy, shape, kernel, stride, padding, ceil_mode, include_pad),))


def test_reference_adaptive_gradients(rng):
    x = rng.permutation(np.arange(2 * 7 * 5, dtype=np.float64)).reshape(1, 2, 7, 5)
    out = (3, 4)
    gy = rng.standard_normal((1, 2) + out)
    _check_gradient(lambda: float((ref.adaptive_avg_pool(x, out) * gy).sum()), (x,),
                    (ref.adaptive_avg_pool_backward(gy, x.shape),))
    _, idx = ref.adaptive_max_pool(x, out)
    _check_gradient(lambda: float((ref.adaptive_max_pool(x, out)[0] * gy).sum()), (x,),
                    (ref.max_pool_backward(gy, idx, x.shape),), eps=1e-3)


# --------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------

def _torch_run(fn, arrays, gy=None, **kwargs):
    """Run a torch.nn.functional op in float64; return outputs (and input gradients for ``gy``)."""
    torch = pytest.importorskip("torch")
    tensors = [None if a is None else torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(gy is not None)
               for a in arrays]
    out = fn(*tensors, **kwargs)
    first = out[0] if isinstance(out, tuple) else out
    if gy is None:
        return out, None
    first.backward(torch.from_numpy(gy))
    return out, [None if t is None else t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("dims", [1, 3])
def test_convs_match_torch(rng, dims):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for _ in range(6):
        x_shape, w_shape, c_out, args = _conv_case(rng, dims)
        x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(c_out)
        y = _f("conv{}d", dims)(x, w, b, **args)
        gy = rng.standard_normal(y.shape)
        with warnings.catch_warnings():  # torch's note that 'same' with an even kernel pads a copy
            warnings.simplefilter("ignore", UserWarning)
            out, grads = _torch_run(getattr(F, f"conv{dims}d"), (x, w, b), gy, **args)
        assert_close(y, out.detach().numpy())
        for got, want in zip(_f("conv{}d_backward", dims)(gy, x, w, **args), grads):
            assert_close(got, want)
        x_shape, w_shape, c_out, args = _conv_case(rng, dims, transpose=True)
        x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(c_out)
        y = _f("conv_transpose{}d", dims)(x, w, b, **args)
        gy = rng.standard_normal(y.shape)
        out, grads = _torch_run(getattr(F, f"conv_transpose{dims}d"), (x, w, b), gy, **args)
        assert_close(y, out.detach().numpy())
        for got, want in zip(_f("conv_transpose{}d_backward", dims)(gy, x, w, **args), grads):
            assert_close(got, want)
        tally("torch", f"conv{dims}d")


@pytest.mark.parametrize("dims", [1, 3])
def test_pools_match_torch(rng, dims):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    done = 0
    while done < 8:
        shape, kernel, stride, padding, dilation, ceil_mode = _pool_case(rng, dims)
        if not _pool_windows_hit_input(shape, kernel, stride, padding, dilation, ceil_mode):
            continue
        x = _pool_input(rng, shape, np.float64)
        out, idx = _f("max_pool{}d", dims)(x, kernel, stride, padding, dilation, ceil_mode, True)
        t_out, t_idx = getattr(F, f"max_pool{dims}d")(torch.from_numpy(x), kernel, stride, padding, dilation,
                                                      ceil_mode, True)
        assert_identical(out, t_out.numpy())
        assert_identical(idx, t_idx.numpy())
        x = rng.standard_normal(shape)
        include_pad = bool(rng.integers(0, 2))
        y = _f("avg_pool{}d", dims)(x, kernel, stride, padding, ceil_mode, include_pad)
        gy = rng.standard_normal(y.shape)
        t_y, (t_gx,) = _torch_run(getattr(F, f"avg_pool{dims}d"), (x,), gy, kernel_size=kernel, stride=stride,
                                  padding=padding, ceil_mode=ceil_mode, count_include_pad=include_pad)
        assert_close(y, t_y.detach().numpy())
        assert_close(_f("avg_pool{}d_backward", dims)(gy, shape, kernel, stride, padding, ceil_mode, include_pad),
                     t_gx)
        tally("torch", f"pool{dims}d")
        done += 1


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_adaptive_pools_match_torch(rng, dims):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for _ in range(6):
        size = tuple(int(s) for s in rng.integers(1, 10, size=dims))
        out = tuple(None if dims > 1 and rng.integers(0, 5) == 0 else int(rng.integers(1, s + 2)) for s in size)
        shape = (2, 3) + size
        x = _pool_input(rng, shape, np.float64)
        y, idx = _f("adaptive_max_pool{}d", dims)(x, out, True)
        t_y, t_idx = getattr(F, f"adaptive_max_pool{dims}d")(torch.from_numpy(x), out, True)
        assert_identical(y, t_y.numpy())
        assert_identical(idx, t_idx.numpy())
        x = rng.standard_normal(shape)
        y = _f("adaptive_avg_pool{}d", dims)(x, out)
        gy = rng.standard_normal(y.shape)
        t_y, (t_gx,) = _torch_run(getattr(F, f"adaptive_avg_pool{dims}d"), (x,), gy, output_size=out)
        assert_close(y, t_y.detach().numpy())
        assert_close(_f("adaptive_avg_pool{}d_backward", dims)(gy, shape), t_gx)
        tally("torch", f"adaptive{dims}d")


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

X1, W1 = np.ones((2, 4, 9)), np.ones((6, 4, 3))
X3, W3 = np.ones((2, 4, 5, 6, 6)), np.ones((6, 4, 3, 3, 3))

BAD = [
    (lambda: cconv.conv1d(X1[0, 0], W1), ValueError, r"input must be 3-d \(N, C, L\) or 2-d"),
    (lambda: cconv.conv1d(X1, W3), ValueError, r"weight must be 3-d"),
    (lambda: cconv.conv1d(X1, W1, stride=0), ValueError, r"stride must be >= 1, got 0"),
    (lambda: cconv.conv1d(X1, W1, padding=(1, 1)), ValueError, r"padding must be an int or a tuple of 1"),
    (lambda: cconv.conv1d(X1, W1, padding="same", stride=2), ValueError, r"'same' is not supported for strided"),
    (lambda: cconv.conv1d(X1, W1, padding="full"), ValueError, r"padding string must be 'valid' or 'same'"),
    (lambda: cconv.conv1d(X1, np.ones((6, 4, 12))), ValueError, r"larger than the padded input"),
    (lambda: cconv.conv1d(X1, W1, groups=4), ValueError, r"not divisible by groups|expects"),
    (lambda: cconv.conv1d(X1, W1, stride=1.5), TypeError, r"stride must be an int, got float"),
    (lambda: cconv.conv1d(X1.astype(int), W1), TypeError, r"dtype int64"),
    (lambda: cconv.conv1d(X1, W1.astype(np.float32)), TypeError, r"must share one float dtype"),
    (lambda: cconv.conv1d_backward(np.ones((2, 6, 6)), X1, W1), ValueError, r"grad_output has shape"),
    (lambda: cconv.conv_transpose1d(X1, W1[:4], padding="same"), ValueError, r"takes int padding"),
    (lambda: cconv.conv_transpose1d(X1, W1[:4], output_padding=1), ValueError, r"output_padding"),
    (lambda: cconv.conv3d(X3[0, 0], W3), ValueError, r"input must be 5-d \(N, C, D, H, W\) or 4-d"),
    (lambda: cconv.conv3d(X3, W1), ValueError, r"weight must be 5-d"),
    (lambda: cconv.conv3d(X3, W3, stride=(1, 1)), ValueError, r"tuple of 3 ints"),
    (lambda: cconv.conv3d(X3, W3, dilation=(3, 1, 1)), ValueError, r"larger than the padded input"),
    (lambda: cconv.conv3d(X3, W3, bias=np.ones(5)), ValueError, r"bias must have shape \(6,\)"),
    (lambda: cconv.conv3d_backward(np.ones((2, 6, 3, 4, 3)), X3, W3), ValueError, r"grad_output has shape"),
    (lambda: cconv.conv3d_backward(np.ones((2, 6, 3, 4, 4)), X3, W3, output_mask=(1, 1, 1)), TypeError,
     r"output_mask must hold bools"),
    (lambda: cconv.conv_transpose3d(X3, W3[:4], output_padding=(2, 0, 0)), ValueError, r"output_padding"),
    (lambda: cconv.max_pool1d(X1, 2, padding=2), ValueError, r"at most half of kernel_size"),
    (lambda: cconv.max_pool1d(X1, 2, return_indices=1), TypeError, r"return_indices must be a bool"),
    (lambda: cconv.max_pool3d(X3, 2, ceil_mode="yes"), TypeError, r"ceil_mode must be a bool"),
    (lambda: cconv.max_pool3d(X3, (7, 1, 1)), ValueError, r"output depth would be"),
    (lambda: cconv.max_pool3d(X3, (2, 2, 2), padding=(1, 0, 0), dilation=(6, 1, 1)), ValueError,
     r"covers no input slice"),
    (lambda: cconv.max_pool3d_backward(np.ones((2, 4, 2, 3, 3)), np.zeros((2, 4, 2, 3, 3), np.int32), X3.shape),
     TypeError, r"indices must be an int64 ndarray"),
    (lambda: cconv.max_pool3d_backward(np.ones((2, 4, 2, 3, 3)), np.full((2, 4, 2, 3, 3), 180), X3.shape),
     ValueError, r"indices must lie in \[0, 180\)"),
    (lambda: cconv.max_pool1d_backward(np.ones((2, 4, 4)), np.zeros((2, 4, 3), np.int64), X1.shape),
     ValueError, r"indices has shape"),
    (lambda: cconv.avg_pool3d(X3, 2, divisor_override=0), ValueError, r"divisor_override must not be zero"),
    (lambda: cconv.avg_pool3d_backward(np.ones((2, 4, 2, 3, 2)), X3.shape, 2), ValueError, r"grad_output has shape"),
    (lambda: cconv.avg_pool1d_backward(np.ones((2, 4, 4)), (2, 4), 2), ValueError, r"as many dims"),
    (lambda: cconv.avg_pool1d(X1, 2, count_include_pad=None), TypeError, r"count_include_pad must be a bool"),
    (lambda: cconv.adaptive_avg_pool2d(X3[0], (2, 2, 2)), ValueError, r"tuple of 2 ints"),
    (lambda: cconv.adaptive_avg_pool2d(X3[0], 0), ValueError, r"output_size must be >= 1"),
    (lambda: cconv.adaptive_max_pool3d(X3, 2.0), TypeError, r"output_size must be an int"),
    (lambda: cconv.adaptive_max_pool1d(X3, 2), ValueError, r"input must be 3-d"),
    (lambda: cconv.adaptive_avg_pool1d_backward(np.ones((2, 4, 3)), (2, 4, 0)), ValueError, r"non-empty"),
    (lambda: cconv.conv1d(X1, W1, backend="cuda"), ValueError, r"unknown or unavailable backend"),
    (lambda: cconv.adaptive_avg_pool3d(X3, 3, backend="cuda"), ValueError, r"unknown or unavailable backend"),
]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_input(i):
    call, error, match = BAD[i]
    with pytest.raises(error, match=match):
        call()
    tally("bad-input table", "n-d ops")


def test_inputs_untouched_outputs_fresh(rng):
    x = rng.standard_normal((2, 4, 5, 6, 6))
    w = rng.standard_normal((6, 4, 3, 3, 3))
    before = x.copy(), w.copy()
    outputs = [cconv.conv3d(x, w, padding=1), *cconv.conv3d_backward(np.ones((2, 6, 5, 6, 6)), x, w, padding=1),
               cconv.max_pool3d(x, 1), cconv.avg_pool3d(x, 1), cconv.adaptive_avg_pool3d(x, (None, None, None)),
               cconv.adaptive_max_pool3d(x, (5, 6, 6)), cconv.conv1d(x[:, :, 0, 0], w[:, :, 0, 0], padding="same")]
    assert np.array_equal(x, before[0]) and np.array_equal(w, before[1])
    for out in outputs:
        assert not np.shares_memory(out, x) and not np.shares_memory(out, w)


def test_plan_2d_names_the_calls_made(monkeypatch, rng):
    """plan_2d describes exactly the 2-d calls each N-d op makes."""
    from cconv import _api, _api_nd
    seen = []
    for name in ("conv2d", "conv2d_backward", "conv_transpose2d", "max_pool2d", "avg_pool2d", "max_pool2d_backward"):
        original = getattr(_api, name)

        def spy(*args, _f=original, _n=name, **kwargs):
            weight = args[1] if _n.startswith("conv") and _n != "conv2d_backward" else (
                args[2] if _n == "conv2d_backward" else None)
            first = args[1] if _n == "conv2d_backward" else args[0]
            kw = {k: v for k, v in kwargs.items() if k not in ("backend", "return_indices", "output_mask")}
            seen.append((_n, first.shape, None if weight is None else weight.shape, kw))
            return _f(*args, **kwargs)
        monkeypatch.setattr(_api, name, spy)
    x3, w3, t3 = rng.standard_normal((2, 4, 5, 6, 7)), rng.standard_normal((6, 2, 3, 2, 3)), rng.standard_normal((4, 3, 2, 2, 2))
    x1, w1 = rng.standard_normal((2, 4, 9)), rng.standard_normal((6, 4, 3))
    cases = [
        ("conv3d", (x3, w3, None, (2, 1, 1), "valid", 1, 2), (w3.shape, (2, 1, 1), "valid", 1, 2)),
        ("conv3d", (x3, w3[:, :, :, :1, :1], None, 2, 1, 1, 2), (w3[:, :, :, :1, :1].shape, 2, 1, 1, 2)),
        ("conv3d", (x3, w3[:, :, :, :1, :1], None, 1, (1, 0, 0), 1, 2), (w3[:, :, :, :1, :1].shape, 1, (1, 0, 0), 1, 2)),
        ("conv3d_backward", (np.ones((2, 6, 5, 6, 7)), x3, w3, 1, "same", 1, 2), (w3.shape, 1, "same", 1, 2)),
        # kernel == stride, no padding: the compiled backend's 1x1 conv2d on the patches
        ("conv3d_backward", (np.ones((2, 6, 2, 3, 2)), x3, w3[:, :, :2, :2, :3], (2, 2, 3), 0, 1, 2),
         (w3[:, :, :2, :2, :3].shape, (2, 2, 3), 0, 1, 2)),
        ("conv_transpose3d", (x3, t3, None, 2, 1, 1, 1, (1, 2, 1)), (t3.shape, 2, 1, 1, 1, (1, 2, 1))),
        ("conv1d", (x1, w1, None, 2, 1, 2), (w1.shape, 2, 1, 2)),
        ("max_pool3d", (x3, (3, 2, 2), 2, 1, 1, True), ((3, 2, 2), 2, 1, 1, True)),
        ("avg_pool3d", (x3, 2, 1, 1, False, False), (2, 1, 1, False, False)),
        ("avg_pool1d", (x1, 3, 2, 1, True), (3, 2, 1, True)),
    ]
    for op, call_args, plan_args in cases:
        seen.clear()
        # the compiled backend runs max_pool3d as one 3-d kernel: no 2-d calls to describe
        getattr(_api_nd, op)(*call_args, **({"backend": "numpy"} if op == "max_pool3d" else {}))
        shape = call_args[1].shape if op.endswith("_backward") else call_args[0].shape
        assert seen == _api_nd.plan_2d(op, shape, *plan_args), op


def test_empty_batch_like_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, tw = np.ones((0, 4, 5, 6, 7)), np.ones((6, 2, 3, 3, 3)), np.ones((4, 3, 2, 2, 2))
    assert cconv.conv3d(x, w, groups=2).shape == tuple(F.conv3d(torch.from_numpy(x), torch.from_numpy(w), groups=2).shape)
    gx, gw, gb = cconv.conv3d_backward(np.ones((0, 6, 3, 4, 5)), x, w, groups=2)
    assert gx.shape == x.shape and not gw.any() and not gb.any()
    y = cconv.conv_transpose3d(x, tw, stride=2)
    assert y.shape == tuple(F.conv_transpose3d(torch.from_numpy(x), torch.from_numpy(tw), stride=2).shape)
    assert cconv.conv_transpose3d_backward(y, x, tw, stride=2)[0].shape == x.shape
    assert cconv.max_pool3d(x, 2).shape == cconv.avg_pool3d(x, 2).shape == (0, 4, 2, 3, 3)
    assert cconv.adaptive_avg_pool3d(x, 1).shape == (0, 4, 1, 1, 1)
    assert cconv.conv1d(np.ones((0, 4, 9)), np.ones((2, 4, 3))).shape == (0, 2, 7)


@pytest.mark.parametrize("backend", ALL)
def test_conv3d_depth_as_rows_route(rng, backend):
    """(kd, 1, 1) kernels without (h, w) stride or padding run on the (N, C, D, H*W) view."""
    from cconv import _api_nd, _shapes
    for kernel, args in [((1, 1, 1), dict(stride=1, padding=0, dilation=1, groups=1)),
                         ((3, 1, 1), dict(stride=(2, 1, 1), padding=(1, 0, 0), dilation=(2, 3, 1), groups=2)),
                         ((2, 1, 1), dict(stride=1, padding="same", dilation=(3, 1, 1), groups=1))]:
        x = rng.standard_normal((2, 4, 9, 5, 6))
        w = rng.standard_normal((6, 4 // args["groups"]) + kernel)
        b = rng.standard_normal(6)
        assert _api_nd._conv3d_plan(x.shape, w.shape, args["stride"], args["padding"], args["dilation"],
                                    args["groups"]).depth_as_rows
        stride, dilation = _shapes.ntuple(args["stride"], 3, ""), _shapes.ntuple(args["dilation"], 3, "")
        geo = (stride, _pads(dict(args, dilation=dilation, padding=args["padding"] if isinstance(args["padding"], str)
                                  else _shapes.ntuple(args["padding"], 3, "")), kernel), dilation, args["groups"])
        y = cconv.conv3d(np.asfortranarray(x), w, b, **args, backend=backend)
        assert_close(y, ref.conv(x, w, b, *geo))
        gy = rng.standard_normal(y.shape)
        for got, want in zip(cconv.conv3d_backward(gy, x, w, **args, backend=backend), ref.conv_backward(gy, x, w, *geo)):
            assert_close(got, want)
        assert_close(cconv.conv3d(x[1], w, b, **args, backend=backend), y[1])
