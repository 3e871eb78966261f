"""Backend selection: available_backends, get/set_backend, use_backend, $CCONV_BACKEND,
per-call ``backend=``, cconv.compare, backend_info, and CCONV_REQUIRE_COMPILED.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

import cconv
from cconv import _backends
from conftest import BACKENDS


@pytest.fixture(autouse=True)
def _fresh_selection(monkeypatch):
    """Each test starts from the default choice and cannot leak a set_backend() to the next."""
    monkeypatch.setattr(_backends, "_global_choice", None)
    monkeypatch.delenv("CCONV_BACKEND", raising=False)


def _run(code, **env):
    """Run ``code`` in a fresh interpreter (outside the source tree) and return its stdout."""
    environment = dict(os.environ, **env)
    for name, value in env.items():
        if value is None:
            del environment[name]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, cwd=tempfile.gettempdir(), timeout=120)
    return result


# --------------------------------------------------------------------------
# the compiled backend is what CI tests
# --------------------------------------------------------------------------

def test_compiled_backend_is_active():
    """Unless the run is explicitly pure-Python, the compiled backend must be the default."""
    if cconv.backend_info()["pure_python"]:
        pytest.skip("a pure-Python run (CCONV_PURE_PYTHON=1): no compiled backend by design")
    assert "cython" in cconv.available_backends(), _backends.compiled_import_error
    if not os.environ.get("CCONV_BACKEND"):
        assert cconv.get_backend() == "cython"
    assert cconv.backend_info()["compiled"] is True


def test_default_backend():
    expected = "cython" if "cython" in cconv.available_backends() else "numpy"
    assert cconv.get_backend() == expected


_HIDE_COMPILED = "import sys; sys.modules['cconv._compiled'] = None\n"


def test_require_compiled_raises_when_extension_missing():
    result = _run(_HIDE_COMPILED + "import cconv", CCONV_REQUIRE_COMPILED="1", CCONV_BACKEND=None)
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "CCONV_REQUIRE_COMPILED=1" in result.stderr


def test_missing_extension_falls_back_with_warning():
    code = _HIDE_COMPILED + (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import cconv\n"
        "print(cconv.get_backend(), cconv.available_backends())\n"
        "print([str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])\n"
        "print(cconv.backend_info()['compiled_import_error'])\n")
    result = _run(code, CCONV_REQUIRE_COMPILED=None, CCONV_PURE_PYTHON=None, CCONV_BACKEND=None)
    assert result.returncode == 0, result.stderr
    backend_line, warning_line, error_line = result.stdout.splitlines()[-3:]
    assert backend_line.startswith("numpy ") and "'cython'" not in backend_line
    assert "falling back" in warning_line and "cconv._compiled" in warning_line
    assert "ImportError" in error_line or "ModuleNotFoundError" in error_line


# --------------------------------------------------------------------------
# choosing a backend
# --------------------------------------------------------------------------

def test_available_backends():
    names = cconv.available_backends()
    assert names == sorted(names) and "numpy" in names
    assert all(isinstance(n, str) for n in names)


def test_set_backend():
    for name in BACKENDS:
        cconv.set_backend(name)
        assert cconv.get_backend() == name


def test_use_backend_restores_and_nests():
    outer = cconv.get_backend()
    with cconv.use_backend("numpy") as chosen:
        assert chosen == "numpy" and cconv.get_backend() == "numpy"
        with cconv.use_backend(BACKENDS[0]):
            assert cconv.get_backend() == BACKENDS[0]
        assert cconv.get_backend() == "numpy"
    assert cconv.get_backend() == outer
    with pytest.raises(RuntimeError):
        with cconv.use_backend("numpy"):
            raise RuntimeError("boom")
    assert cconv.get_backend() == outer


def test_use_backend_is_thread_local():
    outer = cconv.get_backend()
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def other():
        entered.wait(10)
        seen["other"] = cconv.get_backend()
        with cconv.use_backend("numpy"):
            seen["other inside"] = cconv.get_backend()
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    other_name = next((n for n in BACKENDS if n != outer), "numpy")
    with cconv.use_backend(other_name):
        entered.set()
        release.wait(10)
        seen["main"] = cconv.get_backend()
    thread.join(10)
    assert seen == {"other": outer, "other inside": "numpy", "main": other_name}


@pytest.fixture
def spy(monkeypatch):
    """Record which backend module actually runs conv2d."""
    calls = []
    for name in BACKENDS:
        module = _backends.resolve(name)
        original = module.conv2d

        def wrapper(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(module, "conv2d", wrapper)
        if hasattr(module, "conv2d_ready"):    # the compiled backend's entry for remembered calls
            ready = module.conv2d_ready

            def ready_wrapper(*args, _name=name, _ready=ready):
                calls.append(_name)
                return _ready(*args)

            monkeypatch.setattr(module, "conv2d_ready", ready_wrapper)
    return calls


def test_per_call_backend_wins(spy):
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2))
    for name in BACKENDS:
        with cconv.use_backend("numpy"):
            cconv.conv2d(x, w, backend=name)
        cconv.set_backend("numpy")
        cconv.conv2d(x, w, backend=name)
    assert spy == [name for name in BACKENDS for _ in range(2)]


def test_selection_order(spy):
    """backend= > use_backend > set_backend > $CCONV_BACKEND > default."""
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2))
    last = BACKENDS[-1]
    cconv.set_backend(last)
    cconv.conv2d(x, w)
    with cconv.use_backend(BACKENDS[0]):
        cconv.conv2d(x, w)
    assert spy == [last, BACKENDS[0]]


def test_environment_variable():
    code = ("import cconv, numpy as np; print(cconv.get_backend()); "
            "print(cconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))).sum())")
    for name in BACKENDS:
        result = _run(code, CCONV_BACKEND=name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [name, "16.0"]


def test_environment_variable_unknown_name():
    code = ("import cconv, numpy as np\n"
            "try:\n"
            "    cconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))\n"
            "except ValueError as exc:\n"
            "    print('ValueError', exc)\n")
    result = _run(code, CCONV_BACKEND="fortran")
    assert result.returncode == 0, result.stderr
    assert "ValueError unknown or unavailable backend 'fortran'" in result.stdout


@pytest.mark.parametrize("bad,error", [("cuda", ValueError), ("Numpy", ValueError), (None, TypeError),
                                       (1, TypeError)])
def test_unknown_names(bad, error):
    before = cconv.get_backend()
    with pytest.raises(error, match="backend"):
        cconv.set_backend(bad)
    with pytest.raises(error, match="backend"):
        with cconv.use_backend(bad):
            pass
    if bad is not None:
        with pytest.raises(error, match="backend"):
            cconv.max_pool2d(np.ones((1, 2, 2)), 2, backend=bad)
    assert cconv.get_backend() == before


# --------------------------------------------------------------------------
# compare and backend_info
# --------------------------------------------------------------------------

def test_compare(rng):
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    table = cconv.compare("conv2d", x, w, padding=1, backends=BACKENDS, repeat=2)
    assert [r.backend for r in table] == BACKENDS
    for result in table:
        assert result.max_abs_diff <= 1e-12 * np.abs(x).max() * np.abs(w).sum()
        assert result.seconds > 0
    text = str(table)
    assert "conv2d" in text and all(name in text for name in BACKENDS)


def test_compare_with_indices(rng):
    """max_pool2d's int64 indices are compared too (exactly equal on every backend)."""
    x = rng.standard_normal((2, 3, 9, 8))
    table = cconv.compare(cconv.max_pool2d, x, 3, 2, 1, return_indices=True, backends=BACKENDS)
    assert [r.backend for r in table] == BACKENDS
    assert all(r.max_abs_diff == 0 for r in table)


def test_compare_rejects_bad_arguments():
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    with pytest.raises(ValueError, match="unknown op"):
        cconv.compare("conv3d", x, w)
    with pytest.raises(TypeError, match="backends="):
        cconv.compare("conv2d", x, w, backend="numpy")
    with pytest.raises(ValueError, match="unknown or unavailable backend"):
        cconv.compare("conv2d", x, w, backends=["numpy", "nope"])


def test_backend_info():
    info = cconv.backend_info()
    for key in ("active", "available", "num_threads", "compiled", "compiled_import_error"):
        assert key in info
    assert info["active"] == cconv.get_backend()
    assert info["available"] == cconv.available_backends()
    assert info["num_threads"] == cconv.get_num_threads() >= 1
    assert info["compiled"] == ("cython" in cconv.available_backends())
    # An import error is reported exactly when the compiled backend should be there and is not.
    assert (info["compiled_import_error"] is None) == (info["compiled"] or info["pure_python"])
    with cconv.use_backend("numpy"):
        assert cconv.backend_info()["active"] == "numpy"
