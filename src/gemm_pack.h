/* GEMM building blocks: packing A strips and B panels, and the macro-kernel that runs
 * a micro-kernel over packed blocks.
 * Type-generic: included by conv_impl.h once per float type (T, TI, S(name)); no
 * include guard on purpose. */

/* ---- GEMM building blocks ----------------------------------------------------- */

/* dst[0:len) = src[0:len) (never overlapping) for rows that are often a few values long:
 * a band's or a small map's rows, a kernel's live taps, an output row segment.  Written
 * as 32-byte moves, the last one moved back to end at the row's end (it rewrites a few
 * values with themselves), not as a plain loop: gcc turns that loop into a memmove call,
 * whose call and size dispatch cost more than the copy for rows of tens of values (video
 * stem forward under perf: memmove and its PLT stub 11.6% of the run, the call site
 * another ~6%; dilated bands: 24% in block copies); CCONV_OPAQUE keeps it from seeing the
 * loop as one. */
CCONV_BODY void S(copy_row)(T *CCONV_RESTRICT dst, const T *CCONV_RESTRICT src, Py_ssize_t len)
{
    typedef T cv32 __attribute__((vector_size(32), aligned(sizeof(T)), __may_alias__));
    typedef T cv16 __attribute__((vector_size(16), aligned(sizeof(T)), __may_alias__));
    const Py_ssize_t v = 32 / (Py_ssize_t)sizeof(T), h = 16 / (Py_ssize_t)sizeof(T);
    if (len >= v) {
        Py_ssize_t t = 0;
        for (; t + v <= len; t += v) {
            *(cv32 *)(dst + t) = *(const cv32 *)(src + t);
            CCONV_OPAQUE(t);
        }
        if (t < len) *(cv32 *)(dst + len - v) = *(const cv32 *)(src + len - v);
    } else if (len >= h) {
        *(cv16 *)dst = *(const cv16 *)src;
        *(cv16 *)(dst + len - h) = *(const cv16 *)(src + len - h);
    } else {
        if (len > 0) dst[0] = src[0];
        if (len > 1) dst[1] = src[1];
        if (len > 2) dst[2] = src[2];
    }
}

/* copy_row for the drivers in Cython (block copies of bands, crops of kernel taps). */
static void S(copy_run)(T *CCONV_RESTRICT dst, const T *CCONV_RESTRICT src, Py_ssize_t len)
{
    S(copy_row)(dst, src, len);
}

/* Pack the m x k matrix src[i*rs + kk*cs] into mr-row strips: element (s*mr + i, kk) goes
 * to dst[s*k*mr + kk*mr + i]; rows past m are zero.  Size: ceil(m/mr)*mr*k. */
static void S(pack_a)(T *CCONV_RESTRICT dst, const T *CCONV_RESTRICT src, Py_ssize_t m,
                      Py_ssize_t k, Py_ssize_t rs, Py_ssize_t cs, int mr)
{
    for (Py_ssize_t s = 0; s < m; s += mr) {
        Py_ssize_t rows = cconv_min(mr, m - s);
        const T *base = src + s * rs;
        for (Py_ssize_t kk = 0; kk < k; kk++) {
            T *d = dst + kk * mr;
            Py_ssize_t i = 0;
            for (; i < rows; i++) d[i] = base[i * rs + kk * cs];
            for (; i < mr; i++) d[i] = 0;
        }
        dst += k * mr;
    }
}

/* pack_a for a source whose rows are contiguous (column stride 1), i.e. a transpose into
 * width-lane strips: the AVX-512 in-register transposer for float (with an AVX-512
 * kernel, so the CPU has it), else the scalar pack_a.  Also packs the B panels of a
 * 1x1 weight gradient (pixels are the GEMM depth, channels the panel lanes). */
static void S(pack_a_rows)(const S(kernel_t) *kern, T *CCONV_RESTRICT dst,
                           const T *CCONV_RESTRICT src, Py_ssize_t m, Py_ssize_t k,
                           Py_ssize_t ld, int width)
{
#ifdef CCONV_HAVE_PACK_T_F32
    if (sizeof(T) == sizeof(float) && kern->nr * (int)sizeof(T) == 128
            && (width <= 16 || width == 32)) {
        cconv_pack_t_f32_avx512((float *)(void *)dst, (const float *)(const void *)src,
                                m, k, ld, width);
        return;
    }
#else
    (void)kern;
#endif
    S(pack_a)(dst, src, m, k, ld, 1, width);
}

/* Pack the kc x n row-major block src[kk*ld + j] into nr-column panels:
 * element (kk, j) goes to dst[(j/nr)*kc*nr + kk*nr + j%nr]; columns past n are zero. */
static void S(pack_b)(T *CCONV_RESTRICT dst, const T *CCONV_RESTRICT src, Py_ssize_t kc,
                      Py_ssize_t n, Py_ssize_t ld, int nr)
{
    for (Py_ssize_t j0 = 0; j0 < n; j0 += nr) {
        Py_ssize_t w = cconv_min(nr, n - j0);
        for (Py_ssize_t kk = 0; kk < kc; kk++) {
            const T *s = src + kk * ld + j0;
            T *d = dst + kk * nr;
            Py_ssize_t j = 0;
            for (; j < w; j++) d[j] = s[j];
            for (; j < nr; j++) d[j] = 0;
        }
        dst += kc * nr;
    }
}

/* C[0:m, 0:n] (+)= A * B for packed A strips (strip stride a_strip) and packed B panels
 * of depth kc.  jr outer: one B panel stays in L1 while the A strips stream from L2.
 * rows: the plan's row block (blk->mc), rounded down to whole strips here. */
static void S(gemm_macro)(const S(kernel_t) *kern, Py_ssize_t m, Py_ssize_t n, Py_ssize_t kc,
                          const T *a, Py_ssize_t a_strip, const T *b, T *c, Py_ssize_t ldc,
                          int accumulate, const T *bias, Py_ssize_t rows)
{
    const int mr = kern->mr, nr = kern->nr;
    /* Row blocks of about `rows` rows keep the A strips they cycle through in L2. */
    const Py_ssize_t mc = cconv_max(mr, rows / mr * mr);
    for (Py_ssize_t ic = 0; ic < m; ic += mc) {
        const Py_ssize_t iend = cconv_min(m, ic + mc);
        for (Py_ssize_t jr = 0; jr < n; jr += nr) {
            const T *bp = b + (jr / nr) * kc * nr;
            int nn = (int)cconv_min(nr, n - jr);
            for (Py_ssize_t ir = ic; ir < iend; ir += mr)
                kern->fn(kc, a + (ir / mr) * a_strip, bp, c + ir * ldc + jr, ldc,
                         (int)cconv_min(mr, m - ir), nn, accumulate,
                         bias != NULL ? bias + ir : NULL);
        }
    }
}
