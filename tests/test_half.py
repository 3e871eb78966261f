"""float16 and bfloat16 (ml_dtypes) on every op: computed in float32, returned in the input's dtype
(indices stay int64); mixed dtypes are refused; results match PyTorch's CPU half ops within
their precision."""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from conftest import assert_identical


def _half_dtypes():
    dtypes = [np.dtype(np.float16)]
    try:
        import ml_dtypes
    except ImportError:
        return dtypes + [pytest.param(None, marks=pytest.mark.skip(reason="ml_dtypes is not installed"))]
    return dtypes + [np.dtype(ml_dtypes.bfloat16)]


HALF = _half_dtypes()


def _calls(rng):
    """(op name, positional args, keyword args): one call of every public op."""
    def r(*shape):
        return rng.standard_normal(shape)
    x1, x2, x3 = r(2, 4, 11), r(2, 4, 9, 8), r(2, 4, 5, 6, 7)
    calls = []
    for dims, x in ((1, x1), (2, x2), (3, x3)):
        d = f"{dims}d"
        w, tw = r(6, 2, *(3,) * dims), r(4, 3, *(2,) * dims)
        y = getattr(cconv, f"conv{d}")(x, w, None, 1, 1, 1, 2)
        ty = getattr(cconv, f"conv_transpose{d}")(x, tw, None, 2, 1, 1, 2)
        p, idx = getattr(cconv, f"max_pool{d}")(x, 2, return_indices=True)
        ap = getattr(cconv, f"adaptive_max_pool{d}")(x, 3, True)
        calls += [
            (f"conv{d}", (x, w, r(6)), dict(stride=1, padding=1, dilation=1, groups=2)),
            (f"conv{d}_backward", (r(*y.shape), x, w), dict(stride=1, padding=1, dilation=1, groups=2)),
            (f"conv_transpose{d}", (x, tw, r(6)), dict(stride=2, padding=1, output_padding=1, groups=2)),
            (f"conv_transpose{d}_backward", (r(*ty.shape), x, tw),
             dict(stride=2, padding=1, output_padding=1, groups=2)),
            (f"max_pool{d}", (x, 2), dict(return_indices=True)),
            (f"max_pool{d}_backward", (r(*p.shape), idx, x.shape), {}),
            (f"avg_pool{d}", (x, 3, 2, 1), dict(ceil_mode=True)),
            (f"avg_pool{d}_backward", (r(*p.shape), x.shape, 2), {}),
            (f"adaptive_avg_pool{d}", (x, 3), {}),
            (f"adaptive_avg_pool{d}_backward", (r(*ap[0].shape), x.shape), {}),
            (f"adaptive_max_pool{d}", (x, 3, True), {}),
            (f"adaptive_max_pool{d}_backward", (r(*ap[0].shape), ap[1], x.shape), {}),
        ]
    return calls


def _cast(args, dtype):
    return tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args)


def _flat(result):
    return [r for r in (result if isinstance(result, tuple) else (result,)) if r is not None]


@pytest.mark.parametrize("dtype", HALF)
def test_every_op_computes_in_float32(rng, dtype, backend):
    """A half call returns exactly the float32 call's results rounded to the half dtype."""
    calls = _calls(rng)
    assert len(calls) == len([n for n in cconv.__all__ if "pool" in n or "conv" in n])
    for name, args, kwargs in calls:
        half_args = _cast(args, dtype)
        got = _flat(getattr(cconv, name)(*half_args, **kwargs, backend=backend))
        want = _flat(getattr(cconv, name)(*_cast(half_args, np.float32), **kwargs, backend=backend))
        assert len(got) == len(want) > 0
        for g, w in zip(got, want):
            expected = w if w.dtype == np.int64 else w.astype(dtype)
            assert_identical(g, expected, name)
        assert all(a.dtype == dtype for a in half_args if isinstance(a, np.ndarray) and a.dtype.kind != "i")


@pytest.mark.parametrize("dtype", HALF)
def test_mixed_dtypes_refused(dtype):
    x = np.ones((1, 2, 5, 5), dtype)
    with pytest.raises(TypeError, match=r"must share one float dtype, got input: .*, weight: float32"):
        cconv.conv2d(x, np.ones((1, 2, 3, 3), np.float32))
    with pytest.raises(TypeError, match=r"must share one float dtype"):
        cconv.conv1d(np.ones((1, 2, 5)), np.ones((1, 2, 3), dtype))
    with pytest.raises(TypeError, match=r"dtype int16"):
        cconv.conv2d(np.ones((1, 2, 5, 5), np.int16), np.ones((1, 2, 3, 3), np.int16))


def test_float16_fast_path_untouched(rng):
    """float32 calls are not converted: the result is the float32 op's own array type and dtype."""
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    y = cconv.conv2d(x, x[:1, :, :3, :3].copy())
    assert y.dtype == np.float32


@pytest.mark.parametrize("dtype", HALF)
def test_half_convs_match_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch_dtype = torch.float16 if dtype == np.float16 else torch.bfloat16
    tol = 4e-3 if dtype == np.float16 else 3e-2
    for dims in (1, 2, 3):
        x = rng.standard_normal((2, 8) + (6,) * dims).astype(dtype)
        w = (rng.standard_normal((8, 4) + (3,) * dims) * 0.3).astype(dtype)
        ours = getattr(cconv, f"conv{dims}d")(x, w, None, 1, 1, 1, 2).astype(np.float64)
        theirs = getattr(F, f"conv{dims}d")(torch.from_numpy(x.astype(np.float32)).to(torch_dtype),
                                            torch.from_numpy(w.astype(np.float32)).to(torch_dtype),
                                            None, 1, 1, 1, 2).float().numpy()
        assert np.linalg.norm(ours - theirs) <= tol * np.linalg.norm(theirs), f"conv{dims}d {dtype}"
        p, i = getattr(cconv, f"max_pool{dims}d")(x, 2, return_indices=True)
        tp, ti = getattr(F, f"max_pool{dims}d")(torch.from_numpy(x.astype(np.float32)).to(torch_dtype), 2,
                                                return_indices=True)
        assert_identical(p.astype(np.float32), tp.float().numpy())
        assert_identical(i, ti.numpy())
