"""1-d and 3-d convolution and pooling, like ``torch.nn.functional``'s, on the 2-d ops.

* 1-d ops are the 2-d ones with a height of 1: (N, C, L) -> (N, C, 1, L), kernel (1, k),
  stride (1, s), padding (0, p). A 1-d max-pool index (a flat offset in each (n, c) row)
  is exactly the 2-d index with H = 1.
* conv3d runs on the compiled backend's volume algorithm where its planner takes it (an
  implicit GEMM over a padded copy of each volume: no stacked copies; forward and the stride-1
  input gradient). Otherwise it folds the depth taps into the channels: output depth slice ``j`` reads input slices
  ``j*stride_d - pad_d + t*dilation_d`` for the taps ``t``; those slices are stacked along the
  channel axis (group-major: group, tap, channel), so ONE conv2d on (N*Do, kd*C, H, W) with
  the weight (O, kd*C/groups, kh, kw) computes the whole conv3d (a (kd, 1, 1) kernel with no
  (h, w) stride or padding instead runs on the free (N, C, D, H*W) view, depth as rows). Depth padding is real zero
  slices, so ``0 * inf`` gives NaN as in PyTorch. Backward and the transposed conv use the
  adjoint (scatter-add) of the same stacking.
* 3-d pools pool every depth slice in 2-d (the (N, C*D, H, W) view of the input), then reduce
  over the depth window: max keeps the first maximum in (d, h, w) order and lets NaN win (the
  last NaN owns the index); average sums 2-d window sums (``divisor_override=1``) and divides
  by the separable per-dimension window counts. A backend with its own ``max_pool3d`` (the
  compiled one: the depth taps folded into its 2-d row kernels) runs that instead, in one pass.
* Repeats: the 1-d and 3-d convolutions (and their backward ops) and forward pools remember
  what validation gave for a call, under the rules of :mod:`cconv._api`, and skip it when the
  call comes again; a remembered conv1d runs on the compiled backend straight from its (N, C, L)
  arrays (the memory of (N, C, 1, L)), with no 2-d call in between.

:func:`plan_2d` names the 2-d op each of these runs and its arguments (for tools that explain a call).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _api
from . import _backends
from . import _shapes

__all__ = [
    "conv1d", "conv1d_backward", "conv_transpose1d", "conv_transpose1d_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
    "conv3d", "conv3d_backward", "conv_transpose3d", "conv_transpose3d_backward",
    "max_pool3d", "max_pool3d_backward", "avg_pool3d", "avg_pool3d_backward",
]


# --------------------------------------------------------------------------
# arguments (checked in cconv._shapes) and remembered calls
# --------------------------------------------------------------------------

def _grad_batched(gy, unbatched, dims):
    """grad_output with the batch axis its unbatched input was given."""
    return gy[np.newaxis] if unbatched and gy.ndim == dims + 1 else gy


_unbatch = _api._unbatch  # drop the batch axis that an unbatched input was given


def _recall(known, key, arrays, args, flags=()):
    """What validation gave for an earlier call this one equals (see cconv._api: arrays exact
    ndarrays readable in place, arguments plain), else None: the caller then validates."""
    try:
        value = known[key(*arrays, *args, *flags)]
    except (AttributeError, KeyError, TypeError):
        return None
    return value if _api._ready(*arrays) and _api._plain(*args) and _api._bools(*flags) else None


# the checks this module runs on a call it does not remember (module names, so tests can watch them)
_output_mask = _shapes.output_mask
_conv1d_args = _shapes.conv1d_args
_transpose1d_args = _shapes.conv_transpose1d_args
_pool1d_args = _shapes.pool1d_args


# --------------------------------------------------------------------------
# 1-d: the 2-d ops with H = 1
# --------------------------------------------------------------------------

_CONV1D = {}


def _conv_key(x, w, b, stride, padding, dilation, groups):
    return (x.shape, x.dtype, w.shape, w.dtype, None if b is None else (b.shape, b.dtype), stride, padding, dilation,
            groups)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """1-d cross-correlation, like ``torch.nn.functional.conv1d``.

    input (N, C, L) or (C, L); weight (O, C/groups, k); bias (O,) or None; padding an int,
    ``'valid'`` or ``'same'`` (stride 1; the odd extra column goes to the end).
    Returns (N, O, Lo) with ``Lo = (L + 2*padding - dilation*(k - 1) - 1) // stride + 1``.
    """
    arrays, args = (input, weight, bias), (stride, padding, dilation, groups)
    call = _api._known_conv(_CONV1D, _conv_key, backend, arrays, args)
    if call is not None:    # a repeat: (N, C, L) is (N, C, 1, L) in memory, run as remembered
        y = _api._cython.conv2d_ready(input, weight, bias, call, _api._num_threads())
        if y is not None:
            return y
    x, w, b = _shapes.as_float_arrays(input=input, weight=weight, bias=bias)
    x, unbatched = _shapes.batched(x, "input", 1)
    _shapes.check_weight_ndim(w, 1, "(out_channels, in_channels/groups, k)")
    args2d = _conv1d_args(x.shape, w.shape, stride, padding, dilation)
    y = _unbatch(_api.conv2d(x[:, :, None], w[:, :, None], b, groups=groups, backend=backend, **args2d)[:, :, 0],
                 unbatched)
    _api._remember_conv(_CONV1D, _conv_key, arrays, args, (), lambda: _api._conv_call_of(
        _conv1d_geometry(x, w, groups, args2d), x.dtype, input.shape, weight.shape, y.shape))
    return y


def _conv1d_geometry(x, w, groups, args2d):
    """The conv2d geometry of a validated conv1d (x batched)."""
    return _shapes.conv_geometry(x.shape[:2] + (1,) + x.shape[2:], w.shape[:2] + (1,) + w.shape[2:],
                                 args2d["stride"], args2d["padding"], args2d["dilation"], groups)


def _backward_arrays_1d(grad_output, input, weight, output_mask, layout):
    """A 1-d conv backward's checked arrays, batched: ``(mask, gy, x, w, unbatched)``."""
    mask = _output_mask(output_mask)
    gy, x, w = _shapes.as_float_arrays(grad_output=grad_output, input=input, weight=weight)
    x, unbatched = _shapes.batched(x, "input", 1)
    gy = _grad_batched(gy, unbatched, 1)
    _shapes.check_weight_ndim(w, 1, layout)
    _shapes.batched(gy, "grad_output", 1)
    return mask, gy, x, w, unbatched


_CONV1D_BACKWARD = {}


def _conv_backward_key(gy, x, w, stride, padding, dilation, groups, m0, m1, m2):
    return gy.shape, gy.dtype, x.shape, x.dtype, w.shape, w.dtype, stride, padding, dilation, groups, m0, m1, m2


def conv1d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=(True, True, True), backend=None):
    """Gradients of :func:`conv1d`: ``(grad_input (N, C, L), grad_weight (O, C/groups, k),
    grad_bias (O,))``, None where ``output_mask`` is False."""
    arrays, args = (grad_output, input, weight), (stride, padding, dilation, groups)
    call = _api._known_conv(_CONV1D_BACKWARD, _conv_backward_key, backend, arrays, args, output_mask)
    if call is not None:    # a repeat, run as remembered (see conv1d)
        m0, m1, m2 = output_mask
        grads = _api._cython.conv2d_backward_ready(grad_output, input, weight, call, m0, m1, m2,
                                                   _api._num_threads())
        if grads is not None:
            return grads
    mask, gy, x, w, unbatched = _backward_arrays_1d(grad_output, input, weight, output_mask,
                                                    "(out_channels, in_channels/groups, k)")
    args2d = _conv1d_args(x.shape, w.shape, stride, padding, dilation)
    _shapes.check_grad_length(gy, x.shape[0], w.shape[0], _shapes._conv1d_output_length(x.shape[2], w.shape[2], args2d))
    gx, gw, gb = _api.conv2d_backward(gy[:, :, None], x[:, :, None], w[:, :, None], groups=groups,
                                      output_mask=mask, backend=backend, **args2d)
    gx = None if gx is None else _unbatch(gx[:, :, 0], unbatched)
    _api._remember_conv(_CONV1D_BACKWARD, _conv_backward_key, arrays, args, output_mask, lambda: _api._conv_call_of(
        _conv1d_geometry(x, w, groups, args2d), x.dtype, input.shape, weight.shape, grad_output.shape))
    return gx, None if gw is None else gw[:, :, 0], gb


_CONV_TRANSPOSE1D, _CONV_TRANSPOSE1D_BACKWARD, _CONV_TRANSPOSE3D, _CONV_TRANSPOSE3D_BACKWARD = {}, {}, {}, {}


def _transpose_key(x, w, b, stride, padding, output_padding, groups, dilation):
    return (x.shape, x.dtype, w.shape, w.dtype, None if b is None else (b.shape, b.dtype), stride, padding,
            output_padding, groups, dilation)


def _transpose_backward_key(gy, x, w, stride, padding, output_padding, groups, dilation, m0, m1, m2):
    return (gy.shape, gy.dtype, x.shape, x.dtype, w.shape, w.dtype, stride, padding, output_padding, groups,
            dilation, m0, m1, m2)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, backend=None):
    """1-d transposed convolution, like ``torch.nn.functional.conv_transpose1d``.

    input (N, C_in, L) or (C_in, L); weight (C_in, C_out/groups, k). Returns (N, C_out, Lo) with
    ``Lo = (L - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``.
    """
    arrays, args = (input, weight, bias), (stride, padding, output_padding, groups, dilation)
    known = _recall(_CONV_TRANSPOSE1D, _transpose_key, arrays, args)
    if known is not None:
        args2d, unbatched = known
        x, w, b = input[np.newaxis] if unbatched else input, weight, bias
    else:
        x, w, b = _shapes.as_float_arrays(input=input, weight=weight, bias=bias)
        x, unbatched = _shapes.batched(x, "input", 1)
        _shapes.check_weight_ndim(w, 1, "(in_channels, out_channels/groups, k)")
        args2d = _transpose1d_args(stride, padding, output_padding, dilation)
    y = _api.conv_transpose2d(x[:, :, None], w[:, :, None], b, groups=groups, backend=backend, **args2d)
    if known is None:   # groups and bias are checked by conv_transpose2d
        _api._remember(_CONV_TRANSPOSE1D, _transpose_key, (args2d, unbatched), arrays, args)
    return _unbatch(y[:, :, 0], unbatched)


def conv_transpose1d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, *, output_mask=(True, True, True), backend=None):
    """Gradients of :func:`conv_transpose1d`: ``(grad_input, grad_weight, grad_bias)``."""
    arrays, args = (grad_output, input, weight), (stride, padding, output_padding, groups, dilation)
    known = _recall(_CONV_TRANSPOSE1D_BACKWARD, _transpose_backward_key, arrays, args, output_mask)
    if known is not None:
        args2d, unbatched = known
        mask, w = tuple(output_mask), weight
        x, gy = input[np.newaxis] if unbatched else input, _grad_batched(grad_output, unbatched, 1)
    else:
        mask, gy, x, w, unbatched = _backward_arrays_1d(grad_output, input, weight, output_mask,
                                                        "(in_channels, out_channels/groups, k)")
        args2d = _transpose1d_args(stride, padding, output_padding, dilation)
        s, p, op, d = (args2d["stride"][1], args2d["padding"][1], args2d["output_padding"][1],
                       args2d["dilation"][1])
        groups_ok = (isinstance(groups, (int, np.integer)) and not isinstance(groups, (bool, np.bool_))
                     and groups > 0)
        if groups_ok:
            length = (x.shape[2] - 1) * s - 2 * p + d * (w.shape[2] - 1) + op + 1
            _shapes.check_grad_length(gy, x.shape[0], w.shape[1] * groups, length)
    gx, gw, gb = _api.conv_transpose2d_backward(gy[:, :, None], x[:, :, None], w[:, :, None], groups=groups,
                                                output_mask=mask, backend=backend, **args2d)
    if known is None:   # the rest is checked by conv_transpose2d_backward
        _api._remember(_CONV_TRANSPOSE1D_BACKWARD, _transpose_backward_key, (args2d, unbatched), arrays, args,
                       output_mask)
    gx = None if gx is None else _unbatch(gx[:, :, 0], unbatched)
    return gx, None if gw is None else gw[:, :, 0], gb


_MAX_POOL1D, _AVG_POOL1D, _MAX_POOL3D, _AVG_POOL3D = {}, {}, {}, {}
_KEPT_DIVISOR_SIZE = 4096   # avg_pool3d divisors (one per output position) up to this size are remembered


def _max_pool_key(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    return x.shape, x.dtype, kernel_size, stride, padding, dilation, ceil_mode, return_indices


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """1-d max pooling, like ``torch.nn.functional.max_pool1d``: (N, C, L) -> (N, C, Lo), and with
    ``return_indices`` the int64 positions of the maxima in each (n, c) row."""
    arrays, args, flags = (input,), (kernel_size, stride, padding, dilation), (ceil_mode, return_indices)
    known = _recall(_MAX_POOL1D, _max_pool_key, arrays, args, flags)
    if known is not None:
        args2d, unbatched = known
        x = input[np.newaxis] if unbatched else input
    else:
        (x,) = _shapes.as_float_arrays(input=input)
        x, unbatched = _shapes.batched(x, "input", 1)
        return_indices = _shapes.check_bool(return_indices, "return_indices")
        args2d = _pool1d_args(kernel_size, stride, padding, dilation)
    out, idx = _api.max_pool2d(x[:, :, None], ceil_mode=ceil_mode, return_indices=True, backend=backend, **args2d)
    if known is None:   # ceil_mode is checked by max_pool2d
        _api._remember(_MAX_POOL1D, _max_pool_key, (args2d, unbatched), arrays, args, flags)
    result = (out[:, :, 0], idx[:, :, 0]) if return_indices else out[:, :, 0]
    return _unbatch(result, unbatched)


def _max_pool_flat_backward(grad_output, indices, input_shape, dims, backend):
    """Any max pool's backward: grad_output (N, C, *out) to the flat positions ``indices`` in each
    (n, c) row/plane/volume, through the compiled 2-d backward on (N, C, 1, prod(spatial))."""
    (gy,) = _shapes.as_float_arrays(grad_output=grad_output)
    shape = _shapes.input_shape(input_shape, gy.ndim, dims)
    gy, unbatched = _shapes.batched(gy, "grad_output", dims)
    indices = _shapes.check_pool_indices(indices, gy.shape, unbatched, shape, check_range=False)
    _shapes.check_planes(gy.shape, shape)
    n, c = shape[:2]
    volume = int(np.prod(shape[2:]))
    grad = _api._max_unpool(
        _backends.resolve(backend), _shapes.contiguous(gy).reshape(n, c, 1, -1),
        _shapes.contiguous(indices).reshape(n, c, 1, -1), (n, c, 1, volume),
        lambda: _check_flat_indices(indices, shape))
    return _unbatch(grad.reshape(shape), unbatched)


_check_flat_indices = _shapes.check_index_range  # the range check (the compiled scatter does its own)


def max_pool1d_backward(grad_output, indices, input_shape, *, backend=None):
    """Gradient of :func:`max_pool1d`: grad_output (N, C, Lo) -> grad_input of ``input_shape``."""
    return _max_pool_flat_backward(grad_output, indices, input_shape, 1, backend)


def _avg_pool_key(x, kernel_size, stride, padding, divisor_override, ceil_mode, count_include_pad):
    return x.shape, x.dtype, kernel_size, stride, padding, divisor_override, ceil_mode, count_include_pad


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, *,
               backend=None):
    """1-d average pooling, like ``torch.nn.functional.avg_pool1d``: (N, C, L) -> (N, C, Lo)."""
    # None: avg_pool1d has no divisor_override (the key is avg_pool3d's)
    arrays, args, flags = (input,), (kernel_size, stride, padding, None), (ceil_mode, count_include_pad)
    known = _recall(_AVG_POOL1D, _avg_pool_key, arrays, args, flags)
    if known is not None:
        args2d, unbatched = known
        x = input[np.newaxis] if unbatched else input
    else:
        (x,) = _shapes.as_float_arrays(input=input)
        x, unbatched = _shapes.batched(x, "input", 1)
        args2d = _pool1d_args(kernel_size, stride, padding)
        del args2d["dilation"]
    y = _api.avg_pool2d(x[:, :, None], ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                        backend=backend, **args2d)
    if known is None:   # ceil_mode and count_include_pad are checked by avg_pool2d
        _api._remember(_AVG_POOL1D, _avg_pool_key, (args2d, unbatched), arrays, args, flags)
    return _unbatch(y[:, :, 0], unbatched)


def avg_pool1d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, *, backend=None):
    """Gradient of :func:`avg_pool1d`: grad_output (N, C, Lo) -> grad_input of ``input_shape``."""
    (gy,) = _shapes.as_float_arrays(grad_output=grad_output)
    shape = _shapes.input_shape(input_shape, gy.ndim, 1)
    gy, unbatched = _shapes.batched(gy, "grad_output", 1)
    args = _pool1d_args(kernel_size, stride, padding)
    del args["dilation"]
    grad = _api.avg_pool2d_backward(gy[:, :, None], shape[:2] + (1,) + shape[2:], ceil_mode=ceil_mode,
                                    count_include_pad=count_include_pad, backend=backend, **args)
    return _unbatch(grad[:, :, 0], unbatched)


# --------------------------------------------------------------------------
# 3-d convolution: depth taps folded into channels
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _DepthMap:
    """Small slice ``j`` (of ``out``) tap ``t`` reads big slice ``j*stride - pad + t*dilation`` (of
    ``size``); slices outside [0, size) are zero padding."""

    size: int
    out: int
    taps: int
    stride: int
    pad: int
    dilation: int

    def tap_range(self, t):
        """(j0, j1, i0): the small slices j0..j1-1 that tap t maps into the big tensor, from i0."""
        first = t * self.dilation - self.pad
        j0 = min(self.out, 0 if first >= 0 else (self.stride - 1 - first) // self.stride)
        j1 = min(self.out, (self.size - 1 - first) // self.stride + 1) if first < self.size else 0
        return j0, max(j0, j1), first + j0 * self.stride


def _gather_depth(x, m, groups):
    """(N, C, D, H, W) -> (N*out, groups*taps*C/groups, H, W): the stacked depth slices."""
    n, c, _, h, w = x.shape
    cg = c // groups
    s = np.empty((n, m.out, groups, m.taps, cg, h, w), x.dtype)
    xg = x.reshape(n, groups, cg, m.size, h, w)
    for t in range(m.taps):
        j0, j1, i0 = m.tap_range(t)
        s[:, :j0, :, t] = 0
        s[:, j1:, :, t] = 0
        if j1 > j0:
            s[:, j0:j1, :, t] = xg[:, :, :, i0:i0 + (j1 - j0 - 1) * m.stride + 1:m.stride].transpose(0, 3, 1, 2, 4, 5)
    return s.reshape(n * m.out, groups * m.taps * cg, h, w)


def _depth_scatter(backend, dtype):
    """The backend whose compiled loop scatters a folded conv3d's input gradient back into
    its depth slices, each written once (on the op's threads), in the same order and so with
    the same bits as :func:`_scatter_depth` (zeros, then strided adds per tap, in NumPy; the
    NumPy backend keeps that); None: that NumPy loop."""
    if dtype not in (np.float32, np.float64):
        return None
    impl = _api._resolve(backend)
    return impl if hasattr(impl, "conv3d_depth_scatter") else None


def _scatter_depth(z, m, n, c, groups):
    """The adjoint of :func:`_gather_depth`: (N*out, groups*taps*C/groups, H, W) -> (N, C, D, H, W)."""
    h, w = z.shape[2:]
    cg = c // groups
    zz = z.reshape(n, m.out, groups, m.taps, cg, h, w)
    b = np.zeros((n, groups, cg, m.size, h, w), z.dtype)
    # inf + -inf is NaN here as in any sum of the gradient: IEEE arithmetic, not a warning
    with np.errstate(invalid="ignore", over="ignore"):
        for t in range(m.taps):
            j0, j1, i0 = m.tap_range(t)
            if j1 > j0:
                b[:, :, :, i0:i0 + (j1 - j0 - 1) * m.stride + 1:m.stride] += zz[:, j0:j1, :, t].transpose(0, 2, 3, 1, 4, 5)
    return b.reshape(n, c, m.size, h, w)


def _fold_weight(w):
    """(A, B, kd, kh, kw) -> (A, kd*B, kh, kw), tap-major: the 2-d weight of the stacked slices."""
    a, b, kd, kh, kw = w.shape
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4)).reshape(a, kd * b, kh, kw)


def _unfold_weight(w2, kd):
    a, kb, kh, kw = w2.shape
    return np.ascontiguousarray(w2.reshape(a, kd, kb // kd, kh, kw).transpose(0, 2, 1, 3, 4))


def _slices_to_batch(x):
    """(N, C, D, H, W) -> (N*D, C, H, W)."""
    n, c, d, h, w = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3, 4)).reshape(n * d, c, h, w)


def _batch_to_slices(y, n, d):
    """(N*D, C, H, W) -> (N, C, D, H, W)."""
    return np.ascontiguousarray(y.reshape(n, d, *y.shape[1:]).transpose(0, 2, 1, 3, 4))


@dataclass(frozen=True)
class _Conv3dPlan:
    depth: _DepthMap
    conv2d: dict  # stride, padding, dilation, groups of the conv2d on the stacked slices
    output_shape: tuple
    depth_as_rows: bool = False  # a (kd, 1, 1) kernel: one conv2d on the (N, C, D, H*W) view instead
    geometry: object = None      # the (h, w) conv2d geometry of one depth slice (volume algorithm)
    patches: tuple = None        # kernel == stride, no padding: the kernel, its patches disjoint

    @property
    def volume(self):
        """The depth dimension as the volume algorithm takes it: (D, kd, stride, pad_front, dilation, Do)."""
        m = self.depth
        return (m.size, m.taps, m.stride, m.pad, m.dilation, m.out)


def _conv3d_plan(x_shape, w_shape, stride, padding, dilation, groups):
    g, stride, dilation, pads, do = _shapes.conv3d_geometry(x_shape, w_shape, stride, padding, dilation, groups)
    n, _, d, h, w = x_shape
    o, _, kd, kh, kw = w_shape
    depth = _DepthMap(d, do, kd, stride[0], pads[0][0], dilation[0])
    if (kh, kw) == (1, 1) and stride[1:] == (1, 1) and pads[1:] == ((0, 0), (0, 0)):
        # Pointwise in (h, w): depth becomes the rows of a 2-d conv on a free view, no copies.
        args = dict(stride=(stride[0], 1), padding=padding if isinstance(padding, str) else (pads[0][0], 0),
                    dilation=(dilation[0], 1), groups=g.groups)
        return _Conv3dPlan(depth, args, (n, o, do, h, w), depth_as_rows=True)
    pad_hw = padding if isinstance(padding, str) else (pads[1][0], pads[2][0])
    args = dict(stride=stride[1:], padding=pad_hw, dilation=dilation[1:], groups=g.groups)
    kernel = (kd, kh, kw)
    disjoint = (tuple(stride) == kernel and all(p == (0, 0) for p in pads)
                and all(k == 1 or dl == 1 for k, dl in zip(kernel, dilation)))
    return _Conv3dPlan(depth, args, (n, o, do, g.out_h, g.out_w), geometry=g,
                       patches=kernel if disjoint else None)


def _patches(plan, backend, dtype):
    """The backend that lowers ``plan``'s conv3d to a 1x1 conv2d on its non-overlapping
    patches (kernel == stride, no padding): x's patches gathered into the channels,
    (N, C*kd*kh*kw, Do, Ho*Wo), with the weight's free view (O, C/groups*kd*kh*kw, 1, 1); None
    where the plan's patches overlap or the backend has no patch copies (the NumPy backend
    keeps the depth fold, an independent reference).  The backward passes take it: the 1x1
    conv2d's GEMMs read every patch once, where the fold stacks the depth taps and its
    strided conv2d scatters the input gradient through col2im (measured on random
    kernel == stride layers, benchmarks/results-nd.md); the forward stays on the volume
    algorithm, whose polyphase copy is these patches already."""
    if plan.patches is None or dtype not in (np.float32, np.float64):
        return None
    impl = _api._resolve(backend)
    return impl if hasattr(impl, "conv3d_patches") else None


def _patches_call(plan, x_shape, w_shape):
    """(input shape, weight shape, arguments) of the 1x1 conv2d that :func:`_patches` lowers to."""
    n, c = x_shape[:2]
    taps = int(np.prod(plan.patches))
    _, _, do, ho, wo = plan.output_shape
    return ((n, c * taps, do, ho * wo), (w_shape[0], w_shape[1] * taps, 1, 1),
            dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=plan.conv2d["groups"]))


def _volume(plan, backend):
    """The backend's volume algorithm (None: it has none, or the plan is a (kd, 1, 1) row view)."""
    impl = _api._resolve(backend)
    return None if plan.depth_as_rows or not hasattr(impl, "conv3d") else impl


def _rows(a):
    """(N, C, D, H, W) -> (N, C, D, H*W); a view when ``a`` is contiguous."""
    return a.reshape(a.shape[0], a.shape[1], a.shape[2], -1)


_CONV3D, _CONV3D_BACKWARD = {}, {}


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
    """3-d cross-correlation, like ``torch.nn.functional.conv3d``.

    input (N, C, D, H, W) or (C, D, H, W); weight (O, C/groups, kd, kh, kw); bias (O,) or None;
    stride, padding, dilation: int or triple (padding also ``'valid'``/``'same'``).
    Returns (N, O, Do, Ho, Wo), each size as in :func:`conv1d`.
    """
    arrays, args = (input, weight, bias), (stride, padding, dilation, groups)
    known = _recall(_CONV3D, _conv_key, arrays, args)
    if known is not None:
        plan, unbatched = known
        x, w, b = input[np.newaxis] if unbatched else input, weight, bias
    else:
        x, w, b = _shapes.as_float_arrays(input=input, weight=weight, bias=bias)
        x, unbatched = _shapes.batched(x, "input", 3)
        plan = _conv3d_plan(x.shape, w.shape, stride, padding, dilation, groups)
        _shapes.check_bias(b, w.shape[0])
        _api._remember(_CONV3D, _conv_key, (plan, unbatched), arrays, args)
    if plan.depth_as_rows:
        y = _api.conv2d(_rows(x), _rows(w), b, backend=backend, **plan.conv2d)
        return _unbatch(y.reshape(plan.output_shape), unbatched)
    impl = _volume(plan, backend)
    if impl is not None:
        c = _shapes.contiguous
        y = impl.conv3d(c(x), c(w), c(b), plan.geometry, plan.volume)
        if y is not None:
            return _unbatch(y, unbatched)
    y = _api.conv2d(_gather_depth(x, plan.depth, plan.conv2d["groups"]), _fold_weight(w), b,
                    backend=backend, **plan.conv2d)
    return _unbatch(_batch_to_slices(y, x.shape[0], plan.depth.out), unbatched)


def conv3d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=(True, True, True), backend=None):
    """Gradients of :func:`conv3d`: ``(grad_input (N, C, D, H, W), grad_weight (O, C/groups, kd, kh, kw),
    grad_bias (O,))``, None where ``output_mask`` is False."""
    arrays, args = (grad_output, input, weight), (stride, padding, dilation, groups)
    known = _recall(_CONV3D_BACKWARD, _conv_backward_key, arrays, args, output_mask)
    if known is not None:
        plan, unbatched = known
        need_input, need_weight, need_bias = mask = tuple(output_mask)
        x, w = input[np.newaxis] if unbatched else input, weight
        gy = _grad_batched(grad_output, unbatched, 3)
    else:
        need_input, need_weight, need_bias = mask = _output_mask(output_mask)
        gy, x, w = _shapes.as_float_arrays(grad_output=grad_output, input=input, weight=weight)
        x, unbatched = _shapes.batched(x, "input", 3)
        gy = _grad_batched(gy, unbatched, 3)
        plan = _conv3d_plan(x.shape, w.shape, stride, padding, dilation, groups)
        _shapes.check_output_shape(gy, plan.output_shape, "grad_output")
        _api._remember(_CONV3D_BACKWARD, _conv_backward_key, (plan, unbatched), arrays, args, output_mask)
    if plan.depth_as_rows:
        gx, gw, gb = _api.conv2d_backward(_rows(gy), _rows(x), _rows(w), output_mask=mask, backend=backend,
                                          **plan.conv2d)
        gx = None if gx is None else gx.reshape(x.shape)
        gw = None if gw is None else gw.reshape(w.shape)
        return (gx[0] if unbatched and gx is not None else gx), gw, gb
    groups = plan.conv2d["groups"]
    n, c = x.shape[:2]
    impl = _patches(plan, backend, x.dtype)
    if impl is not None:
        xs_shape, ws_shape, args2d = _patches_call(plan, x.shape, w.shape)
        if need_weight:
            xs = impl.conv3d_patches(_shapes.contiguous(x), x.shape, plan.patches, False)
        else:  # only its shape matters; zeros are allocated lazily
            xs = np.zeros(xs_shape, x.dtype)
        gy2 = _shapes.contiguous(gy).reshape(xs_shape[:1] + plan.output_shape[1:3] + xs_shape[3:])
        gxs, gws, gb = _api.conv2d_backward(gy2, xs, _shapes.contiguous(w).reshape(ws_shape), output_mask=mask,
                                            backend=backend, **args2d)
        gx = impl.conv3d_patches(_shapes.contiguous(gxs), x.shape, plan.patches, True) if need_input else None
        gw = gws.reshape(w.shape) if need_weight else None
        return (gx[0] if unbatched and gx is not None else gx), gw, gb if need_bias else None
    gx = None
    impl = _volume(plan, backend) if need_input else None
    if impl is not None:
        gx = impl.conv3d_grad_input(_shapes.contiguous(gy), _shapes.contiguous(w), plan.geometry, plan.volume)
        if gx is not None:
            need_input = False
            mask = (False, need_weight, need_bias)
            if not (need_weight or need_bias):
                return (gx[0] if unbatched else gx), None, None
    if need_weight:
        xs = _gather_depth(x, plan.depth, groups)
    else:  # only its shape matters; zeros are allocated lazily
        xs = np.zeros((n * plan.depth.out, c * plan.depth.taps) + x.shape[3:], x.dtype)
    gxs, gws, gb = _api.conv2d_backward(_slices_to_batch(gy), xs, _fold_weight(w), output_mask=mask,
                                        backend=backend, **plan.conv2d)
    if need_input:
        fold = _depth_scatter(backend, gxs.dtype)
        gx = (fold.conv3d_depth_scatter(_shapes.contiguous(gxs), x.shape, plan.volume, groups)
              if fold is not None else _scatter_depth(gxs, plan.depth, n, c, groups))
    gw = _unfold_weight(gws, w.shape[2]) if need_weight else None
    return (gx[0] if unbatched and gx is not None else gx), gw, gb if need_bias else None


@dataclass(frozen=True)
class _Transpose3dPlan:
    depth: _DepthMap  # big = the output's depth, small = the input's
    conv_transpose2d: dict
    output_shape: tuple


def _transpose3d_plan(x_shape, w_shape, stride, padding, output_padding, groups, dilation):
    g, out_shape, stride, padding, output_padding, dilation = _shapes.conv_transpose3d_geometry(
        x_shape, w_shape, stride, padding, output_padding, groups, dilation)
    depth = _DepthMap(out_shape[2], x_shape[2], w_shape[2], stride[0], padding[0], dilation[0])
    args = dict(stride=stride[1:], padding=padding[1:], output_padding=output_padding[1:],
                groups=g.groups, dilation=dilation[1:])
    return _Transpose3dPlan(depth, args, out_shape)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, backend=None):
    """3-d transposed convolution, like ``torch.nn.functional.conv_transpose3d``.

    input (N, C_in, D, H, W) or unbatched; weight (C_in, C_out/groups, kd, kh, kw). Returns
    (N, C_out, Do, Ho, Wo), ``Do = (D - 1)*stride - 2*padding + dilation*(kd - 1) + output_padding + 1``.
    """
    arrays, args = (input, weight, bias), (stride, padding, output_padding, groups, dilation)
    known = _recall(_CONV_TRANSPOSE3D, _transpose_key, arrays, args)
    if known is not None:
        plan, unbatched = known
        x, w, b = input[np.newaxis] if unbatched else input, weight, bias
    else:
        x, w, b = _shapes.as_float_arrays(input=input, weight=weight, bias=bias)
        x, unbatched = _shapes.batched(x, "input", 3)
        plan = _transpose3d_plan(x.shape, w.shape, stride, padding, output_padding, groups, dilation)
        _shapes.check_bias(b, plan.output_shape[1])
        _api._remember(_CONV_TRANSPOSE3D, _transpose_key, (plan, unbatched), arrays, args)
    z = _api.conv_transpose2d(_slices_to_batch(x), _fold_weight(w), None, backend=backend, **plan.conv_transpose2d)
    y = _scatter_depth(z, plan.depth, x.shape[0], plan.output_shape[1], plan.conv_transpose2d["groups"])
    if b is not None:
        y += b.reshape(1, -1, 1, 1, 1)
    return _unbatch(y, unbatched)


def conv_transpose3d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, *, output_mask=(True, True, True), backend=None):
    """Gradients of :func:`conv_transpose3d`: ``(grad_input, grad_weight, grad_bias)``."""
    arrays, args = (grad_output, input, weight), (stride, padding, output_padding, groups, dilation)
    known = _recall(_CONV_TRANSPOSE3D_BACKWARD, _transpose_backward_key, arrays, args, output_mask)
    if known is not None:
        plan, unbatched = known
        need_input, need_weight, need_bias = output_mask
        x, w = input[np.newaxis] if unbatched else input, weight
        gy = _grad_batched(grad_output, unbatched, 3)
    else:
        need_input, need_weight, need_bias = _output_mask(output_mask)
        gy, x, w = _shapes.as_float_arrays(grad_output=grad_output, input=input, weight=weight)
        x, unbatched = _shapes.batched(x, "input", 3)
        gy = _grad_batched(gy, unbatched, 3)
        plan = _transpose3d_plan(x.shape, w.shape, stride, padding, output_padding, groups, dilation)
        _shapes.check_output_shape(gy, plan.output_shape, "grad_output")
        _api._remember(_CONV_TRANSPOSE3D_BACKWARD, _transpose_backward_key, (plan, unbatched), arrays, args,
                       output_mask)
    gzs = _gather_depth(gy, plan.depth, plan.conv_transpose2d["groups"])
    gxs, gws, _ = _api.conv_transpose2d_backward(gzs, _slices_to_batch(x), _fold_weight(w),
                                                 output_mask=(need_input, need_weight, False), backend=backend,
                                                 **plan.conv_transpose2d)
    gx = _batch_to_slices(gxs, x.shape[0], x.shape[2]) if need_input else None
    gw = _unfold_weight(gws, w.shape[2]) if need_weight else None
    gb = gy.sum(axis=(0, 2, 3, 4)) if need_bias else None
    return (gx[0] if unbatched and gx is not None else gx), gw, gb


# --------------------------------------------------------------------------
# 3-d pooling: 2-d pooling per depth slice, then the depth window
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Pool3dPlan:
    depth: _DepthMap  # big = the input's depth, small = the output's
    pool2d: dict      # kernel_size, stride, padding (and dilation for max) of the per-slice pool
    ceil_mode: bool
    output_shape: tuple
    geometry: _shapes.PoolGeometry  # of the per-slice 2-d pool on the (N, C*D, H, W) view


def _pool3d_plan(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    g, kernel, stride, padding, dilation, ceil_mode, do = _shapes.pool3d_geometry(
        x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    n, c, d = x_shape[:3]
    depth = _DepthMap(d, do, kernel[0], stride[0], padding[0], dilation[0])
    args = dict(kernel_size=kernel[1:], stride=stride[1:], padding=padding[1:], dilation=dilation[1:])
    return _Pool3dPlan(depth, args, ceil_mode, (n, c, do, g.out_h, g.out_w), g)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """3-d max pooling, like ``torch.nn.functional.max_pool3d``: (N, C, D, H, W) -> (N, C, Do, Ho, Wo),
    and with ``return_indices`` the int64 flat positions ``d*H*W + h*W + w`` in each (n, c) volume.
    Ties go to the first maximum in (d, h, w) order; NaN wins and the last NaN owns the index."""
    arrays, args, flags = (input,), (kernel_size, stride, padding, dilation), (ceil_mode, return_indices)
    known = _recall(_MAX_POOL3D, _max_pool_key, arrays, args, flags)
    if known is not None:
        plan, unbatched = known
        x = input[np.newaxis] if unbatched else input
    else:
        (x,) = _shapes.as_float_arrays(input=input)
        x, unbatched = _shapes.batched(x, "input", 3)
        return_indices = _shapes.check_bool(return_indices, "return_indices")
        plan = _pool3d_plan(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
        _api._remember(_MAX_POOL3D, _max_pool_key, (plan, unbatched), arrays, args, flags)
    n, c, d, h, w = x.shape
    impl = _backends.resolve(backend)
    if hasattr(impl, "max_pool3d"):  # the depth window folded into the 2-d row kernels
        m = plan.depth
        out, idx = impl.max_pool3d(_shapes.contiguous(x), plan.geometry, (d, m.out, m.taps, m.stride, m.pad, m.dilation))
        return _unbatch((out, idx) if return_indices else out, unbatched)
    p, pi = _api.max_pool2d(_shapes.contiguous(x).reshape(n, c * d, h, w), ceil_mode=plan.ceil_mode,
                            return_indices=True, backend=backend, **plan.pool2d)
    p = p.reshape(n, c, d, *p.shape[2:])
    pi = pi.reshape(p.shape)
    out = np.full(plan.output_shape, -np.inf, x.dtype)
    idx = np.zeros(plan.output_shape, np.int64)
    seen = np.zeros(plan.depth.out, bool)  # output slices that have taken their first real tap
    m = plan.depth
    for t in range(m.taps):
        j0, j1, i0 = m.tap_range(t)
        if j1 <= j0:
            continue
        sl = slice(i0, i0 + (j1 - j0 - 1) * m.stride + 1, m.stride)
        v = p[:, :, sl]
        o = out[:, :, j0:j1]
        take = (v > o) | np.isnan(v) | ~seen[j0:j1, None, None]
        np.copyto(o, v, where=take)
        vi = pi[:, :, sl] + (np.arange(i0, sl.stop, m.stride) * (h * w))[:, None, None]
        np.copyto(idx[:, :, j0:j1], vi, where=take)
        seen[j0:j1] = True
    return _unbatch((out, idx) if return_indices else out, unbatched)


def max_pool3d_backward(grad_output, indices, input_shape, *, backend=None):
    """Gradient of :func:`max_pool3d`: grad_output (N, C, Do, Ho, Wo) -> grad_input of ``input_shape``."""
    return _max_pool_flat_backward(grad_output, indices, input_shape, 3, backend)


def _window_counts(size, out, kernel, stride, pad, include_pad):
    """Per output position, how many of its taps PyTorch counts (the divisor is the product
    over dimensions): with padding, the window clipped to [-pad, size + pad); without, to the input."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    if include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _avg3d_divisor(plan, shape, include_pad, divisor_override, dtype):
    if divisor_override is not None:
        return dtype.type(divisor_override)
    sizes = shape[2:]
    k, s, p = ((plan.depth.taps,) + plan.pool2d["kernel_size"], (plan.depth.stride,) + plan.pool2d["stride"],
               (plan.depth.pad,) + plan.pool2d["padding"])
    counts = [_window_counts(sizes[i], plan.output_shape[2 + i], k[i], s[i], p[i], include_pad) for i in range(3)]
    return (counts[0][:, None, None] * counts[1][:, None] * counts[2]).astype(dtype)


def _avg3d_plan(shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    include_pad, divisor_override = _shapes.avg_pool_options(count_include_pad, divisor_override)
    plan = _pool3d_plan(shape, kernel_size, stride, padding, 1, ceil_mode)
    return plan, include_pad, divisor_override


def _avg2d_sum_args(plan):
    args = dict(plan.pool2d, ceil_mode=plan.ceil_mode, count_include_pad=True, divisor_override=1)
    del args["dilation"]
    return args


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend=None):
    """3-d average pooling, like ``torch.nn.functional.avg_pool3d``: (N, C, D, H, W) -> (N, C, Do, Ho, Wo)."""
    arrays, args, flags = (input,), (kernel_size, stride, padding, divisor_override), (ceil_mode, count_include_pad)
    known = _recall(_AVG_POOL3D, _avg_pool_key, arrays, args, flags)
    if known is not None:
        plan, include_pad, override, divisor, unbatched = known
        x = input[np.newaxis] if unbatched else input
    else:
        (x,) = _shapes.as_float_arrays(input=input)
        x, unbatched = _shapes.batched(x, "input", 3)
        plan, include_pad, override = _avg3d_plan(x.shape, kernel_size, stride, padding, ceil_mode,
                                                  count_include_pad, divisor_override)
        divisor = _avg3d_divisor(plan, x.shape, include_pad, override, x.dtype)   # only read
        small = np.size(divisor) <= _KEPT_DIVISOR_SIZE
        _api._remember(_AVG_POOL3D, _avg_pool_key, (plan, include_pad, override, divisor if small else None,
                                                    unbatched), arrays, args, flags)
    if divisor is None:
        divisor = _avg3d_divisor(plan, x.shape, include_pad, override, x.dtype)
    n, c, d, h, w = x.shape
    sums = _api.avg_pool2d(_shapes.contiguous(x).reshape(n, c * d, h, w), backend=backend, **_avg2d_sum_args(plan))
    sums = sums.reshape(n, c, d, *sums.shape[2:])
    out = np.zeros(plan.output_shape, x.dtype)
    m = plan.depth
    for t in range(m.taps):
        j0, j1, i0 = m.tap_range(t)
        if j1 > j0:
            out[:, :, j0:j1] += sums[:, :, i0:i0 + (j1 - j0 - 1) * m.stride + 1:m.stride]
    out /= divisor
    return _unbatch(out, unbatched)


def avg_pool3d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, backend=None):
    """Gradient of :func:`avg_pool3d`: grad_output (N, C, Do, Ho, Wo) -> grad_input of ``input_shape``."""
    (gy,) = _shapes.as_float_arrays(grad_output=grad_output)
    shape = _shapes.input_shape(input_shape, gy.ndim, 3)
    gy, unbatched = _shapes.batched(gy, "grad_output", 3)
    plan, include_pad, override = _avg3d_plan(shape, kernel_size, stride, padding, ceil_mode,
                                              count_include_pad, divisor_override)
    _shapes.check_output_shape(gy, plan.output_shape, "grad_output")
    n, c, d, h, w = shape
    g = gy / _avg3d_divisor(plan, shape, include_pad, override, gy.dtype)
    spread = np.zeros((n, c, d) + gy.shape[3:], gy.dtype)
    m = plan.depth
    for t in range(m.taps):
        j0, j1, i0 = m.tap_range(t)
        if j1 > j0:
            spread[:, :, i0:i0 + (j1 - j0 - 1) * m.stride + 1:m.stride] += g[:, :, j0:j1]
    grad = _api.avg_pool2d_backward(spread.reshape(n, c * d, *gy.shape[3:]), (n, c * d, h, w), backend=backend,
                                    **_avg2d_sum_args(plan))
    return _unbatch(grad.reshape(shape), unbatched)


# --------------------------------------------------------------------------
# which 2-d ops an N-d op runs
# --------------------------------------------------------------------------

def plan_2d(op, input_shape, *args, **kwargs):
    """The 2-d op calls behind a 1-d/3-d op, without running them: a list of
    ``(name, input_shape, weight_shape or None, keyword arguments)`` (max_pool3d: on a backend
    without a 3-d max pool; the compiled one runs a single 3-d kernel).

    ``op`` is a public op name (``'conv3d'``, ``'max_pool1d_backward'``, ...); ``input_shape``
    the forward input's (batched) shape; then the op's own arguments after its arrays, with
    ``weight_shape`` first for convolutions: ``plan_2d('conv3d', x.shape, w.shape, stride=2)``;
    ``backend`` and ``dtype`` (keywords) as the call's, where they change the calls (a conv3d's
    backward on non-overlapping patches: :func:`_patches`).
    """
    backend, dtype = kwargs.pop("backend", None), np.dtype(kwargs.pop("dtype", np.float32))
    base = op.removesuffix("_backward")
    backward = base != op
    suffix = "_backward" if backward else ""
    dims = int(base[-2])
    if base.startswith("conv"):
        weight_shape, *args = args
        params = dict(zip(("stride", "padding", "output_padding", "groups", "dilation") if "transpose" in base
                          else ("stride", "padding", "dilation", "groups"), args), **kwargs)
        name = ("conv_transpose2d" if "transpose" in base else "conv2d") + suffix
        if dims == 1:
            n, c, length = input_shape
            shape2d, w2d = (n, c, 1, length), weight_shape[:2] + (1,) + tuple(weight_shape[2:])
            groups = params.pop("groups", 1)
            if "transpose" in base:
                call = _transpose1d_args(params.get("stride", 1), params.get("padding", 0),
                                         params.get("output_padding", 0), params.get("dilation", 1))
            else:
                call = _conv1d_args(input_shape, weight_shape, params.get("stride", 1), params.get("padding", 0),
                                    params.get("dilation", 1))
            return [(name, shape2d, w2d, dict(call, groups=groups))]
        kd = weight_shape[2]
        w2d = (weight_shape[0], kd * weight_shape[1]) + tuple(weight_shape[3:])
        n, c, d, h, w = input_shape
        if "transpose" in base:
            plan = _transpose3d_plan(tuple(input_shape), tuple(weight_shape), params.get("stride", 1),
                                     params.get("padding", 0), params.get("output_padding", 0),
                                     params.get("groups", 1), params.get("dilation", 1))
            return [(name, (n * d, c, h, w), w2d, plan.conv_transpose2d)]
        plan = _conv3d_plan(tuple(input_shape), tuple(weight_shape), params.get("stride", 1),
                            params.get("padding", 0), params.get("dilation", 1), params.get("groups", 1))
        if plan.depth_as_rows:
            return [(name, (n, c, d, h * w), tuple(weight_shape[:3]) + (1,), plan.conv2d)]
        if backward and _patches(plan, backend, dtype) is not None:
            return [(name, *_patches_call(plan, tuple(input_shape), tuple(weight_shape)))]
        return [(name, (n * plan.depth.out, c * kd, h, w), w2d, plan.conv2d)]
    kind = "max" if base.startswith("max") else "avg"
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode") if kind == "max" else \
        ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    params = dict(zip(names, args), **kwargs)
    params.pop("return_indices", None)
    if dims == 1:
        n, c, length = input_shape
        call = _pool1d_args(params["kernel_size"], params.get("stride"), params.get("padding", 0),
                            params.get("dilation", 1))
        if kind == "avg":
            del call["dilation"]
            call.update(ceil_mode=params.get("ceil_mode", False), count_include_pad=params.get("count_include_pad", True))
        else:
            call["ceil_mode"] = params.get("ceil_mode", False)
        return [(f"{kind}_pool2d{suffix}", (n, c, 1, length), None, call)]
    n, c, d, h, w = input_shape
    plan = _pool3d_plan(tuple(input_shape), params["kernel_size"], params.get("stride"), params.get("padding", 0),
                        params.get("dilation", 1), params.get("ceil_mode", False))
    if kind == "max":
        if backward:  # the flat scatter of every (n, c) volume
            return [("max_pool2d_backward", (n, c, 1, d * h * w), None, {})]
        return [("max_pool2d", (n, c * d, h, w), None, dict(plan.pool2d, ceil_mode=plan.ceil_mode))]
    return [(f"avg_pool2d{suffix}", (n, c * d, h, w), None, _avg2d_sum_args(plan))]
