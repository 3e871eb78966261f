"""Adaptive average and max pooling over 1, 2 or 3 spatial dims, like ``torch.nn.functional``'s.

Output bin ``i`` of a dimension of size L pooled to ``o`` covers ``[floor(i*L/o), ceil((i+1)*L/o))``.
When every pooled dimension divides evenly, the bins are the windows of an ordinary pool
(kernel = stride = L/o) and the call runs the compiled avg/max pool (global average pooling,
output 1 everywhere, is a single matrix-vector product instead). Otherwise the compiled backend
scans each output bin in C (``adaptive_*_pool`` of :mod:`cconv._compiled`, on the input viewed
as (N, C, D, H, W) with size-1 dims in front), and the NumPy backend runs the reference below:

* average: each dimension in turn is reduced to its bins' means (the mean over a box is
  separable), summing each bin's own elements only, so an Inf or NaN stays in the bins that
  hold it, as in PyTorch; its backward spreads each bin's share back over the bin;
* max: each dimension is reduced in turn, last first, scanning the taps of every bin in order
  with PyTorch's rule (greater, or NaN, replaces), carrying flat indices. Reducing w, then h,
  then d keeps the first maximum in (d, h, w) order and the last NaN, as one row-major scan does.

Backward of max routes each gradient to its flat index, like the max pools.
"""
from __future__ import annotations

import numpy as np

from . import _api
from . import _api_nd
from . import _backends
from . import _shapes

__all__ = [
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "adaptive_avg_pool1d_backward", "adaptive_avg_pool2d_backward", "adaptive_avg_pool3d_backward",
    "adaptive_max_pool1d_backward", "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward",
]


def _bins(size, out):
    i = np.arange(out)
    return i * size // out, -(-(i + 1) * size // out)


def _uniform(in_sizes, out_sizes):
    return all(n % o == 0 for n, o in zip(in_sizes, out_sizes))


def plan_pool(in_sizes, out_sizes):
    """The ordinary pool an adaptive pool runs when its bins are uniform, else None:
    ``{"kernel_size": ..., "stride": ...}`` (per dimension)."""
    if not _uniform(in_sizes, out_sizes):
        return None
    kernel = tuple(n // o for n, o in zip(in_sizes, out_sizes))
    return {"kernel_size": kernel, "stride": kernel}


_AVG = {1: _api_nd.avg_pool1d, 2: _api.avg_pool2d, 3: _api_nd.avg_pool3d}
_AVG_BACKWARD = {1: _api_nd.avg_pool1d_backward, 2: _api.avg_pool2d_backward, 3: _api_nd.avg_pool3d_backward}
_MAX = {1: _api_nd.max_pool1d, 2: _api.max_pool2d, 3: _api_nd.max_pool3d}


def _prepare(input, dims):
    (x,) = _shapes.as_float_arrays(input=input)
    return _shapes.batched(x, "input", dims)


def _on_axis(ndim, axis, index):
    """An indexing tuple that applies ``index`` to ``axis`` only."""
    return (slice(None),) * axis + (index,) + (slice(None),) * (ndim - axis - 1)


def _counts(starts, ends, ndim, axis, dtype):
    """Each bin's length, shaped to broadcast along ``axis``."""
    shape = [1] * ndim
    shape[axis] = len(starts)
    return (ends - starts).astype(dtype).reshape(shape)


def _bin_means(a, axis, out):
    """``a`` with ``axis`` reduced to the means of its ``out`` adaptive bins. Each sum covers its
    bin's elements only (not a product with an averaging matrix, whose zeros would turn an Inf
    elsewhere into NaN). Bins may overlap: reduceat over the (start, end) pairs keeps every other sum."""
    starts, ends = _bins(a.shape[axis], out)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)  # so that an end equal to the size is still a valid reduceat index
    sums = np.add.reduceat(np.pad(a, pad), np.stack([starts, ends], axis=1).ravel(), axis=axis)
    return sums[_on_axis(a.ndim, axis, slice(0, None, 2))] / _counts(starts, ends, a.ndim, axis, a.dtype)


def _bin_spread(g, axis, size):
    """The adjoint of :func:`_bin_means`: ``axis`` of ``g`` (bins) back to ``size`` elements, each
    getting the share of every bin that holds it."""
    starts, ends = _bins(size, g.shape[axis])
    share = g / _counts(starts, ends, g.ndim, axis, g.dtype)
    shape = list(g.shape)
    shape[axis] = size
    result = np.zeros(shape, g.dtype)
    for i, (start, end) in enumerate(zip(starts, ends)):
        result[_on_axis(g.ndim, axis, slice(start, end))] += share[_on_axis(g.ndim, axis, slice(i, i + 1))]
    return result


def _as_volumes(a, dims):
    """(N, C, *spatial) -> the C-contiguous (N, C, D, H, W) view (size-1 dims in front)."""
    a = _shapes.contiguous(a)
    return a.reshape(a.shape[:2] + (1,) * (3 - dims) + a.shape[2:])


def _volume_sizes(sizes):
    return (1,) * (3 - len(sizes)) + tuple(sizes)


def _adaptive_avg(input, output_size, dims, backend):
    x, unbatched = _prepare(input, dims)
    out = _shapes.adaptive_output_size(output_size, x.shape[2:])
    impl = _backends.resolve(backend)
    if all(o == 1 for o in out):  # global average: one matrix-vector product (BLAS)
        volume = int(np.prod(x.shape[2:]))
        flat = _shapes.contiguous(x).reshape(x.shape[0] * x.shape[1], volume)
        y = (flat @ np.full(volume, 1 / volume, x.dtype)).reshape(x.shape[:2] + out)
        return _api_nd._unbatch(y, unbatched)
    pool = plan_pool(x.shape[2:], out)
    if pool is not None:
        return _api_nd._unbatch(_AVG[dims](x, backend=backend, **pool), unbatched)
    if hasattr(impl, "adaptive_avg_pool"):
        y = impl.adaptive_avg_pool(_as_volumes(x, dims), _volume_sizes(out))
        return _api_nd._unbatch(y.reshape(x.shape[:2] + out), unbatched)
    y = x
    for axis in range(2, 2 + dims):
        y = _bin_means(y, axis, out[axis - 2])
    return _api_nd._unbatch(np.ascontiguousarray(y), unbatched)


def _adaptive_avg_backward(grad_output, input_shape, dims, backend):
    (gy,) = _shapes.as_float_arrays(grad_output=grad_output)
    shape = _shapes.input_shape(input_shape, gy.ndim, dims)
    gy, unbatched = _shapes.batched(gy, "grad_output", dims)
    out = _shapes.adaptive_output_size(gy.shape[2:], shape[2:])
    _shapes.check_output_shape(gy, shape[:2] + out, "grad_output")
    impl = _backends.resolve(backend)
    if all(o == 1 for o in out):  # global average: every input gets its plane's share
        share = gy / gy.dtype.type(np.prod(shape[2:]))
        return _api_nd._unbatch(np.ascontiguousarray(np.broadcast_to(share, shape)), unbatched)
    pool = plan_pool(shape[2:], out)
    if pool is not None:
        return _api_nd._unbatch(_AVG_BACKWARD[dims](gy, shape, backend=backend, **pool), unbatched)
    if hasattr(impl, "adaptive_avg_pool_backward"):
        grad = impl.adaptive_avg_pool_backward(_as_volumes(gy, dims), shape[:2] + _volume_sizes(shape[2:]))
        return _api_nd._unbatch(grad.reshape(shape), unbatched)
    g = gy
    for axis in range(2, 2 + dims):
        g = _bin_spread(g, axis, shape[axis])
    return _api_nd._unbatch(np.ascontiguousarray(g), unbatched)


def _reduce_max(values, index, axis, out, volume_step):
    """Reduce ``axis`` of ``values`` to ``out`` bins, scanning each bin's taps in order."""
    size = values.shape[axis]
    starts, ends = _bins(size, out)
    shape = [1] * values.ndim
    shape[axis] = out
    best = np.take(values, starts, axis)
    where = np.take(index, starts, axis) + (starts * volume_step).reshape(shape)
    for k in range(1, int((ends - starts).max())):
        pos = starts + k
        valid = (pos < ends).reshape(shape)
        pos = np.minimum(pos, size - 1)
        v = np.take(values, pos, axis)
        take = valid & ((v > best) | np.isnan(v))
        np.copyto(best, v, where=take)
        np.copyto(where, np.take(index, pos, axis) + (pos * volume_step).reshape(shape), where=take)
    return best, where


def _adaptive_max(input, output_size, return_indices, dims, backend):
    x, unbatched = _prepare(input, dims)
    return_indices = _shapes.check_bool(return_indices, "return_indices")
    out = _shapes.adaptive_output_size(output_size, x.shape[2:])
    impl = _backends.resolve(backend)
    pool = plan_pool(x.shape[2:], out)
    if pool is not None:
        y, idx = _MAX[dims](x, return_indices=True, backend=backend, **pool)
    elif hasattr(impl, "adaptive_max_pool"):
        y, idx = impl.adaptive_max_pool(_as_volumes(x, dims), _volume_sizes(out))
        y, idx = y.reshape(x.shape[:2] + out), idx.reshape(x.shape[:2] + out)
    else:
        y, idx = x, np.zeros((1,) * x.ndim, np.int64)
        step = 1
        for axis in range(1 + dims, 1, -1):  # last spatial axis first
            y, idx = _reduce_max(y, np.broadcast_to(idx, y.shape), axis, out[axis - 2], step)
            step *= x.shape[axis]
        y, idx = np.ascontiguousarray(y), np.ascontiguousarray(idx)
    return _api_nd._unbatch((y, idx) if return_indices else y, unbatched)


def _adaptive_max_backward(grad_output, indices, input_shape, dims, backend):
    return _api_nd._max_pool_flat_backward(grad_output, indices, input_shape, dims, backend)


def adaptive_avg_pool1d(input, output_size, *, backend=None):
    """Like ``torch.nn.functional.adaptive_avg_pool1d``: (N, C, L) -> (N, C, output_size)."""
    return _adaptive_avg(input, output_size, 1, backend)


def adaptive_avg_pool2d(input, output_size, *, backend=None):
    """Like ``torch.nn.functional.adaptive_avg_pool2d``: (N, C, H, W) -> (N, C, oh, ow);
    ``output_size`` an int or (oh, ow), None keeping that size. ``adaptive_avg_pool2d(x, 1)``
    is global average pooling."""
    return _adaptive_avg(input, output_size, 2, backend)


def adaptive_avg_pool3d(input, output_size, *, backend=None):
    """Like ``torch.nn.functional.adaptive_avg_pool3d``: (N, C, D, H, W) -> (N, C, od, oh, ow)."""
    return _adaptive_avg(input, output_size, 3, backend)


def adaptive_avg_pool1d_backward(grad_output, input_shape, *, backend=None):
    """Gradient of :func:`adaptive_avg_pool1d`: grad_output (N, C, o) -> grad_input of ``input_shape``."""
    return _adaptive_avg_backward(grad_output, input_shape, 1, backend)


def adaptive_avg_pool2d_backward(grad_output, input_shape, *, backend=None):
    """Gradient of :func:`adaptive_avg_pool2d`: grad_output (N, C, oh, ow) -> grad_input of ``input_shape``."""
    return _adaptive_avg_backward(grad_output, input_shape, 2, backend)


def adaptive_avg_pool3d_backward(grad_output, input_shape, *, backend=None):
    """Gradient of :func:`adaptive_avg_pool3d`."""
    return _adaptive_avg_backward(grad_output, input_shape, 3, backend)


def adaptive_max_pool1d(input, output_size, return_indices=False, *, backend=None):
    """Like ``torch.nn.functional.adaptive_max_pool1d``; indices: int64 positions in each (n, c) row."""
    return _adaptive_max(input, output_size, return_indices, 1, backend)


def adaptive_max_pool2d(input, output_size, return_indices=False, *, backend=None):
    """Like ``torch.nn.functional.adaptive_max_pool2d``; indices: int64 ``h*W + w`` in each (n, c) plane."""
    return _adaptive_max(input, output_size, return_indices, 2, backend)


def adaptive_max_pool3d(input, output_size, return_indices=False, *, backend=None):
    """Like ``torch.nn.functional.adaptive_max_pool3d``; indices: int64 ``d*H*W + h*W + w`` per volume."""
    return _adaptive_max(input, output_size, return_indices, 3, backend)


def adaptive_max_pool1d_backward(grad_output, indices, input_shape, *, backend=None):
    """Gradient of :func:`adaptive_max_pool1d`."""
    return _adaptive_max_backward(grad_output, indices, input_shape, 1, backend)


def adaptive_max_pool2d_backward(grad_output, indices, input_shape, *, backend=None):
    """Gradient of :func:`adaptive_max_pool2d`."""
    return _adaptive_max_backward(grad_output, indices, input_shape, 2, backend)


def adaptive_max_pool3d_backward(grad_output, indices, input_shape, *, backend=None):
    """Gradient of :func:`adaptive_max_pool3d`."""
    return _adaptive_max_backward(grad_output, indices, input_shape, 3, backend)
