/* Micro-kernel registry: the GEMM micro-kernels and weight-gradient dot kernels of
 * each ISA (gemm_ukr.h, gemm_dot.h instantiated per target) and the lookup by the ISA level
 * of isa.h.
 * Type-generic: included by conv_impl.h once per float type (T, TI, S(name)); no
 * include guard on purpose. */

/* ---- micro-kernels ---------------------------------------------------------- */

typedef void (*S(ukr_fn))(Py_ssize_t kc, const T *a, const T *b, T *c, Py_ssize_t ldc,
                          int m, int n, int accumulate, const T *bias);
typedef void (*S(ukr_ind_fn))(Py_ssize_t kc, const T *a, const T *b, const Py_ssize_t *off,
                              T *c, Py_ssize_t ldc, int m, int n, int accumulate, const T *bias);
typedef void (*S(ukr_str_fn))(Py_ssize_t kc, const T *a, Py_ssize_t ars, Py_ssize_t acs,
                              const T *b, Py_ssize_t ldb, T *c, Py_ssize_t ldc, int m, int n,
                              int accumulate, const T *bias);

typedef void (*S(dot_fn))(const T *gy, Py_ssize_t jp, Py_ssize_t ldy, const T *xp,
                          Py_ssize_t img_stride,
                          int nimg, const Py_ssize_t *off, const TI *mask, T *gw,
                          Py_ssize_t ldg, int mo, int nk);

typedef struct {
    int mr, nr;          /* tile shape: A strips are mr rows, B panels nr columns */
    S(ukr_fn) fn;        /* B from packed panels */
    S(ukr_ind_fn) fn_ind;  /* B rows read at b + off[k] (implicit GEMM on a padded image) */
    S(dot_fn) dot;       /* weight-gradient tile (gemm_dot.h), or NULL: use conv_gw_range */
    S(dot_fn) dot_finite;  /* the same without the grid mask: for a finite input only */
    int dot_mo, dot_nk;  /* its tile: output channels x kernel taps */
    const char *isa;
    S(ukr_str_fn) fn_str;  /* A and B both unpacked, read with strides (1x1 in place) */
} S(kernel_t);

/* Portable C kernels (any compiler, any CPU): 4 x 8, auto-vectorised by -O3. */
#define GENERIC_MR 4
#define GENERIC_NR 8
/* One tile of all three generic entries.  A element (i, k) is a[i * ars + k * acs] (packed
 * strips: ars 1, acs GENERIC_MR), of which rows 0..arows-1 may be read: rows past them read
 * row arows - 1 (an unpacked A has only m rows; a packed strip all GENERIC_MR, a constant
 * that lets the compiler drop the clamp).  B row k starts at b + off[k] when off is given
 * (implicit GEMM), else at b + k * ldb (packed panels: ldb GENERIC_NR).  Sums of rows past
 * m are never stored. */
static inline void S(generic_tile)(Py_ssize_t kc, const T *CCONV_RESTRICT a, Py_ssize_t ars,
                                   Py_ssize_t acs, int arows, const T *CCONV_RESTRICT b,
                                   Py_ssize_t ldb, const Py_ssize_t *off, T *CCONV_RESTRICT c,
                                   Py_ssize_t ldc, int m, int n, int accumulate,
                                   const T *CCONV_RESTRICT bias)
{
    T acc[GENERIC_MR][GENERIC_NR];
    int i, j;
    for (i = 0; i < GENERIC_MR; i++) {
        T init = (!accumulate && bias != NULL && i < m) ? bias[i] : (T)0;
        for (j = 0; j < GENERIC_NR; j++) acc[i][j] = init;
    }
    for (Py_ssize_t k = 0; k < kc; k++) {
        const T *brow = off != NULL ? b + off[k] : b + k * ldb;
        for (i = 0; i < GENERIC_MR; i++) {
            const T av = a[(i < arows ? i : arows - 1) * ars];
            for (j = 0; j < GENERIC_NR; j++) acc[i][j] += av * brow[j];
        }
        a += acs;
    }
    for (i = 0; i < m; i++) {
        T *row = c + i * ldc;
        if (accumulate)
            for (j = 0; j < n; j++) row[j] += acc[i][j];
        else
            for (j = 0; j < n; j++) row[j] = acc[i][j];
    }
}

static void S(ukr_generic)(Py_ssize_t kc, const T *a, const T *b, T *c, Py_ssize_t ldc,
                           int m, int n, int accumulate, const T *bias)
{
    S(generic_tile)(kc, a, 1, GENERIC_MR, GENERIC_MR, b, GENERIC_NR, NULL, c, ldc, m, n,
                    accumulate, bias);
}

static void S(ukr_generic_str)(Py_ssize_t kc, const T *a, Py_ssize_t ars, Py_ssize_t acs,
                               const T *b, Py_ssize_t ldb, T *c, Py_ssize_t ldc, int m, int n,
                               int accumulate, const T *bias)
{
    S(generic_tile)(kc, a, ars, acs, m, b, ldb, NULL, c, ldc, m, n, accumulate, bias);
}

static void S(ukr_generic_ind)(Py_ssize_t kc, const T *a, const T *b, const Py_ssize_t *off,
                               T *c, Py_ssize_t ldc, int m, int n, int accumulate,
                               const T *bias)
{
    S(generic_tile)(kc, a, 1, GENERIC_MR, GENERIC_MR, b, 0, off, c, ldc, m, n, accumulate,
                    bias);
}

#if CCONV_X86_DISPATCH
#define UKR_TARGET __attribute__((target("avx2,fma")))
#define UKR_VBYTES 32
#define UKR_MR 6
#define UKR_NAME S(ukr_avx2)
#define UKR_INDIRECT 0
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define UKR_NAME S(ukr_avx2_ind)
#define UKR_INDIRECT 1
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define UKR_NAME S(ukr_avx2_str)
#define UKR_INDIRECT 2
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define DOT_TARGET UKR_TARGET
#define DOT_VBYTES 32
#define DOT_MO 3
#define DOT_NK 4
#define DOT_NAME S(dot_avx2)
#define DOT_MASKED 1
#include "gemm_dot.h"
#undef DOT_NAME
#undef DOT_MASKED
#define DOT_NAME S(dot_avx2_finite)   /* the same tile without the grid mask */
#define DOT_MASKED 0
#include "gemm_dot.h"
#undef DOT_NAME
#undef DOT_MASKED
#undef DOT_TARGET
#undef DOT_VBYTES
#undef DOT_MO
#undef DOT_NK
#undef UKR_MR
/* Wider B panels (4 x 3 vectors: 12 accumulators + 3 B vectors + 1 broadcast, all 16 ymm),
 * for A operands of a multiple of 4 rows that the 6-row strips pad (32 rows: 36). */
#define UKR_MR 4
#define UKR_NV 3
#define UKR_NAME S(ukr_avx2_w3)
#define UKR_INDIRECT 0
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define UKR_NV 3
#define UKR_NAME S(ukr_avx2_w3_ind)
#define UKR_INDIRECT 1
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define UKR_NV 3
#define UKR_NAME S(ukr_avx2_w3_str)
#define UKR_INDIRECT 2
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#undef UKR_TARGET
#undef UKR_VBYTES
#undef UKR_MR

#define UKR_TARGET __attribute__((target("avx512f,avx2,fma")))
#define UKR_VBYTES 64
#define UKR_MR 6
#define UKR_NAME S(ukr_avx512)
#define UKR_INDIRECT 0
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define UKR_NAME S(ukr_avx512_ind)
#define UKR_INDIRECT 1
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define UKR_NAME S(ukr_avx512_str)
#define UKR_INDIRECT 2
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#undef UKR_MR
/* Taller A strips (8 x 32 floats: 16 + 3 of the 32 zmm), for row counts that 6 pads a lot. */
#define UKR_MR 8
#define UKR_NAME S(ukr_avx512_m8)
#define UKR_INDIRECT 0
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define UKR_NAME S(ukr_avx512_m8_ind)
#define UKR_INDIRECT 1
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define UKR_NAME S(ukr_avx512_m8_str)
#define UKR_INDIRECT 2
#include "gemm_ukr.h"
#undef UKR_NAME
#undef UKR_INDIRECT
#define DOT_TARGET UKR_TARGET
#define DOT_VBYTES 64
#define DOT_MO 4
#define DOT_NK 6
#define DOT_NAME S(dot_avx512)
#define DOT_MASKED 1
#include "gemm_dot.h"
#undef DOT_NAME
#undef DOT_MASKED
#define DOT_NAME S(dot_avx512_finite)   /* the same tile without the grid mask */
#define DOT_MASKED 0
#include "gemm_dot.h"
#undef DOT_NAME
#undef DOT_MASKED
#undef DOT_TARGET
#undef DOT_VBYTES
#undef DOT_MO
#undef DOT_NK
#undef UKR_TARGET
#undef UKR_VBYTES
#undef UKR_MR
#endif

static const S(kernel_t) S(kernel_generic) = {GENERIC_MR, GENERIC_NR, S(ukr_generic),
                                              S(ukr_generic_ind), NULL, NULL, 0, 0, "generic",
                                              S(ukr_generic_str)};
#if CCONV_X86_DISPATCH
static const S(kernel_t) S(kernel_avx2) = {6, 64 / (int)sizeof(T), S(ukr_avx2),
                                           S(ukr_avx2_ind), S(dot_avx2), S(dot_avx2_finite), 3, 4, "avx2+fma",
                                           S(ukr_avx2_str)};
static const S(kernel_t) S(kernel_avx2_w3) = {4, 96 / (int)sizeof(T), S(ukr_avx2_w3),
                                              S(ukr_avx2_w3_ind), S(dot_avx2), S(dot_avx2_finite), 3, 4,
                                              "avx2+fma", S(ukr_avx2_w3_str)};
static const S(kernel_t) S(kernel_avx512) = {6, 128 / (int)sizeof(T), S(ukr_avx512),
                                             S(ukr_avx512_ind), S(dot_avx512), S(dot_avx512_finite), 4, 6, "avx512f",
                                             S(ukr_avx512_str)};
static const S(kernel_t) S(kernel_avx512_m8) = {8, 128 / (int)sizeof(T), S(ukr_avx512_m8),
                                                S(ukr_avx512_m8_ind), S(dot_avx512), S(dot_avx512_finite), 4, 6,
                                                "avx512f", S(ukr_avx512_m8_str)};
#endif
/* The micro-kernels of the level cconv_isa_level names (isa.h): the default one and, on
 * AVX-512, a variant with taller A strips (NULL elsewhere); on AVX2 a 4 x 3-vector tile
 * (cconv_kernel_wide).  Which of the two a GEMM uses
 * is the planner's choice (src/conv_plan.pxi); packing and micro-kernel calls of one GEMM
 * must all use the same kernel. */
static const S(kernel_t) *S(cconv_kernel)(void)
{
#if CCONV_X86_DISPATCH
    if (cconv_isa_level == CCONV_ISA_AVX512F) return &S(kernel_avx512);
    if (cconv_isa_level == CCONV_ISA_AVX2) return &S(kernel_avx2);
#endif
    return &S(kernel_generic);
}

static const S(kernel_t) *S(cconv_kernel_tall)(void)
{
#if CCONV_X86_DISPATCH
    if (cconv_isa_level == CCONV_ISA_AVX512F) return &S(kernel_avx512_m8);
#endif
    return NULL;
}

/* The 4-row, 3-vector tile of the level cconv_isa_level names: AVX2 only (NULL elsewhere;
 * AVX-512's 8-row strips already cover multiples of 8 rows).  Only the planner's volume
 * forward chooses it (conv_plan.pxi, _choose_vol_kernel). */
static const S(kernel_t) *S(cconv_kernel_wide)(void)
{
#if CCONV_X86_DISPATCH
    if (cconv_isa_level == CCONV_ISA_AVX2) return &S(kernel_avx2_w3);
#endif
    return NULL;
}
