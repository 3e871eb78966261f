/* The "rows" algorithm: passes with few output pixels, the weights read in place.
 *
 * With J = batch * out_h * out_w columns of a few pixels, the GEMM paths spend their time
 * packing the O x K weight matrix (and, for the input gradient, flipping / transposing
 * it) for a handful of columns.  Here the weights are streamed once, row by row where
 * they lie ([O, C/groups*kh*kw], rows contiguous), against a small copy of the im2col
 * columns with pixels as rows (colT: J x ldc, one row of K values per pixel):
 *
 *   forward      y[o, j]  = bias[o] + w[o, :] . colT[j, :]        rows_dot
 *   grad_input   cols[j, :] = sum_o gy[o, j] * w[o, :]            rows_axpy, then col2im
 *   grad_weight  gw[o, :]   = sum_j gy[o, j] * colT[j, :]          rows_axpy
 *
 * The kernels (conv_rows_kernel.h) exist per ISA; the helpers below are plain loops over
 * J * K values.  Type-generic: included by conv_impl.h once per float type (T, S(name));
 * no include guard on purpose. */

/* ---- kernels per ISA ---------------------------------------------------------- */
#define ROWS_NAME(x) S(CCONV_CAT(x, _generic))
#define ROWS_TARGET
#if defined(__GNUC__)
#define ROWS_VBYTES 16     /* baseline vectors (SSE2 on x86-64; GCC lowers them elsewhere) */
#else
#define ROWS_VBYTES 0      /* plain scalars */
#endif
#include "conv_rows_kernel.h"
#undef ROWS_NAME
#undef ROWS_TARGET
#undef ROWS_VBYTES
#if CCONV_X86_DISPATCH
#define ROWS_NAME(x) S(CCONV_CAT(x, _avx2))
#define ROWS_TARGET __attribute__((target("avx2,fma")))
#define ROWS_VBYTES 32
#include "conv_rows_kernel.h"
#undef ROWS_NAME
#undef ROWS_TARGET
#undef ROWS_VBYTES
#define ROWS_NAME(x) S(CCONV_CAT(x, _avx512f))
#define ROWS_TARGET __attribute__((target("avx512f,avx2,fma")))
#define ROWS_VBYTES 64
#include "conv_rows_kernel.h"
#undef ROWS_NAME
#undef ROWS_TARGET
#undef ROWS_VBYTES
#endif

/* rows_dot / rows_axpy of the ISA level cconv_isa_level names. */
static void S(rows_dot)(Py_ssize_t K, const T *w, Py_ssize_t ldw, Py_ssize_t r0, Py_ssize_t r1,
                        const T *col, Py_ssize_t ldc, Py_ssize_t J, Py_ssize_t P, T *y,
                        Py_ssize_t y_img, const T *bias)
{
#if CCONV_X86_DISPATCH
    if (cconv_isa_level == CCONV_ISA_AVX512F) {
        S(rows_dot_avx512f)(K, w, ldw, r0, r1, col, ldc, J, P, y, y_img, bias);
        return;
    }
    if (cconv_isa_level == CCONV_ISA_AVX2) {
        S(rows_dot_avx2)(K, w, ldw, r0, r1, col, ldc, J, P, y, y_img, bias);
        return;
    }
#endif
    S(rows_dot_generic)(K, w, ldw, r0, r1, col, ldc, J, P, y, y_img, bias);
}

static void S(rows_axpy)(Py_ssize_t R, Py_ssize_t Sn, Py_ssize_t k0, Py_ssize_t k1, const T *a,
                         Py_ssize_t a_rs, Py_ssize_t a_cs, const T *b, Py_ssize_t ldb, T *out,
                         Py_ssize_t ldo)
{
#if CCONV_X86_DISPATCH
    if (cconv_isa_level == CCONV_ISA_AVX512F) {
        S(rows_axpy_avx512f)(R, Sn, k0, k1, a, a_rs, a_cs, b, ldb, out, ldo);
        return;
    }
    if (cconv_isa_level == CCONV_ISA_AVX2) {
        S(rows_axpy_avx2)(R, Sn, k0, k1, a, a_rs, a_cs, b, ldb, out, ldo);
        return;
    }
#endif
    S(rows_axpy_generic)(R, Sn, k0, k1, a, a_rs, a_cs, b, ldb, out, ldo);
}

/* ---- columns ------------------------------------------------------------------ */

/* colT rows of the P pixels of one image-group slice x: colT[p*ldc + k] = the value tap
 * k = (c*kh + i)*kw + q reads for output pixel p, 0 in the padding. */
static void S(rows_columns)(const T *CCONV_RESTRICT x, const cconv_geom *g,
                            T *CCONV_RESTRICT colT, Py_ssize_t ldc)
{
    const Py_ssize_t kh = g->kernel_h, kw = g->kernel_w, H = g->in_h, W = g->in_w;
    for (Py_ssize_t oh = 0; oh < g->out_h; oh++)
        for (Py_ssize_t ow = 0; ow < g->out_w; ow++) {
            T *d = colT + (oh * g->out_w + ow) * ldc;
            for (Py_ssize_t c = 0; c < g->channels; c++)
                for (Py_ssize_t i = 0; i < kh; i++) {
                    const Py_ssize_t ih = oh * g->stride_h - g->pad_top + i * g->dilation_h;
                    for (Py_ssize_t q = 0; q < kw; q++) {
                        const Py_ssize_t iw = ow * g->stride_w - g->pad_left + q * g->dilation_w;
                        *d++ = ((size_t)ih < (size_t)H && (size_t)iw < (size_t)W)
                            ? x[(c * H + ih) * W + iw] : (T)0;
                    }
                }
        }
}

/* Input plane c of one image-group slice from its columns (the adjoint of rows_columns):
 * gi[ih, iw] = sum over the pixels p and taps (i, q) that read it of cols[p*ldc + k],
 * pixels ascending, taps ascending; 0 where nothing reads. */
static void S(rows_col2im)(const T *CCONV_RESTRICT cols, Py_ssize_t ldc, const cconv_geom *g,
                           Py_ssize_t c, T *CCONV_RESTRICT gi)
{
    const Py_ssize_t kh = g->kernel_h, kw = g->kernel_w, H = g->in_h, W = g->in_w;
    const T *src = cols + c * kh * kw;
    memset(gi, 0, (size_t)(H * W) * sizeof(T));
    for (Py_ssize_t oh = 0; oh < g->out_h; oh++)
        for (Py_ssize_t ow = 0; ow < g->out_w; ow++) {
            const T *s = src + (oh * g->out_w + ow) * ldc;
            for (Py_ssize_t i = 0; i < kh; i++) {
                const Py_ssize_t ih = oh * g->stride_h - g->pad_top + i * g->dilation_h;
                for (Py_ssize_t q = 0; q < kw; q++) {
                    const Py_ssize_t iw = ow * g->stride_w - g->pad_left + q * g->dilation_w;
                    if ((size_t)ih < (size_t)H && (size_t)iw < (size_t)W)
                        gi[ih * W + iw] += s[i * kw + q];
                }
            }
        }
}
