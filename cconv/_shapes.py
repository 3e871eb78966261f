"""Argument normalisation and shape arithmetic: the one place where every op's
arguments are checked and turned into a geometry that the backends trust.

Every backend receives C-contiguous arrays of one float dtype plus a frozen
geometry record from this module; nothing below this layer re-validates, which
is why the compiled kernels may run with bounds checking off.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
import operator
from dataclasses import dataclass

import numpy as np

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT64_MAX = np.iinfo(np.int64).max


# --------------------------------------------------------------------------
# scalar and pair arguments
# --------------------------------------------------------------------------

def _as_int(value, name):
    """Return ``value`` as a Python int; bools, floats and other objects are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    return operator.index(value)


_AXES = {1: "(l,)", 2: "(h, w)", 3: "(d, h, w)"}
_LAYOUT = {1: ("(N, C, L)", "(C, L)"), 2: ("(N, C, H, W)", "(C, H, W)"), 3: ("(N, C, D, H, W)", "(C, D, H, W)")}


def ntuple(value, n, name):
    """An int or a sequence of 1 or ``n`` ints (one value broadcasts, as in PyTorch) -> n ints."""
    if isinstance(value, (tuple, list)):
        value = tuple(value) * n if len(value) == 1 else value
        if len(value) != n:
            raise ValueError(f"{name} must be an int or a tuple of {n} ints {_AXES[n]}, "
                             f"got {len(value)} values: {value!r}")
        return tuple(_as_int(v, name) for v in value)
    if isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be an int or a tuple of {n} ints {_AXES[n]}, got an ndarray")
    return (_as_int(value, name),) * n


def positive(value, n, name):
    """``ntuple`` of ints >= 1 (kernel sizes, strides, dilations)."""
    t = ntuple(value, n, name)
    if min(t) < 1:
        raise ValueError(f"{name} must be >= 1, got {t if n > 1 else t[0]}")
    return t


def non_negative(value, n, name):
    """``ntuple`` of ints >= 0 (paddings)."""
    t = ntuple(value, n, name)
    if min(t) < 0:
        raise ValueError(f"{name} must be >= 0, got {t if n > 1 else t[0]}")
    return t


def pool_stride(stride, kernel, n):
    """A pool's stride: ``None`` or ``()`` means the kernel size, as in PyTorch."""
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel
    return positive(stride, n, "stride")


def check_bool(value, name):
    """A flag: Python or NumPy bool only (an int 0/1 is refused, as torch refuses it)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _check_element_count(shape, what):
    """Refuse shapes whose element count (or byte size) does not fit in 64 bits."""
    count = 1
    for dim in shape:
        count *= int(dim)
    if count * 8 > _INT64_MAX:
        raise ValueError(f"{what} of shape {tuple(shape)} has {count} elements, too many to allocate")
    return count


# --------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------

def _as_array(value, name):
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None


def as_float_arrays(**arrays):
    """Convert the named array-likes to ndarrays of one supported float dtype.

    Returns the arrays in the order given (``None`` passes through). Raises
    ``TypeError`` naming the dtypes for anything but all-float32 or all-float64.
    """
    values = tuple(arrays.values())
    first = values[0]
    if type(first) is np.ndarray and first.dtype in _SUPPORTED_DTYPES and all(
            a is None or (type(a) is np.ndarray and a.dtype == first.dtype) for a in values[1:]):
        return values  # the common case, checked without building messages
    converted = {name: None if a is None else _as_array(a, name) for name, a in arrays.items()}
    present = {name: a for name, a in converted.items() if a is not None}
    for name, a in present.items():
        if a.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(
                f"{name} has dtype {a.dtype}; cconv supports float32 and float64 only "
                f"(convert with {name}.astype(np.float32))"
            )
    dtypes = {a.dtype for a in present.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}: {a.dtype}" for name, a in present.items())
        raise TypeError(f"all arrays must share one float dtype, got {listing}")
    return tuple(converted.values())


def contiguous(a):
    """C-contiguous, aligned view or copy; the caller's array is never written.

    Misaligned arrays (e.g. np.frombuffer at an odd offset) are copied: the C kernels read
    through typed pointers, which must be aligned to their element size."""
    if a is None:
        return None
    a = np.ascontiguousarray(a)
    return a if a.flags.aligned else a.copy()


def batched(x, name, spatial_dims=2):
    """Accept a batched (N, C, *spatial) or unbatched (C, *spatial) array; return it batched
    and whether a batch axis was added."""
    ndim = spatial_dims + 2
    if x.ndim == ndim:
        return x, False
    if x.ndim == ndim - 1:
        return x[np.newaxis], True
    batched_layout, unbatched_layout = _LAYOUT[spatial_dims]
    raise ValueError(f"{name} must be {ndim}-d {batched_layout} or {ndim - 1}-d {unbatched_layout}, "
                     f"got {x.ndim}-d of shape {x.shape}")


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvGeometry:
    """Everything a backend needs to know about one conv2d call (all ints, validated).

    Output size: ``out_h = (in_h + pad_top + pad_bottom - dilation_h*(kernel_h-1) - 1) // stride_h + 1``.
    """

    batch: int
    in_channels: int
    in_h: int
    in_w: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dilation_h: int
    dilation_w: int
    groups: int
    out_h: int
    out_w: int

    @property
    def input_shape(self):
        return (self.batch, self.in_channels, self.in_h, self.in_w)

    @property
    def weight_shape(self):
        return (self.out_channels, self.in_channels // self.groups, self.kernel_h, self.kernel_w)

    @property
    def output_shape(self):
        return (self.batch, self.out_channels, self.out_h, self.out_w)

    @property
    def flops(self):
        """Multiply-adds times two of the forward pass."""
        return (2 * self.batch * self.out_channels * self.out_h * self.out_w
                * (self.in_channels // self.groups) * self.kernel_h * self.kernel_w)


def conv_padding(padding, kernel, dilation, stride):
    """Per-dimension (before, after) zero padding of a conv: an int, a tuple, 'valid' or 'same'."""
    dims = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * dims
        if padding == "same":
            if max(stride) != 1:
                raise ValueError(f"padding='same' is not supported for strided convolutions "
                                 f"(stride={stride if dims > 1 else stride[0]})")
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)  # PyTorch: the odd one at the end
        raise ValueError(f"padding string must be 'valid' or 'same', got {padding!r}")
    return tuple((p, p) for p in non_negative(padding, dims, "padding"))


def check_conv_size(sizes, pads, kernel, dilation, stride):
    """Output sizes of a conv over ``sizes`` with (before, after) ``pads``; a clear error if any is < 1."""
    out = [(n + a + b - d * (k - 1) - 1) // s + 1
           for n, (a, b), k, d, s in zip(sizes, pads, kernel, dilation, stride)]
    if min(out) < 1:
        raise ValueError(f"output size would be {tuple(out)}: the dilated kernel "
                         f"{tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))} is larger than "
                         f"the padded input {tuple(n + a + b for n, (a, b) in zip(sizes, pads))}")
    return out


def _conv_out_size(size, pad_before, pad_after, kernel, dilation, stride):
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


_PLAIN_SCALARS = (int, str, bool, type(None))


def _plain(value):
    """True for exact ints, bools, strs, None and tuples of exact ints: arguments that are safe
    cache keys. The cache is typed, so ``True`` never hits an entry made for ``1``; tuple items
    must be exact ints because the typed cache does not look inside tuples."""
    kind = type(value)
    return kind in _PLAIN_SCALARS or (kind is tuple and all(type(v) is int for v in value))


def _cached(validate):
    """Memoise a geometry function for plain arguments: training loops repeat the same call,
    and per-call overhead matters for small layers. Errors are never cached."""
    memo = functools.lru_cache(maxsize=512, typed=True)(validate)

    @functools.wraps(validate)
    def geometry(input_shape, *args):
        for a in args:
            if not _plain(a):
                return validate(input_shape, *args)
        return memo(tuple(input_shape), *args)
    return geometry


@_cached
def conv_geometry(input_shape, weight_shape, stride, padding, dilation, groups):
    """Validate a conv2d call and return its :class:`ConvGeometry`.

    ``input_shape`` is (N, C, H, W); ``weight_shape`` is (O, C/groups, kh, kw).
    """
    if len(weight_shape) != 4:
        raise ValueError(f"weight must be 4-d (out_channels, in_channels/groups, kh, kw), got shape {tuple(weight_shape)}")
    n, c, h, w = input_shape
    o, c_per_group, kh, kw = weight_shape
    stride = positive(stride, 2, "stride")
    dilation = positive(dilation, 2, "dilation")
    groups = _as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if min(kh, kw) < 1 or o < 1:
        raise ValueError(f"weight must have non-zero sizes, got shape {tuple(weight_shape)}")
    if c % groups:
        raise ValueError(f"in_channels={c} is not divisible by groups={groups}")
    if o % groups:
        raise ValueError(f"out_channels={o} is not divisible by groups={groups}")
    if c_per_group * groups != c:
        raise ValueError(
            f"weight of shape {tuple(weight_shape)} expects {c_per_group * groups} input channels "
            f"(weight.shape[1]={c_per_group} x groups={groups}), but input has {c} channels"
        )
    pads = conv_padding(padding, (kh, kw), dilation, stride)
    out_h, out_w = check_conv_size((h, w), pads, (kh, kw), dilation, stride)
    (top, bottom), (left, right) = pads
    geometry = ConvGeometry(n, c, h, w, o, kh, kw, stride[0], stride[1], top, bottom, left, right,
                            dilation[0], dilation[1], groups, out_h, out_w)
    _check_element_count(geometry.output_shape, "conv2d output")
    return geometry


def conv_transpose_geometry(input_shape, weight_shape, stride, padding, output_padding, dilation, groups):
    """Geometry of the conv2d whose input gradient is this conv_transpose2d, and the output shape.

    ``input_shape`` is (N, C_in, H, W); ``weight_shape`` is (C_in, C_out/groups, kh, kw).
    Output size: ``(H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``.
    Returns ``(geometry, (N, C_out, Ho, Wo))``; the geometry's input may be smaller than the
    output by the output_padding rows/columns that no window reaches (see below).
    """
    if len(weight_shape) != 4:
        raise ValueError(f"weight must be 4-d (in_channels, out_channels/groups, kh, kw), got shape {tuple(weight_shape)}")
    n, c_in, h, w = input_shape
    stride = positive(stride, 2, "stride")
    dilation = positive(dilation, 2, "dilation")
    if isinstance(padding, str):
        raise ValueError(f"conv_transpose2d takes int or pair padding, got {padding!r}")
    padding = non_negative(padding, 2, "padding")
    output_padding = non_negative(output_padding, 2, "output_padding")
    groups = _as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if weight_shape[0] != c_in:
        raise ValueError(f"weight of shape {tuple(weight_shape)} expects {weight_shape[0]} input channels, but input has {c_in}")
    for op, s, d, name in zip(output_padding, stride, dilation, "hw"):
        if op >= s and op >= d:
            raise ValueError(f"output_padding ({name}={op}) must be smaller than either stride ({s}) or dilation ({d})")
    kh, kw = weight_shape[2], weight_shape[3]
    out_h = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    out_w = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"conv_transpose2d output size would be ({out_h}, {out_w}), which is < 1")
    c_out = weight_shape[1] * groups
    _check_element_count((n, c_out, out_h, out_w), "conv_transpose2d output")
    # The transposed conv is the adjoint of a conv2d from (N, C_out, out_h, out_w) to the input's
    # shape; output_padding < stride becomes extra bottom/right rows that its windows never reach.
    geometry = conv_geometry((n, c_out, out_h, out_w), weight_shape, stride,
                             padding, dilation, groups)
    # PyTorch also allows stride <= output_padding < dilation. The last row any window reads is
    # out_h - 1 + padding - output_padding: the conv2d then pads less at the bottom, or (when
    # output_padding > padding) ends before out_h and the caller appends the unreached rows as zeros.
    changes = {}
    for op, s, p, size, axis, end in zip(output_padding, stride, padding, (out_h, out_w), "hw",
                                         ("pad_bottom", "pad_right")):
        if op >= s:
            changes[f"in_{axis}"] = size - max(0, op - p)
            changes[end] = max(0, p - op)
    if changes:
        if min(changes.get("in_h", 1), changes.get("in_w", 1)) < 1:
            raise ValueError(f"conv_transpose2d: no output pixel would receive input (padding {padding}, "
                             f"output_padding {output_padding}, stride {stride})")
        geometry = dataclasses.replace(geometry, out_h=h, out_w=w, **changes)
    if (_conv_out_size(geometry.in_h, geometry.pad_top, geometry.pad_bottom, kh, dilation[0], stride[0]),
            _conv_out_size(geometry.in_w, geometry.pad_left, geometry.pad_right, kw, dilation[1], stride[1]),
            geometry.out_h, geometry.out_w) != (h, w, h, w):  # pragma: no cover - guaranteed by the formulas
        raise AssertionError("conv_transpose2d geometry mismatch")
    return geometry, (n, c_out, out_h, out_w)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolGeometry:
    """Everything a backend needs to know about one pooling call (all ints, validated).

    Windows start at ``oh*stride_h - pad_h``; with ceil_mode the last window may hang
    over the bottom/right edge and is clipped to the input (plus padding).
    """

    batch: int
    channels: int
    in_h: int
    in_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    out_h: int
    out_w: int

    @property
    def input_shape(self):
        return (self.batch, self.channels, self.in_h, self.in_w)

    @property
    def output_shape(self):
        return (self.batch, self.channels, self.out_h, self.out_w)


def _pool_out_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's pooling_output_shape: the last window must start inside the input or left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _first_empty_window(size, out, kernel, stride, pad, dilation):
    """Index of the first window whose dilated taps all miss the input, or None.

    Only dilation can skip over the input: with contiguous taps the padding rule
    (pad <= kernel // 2) guarantees every window reaches a real pixel.
    """
    if dilation == 1 or size == 0:
        return None
    taps = (np.arange(out) * stride - pad)[:, None] + np.arange(kernel) * dilation
    hits = ((taps >= 0) & (taps < size)).any(axis=1)
    return None if hits.all() else int(np.argmin(hits))


@_cached
def pool_geometry(input_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate a pooling call and return its :class:`PoolGeometry`. ``stride=None`` means kernel_size."""
    n, c, h, w = input_shape
    kernel = positive(kernel_size, 2, "kernel_size")
    stride = pool_stride(stride, kernel, 2)
    padding = non_negative(padding, 2, "padding")
    dilation = positive(dilation, 2, "dilation")
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    for p, k, name in zip(padding, kernel, "hw"):
        if p > k // 2:
            raise ValueError(f"padding ({name}={p}) must be at most half of kernel_size ({name}={k})")
    out_h = _pool_out_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    out_w = _pool_out_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"pooling output size would be ({out_h}, {out_w}) for input ({h}, {w}), kernel {kernel}, "
            f"stride {stride}, padding {padding}, dilation {dilation}: too small"
        )
    for size, out, k, st, p, d, name in zip((h, w), (out_h, out_w), kernel, stride, padding, dilation, "hw"):
        empty = _first_empty_window(size, out, k, st, p, d)
        if empty is not None:
            raise ValueError(
                f"pooling window {empty} along {name} covers no input pixel (kernel {k}, stride {st}, "
                f"padding {p}, dilation {d}, input size {size}); PyTorch would return -inf there "
                "with an index outside the input"
            )
    geometry = PoolGeometry(n, c, h, w, kernel[0], kernel[1], stride[0], stride[1],
                            padding[0], padding[1], dilation[0], dilation[1], out_h, out_w)
    _check_element_count(geometry.output_shape, "pooling output")
    return geometry


def input_shape(input_shape, grad_output_ndim, spatial_dims=2):
    """Validate a backward op's ``input_shape`` (as many dims as grad_output, batched or not);
    return it batched, as ``spatial_dims + 2`` ints."""
    if not isinstance(input_shape, (tuple, list)) and not (
            isinstance(input_shape, np.ndarray) and input_shape.ndim == 1):
        raise TypeError(f"input_shape must be a tuple of ints, got {type(input_shape).__name__}")
    shape = tuple(_as_int(s, "input_shape") for s in input_shape)
    if len(shape) != grad_output_ndim or len(shape) not in (spatial_dims + 1, spatial_dims + 2):
        raise ValueError(f"input_shape {shape} must have as many dims as grad_output ({grad_output_ndim}), "
                         f"{spatial_dims + 1} or {spatial_dims + 2}")
    if min(shape) < 0:
        raise ValueError(f"input_shape must not have negative sizes, got {shape}")
    _check_element_count(shape, "input_shape")
    return shape if len(shape) == spatial_dims + 2 else (1,) + shape


def check_output_shape(array, expected, name):
    """Backward ops: the gradient must have exactly the forward output's shape."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(array.shape)}, expected {tuple(expected)} for these arguments")


def check_planes(grad_shape, input_shape):
    """A pooling gradient has the (N, C) of the input it flows back to."""
    if tuple(grad_shape[:2]) != tuple(input_shape[:2]):
        raise ValueError(f"grad_output of shape {tuple(grad_shape)} does not match input_shape "
                         f"{tuple(input_shape)} in (N, C)")


def check_pool_indices(indices, output_shape, unbatched, input_shape, check_range=True):
    """A max pool's backward: indices come from users, so check dtype, shape and range (the
    range unless ``check_range`` is false: a backend whose scatter checks it).

    Returns the indices with a batch axis when the call is unbatched.
    """
    if not isinstance(indices, np.ndarray) or indices.dtype != np.int64:
        dtype = getattr(indices, "dtype", type(indices).__name__)
        raise TypeError(f"indices must be an int64 ndarray (as the forward returned them), got {dtype}")
    if unbatched and indices.ndim == len(output_shape) - 1:
        indices = indices[np.newaxis]
    check_output_shape(indices, output_shape, "indices")
    if check_range:
        check_index_range(indices, input_shape)
    return indices


_SPATIAL_NAME = {1: "row", 2: "plane", 3: "volume"}


def check_index_range(indices, input_shape):
    """int64 max-pool indices must be flat positions (``h*W + w`` in 2-d) in each (n, c)
    row/plane/volume of ``input_shape``."""
    spatial = tuple(input_shape[2:])
    size = int(np.prod(spatial))
    if indices.size <= 32:  # a NumPy reduction costs microseconds of set-up; a short list is cheaper
        flat = indices.ravel().tolist()
        lo, hi = (min(flat), max(flat)) if flat else (0, -1)
    elif int(indices.view(np.uint64).max()) < size:  # one pass: a negative index wraps past 2**63
        return
    else:
        lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= size:
        raise ValueError(
            f"indices must lie in [0, {size}) (flat positions in each {'x'.join(map(str, spatial))} "
            f"input {_SPATIAL_NAME.get(len(spatial), 'volume')}), found {lo if lo < 0 else hi}"
        )


# --------------------------------------------------------------------------
# op options
# --------------------------------------------------------------------------

def output_mask(mask):
    """A backward op's ``output_mask``: three bools (input, weight, bias)."""
    if not isinstance(mask, (tuple, list)) or len(mask) != 3:
        raise ValueError(f"output_mask must be a tuple of three bools (input, weight, bias), got {mask!r}")
    if not all(isinstance(m, (bool, np.bool_)) for m in mask):
        raise TypeError(f"output_mask must hold bools, got {mask!r}")
    return tuple(bool(m) for m in mask)


def check_bias(bias, channels):
    """A bias must hold one value per output channel."""
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},) (one value per output channel), got {bias.shape}")


def avg_pool_options(count_include_pad, divisor_override):
    """An average pool's ``(count_include_pad, divisor_override)``: a bool and None or a nonzero int."""
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = _as_int(divisor_override, "divisor_override")
        if divisor_override == 0:
            raise ValueError("divisor_override must not be zero")
    return count_include_pad, divisor_override


def avg_pool_geometry(x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """avg_pool2d's geometry and options: ``(PoolGeometry, count_include_pad, divisor_override)``."""
    count_include_pad, divisor_override = avg_pool_options(count_include_pad, divisor_override)
    g = pool_geometry(x_shape, kernel_size, stride, padding, 1, ceil_mode)
    return g, count_include_pad, divisor_override


# --------------------------------------------------------------------------
# cconv.nn layers
# --------------------------------------------------------------------------

def check_generator(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


def float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def layer_groups(in_channels, out_channels, groups):
    """A conv layer's ``groups``, which must divide both channel counts."""
    groups = _as_int(groups, "groups")
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} "
                         f"and out_channels={out_channels}")
    return groups


def check_dtype(x, dtype, layer):
    if x.dtype != dtype:
        raise TypeError(f"{layer} expects {dtype} input, got {x.dtype}")


def check_labels(logits, labels):
    """Class indices (N,) for logits (N, K)."""
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers (class indices), got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    return labels


def check_sgd(lr, momentum, weight_decay):
    if lr <= 0 or momentum < 0 or weight_decay < 0:
        raise ValueError(f"need lr > 0, momentum >= 0, weight_decay >= 0; got {lr}, {momentum}, {weight_decay}")


# --------------------------------------------------------------------------
# 1-d and 3-d ops (cconv._api_nd runs them on the 2-d ones)
# --------------------------------------------------------------------------

def check_weight_ndim(w, dims, layout):
    """A weight of a ``dims``-d op: ``dims + 2`` axes laid out as ``layout``."""
    if w.ndim != dims + 2:
        raise ValueError(f"weight must be {dims + 2}-d {layout}, got shape {w.shape}")


def conv1d_args(x_shape, w_shape, stride, padding, dilation):
    """The 2-d stride/padding/dilation of a conv1d (validated here, so errors speak of 1-d)."""
    stride = positive(stride, 1, "stride")
    dilation = positive(dilation, 1, "dilation")
    pads = conv_padding(padding, w_shape[2:], dilation, stride)
    if w_shape[2] >= 1:
        check_conv_size(x_shape[2:], pads, w_shape[2:], dilation, stride)
    pad2d = padding if isinstance(padding, str) else (0, pads[0][0])
    return dict(stride=(1, stride[0]), padding=pad2d, dilation=(1, dilation[0]))


def _conv1d_output_length(length, kernel, args):
    """Output length of a conv1d from its validated 2-d arguments."""
    (_, s), (_, d) = args["stride"], args["dilation"]
    if isinstance(args["padding"], str):
        return length if args["padding"] == "same" else (length - d * (kernel - 1) - 1) // s + 1
    return (length + 2 * args["padding"][1] - d * (kernel - 1) - 1) // s + 1


def check_grad_length(gy, n, channels, length):
    """A 1-d backward's grad_output must be (N, channels, length): say so in 1-d terms."""
    if gy.ndim == 3 and gy.shape != (n, channels, length):
        raise ValueError(f"grad_output has shape {gy.shape}, expected {(n, channels, length)} for these arguments")


def conv_transpose1d_args(stride, padding, output_padding, dilation):
    """The 2-d stride/padding/output_padding/dilation of a conv_transpose1d, validated in 1-d terms."""
    if isinstance(padding, str):
        raise ValueError(f"conv_transpose1d takes int padding, got {padding!r}")
    return dict(stride=(1, positive(stride, 1, "stride")[0]),
                padding=(0, non_negative(padding, 1, "padding")[0]),
                output_padding=(0, non_negative(output_padding, 1, "output_padding")[0]),
                dilation=(1, positive(dilation, 1, "dilation")[0]))


def pool1d_args(kernel_size, stride, padding, dilation=1):
    """The 2-d kernel_size/stride/padding/dilation of a 1-d pool, validated in 1-d terms."""
    kernel = positive(kernel_size, 1, "kernel_size")
    stride = pool_stride(stride, kernel, 1)
    padding = non_negative(padding, 1, "padding")
    dilation = positive(dilation, 1, "dilation")
    if padding[0] > kernel[0] // 2:
        raise ValueError(f"padding ({padding[0]}) must be at most half of kernel_size ({kernel[0]})")
    return dict(kernel_size=(1, kernel[0]), stride=(1, stride[0]), padding=(0, padding[0]),
                dilation=(1, dilation[0]))


def conv3d_geometry(x_shape, w_shape, stride, padding, dilation, groups):
    """Validate a conv3d call on (N, C, D, H, W) and (O, C/groups, kd, kh, kw).

    Returns ``(g, stride, dilation, pads, out_d)``: ``g`` the :class:`ConvGeometry` of one
    (h, w) slice (channels and groups are checked there), the per-dimension triples, and the
    output depth."""
    if len(w_shape) != 5:
        raise ValueError(f"weight must be 5-d (out_channels, in_channels/groups, kd, kh, kw), got shape {w_shape}")
    stride = positive(stride, 3, "stride")
    dilation = positive(dilation, 3, "dilation")
    n, c, d, h, w = x_shape
    o, cg, kd, kh, kw = w_shape
    pads = conv_padding(padding, (kd, kh, kw), dilation, stride)
    pad_hw = padding if isinstance(padding, str) else (pads[1][0], pads[2][0])
    g = conv_geometry((n, c, h, w), (o, cg, kh, kw), stride[1:], pad_hw, dilation[1:], groups)
    if kd < 1:
        raise ValueError(f"weight must have non-zero sizes, got shape {w_shape}")
    (out_d,) = check_conv_size((d,), pads[:1], (kd,), dilation[:1], stride[:1])
    _check_element_count((n, o, out_d, g.out_h, g.out_w), "conv3d output")
    return g, stride, dilation, pads, out_d


def conv_transpose3d_geometry(x_shape, w_shape, stride, padding, output_padding, groups, dilation):
    """Validate a conv_transpose3d call on (N, C_in, D, H, W) and (C_in, C_out/groups, kd, kh, kw).

    Returns ``(g, output_shape, stride, padding, output_padding, dilation)``: ``g`` the
    geometry of one (h, w) slice's transposed conv, the rest triples."""
    if len(w_shape) != 5:
        raise ValueError(f"weight must be 5-d (in_channels, out_channels/groups, kd, kh, kw), got shape {w_shape}")
    if isinstance(padding, str):
        raise ValueError(f"conv_transpose3d takes int or triple padding, got {padding!r}")
    stride = positive(stride, 3, "stride")
    dilation = positive(dilation, 3, "dilation")
    padding = non_negative(padding, 3, "padding")
    output_padding = non_negative(output_padding, 3, "output_padding")
    n, c, d, h, w = x_shape
    ci, cog, kd, kh, kw = w_shape
    g, (_, c_out, ho, wo) = conv_transpose_geometry(
        (n, c, h, w), (ci, cog, kh, kw), stride[1:], padding[1:], output_padding[1:], dilation[1:], groups)
    if kd < 1:
        raise ValueError(f"weight must have non-zero sizes, got shape {w_shape}")
    if output_padding[0] >= stride[0] and output_padding[0] >= dilation[0]:
        raise ValueError(f"output_padding (d={output_padding[0]}) must be smaller than either stride "
                         f"({stride[0]}) or dilation ({dilation[0]})")
    out_d = (d - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kd - 1) + output_padding[0] + 1
    if out_d < 1:
        raise ValueError(f"conv_transpose3d output depth would be {out_d}, which is < 1")
    _check_element_count((n, c_out, out_d, ho, wo), "conv_transpose3d output")
    return g, (n, c_out, out_d, ho, wo), stride, padding, output_padding, dilation


def pool3d_geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate a 3-d pool on (N, C, D, H, W).

    Returns ``(g, kernel, stride, padding, dilation, ceil_mode, out_d)``: ``g`` the
    :class:`PoolGeometry` of the per-slice 2-d pool on the (N, C*D, H, W) view."""
    kernel = positive(kernel_size, 3, "kernel_size")
    stride = pool_stride(stride, kernel, 3)
    padding = non_negative(padding, 3, "padding")
    dilation = positive(dilation, 3, "dilation")
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    n, c, d, h, w = x_shape
    g = pool_geometry((n, c * d, h, w), kernel[1:], stride[1:], padding[1:], dilation[1:], ceil_mode)
    if padding[0] > kernel[0] // 2:
        raise ValueError(f"padding (d={padding[0]}) must be at most half of kernel_size (d={kernel[0]})")
    out_d = _pool_out_size(d, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    if out_d < 1:
        raise ValueError(f"pooling output depth would be {out_d} for input depth {d}, kernel {kernel[0]}, "
                         f"stride {stride[0]}, padding {padding[0]}, dilation {dilation[0]}: too small")
    empty = _first_empty_window(d, out_d, kernel[0], stride[0], padding[0], dilation[0])
    if empty is not None:
        raise ValueError(f"pooling window {empty} along d covers no input slice (kernel {kernel[0]}, stride "
                         f"{stride[0]}, padding {padding[0]}, dilation {dilation[0]}, input depth {d})")
    return g, kernel, stride, padding, dilation, ceil_mode, out_d


def adaptive_output_size(output_size, in_sizes):
    """An adaptive pool's ``output_size`` (an int, or a tuple of ints and None: None keeps that
    input size) over the input sizes ``in_sizes``, as a tuple of ints."""
    dims = len(in_sizes)
    if isinstance(output_size, (tuple, list)):
        if len(output_size) == 1:
            output_size = tuple(output_size) * dims
        if len(output_size) != dims:
            raise ValueError(f"output_size must be an int or a tuple of {dims} ints (or None), "
                             f"got {len(output_size)} values: {output_size!r}")
        sizes = tuple(n if o is None else _as_int(o, "output_size") for o, n in zip(output_size, in_sizes))
    elif isinstance(output_size, np.ndarray):
        raise TypeError(f"output_size must be an int or a tuple of {dims} ints, got an ndarray")
    else:
        sizes = (_as_int(output_size, "output_size"),) * dims
    if min(sizes) < 1:
        raise ValueError(f"output_size must be >= 1, got {sizes}")
    if min(in_sizes) < 1:
        raise ValueError(f"adaptive pooling needs non-empty spatial dims, got input sizes {tuple(in_sizes)}")
    _check_element_count(sizes, "adaptive pooling output")
    return sizes
