/* One dtype's max-pool row kernels: included by pool_kernels.h with POOL_T (float or
 * double) and POOL_SUFFIX (_f32 or _f64) defined.  No include guard on purpose. */

#define POOL_NAME(name) POOL_CAT(name, POOL_SUFFIX)

/* Branch-free ``if v > m or isnan(v): m, best = v, label`` (PyTorch's rule). */
POOL_INLINE void POOL_NAME(pool_take)(POOL_T v, POOL_T label, POOL_T *m, POOL_T *best)
{
    int take = (v > *m) | (v != v);
    *m = take ? v : *m;
    *best = take ? label : *best;
}

/* Fold KW (2 or 3) taps spaced DW of `count` windows spaced SW into running maxima m and
 * the winning taps' labels, tap by tap in row-major order: ties keep the first maximum,
 * the last NaN wins.  Labels are window-relative offsets h*W + w kept in POOL_T, so that
 * the selects have one element width and vectorise even on SSE2; the caller guarantees
 * they are exact.  Called with literal KW, SW, DW so that everything below unrolls and
 * the window loop vectorises.  The labels are computed before the loop: an addition
 * inside the select could trap (in the compiler's eyes) and would keep it a branch. */
POOL_INLINE void POOL_NAME(pool_fold)(const POOL_T *POOL_RESTRICT x, Py_ssize_t count,
                                      const Py_ssize_t KW, const Py_ssize_t SW, const Py_ssize_t DW,
                                      POOL_T label, POOL_T *POOL_RESTRICT m, POOL_T *POOL_RESTRICT best)
{
    Py_ssize_t k;
    const POOL_T l0 = label, l1 = label + (POOL_T)DW, l2 = label + (POOL_T)(2 * DW);
    for (k = 0; k < count; k++) {
        const POOL_T *t = x + k * SW;
        POOL_T mk = m[k], bk = best[k];
        POOL_NAME(pool_take)(t[0], l0, &mk, &bk);
        POOL_NAME(pool_take)(t[DW], l1, &mk, &bk);
        if (KW > 2)
            POOL_NAME(pool_take)(t[2 * DW], l2, &mk, &bk);
        m[k] = mk;
        best[k] = bk;
    }
}

/* pool_fold for the first kernel row: window k starts from its first tap. */
POOL_INLINE void POOL_NAME(pool_fold_first)(const POOL_T *POOL_RESTRICT x, Py_ssize_t count,
                                            const Py_ssize_t KW, const Py_ssize_t SW,
                                            const Py_ssize_t DW, POOL_T label,
                                            POOL_T *POOL_RESTRICT m, POOL_T *POOL_RESTRICT best)
{
    Py_ssize_t k;
    const POOL_T l1 = label + (POOL_T)DW, l2 = label + (POOL_T)(2 * DW);
    for (k = 0; k < count; k++) {
        const POOL_T *t = x + k * SW;
        POOL_T mk = t[0], bk = label;
        POOL_NAME(pool_take)(t[DW], l1, &mk, &bk);
        if (KW > 2)
            POOL_NAME(pool_take)(t[2 * DW], l2, &mk, &bk);
        m[k] = mk;
        best[k] = bk;
    }
}

#if POOL_VECTOR_EXT
/* The same folds written with GCC/Clang vector extensions, POOL_V windows at a time:
 * what the auto-vectoriser produces for the loops above, minus its scalar alignment
 * prologue and remainder loops (whose selects become unpredictable branches). */
typedef POOL_T POOL_NAME(pool_vec) __attribute__((vector_size(32)));
typedef POOL_IT POOL_NAME(pool_ivec) __attribute__((vector_size(32)));
#define POOL_VEC POOL_NAME(pool_vec)
#define POOL_IVEC POOL_NAME(pool_ivec)
/* (vectors go through pointers: passing them by value would depend on the ISA's ABI) */

/* v = p[0], p[SW], ..., p[(POOL_V - 1)*SW] for SW = 1 or 2, reading nothing past the last. */
POOL_INLINE void POOL_NAME(pool_load_taps)(POOL_VEC *v, const POOL_T *p, const Py_ssize_t SW)
{
    POOL_VEC a, b;
    if (SW == 1) {
        memcpy(v, p, sizeof *v);
        return;
    }
    memcpy(&a, p, sizeof a);
    memcpy(&b, p + POOL_V - 1, sizeof b);
    *v = POOL_EVENS(a, b);
}

/* pool_take on POOL_V windows: the tap values at p (stride SW), all labelled `label`. */
POOL_INLINE void POOL_NAME(pool_vtake)(const POOL_T *p, const Py_ssize_t SW, const POOL_VEC *label,
                                       POOL_VEC *m, POOL_VEC *best)
{
    POOL_VEC v;
    POOL_IVEC take;
    POOL_NAME(pool_load_taps)(&v, p, SW);
    take = (v > *m) | (v != v);
    *m = (POOL_VEC)(((POOL_IVEC)v & take) | ((POOL_IVEC)*m & ~take));
    *best = (POOL_VEC)(((POOL_IVEC)*label & take) | ((POOL_IVEC)*best & ~take));
}

/* pool_fold (first = 0) or pool_fold_first (first = 1) without dilation (DW = 1);
 * n is a multiple of POOL_V. */
POOL_INLINE void POOL_NAME(pool_vfold)(const POOL_T *POOL_RESTRICT x, Py_ssize_t n,
                                       const Py_ssize_t KW, const Py_ssize_t SW, POOL_T label,
                                       POOL_T *POOL_RESTRICT m, POOL_T *POOL_RESTRICT best,
                                       const int first)
{
    const POOL_VEC zero = {0};
    const POOL_VEC l0 = zero + label, l1 = zero + (label + 1), l2 = zero + (label + 2);
    Py_ssize_t k;
    for (k = 0; k < n; k += POOL_V) {
        const POOL_T *t = x + k * SW;
        POOL_VEC mk, bk;
        if (first) {
            POOL_NAME(pool_load_taps)(&mk, t, SW);
            bk = l0;
        } else {
            memcpy(&mk, m + k, sizeof mk);
            memcpy(&bk, best + k, sizeof bk);
            POOL_NAME(pool_vtake)(t, SW, &l0, &mk, &bk);
        }
        POOL_NAME(pool_vtake)(t + 1, SW, &l1, &mk, &bk);
        if (KW > 2)
            POOL_NAME(pool_vtake)(t + 2, SW, &l2, &mk, &bk);
        memcpy(m + k, &mk, sizeof mk);
        memcpy(best + k, &bk, sizeof bk);
    }
}
#endif

/* The AVX2 build (vec = 1) uses the explicit vectors above; the baseline build keeps the
 * auto-vectorised loops, because 32-byte vectors lowered to SSE2 shuffle poorly. */
#if POOL_VECTOR_EXT
#define POOL_FOLD(x, n, KW, SW, label, m, best)                            \
    (vec ? POOL_NAME(pool_vfold)(x, n, KW, SW, label, m, best, 0)          \
         : POOL_NAME(pool_fold)(x, n, KW, SW, 1, label, m, best))
#define POOL_FOLD_FIRST(x, n, KW, SW, label, m, best)                      \
    (vec ? POOL_NAME(pool_vfold)(x, n, KW, SW, label, m, best, 1)          \
         : POOL_NAME(pool_fold_first)(x, n, KW, SW, 1, label, m, best))
#else
#define POOL_FOLD(x, n, KW, SW, label, m, best) POOL_NAME(pool_fold)(x, n, KW, SW, 1, label, m, best)
#define POOL_FOLD_FIRST(x, n, KW, SW, label, m, best) POOL_NAME(pool_fold_first)(x, n, KW, SW, 1, label, m, best)
#endif

/* One tap of every window (kernels other than 2 and 3 wide go tap by tap). */
POOL_INLINE void POOL_NAME(pool_fold_tap)(const POOL_T *POOL_RESTRICT x, Py_ssize_t count,
                                          const Py_ssize_t SW, POOL_T label, POOL_T *POOL_RESTRICT m,
                                          POOL_T *POOL_RESTRICT best)
{
    Py_ssize_t k;
    for (k = 0; k < count; k++)
        POOL_NAME(pool_take)(x[k * SW], label, m + k, best + k);
}

POOL_INLINE void POOL_NAME(pool_fold_tap_first)(const POOL_T *POOL_RESTRICT x, Py_ssize_t count,
                                                const Py_ssize_t SW, POOL_T label,
                                                POOL_T *POOL_RESTRICT m, POOL_T *POOL_RESTRICT best)
{
    Py_ssize_t k;
    for (k = 0; k < count; k++) {
        m[k] = x[k * SW];
        best[k] = label;
    }
}

/* One kernel row of every window: literal sizes for the common kernels. */
POOL_INLINE void POOL_NAME(pool_fold_row)(const POOL_T *POOL_RESTRICT x, Py_ssize_t count,
                                          Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dw, POOL_T label,
                                          POOL_T *POOL_RESTRICT m, POOL_T *POOL_RESTRICT best,
                                          const int vec)
{
    Py_ssize_t j;
    if (dw == 1 && sw == 2 && kw == 2) {
        POOL_FOLD(x, count, 2, 2, label, m, best);
    } else if (dw == 1 && sw == 2 && kw == 3) {
        POOL_FOLD(x, count, 3, 2, label, m, best);
    } else if (dw == 1 && sw == 1 && kw == 2) {
        POOL_FOLD(x, count, 2, 1, label, m, best);
    } else if (dw == 1 && sw == 1 && kw == 3) {
        POOL_FOLD(x, count, 3, 1, label, m, best);
    } else {
        for (j = 0; j < kw; j++) {
            if (sw == 1)
                POOL_NAME(pool_fold_tap)(x + j * dw, count, 1, label + (POOL_T)(j * dw), m, best);
            else if (sw == 2)
                POOL_NAME(pool_fold_tap)(x + j * dw, count, 2, label + (POOL_T)(j * dw), m, best);
            else
                POOL_NAME(pool_fold_tap)(x + j * dw, count, sw, label + (POOL_T)(j * dw), m, best);
        }
    }
}

/* pool_fold_row for the first kernel row, each window starting from its first tap. */
POOL_INLINE void POOL_NAME(pool_fold_row_first)(const POOL_T *POOL_RESTRICT x, Py_ssize_t count,
                                                Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dw,
                                                POOL_T label, POOL_T *POOL_RESTRICT m,
                                                POOL_T *POOL_RESTRICT best, const int vec)
{
    if (dw == 1 && sw == 2 && kw == 2) {
        POOL_FOLD_FIRST(x, count, 2, 2, label, m, best);
    } else if (dw == 1 && sw == 2 && kw == 3) {
        POOL_FOLD_FIRST(x, count, 3, 2, label, m, best);
    } else if (dw == 1 && sw == 1 && kw == 2) {
        POOL_FOLD_FIRST(x, count, 2, 1, label, m, best);
    } else if (dw == 1 && sw == 1 && kw == 3) {
        POOL_FOLD_FIRST(x, count, 3, 1, label, m, best);
    } else {
        if (sw == 1)
            POOL_NAME(pool_fold_tap_first)(x, count, 1, label, m, best);
        else if (sw == 2)
            POOL_NAME(pool_fold_tap_first)(x, count, 2, label, m, best);
        else
            POOL_NAME(pool_fold_tap_first)(x, count, sw, label, m, best);
        if (kw > 1)  /* the rest of the row */
            POOL_NAME(pool_fold_row)(x + dw, count, kw - 1, sw, dw, label + (POOL_T)dw, m, best, vec);
    }
}

/* `count` (<= POOL_BLOCK) adjacent windows of one output row.
 *   x          the first window's top-left tap in the volume being read: the input
 *              itself or a padded copy (pool_pad_plane);
 *   depths     kernel slices inside the input (1 for a 2-d pool): slice t is read at
 *              x + t*depth_step and its labels start at label0 + t*depth_label_step;
 *   rows       kernel rows inside the input (row r of a slice is read r*row_step
 *              further and its labels start r*label_step further);
 *   first_col  NULL when x is the input itself: every window's first tap is then a real
 *              pixel and count is a multiple of POOL_GROUP.  Otherwise x is a padded copy
 *              with -inf columns (never taken) and slack after the last row: window k
 *              starts from -inf and the label of its first real tap, label0 +
 *              first_col[k], and the count is rounded up to a multiple of POOL_GROUP;
 *   out        receives the maxima; index[k] = index0 + k*sw + label of the winner.
 * The windows are computed in aligned scratch and in whole groups: the compiler's scalar
 * prologue (alignment peeling) and remainder loops then never run, and those would be
 * branchy (unpredictable on random data). */
POOL_INLINE void POOL_NAME(pool_max_row_body)(
    const POOL_T *POOL_RESTRICT x, Py_ssize_t depths, Py_ssize_t depth_step, POOL_T depth_label_step,
    Py_ssize_t rows, Py_ssize_t row_step, POOL_T label0, POOL_T label_step, Py_ssize_t count, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dw,
    const POOL_T *POOL_RESTRICT first_col, POOL_T *POOL_RESTRICT out, int64_t *POOL_RESTRICT index,
    int64_t index0, const int vec)
{
    POOL_ALIGNED(64) POOL_T m[POOL_BLOCK];
    POOL_ALIGNED(64) POOL_T best[POOL_BLOCK];
    Py_ssize_t t, r = 0, k, n = (count + POOL_GROUP - 1) / POOL_GROUP * POOL_GROUP;
    if (first_col == NULL) {
        POOL_NAME(pool_fold_row_first)(x, n, kw, sw, dw, label0, m, best, vec);
        r = 1;
    } else {
        for (k = 0; k < n; k++) {
            m[k] = -(POOL_T)INFINITY;
            best[k] = label0 + first_col[k];
        }
    }
    /* slices, then rows, then taps: (d, h, w) order, so ties keep the first maximum */
    for (t = 0; t < depths; t++) {
        const POOL_T *slice = x + t * depth_step;
        const POOL_T slice_label = label0 + (POOL_T)t * depth_label_step;
        for (; r < rows; r++)
            POOL_NAME(pool_fold_row)(slice + r * row_step, n, kw, sw, dw,
                                     slice_label + (POOL_T)r * label_step, m, best, vec);
        r = 0;
    }
    memcpy(out, m, (size_t)count * sizeof(POOL_T));
    /* labels are small integers: via int32, which vectorises on SSE2 */
    for (k = 0; k < count; k++)
        index[k] = index0 + k * sw + (int32_t)best[k];
}

#define POOL_ROW_ARGS                                                                      \
    const POOL_T *x, Py_ssize_t depths, Py_ssize_t depth_step, POOL_T depth_label_step,      \
    Py_ssize_t rows, Py_ssize_t row_step, POOL_T label0, POOL_T label_step,                  \
    Py_ssize_t count, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dw, const POOL_T *first_col,  \
    POOL_T *out, int64_t *index, int64_t index0
#define POOL_ROW_CALL x, depths, depth_step, depth_label_step, rows, row_step, label0, label_step, \
    count, kw, sw, dw, first_col, out, index, index0

static void POOL_NAME(pool_max_row_base)(POOL_ROW_ARGS)
{
    POOL_NAME(pool_max_row_body)(POOL_ROW_CALL, 0);
}

#if POOL_X86_DISPATCH
__attribute__((target("avx2")))
static void POOL_NAME(pool_max_row_avx2)(POOL_ROW_ARGS)
{
    POOL_NAME(pool_max_row_body)(POOL_ROW_CALL, 1);
}
#endif

static void (*POOL_NAME(pool_max_row_impl))(POOL_ROW_ARGS) = POOL_NAME(pool_max_row_base);

/* The entry point _pool.pyx calls: the kernel chosen by pool_kernels_init(). */
static inline void POOL_NAME(pool_max_row)(POOL_ROW_ARGS)
{
    POOL_NAME(pool_max_row_impl)(POOL_ROW_CALL);
}

/* Copy an (h, w) plane into rows of stride w + left + right, the extra columns -inf,
 * followed by `slack` more -inf values (read by the rounded-up windows of the last row). */
static inline void POOL_NAME(pool_pad_plane)(const POOL_T *POOL_RESTRICT x, Py_ssize_t h, Py_ssize_t w,
                                             Py_ssize_t left, Py_ssize_t right, Py_ssize_t slack,
                                             POOL_T *POOL_RESTRICT dst)
{
    Py_ssize_t r, c;
    for (r = 0; r < h; r++) {
        for (c = 0; c < left; c++)
            dst[c] = -(POOL_T)INFINITY;
        memcpy(dst + left, x + r * w, (size_t)w * sizeof(POOL_T));
        for (c = left + w; c < left + w + right; c++)
            dst[c] = -(POOL_T)INFINITY;
        dst += left + w + right;
    }
    for (c = 0; c < slack; c++)
        dst[c] = -(POOL_T)INFINITY;
}

/* Adaptive pooling of one (n, c) volume (1-d and 2-d pools have D = 1, and H = 1): bins
 * as in pool_adaptive_shape.  Scalar on purpose: bins differ in start and width from one
 * output to the next, so there is no row of equal windows to vectorise across; the
 * selects of the max are branch-free (a compare-and-branch would mispredict on real data). */

/* pool_take for a scalar maximum and its position, as bit masks: written as selects, GCC
 * turns the float compare into branches (mispredicted half the time on real data). */
POOL_INLINE void POOL_NAME(pool_take_at)(POOL_T v, Py_ssize_t pos, POOL_T *m, Py_ssize_t *best)
{
    const int take = (v > *m) | (v != v);
    const POOL_IT mask = -(POOL_IT)take;
    const Py_ssize_t wide = -(Py_ssize_t)take;
    POOL_IT vb, mb;
    memcpy(&vb, &v, sizeof vb);
    memcpy(&mb, m, sizeof mb);
    mb = (vb & mask) | (mb & ~mask);
    memcpy(m, &mb, sizeof mb);
    *best = (pos & wide) | (*best & ~wide);
}

/* Maxima and their flat indices d*H*W + h*W + w.  PyTorch's rule, taps in (d, h, w) order:
 * a tap replaces the running maximum when greater or NaN (ties keep the first maximum,
 * the last NaN wins); the first tap starts it.  The windows of an output row share their
 * slices and rows, so up to POOL_BLOCK of them advance together, tap j of each in turn:
 * independent dependency chains instead of one per window.  A window narrower than the
 * widest re-reads its last tap, which changes nothing (it is already the maximum, or the
 * NaN in place). */
static void POOL_NAME(pool_adaptive_max)(const POOL_T *POOL_RESTRICT x, const pool_adaptive_shape *s,
                                         POOL_T *POOL_RESTRICT out, int64_t *POOL_RESTRICT index)
{
    const Py_ssize_t H = s->in_h, W = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int64_t *bins_d = s->bins_d, *bins_h = s->bins_h, *bins_w = s->bins_w;
    POOL_T m[POOL_BLOCK];
    Py_ssize_t best[POOL_BLOCK], first[POOL_BLOCK], last[POOL_BLOCK];
    Py_ssize_t od, oh, c0, n, k, j, d, h, width;
    for (od = 0; od < s->out_d; od++) {
        const Py_ssize_t d0 = bins_d[2 * od], d1 = bins_d[2 * od + 1];
        for (oh = 0; oh < out_h; oh++) {
            const Py_ssize_t h0 = bins_h[2 * oh], h1 = bins_h[2 * oh + 1];
            const Py_ssize_t row0 = (d0 * H + h0) * W;
            for (c0 = 0; c0 < out_w; c0 += n) {
                n = out_w - c0 < POOL_BLOCK ? out_w - c0 : POOL_BLOCK;
                width = 0;
                for (k = 0; k < n; k++) {
                    first[k] = bins_w[2 * (c0 + k)];
                    last[k] = bins_w[2 * (c0 + k) + 1] - 1;
                    width = last[k] - first[k] + 1 > width ? last[k] - first[k] + 1 : width;
                    m[k] = x[row0 + first[k]];
                    best[k] = row0 + first[k];
                }
                for (d = d0; d < d1; d++) {
                    for (h = h0; h < h1; h++) {
                        const Py_ssize_t row = (d * H + h) * W;
                        for (j = 0; j < width; j++) {
                            for (k = 0; k < n; k++) {
                                const Py_ssize_t pos = row + (first[k] + j < last[k] ? first[k] + j : last[k]);
                                POOL_NAME(pool_take_at)(x[pos], pos, m + k, best + k);
                            }
                        }
                    }
                }
                for (k = 0; k < n; k++) {
                    *out++ = m[k];
                    *index++ = best[k];
                }
            }
        }
    }
}

/* Bin means: each bin's own elements summed in (d, h, w) order, then divided by their
 * count (so an Inf or NaN stays in the bins that hold it). */
static void POOL_NAME(pool_adaptive_avg)(const POOL_T *POOL_RESTRICT x, const pool_adaptive_shape *s,
                                         POOL_T *POOL_RESTRICT out)
{
    const Py_ssize_t H = s->in_h, W = s->in_w;
    Py_ssize_t od, oh, ow, d, h, w;
    for (od = 0; od < s->out_d; od++) {
        const Py_ssize_t d0 = s->bins_d[2 * od], d1 = s->bins_d[2 * od + 1];
        for (oh = 0; oh < s->out_h; oh++) {
            const Py_ssize_t h0 = s->bins_h[2 * oh], h1 = s->bins_h[2 * oh + 1];
            for (ow = 0; ow < s->out_w; ow++) {
                const Py_ssize_t w0 = s->bins_w[2 * ow], w1 = s->bins_w[2 * ow + 1];
                POOL_T total = 0;
                for (d = d0; d < d1; d++)
                    for (h = h0; h < h1; h++)
                        for (w = w0; w < w1; w++)
                            total += x[(d * H + h) * W + w];
                *out++ = total / (POOL_T)((d1 - d0) * (h1 - h0) * (w1 - w0));
            }
        }
    }
}

/* The gradient of pool_adaptive_avg: zero the volume, then add each bin's share of its
 * output gradient to every element of the bin (bins in output order). */
static void POOL_NAME(pool_adaptive_avg_backward)(const POOL_T *POOL_RESTRICT gy,
                                                  const pool_adaptive_shape *s,
                                                  POOL_T *POOL_RESTRICT grad)
{
    const Py_ssize_t H = s->in_h, W = s->in_w;
    Py_ssize_t od, oh, ow, d, h, w;
    memset(grad, 0, (size_t)(s->in_d * H * W) * sizeof(POOL_T));
    for (od = 0; od < s->out_d; od++) {
        const Py_ssize_t d0 = s->bins_d[2 * od], d1 = s->bins_d[2 * od + 1];
        for (oh = 0; oh < s->out_h; oh++) {
            const Py_ssize_t h0 = s->bins_h[2 * oh], h1 = s->bins_h[2 * oh + 1];
            for (ow = 0; ow < s->out_w; ow++) {
                const Py_ssize_t w0 = s->bins_w[2 * ow], w1 = s->bins_w[2 * ow + 1];
                const POOL_T share = *gy++ / (POOL_T)((d1 - d0) * (h1 - h0) * (w1 - w0));
                for (d = d0; d < d1; d++)
                    for (h = h0; h < h1; h++)
                        for (w = w0; w < w1; w++)
                            grad[(d * H + h) * W + w] += share;
            }
        }
    }
}

#undef POOL_ROW_ARGS
#undef POOL_ROW_CALL
#undef POOL_FOLD
#undef POOL_FOLD_FIRST
#undef POOL_VEC
#undef POOL_IVEC
#undef POOL_NAME
