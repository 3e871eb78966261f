"""Compiled max/avg pooling kernels: the pooling half of the ``"cython"`` backend.

Every function has the signature of its twin in :mod:`cconv._reference` and receives
C-contiguous float32/float64 arrays plus a :class:`cconv._shapes.PoolGeometry` that the
Python layer has already validated (which is why bounds checking is off). Work is split
over the N*C independent (n, c) planes with OpenMP; each plane is computed by one thread
in a fixed order, so results are bit-identical from run to run and for any thread count.

Semantics follow PyTorch's CPU kernels exactly: a window starts at ``o*stride - pad``;
taps that fall in the padding are skipped (max) or count as zeros (avg); with ceil_mode
the last window is clipped to the input.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.string cimport memset

import numpy as np

from cconv._threads import get_num_threads


cdef struct PoolShape:
    # The geometry as plain C integers, read once per call from the PoolGeometry record.
    Py_ssize_t planes, in_h, in_w, out_h, out_w
    Py_ssize_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w


cdef PoolShape _pool_shape(g) except *:
    cdef PoolShape s
    s.planes = g.batch * g.channels
    s.in_h, s.in_w, s.out_h, s.out_w = g.in_h, g.in_w, g.out_h, g.out_w
    s.kernel_h, s.kernel_w = g.kernel_h, g.kernel_w
    s.stride_h, s.stride_w = g.stride_h, g.stride_w
    s.pad_h, s.pad_w = g.pad_h, g.pad_w
    s.dilation_h, s.dilation_w = g.dilation_h, g.dilation_w
    return s


cdef inline Py_ssize_t _first_tap(Py_ssize_t start, Py_ssize_t dilation) noexcept nogil:
    """First tap position >= 0 of a window starting at ``start`` (taps every ``dilation``)."""
    if start < 0:
        start += ((-start + dilation - 1) // dilation) * dilation
    return start


cdef inline Py_ssize_t _tap_count(Py_ssize_t first, Py_ssize_t end, Py_ssize_t dilation) noexcept nogil:
    """Number of taps first, first + dilation, ... below ``end``."""
    if first >= end:
        return 0
    return (end - first + dilation - 1) // dilation


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------

cdef void _max_pool_plane(const floating* x, floating* out, int64_t* indices,
                          const PoolShape* s) noexcept nogil:
    """One (H, W) plane -> its (Ho, Wo) maxima and flat argmax indices ``h*W + w``.

    PyTorch's rule: start from -inf and the first in-bounds tap, take a tap when it is
    greater or NaN; so ties keep the first maximum and the last NaN wins.
    """
    cdef Py_ssize_t W = s.in_w
    cdef Py_ssize_t oh, ow, i, j, h0, w0, nh, nw, pos, best
    cdef floating v, m
    for oh in range(s.out_h):
        h0 = _first_tap(oh * s.stride_h - s.pad_h, s.dilation_h)
        nh = _tap_count(h0, oh * s.stride_h - s.pad_h + (s.kernel_h - 1) * s.dilation_h + 1,
                        s.dilation_h)
        nh = min(nh, _tap_count(h0, s.in_h, s.dilation_h))
        for ow in range(s.out_w):
            w0 = _first_tap(ow * s.stride_w - s.pad_w, s.dilation_w)
            nw = _tap_count(w0, ow * s.stride_w - s.pad_w + (s.kernel_w - 1) * s.dilation_w + 1,
                            s.dilation_w)
            nw = min(nw, _tap_count(w0, W, s.dilation_w))
            m = -INFINITY
            best = h0 * W + w0 if nh > 0 and nw > 0 else -1
            for i in range(nh):
                pos = (h0 + i * s.dilation_h) * W + w0
                for j in range(nw):
                    v = x[pos]
                    if v > m or v != v:
                        m = v
                        best = pos
                    pos += s.dilation_w
            out[oh * s.out_w + ow] = m
            indices[oh * s.out_w + ow] = best


cdef void _max_pool(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                    int64_t[:, :, :, ::1] indices, const PoolShape* s, int threads) noexcept:
    cdef Py_ssize_t p, n, c, channels = x.shape[1]
    with nogil:
        for p in prange(s.planes, num_threads=threads, schedule="static"):
            n = p // channels
            c = p % channels
            _max_pool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &indices[n, c, 0, 0], s)


def max_pool2d(x, g):
    """x (N, C, H, W) -> (out (N, C, Ho, Wo), int64 indices (N, C, Ho, Wo))."""
    cdef PoolShape s = _pool_shape(g)
    shape = (g.batch, g.channels, s.out_h, s.out_w)
    out = np.empty(shape, dtype=x.dtype)
    indices = np.empty(shape, dtype=np.int64)
    if s.planes == 0:
        return out, indices
    threads = get_num_threads()
    if x.dtype == np.float32:
        _max_pool[float](x, out, indices, &s, threads)
    else:
        _max_pool[double](x, out, indices, &s, threads)
    return out, indices


cdef void _max_unpool_plane(const floating* gy, const int64_t* indices, floating* grad,
                            Py_ssize_t out_size, Py_ssize_t in_size) noexcept nogil:
    """Zero one input plane, then add each output gradient at its argmax (in order)."""
    cdef Py_ssize_t i
    memset(grad, 0, in_size * sizeof(floating))
    for i in range(out_size):
        grad[indices[i]] += gy[i]


cdef void _max_pool_backward(const floating[:, :, :, ::1] gy, const int64_t[:, :, :, ::1] indices,
                             floating[:, :, :, ::1] grad, int threads) noexcept:
    cdef Py_ssize_t p, n, c, channels = gy.shape[1]
    cdef Py_ssize_t planes = gy.shape[0] * channels
    cdef Py_ssize_t out_size = gy.shape[2] * gy.shape[3], in_size = grad.shape[2] * grad.shape[3]
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            n = p // channels
            c = p % channels
            _max_unpool_plane(&gy[n, c, 0, 0], &indices[n, c, 0, 0], &grad[n, c, 0, 0],
                              out_size, in_size)


def max_pool2d_backward(gy, indices, input_shape):
    """gy, indices (N, C, Ho, Wo) -> grad_input of ``input_shape`` (N, C, H, W).

    The indices were range-checked by the caller; planes are independent, so the
    scatter-add runs in parallel over planes without races.
    """
    grad = np.empty(tuple(input_shape), dtype=gy.dtype)
    if grad.size == 0:
        return grad
    if gy.size == 0:  # no windows (Ho or Wo is 0): nothing flows back
        grad.fill(0)
        return grad
    threads = get_num_threads()
    if gy.dtype == np.float32:
        _max_pool_backward[float](gy, indices, grad, threads)
    else:
        _max_pool_backward[double](gy, indices, grad, threads)
    return grad


# --------------------------------------------------------------------------
# average pooling (no dilation: the API never passes one)
# --------------------------------------------------------------------------

cdef struct AvgWindow:
    # A window clipped to the input, and its divisor (PyTorch's rule).
    Py_ssize_t h0, h1, w0, w1
    double divisor


cdef inline AvgWindow _avg_window(const PoolShape* s, Py_ssize_t oh, Py_ssize_t ow,
                                  bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    """Padding counts in the divisor when asked; the ceil_mode overhang past it never does."""
    cdef AvgWindow win
    cdef Py_ssize_t h0 = oh * s.stride_h - s.pad_h, w0 = ow * s.stride_w - s.pad_w
    cdef Py_ssize_t h1 = min(h0 + s.kernel_h, s.in_h + s.pad_h)
    cdef Py_ssize_t w1 = min(w0 + s.kernel_w, s.in_w + s.pad_w)
    cdef Py_ssize_t padded_area = (h1 - h0) * (w1 - w0)
    win.h0 = max(h0, 0)
    win.w0 = max(w0, 0)
    win.h1 = min(h1, s.in_h)
    win.w1 = min(w1, s.in_w)
    if divisor_override != 0:
        win.divisor = <double>divisor_override
    elif count_include_pad:
        win.divisor = <double>padded_area
    else:
        win.divisor = <double>((win.h1 - win.h0) * (win.w1 - win.w0))
    return win


cdef void _avg_pool_plane(const floating* x, floating* out, const PoolShape* s,
                          bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w
    cdef floating total
    cdef AvgWindow win
    for oh in range(s.out_h):
        for ow in range(s.out_w):
            win = _avg_window(s, oh, ow, count_include_pad, divisor_override)
            if win.h0 >= win.h1 or win.w0 >= win.w1:  # a window entirely in padding
                out[oh * s.out_w + ow] = 0
                continue
            total = 0
            for h in range(win.h0, win.h1):
                for w in range(win.w0, win.w1):
                    total = total + x[h * s.in_w + w]
            out[oh * s.out_w + ow] = total / <floating>win.divisor


cdef void _avg_pool(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, const PoolShape* s,
                    bint count_include_pad, Py_ssize_t divisor_override, int threads) noexcept:
    cdef Py_ssize_t p, n, c, channels = x.shape[1]
    with nogil:
        for p in prange(s.planes, num_threads=threads, schedule="static"):
            n = p // channels
            c = p % channels
            _avg_pool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], s, count_include_pad, divisor_override)


def avg_pool2d(x, g, count_include_pad, divisor_override):
    """x (N, C, H, W) -> window means (N, C, Ho, Wo); the divisor follows PyTorch."""
    cdef PoolShape s = _pool_shape(g)
    out = np.empty((g.batch, g.channels, s.out_h, s.out_w), dtype=x.dtype)
    if s.planes == 0:
        return out
    override = 0 if divisor_override is None else divisor_override
    threads = get_num_threads()
    if x.dtype == np.float32:
        _avg_pool[float](x, out, &s, count_include_pad, override, threads)
    else:
        _avg_pool[double](x, out, &s, count_include_pad, override, threads)
    return out


cdef void _avg_unpool_plane(const floating* gy, floating* grad, const PoolShape* s,
                            bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    """Zero one input plane, then spread each output gradient over its window."""
    cdef Py_ssize_t oh, ow, h, w
    cdef floating share
    cdef AvgWindow win
    memset(grad, 0, s.in_h * s.in_w * sizeof(floating))
    for oh in range(s.out_h):
        for ow in range(s.out_w):
            win = _avg_window(s, oh, ow, count_include_pad, divisor_override)
            share = gy[oh * s.out_w + ow] / <floating>win.divisor
            for h in range(win.h0, win.h1):
                for w in range(win.w0, win.w1):
                    grad[h * s.in_w + w] += share


cdef void _avg_pool_backward(const floating[:, :, :, ::1] gy, floating[:, :, :, ::1] grad,
                             const PoolShape* s, bint count_include_pad,
                             Py_ssize_t divisor_override, int threads) noexcept:
    cdef Py_ssize_t p, n, c, channels = gy.shape[1]
    with nogil:
        for p in prange(s.planes, num_threads=threads, schedule="static"):
            n = p // channels
            c = p % channels
            _avg_unpool_plane(&gy[n, c, 0, 0], &grad[n, c, 0, 0], s, count_include_pad,
                              divisor_override)


def avg_pool2d_backward(gy, g, count_include_pad, divisor_override):
    """gy (N, C, Ho, Wo) -> grad_input (N, C, H, W), each gradient divided by its divisor."""
    cdef PoolShape s = _pool_shape(g)
    grad = np.empty((g.batch, g.channels, s.in_h, s.in_w), dtype=gy.dtype)
    if grad.size == 0:
        return grad
    override = 0 if divisor_override is None else divisor_override
    threads = get_num_threads()
    if gy.dtype == np.float32:
        _avg_pool_backward[float](gy, grad, &s, count_include_pad, override, threads)
    else:
        _avg_pool_backward[double](gy, grad, &s, count_include_pad, override, threads)
    return grad
