"""cconv: fast, correct CPU convolution and pooling for NumPy, with PyTorch's semantics.

Public ops (NCHW, float32/float64, also float16/bfloat16 computed in float32): conv1d/2d/3d,
conv_transpose1d/2d/3d, max_pool1d/2d/3d, avg_pool1d/2d/3d, adaptive_avg_pool1d/2d/3d,
adaptive_max_pool1d/2d/3d, each with a ``*_backward``.
:func:`explain` says which algorithm, instruction set, threads and workspace a call would use;
:func:`set_autotune` times the applicable algorithms per geometry instead of predicting.
Backends: ``"cython"`` (compiled, default when built), ``"numpy"`` (reference),
``"torch"`` (when installed); see :func:`set_backend` and :func:`use_backend`.
"""
from ._half import (  # every op, float16/bfloat16-capable
    adaptive_avg_pool1d,
    adaptive_avg_pool1d_backward,
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool3d,
    adaptive_avg_pool3d_backward,
    adaptive_max_pool1d,
    adaptive_max_pool1d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    adaptive_max_pool3d,
    adaptive_max_pool3d_backward,
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool3d,
    avg_pool3d_backward,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv3d,
    conv3d_backward,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose3d,
    conv_transpose3d_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool3d,
    max_pool3d_backward,
)
from ._api import explain
from ._autotune import get_autotune, set_autotune
from ._backends import available_backends, get_backend, set_backend, use_backend
from ._compare import compare
from ._info import backend_info
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "conv1d", "conv1d_backward", "conv_transpose1d", "conv_transpose1d_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
    "conv3d", "conv3d_backward", "conv_transpose3d", "conv_transpose3d_backward",
    "max_pool3d", "max_pool3d_backward", "avg_pool3d", "avg_pool3d_backward",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "adaptive_avg_pool1d_backward", "adaptive_avg_pool2d_backward", "adaptive_avg_pool3d_backward",
    "adaptive_max_pool1d_backward", "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward",
    "available_backends", "get_backend", "set_backend", "use_backend", "compare",
    "backend_info", "explain", "get_num_threads", "set_num_threads", "get_autotune", "set_autotune",
    "__version__",
]
