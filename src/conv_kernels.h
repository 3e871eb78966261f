/* C kernels behind src/_conv.pyx: packed, register-blocked GEMM micro-kernels, the panel
 * packers and one single-threaded driver per algorithm (conv_impl.h lists the sources).
 * No whole-batch im2col matrix is ever materialised.
 *
 * Everything here is single-threaded and allocation-free: the drivers of
 * conv_drivers.pxi split the work into independent tasks, run them on the OpenMP team and
 * hand each thread its own block of the workspace the plan laid out.  Each routine exists
 * for float (suffix _f32) and double (_f64): conv_impl.h is included twice as a poor man's
 * template.
 *
 * GEMM structure (GotoBLAS/BLIS): A is packed into MR-row strips (k-major, so one strip
 * column is MR contiguous values), B into NR-column panels (k-major), and a micro-kernel
 * keeps an MR x NR tile of C in vector registers while it streams one A strip and one B
 * panel.  Micro-kernels and drivers exist per ISA (generic C, AVX2+FMA, AVX-512F), compiled
 * with per-function target attributes so the wheel itself stays baseline x86-64; the ISA
 * level of isa.h picks the version at every call.
 */
#ifndef CCONV_CONV_KERNELS_H
#define CCONV_CONV_KERNELS_H

#include <Python.h>   /* Py_ssize_t */
#include <string.h>
#include <stdint.h>

#include "isa.h"      /* cconv_isa_level, CCONV_X86_DISPATCH, CCONV_ISA_VARIANTS */

#if defined(__GNUC__)
#define CCONV_RESTRICT __restrict__
#elif defined(_MSC_VER)
#define CCONV_RESTRICT __restrict
#else
#define CCONV_RESTRICT
#endif

#ifdef _OPENMP
#define CCONV_OPENMP _OPENMP
#else
#define CCONV_OPENMP 0
#endif

#define CCONV_STR_(x) #x
#define CCONV_STR(x) CCONV_STR_(x)
#if defined(__clang__)
#define CCONV_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define CCONV_COMPILER "gcc " __VERSION__
#elif defined(_MSC_VER)
#define CCONV_COMPILER "msvc " CCONV_STR(_MSC_FULL_VER)
#else
#define CCONV_COMPILER "unknown"
#endif

/* Type-independent helpers exist in both instantiations; only one may be called. */
#if defined(__GNUC__)
#define CCONV_MAYBE_UNUSED __attribute__((unused))
#else
#define CCONV_MAYBE_UNUSED
#endif

#define CCONV_CAT_(a, b) a##b
#define CCONV_CAT(a, b) CCONV_CAT_(a, b)

/* memcpy of n bytes; with `stream`, the 16-byte-aligned middle goes out through
 * non-temporal stores, which skip reading each destination line into the cache first.
 * For outputs too large to stay in cache anyway (a 12 MiB pointwise output: ~4% of the
 * call).  Call cconv_stream_fence() before the data is handed to another thread. */
#if CCONV_X86_DISPATCH && defined(__SSE2__)
#define CCONV_STREAM_STORES 1
#include <emmintrin.h>
#else
#define CCONV_STREAM_STORES 0
#endif
static inline void cconv_copy_out(void *CCONV_RESTRICT dst, const void *CCONV_RESTRICT src,
                                  size_t n, int stream)
{
#if CCONV_STREAM_STORES
    if (stream) {
        char *d = (char *)dst;
        const char *s = (const char *)src;
        size_t head = (16 - ((uintptr_t)d & 15)) & 15;
        if (head > n) head = n;
        memcpy(d, s, head);
        d += head; s += head; n -= head;
        for (; n >= 16; n -= 16, d += 16, s += 16)
            _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
        memcpy(d, s, n);
        return;
    }
#else
    (void)stream;
#endif
    memcpy(dst, src, n);
}

static inline void cconv_stream_fence(void)
{
#if CCONV_STREAM_STORES
    _mm_sfence();
#endif
}

/* Makes the compiler forget what it knows of v (no instruction is emitted): a loop whose
 * counter passes through it is not recognised as a memcpy/memset idiom and replaced by a
 * library call (which costs more than the copy for short rows). */
#if defined(__GNUC__)
#define CCONV_OPAQUE(v) __asm__("" : "+r"(v))
#else
#define CCONV_OPAQUE(v) ((void)0)
#endif

static inline Py_ssize_t cconv_min(Py_ssize_t a, Py_ssize_t b) { return a < b ? a : b; }
static inline Py_ssize_t cconv_max(Py_ssize_t a, Py_ssize_t b) { return a > b ? a : b; }

/* Geometry of one image-and-group slice of a convolution (all validated by cconv._shapes).
 * Padding may be negative: the stride-1 input gradient is run as a forward
 * convolution of grad_output with padding dilation*(k-1) - pad, which can be < 0. */
typedef struct {
    Py_ssize_t channels;             /* input channels of the slice (C / groups) */
    Py_ssize_t in_h, in_w;
    Py_ssize_t kernel_h, kernel_w;
    Py_ssize_t stride_h, stride_w;
    Py_ssize_t pad_top, pad_left;
    Py_ssize_t dilation_h, dilation_w;
    Py_ssize_t out_h, out_w;
} cconv_geom;

/* The depth dimension of a 3-d convolution run by the volume driver (conv_padded.h); the
 * (h, w) part and the channels are a cconv_geom.  pad_front may be negative (the stride-1
 * input gradient as a forward convolution). */
typedef struct {
    Py_ssize_t in_d, kernel_d, stride_d, pad_front, dilation_d, out_d;
} cconv_depth;

/* Where a Winograd transform writes element (xi, c, t) (xi: position in the 4x4 tile,
 * c: channel, t: tile): base + xi*xi_stride + (c / cb)*cb_stride + (c % cb)*c_stride +
 * t*t_stride.  Rows of tiles (forward) or GEMM A strips / B panels (weight gradient). */
typedef struct {
    Py_ssize_t xi_stride, cb, cb_stride, c_stride, t_stride;
} cconv_layout;

/* GEMM cache blocking of one pass, chosen by the planner from the probed cache sizes, the
 * float type and the micro-kernel (conv_plan.pxi, _blocking, says why each size):
 * kc: depth of one packed A strip / B panel (the B panel kc x nr stays in L1);
 * mc: rows per GEMM row block, rounded down to whole mr strips by the drivers (the A block
 *     mc x kc stays in L2 while the B panels of a block stream through L1);
 * nc: columns per B block (output pixels of a forward block, weight-gradient columns),
 *     a multiple of nr;
 * dot_gy_bytes: grad_output bytes the dot-kernel weight gradient keeps in L2 per block. */
typedef struct {
    Py_ssize_t kc, mc, nc, dot_gy_bytes;
} cconv_blocking;

/* The widest vector any kernel uses (AVX-512), in bytes: every kernel's vector width divides
 * it, so runs cut into whole multiples of it are whole vectors for every ISA. */
#define CCONV_VECTOR_BYTES 64

/* Largest kc: the weight gradient keeps one im2col row of kc values on the stack. */
#define CCONV_KC_MAX 1024

/* Extra elements between the 16 Winograd planes (xi) of a transform buffer: the planes
 * are often a power of two bytes long (e.g. 128 channels x 64 tiles), and a transform
 * writes the same offset of all 16 at once, which would map 16 lines to one L1 set. */
#define CCONV_XI_SKEW 16

#if CCONV_X86_DISPATCH
#include <immintrin.h>

/* ---- 16 x 16 in-register transpose (float, AVX-512) --------------------------------
 * On entry r[i] holds row i of a 16 x 16 block; on return r[j] holds column j. */
__attribute__((always_inline, target("avx512f")))
static inline void cconv_transpose16_f32(__m512 *r)
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

/* ---- transposing packer (float, AVX-512) ----------------------------------
 * Pack the rows x cols matrix src[r*ld + c] (rows contiguous) transposed into
 * width-lane panels: element (r, c) goes to dst[(r/width)*cols*width + c*width + r%width],
 * lanes past `rows` are zero.  This is pack_a with unit column stride and the B panels
 * of a 1x1 weight gradient; done scalar it is a strided scatter (~1.5 cycles/element),
 * here 16 x 16 blocks go through an in-register transpose.  width: <= 16 or 32. */
#define CCONV_HAVE_PACK_T_F32 1
__attribute__((target("avx512f")))
static void cconv_pack_t_f32_avx512(float *CCONV_RESTRICT dst, const float *CCONV_RESTRICT src,
                                    Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld, int width)
{
    const int lanes = width < 16 ? width : 16;
    const __mmask16 store_mask = (__mmask16)((1u << lanes) - 1u);
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += width) {
        float *strip = dst + (r0 / width) * cols * width;
        for (Py_ssize_t h = 0; h < width; h += lanes) {
            const Py_ssize_t nrow = cconv_max(0, cconv_min(lanes, rows - r0 - h));
            const float *s = src + (r0 + h) * ld;
            for (Py_ssize_t c0 = 0; c0 < cols; c0 += 16) {
                const Py_ssize_t nc = cconv_min(16, cols - c0);
                const __mmask16 lm = (__mmask16)((1u << nc) - 1u);
                __m512 r[16];
                for (int i = 0; i < 16; i++) {
                    /* 16 strided row streams are more than the hardware prefetcher follows:
                     * fetch 64 elements ahead, which near a row's end is the next rows' start
                     * (for the block's last row: the next block), staying inside the matrix. */
                    const Py_ssize_t ahead = (r0 + h + i) * ld + c0 + 64;
                    if (i < nrow && ahead < (rows - 1) * ld + cols)
                        _mm_prefetch((const char *)(src + ahead), _MM_HINT_T0);
                    r[i] = i < nrow ? _mm512_maskz_loadu_ps(lm, s + i * ld + c0)
                                    : _mm512_setzero_ps();
                }
                cconv_transpose16_f32(r);
                float *d = strip + c0 * width + h;
                for (int j = 0; j < nc; j++) {
                    if (lanes == 16) _mm512_storeu_ps(d + j * width, r[j]);
                    else _mm512_mask_storeu_ps(d + j * width, store_mask, r[j]);
                }
            }
        }
    }
}
#endif

/* ---- float ---------------------------------------------------------------- */
#define T float
#define TI int
#define S(name) CCONV_CAT(name, _f32)
#include "conv_impl.h"
#undef T
#undef TI
#undef S

/* ---- double --------------------------------------------------------------- */
#define T double
#define TI long long
#define S(name) CCONV_CAT(name, _f64)
#include "conv_impl.h"
#undef T
#undef TI
#undef S

#include "conv_lanes.h"

#endif /* CCONV_CONV_KERNELS_H */
