"""cconv: fast, correct CPU convolution and pooling for NumPy, with PyTorch's semantics.

Public ops (NCHW, float32/float64): :func:`conv2d`, :func:`conv2d_backward`,
:func:`conv_transpose2d`, :func:`conv_transpose2d_backward`, :func:`max_pool2d`,
:func:`max_pool2d_backward`, :func:`avg_pool2d`, :func:`avg_pool2d_backward`.
:func:`explain` says which algorithm, instruction set, threads and workspace a call would use.
Backends: ``"cython"`` (compiled, default when built), ``"numpy"`` (reference),
``"torch"`` (when installed); see :func:`set_backend` and :func:`use_backend`.
"""
from ._api import (
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    explain,
    max_pool2d,
    max_pool2d_backward,
)
from ._backends import available_backends, get_backend, set_backend, use_backend
from ._compare import compare
from ._info import backend_info
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "available_backends", "get_backend", "set_backend", "use_backend", "compare",
    "backend_info", "explain", "get_num_threads", "set_num_threads", "__version__",
]
