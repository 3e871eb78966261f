"""The functions of :mod:`cconv.torch`: ``torch.nn.functional``'s names and signatures, on cconv.

Each checks its tensors (CPU, dense, one float dtype cconv computes in), normalizes its
geometry to the lists the operator schemas take, and calls the custom operator of
:mod:`cconv._torch_ops`.
"""
from __future__ import annotations

import torch

from ._torch_ops import CUSTOM_OPS, _bfloat16

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


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
            raise TypeError(f"{where} has dtype {t.dtype}; cconv supports torch.float32, torch.float64, "
                            f"torch.float16 and torch.bfloat16 only (convert with .float() or .double())")
        if t.dtype == torch.bfloat16 and _bfloat16() is None:
            raise TypeError(f'{where} is torch.bfloat16, which cconv reads through ml_dtypes, not installed: '
                            f'pip install "cconv[half]" (or convert with .float())')
        if dtype is not None and t.dtype != dtype:
            raise TypeError(f"{where} has dtype {t.dtype} but the input has {dtype}; all tensors must share one dtype")
        dtype = t.dtype


def _ints(value, name, n):
    """An int, or a sequence of ``n`` ints or of one (which broadcasts, as in torch), as a list of ``n`` ints."""
    if isinstance(value, (tuple, list, torch.Size)):
        if len(value) not in (1, n) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must be an int or {n} ints, got {value!r}")
        return list(value) * (n // len(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * n
    raise TypeError(f"{name} must be an int or {n} ints, got {type(value).__name__} {value!r}")


def _stride(stride, kernel_size):
    """A pool's stride: None (or an empty sequence) means the kernel size, as in torch."""
    return kernel_size if stride is None or (isinstance(stride, (tuple, list)) and not stride) else stride


# --------------------------------------------------------------------------
# shared by the 1-, 2- and 3-d functions
# --------------------------------------------------------------------------

def _conv(dims, input, weight, bias, stride, padding, dilation, groups):
    name = f"conv{dims}d"
    _check_tensors(name, input=input, weight=weight, bias=bias)
    same = isinstance(padding, str) and padding == "same"
    padding = [0] * dims if isinstance(padding, str) and padding in ("same", "valid") else _ints(padding, "padding", dims)
    return CUSTOM_OPS[name](input, weight, bias, _ints(stride, "stride", dims), padding,
                            _ints(dilation, "dilation", dims), groups, same)


def _conv_transpose(dims, input, weight, bias, stride, padding, output_padding, groups, dilation):
    name = f"conv_transpose{dims}d"
    _check_tensors(name, input=input, weight=weight, bias=bias)
    return CUSTOM_OPS[name](input, weight, bias, _ints(stride, "stride", dims), _ints(padding, "padding", dims),
                            _ints(output_padding, "output_padding", dims), groups, _ints(dilation, "dilation", dims))


def _max_pool(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    name = f"max_pool{dims}d"
    _check_tensors(name, input=input)
    kernel = _ints(kernel_size, "kernel_size", dims)
    out, indices = CUSTOM_OPS[name](input, kernel, _ints(_stride(stride, kernel), "stride", dims),
                                    _ints(padding, "padding", dims), _ints(dilation, "dilation", dims), ceil_mode)
    return (out, indices) if return_indices else out


def _avg_pool(dims, input, kernel_size, stride, padding, ceil_mode, count_include_pad, *divisor_override):
    name = f"avg_pool{dims}d"
    _check_tensors(name, input=input)
    kernel = _ints(kernel_size, "kernel_size", dims)
    return CUSTOM_OPS[name](input, kernel, _ints(_stride(stride, kernel), "stride", dims),
                            _ints(padding, "padding", dims), ceil_mode, count_include_pad, *divisor_override)


def _output_size(input, output_size, dims):
    """An adaptive pool's ``output_size`` (an int, or ``dims`` ints or Nones: None keeps that input
    size) as ``dims`` ints."""
    sizes = list(output_size) if isinstance(output_size, (tuple, list, torch.Size)) else [output_size]
    if len(sizes) == 1:
        sizes *= dims
    if len(sizes) != dims or not all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in sizes):
        raise TypeError(f"output_size must be an int or {dims} ints (or None), got {output_size!r}")
    if None in sizes and input.dim() not in (dims + 1, dims + 2):
        raise ValueError(f"input must be (N, C, *{dims} spatial dims) or unbatched, got shape {tuple(input.shape)}")
    spatial = input.shape[input.dim() - dims:]
    return [n if s is None else s for s, n in zip(sizes, spatial)]


def _adaptive(kind, dims, input, output_size):
    name = f"adaptive_{kind}_pool{dims}d"
    _check_tensors(name, input=input)
    return CUSTOM_OPS[name](input, _output_size(input, output_size, dims))


# --------------------------------------------------------------------------
# the public functions
# --------------------------------------------------------------------------

def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv1d`` on cconv: input (N, C, L) or (C, L), weight (O, C/groups, k),
    bias (O,) or None; padding an int, ``'valid'`` or ``'same'``."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d`` on cconv's kernels: input (N, C, H, W) or (C, H, W), weight
    (O, C/groups, kh, kw), bias (O,) or None; padding an int, a pair, ``'valid'`` or ``'same'``."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv3d`` on cconv: input (N, C, D, H, W) or (C, D, H, W), weight
    (O, C/groups, kd, kh, kw), bias (O,) or None."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``torch.nn.functional.conv_transpose1d`` on cconv: input (N, C_in, L), weight (C_in, C_out/groups, k)."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``torch.nn.functional.conv_transpose2d`` on cconv's kernels: input (N, C_in, H, W), weight
    (C_in, C_out/groups, kh, kw), bias (C_out,) or None."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``torch.nn.functional.conv_transpose3d`` on cconv: input (N, C_in, D, H, W), weight
    (C_in, C_out/groups, kd, kh, kw)."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool1d`` on cconv: (N, C, L) -> (N, C, Lo), and with
    ``return_indices`` the int64 positions of each window's maximum."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d`` on cconv's kernels: (N, C, H, W) -> (N, C, Ho, Wo), and
    with ``return_indices`` the int64 flat indices ``h*W + w`` of each window's maximum."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool3d`` on cconv: (N, C, D, H, W) -> (N, C, Do, Ho, Wo), and with
    ``return_indices`` the int64 flat indices ``d*H*W + h*W + w``."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """``torch.nn.functional.avg_pool1d`` on cconv: (N, C, L) -> (N, C, Lo)."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` on cconv's kernels: (N, C, H, W) -> (N, C, Ho, Wo)."""
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """``torch.nn.functional.avg_pool3d`` on cconv: (N, C, D, H, W) -> (N, C, Do, Ho, Wo)."""
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def adaptive_avg_pool1d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool1d`` on cconv: (N, C, L) -> (N, C, output_size)."""
    return _adaptive("avg", 1, input, output_size)


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` on cconv: (N, C, H, W) -> (N, C, oh, ow);
    ``output_size`` an int or (oh, ow), None keeping that size."""
    return _adaptive("avg", 2, input, output_size)


def adaptive_avg_pool3d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool3d`` on cconv: (N, C, D, H, W) -> (N, C, od, oh, ow)."""
    return _adaptive("avg", 3, input, output_size)


def _adaptive_max(dims, input, output_size, return_indices):
    out, indices = _adaptive("max", dims, input, output_size)
    return (out, indices) if return_indices else out


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """``torch.nn.functional.adaptive_max_pool1d`` on cconv; indices: int64 positions in each row."""
    return _adaptive_max(1, input, output_size, return_indices)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """``torch.nn.functional.adaptive_max_pool2d`` on cconv; indices: int64 ``h*W + w``."""
    return _adaptive_max(2, input, output_size, return_indices)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    """``torch.nn.functional.adaptive_max_pool3d`` on cconv; indices: int64 ``d*H*W + h*W + w``."""
    return _adaptive_max(3, input, output_size, return_indices)


FUNCTIONS = {f.__name__: f for f in (
    conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d,
    max_pool1d, max_pool2d, max_pool3d, avg_pool1d, avg_pool2d, avg_pool3d,
    adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d,
    adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d)}
