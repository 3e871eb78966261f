"""The ``"torch"`` backend: PyTorch's CPU kernels behind cconv's backend interface.

Registered only when torch is importable; used to compare against (benchmarks,
``cconv.compare``), never required. Arrays cross via ``torch.from_numpy`` (no copy).
Tensors made that way never require grad, so no autograd graph is built and no
``torch.no_grad()`` block (1-2 us a call) is needed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._shapes import _pool_out_size

name = "torch"


def _t(a):
    # NumPy calls an array with a negative stride on a length-1 axis contiguous; torch refuses it.
    # torch also warns about read-only arrays (it never writes these, but says it might).
    return torch.from_numpy(a if a.flags.writeable and min(a.strides, default=0) >= 0 else a.copy())


def _padded_input(x, g):
    """torch.conv2d pads symmetrically, so asymmetric ('same', even kernel) padding goes in first."""
    if (g.pad_top, g.pad_left) == (g.pad_bottom, g.pad_right):
        return x, (g.pad_top, g.pad_left)
    return F.pad(x, (g.pad_left, g.pad_right, g.pad_top, g.pad_bottom)), (0, 0)


def _conv_args(g):
    return dict(stride=(g.stride_h, g.stride_w), dilation=(g.dilation_h, g.dilation_w), groups=g.groups)


def conv2d(x, w, b, g):
    xt, padding = _padded_input(_t(x), g)
    return F.conv2d(xt, _t(w), None if b is None else _t(b), padding=padding, **_conv_args(g)).numpy()


def conv2d_backward(gy, x, w, g, need_input, need_weight, need_bias):
    if x is None:  # conv_transpose2d asks for grad_input only and passes no input
        x = np.zeros(g.input_shape, dtype=gy.dtype)
    symmetric = (g.pad_top, g.pad_left) == (g.pad_bottom, g.pad_right)
    xt = _t(x)
    if not symmetric:
        xt = F.pad(xt, (g.pad_left, g.pad_right, g.pad_top, g.pad_bottom))
    grads = torch.ops.aten.convolution_backward(
        _t(gy), xt, _t(w), [g.out_channels], [g.stride_h, g.stride_w],
        [g.pad_top, g.pad_left] if symmetric else [0, 0], [g.dilation_h, g.dilation_w],
        False, [0, 0], g.groups, [need_input, need_weight, need_bias])
    # aten may compute a gradient the mask did not ask for (1x1 kernels); the interface says None.
    grad_input, grad_weight, grad_bias = (
        t.numpy() if t is not None and needed else None
        for t, needed in zip(grads, (need_input, need_weight, need_bias)))
    if grad_input is not None and not symmetric:
        grad_input = np.ascontiguousarray(
            grad_input[:, :, g.pad_top:g.pad_top + g.in_h, g.pad_left:g.pad_left + g.in_w])
    return grad_input, grad_weight, grad_bias


def _pool_args(g):
    return dict(kernel_size=(g.kernel_h, g.kernel_w), stride=(g.stride_h, g.stride_w),
                padding=(g.pad_h, g.pad_w))


def _ceil_mode(g):
    # The geometry already holds the rounded output size; ceil_mode only ever adds one row/column,
    # so asking torch for ceil_mode reproduces it whenever floor mode would give fewer.
    floor_h = _pool_out_size(g.in_h, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, False)
    floor_w = _pool_out_size(g.in_w, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, False)
    return (floor_h, floor_w) != (g.out_h, g.out_w)


def max_pool2d(x, g):
    out, indices = F.max_pool2d(_t(x), dilation=(g.dilation_h, g.dilation_w), ceil_mode=_ceil_mode(g),
                                return_indices=True, **_pool_args(g))
    return out.numpy(), indices.numpy()


def _shape_check_params(in_size, out_size):
    """(kernel, padding) that make torch's pooling shape check accept ``in_size -> out_size`` at stride 1.

    Max pooling's output is at most one longer than its input (padding <= kernel // 2), so
    ``kernel = in + 2*pad + 1 - out`` with ``pad = max(0, out - in)`` always exists.
    """
    pad = max(0, out_size - in_size)
    return in_size + 2 * pad + 1 - out_size, pad


def max_pool2d_backward(gy, indices, input_shape):
    # torch's CPU kernel scatters grad_output through the indices alone; the pooling
    # parameters only feed a shape check and the input tensor only its shape. The interface
    # passes neither, so hand it an uninitialised input and parameters that pass the check:
    # this runs the kernel a torch user's autograd runs, not a stand-in.
    (kh, ph), (kw, pw) = (_shape_check_params(i, o) for i, o in zip(input_shape[2:], gy.shape[2:]))
    return torch.ops.aten.max_pool2d_with_indices_backward(
        _t(gy), torch.empty(input_shape, dtype=_t(gy).dtype), [kh, kw], [1, 1], [ph, pw], [1, 1],
        False, _t(indices)).numpy()


def avg_pool2d(x, g, count_include_pad, divisor_override):
    return F.avg_pool2d(_t(x), ceil_mode=_ceil_mode(g), count_include_pad=count_include_pad,
                        divisor_override=divisor_override, **_pool_args(g)).numpy()


def avg_pool2d_backward(gy, g, count_include_pad, divisor_override):
    return torch.ops.aten.avg_pool2d_backward(
        _t(gy), torch.empty(g.input_shape, dtype=_t(gy).dtype), [g.kernel_h, g.kernel_w],
        [g.stride_h, g.stride_w], [g.pad_h, g.pad_w], _ceil_mode(g), count_include_pad,
        divisor_override).numpy()
