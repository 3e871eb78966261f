# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled conv2d forward and backward: the convolution half of the ``"cython"`` backend.

Thin typed entry points: arrays arrive C-contiguous (read-only ones too), of one float
dtype, validated by :mod:`cconv._shapes`, with the thread count read once per op call by
the Python layer.  Each pass asks the planner (conv_plan.pxi) for its plan, books the
plan's workspace and hands both to the pass's driver (conv_drivers.pxi), which runs the C
kernels (conv_kernels.h) with the GIL released.  Source map:

* isa.h / isa.pxi: the ISA registry (CCONV_KERNEL_ISA) every kernel dispatches on;
* threads.pxi: the thread policy;
* conv_plan.pxi: algorithms, thresholds, workspace layout, the plan cache;
* conv_autotune.pxi: opt-in timing of the applicable algorithms per geometry;
* conv_drivers.pxi: one driver per pass, tasks over the OpenMP team;
* conv_direct.pxi: direct loops (tiny calls, few channels);
* conv_kernels.h, conv_impl.h, conv_lanes.h, gemm_ukr.h, gemm_dot.h: micro-kernels,
  packing and the single-threaded per-algorithm C drivers (conv_depthwise.h: depthwise).

Every reduction runs in a fixed order that does not depend on the thread count, so every
result is bit-identical from run to run and for any number of threads.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport uintptr_t
from libc.string cimport memcmp, memcpy, memset

import threading

import numpy as np

include "isa.pxi"
include "threads.pxi"
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
cdef Py_ssize_t _dot_ran[2]          # dot weight gradients executed: [masked, finite]


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
    (p.g.kernel_h x p.g.kernel_w from tap_h0, tap_w0)."""
    cdef Py_ssize_t kh = p.g.kernel_h, kw = p.g.kernel_w, a, i
    for a in range(planes):
        for i in range(kh):
            memcpy(dst + (a * kh + i) * kw,
                   w + (a * p.full_kh + p.tap_h0 + i) * p.full_kw + p.tap_w0,
                   kw * sizeof(floating))


cdef void _uncrop_weights(const ConvPlan *p, const floating *src, Py_ssize_t planes,
                          floating *gw) noexcept nogil:
    """gw (planes, full_kh, full_kw) = src (planes, kh, kw) at the live taps, 0 at the dead
    ones (whose gradient sums grad_output times zero padding only)."""
    cdef Py_ssize_t kh = p.g.kernel_h, kw = p.g.kernel_w, a, i
    memset(gw, 0, planes * p.full_kh * p.full_kw * sizeof(floating))
    for a in range(planes):
        for i in range(kh):
            memcpy(gw + (a * p.full_kh + p.tap_h0 + i) * p.full_kw + p.tap_w0,
                   src + (a * kh + i) * kw, kw * sizeof(floating))


cdef int _execute(const ConvPlan *p, const floating *a, const floating *b,
                  const floating *bias, floating *out) except -1:
    """Run pass p (anything but A_EMPTY) into out; a, b: its operands in the planner's order
    (forward: x, w; grad_input: grad_output, w; grad_weight: x, grad_output)."""
    cdef _Scratch scratch = _scratch_for(p)
    cdef floating *ws = <floating *>_ptr(scratch)
    cdef floating small_wt[_SMALL_WEIGHTS]
    cdef floating *wt
    cdef floating *cropped = ws + p.off[R_CROPPED] if p.trimmed else NULL
    cdef Py_ssize_t planes = p.groups * p.m * p.g.channels    # out x in-per-group channels
    try:
        with nogil:
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
            else:
                wt = &small_wt[0] if p.size[R_FLIPPED] == 0 else ws + p.off[R_FLIPPED]
                _flip(p, b, wt)
                _forward(p, a, wt, NULL, out, ws)
    finally:
        if scratch is not None:
            scratch.release()
    return 0


include "conv_autotune.pxi"


cdef int _conv2d_typed(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                       const floating[::1] b, floating[:, :, :, ::1] y, g,
                       int threads) except -1:
    cdef cconv_geom s = _slice_geom(g)
    cdef Py_ssize_t O = y.shape[1], P = y.shape[2] * y.shape[3], i, j
    cdef const floating *bias = &b[0] if b is not None else NULL
    cdef const floating *xp = &x[0, 0, 0, 0] if x.size else NULL
    cdef floating *yp = &y[0, 0, 0, 0] if y.size else NULL
    cdef Py_ssize_t batch = g.batch, groups = g.groups
    cdef bint done
    cdef ConvPlan plan = _select(P_FORWARD, &s, batch, groups, O // groups, threads, xp,
                                 <Py_ssize_t>x.size, &w[0, 0, 0, 0] if w.size else NULL,
                                 <Py_ssize_t>w.size, bias, yp, &done)
    _ran[plan.algo][P_FORWARD] += 1
    if plan.algo == A_EMPTY:   # the output is the bias
        for i in range(y.shape[0] * O):
            for j in range(P):
                y[i // O, i % O, j // y.shape[3], j % y.shape[3]] = bias[i % O] if bias != NULL else 0
    elif not done:
        _execute(&plan, xp, &w[0, 0, 0, 0], bias, yp)
    return 0


def conv2d(x, w, b, g, int threads):
    """y (N, O, Ho, Wo) = conv2d(x (N, C, H, W), w (O, C/groups, kh, kw), b (O,) or None)
    on ``threads`` threads at most."""
    y = np.empty((g.batch, g.out_channels, g.out_h, g.out_w), dtype=x.dtype)
    if x.itemsize == 4:                   # float32 (the only other dtype is float64)
        _conv2d_typed[float](x, w, b, y, g, threads)
    else:
        _conv2d_typed[double](x, w, b, y, g, threads)
    return y


cdef void _flip(const ConvPlan *p, const floating *w, floating *wt) noexcept nogil:
    """wt[g, c, o, kh-1-i, kw-1-j] = w[g, o, c, i, j]: the stride-1 input gradient's kernel
    (p: its plan, on the transposed geometry: p.m input channels of the conv2d, p.g.channels
    its output channels per group)."""
    cdef Py_ssize_t khw = p.g.kernel_h * p.g.kernel_w, C = p.m, m = p.g.channels
    cdef Py_ssize_t gidx, c, o, r
    for gidx in range(p.groups):
        for c in range(C):
            for o in range(m):
                for r in range(khw):
                    wt[((gidx * C + c) * m + o) * khw + khw - 1 - r] = \
                        w[((gidx * m + o) * C + c) * khw + r]


cdef int _backward_typed(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] x,
                         const floating[:, :, :, ::1] w, floating[:, :, :, ::1] gi,
                         floating[:, :, :, ::1] gw, floating[::1] gb, g,
                         int threads) except -1:
    cdef cconv_geom s = _slice_geom(g)
    cdef Py_ssize_t batch = g.batch, groups = g.groups, O = gy.shape[1], m = O // groups
    cdef const floating *gyp = &gy[0, 0, 0, 0] if gy.size else NULL
    cdef const floating *wp = &w[0, 0, 0, 0] if w.size else NULL
    cdef const floating *xp = NULL
    cdef floating *out
    cdef ConvPlan plan
    cdef bint done
    if gb is not None:
        plan = _plan(P_GRAD_BIAS, &s, batch, groups, m, sizeof(floating), threads, NULL, 0,
                     NULL, 0)
        _ran[plan.algo][P_GRAD_BIAS] += 1
        with nogil:
            _grad_bias(&plan, gyp, &gb[0])
    if gw is not None:
        xp = &x[0, 0, 0, 0] if x.size else NULL
        out = &gw[0, 0, 0, 0] if gw.size else NULL
        plan = _select(P_GRAD_WEIGHT, &s, batch, groups, m, threads, xp, <Py_ssize_t>x.size,
                       gyp, <Py_ssize_t>gy.size, <const floating *>NULL, out, &done)
        _ran[plan.algo][P_GRAD_WEIGHT] += 1
        if plan.algo == A_DOT:
            _dot_ran[plan.dot_finite] += 1
        if plan.algo == A_EMPTY:
            gw[...] = 0
        elif not done:
            _execute(&plan, xp, gyp, <const floating *>NULL, out)
    if gi is not None:
        out = &gi[0, 0, 0, 0] if gi.size else NULL
        plan = _select(P_GRAD_INPUT, &s, batch, groups, m, threads, gyp, <Py_ssize_t>gy.size,
                       wp, <Py_ssize_t>w.size, <const floating *>NULL, out, &done)
        _ran[plan.algo][P_GRAD_INPUT] += 1
        if plan.algo == A_EMPTY or gi.size == 0:
            gi[...] = 0
        elif not done:
            _execute(&plan, gyp, wp, <const floating *>NULL, out)
    return 0


def conv2d_backward(gy, x, w, g, bint need_input, bint need_weight, bint need_bias,
                    int threads):
    """(grad_input (N, C, H, W), grad_weight (O, C/groups, kh, kw), grad_bias (O,)) of conv2d,
    ``None`` where not requested; ``x`` may be None when the weight gradient is not needed."""
    dtype = gy.dtype
    gi = np.empty((g.batch, g.in_channels, g.in_h, g.in_w), dtype=dtype) if need_input else None
    gw = np.empty((g.out_channels, g.in_channels // g.groups, g.kernel_h, g.kernel_w),
                  dtype=dtype) if need_weight else None
    gb = np.empty(g.out_channels, dtype=dtype) if need_bias else None
    if gy.itemsize == 4:                  # float32 (the only other dtype is float64)
        _backward_typed[float](gy, x, w, gi, gw, gb, g, threads)
    else:
        _backward_typed[double](gy, x, w, gi, gw, gb, g, threads)
    return gi, gw, gb


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
        info["reason"] = (f"only kernel taps {info['taps']['rows']} x {info['taps']['cols']} "
                          f"of {p.full_kh}x{p.full_kw} read the input, the others only zero "
                          "padding: the cropped kernel; " + info["reason"])
    if p.algo not in (A_EMPTY, A_DIRECT, A_SUM, A_ROWS, A_DEPTHWISE):
        info["tile"] = (int(p.mr), int(p.nr))
    if p.algo == A_COL2IM and p.nimg > 1:    # images of a few pixels share a GEMM
        info["images_per_task"] = int(p.nimg)
    if p.algo in (A_DOT, A_IM2COL, A_WINOGRAD) and p.pass_ == P_GRAD_WEIGHT:
        info["batch_parts"] = int(p.parts)
    if p.algo == A_DOT:     # the input was checked: finite runs the kernel without the mask
        info["variant"] = "finite" if p.dot_finite else "masked"
    return info


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
    inf or NaN) and "finite" (the mask-free kernel)."""
    return {"masked": int(_dot_ran[0]), "finite": int(_dot_ran[1])}


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
        "channels_in_lanes": bool(cconv_lanes_available()),
        "conv_algorithms": list(ALGORITHMS),
        "conv_algorithm_override": "CCONV_CONV_ALGO=%s (default: the planner chooses; "
                                   "cconv.explain() shows the choice)" % "|".join(ALGORITHMS[1:]),
        "threads_from": "1 in a forked child; else cconv.set_num_threads(n); else OpenMP's "
                        "setting (threadpoolctl's limit, $OMP_NUM_THREADS, the CPUs this process "
                        "may use); passes under %d multiply-adds run on one thread"
                        % _PARALLEL_MIN_MACS,
        "plan_cache": {"slots": _CACHE_SLOTS, "hits": int(_cache_hits),
                       "misses": int(_cache_misses)},
        "autotune": autotune_info(),
        "workspace": "one buffer reused across calls, laid out per plan in named regions "
                     "(see cconv.explain): packed weights, tap offsets, partial sums of the "
                     "weight gradient's batch parts, and per thread a padded image slice "
                     "(<= %d elements, else im2col panels of %d x %d), a Winograd tile block "
                     "(~%d elements) or dot-kernel images"
                     % (_PADDED_MAX_ELEMS, CCONV_KC, CCONV_NC, _WINO_BLOCK_ELEMS),
        "workspace_bytes": 0 if _scratch_buffer is None else int(_scratch_buffer.nbytes),
    }
