"""The ``"cython"`` backend: the compiled kernels behind cconv's backend interface.

Importing this module imports the extension modules built from ``src/``; an
ImportError here is what makes cconv fall back to the NumPy reference.
"""
from . import _conv, _pool, _threads
from ._conv import conv2d, conv2d_backward  # noqa: F401
from ._pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward  # noqa: F401

name = "cython"

# The thread count follows OpenMP's own setting (and so threadpoolctl) from now on.
_threads._use_openmp_query(_conv.openmp_max_threads)


def build_info():
    """How the extension modules were built and which kernels they run."""
    info = _conv.build_info()
    info["pool_simd"] = _pool.pool_isa
    return info
