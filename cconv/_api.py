"""The public ops. Each validates its arguments (via :mod:`cconv._shapes`), makes its
arrays C-contiguous, hands them to the chosen backend and restores an unbatched
result. Semantics follow ``torch.nn.functional``; layout is NCHW.

Training loops repeat the same calls, and on small layers the checks cost more than the
arithmetic. So each op remembers the calls it has validated, keyed on what validation
depends on (shapes, dtypes and the argument values), and runs a repeat of one after a few
cheap checks: the arrays are exact ndarrays the kernels can read in place (C-contiguous,
aligned) and the arguments are exact ints, strs, None or tuples of ints (and bools where a
bool is asked for), which equal only values that validation treats the same way. Any other
call takes the checked path, where float16/bfloat16 arrays are also widened to float32. On the
compiled backend a remembered convolution keeps its geometry in C (a ``ConvCall``) and the
extension checks the arrays itself (exact ndarray, dtype, shape, C-contiguous, aligned) before
reading their data pointers; an array that fails goes to the checked path.
"""
from __future__ import annotations

import inspect

import numpy as np

from . import _backends
from . import _shapes
from . import _widen
from ._threads import get_num_threads

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "explain",
]

_ndarray = np.ndarray
_resolve = _backends.resolve
_num_threads = get_num_threads
# The compiled backend (None without it). A remembered conv2d call keeps its geometry in C (a
# ConvCall) and, on that backend, runs through entry points that check its arrays in C.
_cython = _backends._compiled
_conv_call = _cython.ConvCall if _cython is not None else None


def _unbatch(result, unbatched):
    if not unbatched:
        return result
    if isinstance(result, tuple):
        return tuple(None if r is None else r[0] for r in result)
    return result[0]


def _batched_like(array, unbatched):
    """Give a gradient the batch axis that its unbatched forward input was given."""
    return array[np.newaxis] if unbatched and array.ndim == 3 else array


# --------------------------------------------------------------------------
# validated calls, remembered
# --------------------------------------------------------------------------

_C_ALIGNED = 0x0001 | 0x0100  # NumPy's C_CONTIGUOUS | ALIGNED flag bits (ndarray.flags.num)
_KEY_SCALARS = (int, str, type(None))
_MAX_KNOWN = 1024             # remembered calls per op; the table restarts when full


def _ready(*arrays):
    """True when every array is None or an exact ndarray the kernels can read in place."""
    for a in arrays:
        if a is not None and (type(a) is not _ndarray or a.flags.num & _C_ALIGNED != _C_ALIGNED):
            return False
    return True


def _plain(*args):
    """True when every argument is an exact int, str or None, or a tuple of exact ints.

    As dict keys these equal only values that validation treats the same way: ``True``,
    ``1.0`` and ``np.bool_(1)`` all equal ``1`` but are refused as sizes."""
    for a in args:
        kind = type(a)
        if kind not in _KEY_SCALARS and not (kind is tuple and all(type(v) is int for v in a)):
            return False
    return True


def _bools(*args):
    """True when every argument is an exact bool (``1`` equals ``True`` but is refused as one)."""
    for a in args:
        if type(a) is not bool:
            return False
    return True


def _remember(known, key, value, arrays, args, flags=()):
    """Record a call that passed validation, if a repeat of it can be recognised cheaply.

    ``key(*arrays, *args, *flags)`` must be the key the op looks up; ``flags`` are bool arguments."""
    if _ready(*arrays) and _plain(*args) and _bools(*flags):
        if len(known) >= _MAX_KNOWN:
            known.clear()
        known[key(*arrays, *args, *flags)] = value


def _conv_call_of(g, dtype, x_shape, w_shape, y_shape):
    """The compiled backend's record of a validated conv2d call, with its arrays' shapes as the
    caller passes them (None without that backend)."""
    return None if _conv_call is None else _conv_call(g, dtype, x_shape, w_shape, y_shape)


def _conv2d_call(g, dtype, unbatched):
    cut = 1 if unbatched else 0
    return _conv_call_of(g, dtype, g.input_shape[cut:], g.weight_shape, g.output_shape[cut:])


def _known_conv(known, key, backend, arrays, args, flags=()):
    """The ConvCall of the remembered call this one repeats when it runs on the compiled backend
    (which checks its arrays in C), else None: the caller then validates."""
    try:
        call = known[key(*arrays, *args, *flags)]
    except (AttributeError, KeyError, TypeError):
        return None
    return call if _plain(*args) and _bools(*flags) and _resolve(backend) is _cython else None


def _remember_conv(known, key, arrays, args, flags, make_call):
    """Remember a validated call for the compiled backend: ``make_call()`` gives its ConvCall."""
    if _cython is not None and _ready(*arrays) and _plain(*args) and _bools(*flags):
        _remember(known, key, make_call(), arrays, args, flags)


def _same_ndim(a, b):
    return getattr(a, "ndim", None) == getattr(b, "ndim", None)


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

_CONV2D = {}


def _conv2d_key(x, w, b, stride, padding, dilation, groups):
    if b is None:
        return x.shape, x.dtype, w.shape, w.dtype, stride, padding, dilation, groups
    return x.shape, x.dtype, w.shape, w.dtype, b.shape, b.dtype, stride, padding, dilation, groups


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """2-d cross-correlation, like ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input : array (N, C, H, W) or (C, H, W), float32 or float64
    weight : array (O, C/groups, kh, kw)
    bias : array (O,) or None
    stride, dilation : int or (int, int), >= 1
    padding : int, (int, int), ``'valid'`` or ``'same'`` (stride 1 only; an odd total
        padding puts the extra row/column at the bottom/right, as PyTorch does)
    groups : int dividing C and O; ``groups == C`` is a depthwise convolution
    backend : str or None, ``'cython'``, ``'numpy'`` or ``'torch'``; None uses :func:`cconv.get_backend`

    Returns
    -------
    array (N, O, Ho, Wo) of the input's dtype, with
    ``Ho = (H + 2*pad_h - dilation_h*(kh - 1) - 1) // stride_h + 1`` (likewise Wo).
    """
    # _conv2d_key and _plain inlined: this is the most frequent call, and each Python call
    # costs about as much as the checks it makes
    try:
        if bias is None:
            g, unbatched, call = _CONV2D[input.shape, input.dtype, weight.shape, weight.dtype,
                                         stride, padding, dilation, groups]
        else:
            g, unbatched, call = _CONV2D[input.shape, input.dtype, weight.shape, weight.dtype, bias.shape,
                                         bias.dtype, stride, padding, dilation, groups]
        known = (type(stride) is type(padding) is type(dilation) is type(groups) is int
                 or _plain(stride, padding, dilation, groups))
    except (AttributeError, KeyError, TypeError):
        known = False
    if known:
        impl = _resolve(backend)
        if impl is _cython:     # the arrays are checked in C (None: not as remembered)
            y = impl.conv2d_ready(input, weight, bias, call, _num_threads())
            if y is not None:
                return y
        elif _ready(input, weight, bias):
            y = impl.conv2d(input[np.newaxis] if unbatched else input, weight, bias, g)
            return y[0] if unbatched else y
    return _widen.call(_conv2d_checked, (input, weight, bias, stride, padding, dilation, groups),
                       {"backend": backend})


def _conv2d_checked(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    x, w, b, g, unbatched = _conv2d_inputs(input, weight, bias, stride, padding, dilation, groups)
    impl = _resolve(backend)
    _remember(_CONV2D, _conv2d_key, (g, unbatched, _conv2d_call(g, x.dtype, unbatched)), (input, weight, bias),
              (stride, padding, dilation, groups))
    return _unbatch(impl.conv2d(x, w, b, g), unbatched)


def _conv2d_inputs(input, weight, bias, stride, padding, dilation, groups):
    x, w, b = _shapes.as_float_arrays(input=input, weight=weight, bias=bias)
    x, unbatched = _shapes.batched(x, "input")
    g = _shapes.conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    _shapes.check_bias(b, g.out_channels)
    return _shapes.contiguous(x), _shapes.contiguous(w), _shapes.contiguous(b), g, unbatched


_CONV2D_BACKWARD = {}


def _conv2d_backward_key(gy, x, w, stride, padding, dilation, groups, m0, m1, m2):
    return (gy.shape, gy.dtype, x.shape, x.dtype, w.shape, w.dtype, stride, padding, dilation, groups, m0, m1, m2)


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=(True, True, True), backend=None):
    """Gradients of :func:`conv2d` with respect to input, weight and bias.

    ``grad_input`` (N, C, H, W) is the "delta for the input layer": the full correlation of
    ``grad_output`` (N, O, Ho, Wo) with the flipped kernel, honouring stride, dilation and
    groups. ``grad_weight`` (O, C/groups, kh, kw) correlates the input with ``grad_output``;
    ``grad_bias`` (O,) sums ``grad_output`` over N, Ho and Wo.

    Returns ``(grad_input, grad_weight, grad_bias)`` with ``None`` wherever ``output_mask``
    (input, weight, bias) is False, like ``aten::convolution_backward``; unrequested
    gradients are not computed.
    """
    try:  # _conv2d_backward_key, _plain and _bools inlined, as in conv2d
        m0, m1, m2 = output_mask
        g, unbatched, call = _CONV2D_BACKWARD[grad_output.shape, grad_output.dtype, input.shape, input.dtype,
                                              weight.shape, weight.dtype, stride, padding, dilation, groups,
                                              m0, m1, m2]
        known = ((type(stride) is type(padding) is type(dilation) is type(groups) is int
                  or _plain(stride, padding, dilation, groups))
                 and type(m0) is type(m1) is type(m2) is bool)
    except (AttributeError, KeyError, TypeError, ValueError):  # ValueError: an output_mask of another length
        known = False
    if known:
        impl = _resolve(backend)
        if impl is _cython:     # the arrays are checked in C (None: not as remembered)
            grads = impl.conv2d_backward_ready(grad_output, input, weight, call, m0, m1, m2, _num_threads())
            if grads is not None:
                return grads
        elif _ready(grad_output, input, weight):
            if unbatched:
                grad_output, input = grad_output[np.newaxis], input[np.newaxis]
            grad_input, grad_weight, grad_bias = impl.conv2d_backward(grad_output, input, weight, g, m0, m1, m2)
            if unbatched and grad_input is not None:
                grad_input = grad_input[0]
            return grad_input, grad_weight, grad_bias
    return _widen.call(_conv2d_backward_checked, (grad_output, input, weight, stride, padding, dilation, groups),
                       {"output_mask": output_mask, "backend": backend})


def _conv2d_backward_checked(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1, *,
                             output_mask=(True, True, True), backend=None):
    gy, x, w, g, mask, unbatched = _conv2d_backward_inputs(grad_output, input, weight, stride, padding,
                                                           dilation, groups, output_mask)
    impl = _resolve(backend)
    if _same_ndim(grad_output, input):  # else the fast path would not know where to add the batch axis
        _remember(_CONV2D_BACKWARD, _conv2d_backward_key, (g, unbatched, _conv2d_call(g, x.dtype, unbatched)),
                  (grad_output, input, weight),
                  (stride, padding, dilation, groups), output_mask)
    grad_input, grad_weight, grad_bias = impl.conv2d_backward(gy, x, w, g, *mask)
    if unbatched and grad_input is not None:
        grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


def _conv2d_backward_inputs(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    mask = _shapes.output_mask(output_mask)
    gy, x, w = _shapes.as_float_arrays(grad_output=grad_output, input=input, weight=weight)
    x, unbatched = _shapes.batched(x, "input")
    gy = _batched_like(gy, unbatched)
    g = _shapes.conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    _shapes.check_output_shape(gy, g.output_shape, "grad_output")
    return _shapes.contiguous(gy), _shapes.contiguous(x), _shapes.contiguous(w), g, mask, unbatched


def _transpose_geometry(x, w, stride, padding, output_padding, groups, dilation):
    x, unbatched = _shapes.batched(x, "input")
    g, output_shape = _shapes.conv_transpose_geometry(x.shape, w.shape, stride, padding, output_padding,
                                                      dilation, groups)
    return x, unbatched, g, output_shape


_CONV_TRANSPOSE2D = {}


def _conv_transpose2d_key(x, w, b, stride, padding, output_padding, groups, dilation):
    if b is None:
        return x.shape, x.dtype, w.shape, w.dtype, stride, padding, output_padding, groups, dilation
    return x.shape, x.dtype, w.shape, w.dtype, b.shape, b.dtype, stride, padding, output_padding, groups, dilation


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, backend=None):
    """2-d transposed convolution, like ``torch.nn.functional.conv_transpose2d``.

    It is the input gradient of a :func:`conv2d` with the same weight, stride, padding,
    dilation and groups (the adjoint of that linear map), plus bias.

    Parameters
    ----------
    input : array (N, C_in, H, W) or (C_in, H, W)
    weight : array (C_in, C_out/groups, kh, kw)
    bias : array (C_out,) or None
    padding : int or pair; ``output_padding`` adds rows/columns at the bottom/right and must be
        smaller than stride or dilation

    Returns
    -------
    array (N, C_out, Ho, Wo) with
    ``Ho = (H - 1)*stride_h - 2*pad_h + dilation_h*(kh - 1) + output_padding_h + 1``.
    """
    try:
        g, output_shape, unbatched = _CONV_TRANSPOSE2D[_conv_transpose2d_key(
            input, weight, bias, stride, padding, output_padding, groups, dilation)]
        known = _ready(input, weight, bias) and _plain(stride, padding, output_padding, groups, dilation)
    except (AttributeError, KeyError, TypeError):
        known = False
    if not known:
        return _widen.call(_conv_transpose2d_checked,
                           (input, weight, bias, stride, padding, output_padding, groups, dilation),
                           {"backend": backend})
    x = input[np.newaxis] if unbatched else input
    return _conv_transpose2d_run(_resolve(backend), x, weight, bias, g, output_shape, unbatched)


def _conv_transpose2d_checked(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, *, backend=None):
    x, w, b, g, output_shape, unbatched = _conv_transpose2d_inputs(input, weight, bias, stride, padding,
                                                                   output_padding, groups, dilation)
    impl = _resolve(backend)
    _remember(_CONV_TRANSPOSE2D, _conv_transpose2d_key, (g, output_shape, unbatched), (input, weight, bias),
              (stride, padding, output_padding, groups, dilation))
    return _conv_transpose2d_run(impl, x, w, b, g, output_shape, unbatched)


def _conv_transpose2d_run(impl, x, w, b, g, output_shape, unbatched):
    y, _, _ = impl.conv2d_backward(x, None, w, g, True, False, False)
    if y.shape != output_shape:  # output_padding >= stride: rows/columns that no window reaches
        y = np.pad(y, ((0, 0), (0, 0), (0, output_shape[2] - g.in_h), (0, output_shape[3] - g.in_w)))
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y[0] if unbatched else y


def _conv_transpose2d_inputs(input, weight, bias, stride, padding, output_padding, groups, dilation):
    x, w, b = _shapes.as_float_arrays(input=input, weight=weight, bias=bias)
    x, unbatched, g, output_shape = _transpose_geometry(x, w, stride, padding, output_padding, groups, dilation)
    _shapes.check_bias(b, g.in_channels)
    return _shapes.contiguous(x), _shapes.contiguous(w), b, g, output_shape, unbatched


_CONV_TRANSPOSE2D_BACKWARD = {}


def _conv_transpose2d_backward_key(gy, x, w, stride, padding, output_padding, groups, dilation, m0, m1, m2):
    return (gy.shape, gy.dtype, x.shape, x.dtype, w.shape, w.dtype, stride, padding, output_padding, groups,
            dilation, m0, m1, m2)


def conv_transpose2d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, *, output_mask=(True, True, True), backend=None):
    """Gradients of :func:`conv_transpose2d`: ``(grad_input, grad_weight, grad_bias)``.

    Because conv_transpose2d is the adjoint of conv2d, ``grad_input`` is ``conv2d(grad_output,
    weight)`` and ``grad_weight`` is conv2d's weight gradient with the roles of input and
    output swapped. Shapes: grad_output (N, C_out, Ho, Wo), input (N, C_in, H, W).
    """
    try:
        g, unbatched = _CONV_TRANSPOSE2D_BACKWARD[_conv_transpose2d_backward_key(
            grad_output, input, weight, stride, padding, output_padding, groups, dilation, *output_mask)]
        known = (_ready(grad_output, input, weight) and _plain(stride, padding, output_padding, groups, dilation)
                 and _bools(*output_mask))
    except (AttributeError, KeyError, TypeError):
        known = False
    if not known:
        return _widen.call(_conv_transpose2d_backward_checked,
                           (grad_output, input, weight, stride, padding, output_padding, groups, dilation),
                           {"output_mask": output_mask, "backend": backend})
    if unbatched:
        grad_output, input = grad_output[np.newaxis], input[np.newaxis]
    return _conv_transpose2d_backward_run(_resolve(backend), grad_output, input, weight, g, output_mask, unbatched)


def _conv_transpose2d_backward_checked(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                                       dilation=1, *, output_mask=(True, True, True), backend=None):
    gy, x, w, g, mask, unbatched = _conv_transpose2d_backward_inputs(
        grad_output, input, weight, stride, padding, output_padding, groups, dilation, output_mask)
    impl = _resolve(backend)
    if _same_ndim(grad_output, input):
        _remember(_CONV_TRANSPOSE2D_BACKWARD, _conv_transpose2d_backward_key, (g, unbatched),
                  (grad_output, input, weight), (stride, padding, output_padding, groups, dilation), output_mask)
    return _conv_transpose2d_backward_run(impl, gy, x, w, g, mask, unbatched)


def _conv_transpose2d_backward_run(impl, gy, x, w, g, mask, unbatched):
    need_input, need_weight, need_bias = mask
    gy = _shapes.contiguous(gy)  # first: NumPy's summation order follows the memory layout
    grad_bias = gy.sum(axis=(0, 2, 3)) if need_bias else None
    gy = _shapes.contiguous(gy[:, :, :g.in_h, :g.in_w])  # output_padding rows past every window: bias only
    grad_input = impl.conv2d(gy, w, None, g) if need_input else None
    grad_weight = impl.conv2d_backward(x, gy, w, g, False, True, False)[1] if need_weight else None
    if unbatched and grad_input is not None:
        grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


def _conv_transpose2d_backward_inputs(grad_output, input, weight, stride, padding, output_padding, groups,
                                      dilation, output_mask):
    """(grad_output with the output_padding rows, input, weight, geometry, mask, unbatched)."""
    mask = _shapes.output_mask(output_mask)
    gy, x, w = _shapes.as_float_arrays(grad_output=grad_output, input=input, weight=weight)
    x, unbatched, g, output_shape = _transpose_geometry(x, w, stride, padding, output_padding, groups, dilation)
    gy = _batched_like(gy, unbatched)
    _shapes.check_output_shape(gy, output_shape, "grad_output")
    return gy, _shapes.contiguous(x), _shapes.contiguous(w), g, mask, unbatched


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

_MAX_POOL2D = {}


def _max_pool2d_key(x, kernel_size, stride, padding, dilation, ceil_mode):
    return x.shape, x.dtype, kernel_size, stride, padding, dilation, ceil_mode


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
               return_indices=False, backend=None):
    """2-d max pooling, like ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    input : array (N, C, H, W) or (C, H, W)
    kernel_size, stride, padding, dilation : int or pair; stride defaults to kernel_size;
        padding is implicit -inf and at most ``kernel_size // 2``
    ceil_mode : round the output size up; the last window must still start inside the
        input or the left/top padding
    return_indices : also return the argmax indices

    Returns
    -------
    output (N, C, Ho, Wo) with ``Ho = (H + 2*pad - dilation*(k - 1) - 1) // stride + 1``
    (rounded up under ceil_mode), and with ``return_indices`` the int64 ``indices``: flat
    positions ``h*W + w`` in each (n, c) plane of the unpadded input. Ties go to the first
    maximum in row-major window order; NaN propagates and the last NaN scanned owns the index.
    """
    try:
        g, unbatched = _MAX_POOL2D[_max_pool2d_key(input, kernel_size, stride, padding, dilation, ceil_mode)]
        known = _ready(input) and _plain(kernel_size, stride, padding, dilation) and _bools(ceil_mode)
    except (AttributeError, KeyError, TypeError):
        known = False
    if not known:
        return _widen.call(_max_pool2d_checked, (input, kernel_size, stride, padding, dilation, ceil_mode),
                           {"return_indices": return_indices, "backend": backend})
    out, indices = _resolve(backend).max_pool2d(input[np.newaxis] if unbatched else input, g)
    if unbatched:
        out, indices = out[0], indices[0]
    return (out, indices) if return_indices else out


def _max_pool2d_checked(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
                        return_indices=False, backend=None):
    x, g, unbatched = _max_pool2d_inputs(input, kernel_size, stride, padding, dilation, ceil_mode)
    impl = _resolve(backend)
    _remember(_MAX_POOL2D, _max_pool2d_key, (g, unbatched), (input,), (kernel_size, stride, padding, dilation),
              (ceil_mode,))
    out, indices = impl.max_pool2d(x, g)
    if return_indices:
        return _unbatch((out, indices), unbatched)
    return _unbatch(out, unbatched)


def _max_pool2d_inputs(input, kernel_size, stride, padding, dilation, ceil_mode):
    (x,) = _shapes.as_float_arrays(input=input)
    x, unbatched = _shapes.batched(x, "input")
    g = _shapes.pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return _shapes.contiguous(x), g, unbatched


_MAX_POOL2D_BACKWARD = {}


def _max_pool2d_backward_key(gy, indices, input_shape):
    return gy.shape, gy.dtype, indices.shape, indices.dtype, input_shape


def max_pool2d_backward(grad_output, indices, input_shape, *, backend=None):
    """Gradient of :func:`max_pool2d`: each ``grad_output`` value goes to the input pixel
    ``indices`` names (the window's maximum); overlapping windows accumulate.

    grad_output and indices: (N, C, Ho, Wo) or (C, Ho, Wo); ``input_shape``: the forward
    input's shape. Returns grad_input of ``input_shape``. Indices outside ``[0, H*W)`` raise
    ``ValueError``.
    """
    try:
        shape, unbatched = _MAX_POOL2D_BACKWARD[_max_pool2d_backward_key(grad_output, indices, input_shape)]
        known = _ready(grad_output, indices) and _plain(input_shape)
    except (AttributeError, KeyError, TypeError):
        known = False
    if not known:
        return _widen.call(_max_pool2d_backward_checked, (grad_output, indices, input_shape), {"backend": backend})
    impl = _resolve(backend)
    if unbatched:
        grad_output, indices = grad_output[np.newaxis], indices[np.newaxis]
    grad = _max_unpool(impl, grad_output, indices, shape)   # the values are new on every call
    return grad[0] if unbatched else grad


def _max_unpool(impl, gy, indices, shape, check_range=None):
    """impl's max_pool2d_backward with the index range checked: by its own scatter pass
    when it does that (None back: one was out of range), else by a NumPy pass first.
    ``check_range()`` raises the caller's ValueError (default: the 2-d op's)."""
    if check_range is None:
        def check_range():
            _shapes.check_index_range(indices, shape)
    if not getattr(impl, "checks_pool_indices", False):
        check_range()
    grad = impl.max_pool2d_backward(gy, indices, shape)
    if grad is None:
        check_range()
        raise AssertionError("the compiled scatter reported an index the range check accepts")
    return grad


def _max_pool2d_backward_checked(grad_output, indices, input_shape, *, backend=None):
    gy, checked_indices, shape, unbatched = _max_pool2d_backward_inputs(grad_output, indices, input_shape,
                                                                        check_range=False)
    impl = _resolve(backend)
    _remember(_MAX_POOL2D_BACKWARD, _max_pool2d_backward_key, (shape, unbatched), (grad_output, indices),
              (input_shape,))
    return _unbatch(_max_unpool(impl, gy, checked_indices, shape), unbatched)


def _max_pool2d_backward_inputs(grad_output, indices, input_shape, check_range=True):
    (gy,) = _shapes.as_float_arrays(grad_output=grad_output)
    shape = _shapes.input_shape(input_shape, gy.ndim)
    gy, unbatched = _shapes.batched(gy, "grad_output")
    _shapes.check_planes(gy.shape, shape)
    indices = _shapes.check_pool_indices(indices, gy.shape, unbatched, shape, check_range)
    return _shapes.contiguous(gy), _shapes.contiguous(indices), shape, unbatched


_AVG_POOL2D = {}


def _avg_pool2d_key(x, kernel_size, stride, padding, divisor_override, ceil_mode, count_include_pad):
    return x.shape, x.dtype, kernel_size, stride, padding, divisor_override, ceil_mode, count_include_pad


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """2-d average pooling, like ``torch.nn.functional.avg_pool2d``.

    input (N, C, H, W) or (C, H, W) -> output (N, C, Ho, Wo), same size rule as
    :func:`max_pool2d` (no dilation). Padding is zeros; ``count_include_pad`` counts them in
    the divisor (never the ceil_mode overhang past the padding); ``divisor_override``, a
    non-zero int, replaces the divisor.
    """
    try:
        g, include_pad, divisor, unbatched = _AVG_POOL2D[_avg_pool2d_key(
            input, kernel_size, stride, padding, divisor_override, ceil_mode, count_include_pad)]
        known = (_ready(input) and _plain(kernel_size, stride, padding, divisor_override)
                 and _bools(ceil_mode, count_include_pad))
    except (AttributeError, KeyError, TypeError):
        known = False
    if not known:
        return _widen.call(_avg_pool2d_checked,
                           (input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override),
                           {"backend": backend})
    y = _resolve(backend).avg_pool2d(input[np.newaxis] if unbatched else input, g, include_pad, divisor)
    return y[0] if unbatched else y


def _avg_pool2d_checked(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None, *, backend=None):
    x, g, include_pad, divisor, unbatched = _avg_pool2d_inputs(input, kernel_size, stride, padding, ceil_mode,
                                                               count_include_pad, divisor_override)
    impl = _resolve(backend)
    _remember(_AVG_POOL2D, _avg_pool2d_key, (g, include_pad, divisor, unbatched), (input,),
              (kernel_size, stride, padding, divisor_override), (ceil_mode, count_include_pad))
    return _unbatch(impl.avg_pool2d(x, g, include_pad, divisor), unbatched)


def _avg_pool2d_inputs(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    (x,) = _shapes.as_float_arrays(input=input)
    x, unbatched = _shapes.batched(x, "input")
    g, include_pad, divisor = _shapes.avg_pool_geometry(x.shape, kernel_size, stride, padding, ceil_mode,
                                                        count_include_pad, divisor_override)
    return _shapes.contiguous(x), g, include_pad, divisor, unbatched


_AVG_POOL2D_BACKWARD = {}


def _avg_pool2d_backward_key(gy, input_shape, kernel_size, stride, padding, divisor_override, ceil_mode,
                             count_include_pad):
    return (gy.shape, gy.dtype, input_shape, kernel_size, stride, padding, divisor_override, ceil_mode,
            count_include_pad)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, backend=None):
    """Gradient of :func:`avg_pool2d`: grad_output (N, C, Ho, Wo) -> grad_input of ``input_shape``,
    each output gradient spread evenly (divided by the window's divisor) over its window."""
    try:
        g, include_pad, divisor, unbatched = _AVG_POOL2D_BACKWARD[_avg_pool2d_backward_key(
            grad_output, input_shape, kernel_size, stride, padding, divisor_override, ceil_mode, count_include_pad)]
        known = (_ready(grad_output) and _plain(input_shape, kernel_size, stride, padding, divisor_override)
                 and _bools(ceil_mode, count_include_pad))
    except (AttributeError, KeyError, TypeError):
        known = False
    if not known:
        return _widen.call(_avg_pool2d_backward_checked,
                           (grad_output, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                            divisor_override), {"backend": backend})
    grad = _resolve(backend).avg_pool2d_backward(grad_output[np.newaxis] if unbatched else grad_output, g,
                                                 include_pad, divisor)
    return grad[0] if unbatched else grad


def _avg_pool2d_backward_checked(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                                 count_include_pad=True, divisor_override=None, *, backend=None):
    gy, g, include_pad, divisor, unbatched = _avg_pool2d_backward_inputs(
        grad_output, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    impl = _resolve(backend)
    _remember(_AVG_POOL2D_BACKWARD, _avg_pool2d_backward_key, (g, include_pad, divisor, unbatched), (grad_output,),
              (input_shape, kernel_size, stride, padding, divisor_override), (ceil_mode, count_include_pad))
    return _unbatch(impl.avg_pool2d_backward(gy, g, include_pad, divisor), unbatched)


def _avg_pool2d_backward_inputs(grad_output, input_shape, kernel_size, stride, padding, ceil_mode,
                                count_include_pad, divisor_override):
    (gy,) = _shapes.as_float_arrays(grad_output=grad_output)
    shape = _shapes.input_shape(input_shape, gy.ndim)
    gy, unbatched = _shapes.batched(gy, "grad_output")
    g, include_pad, divisor = _shapes.avg_pool_geometry(shape, kernel_size, stride, padding, ceil_mode,
                                                        count_include_pad, divisor_override)
    _shapes.check_output_shape(gy, g.output_shape, "grad_output")
    return _shapes.contiguous(gy), g, include_pad, divisor, unbatched


# --------------------------------------------------------------------------
# explain: what a call would run
# --------------------------------------------------------------------------

def explain(op, *args, **kwargs):
    """What ``cconv.<op>(*args, **kwargs)`` would run, without running it.

    ``op`` is the op's name (``"conv2d"``, ``"conv2d_backward"``, ``"max_pool2d"``, ...);
    the other arguments are the op's, validated as the op would. Returns one entry per pass
    that would run, keyed ``"forward"``, ``"grad_input"``, ``"grad_weight"`` and/or
    ``"grad_bias"``, each a dict with at least ``"algorithm"``, ``"isa"`` (instruction set),
    ``"threads"``, ``"workspace_bytes"`` and ``"reason"`` (why this algorithm, one line); the
    compiled backend's convolution passes also say how the algorithm was ``"selected"``:
    ``"predicted"`` by the planner, ``"forced"`` by ``CCONV_CONV_ALGO`` or ``"tuned"`` by
    :func:`cconv.set_autotune` (then with the measured ``"timings_us"`` of every candidate).
    Nothing is computed but the plan (the compiled backend does check whether operands are
    finite where an algorithm's exactness depends on it). Every algorithm name is listed in
    ``cconv.backend_info()["conv_algorithms"]``.
    """
    from . import _half
    ops = [name for name in _half.__all__ if name != "explain"]
    # float16/bfloat16 arrays are computed in float32: so are their plans
    args = tuple(_widen.to_float32(a) if _widen.is_half(a) else a for a in args)
    kwargs = {k: _widen.to_float32(v) if _widen.is_half(v) else v for k, v in kwargs.items()}
    if isinstance(op, str) and op not in _EXPLAINERS and op in ops:
        from . import _explain_nd   # the 1-d, 3-d and adaptive ops: the 2-d calls they make
        return _explain_nd.explain(op, *args, **kwargs)
    try:
        fn = _EXPLAINERS[op]
    except (KeyError, TypeError):
        raise ValueError(f"explain: unknown op {op!r}; ops: {', '.join(ops)}") from None
    bound = inspect.signature(globals()[op]).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    impl = _backends.resolve(arguments.pop("backend"))
    arguments.pop("return_indices", None)
    return fn(impl, **arguments)


def _threads():
    from ._threads import get_num_threads
    return get_num_threads()


def _elsewhere(impl, passes):
    """Entries for a backend without plans (NumPy reference, PyTorch)."""
    if impl.name == "numpy":
        entry = {"algorithm": "reference", "isa": "numpy", "threads": 1, "workspace_bytes": 0,
                 "reason": "the NumPy reference backend (the differential tests' oracle)"}
    else:
        entry = {"algorithm": impl.name, "isa": impl.name, "threads": _threads(), "workspace_bytes": 0,
                 "reason": f"the {impl.name} backend chooses its own kernels"}
    return {name: dict(entry) for name in passes}


def _conv_plans(impl, data, x, w, g, forward, mask=(True, True, True)):
    if impl.name != "cython":
        names = ["forward"] if forward else [n for n, m in zip(("grad_input", "grad_weight", "grad_bias"), mask) if m]
        return _elsewhere(impl, names)
    return impl._conv.explain(data, x, w, g, _threads(), forward, *mask)


def _explain_conv2d(impl, input, weight, bias, stride, padding, dilation, groups):
    x, w, _, g, _ = _conv2d_inputs(input, weight, bias, stride, padding, dilation, groups)
    return _conv_plans(impl, x, None, w, g, True)


def _explain_conv2d_backward(impl, grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    gy, x, w, g, mask, _ = _conv2d_backward_inputs(grad_output, input, weight, stride, padding, dilation, groups,
                                                   output_mask)
    return _conv_plans(impl, gy, x, w, g, False, mask)


def _explain_conv_transpose2d(impl, input, weight, bias, stride, padding, output_padding, groups, dilation):
    x, w, _, g, _, _ = _conv_transpose2d_inputs(input, weight, bias, stride, padding, output_padding, groups,
                                                dilation)
    plans = _conv_plans(impl, x, None, w, g, False, (True, False, False))
    return {"forward": plans["grad_input"]}     # conv2d's input gradient is this op's output


def _explain_conv_transpose2d_backward(impl, grad_output, input, weight, stride, padding, output_padding, groups,
                                       dilation, output_mask):
    gy, x, w, g, mask, _ = _conv_transpose2d_backward_inputs(grad_output, input, weight, stride, padding,
                                                             output_padding, groups, dilation, output_mask)
    gy = _shapes.contiguous(gy[:, :, :g.in_h, :g.in_w])
    plans = {}
    if mask[0]:     # grad_input is conv2d(grad_output, weight)
        plans["grad_input"] = _conv_plans(impl, gy, None, w, g, True)["forward"]
    if mask[1]:     # grad_weight is conv2d's weight gradient with input and output swapped
        plans["grad_weight"] = _conv_plans(impl, x, gy, w, g, False, (False, True, False))["grad_weight"]
    if mask[2]:
        plans["grad_bias"] = {"algorithm": "sum", "isa": "numpy", "threads": 1, "workspace_bytes": 0,
                              "reason": "grad_output summed over N, H and W by NumPy"}
    return plans


def _pool_plans(impl, op, g, dtype, **shapes):
    passes = ["grad_input" if op.endswith("_backward") else "forward"]
    if impl.name != "cython":
        return _elsewhere(impl, passes)
    return impl._pool.explain(op, g, np.dtype(dtype).itemsize, _threads(), **shapes)


def _explain_max_pool2d(impl, input, kernel_size, stride, padding, dilation, ceil_mode):
    x, g, _ = _max_pool2d_inputs(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _pool_plans(impl, "max_pool2d", g, x.dtype)


def _explain_max_pool2d_backward(impl, grad_output, indices, input_shape):
    gy, _, shape, _ = _max_pool2d_backward_inputs(grad_output, indices, input_shape)
    return _pool_plans(impl, "max_pool2d_backward", None, gy.dtype, grad_shape=gy.shape, input_shape=shape)


def _explain_avg_pool2d(impl, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    x, g, _, _, _ = _avg_pool2d_inputs(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                       divisor_override)
    return _pool_plans(impl, "avg_pool2d", g, x.dtype)


def _explain_avg_pool2d_backward(impl, grad_output, input_shape, kernel_size, stride, padding, ceil_mode,
                                 count_include_pad, divisor_override):
    gy, g, _, _, _ = _avg_pool2d_backward_inputs(grad_output, input_shape, kernel_size, stride, padding,
                                                 ceil_mode, count_include_pad, divisor_override)
    return _pool_plans(impl, "avg_pool2d_backward", g, gy.dtype)


_EXPLAINERS = {
    "conv2d": _explain_conv2d,
    "conv2d_backward": _explain_conv2d_backward,
    "conv_transpose2d": _explain_conv_transpose2d,
    "conv_transpose2d_backward": _explain_conv_transpose2d_backward,
    "max_pool2d": _explain_max_pool2d,
    "max_pool2d_backward": _explain_max_pool2d_backward,
    "avg_pool2d": _explain_avg_pool2d,
    "avg_pool2d_backward": _explain_avg_pool2d_backward,
}
