/* One vector micro-kernel, instantiated by conv_impl.h for each (type, ISA, B access).
 *
 * Parameters (macros): T, UKR_NAME, UKR_TARGET (a function attribute or empty),
 * UKR_VBYTES (vector width in bytes), UKR_MR (rows), UKR_NV (vectors per tile row: 2, the
 * default, or 3), UKR_INDIRECT (0: B is a packed
 * panel, b[k*NR + j]; 1: B row k is the NR contiguous values at b + off[k], read
 * straight from a padded image, so no im2col packing is needed).  The tile is UKR_MR x NR with
 * NR = two vectors, so MR*2 accumulators + 2 B vectors + 1 broadcast fit the
 * register file (6x2+3 = 15 of AVX2's 16 ymm; 12x2+3 = 27 of AVX-512's 32 zmm).  With
 * UKR_NV 3 the tile is UKR_MR x 3 vectors: 4x3 accumulators + 3 B vectors + 1 broadcast = all
 * 16 ymm on AVX2, for A operands of a multiple of 4 rows that 6-row strips would pad.
 * UKR_INDIRECT 2: both operands unpacked, read where they are (a 1x1 GEMM on the weights
 * and the input in place, conv_pointwise.h): A(i, k) = a[i*ars + k*acs], B row k is the NR
 * contiguous values at b + k*ldb.  Rows past m re-read row m-1 (never outside A); their
 * sums are dropped.
 *
 *   C[0:m, 0:n] = (accumulate ? C : bias[i] or 0) + A_strip(kc x MR)^T * B_panel(kc x NR)
 *
 * with a[k*MR + i] and b[k*NR + j].  GCC vector extensions keep this one portable
 * source for every width; -ffp-contract=fast (setup.py) turns a*b+c into FMA.
 */
#ifndef UKR_NV
#define UKR_NV 2
#endif
#if UKR_NV != 2 && UKR_NV != 3
#error "UKR_NV: 2 or 3 vectors per tile row"
#endif
#define UKR_VL (UKR_VBYTES / (int)sizeof(T))
#define UKR_NR (UKR_NV * UKR_VL)
#define UKR_V CCONV_CAT(UKR_NAME, _v)
#define UKR_VU CCONV_CAT(UKR_NAME, _vu)

typedef T UKR_V __attribute__((vector_size(UKR_VBYTES)));
/* Unaligned, aliasing-safe view for loads/stores from plain T arrays. */
typedef T UKR_VU __attribute__((vector_size(UKR_VBYTES), aligned(sizeof(T)), __may_alias__));

UKR_TARGET
static void UKR_NAME(Py_ssize_t kc, const T *CCONV_RESTRICT a,
#if UKR_INDIRECT == 2
                     Py_ssize_t ars, Py_ssize_t acs, const T *CCONV_RESTRICT b, Py_ssize_t ldb,
#else
                     const T *CCONV_RESTRICT b,
#endif
#if UKR_INDIRECT == 1
                     const Py_ssize_t *CCONV_RESTRICT off,
#endif
                     T *CCONV_RESTRICT c, Py_ssize_t ldc, int m, int n, int accumulate,
                     const T *CCONV_RESTRICT bias)
{
    UKR_V acc0[UKR_MR], acc1[UKR_MR];
#if UKR_NV == 3
    UKR_V acc2[UKR_MR];
#endif
    int i, j;
    /* The C tile is read back at the end: start fetching it now (it is often outside L1/L2,
     * e.g. a weight gradient accumulated over many images). */
    if (accumulate)
        for (i = 0; i < m; i++) {
            __builtin_prefetch(c + i * ldc, 1);
            __builtin_prefetch(c + i * ldc + n - 1, 1);
        }
#pragma GCC unroll 16
    for (i = 0; i < UKR_MR; i++) {
        T init = (!accumulate && bias != NULL && i < m) ? bias[i] : (T)0;
        acc0[i] = (UKR_V){0} + init;
        acc1[i] = acc0[i];
#if UKR_NV == 3
        acc2[i] = acc0[i];
#endif
    }
    /* Unrolled so the pointer bumps and loop test amortise over several steps; each A
     * value is a scalar times a vector, which GCC emits as one broadcast load (a
     * `(UKR_V){0} + a[i]` splat costs an add and a register shuffle per row instead,
     * both on the FP ports the FMAs need). */
#if UKR_INDIRECT == 2
    const T *arow[UKR_MR];
#pragma GCC unroll 16
    for (i = 0; i < UKR_MR; i++) arow[i] = a + (i < m ? i : m - 1) * ars;
#pragma GCC unroll 4
    for (Py_ssize_t k = 0; k < kc; k++) {
        const T *brow = b + k * ldb;
        const UKR_V b0 = *(const UKR_VU *)brow;
        const UKR_V b1 = *(const UKR_VU *)(brow + UKR_VL);
#if UKR_NV == 3
        const UKR_V b2 = *(const UKR_VU *)(brow + 2 * UKR_VL);
#endif
#pragma GCC unroll 16
        for (i = 0; i < UKR_MR; i++) {
            const T av = arow[i][k * acs];
            acc0[i] += av * b0;
            acc1[i] += av * b1;
#if UKR_NV == 3
            acc2[i] += av * b2;
#endif
        }
    }
#else
#pragma GCC unroll 4
    for (Py_ssize_t k = 0; k < kc; k++) {
#if UKR_INDIRECT
        const T *brow = b + off[k];
#else
        const T *brow = b + k * UKR_NR;
#endif
        const UKR_V b0 = *(const UKR_VU *)brow;
        const UKR_V b1 = *(const UKR_VU *)(brow + UKR_VL);
#if UKR_NV == 3
        const UKR_V b2 = *(const UKR_VU *)(brow + 2 * UKR_VL);
#endif
        const T *ak = a + k * UKR_MR;
#pragma GCC unroll 16
        for (i = 0; i < UKR_MR; i++) {
            acc0[i] += ak[i] * b0;
            acc1[i] += ak[i] * b1;
#if UKR_NV == 3
            acc2[i] += ak[i] * b2;
#endif
        }
    }
#endif
    if (n == UKR_NR) {   /* full width: whole vector rows, only the m that exist */
#pragma GCC unroll 16
        for (i = 0; i < UKR_MR; i++) {
            if (i >= m) break;
            UKR_VU *row = (UKR_VU *)(c + i * ldc);
            if (accumulate) {
                row[0] = row[0] + acc0[i];
                row[1] = row[1] + acc1[i];
#if UKR_NV == 3
                row[2] = row[2] + acc2[i];
#endif
            } else {
                row[0] = acc0[i];
                row[1] = acc1[i];
#if UKR_NV == 3
                row[2] = acc2[i];
#endif
            }
        }
        return;
    }
    /* Narrow edge tile: spill and copy only the m x n part that exists. */
    T tile[UKR_MR * UKR_NR];
    for (i = 0; i < UKR_MR; i++) {
        *(UKR_VU *)(tile + i * UKR_NR) = acc0[i];
        *(UKR_VU *)(tile + i * UKR_NR + UKR_VL) = acc1[i];
#if UKR_NV == 3
        *(UKR_VU *)(tile + i * UKR_NR + 2 * UKR_VL) = acc2[i];
#endif
    }
    for (i = 0; i < m; i++) {
        T *row = c + i * ldc;
        const T *t = tile + i * UKR_NR;
        if (accumulate)
            for (j = 0; j < n; j++) row[j] += t[j];
        else
            for (j = 0; j < n; j++) row[j] = t[j];
    }
}

#undef UKR_VL
#undef UKR_NR
#undef UKR_NV
#undef UKR_V
#undef UKR_VU
