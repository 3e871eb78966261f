"""The ``"cython"`` backend: the compiled kernels behind cconv's backend interface.

Importing this module imports the extension modules built from ``src/``; an
ImportError here is what makes cconv fall back to the NumPy reference.
"""
from ._conv import conv2d, conv2d_backward  # noqa: F401
from ._pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward  # noqa: F401
from ._conv import build_info  # noqa: F401

name = "cython"
