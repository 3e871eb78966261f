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
import threading
import warnings

from . import _reference

_COMPILED_MODULE = "cconv._compiled"

# Why the compiled backend is unavailable (None when it imported fine).
compiled_import_error: str | None = None
_compiled = None
_state = threading.local()
_global_choice: str | None = None


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _pure_python_install():
    """True when built with CCONV_PURE_PYTHON=1 (setup.py leaves this marker file) or run with it:
    the NumPy reference is then the intended backend, not a fallback worth a warning."""
    marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pure_python")
    return _env_flag("CCONV_PURE_PYTHON") or os.path.exists(marker)


def _load_compiled():
    """Import the compiled backend once; warn (or raise under CCONV_REQUIRE_COMPILED=1) if missing."""
    global _compiled, compiled_import_error
    try:
        _compiled = importlib.import_module(_COMPILED_MODULE)
    except ImportError as exc:
        compiled_import_error = f"{type(exc).__name__}: {exc}"
        pure = _pure_python_install()
        if pure:
            compiled_import_error = f"pure-Python install (CCONV_PURE_PYTHON=1); {compiled_import_error}"
        if _env_flag("CCONV_REQUIRE_COMPILED"):
            raise ImportError(
                f"CCONV_REQUIRE_COMPILED=1 but the compiled cconv extension could not be imported "
                f"({compiled_import_error})"
            ) from exc
        if not pure:
            warnings.warn(
                f"cconv's compiled extension could not be imported ({compiled_import_error}); "
                "falling back to the slower NumPy reference backend",
                RuntimeWarning,
                stacklevel=3,
            )


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
        raise ValueError(f"unknown or unavailable backend {name!r}; available: {sorted(loaders)}{why}")
    return name


def set_backend(name):
    """Use backend ``name`` for every later call in this process that does not pass ``backend=``."""
    global _global_choice
    _global_choice = _check_name(name)


@contextlib.contextmanager
def use_backend(name):
    """Context manager: use backend ``name`` inside the ``with`` block (this thread only)."""
    previous = getattr(_state, "choice", None)
    _state.choice = _check_name(name)
    try:
        yield name
    finally:
        _state.choice = previous


def resolve(name=None):
    """The backend module for ``name`` (or the current choice when ``None``)."""
    if name is None:
        name = get_backend()
    loader = _loaders().get(name) if isinstance(name, str) else None
    return loader() if loader is not None else _loaders()[_check_name(name)]()


_load_compiled()
_default_choice = _default_name()
