"""The ``"cython"`` backend: the compiled kernels behind cconv's backend interface.

Importing this module imports the extension modules built from ``src/``; an
ImportError here is what makes cconv fall back to the NumPy reference.  Each op reads
the thread count once and passes it down to the extension.
"""
from . import _conv, _pool, _threads
from ._threads import get_num_threads

name = "cython"

# The thread count follows OpenMP's own setting (and so threadpoolctl) from now on.
_threads._use_openmp_query(_conv.openmp_max_threads)


# A remembered conv2d call (cconv._api) keeps its geometry in C and its repeats run through
# these, which check the arrays in C; the caller passes the thread count.
ConvCall = _conv.ConvCall
conv2d_ready = _conv.conv2d_ready
conv2d_backward_ready = _conv.conv2d_backward_ready


def conv2d(x, w, b, g):
    return _conv.conv2d(x, w, b, g, get_num_threads())


def conv2d_backward(gy, x, w, g, need_input, need_weight, need_bias):
    return _conv.conv2d_backward(gy, x, w, g, need_input, need_weight, need_bias, get_num_threads())


def conv3d(x, w, b, g, depth):
    """conv3d on the volume algorithm, or None where the planner folds it into a conv2d."""
    return _conv.conv3d(x, w, b, g, depth, get_num_threads())


def conv3d_grad_input(gy, w, g, depth):
    """conv3d's input gradient on the volume algorithm, or None (fold into a conv2d)."""
    return _conv.conv3d_grad_input(gy, w, g, depth, get_num_threads())


def conv3d_patches(a, shape, kernel, scatter):
    """conv3d's non-overlapping patches (kernel == stride): gather x into the channels of a
    1x1 conv2d, or scatter that conv2d's grad_input back (see _conv.conv3d_patches)."""
    return _conv.conv3d_patches(a, shape, kernel, scatter, get_num_threads())


def conv3d_depth_scatter(z, shape, depth, groups):
    """The folded conv3d's input gradient scattered back into its depth slices (see
    _conv.conv3d_depth_scatter)."""
    return _conv.conv3d_depth_scatter(z, shape, depth, groups, get_num_threads())


def explain_volume(w, g, depth, forward):
    """explain's entries of the conv3d passes the volume algorithm runs ({} where it folds)."""
    return _conv.explain_volume(w, g, depth, get_num_threads(), forward)


def max_pool2d(x, g):
    return _pool.max_pool2d(x, g, get_num_threads())


# max_pool2d_backward checks the index range in its own parallel scatter pass and returns
# None when one is out of range (the caller then raises with its own message).
checks_pool_indices = True


def max_pool2d_backward(gy, indices, input_shape):
    return _pool.max_pool2d_backward(gy, indices, input_shape, get_num_threads())


def avg_pool2d(x, g, count_include_pad, divisor_override):
    return _pool.avg_pool2d(x, g, count_include_pad, divisor_override, get_num_threads())


def avg_pool2d_backward(gy, g, count_include_pad, divisor_override):
    return _pool.avg_pool2d_backward(gy, g, count_include_pad, divisor_override, get_num_threads())


def max_pool3d(x, g, depth):
    return _pool.max_pool3d(x, g, depth, get_num_threads())


def adaptive_max_pool(x, out):
    return _pool.adaptive_max_pool(x, out, get_num_threads())


def adaptive_avg_pool(x, out):
    return _pool.adaptive_avg_pool(x, out, get_num_threads())


def adaptive_avg_pool_backward(gy, input_shape):
    return _pool.adaptive_avg_pool_backward(gy, input_shape, get_num_threads())


def half_to_float32(a, bfloat16):
    return _conv.half_to_float32(a, bfloat16, get_num_threads())


def float32_to_half(a, dtype):
    return _conv.float32_to_half(a, dtype, get_num_threads())


def build_info():
    """How the extension modules were built and which kernels they run."""
    info = _conv.build_info()
    info["pool_simd"] = _pool.pool_isa
    info["pool_algorithms"] = list(_pool.POOL_ALGORITHMS)
    info["half_conversion"] = _conv.half_variant()
    one, team = (a + b for a, b in zip(_conv.team_runs(), _pool.team_runs()))
    info["adaptive_threads"].update(calls_on_one_thread=one, calls_on_the_team=team)
    return info
