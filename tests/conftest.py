"""Shared fixtures and helpers for the cconv test suite.

The suite tests the compiled backend: it stops at once (pytest.UsageError) when that
cannot be imported, unless the run is explicitly pure-Python (``CCONV_PURE_PYTHON=1``, or
a package built that way). Helpers here are plain functions so that test modules can
``from conftest import assert_close``.

Backends
--------
``BACKENDS``
    every available backend except ``"torch"`` (so: ``"cython"`` when built, and
    ``"numpy"``); ops whose result must not depend on the backend are run on each.
``BACKENDS_UNDER_TEST``
    the backends the differential tests compare with the NumPy reference: the
    compiled one(s). ``CCONV_TEST_BACKENDS=torch`` (comma-separated names) overrides
    the choice, e.g. to debug the differential tests before the kernels exist.
"""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

import cconv
from cconv import _compare

REFERENCE = "numpy"

BACKENDS = [name for name in cconv.available_backends() if name != "torch"]


def _backends_under_test():
    override = os.environ.get("CCONV_TEST_BACKENDS", "").strip()
    if override:
        return [name.strip() for name in override.split(",") if name.strip()]
    return [name for name in BACKENDS if name != REFERENCE]


BACKENDS_UNDER_TEST = _backends_under_test()

#: Relative tolerance of :func:`assert_close` (cconv's one comparison rule, cconv._compare.agreement).
TOLERANCE = _compare.TOLERANCE

# How many cases each test category ran, by name; printed at the end of the session.
_TALLY: collections.Counter = collections.Counter()


def tally(category, name, count=1):
    """Record ``count`` cases of ``name`` under ``category`` (e.g. "differential", "conv2d")."""
    _TALLY[(category, name)] += count


def backend_params(names):
    """``pytest.mark.parametrize`` values for backend names; a skipped placeholder if there are none."""
    if names:
        return names
    return [pytest.param(None, marks=pytest.mark.skip(
        reason="no compiled backend is built (build it, or set CCONV_TEST_BACKENDS=torch)"))]


def assert_close(actual, expected, *, dtype=None, context=""):
    """Assert ``actual`` matches the reference ``expected`` by cconv's one comparison rule
    (:func:`cconv._compare.agreement`): same shape and dtype; NaN at exactly the same positions;
    infinities equal; on the finite part ``norm(actual - expected) <= tol * norm(expected)`` with
    tol 1e-12 for float64 and 1e-5 for float32 (``dtype``: the tolerance of that dtype instead)."""
    where = f" ({context})" if context else ""
    problem = _compare.agreement(actual, expected, dtype)
    assert problem is None, problem + where


def assert_identical(actual, expected, context=""):
    """Bit-for-bit equality (NaN payloads aside): for selections such as max pooling and reruns."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    where = f" ({context})" if context else ""
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}{where}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}{where}"
    assert np.array_equal(actual, expected, equal_nan=actual.dtype.kind == "f"), (
        f"{int((actual != expected).sum())} of {actual.size} elements differ{where}")


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name: reproducible, different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each non-torch backend in turn (the compiled one and the NumPy reference)."""
    return request.param


def pytest_configure(config):
    """Refuse to run without the compiled backend, unless this is an explicitly pure-Python run:
    a suite that quietly tests only the NumPy reference against itself proves nothing."""
    info = cconv.backend_info()
    if not info["compiled"] and not info["pure_python"]:
        raise pytest.UsageError(
            f"cconv's compiled backend is not available, so these tests would not test it.\n"
            f"  cconv imported from {os.path.dirname(cconv.__file__)}\n"
            f"  reason: {info['compiled_import_error']}\n"
            f"Build it (`pip install -e .` in the checkout), or set CCONV_PURE_PYTHON=1 for a run "
            f"that tests the NumPy reference only.")


def pytest_report_header(config):
    return (f"cconv {cconv.__version__} from {os.path.dirname(cconv.__file__)}; "
            f"backends {cconv.available_backends()}, default {cconv.get_backend()!r}, "
            f"differential-tested: {BACKENDS_UNDER_TEST or 'none'}")


def pytest_terminal_summary(terminalreporter):
    if not _TALLY:
        return
    categories = sorted({category for category, _ in _TALLY})
    for category in categories:
        counts = {name: n for (cat, name), n in sorted(_TALLY.items()) if cat == category}
        if len(counts) <= 20:
            detail = ", ".join(f"{name} {n}" for name, n in counts.items())
        else:
            detail = f"{len(counts)} kinds"
        terminalreporter.write_line(f"cconv {category}: {sum(counts.values())} cases ({detail})")


def numerical_gradient(f, a, eps):
    """Central differences of the scalar ``f()`` with respect to every element of ``a``,
    perturbed in place (``a`` must own its memory or be a contiguous view)."""
    grad = np.empty_like(a)
    flat = a.reshape(-1)
    assert np.shares_memory(flat, a)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grad.flat[i] = (plus - minus) / (2 * eps)
    return grad


def spy_on(monkeypatch, name):
    """Wrap ``cconv.<name>``: returns a list that receives (positional arrays, result) per call."""
    calls = []
    original = getattr(cconv, name)

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(cconv, name, spy)
    return calls


def compiled_only(what):
    """``pytestmark`` of a module that tests one compiled path the planner must choose by itself:
    skipped without the compiled backend (``what``: the path, e.g. "the dot kernel") or when
    CCONV_CONV_ALGO forces an algorithm."""
    return [
        pytest.mark.skipif("cython" not in BACKENDS_UNDER_TEST,
                           reason=f"{what} is in the compiled backend only"),
        pytest.mark.skipif(bool(os.environ.get("CCONV_CONV_ALGO")), reason="an algorithm is forced"),
    ]


def gemm_tile(dtype):
    """(mr, nr) of the GEMM micro-kernel the compiled backend runs for ``dtype`` on this CPU
    (or under CCONV_KERNEL_ISA): tests that need whole or partial panels size their maps by it."""
    mr, nr = cconv.backend_info()["gemm_tile"][np.dtype(dtype).name]
    return mr, nr


def run_under_isa(module_file, isa, select, min_passed):
    """Run the test module ``module_file`` again in a subprocess with the kernels switched to
    ``isa`` (CCONV_KERNEL_ISA) and only the compiled backend under test, its tests filtered by
    ``-k select``; assert that it passed with at least ``min_passed`` tests run (so a variant
    whose tests were all deselected or skipped fails too).  Skips where the CPU does not run
    ``isa``.  Returns the subprocess's stdout."""
    if isa not in cconv.backend_info()["simd_supported"]:
        pytest.skip(f"this CPU does not run {isa}")
    env = dict(os.environ, CCONV_KERNEL_ISA=isa, CCONV_TEST_BACKENDS="cython")
    env.pop("CCONV_CONV_ALGO", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         os.path.basename(module_file), "-k", select],
        env=env, cwd=os.path.dirname(os.path.abspath(module_file)),
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= min_passed, result.stdout[-2000:]
    return result.stdout


def address(array):
    """The address of an array's first byte: equal addresses prove that no copy was made."""
    return array.__array_interface__["data"][0]
