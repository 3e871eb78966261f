"""cconv's ops registered as torch custom operators: ``torch.ops.cconv.<op>`` and ``<op>_backward``.

Each op (conv1d/2d/3d, conv_transpose1d/2d/3d, max_pool1d/2d/3d, avg_pool1d/2d/3d,
adaptive_avg_pool1d/2d/3d, adaptive_max_pool1d/2d/3d) is a pair of custom operators: the forward
one has a fake implementation (output shapes, for tracing) and an autograd formula that calls
the backward one, which runs cconv's ``*_backward`` (and itself refuses double backward).
Tensors reach cconv as NumPy views of their memory and its arrays come back as tensors on
theirs. The user-facing functions with ``torch.nn.functional``'s signatures are in
:mod:`cconv._torch_functional`; this module only knows the operators' schemas.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import cconv

_NAMESPACE = "cconv"
DIMS = (1, 2, 3)


# --------------------------------------------------------------------------
# tensors <-> arrays
# --------------------------------------------------------------------------

def _bfloat16():
    """NumPy's bfloat16 (ml_dtypes'), or None when ml_dtypes is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def _array(t):
    """The tensor's memory as a NumPy array (a view, no copy); None and non-tensors pass through.
    bfloat16, which NumPy lacks, goes through its bits (int16) to ml_dtypes' bfloat16."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_bfloat16())
    return t.numpy()


def _tensor(a, dtype):
    """cconv's result as a tensor sharing its memory; a gradient cconv did not compute is an empty tensor."""
    if a is None:
        return torch.empty(0, dtype=dtype)
    if not a.flags.c_contiguous:  # custom operators promise the fake implementations' contiguous layout
        a = np.ascontiguousarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _empty_like(t, keep=True):
    """A fake output of ``t``'s shape (contiguous, as cconv's results are), or an empty one if not kept."""
    return t.new_empty(t.shape if keep else (0,))


# --------------------------------------------------------------------------
# one _Op per operator pair
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Op:
    """A cconv op as a pair of torch custom operators, ``cconv::<name>`` and ``cconv::<name>_backward``.

    ``forward``/``backward`` take NumPy arrays (the tensors' views) and the schema's other
    arguments and call cconv; ``fake``/``backward_fake`` give outputs of the right shape and dtype
    for tracing; ``setup_context`` and ``grad`` are the autograd formula (``grad(ctx, backward_op,
    *grad_outputs)`` returns one gradient or None per forward argument).
    """

    name: str
    schema: str
    forward: Callable
    fake: Callable
    backward_schema: str
    backward: Callable
    backward_fake: Callable
    setup_context: Callable
    grad: Callable


def _cconv(name):
    """cconv's public function ``name``, looked up at each call (so that what is called is what
    ``cconv.<name>`` is then)."""
    return lambda *args, **kwargs: getattr(cconv, name)(*args, **kwargs)


# Convolutions. Forward inputs (input, weight, bias, *geometry); backward op (grad_output, input,
# weight, *geometry, output_mask) -> (grad_input, grad_weight, grad_bias). A conv's padding
# 'same' travels as a flag (the schema's padding is int[]).

_CONV_GEOMETRY = {
    "conv": "int[] stride, int[] padding, int[] dilation, int groups, bool same",
    "conv_transpose": "int[] stride, int[] padding, int[] output_padding, int groups, int[] dilation",
}


def _conv_args(kind, geometry):
    """The schema's geometry as cconv's (and torch.nn.functional's) positional arguments."""
    if kind == "conv":
        stride, padding, dilation, groups, same = geometry
        return stride, "same" if same else padding, dilation, groups
    return tuple(geometry)


def _conv_setup_context(ctx, inputs, output):
    x, w, b, *geometry = inputs
    ctx.save_for_backward(x, w)
    ctx.geometry = geometry
    ctx.has_bias = b is not None


def _conv_grad(ctx, backward_op, grad_output):
    x, w = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    grads = backward_op(grad_output.contiguous(), x, w, *ctx.geometry, mask)
    return (*(g if needed else None for g, needed in zip(grads, mask)), *[None] * len(ctx.geometry))


def _conv_op(kind, dims):
    name = f"{kind}{dims}d"
    forward_fn, backward_fn, torch_fn = _cconv(name), _cconv(f"{name}_backward"), getattr(F, name)

    def forward(x, w, b, *geometry):
        return forward_fn(x, w, b, *_conv_args(kind, geometry))

    def fake(x, w, b, *geometry):
        return _empty_like(torch_fn(x, w, b, *_conv_args(kind, geometry)))

    def backward(gy, x, w, *geometry_and_mask):
        *geometry, mask = geometry_and_mask
        return backward_fn(gy, x, w, *_conv_args(kind, geometry), output_mask=tuple(mask))

    def backward_fake(gy, x, w, *geometry_and_mask):
        mask = geometry_and_mask[-1]
        channels = gy.shape[gy.dim() - dims - 1]  # (N, C, *spatial) or unbatched (C, *spatial)
        return _empty_like(x, mask[0]), _empty_like(w, mask[1]), gy.new_empty((channels,) if mask[2] else (0,))

    geometry = _CONV_GEOMETRY[kind]
    return _Op(name, f"(Tensor input, Tensor weight, Tensor? bias, {geometry}) -> Tensor", forward, fake,
               f"(Tensor grad_output, Tensor input, Tensor weight, {geometry}, bool[] output_mask) "
               "-> (Tensor, Tensor, Tensor)",
               backward, backward_fake, _conv_setup_context, _conv_grad)


# Max pools, fixed and adaptive: forward -> (output, int64 indices); the backward op routes the
# gradient to the indices, (grad_output, indices, input_shape) -> grad_input.

def _max_setup_context(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])
    ctx.arguments = len(inputs)


def _max_grad(ctx, backward_op, grad_output, _grad_indices):
    (indices,) = ctx.saved_tensors
    return backward_op(grad_output.contiguous(), indices, ctx.input_shape), *[None] * (ctx.arguments - 1)


def _max_op(name, schema, forward, fake):
    backward_fn = _cconv(f"{name}_backward")
    return _Op(name, schema, forward, fake,
               "(Tensor grad_output, Tensor indices, int[] input_shape) -> Tensor",
               lambda gy, indices, shape: backward_fn(gy, indices, tuple(shape)),
               lambda gy, indices, shape: gy.new_empty(shape),
               _max_setup_context, _max_grad)


def _max_pool_op(dims):
    name = f"max_pool{dims}d"
    forward_fn, torch_fn = _cconv(name), getattr(F, name)

    def fake(x, *pooling):
        out, indices = torch_fn(x, *pooling, return_indices=True)
        return _empty_like(out), _empty_like(indices)

    return _max_op(name, "(Tensor input, int[] kernel_size, int[] stride, int[] padding, int[] dilation, "
                         "bool ceil_mode) -> (Tensor, Tensor)",
                   lambda x, *pooling: forward_fn(x, *pooling, return_indices=True), fake)


def _adaptive_shape(x, output_size):
    return (*x.shape[:x.dim() - len(output_size)], *output_size)


def _adaptive_max_pool_op(dims):
    name = f"adaptive_max_pool{dims}d"
    forward_fn = _cconv(name)

    def fake(x, output_size):
        shape = _adaptive_shape(x, output_size)
        return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)

    return _max_op(name, "(Tensor input, int[] output_size) -> (Tensor, Tensor)",
                   lambda x, output_size: forward_fn(x, tuple(output_size), return_indices=True), fake)


# Average pools: the backward op takes the forward's geometry, (grad_output, input_shape, *pooling).

def _avg_setup_context(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.pooling = inputs[1:]


def _avg_grad(ctx, backward_op, grad_output):
    return backward_op(grad_output.contiguous(), ctx.input_shape, *ctx.pooling), *[None] * len(ctx.pooling)


def _avg_pool_op(dims):
    name = f"avg_pool{dims}d"
    forward_fn, backward_fn, torch_fn = _cconv(name), _cconv(f"{name}_backward"), getattr(F, name)
    pooling = "int[] kernel_size, int[] stride, int[] padding, bool ceil_mode, bool count_include_pad"
    if dims > 1:  # torch's avg_pool1d has no divisor_override
        pooling += ", int? divisor_override"
    return _Op(name, f"(Tensor input, {pooling}) -> Tensor",
               forward_fn, lambda x, *args: _empty_like(torch_fn(x, *args)),
               f"(Tensor grad_output, int[] input_shape, {pooling}) -> Tensor",
               lambda gy, shape, *args: backward_fn(gy, tuple(shape), *args),
               lambda gy, shape, *args: gy.new_empty(shape),
               _avg_setup_context, _avg_grad)


def _adaptive_avg_pool_op(dims):
    name = f"adaptive_avg_pool{dims}d"
    forward_fn, backward_fn = _cconv(name), _cconv(f"{name}_backward")
    return _Op(name, "(Tensor input, int[] output_size) -> Tensor",
               lambda x, output_size: forward_fn(x, tuple(output_size)),
               lambda x, output_size: x.new_empty(_adaptive_shape(x, output_size)),
               "(Tensor grad_output, int[] input_shape) -> Tensor",
               lambda gy, shape: backward_fn(gy, tuple(shape)),
               lambda gy, shape: gy.new_empty(shape),
               _avg_setup_context,
               lambda ctx, backward_op, grad_output: (backward_op(grad_output.contiguous(), ctx.input_shape), None))


# --------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------

def _on_arrays(fn):
    """``fn`` over NumPy views of the tensor arguments, its array results returned as tensors."""
    def impl(*args):
        dtype = args[0].dtype
        result = fn(*(_array(a) for a in args))
        if isinstance(result, tuple):
            return tuple(_tensor(r, dtype) for r in result)
        return _tensor(result, dtype)
    return impl


def _no_double_backward(name):
    def grad(ctx, *grad_outputs):
        raise RuntimeError(f"cconv.torch.{name}: gradients of gradients (double backward) are not supported; "
                           f"use torch's own {name} where they are needed")
    return grad


def _register(op):
    """Register ``op``'s forward and backward custom operators; returns the forward one."""
    backward = torch.library.custom_op(f"{_NAMESPACE}::{op.name}_backward", _on_arrays(op.backward),
                                       mutates_args=(), device_types="cpu", schema=op.backward_schema)
    backward.register_fake(op.backward_fake)
    backward.register_autograd(_no_double_backward(op.name))
    forward = torch.library.custom_op(f"{_NAMESPACE}::{op.name}", _on_arrays(op.forward),
                                      mutates_args=(), device_types="cpu", schema=op.schema)
    forward.register_fake(op.fake)
    forward.register_autograd(lambda ctx, *grads: op.grad(ctx, backward, *grads), setup_context=op.setup_context)
    return forward


_OPS = [make(dims) for dims in DIMS
        for make in (lambda d: _conv_op("conv", d), lambda d: _conv_op("conv_transpose", d),
                     _max_pool_op, _avg_pool_op, _adaptive_avg_pool_op, _adaptive_max_pool_op)]

CUSTOM_OPS = {op.name: _register(op) for op in _OPS}
"""Op name (``'conv3d'``, ``'adaptive_max_pool1d'``, ...) -> its registered forward operator."""
