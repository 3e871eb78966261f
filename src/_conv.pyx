# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled conv2d forward and backward: the convolution half of the ``"cython"`` backend.

Same interface as :mod:`cconv._reference`: arrays arrive C-contiguous, of one float
dtype (float32 or float64, each with its own specialisation), validated by
:mod:`cconv._shapes`; results are fresh arrays.  The GIL is released for the whole
computation and the work is split over ``cconv.get_num_threads()`` OpenMP threads.

Algorithms (chosen per call from the shapes, see ``build_info()["algorithms"]``); all
GEMM work runs on one register-blocked micro-kernel (6 x 32 floats on AVX-512, 6 x 16
on AVX2+FMA, portable C otherwise), picked at import by CPU feature; on AVX-512 an
8 x 32 variant takes GEMMs whose row count it pads less than 6 does (16 or 512 output
channels; Winograd's GEMMs only when it pads 5% fewer rows):

* forward, 3x3 stride 1 with >= 16 channels in and out per group: Winograd F(2x2, 3x3),
  16 GEMMs over 2x2 output tiles (2.25x fewer multiplies), blocks of tile rows or, for
  small images, of several whole images.
* forward, float32 on AVX-512, kernels larger than 1x1 with 12-64 output channels per
  group (filling >= 3/4 of the 16-lane blocks): output channels in the vector lanes
  (conv_lanes.h), 16-pixel tiles fed by broadcasts from a padded image copy; no grid
  columns are wasted on short output rows (LeNet's 8x8 maps).
* forward, other shapes: implicit GEMM on a zero-padded (polyphase, for strides > 1)
  copy of one image: on the flat grid oh*row + ow every kernel tap is a constant
  offset, so the micro-kernel reads its B rows straight from that copy (no im2col).
  Small images with many output channels, 1x1 kernels and very large images instead
  pack im2col blocks of 192 output pixels into GEMM panels (never a whole-batch
  im2col).  Tiny calls (< 32768 multiply-adds) use direct loops over kernel taps.
* grad_input: stride 1 is itself a forward convolution of grad_output with the
  flipped, transposed kernel (padding dilation*(k-1) - pad), so it gets all of the
  above; other strides use GEMM with W^T followed by col2im, per image and group.
* grad_weight: an outer-product "dot" kernel reduces over output pixels of several
  padded images at once (4 output channels x 6 kernel taps per register tile, masked
  so that padding never meets an inf); 1x1 kernels use the packed GEMM.  The batch
  is cut into one contiguous share per thread, each thread accumulates its own
  partial and the partials are summed in thread order.
* grad_bias: per output channel sums in a fixed order.

Every reduction runs in a fixed order, so results are bit-identical from run to run
(for a given thread count; grad_weight's thread partials make it depend on that count).
Scratch memory (packed weights, padded image copies, panels, partial weight gradients)
lives in one buffer that is reused across calls and bounded per thread, see
``build_info()["workspace"]``.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport uintptr_t
from libc.string cimport memset

import os
import threading

import numpy as np

from cconv._threads import get_num_threads

cdef extern from "conv_kernels.h" nogil:
    ctypedef struct cconv_geom:
        Py_ssize_t channels
        Py_ssize_t in_h, in_w
        Py_ssize_t kernel_h, kernel_w
        Py_ssize_t stride_h, stride_w
        Py_ssize_t pad_top, pad_left
        Py_ssize_t dilation_h, dilation_w
        Py_ssize_t out_h, out_w

    ctypedef struct kernel_f32 "kernel_t_f32":
        int mr, nr
        void *dot
        const char *isa
    ctypedef struct kernel_f64 "kernel_t_f64":
        int mr, nr
        void *dot
        const char *isa

    const Py_ssize_t CCONV_KC
    const Py_ssize_t CCONV_NC
    const char *CCONV_COMPILER
    const int CCONV_OPENMP

    void cconv_select_kernel_f32(const char *want)
    void cconv_select_kernel_f64(const char *want)
    const kernel_f32 *cconv_kernel_f32()
    const kernel_f64 *cconv_kernel_f64()
    const kernel_f32 *cconv_kernel_for_f32(Py_ssize_t rows)
    const kernel_f64 *cconv_kernel_for_f64(Py_ssize_t rows)
    const kernel_f32 *cconv_kernel_wino_f32(Py_ssize_t rows)
    const kernel_f64 *cconv_kernel_wino_f64(Py_ssize_t rows)

    void pack_a_f32(float *dst, const float *src, Py_ssize_t m, Py_ssize_t k,
                    Py_ssize_t rs, Py_ssize_t cs, int mr)
    void pack_a_f64(double *dst, const double *src, Py_ssize_t m, Py_ssize_t k,
                    Py_ssize_t rs, Py_ssize_t cs, int mr)
    void conv_fwd_block_f32(const kernel_f32 *kern, const float *x, const cconv_geom *g,
                            Py_ssize_t m, const float *apack, const float *bias, float *y,
                            Py_ssize_t p0, Py_ssize_t nc, float *ws)
    void conv_fwd_block_f64(const kernel_f64 *kern, const double *x, const cconv_geom *g,
                            Py_ssize_t m, const double *apack, const double *bias, double *y,
                            Py_ssize_t p0, Py_ssize_t nc, double *ws)
    Py_ssize_t padded_size_f32(const cconv_geom *g, int nr)
    Py_ssize_t padded_size_f64(const cconv_geom *g, int nr)
    void tap_offsets_f32(const cconv_geom *g, Py_ssize_t *off)
    void conv_fwd_slice_f32(const kernel_f32 *kern, const float *x, const cconv_geom *g,
                            Py_ssize_t m, const float *apack, const Py_ssize_t *off,
                            const float *bias, float *y, float *xp, float *ctmp)
    void conv_fwd_slice_f64(const kernel_f64 *kern, const double *x, const cconv_geom *g,
                            Py_ssize_t m, const double *apack, const Py_ssize_t *off,
                            const double *bias, double *y, double *xp, double *ctmp)
    const int CCONV_NB_PANELS
    Py_ssize_t wino_gw_size_f32(Py_ssize_t C, Py_ssize_t m, Py_ssize_t nty, Py_ssize_t tw,
                                Py_ssize_t tpad, int mr, int nr)
    void conv_wino_gw_f32(const kernel_f32 *kern, const float *x, const float *gy,
                          const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                          Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t nimg, Py_ssize_t nty,
                          Py_ssize_t tpad, float *sacc, float *ws)
    void conv_wino_gw_f64(const kernel_f64 *kern, const double *x, const double *gy,
                          const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                          Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t nimg, Py_ssize_t nty,
                          Py_ssize_t tpad, double *sacc, double *ws)
    void wino_weights_grad_f32(const float *sacc, Py_ssize_t groups, Py_ssize_t m,
                               Py_ssize_t C, Py_ssize_t gi, Py_ssize_t c, float *gw,
                               float *tmp)
    void wino_weights_grad_f64(const double *sacc, Py_ssize_t groups, Py_ssize_t m,
                               Py_ssize_t C, Py_ssize_t gi, Py_ssize_t c, double *gw,
                               double *tmp)
    int all_finite_f32(const float *x, Py_ssize_t n)
    int all_finite_f64(const double *x, Py_ssize_t n)
    void wino_weights_f32(const float *w, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t C,
                          int mr, Py_ssize_t o0, Py_ssize_t o1, float *upack,
                          Py_ssize_t upack_xi)
    void wino_weights_f64(const double *w, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t C,
                          int mr, Py_ssize_t o0, Py_ssize_t o1, double *upack,
                          Py_ssize_t upack_xi)
    Py_ssize_t wino_task_size_f32(Py_ssize_t C, Py_ssize_t m, Py_ssize_t nty, Py_ssize_t tw,
                                  Py_ssize_t tpad)
    void conv_wino_rows_f32(const kernel_f32 *kern, const float *x, Py_ssize_t x_img,
                            const cconv_geom *g, Py_ssize_t m, const float *upack,
                            Py_ssize_t upack_xi, const Py_ssize_t *off, const float *bias,
                            float *y, Py_ssize_t y_img, Py_ssize_t nimg, Py_ssize_t ty0,
                            Py_ssize_t nty, Py_ssize_t tpad, float *ws)
    void conv_wino_rows_f64(const kernel_f64 *kern, const double *x, Py_ssize_t x_img,
                            const cconv_geom *g, Py_ssize_t m, const double *upack,
                            Py_ssize_t upack_xi, const Py_ssize_t *off, const double *bias,
                            double *y, Py_ssize_t y_img, Py_ssize_t nimg, Py_ssize_t ty0,
                            Py_ssize_t nty, Py_ssize_t tpad, double *ws)
    Py_ssize_t dot_grid_f32(const cconv_geom *g)
    Py_ssize_t dot_grid_f64(const cconv_geom *g)
    void dot_mask_f32(const cconv_geom *g, int *mask)
    void dot_mask_f64(const cconv_geom *g, long long *mask)
    void conv_gw_images_f32(const kernel_f32 *kern, const float *x, const float *gy,
                            const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                            Py_ssize_t img0, Py_ssize_t img1, const Py_ssize_t *off,
                            const int *mask, float *gw, float *ws)
    void conv_gw_images_f64(const kernel_f64 *kern, const double *x, const double *gy,
                            const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                            Py_ssize_t img0, Py_ssize_t img1, const Py_ssize_t *off,
                            const long long *mask, double *gw, double *ws)
    Py_ssize_t dot_image_size_f32(const cconv_geom *g, Py_ssize_t m, int nr)
    Py_ssize_t dot_image_size_f64(const cconv_geom *g, Py_ssize_t m, int nr)
    Py_ssize_t dot_images_f32(const cconv_geom *g, Py_ssize_t m, int nr)
    Py_ssize_t dot_images_f64(const cconv_geom *g, Py_ssize_t m, int nr)
    void conv_fwd_span_f32(const kernel_f32 *kern, const float *x, Py_ssize_t x_img,
                           const cconv_geom *g, Py_ssize_t m, const float *apack,
                           const float *bias, float *y, Py_ssize_t y_img, Py_ssize_t j0,
                           Py_ssize_t nc, float *ws, int stream)
    void conv_fwd_span_f64(const kernel_f64 *kern, const double *x, Py_ssize_t x_img,
                           const cconv_geom *g, Py_ssize_t m, const double *apack,
                           const double *bias, double *y, Py_ssize_t y_img, Py_ssize_t j0,
                           Py_ssize_t nc, double *ws, int stream)
    void conv_gw_range_f32(const kernel_f32 *kern, const float *x, const float *gy,
                           const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                           Py_ssize_t r0, Py_ssize_t r1, float *gw, float *wsa, float *wsb)
    void conv_gw_range_f64(const kernel_f64 *kern, const double *x, const double *gy,
                           const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                           Py_ssize_t r0, Py_ssize_t r1, double *gw, double *wsa, double *wsb)
    void conv_gi_block_f32(const kernel_f32 *kern, const float *gy, const cconv_geom *g,
                           Py_ssize_t m, const float *apack, float *gi, Py_ssize_t nc_max,
                           float *wsb, float *wsc)
    void conv_gi_block_f64(const kernel_f64 *kern, const double *gy, const cconv_geom *g,
                           Py_ssize_t m, const double *apack, double *gi, Py_ssize_t nc_max,
                           double *wsb, double *wsc)

    const int CCONV_LANES_SLACK
    int cconv_lanes_available()
    int cconv_lanes_cols(const cconv_geom *g)
    Py_ssize_t cconv_lanes_weights_size(Py_ssize_t m, Py_ssize_t K)
    void cconv_lanes_pack_f32(const float *w, Py_ssize_t m, Py_ssize_t K, float *wt)
    void cconv_fwd_lanes_f32(const float *x, const cconv_geom *g, Py_ssize_t m,
                             const float *wt, const Py_ssize_t *off, const float *bias,
                             float *y, float *xp)

# CCONV_KERNEL_ISA=generic|avx2|avx512f overrides the micro-kernel choice (testing, benchmarking).
cdef bytes _isa_request = os.environ.get("CCONV_KERNEL_ISA", "").strip().lower().encode()
cconv_select_kernel_f32(_isa_request)
cconv_select_kernel_f64(_isa_request)

# Benchmarking aid: force the algorithm ("padded", "im2col" or "winograd") of forward passes
# ("im2col" also forces the packed GEMM for grad_weight).
cdef int _forced_algo = {"padded": 2, "im2col": 1, "winograd": -1, "lanes": 4}.get(
    os.environ.get("CCONV_CONV_ALGO", "").strip().lower(), -1)

# Below this many multiply-adds a call runs on one thread: waking the OpenMP team costs
# more than it saves.
DEF _PARALLEL_MIN_MACS = 200000
# GEMM tiles are mr (~6) output channels tall; with fewer channels per group than this
# most of a tile would be padding, so direct loops win.
DEF _GEMM_MIN_CHANNELS = 4
# Calls below this many multiply-adds use direct loops (latency over throughput).
DEF _DIRECT_MAX_MACS = 32768
# Flipped weights of a direct stride-1 grad_input up to this size live on the stack.
DEF _SMALL_WEIGHTS = 256
# Largest im2col block (elements) the strided grad_input path keeps per thread.
DEF _COL_BLOCK_ELEMS = 65536
# Outputs of at least this many bytes (twice the L2 of this machine's two cores) cannot
# stay in cache until they are read: the packed-im2col forward writes them with
# non-temporal stores (pointwise forward 8.1 -> 7.75 ms here).
DEF _STREAM_MIN_BYTES = 4194304
# Largest padded image slice (elements) the implicit-GEMM forward copies per thread;
# bigger slices use the packed-im2col GEMM, whose scratch does not grow with the image.
DEF _PADDED_MAX_ELEMS = 4194304

# Forward algorithms.
DEF _DIRECT = 0
DEF _GEMM_IM2COL = 1
DEF _GEMM_PADDED = 2
DEF _WINOGRAD = 3
DEF _LANES = 4
# The channels-in-lanes forward runs layers with at most this many output channels per group.
DEF _LANES_MAX_CHANNELS = 64
# Winograd needs enough channels for its transforms to pay off, and a tile block of about
# this many scratch elements per thread (V and M blocks).
DEF _WINO_MIN_CHANNELS = 16
DEF _WINO_GW_MIN_MC = 16384
DEF _WINO_BLOCK_ELEMS = 262144


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

cdef inline int _tile_mr(Py_ssize_t rows, const floating *dummy) noexcept nogil:
    """A-strip height of the GEMM kernel for an A operand of ``rows`` rows."""
    if floating is float:
        return cconv_kernel_for_f32(rows).mr
    else:
        return cconv_kernel_for_f64(rows).mr


cdef inline int _wino_mr(Py_ssize_t rows, const floating *dummy) noexcept nogil:
    """A-strip height of Winograd's GEMMs for an A operand of ``rows`` rows."""
    if floating is float:
        return cconv_kernel_wino_f32(rows).mr
    else:
        return cconv_kernel_wino_f64(rows).mr


cdef inline int _tile_nr(const floating *dummy) noexcept nogil:
    if floating is float:
        return cconv_kernel_f32().nr
    else:
        return cconv_kernel_f64().nr


cdef inline Py_ssize_t _round_up(Py_ssize_t v, Py_ssize_t step) noexcept nogil:
    return (v + step - 1) // step * step


cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Floor division for b > 0 (C division truncates toward zero)."""
    if a >= 0:
        return a // b
    return -((-a + b - 1) // b)


cdef inline void _valid_cols(Py_ssize_t col_off, Py_ssize_t stride, Py_ssize_t size,
                             Py_ssize_t out_size, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): the output columns o with 0 <= o*stride + col_off < size."""
    lo[0] = max(<Py_ssize_t>0, -_floor_div(col_off, stride))
    hi[0] = min(out_size, _floor_div(size - 1 - col_off, stride) + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


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


cdef cconv_geom _transposed_geom(const cconv_geom *s, Py_ssize_t out_channels_per_group):
    """Stride-1 grad_input as a forward conv: grad_output (m channels, out_h x out_w) is
    correlated with the flipped kernel; the padding dilation*(k-1) - pad may be negative."""
    cdef cconv_geom t = s[0]
    t.channels = out_channels_per_group
    t.in_h = s.out_h
    t.in_w = s.out_w
    t.pad_top = s.dilation_h * (s.kernel_h - 1) - s.pad_top
    t.pad_left = s.dilation_w * (s.kernel_w - 1) - s.pad_left
    t.out_h = s.in_h
    t.out_w = s.in_w
    return t


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


cdef inline int _threads_for(double macs):
    """Threads for a call of ``macs`` multiply-adds: one for tiny calls, else the setting."""
    if macs < _PARALLEL_MIN_MACS:
        return 1
    return max(1, <int>get_num_threads())


# --------------------------------------------------------------------------
# typed wrappers over the C kernels (one specialisation per float type)
# --------------------------------------------------------------------------

cdef inline void _pack_a(floating *dst, const floating *src, Py_ssize_t m, Py_ssize_t k,
                         Py_ssize_t rs, Py_ssize_t cs) noexcept nogil:
    if floating is float:
        pack_a_f32(dst, src, m, k, rs, cs, cconv_kernel_for_f32(m).mr)
    else:
        pack_a_f64(dst, src, m, k, rs, cs, cconv_kernel_for_f64(m).mr)


cdef inline void _fwd_block(const floating *x, const cconv_geom *s, Py_ssize_t m,
                            const floating *apack, const floating *bias, floating *y,
                            Py_ssize_t p0, Py_ssize_t nc, floating *ws) noexcept nogil:
    if floating is float:
        conv_fwd_block_f32(cconv_kernel_for_f32(m), x, s, m, apack, bias, y, p0, nc, ws)
    else:
        conv_fwd_block_f64(cconv_kernel_for_f64(m), x, s, m, apack, bias, y, p0, nc, ws)


cdef inline Py_ssize_t _padded_size(const cconv_geom *s, const floating *dummy) noexcept nogil:
    if floating is float:
        return padded_size_f32(s, cconv_kernel_f32().nr)
    else:
        return padded_size_f64(s, cconv_kernel_f64().nr)


cdef inline void _fwd_slice(const floating *x, const cconv_geom *s, Py_ssize_t m,
                            const floating *apack, const Py_ssize_t *off, const floating *bias,
                            floating *y, floating *xp, floating *ctmp) noexcept nogil:
    if floating is float:
        conv_fwd_slice_f32(cconv_kernel_for_f32(m), x, s, m, apack, off, bias, y, xp, ctmp)
    else:
        conv_fwd_slice_f64(cconv_kernel_for_f64(m), x, s, m, apack, off, bias, y, xp, ctmp)


cdef inline Py_ssize_t _dot_grid(const cconv_geom *s, const floating *dummy) noexcept nogil:
    if floating is float:
        return dot_grid_f32(s)
    else:
        return dot_grid_f64(s)


cdef inline void _gw_images(const floating *x, const floating *gy, const cconv_geom *s,
                            Py_ssize_t groups, Py_ssize_t m, Py_ssize_t img0, Py_ssize_t img1,
                            const Py_ssize_t *off, const void *mask, floating *gw,
                            floating *ws) noexcept nogil:
    if floating is float:
        conv_gw_images_f32(cconv_kernel_f32(), x, gy, s, groups, m, img0, img1, off,
                           <const int *>mask, gw, ws)
    else:
        conv_gw_images_f64(cconv_kernel_f64(), x, gy, s, groups, m, img0, img1, off,
                           <const long long *>mask, gw, ws)


cdef inline Py_ssize_t _dot_scratch(const cconv_geom *s, Py_ssize_t m,
                                    const floating *dummy) noexcept nogil:
    """Scratch elements of one thread of the dot kernel (0: too large, use im2col)."""
    if floating is float:
        return (dot_images_f32(s, m, cconv_kernel_f32().nr)
                * dot_image_size_f32(s, m, cconv_kernel_f32().nr))
    else:
        return (dot_images_f64(s, m, cconv_kernel_f64().nr)
                * dot_image_size_f64(s, m, cconv_kernel_f64().nr))


cdef inline void _wino_weights(const floating *w, Py_ssize_t groups, Py_ssize_t m,
                               Py_ssize_t C, Py_ssize_t o0, Py_ssize_t o1, floating *upack,
                               Py_ssize_t upack_xi) noexcept nogil:
    if floating is float:
        wino_weights_f32(w, groups, m, C, cconv_kernel_wino_f32(m).mr, o0, o1, upack, upack_xi)
    else:
        wino_weights_f64(w, groups, m, C, cconv_kernel_wino_f64(m).mr, o0, o1, upack, upack_xi)


cdef inline void _wino_rows(const floating *x, Py_ssize_t x_img, const cconv_geom *s,
                            Py_ssize_t m, const floating *upack, Py_ssize_t upack_xi,
                            const Py_ssize_t *off, const floating *bias, floating *y,
                            Py_ssize_t y_img, Py_ssize_t nimg, Py_ssize_t ty0, Py_ssize_t nty,
                            Py_ssize_t tpad, floating *ws) noexcept nogil:
    if floating is float:
        conv_wino_rows_f32(cconv_kernel_wino_f32(m), x, x_img, s, m, upack, upack_xi, off, bias, y,
                           y_img, nimg, ty0, nty, tpad, ws)
    else:
        conv_wino_rows_f64(cconv_kernel_wino_f64(m), x, x_img, s, m, upack, upack_xi, off, bias, y,
                           y_img, nimg, ty0, nty, tpad, ws)


cdef inline void _wino_blocking(const cconv_geom *s, Py_ssize_t m, int nr, Py_ssize_t batch,
                                Py_ssize_t *nimg, Py_ssize_t *nty,
                                Py_ssize_t *tpad) noexcept nogil:
    """Tiles per Winograd task: about _WINO_BLOCK_ELEMS of scratch, as tile rows of one
    image or, for small images, whole images (nimg of them)."""
    cdef Py_ssize_t tw = (s.out_w + 1) // 2, th = (s.out_h + 1) // 2
    cdef Py_ssize_t tiles = _WINO_BLOCK_ELEMS // (16 * (s.channels + m))
    tiles = max(<Py_ssize_t>nr, min(tiles, <Py_ssize_t>8 * nr))
    nty[0] = max(<Py_ssize_t>1, min(th, tiles // tw))
    nimg[0] = 1
    if nty[0] == th:
        nimg[0] = max(<Py_ssize_t>1, min(batch, tiles // (th * tw)))
    tpad[0] = _round_up(nimg[0] * nty[0] * tw, nr)


cdef inline void _fwd_span(const floating *x, Py_ssize_t x_img, const cconv_geom *s,
                           Py_ssize_t m, const floating *apack, const floating *bias,
                           floating *y, Py_ssize_t y_img, Py_ssize_t j0, Py_ssize_t nc,
                           floating *ws, bint stream) noexcept nogil:
    if floating is float:
        conv_fwd_span_f32(cconv_kernel_for_f32(m), x, x_img, s, m, apack, bias, y, y_img, j0, nc,
                          ws, stream)
    else:
        conv_fwd_span_f64(cconv_kernel_for_f64(m), x, x_img, s, m, apack, bias, y, y_img, j0, nc,
                          ws, stream)


cdef inline bint _span_images(const cconv_geom *s, Py_ssize_t batch, int nr) noexcept nogil:
    """Packed-im2col blocks spanning images when an image's last panel would be mostly
    empty (more than 1/16 of the columns wasted)."""
    cdef Py_ssize_t P = s.out_h * s.out_w
    return batch > 1 and 16 * (_round_up(P, nr) - P) > _round_up(P, nr)


cdef inline void _gw_range(const floating *x, const floating *gy, const cconv_geom *s,
                           Py_ssize_t groups, Py_ssize_t m, Py_ssize_t r0, Py_ssize_t r1,
                           floating *gw, floating *wsa, floating *wsb) noexcept nogil:
    if floating is float:
        conv_gw_range_f32(cconv_kernel_for_f32(m), x, gy, s, groups, m, r0, r1, gw, wsa, wsb)
    else:
        conv_gw_range_f64(cconv_kernel_for_f64(m), x, gy, s, groups, m, r0, r1, gw, wsa, wsb)


cdef inline void _gi_block(const floating *gy, const cconv_geom *s, Py_ssize_t m,
                           const floating *apack, floating *gi, Py_ssize_t nc_max,
                           floating *wsb, floating *wsc) noexcept nogil:
    if floating is float:
        conv_gi_block_f32(cconv_kernel_for_f32(s.channels * s.kernel_h * s.kernel_w), gy, s, m, apack, gi, nc_max, wsb, wsc)
    else:
        conv_gi_block_f64(cconv_kernel_for_f64(s.channels * s.kernel_h * s.kernel_w), gy, s, m, apack, gi, nc_max, wsb, wsc)


# --------------------------------------------------------------------------
# direct loops (few channels per group, depthwise, tiny calls)
# --------------------------------------------------------------------------

cdef inline floating _dot(const floating *a, const floating *b, Py_ssize_t n,
                          Py_ssize_t stride) noexcept nogil:
    """sum a[i] * b[i*stride] with four independent partial sums (a fixed order)."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i = 0
    if stride == 1:
        while i + 4 <= n:
            s0 += a[i] * b[i]
            s1 += a[i + 1] * b[i + 1]
            s2 += a[i + 2] * b[i + 2]
            s3 += a[i + 3] * b[i + 3]
            i += 4
    while i < n:
        s0 += a[i] * b[i * stride]
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef void _direct_plane(const floating *x, const floating *w, floating bias, floating *y,
                        const cconv_geom *s) noexcept nogil:
    """One output plane y (out_h x out_w) = bias + sum over the slice's channels and taps of
    w[c, p, q] * x[c] shifted: x is a (channels, in_h, in_w) slice, w (channels, kh, kw)."""
    cdef Py_ssize_t H = s.in_h, W = s.in_w, Ho = s.out_h, Wo = s.out_w
    cdef Py_ssize_t sh = s.stride_h, sw = s.stride_w
    cdef Py_ssize_t c, p, q, i, oh, ow, row_off, col_off, oh_lo, oh_hi, lo, hi
    cdef floating wv
    cdef const floating *xrow
    cdef floating *yrow
    for i in range(Ho * Wo):
        y[i] = bias
    for c in range(s.channels):
        for p in range(s.kernel_h):
            row_off = p * s.dilation_h - s.pad_top
            _valid_cols(row_off, sh, H, Ho, &oh_lo, &oh_hi)
            for q in range(s.kernel_w):
                wv = w[(c * s.kernel_h + p) * s.kernel_w + q]
                col_off = q * s.dilation_w - s.pad_left
                _valid_cols(col_off, sw, W, Wo, &lo, &hi)
                for oh in range(oh_lo, oh_hi):
                    xrow = x + (c * H + oh * sh + row_off) * W
                    yrow = y + oh * Wo
                    if sw == 1:
                        for ow in range(lo, hi):
                            yrow[ow] += wv * xrow[ow + col_off]
                    else:
                        for ow in range(lo, hi):
                            yrow[ow] += wv * xrow[ow * sw + col_off]


cdef void _direct_gi_plane(const floating *gy, const floating *w, floating *gi,
                           const cconv_geom *s, Py_ssize_t m, Py_ssize_t cl) noexcept nogil:
    """Input plane cl of one group's grad_input (in_h x in_w) from the group's grad_output
    gy (m, out_h, out_w) and weights w (m, channels, kh, kw), by scattering each tap."""
    cdef Py_ssize_t H = s.in_h, W = s.in_w, Ho = s.out_h, Wo = s.out_w
    cdef Py_ssize_t sh = s.stride_h, sw = s.stride_w
    cdef Py_ssize_t o, p, q, i, oh, ow, row_off, col_off, oh_lo, oh_hi, lo, hi
    cdef floating wv
    cdef floating *grow
    cdef const floating *gyrow
    for i in range(H * W):
        gi[i] = 0
    for o in range(m):
        for p in range(s.kernel_h):
            row_off = p * s.dilation_h - s.pad_top
            _valid_cols(row_off, sh, H, Ho, &oh_lo, &oh_hi)
            for q in range(s.kernel_w):
                wv = w[((o * s.channels + cl) * s.kernel_h + p) * s.kernel_w + q]
                col_off = q * s.dilation_w - s.pad_left
                _valid_cols(col_off, sw, W, Wo, &lo, &hi)
                for oh in range(oh_lo, oh_hi):
                    grow = gi + (oh * sh + row_off) * W
                    gyrow = gy + (o * Ho + oh) * Wo
                    for ow in range(lo, hi):
                        grow[ow * sw + col_off] += wv * gyrow[ow]


cdef void _direct_gw_channel(const floating *x, const floating *gy, floating *gw,
                             const cconv_geom *s, Py_ssize_t batch, Py_ssize_t x_image,
                             Py_ssize_t gy_image) noexcept nogil:
    """grad_weight (channels, kh, kw) of one output channel: x is its group's input slice
    and gy its grad_output plane, both of image 0 (image strides x_image, gy_image)."""
    cdef Py_ssize_t H = s.in_h, W = s.in_w, Ho = s.out_h, Wo = s.out_w
    cdef Py_ssize_t sh = s.stride_h, sw = s.stride_w
    cdef Py_ssize_t c, p, q, img, oh, row_off, col_off, oh_lo, oh_hi, lo, hi
    cdef floating acc
    cdef const floating *xp
    cdef const floating *gp
    for c in range(s.channels):
        for p in range(s.kernel_h):
            row_off = p * s.dilation_h - s.pad_top
            _valid_cols(row_off, sh, H, Ho, &oh_lo, &oh_hi)
            for q in range(s.kernel_w):
                col_off = q * s.dilation_w - s.pad_left
                _valid_cols(col_off, sw, W, Wo, &lo, &hi)
                acc = 0
                if hi > lo:
                    for img in range(batch):
                        xp = x + img * x_image + c * H * W
                        gp = gy + img * gy_image
                        for oh in range(oh_lo, oh_hi):
                            acc += _dot(gp + oh * Wo + lo,
                                        xp + (oh * sh + row_off) * W + lo * sw + col_off,
                                        hi - lo, sw)
                gw[(c * s.kernel_h + p) * s.kernel_w + q] = acc


# --------------------------------------------------------------------------
# whole-call drivers (nogil; OpenMP over independent blocks)
# --------------------------------------------------------------------------

cdef inline bint _gemm_worthwhile(Py_ssize_t rows) noexcept nogil:
    return rows >= _GEMM_MIN_CHANNELS


cdef inline bint _all_finite(const floating *x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return all_finite_f32(x, n)
    else:
        return all_finite_f64(x, n)


cdef inline bint _winograd_shape(const cconv_geom *s, Py_ssize_t m) noexcept nogil:
    """3x3, stride 1, undilated, with enough channels in and out for the transforms to pay."""
    return (s.kernel_h == 3 and s.kernel_w == 3 and s.stride_h == 1 and s.stride_w == 1
            and s.dilation_h == 1 and s.dilation_w == 1
            and m >= _WINO_MIN_CHANNELS and s.channels >= _WINO_MIN_CHANNELS)


cdef inline bint _reads_padding(const cconv_geom *s) noexcept nogil:
    """Whether some kernel tap of some output pixel falls in the zero padding."""
    return (s.pad_top > 0 or s.pad_left > 0
            or (s.out_h - 1) * s.stride_h + s.dilation_h * (s.kernel_h - 1) - s.pad_top >= s.in_h
            or (s.out_w - 1) * s.stride_w + s.dilation_w * (s.kernel_w - 1) - s.pad_left >= s.in_w)


cdef inline bint _direct_exact(const cconv_geom *s, const floating *v,
                               Py_ssize_t n) noexcept nogil:
    """Whether the direct loops, which skip the zero padding, give PyTorch's result when v
    (the operand that multiplies the padding) holds n values: PyTorch computes 0 * inf and
    0 * NaN = NaN there, so a non-finite v needs a kernel that multiplies the padding."""
    return not _reads_padding(s) or _all_finite(v, n)


cdef inline bint _lanes_shape(const cconv_geom *s, const floating *dummy) noexcept nogil:
    """Whether the channels-in-lanes kernel can run: float32 on AVX-512, an output with
    room for a 16-pixel tile, and a padded copy of bounded size."""
    return (floating is float and cconv_lanes_available() and cconv_lanes_cols(s) > 0
            and padded_size_f32(s, CCONV_LANES_SLACK) <= _PADDED_MAX_ELEMS)


cdef int _forward_algo(const cconv_geom *s, Py_ssize_t m, double macs, const floating *x,
                       Py_ssize_t x_size, const floating *w, Py_ssize_t w_size) noexcept nogil:
    """Direct loops for tiny calls (no scratch, no packing: lowest latency); else implicit
    GEMM on a padded copy of each image slice, which beats direct loops even with a single
    output channel per group, or packed-im2col GEMM when that copy would be too large."""
    cdef Py_ssize_t nr = _tile_nr(x), wph, grid_cols, im2col_cols
    if macs < _DIRECT_MAX_MACS and _direct_exact(s, w, w_size):
        return _DIRECT
    if _forced_algo == _GEMM_IM2COL and _gemm_worthwhile(m):
        return _GEMM_IM2COL
    if _forced_algo == _GEMM_PADDED:
        return _GEMM_PADDED
    if _lanes_shape(s, x) and _forced_algo == _LANES:
        return _LANES
    if (_forced_algo < 0 and _winograd_shape(s, m)
            and _all_finite(w, w_size) and _all_finite(x, x_size)):
        return _WINOGRAD
    # Channels in lanes when they fill the lanes and there are few enough of them that the
    # GEMM's reuse of each loaded input value (over mr rows) does not win (measured: 16-64
    # channels win 1.1-1.5x, 128 lose ~10%; 1x1 kernels stream better as im2col panels).
    if (_forced_algo < 0 and _lanes_shape(s, x) and s.kernel_h * s.kernel_w > 1
            and m <= _LANES_MAX_CHANNELS and 4 * m >= 3 * _round_up(m, 16)):
        return _LANES
    if _padded_size(s, x) <= _PADDED_MAX_ELEMS:
        # Columns each computes per output channel: the padded grid has extra columns per
        # row; im2col has none but pays ~16 FMA-equivalents per packed element, over m rows.
        wph = ((s.out_w - 1) * s.stride_w + s.dilation_w * (s.kernel_w - 1)) // s.stride_w + 1
        grid_cols = _round_up(s.out_h * wph, nr)
        im2col_cols = _round_up(s.out_h * s.out_w, nr)
        # (1x1 kernels: im2col is a plain copy into panels, which stream better.)
        if not (_gemm_worthwhile(m) and (im2col_cols * (m + 16) < grid_cols * m
                                         or s.kernel_h * s.kernel_w == 1)):
            return _GEMM_PADDED
    # (With too few channels for a GEMM to pay, still a GEMM when the weights are not finite:
    # the direct loops skip the zero padding, where PyTorch computes 0 * NaN = NaN.)
    if _gemm_worthwhile(m) or not _direct_exact(s, w, w_size):
        return _GEMM_IM2COL
    return _DIRECT


cdef Py_ssize_t _forward_ws(const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                            Py_ssize_t m, int algo, int nthreads,
                            const floating *dummy) noexcept nogil:
    """Elements of scratch the forward needs: packed weights (+ tap offsets) + per thread
    either one packed im2col block or a padded image slice and a C block."""
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w
    cdef int mr = _tile_mr(m, dummy), nr = _tile_nr(dummy)
    cdef Py_ssize_t shared = _round_up(groups * _round_up(m, mr) * K, 16)
    if algo == _DIRECT:
        return 0
    if algo == _LANES:
        return (_round_up(groups * cconv_lanes_weights_size(m, K), 16) + _offsets_elems(K, dummy)
                + nthreads * _round_up(padded_size_f32(s, CCONV_LANES_SLACK), 16))
    cdef Py_ssize_t nty, tpad, nimg
    if algo == _GEMM_IM2COL:
        if _span_images(s, batch, nr):
            return shared + nthreads * (CCONV_KC * CCONV_NC + CCONV_NC
                                        + _round_up(m, mr) * CCONV_NC)
        return shared + nthreads * CCONV_KC * CCONV_NC
    if algo == _WINOGRAD:
        _wino_blocking(s, m, nr, batch, &nimg, &nty, &tpad)
        return (_round_up(16 * groups * _round_up(m, _wino_mr(m, dummy)) * s.channels, 16)  # packed U
                + _round_up(s.channels * sizeof(Py_ssize_t) // sizeof(floating) + 1, 16)
                + nthreads * _round_up(wino_task_size_f32(s.channels, m, nty,
                                                          (s.out_w + 1) // 2, tpad), 16))
    return (shared + _round_up(K * sizeof(Py_ssize_t) // sizeof(floating) + 1, 16)
            + nthreads * (_round_up(_padded_size(s, dummy), 16)
                          + _round_up(m, mr) * CCONV_NB_PANELS * nr))


cdef void _forward_winograd(const floating *x, const floating *w, const floating *b,
                            floating *y, const cconv_geom *s, Py_ssize_t batch,
                            Py_ssize_t groups, Py_ssize_t m, int nthreads,
                            floating *ws) noexcept nogil:
    """Winograd F(2x2, 3x3): transform and pack the weights once, then one task per
    (image, group, block of tile rows)."""
    cdef Py_ssize_t C = s.channels, O = groups * m
    cdef Py_ssize_t tw = (s.out_w + 1) // 2, th = (s.out_h + 1) // 2
    cdef Py_ssize_t a_size = _round_up(m, _wino_mr(m, ws)) * C
    cdef Py_ssize_t upack_xi = groups * a_size
    cdef Py_ssize_t x_group = C * s.in_h * s.in_w
    cdef Py_ssize_t nimg, nty, tpad, nblk, nchunk, per_thread, t, r, ty0, b0, xi, gidx, c
    cdef floating *upack = ws
    cdef Py_ssize_t *off = <Py_ssize_t *>(upack + _round_up(16 * upack_xi, 16))
    cdef floating *tws = (<floating *>off) + _round_up(C * sizeof(Py_ssize_t) // sizeof(floating) + 1, 16)
    _wino_blocking(s, m, _tile_nr(ws), batch, &nimg, &nty, &tpad)
    per_thread = _round_up(wino_task_size_f32(C, m, nty, tw, tpad), 16)
    # Weight transform straight into GEMM strips: 16*O*C values, worth both threads.
    for t in prange(O, nogil=True, num_threads=nthreads, schedule='static',
                    use_threads_if=nthreads > 1 and O * C > 4096):
        _wino_weights(w, groups, m, C, t, t + 1, upack, upack_xi)
    for c in range(C):
        off[c] = c * tpad
    nblk = (th + nty - 1) // nty           # tile-row blocks per image
    nchunk = (batch + nimg - 1) // nimg     # image chunks (nimg > 1 only with nblk == 1)
    for t in prange(nchunk * groups * nblk, nogil=True, num_threads=nthreads,
                    schedule='dynamic', use_threads_if=nthreads > 1):
        r = t // nblk                      # chunk * groups + group
        ty0 = t % nblk * nty
        gidx = r % groups
        b0 = r // groups * nimg
        _wino_rows(x + (b0 * groups + gidx) * x_group, groups * x_group, s, m,
                   upack + gidx * a_size, upack_xi, off,
                   b + gidx * m if b != NULL else NULL,
                   y + (b0 * groups + gidx) * m * s.out_h * s.out_w, O * s.out_h * s.out_w,
                   min(nimg, batch - b0), ty0, min(nty, th - ty0), tpad,
                   tws + threadid() * per_thread)


cdef void _forward_lanes(const float *x, const float *w, const float *b, float *y,
                         const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                         Py_ssize_t m, int nthreads, float *ws) noexcept nogil:
    """Channels in the vector lanes (conv_lanes.h): pack the weights into 16-channel
    blocks once, then one task per image-group slice, each on its own padded copy."""
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w
    cdef Py_ssize_t x_group = s.channels * s.in_h * s.in_w
    cdef Py_ssize_t wt_size = cconv_lanes_weights_size(m, K)
    cdef Py_ssize_t xp_size = _round_up(padded_size_f32(s, CCONV_LANES_SLACK), 16)
    cdef Py_ssize_t gidx, r
    cdef float *wt = ws
    cdef Py_ssize_t *off = <Py_ssize_t *>(ws + _round_up(groups * wt_size, 16))
    cdef float *tws = ws + _round_up(groups * wt_size, 16) + _offsets_elems(K, ws)
    for gidx in range(groups):
        cconv_lanes_pack_f32(w + gidx * m * K, m, K, wt + gidx * wt_size)
    tap_offsets_f32(s, off)
    for r in prange(batch * groups, nogil=True, num_threads=nthreads, schedule='dynamic',
                    use_threads_if=nthreads > 1):
        cconv_fwd_lanes_f32(x + r * x_group, s, m, wt + r % groups * wt_size, off,
                            b + r % groups * m if b != NULL else NULL, y + r * m * P,
                            tws + threadid() * xp_size)


cdef void _forward(const floating *x, const floating *w, const floating *b, floating *y,
                   const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups, Py_ssize_t m,
                   int nthreads, int algo, floating *ws) noexcept nogil:
    """y (batch, groups*m, out_h, out_w) = conv(x, w) + b with the given algorithm
    (ws: _forward_ws elements).  Requires channels >= 1 (K >= 1)."""
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w
    cdef Py_ssize_t x_group = s.channels * s.in_h * s.in_w
    cdef Py_ssize_t O = groups * m
    cdef Py_ssize_t t, r, blk, p0, p1, gidx, a_size, nblk, per_thread, xp_size, nr, n_panels
    cdef bint stream
    cdef floating *apack
    cdef floating *tws
    cdef Py_ssize_t *off
    if algo == _DIRECT:
        for t in prange(batch * O, nogil=True, num_threads=nthreads, schedule='static',
                        use_threads_if=nthreads > 1):
            _direct_plane(x + (t // O * groups + t % O // m) * x_group, w + t % O * K,
                          b[t % O] if b != NULL else <floating>0, y + t * P, s)
        return
    if algo == _WINOGRAD:
        _forward_winograd(x, w, b, y, s, batch, groups, m, nthreads, ws)
        return
    if algo == _LANES:
        if floating is float:
            _forward_lanes(x, w, b, y, s, batch, groups, m, nthreads, ws)
        return
    a_size = _round_up(m, _tile_mr(m, ws)) * K
    apack = ws
    tws = ws + _round_up(groups * a_size, 16)
    for gidx in range(groups):
        _pack_a(apack + gidx * a_size, w + gidx * m * K, m, K, K, 1)
    if algo == _GEMM_PADDED:
        off = <Py_ssize_t *>tws
        tap_offsets_f32(s, off)           # offsets do not depend on the float type
        tws = tws + _round_up(K * sizeof(Py_ssize_t) // sizeof(floating) + 1, 16)
        xp_size = _round_up(_padded_size(s, ws), 16)
        per_thread = xp_size + _round_up(m, _tile_mr(m, ws)) * CCONV_NB_PANELS * _tile_nr(ws)
        for r in prange(batch * groups, nogil=True, num_threads=nthreads, schedule='dynamic',
                        use_threads_if=nthreads > 1):
            _fwd_slice(x + r * x_group, s, m, apack + r % groups * a_size, off,
                       b + r % groups * m if b != NULL else NULL, y + r * m * P,
                       tws + threadid() * per_thread, tws + threadid() * per_thread + xp_size)
        return
    if _span_images(s, batch, _tile_nr(ws)):
        per_thread = CCONV_KC * CCONV_NC + CCONV_NC + _round_up(m, _tile_mr(m, ws)) * CCONV_NC
        stream = batch * O * P * sizeof(floating) >= _STREAM_MIN_BYTES
        # Each thread takes an equal, contiguous share of the GEMM panels of every group, in
        # blocks of up to CCONV_NC columns: blocks of CCONV_NC for everyone left one thread
        # a block more than the other (pointwise at 2 threads: 17 vs 16, 3% idle).
        nr = _tile_nr(ws)
        n_panels = (batch * P + nr - 1) // nr
        for t in prange(groups * nthreads, nogil=True, num_threads=nthreads, schedule='static',
                        use_threads_if=nthreads > 1):
            gidx = t // nthreads
            p0 = t % nthreads * n_panels // nthreads * nr
            p1 = min((t % nthreads + 1) * n_panels // nthreads * nr, batch * P)
            while p0 < p1:
                _fwd_span(x + gidx * x_group, groups * x_group, s, m, apack + gidx * a_size,
                          b + gidx * m if b != NULL else NULL, y + gidx * m * P, O * P, p0,
                          min(CCONV_NC, p1 - p0), tws + threadid() * per_thread, stream)
                p0 = p0 + CCONV_NC
        return
    nblk = (P + CCONV_NC - 1) // CCONV_NC
    for t in prange(batch * groups * nblk, nogil=True, num_threads=nthreads, schedule='dynamic',
                    use_threads_if=nthreads > 1):
        r = t // nblk                      # image * groups + group
        blk = t % nblk
        p0 = blk * CCONV_NC
        _fwd_block(x + r * x_group, s, m, apack + r % groups * a_size,
                   b + r % groups * m if b != NULL else NULL, y + r * m * P,
                   p0, min(CCONV_NC, P - p0), tws + threadid() * CCONV_KC * CCONV_NC)


cdef inline Py_ssize_t _offsets_elems(Py_ssize_t K, const floating *dummy) noexcept nogil:
    """Elements of scratch holding K Py_ssize_t tap offsets (rounded for alignment)."""
    return _round_up(K * sizeof(Py_ssize_t) // sizeof(floating) + 1, 16)


cdef inline bint _has_dot(const floating *dummy) noexcept nogil:
    if floating is float:
        return cconv_kernel_f32().dot != NULL
    else:
        return cconv_kernel_f64().dot != NULL


cdef int _grad_weight_algo(const cconv_geom *s, Py_ssize_t m, double macs,
                           const floating *gy, Py_ssize_t gy_size) noexcept nogil:
    """Direct loops for tiny calls; else the dot kernel on padded image copies (vector
    kernels only, bounded copy size); else packed-im2col GEMM."""
    cdef const floating *dummy = gy
    if macs < _DIRECT_MAX_MACS and _direct_exact(s, gy, gy_size):
        return _DIRECT
    if _forced_algo == _GEMM_IM2COL and _gemm_worthwhile(m):
        return _GEMM_IM2COL
    # The dot kernel also sums over the grid's extra columns (dot_grid >= out_h*out_w); the
    # packed GEMM pays ~48 FMA-equivalents per packed element instead, spread over m rows,
    # and is a plain GEMM for 1x1 kernels.
    if (_has_dot(dummy) and _dot_scratch(s, m, dummy) > 0
            and not (_gemm_worthwhile(m)
                     and (s.kernel_h * s.kernel_w == 1
                          or _dot_grid(s, dummy) * m > s.out_h * s.out_w * (m + 48)))):
        return _GEMM_PADDED
    if _gemm_worthwhile(m) or not _direct_exact(s, gy, gy_size):   # (as in _forward_algo)
        return _GEMM_IM2COL
    return _DIRECT


cdef Py_ssize_t _grad_weight_thread_ws(const cconv_geom *s, Py_ssize_t groups, Py_ssize_t m,
                                       int algo, const floating *dummy) noexcept nogil:
    """Elements per thread: a padded image (dot) or packed gy + im2col panels (GEMM), then
    the thread's partial weight gradient."""
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w
    cdef Py_ssize_t partial = _round_up(groups * m * K, 16)
    if algo == _GEMM_PADDED:
        return _dot_scratch(s, m, dummy) + partial
    return _round_up(m, _tile_mr(m, dummy)) * CCONV_KC + CCONV_KC * CCONV_NC + partial


cdef Py_ssize_t _grad_weight_ws(const cconv_geom *s, Py_ssize_t groups, Py_ssize_t m, int algo,
                                int nthreads, const floating *dummy) noexcept nogil:
    if algo == _DIRECT:
        return 0
    return (_offsets_elems(s.channels * s.kernel_h * s.kernel_w, dummy)
            + _round_up(_dot_grid(s, dummy), 16)       # the mask (integers as wide as T)
            + nthreads * _grad_weight_thread_ws(s, groups, m, algo, dummy))


cdef void _grad_weight(const floating *x, const floating *gy, floating *gw,
                       const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups, Py_ssize_t m,
                       int nthreads, int algo, floating *ws) noexcept nogil:
    """gw (groups*m, channels, kh, kw).  GEMM/dot: thread t accumulates a contiguous share of
    the batch into its own partial (thread 0 straight into gw) and the partials are summed
    in thread order, so results are bit-identical run to run for a given thread count."""
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w
    cdef Py_ssize_t x_group = s.channels * s.in_h * s.in_w
    cdef Py_ssize_t O = groups * m
    cdef Py_ssize_t R = batch * P, GW = O * K
    cdef Py_ssize_t t, i, per_thread, part_at, wsa_size
    cdef Py_ssize_t *off
    cdef void *mask
    cdef floating *base
    cdef floating *tws
    cdef floating *part
    cdef floating acc
    if algo == _DIRECT:
        for t in prange(O, nogil=True, num_threads=nthreads, schedule='static',
                        use_threads_if=nthreads > 1):
            _direct_gw_channel(x + t // m * x_group, gy + t * P, gw + t * K, s, batch,
                               groups * x_group, O * P)
        return
    off = <Py_ssize_t *>ws
    mask = <void *>(ws + _offsets_elems(K, ws))
    if algo == _GEMM_PADDED:
        tap_offsets_f32(s, off)           # offsets do not depend on the float type
        if floating is float:
            dot_mask_f32(s, <int *>mask)
        else:
            dot_mask_f64(s, <long long *>mask)
    base = ws + _offsets_elems(K, ws) + _round_up(_dot_grid(s, ws), 16)
    per_thread = _grad_weight_thread_ws(s, groups, m, algo, ws)
    part_at = per_thread - _round_up(GW, 16)
    wsa_size = _round_up(m, _tile_mr(m, ws)) * CCONV_KC
    for t in prange(nthreads, nogil=True, num_threads=nthreads, schedule='static',
                    use_threads_if=nthreads > 1):
        tws = base + t * per_thread
        part = gw if t == 0 else tws + part_at
        memset(part, 0, GW * sizeof(floating))
        if algo == _GEMM_PADDED:
            _gw_images(x, gy, s, groups, m, batch * t // nthreads, batch * (t + 1) // nthreads,
                       off, mask, part, tws)
        else:
            _gw_range(x, gy, s, groups, m, R * t // nthreads, R * (t + 1) // nthreads, part,
                      tws, tws + wsa_size)
    if nthreads > 1:
        # Fixed summation order (thread 0, 1, 2, ...) per element: deterministic.
        for i in prange(GW, nogil=True, num_threads=nthreads, schedule='static',
                        use_threads_if=GW > 65536):
            acc = gw[i]
            for t in range(1, nthreads):
                acc = acc + base[t * per_thread + part_at + i]
            gw[i] = acc


cdef Py_ssize_t _grad_weight_winograd_ws(const cconv_geom *s, Py_ssize_t batch,
                                         Py_ssize_t groups, Py_ssize_t m, int nthreads,
                                         const floating *dummy) noexcept nogil:
    """Elements: per thread a 16 x O x C partial dU and one tile block's transforms/panels."""
    cdef Py_ssize_t nimg, nty, tpad
    _wino_blocking(s, m, _tile_nr(dummy), batch, &nimg, &nty, &tpad)
    return nthreads * (_round_up(16 * groups * m * s.channels, 16)
                       + _round_up(wino_gw_size_f32(s.channels, m, nty, (s.out_w + 1) // 2,
                                                    tpad, _wino_mr(s.channels, dummy),
                                                    _tile_nr(dummy)), 16))


cdef void _grad_weight_winograd(const floating *x, const floating *gy, floating *gw,
                                const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                                Py_ssize_t m, int nthreads, floating *ws) noexcept nogil:
    """Winograd F(2x2, 3x3) weight gradient: each thread accumulates dU (16 GEMMs over the
    tiles of its share of the batch), the partials are summed in thread order, then
    gw = G^T dU G."""
    cdef Py_ssize_t C = s.channels, O = groups * m, SU = 16 * O * C
    cdef Py_ssize_t nimg, nty, tpad, per_thread, t, i
    cdef floating *part
    cdef floating acc
    _wino_blocking(s, m, _tile_nr(ws), batch, &nimg, &nty, &tpad)
    per_thread = _grad_weight_winograd_ws(s, batch, groups, m, 1, ws)
    for t in prange(nthreads, nogil=True, num_threads=nthreads, schedule='static',
                    use_threads_if=nthreads > 1):
        part = ws + t * per_thread          # written (not accumulated) by its first block
        if floating is float:
            conv_wino_gw_f32(cconv_kernel_wino_f32(C), x, gy, s, groups, m, batch * t // nthreads,
                             batch * (t + 1) // nthreads, nimg, nty, tpad, part,
                             part + _round_up(SU, 16))
        else:
            conv_wino_gw_f64(cconv_kernel_wino_f64(C), x, gy, s, groups, m, batch * t // nthreads,
                             batch * (t + 1) // nthreads, nimg, nty, tpad, part,
                             part + _round_up(SU, 16))
    if nthreads > 1:
        for i in prange(SU, nogil=True, num_threads=nthreads, schedule='static'):
            acc = ws[i]
            for t in range(1, nthreads):
                acc = acc + ws[t * per_thread + i]
            ws[i] = acc
    # gw = G^T dU G, one (group, input channel) at a time; thread t's scratch (past its
    # partial) holds the 12 x m intermediate.
    for i in prange(groups * C, nogil=True, num_threads=nthreads, schedule='static',
                    use_threads_if=nthreads > 1 and O * C > 4096):
        if floating is float:
            wino_weights_grad_f32(ws, groups, m, C, i // C, i % C, gw,
                                  ws + threadid() * per_thread + _round_up(SU, 16))
        else:
            wino_weights_grad_f64(ws, groups, m, C, i // C, i % C, gw,
                                  ws + threadid() * per_thread + _round_up(SU, 16))


cdef void _grad_bias(const floating *gy, floating *gb, Py_ssize_t batch, Py_ssize_t O,
                     Py_ssize_t P, int nthreads) noexcept nogil:
    """gb[o] = sum of grad_output over images and pixels, per channel in a fixed order."""
    cdef Py_ssize_t o, img
    cdef floating acc
    for o in prange(O, nogil=True, num_threads=nthreads, schedule='static',
                    use_threads_if=nthreads > 1 and batch * O * P > 65536):
        acc = 0
        for img in range(batch):
            acc = acc + _dot_ones(gy + (img * O + o) * P, P)
        gb[o] = acc


cdef inline floating _dot_ones(const floating *a, Py_ssize_t n) noexcept nogil:
    """sum a[0:n] with four independent partial sums (a fixed order)."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        i += 4
    while i < n:
        s0 += a[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef Py_ssize_t _col_block(Py_ssize_t K, Py_ssize_t P, int nr) noexcept nogil:
    """Pixels per col2im block: about _COL_BLOCK_ELEMS elements of im2col, a multiple of nr."""
    cdef Py_ssize_t nc = _COL_BLOCK_ELEMS // max(K, <Py_ssize_t>1) // nr * nr
    return max(<Py_ssize_t>nr, min(nc, _round_up(P, nr)))


cdef Py_ssize_t _grad_input_ws(Py_ssize_t groups, Py_ssize_t m, Py_ssize_t K, Py_ssize_t P,
                               int mr, int nr, int nthreads) noexcept nogil:
    """Elements of scratch the strided GEMM grad_input needs: packed W^T + per-thread blocks."""
    cdef Py_ssize_t nc = _col_block(K, P, nr)
    return (_round_up(groups * _round_up(K, mr) * m, 16)
            + nthreads * (CCONV_KC * nc + _round_up(K * nc, 16)))


cdef void _grad_input_strided(const floating *gy, const floating *w, floating *gi,
                              const cconv_geom *s, Py_ssize_t batch, Py_ssize_t groups,
                              Py_ssize_t m, int nthreads, floating *ws) noexcept nogil:
    """gi (batch, groups*channels, in_h, in_w) for any stride: GEMM with W^T and col2im per
    image and group when ws is given, else direct scatter loops per input plane."""
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w
    cdef Py_ssize_t HW = s.in_h * s.in_w
    cdef Py_ssize_t x_group = s.channels * HW
    cdef Py_ssize_t C = groups * s.channels
    cdef Py_ssize_t t, r, gidx, a_size, nc, per_thread
    cdef floating *apack
    cdef floating *tws
    if ws == NULL:
        for t in prange(batch * C, nogil=True, num_threads=nthreads, schedule='static',
                        use_threads_if=nthreads > 1):
            gidx = t % C // s.channels
            _direct_gi_plane(gy + (t // C * groups + gidx) * m * P, w + gidx * m * K,
                             gi + t * HW, s, m, t % s.channels)
        return
    nc = _col_block(K, P, _tile_nr(ws))
    a_size = _round_up(K, _tile_mr(K, ws)) * m
    apack = ws
    per_thread = CCONV_KC * nc + _round_up(K * nc, 16)
    for gidx in range(groups):
        _pack_a(apack + gidx * a_size, w + gidx * m * K, K, m, 1, K)
    for t in prange(batch * groups, nogil=True, num_threads=nthreads, schedule='dynamic',
                    use_threads_if=nthreads > 1):
        tws = ws + _round_up(groups * a_size, 16) + threadid() * per_thread
        memset(gi + t * x_group, 0, x_group * sizeof(floating))
        _gi_block(gy + t * m * P, s, m, apack + t % groups * a_size, gi + t * x_group, nc,
                  tws, tws + CCONV_KC * nc)


# --------------------------------------------------------------------------
# Python-level entry points (thin: read the geometry once, allocate, dispatch)
# --------------------------------------------------------------------------

# Inputs are const views: read-only C-contiguous arrays (np.load(..., mmap_mode='r'),
# np.frombuffer) reach the kernels as they are, and the kernels never write them.
cdef int _conv2d_typed(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                       const floating[::1] b, floating[:, :, :, ::1] y, g) except -1:
    cdef cconv_geom s = _slice_geom(g)
    cdef Py_ssize_t batch = g.batch, groups = g.groups
    cdef Py_ssize_t m = y.shape[1] // groups
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w
    cdef const floating *bias = &b[0] if b is not None else NULL
    cdef int nthreads, algo
    cdef _Scratch scratch = None
    if batch == 0:
        return 0
    if K == 0:  # no input channels: the output is the bias
        for o in range(y.shape[1]):
            y[:, o, :, :] = bias[o] if bias != NULL else 0
        return 0
    nthreads = _threads_for(<double>batch * groups * m * K * s.out_h * s.out_w)
    algo = _forward_algo(&s, m, <double>batch * groups * m * K * s.out_h * s.out_w,
                         <const floating *>&x[0, 0, 0, 0], batch * x.shape[1] * s.in_h * s.in_w,
                         <const floating *>&w[0, 0, 0, 0], y.shape[1] * K)
    if algo != _DIRECT:
        scratch = _Scratch(_forward_ws(&s, batch, groups, m, algo, nthreads, bias) * sizeof(floating))
    try:
        with nogil:
            _forward(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bias, &y[0, 0, 0, 0], &s, batch, groups, m,
                     nthreads, algo, <floating *>scratch.ptr if scratch is not None else NULL)
    finally:
        if scratch is not None:
            scratch.release()
    return 0


def conv2d(x, w, b, g):
    """y (N, O, Ho, Wo) = conv2d(x (N, C, H, W), w (O, C/groups, kh, kw), b (O,) or None)."""
    y = np.empty((g.batch, g.out_channels, g.out_h, g.out_w), dtype=x.dtype)
    if x.itemsize == 4:                   # float32 (the only other dtype is float64)
        _conv2d_typed[float](x, w, b, y, g)
    else:
        _conv2d_typed[double](x, w, b, y, g)
    return y


cdef int _backward_typed(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] x,
                         const floating[:, :, :, ::1] w, floating[:, :, :, ::1] gi,
                         floating[:, :, :, ::1] gw, floating[::1] gb, g) except -1:
    cdef cconv_geom s = _slice_geom(g)
    cdef cconv_geom ts
    cdef Py_ssize_t batch = g.batch, groups = g.groups
    cdef Py_ssize_t O = gy.shape[1], m = O // groups
    cdef Py_ssize_t khw = s.kernel_h * s.kernel_w
    cdef Py_ssize_t K = s.channels * khw
    cdef Py_ssize_t P = s.out_h * s.out_w
    cdef Py_ssize_t gidx, c, o, r, n_wt
    cdef double macs = <double>batch * O * K * P
    cdef int nthreads = _threads_for(macs)
    cdef int algo, nt_w
    cdef _Scratch scratch = None
    cdef floating *wt
    cdef floating small_wt[_SMALL_WEIGHTS]
    cdef const floating *wp = &w[0, 0, 0, 0]
    if gb is not None:
        with nogil:
            _grad_bias(&gy[0, 0, 0, 0], &gb[0], batch, O, P, nthreads)
    if gw is not None:
        if batch == 0 or K == 0:
            gw[...] = 0
        else:
            algo = _grad_weight_algo(&s, m, macs, <const floating *>&gy[0, 0, 0, 0], batch * O * P)
            # Winograd's weight gradient writes 16 values per (channel, tile) and per
            # (output channel, tile) for 16*C*m multiply-adds per tile: it pays off on wide
            # layers, or where the dot kernel would waste much of its grid (small images).
            if (_forced_algo < 0 and algo != _DIRECT and _winograd_shape(&s, m)
                    and (algo == _GEMM_IM2COL or m * s.channels >= _WINO_GW_MIN_MC)
                    and _all_finite(<const floating *>&x[0, 0, 0, 0], batch * x.shape[1] * s.in_h * s.in_w)
                    and _all_finite(<const floating *>&gy[0, 0, 0, 0], batch * O * P)):
                algo = _WINOGRAD
            if algo == _GEMM_PADDED or algo == _WINOGRAD:
                nt_w = min(nthreads, batch)   # the dot path splits the batch by images
            else:
                nt_w = nthreads
            if algo == _WINOGRAD:
                scratch = _Scratch(_grad_weight_winograd_ws(&s, batch, groups, m, nt_w, wp)
                                   * sizeof(floating))
            elif algo != _DIRECT:
                scratch = _Scratch(_grad_weight_ws(&s, groups, m, algo, nt_w, wp)
                                   * sizeof(floating))
            try:
                with nogil:
                    if algo == _WINOGRAD:
                        _grad_weight_winograd(&x[0, 0, 0, 0], &gy[0, 0, 0, 0], &gw[0, 0, 0, 0],
                                              &s, batch, groups, m, nt_w,
                                              <floating *>scratch.ptr)
                    else:
                        _grad_weight(&x[0, 0, 0, 0], &gy[0, 0, 0, 0], &gw[0, 0, 0, 0], &s,
                                     batch, groups, m, nt_w, algo,
                                     <floating *>scratch.ptr if scratch is not None else NULL)
            finally:
                if scratch is not None:
                    scratch.release()
                scratch = None
    if gi is not None and gi.size and K:
        # The stride-1 path correlates a zero-padded gy with the kernel; a non-finite weight
        # would turn those zeros into NaN (0 * inf), which PyTorch's input gradient never sees:
        # GEMM + col2im multiplies real gy pixels only.
        if s.stride_h == 1 and s.stride_w == 1 and _all_finite(wp, O * K):
            # grad_input = forward conv of gy with the flipped kernel, transposed per group:
            # wt[g, c, o, kh-1-p, kw-1-q] = w[g, o, c, p, q].
            ts = _transposed_geom(&s, m)
            algo = _forward_algo(&ts, s.channels, macs, <const floating *>&gy[0, 0, 0, 0],
                                 batch * O * P, wp, O * K)
            n_wt = _round_up(groups * s.channels * m * khw, 16)
            if algo == _DIRECT and n_wt <= _SMALL_WEIGHTS:
                wt = small_wt             # tiny calls: no scratch buffer at all
            else:
                scratch = _Scratch((n_wt + _forward_ws(&ts, batch, groups, s.channels, algo,
                                                       nthreads, wp)) * sizeof(floating))
                wt = <floating *>scratch.ptr
            try:
                with nogil:
                    for gidx in range(groups):
                        for c in range(s.channels):
                            for o in range(m):
                                for r in range(khw):
                                    wt[((gidx * s.channels + c) * m + o) * khw + khw - 1 - r] = \
                                        wp[((gidx * m + o) * s.channels + c) * khw + r]
                    _forward(&gy[0, 0, 0, 0], wt, NULL, &gi[0, 0, 0, 0], &ts, batch, groups,
                             s.channels, nthreads, algo, wt + n_wt)
            finally:
                if scratch is not None:
                    scratch.release()
        else:
            if _gemm_worthwhile(m):
                scratch = _Scratch(_grad_input_ws(groups, m, K, P, _tile_mr(K, wp), _tile_nr(wp),
                                                  nthreads) * sizeof(floating))
            try:
                with nogil:
                    _grad_input_strided(&gy[0, 0, 0, 0], wp, &gi[0, 0, 0, 0], &s, batch, groups,
                                        m, nthreads,
                                        <floating *>scratch.ptr if scratch is not None else NULL)
            finally:
                if scratch is not None:
                    scratch.release()
    elif gi is not None:
        gi[...] = 0
    return 0


def conv2d_backward(gy, x, w, g, need_input, need_weight, need_bias):
    """(grad_input (N, C, H, W), grad_weight (O, C/groups, kh, kw), grad_bias (O,)) of conv2d,
    ``None`` where not requested; ``x`` may be None when the weight gradient is not needed."""
    dtype = gy.dtype
    gi = np.empty((g.batch, g.in_channels, g.in_h, g.in_w), dtype=dtype) if need_input else None
    gw = np.empty((g.out_channels, g.in_channels // g.groups, g.kernel_h, g.kernel_w),
                  dtype=dtype) if need_weight else None
    gb = np.empty(g.out_channels, dtype=dtype) if need_bias else None
    if gy.itemsize == 4:                  # float32 (the only other dtype is float64)
        _backward_typed[float](gy, x, w, gi, gw, gb, g)
    else:
        _backward_typed[double](gy, x, w, gi, gw, gb, g)
    return gi, gw, gb


def build_info():
    """How this extension was built and which kernels it runs (for cconv.backend_info())."""
    k32 = cconv_kernel_f32()
    k64 = cconv_kernel_f64()
    return {
        "compiler": CCONV_COMPILER.decode(),
        "openmp": bool(CCONV_OPENMP),
        "openmp_version": int(CCONV_OPENMP),
        "simd": k32.isa.decode(),
        "simd_override": "CCONV_KERNEL_ISA=generic|avx2 (default: best the CPU supports)",
        "gemm_tile": {"float32": (k32.mr, k32.nr), "float64": (k64.mr, k64.nr)},
        "channels_in_lanes": bool(cconv_lanes_available()),
        # Taller A strips where the default height pads more rows (e.g. 16 rows).
        "gemm_tile_16_rows": {"float32": (cconv_kernel_for_f32(16).mr, k32.nr),
                              "float64": (cconv_kernel_for_f64(16).mr, k64.nr)},
        "threads_from": "1 in a forked child; else cconv.set_num_threads(n); else OpenMP's "
                        "setting (threadpoolctl's limit, $OMP_NUM_THREADS, the CPUs this process "
                        "may use); calls under %d multiply-adds run on one thread"
                        % _PARALLEL_MIN_MACS,
        "algorithms": {
            "conv2d": "Winograd F(2x2,3x3) for 3x3 stride-1 undilated layers with >= %d "
                      "channels in and out per group; float32 on AVX-512 with <= %d output "
                      "channels per group filling 3/4 of 16-lane blocks and a kernel larger "
                      "than 1x1: output channels in the vector lanes, 16-pixel tiles on a "
                      "padded image copy; else implicit GEMM on a padded "
                      "(polyphase) image copy, or packed-im2col GEMM (%d-pixel blocks) for "
                      "small images with many channels, 1x1 kernels and huge images; direct "
                      "loops below %d multiply-adds"
                      % (_WINO_MIN_CHANNELS, _LANES_MAX_CHANNELS, CCONV_NC, _DIRECT_MAX_MACS),
            "grad_input": "stride 1: the forward algorithms on grad_output with the flipped, "
                          "transposed kernel; other strides: GEMM with W^T + col2im per "
                          "image and group",
            "grad_weight": "Winograd F(2x2,3x3) (16 GEMMs over tiles) for wide 3x3 stride-1 "
                           "layers (out x in channels per group >= %d) and small images; "
                           "else register-tiled dot kernel over padded images (1x1 and small "
                           "wide images: packed GEMM); "
                           "one contiguous share of the batch per thread, partials summed in "
                           "thread order (deterministic for a given thread count)"
                           % _WINO_GW_MIN_MC,
            "grad_bias": "per-channel sums in a fixed order",
        },
        "workspace": "one buffer reused across calls: packed weights (16x for Winograd) plus "
                     "per thread a padded copy of one image slice (<= %d elements, else "
                     "im2col panels of %d x %d), a Winograd tile block (~%d elements) or "
                     "dot-kernel images (<= 4M elements), and a partial weight gradient"
                     % (_PADDED_MAX_ELEMS, CCONV_KC, CCONV_NC, _WINO_BLOCK_ELEMS),
        "workspace_bytes": 0 if _scratch_buffer is None else int(_scratch_buffer.nbytes),
    }
