"""Compiled max/avg pooling kernels: the pooling half of the ``"cython"`` backend.

Every function has the signature of its twin in :mod:`cconv._reference` and receives
C-contiguous float32/float64 arrays plus a :class:`cconv._shapes.PoolGeometry` that the
Python layer has already validated (which is why bounds checking is off). Work is split
over the N*C independent (n, c) planes with OpenMP; each plane is computed by one thread
in a fixed order, so results are bit-identical from run to run and for any thread count.

Semantics follow PyTorch's CPU kernels exactly: a window starts at ``o*stride - pad``;
taps that fall in the padding are skipped (max) or count as zeros (avg); with ceil_mode
the last window is clipped to the input.

Speed comes from computing a row of windows at a time, one kernel tap (or kernel row)
after another, with branch-free selects: a compare-and-branch per tap mispredicts half the
time on real data, which is what makes a plain max pool (PyTorch's NCHW kernel included)
slow. Max pooling runs through the vectorised row kernels of ``pool_kernels.h`` (baseline
SIMD, or AVX2 chosen at import; ``pool_isa`` names the one in use); average pooling's
row loops are plain sums that the compiler vectorises.

Workspace: a max-pool call with padding (or a row length that is not a multiple of
POOL_GROUP) allocates, per thread, one -inf-padded copy of a plane plus a row of labels;
nothing else is allocated besides the outputs.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

import numpy as np

include "isa.pxi"
include "threads.pxi"


cdef int _pool_team(TimedTeam *tt, int op, int itemsize, Py_ssize_t planes, Py_ssize_t work,
                    Py_ssize_t in_size, Py_ssize_t out_size, int threads) noexcept nogil:
    """Threads for a pool call over `planes` planes of `work` elements read and taps visited
    (_elementwise_team), checked by the timed team choice (threads.pxi) under a key of the
    op and what sets its time; close the call with _timed_team_end(tt)."""
    cdef Py_ssize_t key[_TEAM_KEY]
    cdef int team = _elementwise_team(threads, planes, work)
    memset(key, 0, sizeof(key))
    key[0] = op
    key[1] = itemsize
    key[2] = planes
    key[3] = work
    key[4] = in_size
    key[5] = out_size
    key[6] = team
    return _timed_team_start(tt, key, team)


cdef extern from "pool_kernels.h" nogil:
    const char* c_pool_isa "pool_isa"
    void pool_kernels_init(int level)
    void pool_max_row_f32(const float* x, Py_ssize_t depths, Py_ssize_t depth_step,
                          float depth_label_step, Py_ssize_t rows, Py_ssize_t row_step,
                          float label0, float label_step, Py_ssize_t count, Py_ssize_t kw,
                          Py_ssize_t sw, Py_ssize_t dw, const float* first_col, float* out,
                          int64_t* index, int64_t index0)
    void pool_max_row_f64(const double* x, Py_ssize_t depths, Py_ssize_t depth_step,
                          double depth_label_step, Py_ssize_t rows, Py_ssize_t row_step,
                          double label0, double label_step, Py_ssize_t count, Py_ssize_t kw,
                          Py_ssize_t sw, Py_ssize_t dw, const double* first_col, double* out,
                          int64_t* index, int64_t index0)
    void pool_pad_plane_f32(const float* x, Py_ssize_t h, Py_ssize_t w, Py_ssize_t left,
                            Py_ssize_t right, Py_ssize_t slack, float* dst)
    void pool_pad_plane_f64(const double* x, Py_ssize_t h, Py_ssize_t w, Py_ssize_t left,
                            Py_ssize_t right, Py_ssize_t slack, double* dst)
    enum:
        POOL_BLOCK  # windows per row-kernel call
        POOL_GROUP  # with a padded copy, rounded up to a multiple of this
    ctypedef struct pool_adaptive_shape:
        Py_ssize_t in_d, in_h, in_w, out_d, out_h, out_w
        const int64_t* bins_d
        const int64_t* bins_h
        const int64_t* bins_w
    void pool_adaptive_max_f32(const float* x, const pool_adaptive_shape* s, float* out, int64_t* index)
    void pool_adaptive_max_f64(const double* x, const pool_adaptive_shape* s, double* out, int64_t* index)
    void pool_adaptive_avg_f32(const float* x, const pool_adaptive_shape* s, float* out)
    void pool_adaptive_avg_f64(const double* x, const pool_adaptive_shape* s, double* out)
    void pool_adaptive_avg_backward_f32(const float* gy, const pool_adaptive_shape* s, float* grad)
    void pool_adaptive_avg_backward_f64(const double* gy, const pool_adaptive_shape* s, double* grad)

pool_kernels_init(cconv_isa_level)
pool_isa = c_pool_isa.decode()


cdef struct PoolShape:
    # The geometry as plain C integers, read once per call from the PoolGeometry record
    # (and, for a 3-d max pool, the depth window; a 2-d pool has depth 1).
    Py_ssize_t planes, in_h, in_w, out_h, out_w
    Py_ssize_t in_d, out_d, kernel_d, stride_d, pad_d, dilation_d
    Py_ssize_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
    # Max pooling reads a copy of each plane ("padded") with pad_w -inf columns on the
    # left, pad_right on the right (ceil_mode overhang) and `slack` values after the last
    # row, unless there is no padding and the row length is a multiple of POOL_GROUP.
    Py_ssize_t pad_right, slack, out_w_rounded
    bint padded
    # The row kernels apply: tap labels fit exactly in the dtype (float32 up to 2**24);
    # otherwise windows go one by one.  (Every window covers an input pixel: the Python
    # layer refuses geometries where one does not.)
    bint vector_float, vector_double
    # Average pooling: output columns avg_w0 <= ow < avg_w1 have their window inside the
    # input horizontally (no clipping, no bounds checks).
    Py_ssize_t avg_w0, avg_w1


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


cdef inline Py_ssize_t _split(Py_ssize_t planes, Py_ssize_t t, Py_ssize_t team) noexcept nogil:
    """First plane of thread t when ``planes`` are dealt out in ``team`` equal ranges."""
    return planes * t // team


cdef PoolShape _pool_shape(g, depth=(1, 1, 1, 1, 0, 1)) except *:
    """``depth``: (in_d, out_d, kernel_d, stride_d, pad_d, dilation_d) of a 3-d max pool,
    whose ``g`` is the 2-d geometry of its (N, C*D, H, W) view."""
    cdef PoolShape s
    cdef Py_ssize_t label_bound
    s.in_d, s.out_d, s.kernel_d, s.stride_d, s.pad_d, s.dilation_d = depth
    s.planes = g.batch * g.channels // s.in_d
    s.in_h, s.in_w, s.out_h, s.out_w = g.in_h, g.in_w, g.out_h, g.out_w
    s.kernel_h, s.kernel_w = g.kernel_h, g.kernel_w
    s.stride_h, s.stride_w = g.stride_h, g.stride_w
    s.pad_h, s.pad_w = g.pad_h, g.pad_w
    s.dilation_h, s.dilation_w = g.dilation_h, g.dilation_w
    s.pad_right = max(0, (s.out_w - 1) * s.stride_w - s.pad_w
                      + (s.kernel_w - 1) * s.dilation_w + 1 - s.in_w)
    s.out_w_rounded = (s.out_w + POOL_GROUP - 1) // POOL_GROUP * POOL_GROUP
    s.slack = (s.out_w_rounded - s.out_w) * s.stride_w
    s.padded = s.pad_w > 0 or s.pad_right > 0 or s.slack > 0
    label_bound = (s.kernel_d * s.dilation_d * s.in_h * s.in_w + s.kernel_h * s.dilation_h * s.in_w
                   + s.kernel_w * s.dilation_w)
    s.vector_double = s.in_h > 0 and label_bound < (1 << 31)
    s.vector_float = s.vector_double and label_bound < (1 << 24)
    s.avg_w0 = min((s.pad_w + s.stride_w - 1) // s.stride_w, s.out_w)
    s.avg_w1 = (s.in_w + s.pad_w - s.kernel_w) // s.stride_w + 1 if s.in_w + s.pad_w >= s.kernel_w else 0
    s.avg_w1 = max(min(s.avg_w1, s.out_w), s.avg_w0)
    return s


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------

cdef void _max_window(const floating* x, const PoolShape* s, Py_ssize_t od, Py_ssize_t oh,
                      Py_ssize_t ow, floating* out, int64_t* index) noexcept nogil:
    """One window with bounds checks: the fallback when the row kernels do not apply.

    PyTorch's rule: start from -inf and the first in-bounds tap, take a tap when it is
    greater or NaN; so ties keep the first maximum (in (d, h, w) order) and the last NaN
    wins. Every window has a tap in the input (validated by cconv._shapes).
    """
    cdef Py_ssize_t W = s.in_w, HW = s.in_h * s.in_w
    cdef Py_ssize_t i, j, _, pos, best
    cdef Py_ssize_t d0 = _first_tap(od * s.stride_d - s.pad_d, s.dilation_d)
    cdef Py_ssize_t h0 = _first_tap(oh * s.stride_h - s.pad_h, s.dilation_h)
    cdef Py_ssize_t w0 = _first_tap(ow * s.stride_w - s.pad_w, s.dilation_w)
    cdef Py_ssize_t nd = min(
        _tap_count(d0, od * s.stride_d - s.pad_d + (s.kernel_d - 1) * s.dilation_d + 1, s.dilation_d),
        _tap_count(d0, s.in_d, s.dilation_d))
    cdef Py_ssize_t nh = min(
        _tap_count(h0, oh * s.stride_h - s.pad_h + (s.kernel_h - 1) * s.dilation_h + 1, s.dilation_h),
        _tap_count(h0, s.in_h, s.dilation_h))
    cdef Py_ssize_t nw = min(
        _tap_count(w0, ow * s.stride_w - s.pad_w + (s.kernel_w - 1) * s.dilation_w + 1, s.dilation_w),
        _tap_count(w0, W, s.dilation_w))
    cdef floating v, m = -INFINITY
    best = d0 * HW + h0 * W + w0
    for j in range(nd):
        for i in range(nh):
            pos = (d0 + j * s.dilation_d) * HW + (h0 + i * s.dilation_h) * W + w0
            for _ in range(nw):
                v = x[pos]
                if v > m or v != v:
                    m = v
                    best = pos
                pos += s.dilation_w
    out[0] = m
    index[0] = best


cdef inline void _max_row(const floating* x, Py_ssize_t depths, Py_ssize_t depth_step,
                          floating depth_label_step, Py_ssize_t rows, Py_ssize_t row_step,
                          floating label0, floating label_step, Py_ssize_t count,
                          const PoolShape* s, const floating* first_col, floating* out,
                          int64_t* index, int64_t index0) noexcept nogil:
    if floating is float:
        pool_max_row_f32(x, depths, depth_step, depth_label_step, rows, row_step, label0,
                         label_step, count, s.kernel_w, s.stride_w, s.dilation_w, first_col, out,
                         index, index0)
    else:
        pool_max_row_f64(x, depths, depth_step, depth_label_step, rows, row_step, label0,
                         label_step, count, s.kernel_w, s.stride_w, s.dilation_w, first_col, out,
                         index, index0)


cdef void _max_pool_plane(const floating* x, floating* out, int64_t* indices, const PoolShape* s,
                          floating* work) noexcept nogil:
    """One (D, H, W) volume (D = 1: a plane) -> its (Do, Ho, Wo) maxima and flat argmax
    indices ``d*H*W + h*W + w``.

    Each output row goes to the row kernel in blocks of POOL_BLOCK windows, reading the
    kernel slices and rows that lie inside the input. When ``s.padded``, the kernel reads a
    copy of the volume whose padding columns hold -inf (never taken) with slack after it
    (the last block is rounded up to whole vectors), and each window starts from the label
    of its first real tap; ``work`` holds those labels (one per window) and the copy.
    Windows the row kernel cannot take (see PoolShape.vector_*) go one by one through
    _max_window.
    """
    cdef Py_ssize_t W = s.in_w, HW = s.in_h * s.in_w, stride = s.in_w, sw = s.stride_w
    cdef Py_ssize_t od, oh, ow, d_start, h_start, j0, j1, i0, i1, c0, count, row0
    cdef const floating* src = x
    cdef const floating* first_col = NULL
    cdef floating* out_row
    cdef int64_t* index_row
    cdef bint vector = s.vector_float if floating is float else s.vector_double
    if vector and s.padded:
        if work == NULL:  # out of memory for the copy: take the slow path
            vector = False
        else:
            first_col = work
            stride = s.pad_w + W + s.pad_right
            if floating is float:
                pool_pad_plane_f32(x, s.in_d * s.in_h, W, s.pad_w, s.pad_right, s.slack,
                                   work + s.out_w_rounded)
            else:
                pool_pad_plane_f64(x, s.in_d * s.in_h, W, s.pad_w, s.pad_right, s.slack,
                                   work + s.out_w_rounded)
            src = work + s.out_w_rounded
    for od in range(s.out_d):
        d_start = od * s.stride_d - s.pad_d
        # kernel slices j0 <= j < j1 fall inside the input
        j0 = _tap_count(d_start, 0, s.dilation_d)
        j1 = min(s.kernel_d, _tap_count(d_start, s.in_d, s.dilation_d))
        for oh in range(s.out_h):
            h_start = oh * s.stride_h - s.pad_h
            # kernel rows i0 <= i < i1 fall inside the input
            i0 = _tap_count(h_start, 0, s.dilation_h)
            i1 = min(s.kernel_h, _tap_count(h_start, s.in_h, s.dilation_h))
            out_row = out + (od * s.out_h + oh) * s.out_w
            index_row = indices + (od * s.out_h + oh) * s.out_w
            if not vector or i0 >= i1 or j0 >= j1:
                for ow in range(s.out_w):
                    _max_window(x, s, od, oh, ow, out_row + ow, index_row + ow)
                continue
            row0 = (d_start + j0 * s.dilation_d) * s.in_h + h_start + i0 * s.dilation_h
            c0 = 0
            while c0 < s.out_w:
                count = min(<Py_ssize_t>POOL_BLOCK, s.out_w - c0)
                _max_row(src + row0 * stride + c0 * sw, j1 - j0, s.dilation_d * s.in_h * stride,
                         <floating>(s.dilation_d * HW), i1 - i0, s.dilation_h * stride,
                         <floating>(j0 * s.dilation_d * HW + i0 * s.dilation_h * W),
                         <floating>(s.dilation_h * W), count, s,
                         first_col + c0 if first_col != NULL else NULL,
                         out_row + c0, index_row + c0,
                         d_start * HW + h_start * W + c0 * sw - s.pad_w)
                c0 += count


cdef void _first_columns(const PoolShape* s, floating* labels) noexcept nogil:
    """labels[ow] = column offset of window ow's first real tap (padded case).

    The windows past out_w only pad the last block to whole vectors (results unused).
    """
    cdef Py_ssize_t ow, start
    for ow in range(s.out_w_rounded):
        start = ow * s.stride_w - s.pad_w
        labels[ow] = <floating>(_first_tap(start, s.dilation_w) - start if ow < s.out_w else 0)


cdef inline Py_ssize_t _max_workspace(const PoolShape* s) noexcept nogil:
    """Elements of one thread's buffer in the padded case: labels, then the volume's copy."""
    return s.out_w_rounded + s.in_d * s.in_h * (s.pad_w + s.in_w + s.pad_right) + s.slack


cdef void _max_pool_planes(const floating* x, floating* out, int64_t* indices, const PoolShape* s,
                           Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Volumes first..last-1, on one thread (with its own buffer for the padded case)."""
    cdef Py_ssize_t p, in_size = s.in_d * s.in_h * s.in_w, out_size = s.out_d * s.out_h * s.out_w
    cdef floating* work = NULL
    if s.padded:
        work = <floating*>malloc(_max_workspace(s) * sizeof(floating))
        if work != NULL:
            _first_columns(s, work)
    for p in range(first, last):
        _max_pool_plane(x + p * in_size, out + p * out_size, indices + p * out_size, s, work)
    free(work)


cdef inline Py_ssize_t _max_work(const PoolShape* s) noexcept nogil:
    """Elements read plus taps visited by a max pool call (what the thread rule weighs)."""
    return s.planes * (s.in_d * s.in_h * s.in_w
                       + s.out_d * s.out_h * s.out_w * s.kernel_d * s.kernel_h * s.kernel_w)


cdef void _max_pool(const floating* xp, floating* op, int64_t* ip, const PoolShape* s,
                    int threads) noexcept:
    cdef TimedTeam tt
    cdef int t, team = _pool_team(&tt, 0, sizeof(floating), s.planes, _max_work(s),
                                  s.in_d * s.in_h * s.in_w, s.out_d * s.out_h * s.out_w, threads)
    with nogil:
        if team == 1:
            _max_pool_planes(xp, op, ip, s, 0, s.planes)
        else:
            for t in prange(team, num_threads=team, schedule="static"):
                _max_pool_planes(xp, op, ip, s, _split(s.planes, t, team), _split(s.planes, t + 1, team))
    _timed_team_end(&tt)


cdef _run_max_pool(x, out, indices, const PoolShape* s, int threads):
    """x, out, indices: C-contiguous arrays of one dtype (float32/float64) and int64."""
    cdef const float[::1] xf
    cdef float[::1] of
    cdef const double[::1] xd
    cdef double[::1] od
    cdef int64_t[::1] ip = indices.reshape(-1)
    if x.dtype == np.float32:
        xf, of = x.reshape(-1), out.reshape(-1)
        _max_pool[float](&xf[0], &of[0], &ip[0], s, threads)
    else:
        xd, od = x.reshape(-1), out.reshape(-1)
        _max_pool[double](&xd[0], &od[0], &ip[0], s, threads)


def max_pool2d(x, g, int threads):
    """x (N, C, H, W) -> (out (N, C, Ho, Wo), int64 indices (N, C, Ho, Wo))."""
    cdef PoolShape s = _pool_shape(g)
    shape = (g.batch, g.channels, s.out_h, s.out_w)
    out = np.empty(shape, dtype=x.dtype)
    indices = np.empty(shape, dtype=np.int64)
    if s.planes == 0:
        return out, indices
    _run_max_pool(x, out, indices, &s, threads)
    return out, indices


def max_pool3d(x, g, depth, int threads):
    """x (N, C, D, H, W) -> (out (N, C, Do, Ho, Wo), int64 indices d*H*W + h*W + w per volume).

    ``g``: the 2-d geometry of the (N, C*D, H, W) view; ``depth``: (D, Do, kernel, stride,
    padding, dilation) along d, validated by the caller (every window has a real slice).
    """
    cdef PoolShape s = _pool_shape(g, depth)
    shape = x.shape[:2] + (s.out_d, s.out_h, s.out_w)
    out = np.empty(shape, dtype=x.dtype)
    indices = np.empty(shape, dtype=np.int64)
    if s.planes == 0 or s.in_d == 0:
        return out, indices
    _run_max_pool(x, out, indices, &s, threads)
    return out, indices


cdef Py_ssize_t _max_unpool_planes(const floating* gy, const int64_t* indices, floating* grad,
                                   Py_ssize_t out_size, Py_ssize_t in_size, Py_ssize_t first,
                                   Py_ssize_t last) noexcept nogil:
    """Planes first..last-1: zero each input plane, then add every output gradient at its
    argmax, in output order (the order of PyTorch's kernel).  An index outside [0, in_size)
    is skipped and counted (the count is returned): the range check is this pass, not a
    serial one before it."""
    cdef Py_ssize_t p, i, bad = 0
    cdef int64_t j
    cdef floating* g
    cdef const floating* d
    cdef const int64_t* k
    for p in range(first, last):
        g = grad + p * in_size
        d = gy + p * out_size
        k = indices + p * out_size
        memset(g, 0, in_size * sizeof(floating))
        for i in range(out_size):
            j = k[i]
            if <uint64_t>j < <uint64_t>in_size:  # a negative index wraps past 2**63
                g[j] += d[i]
            else:
                bad += 1
    return bad


cdef Py_ssize_t _max_pool_backward(const floating[:, :, :, ::1] gy,
                                   const int64_t[:, :, :, ::1] indices,
                                   floating[:, :, :, ::1] grad, int threads) noexcept:
    """The scatter of every plane; returns how many indices were out of range."""
    cdef Py_ssize_t planes = gy.shape[0] * gy.shape[1], bad = 0
    cdef Py_ssize_t out_size = gy.shape[2] * gy.shape[3], in_size = grad.shape[2] * grad.shape[3]
    cdef TimedTeam tt
    cdef int t, team = _pool_team(&tt, 1, sizeof(floating), planes, planes * (in_size + out_size),
                                  in_size, out_size, threads)
    cdef const floating* gp = &gy[0, 0, 0, 0]
    cdef const int64_t* ip = &indices[0, 0, 0, 0]
    cdef floating* rp = &grad[0, 0, 0, 0]
    with nogil:
        if team == 1:
            bad = _max_unpool_planes(gp, ip, rp, out_size, in_size, 0, planes)
        else:
            for t in prange(team, num_threads=team, schedule="static"):
                bad += _max_unpool_planes(gp, ip, rp, out_size, in_size, _split(planes, t, team),
                                          _split(planes, t + 1, team))
    _timed_team_end(&tt)
    return bad


def max_pool2d_backward(gy, indices, input_shape, int threads):
    """gy, indices (N, C, Ho, Wo) -> grad_input of ``input_shape`` (N, C, H, W), or None
    when an index lies outside [0, H*W) (the caller raises; nothing was written out of
    range).  Planes are independent, so the scatter-add runs in parallel over planes
    without races.
    """
    grad = np.empty(tuple(input_shape), dtype=gy.dtype)
    if grad.size == 0:
        return grad
    if gy.size == 0:  # no windows (Ho or Wo is 0): nothing flows back
        grad.fill(0)
        return grad
    if gy.dtype == np.float32:
        bad = _max_pool_backward[float](gy, indices, grad, threads)
    else:
        bad = _max_pool_backward[double](gy, indices, grad, threads)
    return None if bad else grad


# --------------------------------------------------------------------------
# average pooling (no dilation: the API never passes one)
# --------------------------------------------------------------------------

cdef enum:
    # output gradients shared out per pass (stack scratch of the backward)
    BLOCK = 256


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


cdef void _avg_window_out(const floating* x, floating* out, const PoolShape* s, Py_ssize_t oh,
                          Py_ssize_t ow, bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    """One window with clipping (border windows): sum in row-major order, then divide."""
    cdef Py_ssize_t h, w
    cdef floating total = 0
    cdef AvgWindow win = _avg_window(s, oh, ow, count_include_pad, divisor_override)
    if win.h0 >= win.h1 or win.w0 >= win.w1:  # a window entirely in padding
        out[0] = 0
        return
    for h in range(win.h0, win.h1):
        for w in range(win.w0, win.w1):
            total = total + x[h * s.in_w + w]
    out[0] = total / <floating>win.divisor


cdef inline void _add_tap(const floating* tap, floating* total, Py_ssize_t count,
                          Py_ssize_t stride) noexcept nogil:
    """total[k] += tap[k*stride]: one kernel tap of a row of windows (vectorises)."""
    cdef Py_ssize_t k
    for k in range(count):
        total[k] = total[k] + tap[k * stride]


cdef void _avg_pool_plane(const floating* x, floating* out, const PoolShape* s,
                          bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    """One plane. The interior columns of each output row are summed a kernel tap at a time
    (each window still adds its taps in row-major order, as PyTorch does); their divisor
    is the same along the row. Border columns go window by window."""
    cdef Py_ssize_t oh, ow, h, j, h_start, h_end, h0, h1, divisor
    cdef Py_ssize_t lo = s.avg_w0, n = s.avg_w1 - s.avg_w0, sw = s.stride_w
    cdef floating* row
    cdef const floating* tap
    for oh in range(s.out_h):
        h_start = oh * s.stride_h - s.pad_h
        h_end = min(h_start + s.kernel_h, s.in_h + s.pad_h)
        h0 = max(h_start, 0)
        h1 = min(h_end, s.in_h)
        row = out + oh * s.out_w
        if n > 0 and h0 < h1:
            for j in range(n):
                row[lo + j] = 0
            for h in range(h0, h1):
                for j in range(s.kernel_w):
                    tap = x + h * s.in_w + lo * sw - s.pad_w + j
                    if sw == 1:
                        _add_tap(tap, row + lo, n, 1)
                    elif sw == 2:
                        _add_tap(tap, row + lo, n, 2)
                    else:
                        _add_tap(tap, row + lo, n, sw)
            if divisor_override != 0:
                divisor = divisor_override
            elif count_include_pad:
                divisor = (h_end - h_start) * s.kernel_w
            else:
                divisor = (h1 - h0) * s.kernel_w
            for j in range(n):
                row[lo + j] = row[lo + j] / <floating>divisor
            for ow in range(lo):
                _avg_window_out(x, row + ow, s, oh, ow, count_include_pad, divisor_override)
            for ow in range(lo + n, s.out_w):
                _avg_window_out(x, row + ow, s, oh, ow, count_include_pad, divisor_override)
        else:
            for ow in range(s.out_w):
                _avg_window_out(x, row + ow, s, oh, ow, count_include_pad, divisor_override)


cdef void _avg_pool(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, const PoolShape* s,
                    bint count_include_pad, Py_ssize_t divisor_override, int threads) noexcept:
    cdef Py_ssize_t p, in_size = s.in_h * s.in_w, out_size = s.out_h * s.out_w
    cdef TimedTeam tt
    cdef int team = _pool_team(&tt, 2, sizeof(floating), s.planes,
                               s.planes * (in_size + out_size * s.kernel_h * s.kernel_w),
                               in_size, out_size, threads)
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* op = &out[0, 0, 0, 0]
    with nogil:
        if team == 1:
            for p in range(s.planes):
                _avg_pool_plane(xp + p * in_size, op + p * out_size, s, count_include_pad,
                                divisor_override)
        else:
            for p in prange(s.planes, num_threads=team, schedule="static"):
                _avg_pool_plane(xp + p * in_size, op + p * out_size, s, count_include_pad,
                                divisor_override)
    _timed_team_end(&tt)


def avg_pool2d(x, g, count_include_pad, divisor_override, int threads):
    """x (N, C, H, W) -> window means (N, C, Ho, Wo); the divisor follows PyTorch."""
    cdef PoolShape s = _pool_shape(g)
    out = np.empty((g.batch, g.channels, s.out_h, s.out_w), dtype=x.dtype)
    if s.planes == 0:
        return out
    override = 0 if divisor_override is None else divisor_override
    if x.dtype == np.float32:
        _avg_pool[float](x, out, &s, count_include_pad, override, threads)
    else:
        _avg_pool[double](x, out, &s, count_include_pad, override, threads)
    return out


cdef void _avg_unwindow(floating* grad, floating g, const PoolShape* s, Py_ssize_t oh,
                        Py_ssize_t ow, bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    """Spread one output gradient over its clipped window (border windows)."""
    cdef Py_ssize_t h, w
    cdef AvgWindow win = _avg_window(s, oh, ow, count_include_pad, divisor_override)
    cdef floating share = g / <floating>win.divisor
    for h in range(win.h0, win.h1):
        for w in range(win.w0, win.w1):
            grad[h * s.in_w + w] += share


cdef inline void _spread_tap(floating* tap, const floating* share, Py_ssize_t count,
                             Py_ssize_t stride) noexcept nogil:
    """tap[k*stride] += share[k]: one kernel tap of a row of windows."""
    cdef Py_ssize_t k
    for k in range(count):
        tap[k * stride] = tap[k * stride] + share[k]


cdef void _avg_unpool_plane(const floating* gy, floating* grad, const PoolShape* s,
                            bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    """Zero one input plane, then spread each output gradient over its window: interior
    columns of an output row a kernel tap at a time (their divisor is the same along the
    row), border columns window by window. Deterministic; the order in which overlapping
    windows add up differs from PyTorch's (rounding-level differences)."""
    cdef Py_ssize_t oh, ow, h, j, h_start, h_end, h0, h1, divisor, c0, count
    cdef Py_ssize_t lo = s.avg_w0, n = s.avg_w1 - s.avg_w0, sw = s.stride_w
    cdef floating share[BLOCK]
    cdef const floating* row
    cdef floating* tap
    memset(grad, 0, s.in_h * s.in_w * sizeof(floating))
    for oh in range(s.out_h):
        h_start = oh * s.stride_h - s.pad_h
        h_end = min(h_start + s.kernel_h, s.in_h + s.pad_h)
        h0 = max(h_start, 0)
        h1 = min(h_end, s.in_h)
        row = gy + oh * s.out_w
        for ow in range(lo):
            _avg_unwindow(grad, row[ow], s, oh, ow, count_include_pad, divisor_override)
        if h0 < h1:
            if divisor_override != 0:
                divisor = divisor_override
            elif count_include_pad:
                divisor = (h_end - h_start) * s.kernel_w
            else:
                divisor = (h1 - h0) * s.kernel_w
            c0 = lo
            while c0 < lo + n:
                count = min(<Py_ssize_t>BLOCK, lo + n - c0)
                for j in range(count):
                    share[j] = row[c0 + j] / <floating>divisor
                for h in range(h0, h1):
                    for j in range(s.kernel_w):
                        tap = grad + h * s.in_w + c0 * sw - s.pad_w + j
                        if sw == 1:
                            _spread_tap(tap, share, count, 1)
                        elif sw == 2:
                            _spread_tap(tap, share, count, 2)
                        else:
                            _spread_tap(tap, share, count, sw)
                c0 += count
        for ow in range(lo + n, s.out_w):
            _avg_unwindow(grad, row[ow], s, oh, ow, count_include_pad, divisor_override)


cdef void _avg_pool_backward(const floating[:, :, :, ::1] gy, floating[:, :, :, ::1] grad,
                             const PoolShape* s, bint count_include_pad,
                             Py_ssize_t divisor_override, int threads) noexcept:
    cdef Py_ssize_t p, in_size = s.in_h * s.in_w, out_size = s.out_h * s.out_w
    cdef TimedTeam tt
    cdef int team = _pool_team(&tt, 3, sizeof(floating), s.planes,
                               s.planes * (in_size + out_size * s.kernel_h * s.kernel_w),
                               in_size, out_size, threads)
    cdef const floating* gp = &gy[0, 0, 0, 0]
    cdef floating* rp = &grad[0, 0, 0, 0]
    with nogil:
        if team == 1:
            for p in range(s.planes):
                _avg_unpool_plane(gp + p * out_size, rp + p * in_size, s, count_include_pad,
                                  divisor_override)
        else:
            for p in prange(s.planes, num_threads=team, schedule="static"):
                _avg_unpool_plane(gp + p * out_size, rp + p * in_size, s, count_include_pad,
                                  divisor_override)
    _timed_team_end(&tt)


def avg_pool2d_backward(gy, g, count_include_pad, divisor_override, int threads):
    """gy (N, C, Ho, Wo) -> grad_input (N, C, H, W), each gradient divided by its divisor."""
    cdef PoolShape s = _pool_shape(g)
    grad = np.empty((g.batch, g.channels, s.in_h, s.in_w), dtype=gy.dtype)
    if grad.size == 0:
        return grad
    override = 0 if divisor_override is None else divisor_override
    if gy.dtype == np.float32:
        _avg_pool_backward[float](gy, grad, &s, count_include_pad, override, threads)
    else:
        _avg_pool_backward[double](gy, grad, &s, count_include_pad, override, threads)
    return grad


# --------------------------------------------------------------------------
# explaining a call
# --------------------------------------------------------------------------

POOL_ALGORITHMS = ("max_rows", "max_windows", "max_scatter", "avg_rows", "avg_spread",
                   "adaptive_max_bins", "adaptive_avg_bins", "adaptive_avg_spread")


def _explain_adaptive(op, shapes, int threads):
    cdef pool_adaptive_shape a
    cdef Py_ssize_t planes
    shape, out = shapes
    planes = _adaptive_shape(shape, out, &a)
    team = _elementwise_team(threads, planes, _adaptive_work(&a, planes))
    free(<void*>a.bins_d)
    backward = op.endswith("_backward")
    algorithm = ("adaptive_max_bins" if "max" in op else
                 "adaptive_avg_spread" if backward else "adaptive_avg_bins")
    return {"grad_input" if backward else "forward": {
        "algorithm": algorithm, "isa": "generic", "workspace_bytes": 0,
        "threads": team,
        "reason": "each output bin scanned in (d, h, w) order (scalar, branch-free selects), "
                  "(n, c) volumes in parallel"}}


def explain(op, g, int itemsize, int threads, grad_shape=None, input_shape=None, depth=None):
    """{pass name: {algorithm, isa, threads, workspace_bytes, reason}} of a pooling call
    (max_pool2d_backward: no geometry, the shapes of grad_output and of the input;
    max_pool3d: ``depth`` as for :func:`max_pool3d`; adaptive pools: ``g`` is
    ((N, C, D, H, W), (Do, Ho, Wo)))."""
    cdef PoolShape s
    cdef Py_ssize_t planes, in_size, out_size, taps
    cdef bint vector
    if op == "max_pool2d_backward":
        planes = grad_shape[0] * grad_shape[1]
        in_size = input_shape[2] * input_shape[3]
        out_size = grad_shape[2] * grad_shape[3]
        return {"grad_input": {
            "algorithm": "max_scatter", "isa": "generic", "workspace_bytes": 0,
            "threads": _elementwise_team(threads, planes, planes * (in_size + out_size)),
            "reason": "each gradient added at its argmax, planes in parallel"}}
    if op.startswith("adaptive"):
        return _explain_adaptive(op, g, threads)
    s = _pool_shape(g) if depth is None else _pool_shape(g, depth)
    in_size = s.in_h * s.in_w
    out_size = s.out_h * s.out_w
    taps = out_size * s.kernel_h * s.kernel_w
    vector = s.vector_float if itemsize == 4 else s.vector_double
    if op in ("max_pool2d", "max_pool3d"):
        team = _elementwise_team(threads, s.planes, _max_work(&s))
        work = _max_workspace(&s) * itemsize * team if vector and s.padded else 0
        return {"forward": {
            "algorithm": "max_rows" if vector else "max_windows",
            "isa": pool_isa if vector else "generic", "threads": team, "workspace_bytes": work,
            "reason": ("rows of windows a kernel tap at a time with branch-free selects"
                       + (", depth taps folded in" if op == "max_pool3d" else "")
                       + (" on a -inf-padded copy of each plane" if s.padded else ""))
            if vector else "tap labels would not fit the dtype exactly: window by window"}}
    return {"forward" if op == "avg_pool2d" else "grad_input": {
        "algorithm": "avg_rows" if op == "avg_pool2d" else "avg_spread",
        "isa": "generic", "threads": _elementwise_team(threads, s.planes, s.planes * (in_size + taps)),
        "workspace_bytes": 0,
        "reason": "interior windows a kernel tap at a time (compiler-vectorised sums), "
                  "border windows one by one"}}


# --------------------------------------------------------------------------
# adaptive pooling (bins that do not divide the input evenly)
# --------------------------------------------------------------------------

cdef void _fill_bins(int64_t* bins, Py_ssize_t size, Py_ssize_t out) noexcept nogil:
    """bins[2*i], bins[2*i + 1] = PyTorch's floor(i*size/out), ceil((i+1)*size/out)."""
    cdef Py_ssize_t i
    for i in range(out):
        bins[2 * i] = i * size // out
        bins[2 * i + 1] = ((i + 1) * size + out - 1) // out


cdef Py_ssize_t _adaptive_shape(shape, out, pool_adaptive_shape* a) except -1:
    """Fill ``a`` for a (N, C, D, H, W) input pooled to (Do, Ho, Wo), its bins in one
    malloc'ed block at ``a.bins_d`` (the caller frees it); returns the number of planes."""
    cdef int64_t* bins
    a.in_d, a.in_h, a.in_w = shape[2:]
    a.out_d, a.out_h, a.out_w = out
    bins = <int64_t*>malloc(2 * (a.out_d + a.out_h + a.out_w) * sizeof(int64_t))
    if bins == NULL:
        raise MemoryError("adaptive pooling: no memory for the bins")
    _fill_bins(bins, a.in_d, a.out_d)
    _fill_bins(bins + 2 * a.out_d, a.in_h, a.out_h)
    _fill_bins(bins + 2 * (a.out_d + a.out_h), a.in_w, a.out_w)
    a.bins_d, a.bins_h, a.bins_w = bins, bins + 2 * a.out_d, bins + 2 * (a.out_d + a.out_h)
    return shape[0] * shape[1]


cdef Py_ssize_t _adaptive_work(const pool_adaptive_shape* a, Py_ssize_t planes) noexcept:
    """Elements read plus taps visited (the taps: products of the bins' summed lengths)."""
    cdef Py_ssize_t i, taps_d = 0, taps_h = 0, taps_w = 0
    for i in range(a.out_d):
        taps_d += a.bins_d[2 * i + 1] - a.bins_d[2 * i]
    for i in range(a.out_h):
        taps_h += a.bins_h[2 * i + 1] - a.bins_h[2 * i]
    for i in range(a.out_w):
        taps_w += a.bins_w[2 * i + 1] - a.bins_w[2 * i]
    return planes * (a.in_d * a.in_h * a.in_w + taps_d * taps_h * taps_w)


cdef enum AdaptiveKind:
    ADAPTIVE_MAX, ADAPTIVE_AVG, ADAPTIVE_AVG_BACKWARD


cdef void _adaptive_volume(AdaptiveKind kind, const floating* src, floating* dst, int64_t* index,
                           const pool_adaptive_shape* a) noexcept nogil:
    """One (n, c) volume: src is the input (forward) or the output gradient (backward)."""
    if floating is float:
        if kind == ADAPTIVE_MAX:
            pool_adaptive_max_f32(src, a, dst, index)
        elif kind == ADAPTIVE_AVG:
            pool_adaptive_avg_f32(src, a, dst)
        else:
            pool_adaptive_avg_backward_f32(src, a, dst)
    else:
        if kind == ADAPTIVE_MAX:
            pool_adaptive_max_f64(src, a, dst, index)
        elif kind == ADAPTIVE_AVG:
            pool_adaptive_avg_f64(src, a, dst)
        else:
            pool_adaptive_avg_backward_f64(src, a, dst)


cdef void _adaptive(AdaptiveKind kind, const floating* src, floating* dst, int64_t* index,
                    const pool_adaptive_shape* a, Py_ssize_t planes, int threads) noexcept:
    cdef Py_ssize_t p, in_size = a.in_d * a.in_h * a.in_w, out_size = a.out_d * a.out_h * a.out_w
    cdef Py_ssize_t src_size = out_size if kind == ADAPTIVE_AVG_BACKWARD else in_size
    cdef Py_ssize_t dst_size = in_size if kind == ADAPTIVE_AVG_BACKWARD else out_size
    cdef TimedTeam tt
    cdef int team = _pool_team(&tt, 4 + <int>kind, sizeof(floating), planes,
                               _adaptive_work(a, planes), src_size, dst_size, threads)
    with nogil:
        if team == 1:
            for p in range(planes):
                _adaptive_volume(kind, src + p * src_size, dst + p * dst_size,
                                 index + p * out_size if index != NULL else NULL, a)
        else:
            for p in prange(planes, num_threads=team, schedule="static"):
                _adaptive_volume(kind, src + p * src_size, dst + p * dst_size,
                                 index + p * out_size if index != NULL else NULL, a)
    _timed_team_end(&tt)


cdef _run_adaptive(AdaptiveKind kind, src, dst, indices, shape, out, int threads):
    """src, dst (and indices for the max): C-contiguous, of one float dtype; shape the
    (N, C, D, H, W) input's, out the (Do, Ho, Wo) bins."""
    cdef pool_adaptive_shape a
    cdef Py_ssize_t planes
    cdef const float[::1] sf
    cdef float[::1] df
    cdef const double[::1] sd
    cdef double[::1] dd
    cdef int64_t[::1] ip
    cdef int64_t* index = NULL
    if src.size == 0 or dst.size == 0:
        return
    if indices is not None:
        ip = indices.reshape(-1)
        index = &ip[0]
    planes = _adaptive_shape(shape, out, &a)
    try:
        if src.dtype == np.float32:
            sf, df = src.reshape(-1), dst.reshape(-1)
            _adaptive[float](kind, &sf[0], &df[0], index, &a, planes, threads)
        else:
            sd, dd = src.reshape(-1), dst.reshape(-1)
            _adaptive[double](kind, &sd[0], &dd[0], index, &a, planes, threads)
    finally:
        free(<void*>a.bins_d)


def adaptive_max_pool(x, out, int threads):
    """x (N, C, D, H, W) -> (maxima (N, C, *out), int64 flat indices d*H*W + h*W + w)."""
    y = np.empty(x.shape[:2] + tuple(out), dtype=x.dtype)
    indices = np.empty(y.shape, dtype=np.int64)
    _run_adaptive(ADAPTIVE_MAX, x, y, indices, x.shape, out, threads)
    return y, indices


def adaptive_avg_pool(x, out, int threads):
    """x (N, C, D, H, W) -> bin means (N, C, *out)."""
    y = np.empty(x.shape[:2] + tuple(out), dtype=x.dtype)
    _run_adaptive(ADAPTIVE_AVG, x, y, None, x.shape, out, threads)
    return y


def adaptive_avg_pool_backward(gy, input_shape, int threads):
    """gy (N, C, Do, Ho, Wo) -> grad_input of ``input_shape`` (N, C, D, H, W)."""
    grad = np.empty(tuple(input_shape), dtype=gy.dtype)
    if gy.size == 0:
        grad.fill(0)
        return grad
    _run_adaptive(ADAPTIVE_AVG_BACKWARD, gy, grad, None, tuple(input_shape), gy.shape[2:], threads)
    return grad
