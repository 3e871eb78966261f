"""float16 and bfloat16 for every public op: computed in float32, returned in the input's dtype.

The public functions exported by :mod:`cconv` are the ops of :mod:`cconv._api`,
:mod:`cconv._api_nd` and :mod:`cconv._adaptive` wrapped by :func:`_half_capable`. A call whose
arrays are all float32/float64 goes straight through (one cheap check per argument); a call with
float16 or bfloat16 arrays (bfloat16 is ``ml_dtypes.bfloat16``, an optional dependency: NumPy
has no bfloat16 of its own) converts them to float32, runs the op and converts its float
results back; int64 indices stay int64. All float arrays of one call must share one dtype.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from . import _adaptive
from . import _api
from . import _api_nd

_HALF = ("float16", "bfloat16")


def _is_half(a):
    return isinstance(a, np.ndarray) and a.dtype.itemsize == 2 and a.dtype.name in _HALF


def _is_float(a):
    return isinstance(a, np.ndarray) and (a.dtype.kind == "f" or a.dtype.name == "bfloat16")


def _to_half(result, dtype):
    if isinstance(result, tuple):
        return tuple(_to_half(r, dtype) for r in result)
    if isinstance(result, np.ndarray) and result.dtype == np.float32:
        return result.astype(dtype)
    return result


def _half_capable(op):
    """Wrap ``op`` so that float16/bfloat16 arrays are computed in float32."""

    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        # The common call (no 2-byte arrays) pays one attribute test per argument, no more.
        for a in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(a, np.ndarray) and a.itemsize == 2 and _is_half(a):
                return _in_float32(op, args, kwargs)
        return op(*args, **kwargs)

    return wrapper


def _in_float32(op, args, kwargs):
    try:
        named = inspect.signature(op).bind(*args, **kwargs).arguments.items()
    except TypeError:  # let the op report its own argument error
        return op(*args, **kwargs)
    floats = [(name, a) for name, a in named if _is_float(a)]
    dtypes = {a.dtype for _, a in floats}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}: {a.dtype}" for name, a in floats)
        raise TypeError(f"all arrays must share one float dtype, got {listing}")
    (dtype,) = dtypes

    def widen(a):
        return a.astype(np.float32) if _is_half(a) else a

    result = op(*(widen(a) for a in args), **{k: widen(v) for k, v in kwargs.items()})
    return _to_half(result, dtype)


conv2d = _half_capable(_api.conv2d)
conv2d_backward = _half_capable(_api.conv2d_backward)
conv_transpose2d = _half_capable(_api.conv_transpose2d)
conv_transpose2d_backward = _half_capable(_api.conv_transpose2d_backward)
max_pool2d = _half_capable(_api.max_pool2d)
max_pool2d_backward = _half_capable(_api.max_pool2d_backward)
avg_pool2d = _half_capable(_api.avg_pool2d)
avg_pool2d_backward = _half_capable(_api.avg_pool2d_backward)

conv1d = _half_capable(_api_nd.conv1d)
conv1d_backward = _half_capable(_api_nd.conv1d_backward)
conv_transpose1d = _half_capable(_api_nd.conv_transpose1d)
conv_transpose1d_backward = _half_capable(_api_nd.conv_transpose1d_backward)
max_pool1d = _half_capable(_api_nd.max_pool1d)
max_pool1d_backward = _half_capable(_api_nd.max_pool1d_backward)
avg_pool1d = _half_capable(_api_nd.avg_pool1d)
avg_pool1d_backward = _half_capable(_api_nd.avg_pool1d_backward)
conv3d = _half_capable(_api_nd.conv3d)
conv3d_backward = _half_capable(_api_nd.conv3d_backward)
conv_transpose3d = _half_capable(_api_nd.conv_transpose3d)
conv_transpose3d_backward = _half_capable(_api_nd.conv_transpose3d_backward)
max_pool3d = _half_capable(_api_nd.max_pool3d)
max_pool3d_backward = _half_capable(_api_nd.max_pool3d_backward)
avg_pool3d = _half_capable(_api_nd.avg_pool3d)
avg_pool3d_backward = _half_capable(_api_nd.avg_pool3d_backward)

adaptive_avg_pool1d = _half_capable(_adaptive.adaptive_avg_pool1d)
adaptive_avg_pool2d = _half_capable(_adaptive.adaptive_avg_pool2d)
adaptive_avg_pool3d = _half_capable(_adaptive.adaptive_avg_pool3d)
adaptive_avg_pool1d_backward = _half_capable(_adaptive.adaptive_avg_pool1d_backward)
adaptive_avg_pool2d_backward = _half_capable(_adaptive.adaptive_avg_pool2d_backward)
adaptive_avg_pool3d_backward = _half_capable(_adaptive.adaptive_avg_pool3d_backward)
adaptive_max_pool1d = _half_capable(_adaptive.adaptive_max_pool1d)
adaptive_max_pool2d = _half_capable(_adaptive.adaptive_max_pool2d)
adaptive_max_pool3d = _half_capable(_adaptive.adaptive_max_pool3d)
adaptive_max_pool1d_backward = _half_capable(_adaptive.adaptive_max_pool1d_backward)
adaptive_max_pool2d_backward = _half_capable(_adaptive.adaptive_max_pool2d_backward)
adaptive_max_pool3d_backward = _half_capable(_adaptive.adaptive_max_pool3d_backward)

__all__ = _api.__all__ + _api_nd.__all__ + _adaptive.__all__
