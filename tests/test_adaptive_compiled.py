"""The compiled adaptive pools (bins that do not divide the input) and the compiled 3-d max
pool, against the NumPy backend (the oracle), the direct N-d reference and PyTorch.

Every differential case counts the calls that reached the compiled entry points, so a
dispatch that silently fell back to NumPy fails the test. Geometries are random: odd
sizes, outputs larger than inputs, sizes that do not divide, None in output_size; inputs
have ties, NaN, -inf and whole planes of -inf, in C, Fortran or strided layouts.
"""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from cconv import _reference_nd as ref
from conftest import assert_close, assert_identical, tally

DTYPES = [np.float32, np.float64]
ADAPTIVE_ENTRIES = ("adaptive_max_pool", "adaptive_avg_pool", "adaptive_avg_pool_backward")


@pytest.fixture
def compiled_calls(monkeypatch):
    """Counts, by name, the calls that reached the compiled backend's pooling entry points."""
    if "cython" not in cconv.available_backends():
        pytest.fail("the compiled extension is not built")
    from cconv import _compiled
    calls = {}
    for name in ADAPTIVE_ENTRIES + ("max_pool3d", "max_pool2d"):
        original = getattr(_compiled, name)

        def counted(*args, _original=original, _name=name):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args)
        monkeypatch.setattr(_compiled, name, counted)
    return calls


def _uneven_case(rng, dims):
    """(input shape, output_size as requested, output sizes): at least one uneven dimension."""
    while True:
        size = tuple(int(s) for s in rng.integers(1, 14 if dims < 3 else 8, size=dims))
        out = tuple(int(rng.integers(1, s + 4)) for s in size)
        request = tuple(None if rng.integers(0, 5) == 0 else o for o in out)
        out = tuple(s if r is None else r for s, r in zip(size, request))
        if any(s % o for s, o in zip(size, out)):
            shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4))) + size
            return shape, request, out


def _hostile(rng, shape, dtype):
    """Few distinct values (ties), some NaN and -inf, sometimes a plane of -inf only."""
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, size=max(1, flat.size // 30))] = np.nan
    flat[rng.integers(0, flat.size, size=max(1, flat.size // 30))] = -np.inf
    if rng.integers(0, 3) == 0:
        x[-1, -1] = -np.inf
    return x


def _layout(rng, a):
    """The same values in C, Fortran or strided memory."""
    kind = rng.integers(0, 3)
    if kind == 1:
        return np.asfortranarray(a)
    if kind == 2:
        wide = np.full(a.shape[:-1] + (2 * a.shape[-1],), 7, a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    return a


def _op(kind, dims, backward=False):
    return getattr(cconv, f"adaptive_{kind}_pool{dims}d" + ("_backward" if backward else ""))


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_adaptive_pools_match_the_numpy_backend(rng, dims, dtype, compiled_calls):
    cases = 25
    for _ in range(cases):
        shape, request, out = _uneven_case(rng, dims)
        ctx = f"{dims}-d {shape} -> {request} {np.dtype(dtype).name}"
        x = _hostile(rng, shape, dtype)
        before = x.copy()
        y, idx = _op("max", dims)(_layout(rng, x), request, True, backend="cython")
        want, want_idx = _op("max", dims)(x, request, True, backend="numpy")
        assert_identical(y, want, ctx)
        assert_identical(idx, want_idx, ctx)
        assert_identical(x, before, ctx)  # the input is left as it was
        ref_y, ref_idx = ref.adaptive_max_pool(x, out)
        assert_identical(y, ref_y, ctx)
        assert_identical(idx, ref_idx, ctx)
        gy = rng.standard_normal(y.shape).astype(dtype)
        assert_close(_op("max", dims, True)(gy, idx, shape, backend="cython"),
                     _op("max", dims, True)(gy, want_idx, shape, backend="numpy"), context=ctx)

        x = rng.standard_normal(shape).astype(dtype)
        if rng.integers(0, 3) == 0:
            x.reshape(-1)[rng.integers(0, x.size)] = (np.inf, -np.inf, np.nan)[rng.integers(0, 3)]
        y = _op("avg", dims)(_layout(rng, x), request, backend="cython")
        assert_close(y, _op("avg", dims)(x, request, backend="numpy"), context=ctx)
        assert_close(y, ref.adaptive_avg_pool(x, out), context=ctx)
        gy = _layout(rng, rng.standard_normal(y.shape).astype(dtype))
        grad = _op("avg", dims, True)(gy, shape, backend="cython")
        assert grad.shape == shape and grad.dtype == dtype
        assert_close(grad, _op("avg", dims, True)(gy, shape, backend="numpy"), context=ctx)
        assert_close(grad, ref.adaptive_avg_pool_backward(np.ascontiguousarray(gy), shape), context=ctx)
        tally("differential", f"adaptive_pool{dims}d compiled")
    # every case ran the compiled kernels (the numpy-backend calls do not reach them)
    assert compiled_calls == {"adaptive_max_pool": cases, "adaptive_avg_pool": cases,
                              "adaptive_avg_pool_backward": cases}


def test_inputs_are_not_modified_and_unbatched_inputs_work(rng, compiled_calls):
    x = _hostile(rng, (3, 11, 7), np.float32)
    kept = x.copy()
    y, idx = cconv.adaptive_max_pool2d(x, (4, None), True)
    assert y.shape == idx.shape == (3, 4, 7)
    assert_identical(x, kept)
    assert_identical(y, ref.adaptive_max_pool(x[None], (4, 7))[0][0])
    assert cconv.adaptive_avg_pool2d_backward(np.ones((3, 4, 7), np.float32), x.shape).shape == x.shape
    assert compiled_calls == {"adaptive_max_pool": 1, "adaptive_avg_pool_backward": 1}


def test_empty_batches_and_channels(compiled_calls):
    for shape in ((0, 3, 7, 5), (2, 0, 7, 5)):
        x = np.zeros(shape, np.float64)
        y, idx = cconv.adaptive_max_pool2d(x, 3, True)
        assert y.shape == idx.shape == shape[:2] + (3, 3)
        assert cconv.adaptive_avg_pool2d(x, 3).shape == shape[:2] + (3, 3)
        grad = cconv.adaptive_avg_pool2d_backward(np.zeros(shape[:2] + (3, 3)), shape)
        assert grad.shape == shape


def test_results_do_not_depend_on_the_thread_count(rng, compiled_calls):
    x = rng.standard_normal((8, 64, 31, 29)).astype(np.float32)  # big enough for a team of 2
    gy = rng.standard_normal((8, 64, 6, 4)).astype(np.float32)
    saved = cconv.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            cconv.set_num_threads(threads)
            if threads == 2:
                for op, args in (("adaptive_max_pool2d", (x, (6, 4))), ("adaptive_avg_pool2d", (x, (6, 4))),
                                 ("adaptive_avg_pool2d_backward", (gy, x.shape))):
                    assert next(iter(cconv.explain(op, *args).values()))["threads"] == 2, op
            y, idx = cconv.adaptive_max_pool2d(x, (6, 4), True)
            runs.append((y, idx, cconv.adaptive_avg_pool2d(x, (6, 4)), cconv.adaptive_avg_pool2d_backward(gy, x.shape)))
    finally:
        cconv.set_num_threads(saved)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert_identical(b, a)
    assert compiled_calls == {name: 3 for name in ADAPTIVE_ENTRIES}


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_adaptive_pools_match_torch(rng, dims, dtype, compiled_calls):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for _ in range(8):
        shape, request, out = _uneven_case(rng, dims)
        x = _hostile(rng, shape, dtype)
        tx = torch.from_numpy(x).requires_grad_()
        t_y, t_idx = getattr(F, f"adaptive_max_pool{dims}d")(tx, request, True)
        y, idx = _op("max", dims)(x, request, True)
        assert_identical(y, t_y.detach().numpy())
        assert_identical(idx, t_idx.numpy())
        gy = rng.standard_normal(y.shape).astype(dtype)
        t_y.backward(torch.from_numpy(gy))
        assert_close(_op("max", dims, True)(gy, idx, shape), tx.grad.numpy())

        x = rng.standard_normal(shape).astype(dtype)
        tx = torch.from_numpy(x).requires_grad_()
        t_y = getattr(F, f"adaptive_avg_pool{dims}d")(tx, request)
        assert_close(_op("avg", dims)(x, request), t_y.detach().numpy())
        t_y.backward(torch.from_numpy(gy))
        assert_close(_op("avg", dims, True)(gy, shape), tx.grad.numpy())
        tally("torch", f"adaptive{dims}d compiled")
    assert compiled_calls["adaptive_max_pool"] == compiled_calls["adaptive_avg_pool"] == 8


# --------------------------------------------------------------------------
# max_pool3d: the depth window inside the compiled row kernels
# --------------------------------------------------------------------------

def _pool3d_case(rng):
    kernel = tuple(int(k) for k in rng.integers(1, 4, size=3))
    stride = tuple(int(s) for s in rng.integers(1, 4, size=3))
    padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=3))
    size = tuple(int(d * (k - 1) + 1 + rng.integers(0, 7)) for k, d in zip(kernel, dilation))
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4))) + size
    return shape, kernel, stride, padding, dilation, bool(rng.integers(0, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_max_pool3d_matches_the_reference(rng, dtype, compiled_calls):
    done = 0
    while done < 40:
        shape, kernel, stride, padding, dilation, ceil_mode = _pool3d_case(rng)
        try:
            want, want_idx = cconv.max_pool3d(np.zeros(shape, dtype), kernel, stride, padding, dilation, ceil_mode,
                                              True, backend="numpy")
        except ValueError:  # a window in the padding only (ceil_mode): refused, as by PyTorch
            continue
        x = _hostile(rng, shape, dtype)
        ctx = f"{shape} k{kernel} s{stride} p{padding} d{dilation} ceil={ceil_mode}"
        y, idx = cconv.max_pool3d(_layout(rng, x), kernel, stride, padding, dilation, ceil_mode, True,
                                  backend="cython")
        want, want_idx = ref.max_pool(x, kernel, stride, padding, dilation, ceil_mode)
        assert_identical(y, want, ctx)
        assert_identical(idx, want_idx, ctx)
        numpy_y, numpy_idx = cconv.max_pool3d(x, kernel, stride, padding, dilation, ceil_mode, True,
                                              backend="numpy")
        assert_identical(idx, numpy_idx, ctx)
        done += 1
    assert compiled_calls == {"max_pool3d": 40}

