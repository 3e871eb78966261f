/* The "rows" kernels of one (type, ISA), instantiated by conv_rows.h.
 *
 * Parameters (macros): T, ROWS_NAME(x) (suffixes names with the type and ISA), ROWS_TARGET
 * (a function attribute or empty), ROWS_VBYTES (vector width in bytes; 0: plain scalars).
 *
 *   rows_dot:  out[r, j] = bias[r] + sum_k w[r, k] * col[j, k]       (forward)
 *   rows_axpy: out[r, k] = sum_s a[r, s] * b[s, k], k in [k0, k1)   (both gradients)
 *
 * w, col and b are read row by row in place (rows contiguous); a is a small matrix with
 * any strides.  Every output element has one accumulator and one fixed order of operations
 * (rows_dot: its k positions in vector lanes, k ascending, then the lanes summed 0, 1, ...;
 * rows_axpy: s ascending from 0), whatever tile computes it and however a pass is cut into
 * tasks, so results do not depend on the thread count.  -ffp-contract=fast (setup.py)
 * turns acc += a * b into FMA. */
#if ROWS_VBYTES
#define ROWS_V ROWS_NAME(rows_v)
typedef T ROWS_V __attribute__((vector_size(ROWS_VBYTES)));
#define ROWS_NV (ROWS_VBYTES / (int)sizeof(T))
#else
#define ROWS_V T
#define ROWS_NV 1
#endif

ROWS_TARGET static inline ROWS_V ROWS_NAME(rows_load)(const T *p)
{
    ROWS_V v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The first n (< ROWS_NV) values at p, zeros after. */
ROWS_TARGET static inline ROWS_V ROWS_NAME(rows_load_part)(const T *p, int n)
{
    T lanes[ROWS_NV];
    ROWS_V v;
    for (int l = 0; l < ROWS_NV; l++) lanes[l] = l < n ? p[l] : (T)0;
    memcpy(&v, lanes, sizeof v);
    return v;
}

ROWS_TARGET static inline T ROWS_NAME(rows_hsum)(ROWS_V v)
{
    T lanes[ROWS_NV], s = 0;
    memcpy(lanes, &v, sizeof v);
    for (int l = 0; l < ROWS_NV; l++) s += lanes[l];
    return s;
}

/* R weight rows x CN columns of one forward tile (R, CN constant after inlining):
 * out[r * CN + c] = sum_k w[r*ldw + k] * col[c*ldc + k]. */
ROWS_TARGET static inline __attribute__((always_inline)) void ROWS_NAME(rows_dot_tile)(
    const int R, const int CN, Py_ssize_t K, const T *CCONV_RESTRICT w, Py_ssize_t ldw,
    const T *CCONV_RESTRICT col, Py_ssize_t ldc, T *out)
{
    ROWS_V acc[8][2], xv[2], wv;
    Py_ssize_t k = 0;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < CN; c++) acc[r][c] = (ROWS_V){0};
    for (; k + ROWS_NV <= K; k += ROWS_NV) {
        for (int c = 0; c < CN; c++) xv[c] = ROWS_NAME(rows_load)(col + c * ldc + k);
        for (int r = 0; r < R; r++) {
            wv = ROWS_NAME(rows_load)(w + r * ldw + k);
            for (int c = 0; c < CN; c++) acc[r][c] += wv * xv[c];
        }
    }
    if (k < K) {
        const int n = (int)(K - k);
        for (int c = 0; c < CN; c++) xv[c] = ROWS_NAME(rows_load_part)(col + c * ldc + k, n);
        for (int r = 0; r < R; r++) {
            wv = ROWS_NAME(rows_load_part)(w + r * ldw + k, n);
            for (int c = 0; c < CN; c++) acc[r][c] += wv * xv[c];
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < CN; c++) out[r * CN + c] = ROWS_NAME(rows_hsum)(acc[r][c]);
}

/* Forward of weight rows [r0, r1) against J columns: y[(j/P)*y_img + r*P + j%P] =
 * bias[r] (or 0) + w[r, :] . col[j, :].  Tiles of 4 rows x 2 columns (8 x 1 for a single
 * column): each block of weight rows is loaded once from memory and reused from L1
 * across the columns. */
ROWS_TARGET static void ROWS_NAME(rows_dot)(Py_ssize_t K, const T *w, Py_ssize_t ldw,
                                            Py_ssize_t r0, Py_ssize_t r1, const T *col,
                                            Py_ssize_t ldc, Py_ssize_t J, Py_ssize_t P,
                                            T *y, Py_ssize_t y_img, const T *bias)
{
    const int RB = J == 1 ? 8 : 4;
    T out[16];
    for (Py_ssize_t r = r0; r < r1; r += RB) {
        const int R = (int)cconv_min(RB, r1 - r);
        for (Py_ssize_t j = 0; j < J; j += 2) {
            const int CN = (int)cconv_min(2, J - j);
            const T *wr = w + r * ldw, *cj = col + j * ldc;
#define ROWS_DOT_CASE(rr, cc) \
    case rr * 4 + cc: ROWS_NAME(rows_dot_tile)(rr, cc, K, wr, ldw, cj, ldc, out); break;
            switch (R * 4 + CN) {
                ROWS_DOT_CASE(1, 1) ROWS_DOT_CASE(2, 1) ROWS_DOT_CASE(3, 1) ROWS_DOT_CASE(4, 1)
                ROWS_DOT_CASE(5, 1) ROWS_DOT_CASE(6, 1) ROWS_DOT_CASE(7, 1) ROWS_DOT_CASE(8, 1)
                ROWS_DOT_CASE(1, 2) ROWS_DOT_CASE(2, 2) ROWS_DOT_CASE(3, 2) ROWS_DOT_CASE(4, 2)
                default: break;
            }
#undef ROWS_DOT_CASE
            for (int i = 0; i < R; i++) {
                const T b = bias != NULL ? bias[r + i] : (T)0;
                for (int c = 0; c < CN; c++) {
                    const Py_ssize_t jj = j + c;
                    y[jj / P * y_img + (r + i) * P + jj % P] = out[i * CN + c] + b;
                }
            }
        }
    }
}

/* RT rows x U vectors of one axpy tile at column k (n < ROWS_NV: a single partial vector
 * of n values): out[r*ldo + k + ...] = sum_s a[r*a_rs + s*a_cs] * b[s*ldb + k + ...]. */
ROWS_TARGET static inline __attribute__((always_inline)) void ROWS_NAME(rows_axpy_tile)(
    const int RT, const int U, int n, Py_ssize_t S, const T *CCONV_RESTRICT a,
    Py_ssize_t a_rs, Py_ssize_t a_cs, const T *CCONV_RESTRICT b, Py_ssize_t ldb,
    T *CCONV_RESTRICT out, Py_ssize_t ldo)
{
    ROWS_V acc[4][8], bv[8];
    for (int r = 0; r < RT; r++)
        for (int u = 0; u < U; u++) acc[r][u] = (ROWS_V){0};
    if (n < ROWS_NV) {   /* one partial vector (U == 1) */
        for (Py_ssize_t s = 0; s < S; s++) {
            bv[0] = ROWS_NAME(rows_load_part)(b + s * ldb, n);
            for (int r = 0; r < RT; r++) acc[r][0] += a[r * a_rs + s * a_cs] * bv[0];
        }
    } else {
        for (Py_ssize_t s = 0; s < S; s++) {
            const T *bs = b + s * ldb;
            for (int u = 0; u < U; u++) bv[u] = ROWS_NAME(rows_load)(bs + u * ROWS_NV);
            for (int r = 0; r < RT; r++) {
                const T av = a[r * a_rs + s * a_cs];
                for (int u = 0; u < U; u++) acc[r][u] += av * bv[u];
            }
        }
    }
    for (int r = 0; r < RT; r++) {
        if (n < ROWS_NV) {
            T lanes[ROWS_NV];
            memcpy(lanes, &acc[r][0], sizeof lanes);
            for (int l = 0; l < n; l++) out[r * ldo + l] = lanes[l];
        } else {
            for (int u = 0; u < U; u++)
                memcpy(out + r * ldo + u * ROWS_NV, &acc[r][u], sizeof(ROWS_V));
        }
    }
}

/* out[r*ldo + k] = sum_s a[r*a_rs + s*a_cs] * b[s*ldb + k] for rows [0, R), k in [k0, k1):
 * per column strip, every block of rows (so a strip of b is read from memory once and
 * reused from cache by the row blocks).  Tiles of 4 rows x 2 vectors; fewer rows get
 * more vectors (1 x 8, 2 x 4, 3 x 2), all within 16 registers. */
ROWS_TARGET static void ROWS_NAME(rows_axpy)(Py_ssize_t R, Py_ssize_t S, Py_ssize_t k0,
                                             Py_ssize_t k1, const T *a, Py_ssize_t a_rs,
                                             Py_ssize_t a_cs, const T *b, Py_ssize_t ldb,
                                             T *out, Py_ssize_t ldo)
{
    const int U = R >= 3 ? 2 : R == 2 ? 4 : 8;
    Py_ssize_t k = k0;
    while (k < k1) {
        const Py_ssize_t left = k1 - k;
        const int u = (int)cconv_min(U, left / ROWS_NV);
        const int n = u > 0 ? ROWS_NV : (int)left;
        const int step = u > 0 ? u * ROWS_NV : n;
        for (Py_ssize_t r = 0; r < R; r += 4) {
            const int rt = (int)cconv_min(4, R - r);
            const T *ar = a + r * a_rs;
            T *o = out + r * ldo + k;
            const T *bk = b + k;
#define ROWS_AXPY_CASE(rr, uu) \
    case rr * 16 + uu: \
        ROWS_NAME(rows_axpy_tile)(rr, uu, n, S, ar, a_rs, a_cs, bk, ldb, o, ldo); break;
            switch (rt * 16 + (u > 0 ? u : 1)) {
                ROWS_AXPY_CASE(1, 1) ROWS_AXPY_CASE(1, 2) ROWS_AXPY_CASE(1, 3)
                ROWS_AXPY_CASE(1, 4) ROWS_AXPY_CASE(1, 5) ROWS_AXPY_CASE(1, 6)
                ROWS_AXPY_CASE(1, 7) ROWS_AXPY_CASE(1, 8)
                ROWS_AXPY_CASE(2, 1) ROWS_AXPY_CASE(2, 2) ROWS_AXPY_CASE(2, 3)
                ROWS_AXPY_CASE(2, 4)
                ROWS_AXPY_CASE(3, 1) ROWS_AXPY_CASE(3, 2)
                ROWS_AXPY_CASE(4, 1) ROWS_AXPY_CASE(4, 2)
                default: break;
            }
#undef ROWS_AXPY_CASE
        }
        k += step;
    }
}

#undef ROWS_V
#undef ROWS_NV
