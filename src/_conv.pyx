# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled conv2d forward and backward: the convolution half of the ``"cython"`` backend.

Thin typed entry points: arrays arrive C-contiguous (read-only ones too), of one float
dtype, validated by :mod:`cconv._shapes`, with the thread count read once per op call by
the Python layer.  Each pass asks the planner (conv_plan.pxi) for its plan, books the
plan's workspace and hands both to the pass's driver (conv_drivers.pxi), which runs the C
kernels (conv_kernels.h) with the GIL released.  Source map:

* isa.h / isa.pxi: the ISA registry (CCONV_KERNEL_ISA) every kernel dispatches on;
* threads.pxi: the thread policy;
* half_convert.h / half_convert.pxi: float16/bfloat16 <-> float32 conversion of arrays;
* conv_plan.pxi: algorithms, thresholds, workspace layout, the plan cache;
* conv_autotune.pxi: opt-in timing of the applicable algorithms per geometry;
* conv_drivers.pxi: one driver per pass, tasks over the OpenMP team;
* conv_direct.pxi: direct loops (tiny calls, few channels);
* conv_kernels.h, conv_impl.h, conv_lanes.h, gemm_ukr.h, gemm_dot.h: micro-kernels,
  packing and the single-threaded per-algorithm C drivers (conv_depthwise.h: depthwise).

Every reduction runs in a fixed order that does not depend on the thread count, so every
result is bit-identical from run to run and for any number of threads.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport uintptr_t
from libc.string cimport memcmp, memcpy, memset

import threading

import numpy as np

cnp.import_array()

include "isa.pxi"
include "threads.pxi"
include "half_convert.pxi"
include "conv_kernels.pxi"
include "conv_plan.pxi"
include "conv_direct.pxi"
include "conv_drivers.pxi"


# --------------------------------------------------------------------------
# scratch memory
# --------------------------------------------------------------------------

cdef object _scratch_buffer = None
_scratch_lock = threading.Lock()

cdef class _Scratch:
    """Scratch memory for one call: the shared, growing buffer when no other call holds
    it (fresh pages cost ~3 us per 4 KiB, so reuse matters), else a private one."""
    cdef object array
    cdef bint locked
    cdef char *ptr

    def __cinit__(self, Py_ssize_t nbytes):
        global _scratch_buffer
        self.locked = _scratch_lock.acquire(False)
        if self.locked:
            if _scratch_buffer is None or _scratch_buffer.shape[0] < nbytes + 64:
                _scratch_buffer = None
                _scratch_buffer = np.empty(nbytes + 64, dtype=np.uint8)
            self.array = _scratch_buffer
        else:
            self.array = np.empty(nbytes + 64, dtype=np.uint8)
        cdef unsigned char[::1] view = self.array
        self.ptr = <char *>((<uintptr_t>&view[0] + 63) & ~(<uintptr_t>63))

    cdef void release(self):
        if self.locked:
            self.locked = False
            _scratch_lock.release()


cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int cconv_openmp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int cconv_openmp_max_threads(void) { return 0; }
    #endif
    """
    int cconv_openmp_max_threads() nogil


def openmp_max_threads():
    """omp_get_max_threads() in the calling thread (what threadpoolctl's "openmp" limit
    sets); 0 in a build without OpenMP. cconv._threads.get_num_threads() consults it."""
    return cconv_openmp_max_threads()


cdef inline _Scratch _scratch_for(const ConvPlan *p):
    return _Scratch(p.ws_elems * p.itemsize) if p.ws_elems else None


cdef inline void *_ptr(_Scratch scratch):
    return <void *>scratch.ptr if scratch is not None else NULL


# --------------------------------------------------------------------------
# planning a call
# --------------------------------------------------------------------------

cdef Py_ssize_t _ran[N_ALGOS][4]     # passes executed, per algorithm and pass (for tests)
cdef Py_ssize_t _dot_ran[3]          # dot weight gradients executed: [masked, finite, in place]
cdef Py_ssize_t _pw_ran[2][2]        # 1x1 im2col forward / grad_input: [pass][packed, in place]
cdef Py_ssize_t _vol_ran[2]          # volume passes executed: [default tile, 4 x 3-vector tile]


cdef cconv_geom _slice_geom(g):
    """The geometry of one image-and-group slice of ``g`` (a cconv._shapes.ConvGeometry)."""
    cdef cconv_geom s
    s.channels = g.in_channels // g.groups
    s.in_h = g.in_h
    s.in_w = g.in_w
    s.kernel_h = g.kernel_h
    s.kernel_w = g.kernel_w
    s.stride_h = g.stride_h
    s.stride_w = g.stride_w
    s.pad_top = g.pad_top
    s.pad_left = g.pad_left
    s.dilation_h = g.dilation_h
    s.dilation_w = g.dilation_w
    s.out_h = g.out_h
    s.out_w = g.out_w
    return s


cdef inline bint _finite(const void *a, Py_ssize_t n, int itemsize) noexcept nogil:
    if itemsize == 4:
        return all_finite_f32(<const float *>a, n)
    return all_finite_f64(<const double *>a, n)


cdef struct _Facts:
    int fin       # F_* facts: operands known (or, unchecked, assumed) finite
    int known     # F_* facts checked


cdef void _learn(_Facts *f, int facts, const void *data, Py_ssize_t n_data, const void *other,
                 Py_ssize_t n_other, int itemsize) noexcept:
    """Check the operands behind the unchecked facts among `facts`."""
    cdef int unknown = facts & ~f.known
    if unknown & F_DATA:
        f.known |= F_DATA
        if not _finite(data, n_data, itemsize):
            f.fin &= ~F_DATA
    if unknown & F_OTHER:
        f.known |= F_OTHER
        if not _finite(other, n_other, itemsize):
            f.fin &= ~F_OTHER


cdef ConvPlan _plan(int pass_, const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                    Py_ssize_t m, int itemsize, int threads, const void *data,
                    Py_ssize_t n_data, const void *other, Py_ssize_t n_other, int want=-1,
                    _Facts *facts=NULL):
    """A copy of the pass's plan (forcing `want` where it applies), given the operands: the
    finiteness a plan assumes is checked (only that, once per `facts`) and, where it fails,
    the planner asked again with the facts."""
    cdef _Facts own
    cdef const ConvPlan *p
    if facts == NULL:
        own.fin = F_ALL
        own.known = 0
        facts = &own
    while True:
        p = plan_conv(pass_, s, batch, groups, m, itemsize, threads, facts.fin, want)
        if not (p.needs & ~facts.known):
            return p[0]
        _learn(facts, p.needs, data, n_data, other, n_other, itemsize)


cdef inline const void *_data(const unsigned char[::1] raw):
    return &raw[0] if raw is not None and raw.shape[0] else NULL


cdef object _bytes(a):
    """A flat byte view of a C-contiguous array (None passes through)."""
    return None if a is None else a.reshape(-1).view(np.uint8)


# --------------------------------------------------------------------------
# entry points (one typed function per op over the float types)
# --------------------------------------------------------------------------

cdef void _crop_weights(const ConvPlan *p, const floating *w, Py_ssize_t planes,
                        floating *dst) noexcept nogil:
    """dst (planes, kh, kw) = the live taps of w (planes, full_kh, full_kw) of a trimmed plan
    (p.g.kernel_h x p.g.kernel_w from tap_h0, tap_w0); a volume plan's planes have depth taps
    too: (planes, kd, kh, kw) from (planes, full_kd, full_kh, full_kw), from tap_d0."""
    # Everything in locals: extensions build with -fno-strict-aliasing, so with the plan's
    # fields in the loops every store to dst reloaded them (68 instructions a value, more
    # than the pass itself on small maps; a memcpy call per row of 1-3 taps was as slow).
    cdef bint vol = p.algo == A_VOLUME
    cdef Py_ssize_t kd = p.d.kernel_d if vol else 1, kh = p.g.kernel_h, kw = p.g.kernel_w
    cdef Py_ssize_t fkh = p.full_kh, fkw = p.full_kw
    cdef Py_ssize_t full = (p.full_kd if vol else 1) * fkh * fkw, live = kd * kh * kw
    cdef const floating *src = w + ((p.tap_d0 if vol else 0) * fkh + p.tap_h0) * fkw + p.tap_w0
    cdef Py_ssize_t a, t, i
    if kd * kh == 1:        # one row of taps per plane (a 1 x kw crop): the common case
        for _ in range(planes):
            _copy_row(dst, src, kw)
            dst += kw
            src += full
        return
    for a in range(planes):
        for t in range(kd):
            for i in range(kh):
                _copy_row(dst + a * live + (t * kh + i) * kw, src + a * full + (t * fkh + i) * fkw, kw)


cdef void _uncrop_weights(const ConvPlan *p, const floating *src, Py_ssize_t planes,
                          floating *gw) noexcept nogil:
    """gw (planes, full_kh, full_kw) = src (planes, kh, kw) at the live taps, 0 at the dead
    ones (whose gradient sums grad_output times zero padding only).  Locals: see above."""
    cdef Py_ssize_t kh = p.g.kernel_h, kw = p.g.kernel_w, fkh = p.full_kh, fkw = p.full_kw
    cdef Py_ssize_t full = fkh * fkw, live = kh * kw, a, i, j
    cdef floating *dst = gw + p.tap_h0 * fkw + p.tap_w0
    memset(gw, 0, planes * full * sizeof(floating))
    for a in range(planes):
        for i in range(kh):
            for j in range(kw):
                dst[a * full + i * fkw + j] = src[a * live + i * kw + j]


# ---- bands: rectangles of equal live taps, each an unpadded im2col sub-pass ----------------

cdef inline void _copy_row(floating *dst, const floating *src, Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n] (never overlapping) by vector moves, no library call: the rows here
    (a band's, a kernel's live taps) are often shorter than a memcpy call costs."""
    if floating is float:
        copy_run_f32(dst, src, n)
    else:
        copy_run_f64(dst, src, n)


cdef void _copy_block(const floating *src, Py_ssize_t planes, Py_ssize_t h, Py_ssize_t w,
                      Py_ssize_t r0, Py_ssize_t rn, Py_ssize_t c0, Py_ssize_t cn,
                      floating *dst) noexcept nogil:
    """dst (planes, rn, cn) = src (planes, h, w)[:, r0:r0+rn, c0:c0+cn] (short rows: _copy_row)."""
    cdef Py_ssize_t a, i
    if rn == h and cn == w:
        memcpy(dst, src, planes * h * w * sizeof(floating))
        return
    if cn == w:               # whole rows: one run per plane
        for a in range(planes):
            _copy_row(dst + a * rn * w, src + (a * h + r0) * w, rn * w)
        return
    for a in range(planes):
        for i in range(rn):
            _copy_row(dst + (a * rn + i) * cn, src + (a * h + r0 + i) * w + c0, cn)


cdef void _paste_block(const floating *src, Py_ssize_t planes, Py_ssize_t rn, Py_ssize_t cn,
                       floating *dst, Py_ssize_t h, Py_ssize_t w, Py_ssize_t r0, Py_ssize_t c0,
                       bint add) noexcept nogil:
    """dst (planes, h, w)[:, r0:r0+rn, c0:c0+cn] = (or +=) src (planes, rn, cn)."""
    cdef Py_ssize_t a, i, j
    cdef floating *d
    cdef const floating *q
    for a in range(planes):
        for i in range(rn):
            d = dst + (a * h + r0 + i) * w + c0
            q = src + (a * rn + i) * cn
            if add:
                for j in range(cn):
                    d[j] += q[j]
            else:
                _copy_row(d, q, cn)


cdef void _band_task(const ConvPlan *p, const _BandTask *task, int tid,
                     const Py_ssize_t *bh, const Py_ssize_t *bw, const floating *a,
                     const floating *b, const floating *bias, floating *out, floating *ws,
                     Py_ssize_t wkh, Py_ssize_t wkw, Py_ssize_t wh0,
                     Py_ssize_t ww0) noexcept nogil:
    """One rectangle of a forward-shaped pass run side by side (_bands_pass), on thread
    tid's T_A block: its output block pasted into out."""
    cdef const cconv_geom *g = &p.g
    cdef Py_ssize_t C = g.channels, O = p.groups * p.m, Cin = p.groups * C
    cdef floating *blk = ws + p.off[R_THREADS] + tid * p.t_stride + p.t_off[T_A]
    cdef floating *xs = blk + p.band_t[0]
    cdef floating *ys = blk + p.band_t[1]
    cdef floating *wb = blk + p.band_t[2]
    cdef const Py_ssize_t *hb = bh + 4 * task.i
    cdef const Py_ssize_t *wbd = bw + 4 * task.j
    cdef cconv_geom s2
    _band_geom(g, p.split_h, p.split_w, hb, wbd, &s2)
    _copy_block(a, p.batch * Cin, g.in_h, g.in_w, _band_start(g, True, p.split_h, hb), s2.in_h,
                _band_start(g, False, p.split_w, wbd), s2.in_w, xs)
    _copy_block(b, O * C, wkh, wkw, wh0 + hb[2], s2.kernel_h, ww0 + wbd[2], s2.kernel_w, wb)
    _run_plan(&task.sub, xs, wb, bias, ys, blk + p.band_t[3])
    _paste_block(ys, p.batch * O, s2.out_h, s2.out_w, out, g.out_h, g.out_w, hb[0], wbd[0],
                 False)


cdef void _bands_side(const ConvPlan *p, const _BandTask *tasks, Py_ssize_t n,
                      const Py_ssize_t *bh, const Py_ssize_t *bw, const floating *a,
                      const floating *b, const floating *bias, floating *out, floating *ws,
                      Py_ssize_t wkh, Py_ssize_t wkw, Py_ssize_t wh0,
                      Py_ssize_t ww0) noexcept nogil:
    """The n rectangles run side by side, largest first, each on the thread that comes free
    (which one never changes a result)."""
    cdef Py_ssize_t t
    for t in prange(n, num_threads=<int>min(<Py_ssize_t>p.threads, n), schedule='dynamic'):
        _band_task(p, tasks + t, threadid(), bh, bw, a, b, bias, out, ws, wkh, wkw, wh0, ww0)


cdef int _bands_pass(const ConvPlan *p, int pass_, const floating *a, const floating *b,
                     const floating *bias, floating *out, floating *ws, Py_ssize_t wkh,
                     Py_ssize_t wkw, Py_ssize_t wh0, Py_ssize_t ww0) except -1:
    """A forward-shaped pass (x = a, w = b into y = out, + bias) or a weight gradient (x = a,
    grad_output = b into grad_weight = out) of bands plan p on its geometry p.g (the live
    taps of a trimmed plan), rectangle by rectangle (cconv_bands, _band_geom): each
    rectangle's input region (and grad_output block, or weight block) is copied into the
    plan's workspace ws (regions booked by _plan_bands), its sub-pass planned with im2col
    forced (an unpadded pass, the same algorithm on any thread count, so the same bits) and
    run, its result pasted (forward) or added (weight gradient, in the rectangles' order).
    On a team the small rectangles of a forward (_band_side) run first, side by side on one
    thread each, then the others one after another on p.sub_threads.  The weights (or
    weight gradient) have wkh x wkw taps, p.g's tap 0 at (wh0, ww0).  Outputs no rectangle
    covers read only padding: the bias, or no contribution."""
    cdef const cconv_geom *g = &p.g
    cdef Py_ssize_t C = g.channels, O = p.groups * p.m, Cin = p.groups * C, batch = p.batch
    cdef Py_ssize_t H = g.in_h, W = g.in_w, OH = g.out_h, OW = g.out_w
    cdef Py_ssize_t nh, nw, i, j, r0, c0, k, q, nside = 0
    cdef Py_ssize_t bh[4 * (2 * _BANDS_MAX_KERNEL + 2)]
    cdef Py_ssize_t bw[4 * (2 * _BANDS_MAX_KERNEL + 2)]
    cdef floating *xs = ws + p.off[R_BAND_INPUTS]
    cdef floating *ys = ws + p.off[R_BAND_OUTPUTS]
    cdef floating *wb = ws + p.off[R_CROPPED]
    cdef floating *sub_ws = ws + p.off[R_SUB_PASS]
    cdef _BandTask *tasks = <_BandTask *>(ws + p.off[R_BAND_TASKS])
    cdef _BandTask swap
    cdef ConvPlan sub
    cdef cconv_geom s2
    cdef double total = 0, macs
    nh = _bands_list(g, True, p.split_h, bh)
    nw = _bands_list(g, False, p.split_w, bw)
    with nogil:
        if pass_ == P_GRAD_WEIGHT:
            memset(out, 0, O * C * wkh * wkw * sizeof(floating))
        else:
            for k in range(batch * O):
                for q in range(OH * OW):
                    out[k * OH * OW + q] = bias[k % O] if bias != NULL else 0
    if p.side:
        for i in range(nh):
            for j in range(nw):
                _band_geom(g, p.split_h, p.split_w, bh + 4 * i, bw + 4 * j, &s2)
                total += _band_macs(p, &s2)
        for i in range(nh):
            for j in range(nw):
                _band_geom(g, p.split_h, p.split_w, bh + 4 * i, bw + 4 * j, &s2)
                macs = _band_macs(p, &s2)
                if not _band_side(p, macs, total):
                    continue
                if nside == p.side:
                    raise RuntimeError("bands: more rectangles side by side than planned")
                tasks[nside].sub = plan_conv(pass_, &s2, batch, p.groups, p.m,
                                             sizeof(floating), 1, F_ALL, A_IM2COL)[0]
                if tasks[nside].sub.ws_elems > p.t_size[T_A] - p.band_t[3]:
                    raise RuntimeError("bands: a sub-pass needs more workspace than booked")
                tasks[nside].i = i
                tasks[nside].j = j
                tasks[nside].macs = macs
                nside += 1
                k = nside - 1          # largest first (insertion, stable)
                while k > 0 and tasks[k - 1].macs < tasks[k].macs:
                    swap = tasks[k - 1]
                    tasks[k - 1] = tasks[k]
                    tasks[k] = swap
                    k -= 1
        if nside != p.side:
            raise RuntimeError("bands: fewer rectangles side by side than planned")
        with nogil:
            _bands_side(p, tasks, nside, bh, bw, a, b, bias, out, ws, wkh, wkw, wh0, ww0)
    for i in range(nh):
        r0 = _band_start(g, True, p.split_h, bh + 4 * i)
        for j in range(nw):
            c0 = _band_start(g, False, p.split_w, bw + 4 * j)
            _band_geom(g, p.split_h, p.split_w, bh + 4 * i, bw + 4 * j, &s2)
            if p.side and _band_side(p, _band_macs(p, &s2), total):
                continue                          # ran side by side
            # the parent plan assumed its weights (grad_output) finite, so are their blocks
            sub = plan_conv(pass_, &s2, batch, p.groups, p.m, sizeof(floating), p.sub_threads,
                            F_ALL, A_IM2COL)[0]
            if sub.ws_elems > p.size[R_SUB_PASS]:
                raise RuntimeError("bands: a sub-pass needs more workspace than its plan booked")
            with nogil:
                _copy_block(a, batch * Cin, H, W, r0, s2.in_h, c0, s2.in_w, xs)
                if pass_ == P_GRAD_WEIGHT:
                    _copy_block(b, batch * O, OH, OW, bh[4 * i], s2.out_h, bw[4 * j], s2.out_w,
                                ys)
                    _run_plan(&sub, xs, ys, <const floating *>NULL, wb, sub_ws)
                    _paste_block(wb, O * C, s2.kernel_h, s2.kernel_w, out, wkh, wkw,
                                 wh0 + bh[4 * i + 2], ww0 + bw[4 * j + 2], True)
                else:
                    _copy_block(b, O * C, wkh, wkw, wh0 + bh[4 * i + 2], s2.kernel_h,
                                ww0 + bw[4 * j + 2], s2.kernel_w, wb)
                    _run_plan(&sub, xs, wb, bias, ys, sub_ws)
                    _paste_block(ys, batch * O, s2.out_h, s2.out_w, out, OH, OW, bh[4 * i],
                                 bw[4 * j], False)
    return 0


cdef int _bands_run(const ConvPlan *p, const floating *a, const floating *b,
                    const floating *bias, floating *out) except -1:
    """Run a bands plan (operands as _execute's) on p.g, in its workspace; a stride-1 input
    gradient as the forward of grad_output with the flipped, transposed kernel (p.g is that
    transposed geometry, on the live taps of a trimmed plan: those are flipped)."""
    cdef Py_ssize_t kh = p.g.kernel_h, kw = p.g.kernel_w
    cdef Py_ssize_t fkh = p.full_kh if p.trimmed else kh, fkw = p.full_kw if p.trimmed else kw
    cdef Py_ssize_t h0 = p.tap_h0 if p.trimmed else 0, w0 = p.tap_w0 if p.trimmed else 0
    cdef Py_ssize_t C = p.m, mo = p.g.channels, gi, c, o, i, j
    cdef _Scratch scratch = _scratch_for(p)
    cdef floating *ws = <floating *>_ptr(scratch)
    cdef floating *wt
    try:
        if p.pass_ != P_GRAD_INPUT:
            return _bands_pass(p, p.pass_, a, b, bias, out, ws, fkh, fkw, h0, w0)
        # via_forward: p.m is the conv's input channels per group, p.g.channels its outputs
        wt = ws + p.off[R_FLIPPED]
        with nogil:
            for gi in range(p.groups):
                for c in range(C):
                    for o in range(mo):
                        for i in range(kh):
                            for j in range(kw):
                                wt[(((gi * C + c) * mo + o) * kh + kh - 1 - i) * kw + kw - 1 - j] = \
                                    b[(((gi * mo + o) * C + c) * fkh + h0 + i) * fkw + w0 + j]
        return _bands_pass(p, P_FORWARD, a, wt, <const floating *>NULL, out, ws, kh, kw, 0, 0)
    finally:
        if scratch is not None:
            scratch.release()


cdef void _run_plan(const ConvPlan *p, const floating *a, const floating *b,
                    const floating *bias, floating *out, floating *ws) noexcept nogil:
    """Run pass p (anything but A_EMPTY and A_BANDS) into out in workspace ws (p.ws_elems
    elements, 64-byte aligned); operands as _execute's."""
    cdef floating small_wt[_SMALL_WEIGHTS]
    cdef floating *wt
    cdef floating *cropped = ws + p.off[R_CROPPED] if p.trimmed else NULL
    cdef Py_ssize_t planes = p.groups * p.m * p.g.channels    # out x in-per-group channels
    if p.trimmed and p.pass_ != P_GRAD_WEIGHT:    # run on the live taps' weights
        _crop_weights(p, b, planes, cropped)
        b = cropped
    if p.pass_ == P_FORWARD:
        _forward(p, a, b, bias, out, ws)
    elif p.pass_ == P_GRAD_WEIGHT and p.trimmed:
        _grad_weight(p, a, b, cropped, ws)
        _uncrop_weights(p, cropped, planes, out)
    elif p.pass_ == P_GRAD_WEIGHT:
        _grad_weight(p, a, b, out, ws)
    elif p.algo == A_ROWS:
        _grad_input_rows(p, a, b, out, ws)
    elif not p.via_forward:
        _grad_input_col2im(p, a, b, out, ws)
    elif p.in_place:    # 1x1: _forward packs W^T straight from the weights
        _forward(p, a, b, NULL, out, ws)
    else:
        wt = &small_wt[0] if p.size[R_FLIPPED] == 0 else ws + p.off[R_FLIPPED]
        _flip(p, b, wt)
        _forward(p, a, wt, NULL, out, ws)


cdef void _plan_key(const ConvPlan *p, Py_ssize_t *key) noexcept nogil:
    """The timed team choice's key (threads.pxi) of a plan: what sets its time."""
    cdef const cconv_geom *g = &p.g
    cdef Py_ssize_t fields[_TEAM_KEY]
    fields[:] = [p.pass_ | (p.algo << 4) | (p.itemsize << 12) | (p.via_forward << 20),
                 p.threads | (p.side_threads << 16), p.batch, p.groups, p.m,
                 g.channels, g.in_h, g.in_w, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                 g.pad_top, g.pad_left, g.dilation_h, g.dilation_w, g.out_h, g.out_w,
                 p.d.in_d, p.d.kernel_d, p.d.stride_d, p.d.pad_front, p.d.dilation_d, p.d.out_d]
    memcpy(key, fields, sizeof(fields))


cdef int _execute(const ConvPlan *p, const floating *a, const floating *b,
                  const floating *bias, floating *out) except -1:
    """Run pass p (anything but A_EMPTY) into out; a, b: its operands in the planner's order
    (forward: x, w; grad_input: grad_output, w; grad_weight: x, grad_output), on the plan's
    team or on one thread, whichever the timed team choice (threads.pxi) finds faster."""
    cdef Py_ssize_t key[_TEAM_KEY]
    cdef TimedTeam tt
    cdef ConvPlan one
    cdef int team = max(p.threads, p.side_threads)
    if p.algo == A_BANDS or team < 2 or not _adaptive_teams:
        return _execute_plan(p, a, b, bias, out)
    _plan_key(p, key)
    if _timed_team_start(&tt, key, team) == 1:
        one = p[0]
        one.threads = one.side_threads = 1
        p = &one
    _execute_plan(p, a, b, bias, out)
    _timed_team_end(&tt)
    return 0


cdef int _execute_plan(const ConvPlan *p, const floating *a, const floating *b,
                       const floating *bias, floating *out) except -1:
    """_execute on the plan's own team."""
    if p.algo == A_BANDS:
        return _bands_run(p, a, b, bias, out)
    cdef _Scratch scratch = _scratch_for(p)
    cdef floating *ws = <floating *>_ptr(scratch)
    try:
        with nogil:
            _run_plan(p, a, b, bias, out, ws)
    finally:
        if scratch is not None:
            scratch.release()
    return 0


include "conv_autotune.pxi"


cdef struct _Geom:
    cconv_geom s                  # one image-and-group slice
    Py_ssize_t batch, groups, in_channels, out_channels


cdef _Geom _geom_of(g):
    """The geometry of ``g`` (a cconv._shapes.ConvGeometry) as the passes read it."""
    cdef _Geom c
    c.s = _slice_geom(g)
    c.batch = g.batch
    c.groups = g.groups
    c.in_channels = g.in_channels
    c.out_channels = g.out_channels
    return c


cdef void _shapes_of(const _Geom *c, cnp.npy_intp *x, cnp.npy_intp *w,
                     cnp.npy_intp *y) noexcept:
    """The shapes of conv2d's input (= grad_input), weight (= grad_weight; its first
    extent is the bias's) and output (= grad_output)."""
    x[0] = c.batch
    x[1] = c.in_channels
    x[2] = c.s.in_h
    x[3] = c.s.in_w
    w[0] = c.out_channels
    w[1] = c.s.channels
    w[2] = c.s.kernel_h
    w[3] = c.s.kernel_w
    y[0] = c.batch
    y[1] = c.out_channels
    y[2] = c.s.out_h
    y[3] = c.s.out_w


cdef inline Py_ssize_t _count(const cnp.npy_intp *dims) noexcept:
    return dims[0] * dims[1] * dims[2] * dims[3]


cdef inline bint _fits(a, int typenum, int ndim, const cnp.npy_intp *dims) noexcept:
    """Whether ``a`` is an exact ndarray the kernels can read in place as an array of
    ``typenum`` (native byte order) and shape ``dims``: C-contiguous and aligned."""
    cdef int in_place = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == ndim
            and cnp.PyArray_FLAGS(arr) & in_place == in_place
            and cnp.PyArray_ISNOTSWAPPED(arr)
            and memcmp(cnp.PyArray_DIMS(arr), dims, ndim * sizeof(cnp.npy_intp)) == 0)


cdef int _float_type(a) except -1:
    if cnp.PyArray_CheckExact(a):
        if cnp.PyArray_TYPE(<cnp.ndarray>a) in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE):
            return cnp.PyArray_TYPE(<cnp.ndarray>a)
    raise TypeError(f"expected a float32 or float64 array, got {type(a).__name__}")


cdef int _require(a, int typenum, int ndim, const cnp.npy_intp *dims, str name) except -1:
    """Refuse an array the kernels cannot read in place (the Python layer makes them so)."""
    if not _fits(a, typenum, ndim, dims):
        raise ValueError(f"{name}: expected a C-contiguous, aligned array of shape "
                         f"{tuple(dims[i] for i in range(ndim))} and the input's dtype, got "
                         f"{getattr(a, 'shape', type(a).__name__)}")
    return 0


cdef inline void *_data_of(a) noexcept:
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _forward_run(const _Geom *c, const floating *x, const floating *w,
                      const floating *bias, floating *y, int threads) except -1:
    """y (N, O, Ho, Wo) = conv2d(x, w) + bias; arrays C-contiguous, of c's shapes."""
    cdef Py_ssize_t O = c.out_channels, P = c.s.out_h * c.s.out_w, i, j
    cdef Py_ssize_t n_x = c.batch * c.in_channels * c.s.in_h * c.s.in_w
    cdef Py_ssize_t n_w = O * c.s.channels * c.s.kernel_h * c.s.kernel_w
    cdef bint done
    cdef ConvPlan plan
    x = x if n_x else NULL
    w = w if n_w else NULL
    y = y if c.batch * O * P else NULL
    plan = _select(P_FORWARD, &c.s, c.batch, c.groups, O // c.groups, threads, x, n_x, w, n_w,
                   bias, y, &done)
    _ran[plan.algo][P_FORWARD] += 1
    if plan.algo == A_IM2COL and plan.pointwise:
        _pw_ran[0][plan.in_place] += 1
    if plan.algo == A_EMPTY:   # the output is the bias
        for i in range(c.batch * O):
            for j in range(P):
                y[i * P + j] = bias[i % O] if bias != NULL else 0
    elif not done:
        _execute(&plan, x, w, bias, y)
    return 0


cdef int _forward_arrays(const _Geom *c, int typenum, x, w, b, y, int threads) except -1:
    if typenum == cnp.NPY_FLOAT:
        _forward_run[float](c, <const float *>_data_of(x), <const float *>_data_of(w),
                            <const float *>_data_of(b), <float *>_data_of(y), threads)
    else:
        _forward_run[double](c, <const double *>_data_of(x), <const double *>_data_of(w),
                             <const double *>_data_of(b), <double *>_data_of(y), threads)
    return 0


def conv2d(x, w, b, g, int threads):
    """y (N, O, Ho, Wo) = conv2d(x (N, C, H, W), w (O, C/groups, kh, kw), b (O,) or None)
    on ``threads`` threads at most."""
    cdef _Geom c = _geom_of(g)
    cdef cnp.npy_intp xd[4]
    cdef cnp.npy_intp wd[4]
    cdef cnp.npy_intp yd[4]
    cdef int typenum = _float_type(x)
    _shapes_of(&c, xd, wd, yd)
    _require(x, typenum, 4, xd, "input")
    _require(w, typenum, 4, wd, "weight")
    if b is not None:
        _require(b, typenum, 1, wd, "bias")
    y = cnp.PyArray_EMPTY(4, yd, typenum, 0)
    _forward_arrays(&c, typenum, x, w, b, y, threads)
    return y


cdef void _flip(const ConvPlan *p, const floating *w, floating *wt) noexcept nogil:
    """wt[g, c, o, kh-1-i, kw-1-j] = w[g, o, c, i, j]: the stride-1 input gradient's kernel
    (p: its plan, on the transposed geometry: p.m input channels of the conv2d, p.g.channels
    its output channels per group; a volume plan flips the depth taps too)."""
    cdef Py_ssize_t khw = p.g.kernel_h * p.g.kernel_w * (p.d.kernel_d if p.algo == A_VOLUME else 1)
    cdef Py_ssize_t C = p.m, m = p.g.channels
    cdef Py_ssize_t gidx, c, o, r
    for gidx in range(p.groups):
        for c in range(C):
            for o in range(m):
                for r in range(khw):
                    wt[((gidx * C + c) * m + o) * khw + khw - 1 - r] = \
                        w[((gidx * m + o) * C + c) * khw + r]


cdef int _backward_run(const _Geom *c, const floating *gy, const floating *x,
                       const floating *w, floating *gi, floating *gw, floating *gb,
                       int threads) except -1:
    """The requested gradients (gi, gw, gb not NULL) of conv2d; arrays C-contiguous, of c's
    shapes (x is read only for gw)."""
    cdef Py_ssize_t O = c.out_channels, m = O // c.groups
    cdef Py_ssize_t n_gy = c.batch * O * c.s.out_h * c.s.out_w
    cdef Py_ssize_t n_x = c.batch * c.in_channels * c.s.in_h * c.s.in_w
    cdef Py_ssize_t n_w = O * c.s.channels * c.s.kernel_h * c.s.kernel_w
    cdef ConvPlan plan
    cdef bint done
    gy = gy if n_gy else NULL
    w = w if n_w else NULL
    if gb != NULL:
        plan = _plan(P_GRAD_BIAS, &c.s, c.batch, c.groups, m, sizeof(floating), threads,
                     NULL, 0, NULL, 0)
        _ran[plan.algo][P_GRAD_BIAS] += 1
        with nogil:
            _grad_bias(&plan, gy, gb)
    if gw != NULL:
        x = x if n_x else NULL
        plan = _select(P_GRAD_WEIGHT, &c.s, c.batch, c.groups, m, threads, x, n_x, gy, n_gy,
                       <const floating *>NULL, gw if n_w else NULL, &done)
        _ran[plan.algo][P_GRAD_WEIGHT] += 1
        if plan.algo == A_DOT:
            _dot_ran[2 if plan.pointwise else plan.dot_finite] += 1
        if plan.algo == A_EMPTY:
            memset(gw, 0, n_w * sizeof(floating))
        elif not done:
            _execute(&plan, x, gy, <const floating *>NULL, gw)
    if gi != NULL:
        plan = _select(P_GRAD_INPUT, &c.s, c.batch, c.groups, m, threads, gy, n_gy, w, n_w,
                       <const floating *>NULL, gi if n_x else NULL, &done)
        _ran[plan.algo][P_GRAD_INPUT] += 1
        if plan.algo == A_IM2COL and plan.pointwise:
            _pw_ran[1][plan.in_place] += 1
        if plan.algo == A_EMPTY or n_x == 0:
            memset(gi, 0, n_x * sizeof(floating))
        elif not done:
            _execute(&plan, gy, w, <const floating *>NULL, gi)
    return 0


cdef int _backward_arrays(const _Geom *c, int typenum, gy, x, w, gi, gw, gb,
                          int threads) except -1:
    if typenum == cnp.NPY_FLOAT:
        _backward_run[float](c, <const float *>_data_of(gy), <const float *>_data_of(x),
                             <const float *>_data_of(w), <float *>_data_of(gi),
                             <float *>_data_of(gw), <float *>_data_of(gb), threads)
    else:
        _backward_run[double](c, <const double *>_data_of(gy), <const double *>_data_of(x),
                              <const double *>_data_of(w), <double *>_data_of(gi),
                              <double *>_data_of(gw), <double *>_data_of(gb), threads)
    return 0


def conv2d_backward(gy, x, w, g, bint need_input, bint need_weight, bint need_bias,
                    int threads):
    """(grad_input (N, C, H, W), grad_weight (O, C/groups, kh, kw), grad_bias (O,)) of conv2d,
    ``None`` where not requested; ``x`` may be None when the weight gradient is not needed."""
    cdef _Geom c = _geom_of(g)
    cdef cnp.npy_intp xd[4]
    cdef cnp.npy_intp wd[4]
    cdef cnp.npy_intp yd[4]
    cdef int typenum = _float_type(gy)
    _shapes_of(&c, xd, wd, yd)
    _require(gy, typenum, 4, yd, "grad_output")
    _require(w, typenum, 4, wd, "weight")
    if need_weight:
        _require(x, typenum, 4, xd, "input")
    gi = cnp.PyArray_EMPTY(4, xd, typenum, 0) if need_input else None
    gw = cnp.PyArray_EMPTY(4, wd, typenum, 0) if need_weight else None
    gb = cnp.PyArray_EMPTY(1, wd, typenum, 0) if need_bias else None
    _backward_arrays(&c, typenum, gy, x if need_weight else None, w, gi, gw, gb, threads)
    return gi, gw, gb


# --------------------------------------------------------------------------
# conv3d on the volume algorithm
# --------------------------------------------------------------------------

cdef int _volume_plan(ConvPlan *p, int pass_, g, tuple depth, w, int threads) except -1:
    """plan_volume for a conv3d pass, its weights' finiteness checked when the plan assumes
    it.  g: the (h, w) geometry (cconv._shapes.ConvGeometry); depth: (in_d, kernel_d,
    stride_d, pad_front, dilation_d, out_d)."""
    cdef cconv_geom s = _slice_geom(g)
    cdef cconv_depth d
    cdef int itemsize = w.itemsize
    cdef const unsigned char[::1] wb = _bytes(w)
    d.in_d, d.kernel_d, d.stride_d, d.pad_front, d.dilation_d, d.out_d = depth
    cdef Py_ssize_t m = g.out_channels // g.groups
    if not plan_volume(p, pass_, &s, &d, g.batch, g.groups, m, itemsize, threads, F_ALL):
        return False
    if p.needs & F_OTHER and not _finite(_data(wb), w.size, itemsize):
        return plan_volume(p, pass_, &s, &d, g.batch, g.groups, m, itemsize, threads, F_DATA)
    return True


def conv3d(x, w, b, g, tuple depth, int threads):
    """y (N, O, Do, Ho, Wo) = conv3d(x (N, C, D, H, W), w (O, C/groups, kd, kh, kw), b) on the
    volume algorithm, or None where the planner folds the depth taps into a conv2d instead.
    g: the (h, w) conv2d geometry; depth: (D, kd, stride, pad_front, dilation, Do)."""
    cdef ConvPlan plan
    if not _volume_plan(&plan, P_FORWARD, g, depth, w, threads):
        return None
    y = np.empty((g.batch, g.out_channels, depth[5], g.out_h, g.out_w), dtype=x.dtype)
    _ran[A_VOLUME][P_FORWARD] += 1
    _vol_ran[plan.vol_wide] += 1
    if x.itemsize == 4:
        _execute[float](&plan, <float *><uintptr_t>x.ctypes.data, <float *><uintptr_t>w.ctypes.data,
                        <float *><uintptr_t>b.ctypes.data if b is not None else NULL,
                        <float *><uintptr_t>y.ctypes.data)
    else:
        _execute[double](&plan, <double *><uintptr_t>x.ctypes.data, <double *><uintptr_t>w.ctypes.data,
                         <double *><uintptr_t>b.ctypes.data if b is not None else NULL,
                         <double *><uintptr_t>y.ctypes.data)
    return y


def conv3d_grad_input(gy, w, g, tuple depth, int threads):
    """grad_input (N, C, D, H, W) of :func:`conv3d` from gy (N, O, Do, Ho, Wo) on the volume
    algorithm, or None where the planner folds the depth taps into a conv2d instead."""
    cdef ConvPlan plan
    if not _volume_plan(&plan, P_GRAD_INPUT, g, depth, w, threads):
        return None
    gi = np.empty((g.batch, g.in_channels, depth[0], g.in_h, g.in_w), dtype=gy.dtype)
    _ran[A_VOLUME][P_GRAD_INPUT] += 1
    _vol_ran[plan.vol_wide] += 1
    if gy.itemsize == 4:
        _execute[float](&plan, <float *><uintptr_t>gy.ctypes.data, <float *><uintptr_t>w.ctypes.data,
                        NULL, <float *><uintptr_t>gi.ctypes.data)
    else:
        _execute[double](&plan, <double *><uintptr_t>gy.ctypes.data, <double *><uintptr_t>w.ctypes.data,
                         NULL, <double *><uintptr_t>gi.ctypes.data)
    return gi


def explain_volume(w, g, tuple depth, int threads, bint forward):
    """{pass: explain entry} of the conv3d passes the volume algorithm runs (forward, or
    grad_input of a backward call); passes that fold into a conv2d are left out."""
    cdef ConvPlan plan
    name = "forward" if forward else "grad_input"
    if not _volume_plan(&plan, P_FORWARD if forward else P_GRAD_INPUT, g, depth, w, threads):
        return {}
    info = _describe(&plan)
    info["depth_planes_per_task"] = int(plan.dchunk)
    info["output_rows"] = ("whole panels, written in place" if plan.vol_rows
                           else "grid panels, copied out")
    return {name: info}


# --------------------------------------------------------------------------
# conv3d with kernel == stride and no padding: non-overlapping patches
# --------------------------------------------------------------------------

cdef void _patch_plane(floating *big, floating *small, Py_ssize_t H, Py_ssize_t W,
                       Py_ssize_t kd, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t Do,
                       Py_ssize_t Ho, Py_ssize_t Wo, bint scatter) noexcept nogil:
    """One (D, H, W) plane `big` and its kd*kh*kw patch planes `small` (tap-major, each
    (Do, Ho, Wo)): small[(a, b, q), i, j, t] = big[i*kd + a, j*kh + b, t*kw + q], copied
    small <- big (gather) or big <- small (scatter); nothing else of big is touched."""
    cdef Py_ssize_t P = Do * Ho * Wo, a, b, q, i, j, t
    cdef floating *row
    cdef floating *col
    for a in range(kd):
        for i in range(Do):
            for b in range(kh):
                for j in range(Ho):
                    row = big + ((i * kd + a) * H + j * kh + b) * W
                    for q in range(kw):
                        col = small + ((a * kh + b) * kw + q) * P + (i * Ho + j) * Wo
                        if scatter:
                            for t in range(Wo):
                                row[t * kw + q] = col[t]
                        else:
                            for t in range(Wo):
                                col[t] = row[t * kw + q]


cdef void _patch_planes(floating *big, floating *small, Py_ssize_t planes, Py_ssize_t D,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t kd, Py_ssize_t kh, Py_ssize_t kw,
                        bint scatter, int threads) noexcept nogil:
    cdef Py_ssize_t Do = D // kd, Ho = H // kh, Wo = W // kw, r
    cdef Py_ssize_t taps = kd * kh * kw, P = Do * Ho * Wo
    cdef bint covered = Do * kd == D and Ho * kh == H and Wo * kw == W
    for r in prange(planes, nogil=True, schedule="static", num_threads=threads):
        if scatter and not covered:   # input elements no patch reads get a zero gradient
            memset(big + r * D * H * W, 0, D * H * W * sizeof(floating))
        _patch_plane(big + r * D * H * W, small + r * taps * P, H, W, kd, kh, kw, Do, Ho, Wo,
                     scatter)


def conv3d_patches(a, tuple shape, tuple kernel, bint scatter, int threads):
    """The non-overlapping patches of a conv3d whose kernel equals its stride (no padding,
    no dilation): gather: a = x (N, C, D, H, W) -> (N, C*kd*kh*kw, Do, Ho*Wo), each channel's
    taps (kd, kh, kw) in the weight's order, so the conv3d is a 1x1 conv2d of these with
    w (O, C/groups*kd*kh*kw, 1, 1); scatter: a = that 1x1 conv2d's grad_input ->
    grad_input (N, C, D, H, W) of `shape` (zeros where no patch reads: the edge remainders).
    a: C-contiguous float32/float64; shape: x's shape."""
    cdef Py_ssize_t n, c, D, H, W, kd, kh, kw
    n, c, D, H, W = shape
    kd, kh, kw = kernel
    cdef Py_ssize_t Do = D // kd, Ho = H // kh, Wo = W // kw
    # memory-bound copies: a second thread only for copies of a few L2s or more
    cdef int team = threads if n * c * D * H * W * a.itemsize >= 4 * 1048576 else 1
    if scatter:
        big = np.empty((n, c, D, H, W), dtype=a.dtype)
        small = a
    else:
        big = a
        small = np.empty((n, c * kd * kh * kw, Do, Ho * Wo), dtype=a.dtype)
    if a.itemsize == 4:
        _patch_planes[float](<float *><uintptr_t>big.ctypes.data,
                             <float *><uintptr_t>small.ctypes.data, n * c, D, H, W, kd, kh, kw,
                             scatter, team)
    else:
        _patch_planes[double](<double *><uintptr_t>big.ctypes.data,
                              <double *><uintptr_t>small.ctypes.data, n * c, D, H, W, kd, kh, kw,
                              scatter, team)
    return big if scatter else small


# --------------------------------------------------------------------------
# conv3d folded into a conv2d: its input gradient's scatter back into the depth slices
# --------------------------------------------------------------------------

cdef void _depth_scatter(const floating *z, floating *b, Py_ssize_t rows, Py_ssize_t hw,
                         Py_ssize_t size, Py_ssize_t out, Py_ssize_t groups, Py_ssize_t taps,
                         Py_ssize_t cg, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t dil,
                         int threads) noexcept nogil:
    """The adjoint of the depth fold: b (n, groups, cg, size, hw) row (.., g, c, i) = 0 plus
    the rows of z (n, out, groups, taps, cg, hw) that read slice i, added in tap order (the
    NumPy fold's own order, so the same bits)."""
    cdef Py_ssize_t r, c, t, gi, nn, i, q, j, k
    cdef floating *dst
    cdef const floating *src
    for r in prange(rows, nogil=True, schedule="static", num_threads=threads):
        i = r % size
        c = r // size % cg
        gi = r // (size * cg) % groups
        nn = r // (size * cg * groups)
        dst = b + r * hw
        memset(dst, 0, hw * sizeof(floating))
        for t in range(taps):
            q = i + pad - t * dil
            if q < 0 or q % stride != 0 or q // stride >= out:
                continue
            j = q // stride
            src = z + ((((nn * out + j) * groups + gi) * taps + t) * cg + c) * hw
            for k in range(hw):
                dst[k] = dst[k] + src[k]


def conv3d_depth_scatter(z, tuple shape, tuple depth, Py_ssize_t groups, int threads):
    """The adjoint of a conv3d's depth fold (cconv._api_nd._scatter_depth): the folded
    conv2d's grad_input z (N*Do, groups*kd*C/groups, H, W) -> grad_input (N, C, D, H, W) of
    `shape`, each input slice written once (zeros plus its taps' rows, in tap order).
    depth: (D, kd, stride, pad_front, dilation, Do); z: C-contiguous float32/float64."""
    cdef Py_ssize_t n, c, D, H, W, kd, st, pad, dil, Do
    n, c, D, H, W = shape
    D, kd, st, pad, dil, Do = depth
    cdef Py_ssize_t cg = c // groups, hw = H * W, rows = n * c * D
    # memory-bound: a second thread only for copies of a few L2s or more
    cdef int team = threads if rows * hw * z.itemsize >= 4 * 1048576 else 1
    gx = np.empty((n, c, D, H, W), dtype=z.dtype)
    if z.itemsize == 4:
        _depth_scatter[float](<float *><uintptr_t>z.ctypes.data, <float *><uintptr_t>gx.ctypes.data,
                              rows, hw, D, Do, groups, kd, cg, st, pad, dil, team)
    else:
        _depth_scatter[double](<double *><uintptr_t>z.ctypes.data,
                               <double *><uintptr_t>gx.ctypes.data,
                               rows, hw, D, Do, groups, kd, cg, st, pad, dil, team)
    return gx


# --------------------------------------------------------------------------
# remembered calls: a validated call's geometry kept in C
# --------------------------------------------------------------------------

cdef Py_ssize_t _ready_calls = 0     # calls served by the *_ready entry points (for tests)


cdef int _caller_shape(shape, Py_ssize_t count, cnp.npy_intp *dims) except -1:
    """dims = shape (1 to 4 extents holding `count` elements, the same memory as the
    geometry's 4-d array); returns its length."""
    cdef Py_ssize_t n = 1, i
    if not 1 <= len(shape) <= 4:
        raise ValueError(f"a remembered call's arrays have 1 to 4 dims, got {shape}")
    for i in range(len(shape)):
        dims[i] = shape[i]
        n *= dims[i]
    if n != count or min(shape) < 0:
        raise ValueError(f"shape {shape} does not hold the geometry's {count} elements")
    return len(shape)


cdef class ConvCall:
    """A conv2d call that passed validation: its geometry and dtype, and each array's shape
    as the caller passes it (without the batch axis when unbatched; (N, C, L) for a 1-d conv,
    the same memory as (N, C, 1, L)), made once when cconv's Python layer remembers the call.
    Its repeats run through conv2d_ready / conv2d_backward_ready, which check in C that each
    array is still one the kernels can read in place, then take its data pointer.  The plan
    is looked up on every call (a hash of the slice geometry with the thread count of the
    moment), so thread count and autotune changes apply to remembered calls as to any other."""
    cdef _Geom geom
    cdef int typenum
    cdef int x_nd, w_nd, y_nd
    cdef cnp.npy_intp x[4]        # input and grad_input
    cdef cnp.npy_intp w[4]        # weight and grad_weight
    cdef cnp.npy_intp y[4]        # output and grad_output
    cdef cnp.npy_intp b[1]        # bias and grad_bias

    def __cinit__(self, g, dtype, x_shape, w_shape, y_shape):
        cdef cnp.npy_intp x4[4]
        cdef cnp.npy_intp w4[4]
        cdef cnp.npy_intp y4[4]
        self.geom = _geom_of(g)
        self.typenum = np.dtype(dtype).num
        if self.typenum not in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE):
            raise TypeError(f"expected float32 or float64, got {np.dtype(dtype)}")
        _shapes_of(&self.geom, x4, w4, y4)
        self.x_nd = _caller_shape(x_shape, _count(x4), self.x)
        self.w_nd = _caller_shape(w_shape, _count(w4), self.w)
        self.y_nd = _caller_shape(y_shape, _count(y4), self.y)
        self.b[0] = w4[0]


def conv2d_ready(x, w, b, ConvCall c not None, int threads):
    """conv2d of a remembered call, its output shaped as the call remembers; None when an
    array is not as remembered (not an exact ndarray of the call's dtype and shape,
    C-contiguous and aligned): the caller then takes the checked path."""
    global _ready_calls
    cdef int t = c.typenum
    if not (_fits(x, t, c.x_nd, c.x) and _fits(w, t, c.w_nd, c.w)
            and (b is None or _fits(b, t, 1, c.b))):
        return None
    y = cnp.PyArray_EMPTY(c.y_nd, c.y, t, 0)
    _forward_arrays(&c.geom, t, x, w, b, y, threads)
    _ready_calls += 1
    return y


def conv2d_backward_ready(gy, x, w, ConvCall c not None, bint need_input, bint need_weight,
                          bint need_bias, int threads):
    """conv2d_backward of a remembered call (gradients as in conv2d_backward, shaped as the
    call's arrays); None when an array is not as remembered."""
    global _ready_calls
    cdef int t = c.typenum
    if not (_fits(gy, t, c.y_nd, c.y) and _fits(x, t, c.x_nd, c.x)
            and _fits(w, t, c.w_nd, c.w)):
        return None
    gi = cnp.PyArray_EMPTY(c.x_nd, c.x, t, 0) if need_input else None
    gw = cnp.PyArray_EMPTY(c.w_nd, c.w, t, 0) if need_weight else None
    gb = cnp.PyArray_EMPTY(1, c.b, t, 0) if need_bias else None
    _backward_arrays(&c.geom, t, gy, x, w, gi, gw, gb, threads)
    _ready_calls += 1
    return gi, gw, gb


def ready_calls():
    """Calls served by conv2d_ready and conv2d_backward_ready since import (tests)."""
    return int(_ready_calls)


# --------------------------------------------------------------------------
# explaining a call, build information
# --------------------------------------------------------------------------

cdef str _isa_of(const ConvPlan *p):
    if p.algo in (A_EMPTY, A_DIRECT, A_SUM):
        return "generic"
    if p.algo == A_LANES:
        return "avx512f"
    if p.algo == A_ROWS or p.algo == A_DEPTHWISE:    # their drivers dispatch on the ISA level
        return ISA_NAMES[cconv_isa_level]
    name = (<const kernel_f32 *>p.kern).isa if p.itemsize == 4 else \
        (<const kernel_f64 *>p.kern).isa
    return name.decode().split("+")[0]


cdef dict _describe(const ConvPlan *p, tuned=None):
    """explain's entry of a plan; tuned: its autotune entry (want, algo, timings), if any."""
    selected = "predicted"
    if tuned is not None and tuned[2] is not None:
        selected = "tuned"
        reason = ("autotune: the fastest of the %d algorithms that apply, timed on this "
                  "geometry's first call" % len(tuned[2]))
    elif p.forced == 1:
        selected = "forced"
        reason = "forced by CCONV_CONV_ALGO"
    else:
        reason = REASONS[p.reason]
        if p.forced == -1:
            reason = (f"CCONV_CONV_ALGO={ALGORITHMS[_env_algo]} does not apply here; "
                      + reason)
    if p.via_forward:
        reason = "stride 1: a forward conv of grad_output with the flipped kernel; " + reason
    regions = {REGION_NAMES[r]: int(p.size[r] * p.itemsize)
               for r in range(N_REGIONS) if p.size[r]}
    info = {"algorithm": ALGORITHMS[p.algo], "isa": _isa_of(p), "threads": int(p.threads),
            "workspace_bytes": int(p.ws_elems * p.itemsize), "reason": reason,
            "workspace": regions, "selected": selected}
    if selected == "tuned":
        info["timings_us"] = dict(tuned[2])
    if p.trimmed:   # rows and columns [first, last] of the kernel the pass runs
        info["taps"] = {"rows": (int(p.tap_h0), int(p.tap_h0 + p.g.kernel_h - 1)),
                        "cols": (int(p.tap_w0), int(p.tap_w0 + p.g.kernel_w - 1)),
                        "kernel": (int(p.full_kh), int(p.full_kw))}
        full = f"{p.full_kh}x{p.full_kw}"
        if p.algo == A_VOLUME:
            info["taps"]["depth"] = (int(p.tap_d0), int(p.tap_d0 + p.d.kernel_d - 1))
            info["taps"]["kernel"] = (int(p.full_kd),) + info["taps"]["kernel"]
            full = f"{p.full_kd}x{full}"
        info["reason"] = (f"only kernel taps {info['taps']['rows']} x {info['taps']['cols']} "
                          f"of {full} read the input, the others only zero "
                          "padding: the cropped kernel; " + info["reason"])
    if p.algo not in (A_EMPTY, A_DIRECT, A_SUM, A_ROWS, A_DEPTHWISE):
        info["tile"] = (int(p.mr), int(p.nr))
    blocking = _blocking_used(p)
    if blocking:
        info["blocking"] = blocking
    if p.algo == A_BANDS:     # rectangles of the output, each an unpadded im2col sub-pass
        info["pieces"] = int(p.pieces)
        info["split"] = ("rows x cols" if p.split_h and p.split_w
                         else "rows" if p.split_h else "cols")
        info["side_by_side"] = int(p.side)   # rectangles run one per thread
    if p.algo == A_COL2IM and p.nimg > 1:    # images of a few pixels share a GEMM
        info["images_per_task"] = int(p.nimg)
    if p.algo in (A_DOT, A_IM2COL, A_WINOGRAD) and p.pass_ == P_GRAD_WEIGHT:
        info["batch_parts"] = int(p.parts)
    if p.algo == A_IM2COL and p.pointwise and p.pass_ != P_GRAD_WEIGHT:
        info["variant"] = "in_place" if p.in_place else "packed"
        if p.in_place:
            info["weights"] = "read in place" if p.pw_unpacked else "packed"
    if p.algo == A_DOT:     # the input was checked: finite runs the kernel without the mask
        info["variant"] = "in_place" if p.pointwise else "finite" if p.dot_finite else "masked"
    return info


cdef dict _blocking_used(const ConvPlan *p):
    """The cache blocking values p's driver runs with (none for the algorithms that do not
    block): depth kc, row block mc, column block nc, dot grad_output bytes."""
    cdef int a = p.algo
    if a == A_IM2COL or a == A_COL2IM:
        return {"kc": int(p.blk.kc), "mc": int(p.blk.mc),
                "nc": int(p.nc if a == A_COL2IM else p.blk.nc)}
    if a == A_PADDED:
        return {"kc": int(p.blk.kc), "mc": int(p.blk.mc)}
    if a == A_VOLUME:
        return {"kc": int(p.blk.kc)}
    if a == A_WINOGRAD and p.pass_ == P_GRAD_WEIGHT:
        return {"mc": int(p.blk.mc)}
    if a == A_DOT:
        return {"dot_gy_bytes": int(p.blk.dot_gy_bytes)}
    return {}


cdef dict _default_blocking(int itemsize):
    """The GEMM blocking of a plan of this float type (the same for every plan of the type:
    it depends on the caches, the type and the micro-kernel's width only)."""
    cdef ConvPlan p
    memset(&p, 0, sizeof(ConvPlan))
    p.itemsize = itemsize
    _choose_kernel(&p, 1, False)
    _blocking(&p)
    return {"kc": int(p.blk.kc), "mc": int(p.blk.mc), "nc": int(p.blk.nc),
            "dot_gy_bytes": int(p.blk.dot_gy_bytes)}


cdef dict _explain_pass(int pass_, const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                        Py_ssize_t m, int itemsize, int threads, const void *data,
                        Py_ssize_t n_data, const void *other, Py_ssize_t n_other):
    """explain's entry of one pass: the tuned plan when autotune has timed the geometry."""
    cdef _Facts f
    cdef ConvPlan plan
    f.fin = F_ALL
    f.known = 0
    tuned = None
    if _tunable(pass_, s, batch, m):
        tuned = _tuned_plan(pass_, s, batch, groups, m, itemsize, threads, data, n_data,
                            other, n_other, &f, &plan, False)
    if tuned is None:
        plan = _plan(pass_, s, batch, groups, m, itemsize, threads, data, n_data, other,
                     n_other, -1, &f)
    return _describe(&plan, tuned)


def explain(gy_or_x, x, w, g, int threads, bint forward, bint need_input=True,
            bint need_weight=True, bint need_bias=True):
    """pass name -> {algorithm, isa, threads, workspace_bytes, reason, selected, ...} of a
    conv2d call (forward: gy_or_x is its input) or of its backward (gy_or_x: grad_output);
    plans only (the finiteness scans a plan depends on included), computes nothing."""
    cdef cconv_geom s = _slice_geom(g)
    cdef Py_ssize_t batch = g.batch, groups = g.groups, m = g.out_channels // groups
    cdef int itemsize = gy_or_x.itemsize
    cdef const unsigned char[::1] a = _bytes(gy_or_x)
    cdef const unsigned char[::1] xb = _bytes(x)
    cdef const unsigned char[::1] wb = _bytes(w)
    out = {}
    if forward:
        out["forward"] = _explain_pass(P_FORWARD, &s, batch, groups, m, itemsize, threads,
                                       _data(a), gy_or_x.size, _data(wb), w.size)
        return out
    if need_input:
        out["grad_input"] = _explain_pass(P_GRAD_INPUT, &s, batch, groups, m, itemsize,
                                          threads, _data(a), gy_or_x.size, _data(wb), w.size)
    if need_weight:
        out["grad_weight"] = _explain_pass(P_GRAD_WEIGHT, &s, batch, groups, m, itemsize,
                                           threads, _data(xb), x.size, _data(a), gy_or_x.size)
    if need_bias:
        out["grad_bias"] = _explain_pass(P_GRAD_BIAS, &s, batch, groups, m, itemsize, threads,
                                         NULL, 0, NULL, 0)
    return out


def algorithm_counts():
    """{(algorithm, pass): passes executed} since import (tests and the fuzzer use it)."""
    return {(ALGORITHMS[a], PASSES[q]): int(_ran[a][q])
            for a in range(N_ALGOS) for q in range(4) if _ran[a][q]}


def dot_variant_counts():
    """{variant: dot weight gradients executed} since import: "masked" (the input had an
    inf or NaN), "finite" (the mask-free kernel) and "in_place" (a 1x1 kernel: x and
    grad_output read where they are, no padded copies and no mask)."""
    return {"masked": int(_dot_ran[0]), "finite": int(_dot_ran[1]), "in_place": int(_dot_ran[2])}


def pointwise_variant_counts():
    """{(pass, variant): 1x1 im2col passes executed} since import, for the forward and the
    input gradient: "packed" (panels copied from x) or "in_place" (x read as the panels)."""
    return {(PASSES[q], v): int(_pw_ran[q][i]) for q in range(2)
            for i, v in enumerate(("packed", "in_place"))}


def volume_tile_counts():
    """{tile: volume passes executed} since import: "default" (the ISA's GEMM tile) or
    "wide" (AVX2's 4 x 3-vector tile, the planner's _choose_vol_kernel)."""
    return {"default": int(_vol_ran[0]), "wide": int(_vol_ran[1])}


def build_info():
    """How this extension was built and which kernels it runs (for cconv.backend_info())."""
    k32 = cconv_kernel_f32()
    k64 = cconv_kernel_f64()
    return {
        "compiler": CCONV_COMPILER.decode(),
        "openmp": bool(CCONV_OPENMP),
        "openmp_version": int(CCONV_OPENMP),
        "simd": isa,
        "simd_supported": list(isa_supported),
        "simd_override": "CCONV_KERNEL_ISA=%s (default: best the CPU supports)"
                         % "|".join(ISA_NAMES),
        "gemm_tile": {"float32": (k32.mr, k32.nr), "float64": (k64.mr, k64.nr)},
        "cache_bytes": dict(cache_bytes),
        "cache_bytes_from": ("CCONV_CACHE_BYTES" if cache_source == "CCONV_CACHE_BYTES"
                             else "probed at import (override: CCONV_CACHE_BYTES=l1d,l2,l3)"),
        "gemm_blocking": {"float32": _default_blocking(4), "float64": _default_blocking(8)},
        "channels_in_lanes": bool(cconv_lanes_available()),
        "conv_algorithms": list(ALGORITHMS),
        "conv_algorithm_override": "CCONV_CONV_ALGO=%s (default: the planner chooses; "
                                   "cconv.explain() shows the choice)" % "|".join(ALGORITHMS[1:]),
        "threads_from": "1 in a forked child; else cconv.set_num_threads(n); else OpenMP's "
                        "setting (threadpoolctl's limit, $OMP_NUM_THREADS, the CPUs this process "
                        "may use), at most one thread per %d multiply-adds of a pass"
                        % _PARALLEL_MIN_MACS,
        "adaptive_threads": {"enabled": bool(_adaptive_teams),
                             "calls_on_one_thread": int(_team_runs[0]),
                             "calls_on_the_team": int(_team_runs[1]),
                             "override": "CCONV_ADAPTIVE_THREADS=0|1 (default 0; 1: each planned "
                                         "team is timed against one thread and the faster runs)"},
        "plan_cache": {"slots": _CACHE_SLOTS, "hits": int(_cache_hits),
                       "misses": int(_cache_misses)},
        "autotune": autotune_info(),
        "workspace": "one buffer reused across calls, laid out per plan in named regions "
                     "(see cconv.explain): packed weights, tap offsets, partial sums of the "
                     "weight gradient's batch parts, and per thread a padded image slice "
                     "(<= %d elements, else im2col panels of kc x nc: gemm_blocking), a "
                     "Winograd tile block (~%d elements) or dot-kernel images"
                     % (_PADDED_MAX_ELEMS, _WINO_BLOCK_ELEMS),
        "workspace_bytes": 0 if _scratch_buffer is None else int(_scratch_buffer.nbytes),
    }
