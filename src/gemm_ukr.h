/* One vector micro-kernel, instantiated by conv_impl.h for each (type, ISA, B access).
 *
 * Parameters (macros): T, UKR_NAME, UKR_TARGET (a function attribute or empty),
 * UKR_VBYTES (vector width in bytes), UKR_MR (rows), UKR_INDIRECT (0: B is a packed
 * panel, b[k*NR + j]; 1: B row k is the NR contiguous values at b + off[k], read
 * straight from a padded image, so no im2col packing is needed).  The tile is UKR_MR x NR with
 * NR = two vectors, so MR*2 accumulators + 2 B vectors + 1 broadcast fit the
 * register file (6x2+3 = 15 of AVX2's 16 ymm; 12x2+3 = 27 of AVX-512's 32 zmm).
 *
 *   C[0:m, 0:n] = (accumulate ? C : bias[i] or 0) + A_strip(kc x MR)^T * B_panel(kc x NR)
 *
 * with a[k*MR + i] and b[k*NR + j].  GCC vector extensions keep this one portable
 * source for every width; -ffp-contract=fast (setup.py) turns a*b+c into FMA.
 */
#define UKR_VL (UKR_VBYTES / (int)sizeof(T))
#define UKR_NR (2 * UKR_VL)
#define UKR_V CCONV_CAT(UKR_NAME, _v)
#define UKR_VU CCONV_CAT(UKR_NAME, _vu)

typedef T UKR_V __attribute__((vector_size(UKR_VBYTES)));
/* Unaligned, aliasing-safe view for loads/stores from plain T arrays. */
typedef T UKR_VU __attribute__((vector_size(UKR_VBYTES), aligned(sizeof(T)), __may_alias__));

UKR_TARGET
static void UKR_NAME(Py_ssize_t kc, const T *CCONV_RESTRICT a, const T *CCONV_RESTRICT b,
#if UKR_INDIRECT
                     const Py_ssize_t *CCONV_RESTRICT off,
#endif
                     T *CCONV_RESTRICT c, Py_ssize_t ldc, int m, int n, int accumulate,
                     const T *CCONV_RESTRICT bias)
{
    UKR_V acc0[UKR_MR], acc1[UKR_MR];
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
    }
    for (Py_ssize_t k = 0; k < kc; k++) {
#if UKR_INDIRECT
        const T *brow = b + off[k];
#else
        const T *brow = b;
#endif
        UKR_V b0 = *(const UKR_VU *)brow;
        UKR_V b1 = *(const UKR_VU *)(brow + UKR_VL);
        /* a[i] * b0: GCC splats the scalar straight from memory (one vbroadcastss per row).
         * Not (UKR_V){0} + a[i]: 0 + x is not x for x = -0, so that add stays in the loop
         * as a scalar add and a register shuffle per row, two extra FP-port uops per two
         * FMAs, which held the AVX2 GEMM to ~55% of peak. */
#pragma GCC unroll 16
        for (i = 0; i < UKR_MR; i++) {
            acc0[i] += a[i] * b0;
            acc1[i] += a[i] * b1;
        }
        a += UKR_MR;
#if !UKR_INDIRECT
        b += UKR_NR;
#endif
    }
    if (m == UKR_MR && n == UKR_NR) {
#pragma GCC unroll 16
        for (i = 0; i < UKR_MR; i++) {
            UKR_VU *row = (UKR_VU *)(c + i * ldc);
            if (accumulate) {
                row[0] = row[0] + acc0[i];
                row[1] = row[1] + acc1[i];
            } else {
                row[0] = acc0[i];
                row[1] = acc1[i];
            }
        }
        return;
    }
    /* Edge tile: spill and copy only the m x n part that exists. */
    T tile[UKR_MR * UKR_NR];
    for (i = 0; i < UKR_MR; i++) {
        *(UKR_VU *)(tile + i * UKR_NR) = acc0[i];
        *(UKR_VU *)(tile + i * UKR_NR + UKR_VL) = acc1[i];
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
#undef UKR_V
#undef UKR_VU
