"""Backend registry: which implementation runs an op, chosen globally, per block or per call.

A backend is a module-like object with the functions of :mod:`cconv._reference`
(``conv2d``, ``conv2d_backward``, ``max_pool2d``, ``max_pool2d_backward``,
``avg_pool2d``, ``avg_pool2d_backward``), all taking validated, C-contiguous arrays
of one float dtype plus a geometry record. Selection order: the call's ``backend=``,
then :func:`use_backend` / :func:`set_backend`, then ``$CCONV_BACKEND``, then
``"cython"`` when the compiled extension imports, else ``"numpy"``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import threading
import warnings

from . import _reference

_COMPILED_MODULE = "cconv._compiled"
_EXTENSION_MODULES = ("cconv._conv", "cconv._pool")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# Why the compiled backend is unavailable when it should be there (None when it imported
# fine, and in a pure-Python build, which has no compiled backend by design).
compiled_import_error: str | None = None
pure_python = False  # a CCONV_PURE_PYTHON=1 build (or run): the NumPy reference is the backend
_compiled = None
_state = threading.local()
_global_choice: str | None = None
_open_blocks = 0                  # use_backend blocks open in any thread (0: no thread-local choice to look up)
_open_blocks_lock = threading.Lock()
_loaded = {}                      # name -> backend module, once resolved


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _pure_python_install():
    """True when built with CCONV_PURE_PYTHON=1 (setup.py leaves this marker file) or run with it:
    the NumPy reference is then the intended backend, not a fallback worth a warning."""
    return _env_flag("CCONV_PURE_PYTHON") or os.path.exists(os.path.join(_PACKAGE_DIR, "_pure_python"))


def _source_checkout_root():
    """The checkout's root when this package is the ``cconv/`` directory of a source tree."""
    root = os.path.dirname(_PACKAGE_DIR)
    if os.path.exists(os.path.join(root, "setup.py")) and os.path.exists(os.path.join(root, "src", "_conv.pyx")):
        return root
    return None


def _why_no_extension_modules():
    """Why the extension modules are absent from the imported package, or None if they are there.

    Looked up before importing them: importing a module that does not exist from a package
    that is still initialising fails with a misleading "circular import" message."""
    absent = [name for name in _EXTENSION_MODULES if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    version = ".".join(map(str, sys.version_info[:2]))
    root = _source_checkout_root()
    if root is not None:
        return (f"cconv was imported from {_PACKAGE_DIR}, a source checkout whose compiled modules "
                f"are not built (for Python {version}); Python looks in the current directory before "
                f"the installed packages. Either build them in place: `pip install -e .` in {root}; "
                f"or run Python from another directory to use an installed cconv")
    return (f"the compiled modules ({', '.join(absent)}) for Python {version} are not in "
            f"{_PACKAGE_DIR}: reinstall cconv from a wheel, or from source with a C compiler")


_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _import_with_passive_waits(name):
    """Import ``name`` with OpenMP's passive wait policy, unless the user chose a policy.

    GNU libgomp reads its wait policy once, when it loads (here, with the extension), and by
    default spins for milliseconds at every barrier. With another busy process on the cores,
    a spinning thread burns the time slice its teammate needs: measured here, 2-thread calls
    then had 90th percentiles up to 35x their medians (benchmarks/under_load_results.md).
    Passive waiting sleeps instead. The variable is set only for the import and removed after
    it, so libraries loaded later (PyTorch's own OpenMP runtime, say) do not see it.
    """
    if any(v in os.environ for v in _WAIT_SETTINGS):
        return importlib.import_module(name)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        return importlib.import_module(name)
    finally:
        del os.environ["OMP_WAIT_POLICY"]


def _load_compiled():
    """Import the compiled backend once; warn (or raise under CCONV_REQUIRE_COMPILED=1) if missing."""
    global _compiled, compiled_import_error, pure_python
    error = None
    try:
        reason = _why_no_extension_modules()
        if reason is None:
            _compiled = _import_with_passive_waits(_COMPILED_MODULE)
            return
    except ImportError as exc:
        reason, error = f"{type(exc).__name__}: {exc}", exc
    except AttributeError as exc:  # an in-place build older than the Python files beside it
        reason, error = (f"the compiled extension does not match cconv's Python sources ({exc}); "
                         "rebuild it (pip install -e .)"), exc
    if _env_flag("CCONV_REQUIRE_COMPILED"):
        raise ImportError(f"CCONV_REQUIRE_COMPILED=1 but cconv's compiled backend is unavailable: {reason}"
                          ) from error
    if _pure_python_install():
        pure_python = True  # no extension by design: nothing to warn about
        return
    compiled_import_error = reason
    warnings.warn(f"{reason}; falling back to the slower NumPy reference backend",
                  RuntimeWarning, stacklevel=3)


def _torch_backend():
    return importlib.import_module("cconv._torch_backend")


_loader_cache = None


def _loaders():
    """name -> zero-argument loader; torch is only looked up (not imported) until first used."""
    global _loader_cache
    if _loader_cache is None:
        loaders = {"numpy": lambda: _reference}
        if _compiled is not None:
            loaders["cython"] = lambda: _compiled
        if importlib.util.find_spec("torch") is not None:
            loaders["torch"] = _torch_backend
        _loader_cache = loaders
    return _loader_cache


def available_backends():
    """Names of the backends that can run here, e.g. ``['cython', 'numpy', 'torch']``."""
    return sorted(_loaders())


def _default_name():
    # $CCONV_BACKEND is read once, at import, like $OMP_NUM_THREADS: ops resolve their backend
    # on every call, and an environment lookup would be a fifth of a tiny call's overhead.
    return os.environ.get("CCONV_BACKEND") or ("cython" if _compiled is not None else "numpy")


def get_backend():
    """Name of the backend that a call without ``backend=`` would use right now."""
    return getattr(_state, "choice", None) or _global_choice or _default_choice


def _check_name(name):
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, got {type(name).__name__}")
    loaders = _loaders()
    if name not in loaders:
        why = ""
        if name == "cython" and compiled_import_error:
            why = f" (the compiled extension failed to import: {compiled_import_error})"
        elif name == "cython" and pure_python:
            why = " (a pure-Python build, CCONV_PURE_PYTHON=1: no compiled backend)"
        raise ValueError(f"unknown or unavailable backend {name!r}; available: {sorted(loaders)}{why}")
    return name


def set_backend(name):
    """Use backend ``name`` for every later call in this process that does not pass ``backend=``."""
    global _global_choice
    _global_choice = _check_name(name)


@contextlib.contextmanager
def use_backend(name):
    """Context manager: use backend ``name`` inside the ``with`` block (this thread only)."""
    global _open_blocks
    previous = getattr(_state, "choice", None)
    _state.choice = _check_name(name)
    with _open_blocks_lock:
        _open_blocks += 1
    try:
        yield name
    finally:
        _state.choice = previous
        with _open_blocks_lock:
            _open_blocks -= 1


def resolve(name=None):
    """The backend module for ``name`` (or the current choice when ``None``).

    Every op calls this: outside ``use_backend`` blocks it costs two global lookups and one
    dict lookup (a thread-local lookup costs as much again, so it is skipped when no block is open)."""
    if name is None:
        name = (_open_blocks and getattr(_state, "choice", None)) or _global_choice or _default_choice
    try:
        return _loaded[name]
    except (KeyError, TypeError):
        return _load(name)


def _load(name):
    loader = _loaders().get(name) if isinstance(name, str) else None
    module = loader() if loader is not None else _loaders()[_check_name(name)]()
    _loaded[name] = module
    return module


_load_compiled()
_default_choice = _default_name()
