"""``cconv.compare``: run one call on several backends, report differences and times; and the
one rule by which a result agrees with the reference (used by compare, the tests and the fuzzer)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import _api
from . import _backends


#: Relative tolerance of :func:`agreement`: ``norm(actual - expected) <= tol * norm(expected)``.
TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def agreement(actual, expected, dtype=None):
    """None when ``actual`` agrees with the reference ``expected``, else what differs.

    Same shape and dtype; integers (max-pool indices) exactly equal; floats with NaN at
    exactly the same positions, the same infinities, and on the finite part
    ``norm(actual - expected) <= tol * norm(expected)``, tol 1e-12 for float64 and 1e-5 for
    float32 (an all-zero reference must be matched exactly). ``dtype`` picks the tolerance of
    another dtype (e.g. float32's for float64 finite differences, which are only that exact)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return f"shape {actual.shape} != {expected.shape}"
    if actual.dtype != expected.dtype:
        return f"dtype {actual.dtype} != {expected.dtype}"
    if actual.dtype.kind in "iub":
        differ = int((actual != expected).sum())
        return f"{differ} of {actual.size} elements differ" if differ else None
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    if not np.array_equal(nan_a, nan_e):
        return f"NaN positions differ: {int((nan_a != nan_e).sum())} of {actual.size}"
    inf_e = np.isinf(expected)
    if not np.array_equal(actual[inf_e], expected[inf_e]) or np.isinf(actual[~inf_e]).any():
        return "infinities differ"
    finite = np.isfinite(expected)
    a = actual[finite].astype(np.float64)
    e = expected[finite].astype(np.float64)
    err = float(np.linalg.norm(a - e))
    ref = float(np.linalg.norm(e))
    tol = TOLERANCE[np.dtype(dtype or actual.dtype)]
    if not err <= tol * ref:
        return f"relative error {err / ref if ref else err:.3e} > {tol:.0e}"
    return None


@dataclass(frozen=True)
class BackendResult:
    """One backend's run of the call: differences from the reference backend and the best time."""

    backend: str
    max_abs_diff: float
    max_rel_diff: float
    seconds: float
    agrees: bool = True


class Comparison(list):
    """A list of :class:`BackendResult`, printed as a table."""

    def __init__(self, op_name, reference, results):
        super().__init__(results)
        self.op_name = op_name
        self.reference = reference

    def __str__(self):
        lines = [f"{self.op_name}: differences against {self.reference!r}",
                 f"{'backend':>8} {'max abs diff':>13} {'max rel diff':>13} {'time (ms)':>10} {'agrees':>6}"]
        lines += [f"{r.backend:>8} {r.max_abs_diff:13.3e} {r.max_rel_diff:13.3e} {r.seconds * 1e3:10.3f} "
                  f"{'yes' if r.agrees else 'NO':>6}" for r in self]
        return "\n".join(lines)


def _arrays(result):
    parts = result if isinstance(result, tuple) else (result,)
    return [np.asarray(p) for p in parts if p is not None]


def _differences(result, reference):
    abs_diff = rel_diff = 0.0
    for a, b in zip(_arrays(result), _arrays(reference)):
        if a.size == 0:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(a64 - b64)
        diff = np.where(np.isnan(a64) & np.isnan(b64), 0.0, diff)  # NaN agreeing with NaN is no error
        abs_diff = max(abs_diff, float(np.max(diff)))
        floor = np.finfo(a.dtype).tiny if a.dtype.kind == "f" else 1.0  # int64 indices: plain ratio
        rel_diff = max(rel_diff, float(np.max(diff / np.maximum(np.abs(b64), floor))))
    return abs_diff, rel_diff


def compare(op, *args, backends=None, reference="numpy", repeat=3, **kwargs):
    """Run ``op(*args, **kwargs)`` on each backend and compare with ``reference``.

    ``op`` is a public function (``cconv.conv2d``) or its name (``"conv2d"``);
    ``backends`` defaults to :func:`cconv.available_backends`. Each backend's time is the
    best of ``repeat`` runs. Returns a :class:`Comparison` (a list of :class:`BackendResult`)
    that prints as a table.
    """
    if isinstance(op, str):
        if op not in _api.__all__ or op == "explain":
            raise ValueError(f"unknown op {op!r}; choose one of {_api.__all__}")
        op = getattr(_api, op)
    if "backend" in kwargs:
        raise TypeError("compare() chooses the backends itself; pass backends=[...] instead of backend=")
    names = list(backends) if backends is not None else _backends.available_backends()
    expected = op(*args, backend=reference, **kwargs)
    results = []
    for name in names:
        best = float("inf")
        for _ in range(max(1, int(repeat))):
            start = time.perf_counter()
            out = op(*args, backend=name, **kwargs)
            best = min(best, time.perf_counter() - start)
        agrees = all(agreement(a, e) is None for a, e in zip(_arrays(out), _arrays(expected)))
        results.append(BackendResult(name, *_differences(out, expected), best, agrees))
    return Comparison(op.__name__, reference, results)
