"""The public ops. Each validates its arguments (via :mod:`cconv._shapes`), makes its
arrays C-contiguous, hands them to the chosen backend and restores an unbatched
result. Semantics follow ``torch.nn.functional``; layout is NCHW.
"""
from __future__ import annotations

import numpy as np

from . import _backends
from . import _shapes

__all__ = [
    "conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
]


def _unbatch(result, unbatched):
    if not unbatched:
        return result
    if isinstance(result, tuple):
        return tuple(None if r is None else r[0] for r in result)
    return result[0]


def _batched_like(array, unbatched):
    """Give a gradient the batch axis that its unbatched forward input was given."""
    return array[np.newaxis] if unbatched and array.ndim == 3 else array


def _output_mask(mask):
    if not isinstance(mask, (tuple, list)) or len(mask) != 3:
        raise ValueError(f"output_mask must be a tuple of three bools (input, weight, bias), got {mask!r}")
    if not all(isinstance(m, (bool, np.bool_)) for m in mask):
        raise TypeError(f"output_mask must hold bools, got {mask!r}")
    return tuple(bool(m) for m in mask)


def _check_bias(bias, channels):
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},) (one value per output channel), got {bias.shape}")


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

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
    x, w, b = _shapes.as_float_arrays(input=input, weight=weight, bias=bias)
    x, unbatched = _shapes.batched(x, "input")
    g = _shapes.conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    _check_bias(b, g.out_channels)
    impl = _backends.resolve(backend)
    y = impl.conv2d(_shapes.contiguous(x), _shapes.contiguous(w), _shapes.contiguous(b), g)
    return _unbatch(y, unbatched)


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
    need_input, need_weight, need_bias = _output_mask(output_mask)
    gy, x, w = _shapes.as_float_arrays(grad_output=grad_output, input=input, weight=weight)
    x, unbatched = _shapes.batched(x, "input")
    gy = _batched_like(gy, unbatched)
    g = _shapes.conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    _shapes.check_output_shape(gy, g.output_shape, "grad_output")
    impl = _backends.resolve(backend)
    grads = impl.conv2d_backward(_shapes.contiguous(gy), _shapes.contiguous(x), _shapes.contiguous(w), g,
                                 need_input, need_weight, need_bias)
    grad_input, grad_weight, grad_bias = grads
    if unbatched and grad_input is not None:
        grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


def _transpose_geometry(x, w, stride, padding, output_padding, groups, dilation):
    x, unbatched = _shapes.batched(x, "input")
    g, output_shape = _shapes.conv_transpose_geometry(x.shape, w.shape, stride, padding, output_padding,
                                                      dilation, groups)
    return x, unbatched, g, output_shape


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
    x, w, b = _shapes.as_float_arrays(input=input, weight=weight, bias=bias)
    x, unbatched, g, output_shape = _transpose_geometry(x, w, stride, padding, output_padding, groups, dilation)
    _check_bias(b, g.in_channels)
    impl = _backends.resolve(backend)
    y, _, _ = impl.conv2d_backward(_shapes.contiguous(x), None, _shapes.contiguous(w), g, True, False, False)
    if y.shape != output_shape:  # output_padding >= stride: rows/columns that no window reaches
        y = np.pad(y, ((0, 0), (0, 0), (0, output_shape[2] - g.in_h), (0, output_shape[3] - g.in_w)))
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return _unbatch(y, unbatched)


def conv_transpose2d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, *, output_mask=(True, True, True), backend=None):
    """Gradients of :func:`conv_transpose2d`: ``(grad_input, grad_weight, grad_bias)``.

    Because conv_transpose2d is the adjoint of conv2d, ``grad_input`` is ``conv2d(grad_output,
    weight)`` and ``grad_weight`` is conv2d's weight gradient with the roles of input and
    output swapped. Shapes: grad_output (N, C_out, Ho, Wo), input (N, C_in, H, W).
    """
    need_input, need_weight, need_bias = _output_mask(output_mask)
    gy, x, w = _shapes.as_float_arrays(grad_output=grad_output, input=input, weight=weight)
    x, unbatched, g, output_shape = _transpose_geometry(x, w, stride, padding, output_padding, groups, dilation)
    gy = _batched_like(gy, unbatched)
    _shapes.check_output_shape(gy, output_shape, "grad_output")
    impl = _backends.resolve(backend)
    gy = _shapes.contiguous(gy)  # first: NumPy's summation order follows the memory layout
    grad_bias = gy.sum(axis=(0, 2, 3)) if need_bias else None
    gy = gy[:, :, :g.in_h, :g.in_w]  # output_padding rows past every window affect only the bias
    gy, x, w = _shapes.contiguous(gy), _shapes.contiguous(x), _shapes.contiguous(w)
    grad_input = impl.conv2d(gy, w, None, g) if need_input else None
    grad_weight = impl.conv2d_backward(x, gy, w, g, False, True, False)[1] if need_weight else None
    if unbatched and grad_input is not None:
        grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

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
    (x,) = _shapes.as_float_arrays(input=input)
    x, unbatched = _shapes.batched(x, "input")
    g = _shapes.pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    out, indices = _backends.resolve(backend).max_pool2d(_shapes.contiguous(x), g)
    if return_indices:
        return _unbatch((out, indices), unbatched)
    return _unbatch(out, unbatched)


def max_pool2d_backward(grad_output, indices, input_shape, *, backend=None):
    """Gradient of :func:`max_pool2d`: each ``grad_output`` value goes to the input pixel
    ``indices`` names (the window's maximum); overlapping windows accumulate.

    grad_output and indices: (N, C, Ho, Wo) or (C, Ho, Wo); ``input_shape``: the forward
    input's shape. Returns grad_input of ``input_shape``. Indices outside ``[0, H*W)`` raise
    ``ValueError``.
    """
    (gy,) = _shapes.as_float_arrays(grad_output=grad_output)
    shape = _shapes.input_shape_4d(input_shape, gy.ndim)
    gy, unbatched = _shapes.batched(gy, "grad_output")
    if gy.shape[:2] != shape[:2]:
        raise ValueError(f"grad_output of shape {gy.shape} does not match input_shape {shape} in (N, C)")
    indices = _shapes.check_pool_indices(indices, gy.shape, unbatched, shape)
    grad = _backends.resolve(backend).max_pool2d_backward(
        _shapes.contiguous(gy), _shapes.contiguous(indices), shape)
    return _unbatch(grad, unbatched)


def _avg_geometry(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"count_include_pad must be a bool, got {type(count_include_pad).__name__}")
    if divisor_override is not None:
        divisor_override = _shapes._as_int(divisor_override, "divisor_override")
        if divisor_override == 0:
            raise ValueError("divisor_override must not be zero")
    g = _shapes.pool_geometry(x_shape, kernel_size, stride, padding, 1, ceil_mode)
    return g, bool(count_include_pad), divisor_override


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """2-d average pooling, like ``torch.nn.functional.avg_pool2d``.

    input (N, C, H, W) or (C, H, W) -> output (N, C, Ho, Wo), same size rule as
    :func:`max_pool2d` (no dilation). Padding is zeros; ``count_include_pad`` counts them in
    the divisor (never the ceil_mode overhang past the padding); ``divisor_override``, a
    non-zero int, replaces the divisor.
    """
    (x,) = _shapes.as_float_arrays(input=input)
    x, unbatched = _shapes.batched(x, "input")
    g, include_pad, divisor = _avg_geometry(x.shape, kernel_size, stride, padding, ceil_mode,
                                            count_include_pad, divisor_override)
    y = _backends.resolve(backend).avg_pool2d(_shapes.contiguous(x), g, include_pad, divisor)
    return _unbatch(y, unbatched)


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, backend=None):
    """Gradient of :func:`avg_pool2d`: grad_output (N, C, Ho, Wo) -> grad_input of ``input_shape``,
    each output gradient spread evenly (divided by the window's divisor) over its window."""
    (gy,) = _shapes.as_float_arrays(grad_output=grad_output)
    shape = _shapes.input_shape_4d(input_shape, gy.ndim)
    gy, unbatched = _shapes.batched(gy, "grad_output")
    g, include_pad, divisor = _avg_geometry(shape, kernel_size, stride, padding, ceil_mode,
                                            count_include_pad, divisor_override)
    _shapes.check_output_shape(gy, g.output_shape, "grad_output")
    grad = _backends.resolve(backend).avg_pool2d_backward(_shapes.contiguous(gy), g, include_pad, divisor)
    return _unbatch(grad, unbatched)
