"""``cconv.backend_info()``: what is running, and why the compiled backend is missing if it is."""
from __future__ import annotations

from . import _autotune, _backends
from ._threads import get_num_threads


def backend_info():
    """A dict: active backend, available backends, thread count, compiled build details
    (or the reason the compiled extension failed to import; ``pure_python`` is True in a
    CCONV_PURE_PYTHON=1 build, which has no compiled backend by design) and autotune's state."""
    info = {
        "active": _backends.get_backend(),
        "available": _backends.available_backends(),
        "num_threads": get_num_threads(),
        "compiled": _backends._compiled is not None,
        "pure_python": _backends.pure_python,
        "compiled_import_error": _backends.compiled_import_error,
    }
    if _backends._compiled is not None:
        info.update(_backends._compiled.build_info())
    info["autotune"] = _autotune.info()
    return info
