"""cconv's kernels inside PyTorch models: differentiable ops and a one-line module conversion.

::

    import cconv.torch
    y = cconv.torch.conv2d(x, w, b, padding=1)   # like torch.nn.functional.conv2d, on cconv's kernels
    model = cconv.torch.convert(model)            # its nn.Conv2d, nn.MaxPool2d, ... now compute through cconv
    model = cconv.torch.revert(model)             # back to torch's kernels

Each function has ``torch.nn.functional``'s name and signature and takes float32/float64 CPU
tensors. It is a torch custom operator (``torch.ops.cconv.<name>``, with a fake implementation
and an autograd formula whose backward runs cconv's ``*_backward``), so it works under autograd
and, as an opaque op, under ``torch.compile``. Contiguous tensors reach cconv as NumPy views
(``tensor.numpy()``, no copy) and cconv's results come back as tensors sharing their memory
(``torch.from_numpy``). Gradients of gradients (double backward) are not supported and raise.

Not to be confused with ``cconv._torch_backend``, the other direction (torch's kernels behind
cconv's NumPy API).
"""
from __future__ import annotations

try:
    import torch
except ImportError as exc:  # the optional extra is missing
    raise ImportError('cconv.torch needs PyTorch, which is not installed: pip install "cconv[torch]"') from exc

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

import cconv

if not hasattr(torch.library, "custom_op"):
    raise ImportError(f"cconv.torch needs PyTorch >= 2.4 (torch.library.custom_op); this is {torch.__version__}: "
                      'pip install "cconv[torch]"')

__all__ = ["avg_pool2d", "conv2d", "conv_transpose2d", "convert", "max_pool2d", "revert", "unconverted"]

_NAMESPACE = "cconv"
_DTYPES = (torch.float32, torch.float64)


# --------------------------------------------------------------------------
# tensors <-> arrays
# --------------------------------------------------------------------------

def _check_tensors(op, **tensors):
    """Refuse, naming the reason, any tensor that cconv cannot compute on (None passes)."""
    dtype = None
    for name, t in tensors.items():
        if t is None:
            continue
        where = f"cconv.torch.{op}: {name}"
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{where} must be a torch.Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise TypeError(f"{where} is a {t.layout} tensor; cconv takes dense tensors only (use .to_dense())")
        if t.device.type != "cpu":
            raise ValueError(f"{where} is on device '{t.device}'; cconv computes on the CPU only "
                             f"(move it with .cpu(), or keep this layer on torch)")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{where} has dtype {t.dtype}; cconv supports torch.float32 and torch.float64 only "
                            f"(convert with .float() or .double())")
        if dtype is not None and t.dtype != dtype:
            raise TypeError(f"{where} has dtype {t.dtype} but the input has {dtype}; all tensors must share one dtype")
        dtype = t.dtype


def _array(t):
    """The tensor's memory as a NumPy array (a view, no copy); None and non-tensors pass through."""
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t


def _tensor(a, dtype):
    """cconv's result as a tensor sharing its memory; a gradient cconv did not compute is an empty tensor."""
    return torch.empty(0, dtype=dtype) if a is None else torch.from_numpy(a)


def _ints(value, name, n=2):
    """An int or a sequence of ``n`` ints (a module attribute or an argument) as a list of ``n`` ints."""
    if isinstance(value, (tuple, list, torch.Size)):
        if len(value) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must be an int or {n} ints, got {value!r}")
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * n
    raise TypeError(f"{name} must be an int or {n} ints, got {type(value).__name__} {value!r}")


# --------------------------------------------------------------------------
# the ops: one _Op entry each
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


def _empty_like(t, keep):
    """A fake output of ``t``'s shape (contiguous, as cconv's results are), or an empty one if not kept."""
    return t.new_empty(t.shape if keep else (0,))


# conv2d and conv_transpose2d share one autograd formula: inputs (input, weight, bias, *geometry),
# backward op (grad_output, input, weight, *geometry, output_mask) -> (grad_input, grad_weight, grad_bias).

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


def _conv_backward_fake(grad_output, x, w, *geometry_and_mask):
    mask = geometry_and_mask[-1]
    bias_channels = grad_output.shape[-3]
    return (_empty_like(x, mask[0]), _empty_like(w, mask[1]),
            grad_output.new_empty((bias_channels,) if mask[2] else (0,)))


def _conv2d_forward(x, w, b, stride, padding, dilation, groups, same):
    return cconv.conv2d(x, w, b, stride, "same" if same else padding, dilation, groups)


def _conv2d_fake(x, w, b, stride, padding, dilation, groups, same):
    return _empty_like(F.conv2d(x, w, b, stride, "same" if same else padding, dilation, groups), True)


def _conv2d_backward(gy, x, w, stride, padding, dilation, groups, same, mask):
    return cconv.conv2d_backward(gy, x, w, stride, "same" if same else padding, dilation, groups,
                                 output_mask=tuple(mask))


def _conv_transpose2d_forward(x, w, b, stride, padding, output_padding, groups, dilation):
    return cconv.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)


def _conv_transpose2d_fake(x, w, b, stride, padding, output_padding, groups, dilation):
    return _empty_like(F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation), True)


def _conv_transpose2d_backward(gy, x, w, stride, padding, output_padding, groups, dilation, mask):
    return cconv.conv_transpose2d_backward(gy, x, w, stride, padding, output_padding, groups, dilation,
                                           output_mask=tuple(mask))


def _max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode):
    return cconv.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


def _max_pool2d_fake(x, kernel_size, stride, padding, dilation, ceil_mode):
    out, indices = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    return _empty_like(out, True), _empty_like(indices, True)


def _max_pool2d_setup_context(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _max_pool2d_grad(ctx, backward_op, grad_output, _grad_indices):
    (indices,) = ctx.saved_tensors
    return backward_op(grad_output.contiguous(), indices, ctx.input_shape), None, None, None, None, None


def _avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return cconv.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _avg_pool2d_fake(x, *pooling):
    return _empty_like(F.avg_pool2d(x, *pooling), True)


def _avg_pool2d_setup_context(ctx, inputs, output):
    ctx.input_shape = list(inputs[0].shape)
    ctx.pooling = inputs[1:]


def _avg_pool2d_grad(ctx, backward_op, grad_output):
    return backward_op(grad_output.contiguous(), ctx.input_shape, *ctx.pooling), *[None] * len(ctx.pooling)


_POOL_GEOMETRY = "int[] kernel_size, int[] stride, int[] padding"

# Bridging another cconv op (a 1-d or 3-d one, say) takes its entry here, its public function below
# (torch.nn.functional's name and signature) and, for convert(), its layer class in _CONVERTIBLE.

_OPS = [
    _Op("conv2d",
        "(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups, "
        "bool same) -> Tensor",
        _conv2d_forward, _conv2d_fake,
        "(Tensor grad_output, Tensor input, Tensor weight, int[] stride, int[] padding, int[] dilation, "
        "int groups, bool same, bool[] output_mask) -> (Tensor, Tensor, Tensor)",
        _conv2d_backward, _conv_backward_fake, _conv_setup_context, _conv_grad),
    _Op("conv_transpose2d",
        "(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] output_padding, "
        "int groups, int[] dilation) -> Tensor",
        _conv_transpose2d_forward, _conv_transpose2d_fake,
        "(Tensor grad_output, Tensor input, Tensor weight, int[] stride, int[] padding, int[] output_padding, "
        "int groups, int[] dilation, bool[] output_mask) -> (Tensor, Tensor, Tensor)",
        _conv_transpose2d_backward, _conv_backward_fake, _conv_setup_context, _conv_grad),
    _Op("max_pool2d",
        f"(Tensor input, {_POOL_GEOMETRY}, int[] dilation, bool ceil_mode) -> (Tensor, Tensor)",
        _max_pool2d_forward, _max_pool2d_fake,
        "(Tensor grad_output, Tensor indices, int[] input_shape) -> Tensor",
        lambda gy, indices, shape: cconv.max_pool2d_backward(gy, indices, tuple(shape)),
        lambda gy, indices, shape: gy.new_empty(shape),
        _max_pool2d_setup_context, _max_pool2d_grad),
    _Op("avg_pool2d",
        f"(Tensor input, {_POOL_GEOMETRY}, bool ceil_mode, bool count_include_pad, int? divisor_override) "
        "-> Tensor",
        _avg_pool2d_forward, _avg_pool2d_fake,
        f"(Tensor grad_output, int[] input_shape, {_POOL_GEOMETRY}, bool ceil_mode, bool count_include_pad, "
        "int? divisor_override) -> Tensor",
        lambda gy, shape, *pooling: cconv.avg_pool2d_backward(gy, tuple(shape), *pooling),
        lambda gy, shape, *pooling: gy.new_empty(shape),
        _avg_pool2d_setup_context, _avg_pool2d_grad),
]


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


_CUSTOM_OPS = {op.name: _register(op) for op in _OPS}


# --------------------------------------------------------------------------
# the functions, with torch.nn.functional's signatures
# --------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` on cconv's kernels: input (N, C, H, W) or (C, H, W), weight
    (O, C/groups, kh, kw), bias (O,) or None; padding an int, a pair, ``'valid'`` or ``'same'``."""
    _check_tensors("conv2d", input=input, weight=weight, bias=bias)
    same = padding == "same"
    padding = [0, 0] if isinstance(padding, str) and padding in ("same", "valid") else _ints(padding, "padding")
    return _CUSTOM_OPS["conv2d"](input, weight, bias, _ints(stride, "stride"), padding,
                                 _ints(dilation, "dilation"), groups, same)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``torch.nn.functional.conv_transpose2d`` on cconv's kernels: input (N, C_in, H, W), weight
    (C_in, C_out/groups, kh, kw), bias (C_out,) or None."""
    _check_tensors("conv_transpose2d", input=input, weight=weight, bias=bias)
    return _CUSTOM_OPS["conv_transpose2d"](input, weight, bias, _ints(stride, "stride"), _ints(padding, "padding"),
                                           _ints(output_padding, "output_padding"), groups,
                                           _ints(dilation, "dilation"))


def _stride(stride, kernel_size):
    return kernel_size if stride is None or (isinstance(stride, (tuple, list)) and not stride) else stride


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d`` on cconv's kernels: (N, C, H, W) -> (N, C, Ho, Wo), and
    with ``return_indices`` the int64 flat indices ``h*W + w`` of each window's maximum."""
    _check_tensors("max_pool2d", input=input)
    kernel = _ints(kernel_size, "kernel_size")
    out, indices = _CUSTOM_OPS["max_pool2d"](input, kernel, _ints(_stride(stride, kernel), "stride"),
                                             _ints(padding, "padding"), _ints(dilation, "dilation"), ceil_mode)
    return (out, indices) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` on cconv's kernels: (N, C, H, W) -> (N, C, Ho, Wo)."""
    _check_tensors("avg_pool2d", input=input)
    kernel = _ints(kernel_size, "kernel_size")
    return _CUSTOM_OPS["avg_pool2d"](input, kernel, _ints(_stride(stride, kernel), "stride"),
                                     _ints(padding, "padding"), ceil_mode, count_include_pad, divisor_override)


# --------------------------------------------------------------------------
# convert / revert: swap a layer's class for a subclass whose forward calls the functions above
# --------------------------------------------------------------------------

class _Converted:
    """Mixin of the classes :func:`convert` swaps in. Parameters, buffers and ``state_dict`` stay the
    torch layer's; ``repr`` too, with a ``cconv`` marker; :func:`revert` swaps the class back."""

    _torch_class: type

    def _get_name(self):
        return self._torch_class.__name__

    def extra_repr(self):
        return f"{super().extra_repr()}, cconv"


class _Conv2d(_Converted, nn.Conv2d):
    _torch_class = nn.Conv2d

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":  # padded by torch, as nn.Conv2d does; convolved by cconv
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class _ConvTranspose2d(_Converted, nn.ConvTranspose2d):
    _torch_class = nn.ConvTranspose2d

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              2, self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                self.groups, self.dilation)


class _MaxPool2d(_Converted, nn.MaxPool2d):
    _torch_class = nn.MaxPool2d

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class _AvgPool2d(_Converted, nn.AvgPool2d):
    _torch_class = nn.AvgPool2d

    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


_CONVERTIBLE = {cls._torch_class: cls for cls in (_Conv2d, _ConvTranspose2d, _MaxPool2d, _AvgPool2d)}

# Layer families that compute a convolution or a pooling: any member not in _CONVERTIBLE is reported.
_FAMILIES = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
             nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
             nn.modules.pooling._LPPoolNd, nn.modules.pooling._MaxUnpoolNd,
             nn.FractionalMaxPool2d, nn.FractionalMaxPool3d)


def _why_not(layer):
    """Why ``layer`` (a convolution or pooling layer) cannot be converted, or None if it can."""
    cls = type(layer)
    if cls not in _CONVERTIBLE:
        base = next((b for b in cls.__mro__[1:] if b in _CONVERTIBLE), None)
        if base is not None:
            return f"a subclass of nn.{base.__name__} with its own forward"
        return f"cconv has no op for nn.{cls.__name__}"
    devices = {p.device.type for p in layer.parameters()}
    if devices - {"cpu"}:
        return f"its parameters are on {', '.join(sorted(devices - {'cpu'}))}; cconv computes on the CPU only"
    return None


def unconverted(module):
    """The convolution and pooling layers in ``module`` that :func:`convert` leaves to torch:
    a list of ``(qualified name, reason)``."""
    return [(name or "(the module itself)", why) for name, layer in module.named_modules()
            if isinstance(layer, _FAMILIES) and not isinstance(layer, _Converted)
            and (why := _why_not(layer)) is not None]


def convert(module, inplace=False):
    """Make every ``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.MaxPool2d`` and ``nn.AvgPool2d`` in
    ``module`` (the module itself included) compute through cconv; returns the module.

    The layers keep their parameters, buffers, ``state_dict`` and ``repr`` (plus a ``cconv``
    marker). Without ``inplace`` a deep copy is converted and ``module`` is left alone.
    Convolution and pooling layers that cannot be converted (other dimensions, adaptive pooling,
    subclasses with their own forward, parameters off the CPU) stay on torch and are named in
    one ``UserWarning``; :func:`unconverted` lists them.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert takes a torch.nn.Module, got {type(module).__name__}")
    skipped = unconverted(module)
    if not inplace:
        module = copy.deepcopy(module)
    for layer in module.modules():
        if type(layer) in _CONVERTIBLE and _why_not(layer) is None:
            layer.__class__ = _CONVERTIBLE[type(layer)]
    if skipped:
        listing = "; ".join(f"{name}: {why}" for name, why in skipped)
        warnings.warn(f"cconv.torch.convert left {len(skipped)} layer(s) on torch's kernels: {listing}",
                      UserWarning, stacklevel=2)
    return module


def revert(module, inplace=False):
    """Undo :func:`convert`: every converted layer computes through torch again; returns the module."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"revert takes a torch.nn.Module, got {type(module).__name__}")
    if not inplace:
        module = copy.deepcopy(module)
    for layer in module.modules():
        if isinstance(layer, _Converted):
            layer.__class__ = layer._torch_class
    return module
