"""float16 and bfloat16 arrays computed in float32: how a call with 2-byte floats is run.

bfloat16 is ``ml_dtypes.bfloat16``, an optional dependency (NumPy has no bfloat16 of its
own). A call with float16 or bfloat16 arrays converts them to float32, runs the op and
converts its float results back; int64 indices stay int64. All float arrays of one call must
share one dtype. Which public ops do this is listed in :mod:`cconv._half`.

The conversions are the compiled extension's (F16C where the CPU has it) when it is built,
else NumPy's ``astype``; both give the same bits (round to nearest even on the way back).
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from . import _backends

_HALF = ("float16", "bfloat16")


def is_half(a):
    return isinstance(a, np.ndarray) and a.dtype.itemsize == 2 and a.dtype.name in _HALF


def _is_float(a):
    return isinstance(a, np.ndarray) and (a.dtype.kind == "f" or a.dtype.name == "bfloat16")


def to_float32(a):
    """A 2-byte float array as a float32 array of its shape (exact)."""
    compiled = _backends._compiled
    if compiled is None:
        return a.astype(np.float32)
    return compiled.half_to_float32(a, a.dtype.name == "bfloat16")


def _to_half(result, dtype):
    if isinstance(result, tuple):
        return tuple(_to_half(r, dtype) for r in result)
    if isinstance(result, np.ndarray) and result.dtype == np.float32:
        compiled = _backends._compiled
        return result.astype(dtype) if compiled is None else compiled.float32_to_half(result, dtype)
    return result


def call(op, args, kwargs):
    """``op(*args, **kwargs)``, with any float16/bfloat16 arrays computed in float32."""
    # The common call (no 2-byte arrays) pays one attribute test per argument, no more.
    for a in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(a, np.ndarray) and a.itemsize == 2 and is_half(a):
            return _in_float32(op, args, kwargs)
    return op(*args, **kwargs)


def half_capable(op):
    """Wrap ``op`` so that float16/bfloat16 arrays are computed in float32."""

    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        return call(op, args, kwargs)

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
        return to_float32(a) if is_half(a) else a

    result = op(*(widen(a) for a in args), **{k: widen(v) for k, v in kwargs.items()})
    return _to_half(result, dtype)
