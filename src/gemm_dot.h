/* One weight-gradient "dot" kernel, instantiated by conv_impl.h for each (type, ISA).
 *
 * Parameters (macros): T, DOT_NAME, DOT_TARGET, DOT_VBYTES, DOT_MO, DOT_NK, DOT_MASKED.
 * For a tile of mo <= DOT_MO output channels and nk <= DOT_NK kernel taps:
 *
 *   gw[i*ldg + l] += sum_{j < jp} gy[i*ldy + j] * (mask[j] ? xp[off[l] + j] : 0)
 *
 * over the flat output grid j = oh*wph + ow of the padded polyphase image xp (see
 * pad_phases); gy is grad_output copied onto that grid (zero on the grid's extra
 * columns), mask[j] is all ones on real output pixels and 0 elsewhere, so an inf in
 * the input can never meet a zero there.  With DOT_MASKED 0 the mask is not read (pass
 * NULL): for an input known to be finite, where every product on those columns is an
 * exact zero anyway (0 * finite), so the loop saves one AND per loaded input vector.
 * Vectorised along j with DOT_MO*DOT_NK vector
 * accumulators (an outer-product register tile: per vector step DOT_MO + DOT_NK loads
 * feed DOT_MO*DOT_NK FMAs).  The lanes are summed in a fixed order at the end, so
 * results do not depend on threads or timing.  jp is a multiple of the vector width.
 * The sums run over nimg images at once (image b's gy and xp start b*img_stride further
 * on), so the final lane sums are amortised over all of them.  ldy (>= jp) is the distance
 * between gy rows: jp on the grid copy, the plane size when gy is read in place (1x1).
 */
#define DOT_VL (DOT_VBYTES / (int)sizeof(T))
#define DOT_V CCONV_CAT(DOT_NAME, _v)
#define DOT_VU CCONV_CAT(DOT_NAME, _vu)
#define DOT_VI CCONV_CAT(DOT_NAME, _vi)

typedef T DOT_V __attribute__((vector_size(DOT_VBYTES)));
typedef T DOT_VU __attribute__((vector_size(DOT_VBYTES), aligned(sizeof(T)), __may_alias__));
typedef TI DOT_VI __attribute__((vector_size(DOT_VBYTES)));  /* TI: integer as wide as T */

DOT_TARGET
static void DOT_NAME(const T *CCONV_RESTRICT gy, Py_ssize_t jp, Py_ssize_t ldy,
                     const T *CCONV_RESTRICT xp,
                     Py_ssize_t img_stride, int nimg, const Py_ssize_t *CCONV_RESTRICT off,
                     const TI *CCONV_RESTRICT mask, T *CCONV_RESTRICT gw, Py_ssize_t ldg,
                     int mo, int nk)
{
#if !DOT_MASKED
    (void)mask;
#endif
    DOT_V acc[DOT_MO][DOT_NK];
    const T *grow[DOT_MO];
    const T *xrow[DOT_NK];
    int i, l;
#pragma GCC unroll 8
    for (i = 0; i < DOT_MO; i++)
#pragma GCC unroll 8
        for (l = 0; l < DOT_NK; l++) acc[i][l] = (DOT_V){0};
    for (int b = 0; b < nimg; b++) {
    for (i = 0; i < DOT_MO; i++)      /* missing rows re-read row 0, results unused */
        grow[i] = gy + b * img_stride + (i < mo ? i : 0) * ldy;
    for (l = 0; l < DOT_NK; l++) xrow[l] = xp + b * img_stride + off[l < nk ? l : 0];
    for (Py_ssize_t j = 0; j < jp; j += DOT_VL) {
#if DOT_MASKED
        const DOT_VI mv = *(const DOT_VI *)(mask + j);
#endif
        DOT_V gv[DOT_MO];
#pragma GCC unroll 8
        for (i = 0; i < DOT_MO; i++) gv[i] = *(const DOT_VU *)(grow[i] + j);
#pragma GCC unroll 8
        for (l = 0; l < DOT_NK; l++) {
#if DOT_MASKED
            const DOT_V xv = (DOT_V)((DOT_VI)(*(const DOT_VU *)(xrow[l] + j)) & mv);
#else
            const DOT_V xv = *(const DOT_VU *)(xrow[l] + j);
#endif
#pragma GCC unroll 8
            for (i = 0; i < DOT_MO; i++) acc[i][l] += gv[i] * xv;
        }
    }
    }
    for (i = 0; i < mo; i++)
        for (l = 0; l < nk; l++) {
            T lanes[DOT_VL];
            *(DOT_VU *)lanes = acc[i][l];
            T sum = 0;
            for (int lane = 0; lane < DOT_VL; lane++) sum += lanes[lane];
            gw[i * ldg + l] += sum;
        }
}

#undef DOT_VL
#undef DOT_V
#undef DOT_VU
#undef DOT_VI
