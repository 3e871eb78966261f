/* Packed-im2col GEMM drivers: im2col/col2im one row at a time, the forward blocks (per
 * image or spanning images), the weight gradient over (image, pixel) ranges, and the
 * col2im input gradient.
 * Type-generic: included by conv_impl.h once per float type (T, TI, S(name)); no
 * include guard on purpose. */

/* ---- im2col / col2im, one row at a time ----------------------------------------
 * Row k of the im2col matrix of one image-group slice holds, for every output pixel
 * j = oh*out_w + ow, the input value kernel tap k = (c*kh + p)*kw + q reads:
 * x[c, oh*sh - pad_top + p*dh, ow*sw - pad_left + q*dw], or 0 in the padding. */

/* The adjoint of im2col_row_fast: x[...] += col[j] for pixels [p0, p0+n). */
static void S(col2im_row)(T *CCONV_RESTRICT x, const cconv_geom *g, Py_ssize_t k, Py_ssize_t p0,
                          Py_ssize_t n, const T *CCONV_RESTRICT col)
{
    const Py_ssize_t khw = g->kernel_h * g->kernel_w;
    const Py_ssize_t c = k / khw, p = (k % khw) / g->kernel_w, q = k % g->kernel_w;
    const Py_ssize_t H = g->in_h, W = g->in_w, sw = g->stride_w;
    T *plane = x + c * H * W;
    const Py_ssize_t row_off = p * g->dilation_h - g->pad_top;
    const Py_ssize_t col_off = q * g->dilation_w - g->pad_left;
    Py_ssize_t oh = p0 / g->out_w, ow = p0 % g->out_w, j = 0;
    while (j < n) {
        const Py_ssize_t seg = cconv_min(g->out_w - ow, n - j);
        const Py_ssize_t ih = oh * g->stride_h + row_off;
        if (ih >= 0 && ih < H) {
            T *row = plane + ih * W;
            Py_ssize_t iw = ow * sw + col_off;
            for (Py_ssize_t t = j; t < j + seg; t++, iw += sw)
                if ((size_t)iw < (size_t)W) row[iw] += col[t];
        }
        j += seg;
        ow = 0;
        oh++;
    }
}

/* col2im_row for taps k = (c, p, q) and k + 1 = (c, p, q + 1) of a stride-2, width-undilated
 * kernel: their columns interleave (q: iw0 + 2t, q + 1: iw0 + 2t + 1), so one pass adds both
 * rows into a contiguous span (vectorisable as interleaved stores) instead of two strided
 * scatters.  The two taps never touch the same element, so every element still receives its
 * taps in k order: the same sums as two col2im_row calls. */
static void S(col2im_row_pair)(T *CCONV_RESTRICT x, const cconv_geom *g, Py_ssize_t k, Py_ssize_t p0,
                               Py_ssize_t n, const T *CCONV_RESTRICT col0, const T *CCONV_RESTRICT col1)
{
    const Py_ssize_t khw = g->kernel_h * g->kernel_w;
    const Py_ssize_t c = k / khw, p = (k % khw) / g->kernel_w, q = k % g->kernel_w;
    const Py_ssize_t H = g->in_h, W = g->in_w;
    T *plane = x + c * H * W;
    const Py_ssize_t row_off = p * g->dilation_h - g->pad_top;
    const Py_ssize_t col_off = q - g->pad_left;
    Py_ssize_t oh = p0 / g->out_w, ow = p0 % g->out_w, j = 0;
    while (j < n) {
        const Py_ssize_t seg = cconv_min(g->out_w - ow, n - j);
        const Py_ssize_t ih = oh * g->stride_h + row_off;
        if (ih >= 0 && ih < H) {
            T *CCONV_RESTRICT row = plane + ih * W;
            const T *CCONV_RESTRICT a = col0 + j;
            const T *CCONV_RESTRICT b = col1 + j;
            const Py_ssize_t iw0 = ow * 2 + col_off;
            /* both columns inside [0, W) for t in [lo, hi); the edges tested per column */
            Py_ssize_t lo = iw0 >= 0 ? 0 : (1 - iw0) / 2;
            Py_ssize_t hi = W - 2 - iw0 >= 0 ? (W - 2 - iw0) / 2 + 1 : 0;
            Py_ssize_t t;
            lo = cconv_min(lo, seg);
            hi = cconv_max(lo, cconv_min(hi, seg));
            for (t = 0; t < lo; t++) {
                if ((size_t)(iw0 + 2 * t) < (size_t)W) row[iw0 + 2 * t] += a[t];
                if ((size_t)(iw0 + 2 * t + 1) < (size_t)W) row[iw0 + 2 * t + 1] += b[t];
            }
            for (t = lo; t < hi; t++) {
                row[iw0 + 2 * t] += a[t];
                row[iw0 + 2 * t + 1] += b[t];
            }
            for (t = hi; t < seg; t++) {
                if ((size_t)(iw0 + 2 * t) < (size_t)W) row[iw0 + 2 * t] += a[t];
                if ((size_t)(iw0 + 2 * t + 1) < (size_t)W) row[iw0 + 2 * t + 1] += b[t];
            }
        }
        j += seg;
        ow = 0;
        oh++;
    }
}

/* col2im_row over taps [0, K) of pixels [p0, p0 + n) (row k at col + k*ldc), in k order,
 * stride-2 width-undilated neighbour taps in pairs (col2im_row_pair). */
static void S(col2im_rows)(T *CCONV_RESTRICT x, const cconv_geom *g, Py_ssize_t K, Py_ssize_t p0,
                           Py_ssize_t n, const T *CCONV_RESTRICT col, Py_ssize_t ldc)
{
    const int pairs = g->stride_w == 2 && g->dilation_w == 1 && g->kernel_w >= 2;
    for (Py_ssize_t k = 0; k < K; k++) {
        if (pairs && k % g->kernel_w + 1 < g->kernel_w) {
            S(col2im_row_pair)(x, g, k, p0, n, col + k * ldc, col + (k + 1) * ldc);
            k++;
        } else {
            S(col2im_row)(x, g, k, p0, n, col + k * ldc);
        }
    }
}

/* d[t] = row[iw0 + t*sw] for t in [0, len), 0 where the column falls outside [0, W):
 * zero prefix, plain (vectorisable for sw == 1) copy, zero suffix. */
static inline void S(copy_segment)(T *CCONV_RESTRICT d, const T *CCONV_RESTRICT row,
                                   Py_ssize_t iw0, Py_ssize_t len, Py_ssize_t sw, Py_ssize_t W)
{
    Py_ssize_t lo = iw0 >= 0 ? 0 : (-iw0 + sw - 1) / sw;
    Py_ssize_t hi = iw0 >= W ? 0 : (W - 1 - iw0) / sw + 1;
    Py_ssize_t t;
    lo = cconv_min(lo, len);
    hi = cconv_max(lo, cconv_min(hi, len));
    for (t = 0; t < lo; t++) {      /* a few pads: no memset call (CCONV_OPAQUE) */
        d[t] = 0;
        CCONV_OPAQUE(t);
    }
    if (sw == 1)
        S(copy_row)(d + lo, row + iw0 + lo, hi - lo);
    else
        for (t = lo; t < hi; t++) d[t] = row[iw0 + t * sw];
    for (t = hi; t < len; t++) {
        d[t] = 0;
        CCONV_OPAQUE(t);
    }
}

/* Gather im2col row k for pixels [p0, p0 + n) into the contiguous out[0:n].  Works per
 * output-row segment so the common case (stride 1, window inside the image) is a plain
 * vectorisable copy. */
static void S(im2col_row_fast)(const T *CCONV_RESTRICT x, const cconv_geom *g, Py_ssize_t k,
                               Py_ssize_t p0, Py_ssize_t n, T *CCONV_RESTRICT out)
{
    const Py_ssize_t khw = g->kernel_h * g->kernel_w;
    const Py_ssize_t c = k / khw, p = (k % khw) / g->kernel_w, q = k % g->kernel_w;
    const Py_ssize_t H = g->in_h, W = g->in_w, sw = g->stride_w;
    const T *plane = x + c * H * W;
    const Py_ssize_t row_off = p * g->dilation_h - g->pad_top;
    const Py_ssize_t col_off = q * g->dilation_w - g->pad_left;
    Py_ssize_t oh = p0 / g->out_w, ow = p0 % g->out_w, j = 0;
    while (j < n) {
        const Py_ssize_t seg = cconv_min(g->out_w - ow, n - j);
        const Py_ssize_t ih = oh * g->stride_h + row_off;
        T *o = out + j;
        if (ih < 0 || ih >= H) {
            for (Py_ssize_t t = 0; t < seg; t++) o[t] = 0;
        } else {
            S(copy_segment)(o, plane + ih * W, ow * sw + col_off, seg, sw, W);
        }
        j += seg;
        ow = 0;
        oh++;
    }
}

/* Pack im2col rows [k0, k0+kc) x pixels [p0, p0+nc) straight into nr-column B panels
 * (dst[(j/nr)*kc*nr + kk*nr + j%nr], zero columns past nc).  Panel by panel: the pixels
 * of one panel split into at most a few output-row segments, each of which is, for
 * every kernel tap, a contiguous copy when stride is 1 and the window is inside. */
#define CCONV_MAX_SEGMENTS 130
static void S(pack_b_im2col)(const T *CCONV_RESTRICT x, const cconv_geom *g, Py_ssize_t k0,
                             Py_ssize_t kc, Py_ssize_t p0, Py_ssize_t nc, int nr,
                             T *CCONV_RESTRICT dst)
{
    const Py_ssize_t kh = g->kernel_h, kw = g->kernel_w, khw = kh * kw;
    const Py_ssize_t H = g->in_h, W = g->in_w, sw = g->stride_w, Wo = g->out_w;
    Py_ssize_t seg_j[CCONV_MAX_SEGMENTS], seg_n[CCONV_MAX_SEGMENTS];
    Py_ssize_t seg_ih[CCONV_MAX_SEGMENTS], seg_iw[CCONV_MAX_SEGMENTS];
    for (Py_ssize_t j0 = 0; j0 < nc; j0 += nr, dst += kc * nr) {
        const Py_ssize_t width = cconv_min(nr, nc - j0);
        int nseg = 0;
        for (Py_ssize_t j = 0, pix = p0 + j0; j < width; nseg++) {
            const Py_ssize_t oh = pix / Wo, ow = pix % Wo;
            const Py_ssize_t len = cconv_min(Wo - ow, width - j);
            seg_j[nseg] = j;
            seg_n[nseg] = len;
            seg_ih[nseg] = oh * g->stride_h - g->pad_top;
            seg_iw[nseg] = ow * sw - g->pad_left;
            j += len;
            pix += len;
        }
        Py_ssize_t c = k0 / khw, p = (k0 % khw) / kw, q = k0 % kw;
        for (Py_ssize_t kk = 0; kk < kc; kk++) {
            T *d = dst + kk * nr;
            const T *plane = x + c * H * W;
            const Py_ssize_t dy = p * g->dilation_h, dx = q * g->dilation_w;
            for (int sgi = 0; sgi < nseg; sgi++) {
                T *ds = d + seg_j[sgi];
                const Py_ssize_t len = seg_n[sgi], ih = seg_ih[sgi] + dy, iw0 = seg_iw[sgi] + dx;
                if ((size_t)ih >= (size_t)H) {
                    for (Py_ssize_t t = 0; t < len; t++) ds[t] = 0;
                    continue;
                }
                S(copy_segment)(ds, plane + ih * W, iw0, len, sw, W);
            }
            for (Py_ssize_t t = width; t < nr; t++) d[t] = 0;
            if (++q == kw) {
                q = 0;
                if (++p == kh) {
                    p = 0;
                    c++;
                }
            }
        }
    }
}

/* ---- convolution blocks (one thread each) ------------------------------------- */

/* Forward, implicit GEMM: output pixels [p0, p0+nc) of one image-group slice,
 * y(m x P) = W(m x K) * im2col(x)(K x P) (+ bias).  apack: the group's weights packed
 * by pack_a over the full K; ws: blk->kc * ceil(nc/nr)*nr elements.  Requires K >= 1. */
CCONV_BODY void CCONV_CAT(S(conv_fwd_block), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const cconv_geom *g,
                              Py_ssize_t m, const T *apack, const T *bias, T *y,
                              Py_ssize_t p0, Py_ssize_t nc, T *ws)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    for (Py_ssize_t pc = 0; pc < K; pc += blk->kc) {
        const Py_ssize_t kc = cconv_min(blk->kc, K - pc);
        S(pack_b_im2col)(x, g, pc, kc, p0, nc, nr, ws);
        S(gemm_macro)(kern, m, nc, kc, apack + pc * mr, K * mr, ws, y + p0, P, pc > 0, bias,
                      blk->mc);
    }
}
CCONV_ISA_VARIANTS(S(conv_fwd_block), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const cconv_geom *g, Py_ssize_t m, const T *apack, const T *bias, T *y, Py_ssize_t p0, Py_ssize_t nc, T *ws),
    (kern, blk, x, g, m, apack, bias, y, p0, nc, ws))

/* Forward, packed-im2col GEMM over columns [j0, j0 + nc) of the batch-flattened pixel
 * range (column j = image*P + pixel): blocks may span images, so small images (P not a
 * multiple of nr) do not leave a mostly empty panel per image.  x, y: the group's slice of
 * image 0 (image strides x_img, y_img).  ws: blk->kc*ncp + ncp + ceil(m/mr)*mr*ncp
 * elements, ncp = ceil(nc/nr)*nr.  stream: write y with non-temporal stores (see
 * cconv_copy_out).  Requires K >= 1. */
CCONV_BODY void CCONV_CAT(S(conv_fwd_span), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, Py_ssize_t x_img,
                             const cconv_geom *g, Py_ssize_t m, const T *apack, const T *bias,
                             T *y, Py_ssize_t y_img, Py_ssize_t j0, Py_ssize_t nc, T *ws,
                             int stream, int pointwise)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    const Py_ssize_t ncp = (nc + nr - 1) / nr * nr;
    T *bpk = ws, *row = bpk + blk->kc * ncp, *ct = row + ncp;
    for (Py_ssize_t pc = 0; pc < K; pc += blk->kc) {
        const Py_ssize_t kc = cconv_min(blk->kc, K - pc);
        if (pointwise) {
            /* im2col row k is input plane k: copy each panel's columns straight from x. */
            for (Py_ssize_t jp = 0; jp < ncp; jp += nr) {
                T *d = bpk + (jp / nr) * kc * nr;
                Py_ssize_t t0 = jp;
                for (; t0 < cconv_min(nc, jp + nr);) {   /* one image's pixels at a time */
                    const Py_ssize_t img = (j0 + t0) / P, p = (j0 + t0) % P;
                    const Py_ssize_t len = cconv_min(P - p, cconv_min(nc, jp + nr) - t0);
                    const T *src = x + img * x_img + pc * P + p;
                    for (Py_ssize_t kk = 0; kk < kc; kk++)
                        for (Py_ssize_t t = 0; t < len; t++)
                            d[kk * nr + (t0 - jp) + t] = src[kk * P + t];
                    t0 += len;
                }
                if (t0 < jp + nr)
                    for (Py_ssize_t kk = 0; kk < kc; kk++)
                        for (Py_ssize_t t = t0 - jp; t < nr; t++) d[kk * nr + t] = 0;
            }
            S(gemm_macro)(kern, m, nc, kc, apack + pc * mr, K * mr, bpk, ct, ncp, pc > 0, bias,
                          blk->mc);
            continue;
        }
        for (Py_ssize_t kk = 0; kk < kc; kk++) {
            for (Py_ssize_t j = 0; j < nc;) {       /* one image's pixels at a time */
                const Py_ssize_t img = (j0 + j) / P, p = (j0 + j) % P;
                const Py_ssize_t len = cconv_min(P - p, nc - j);
                S(im2col_row_fast)(x + img * x_img, g, pc + kk, p, len, row + j);
                j += len;
            }
            for (Py_ssize_t j = nc; j < ncp; j++) row[j] = 0;
            for (Py_ssize_t jp = 0; jp < ncp; jp += nr) {
                T *d = bpk + (jp / nr) * kc * nr + kk * nr;
                for (int t = 0; t < nr; t++) d[t] = row[jp + t];
            }
        }
        S(gemm_macro)(kern, m, nc, kc, apack + pc * mr, K * mr, bpk, ct, ncp, pc > 0, bias,
                          blk->mc);
    }
    for (Py_ssize_t j = 0; j < nc;) {
        const Py_ssize_t img = (j0 + j) / P, p = (j0 + j) % P;
        const Py_ssize_t len = cconv_min(P - p, nc - j);
        for (Py_ssize_t i = 0; i < m; i++)
            cconv_copy_out(y + img * y_img + i * P + p, ct + i * ncp + j, len * sizeof(T),
                           stream);
        j += len;
    }
    if (stream) cconv_stream_fence();
}
CCONV_ISA_VARIANTS(S(conv_fwd_span), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, Py_ssize_t x_img, const cconv_geom *g, Py_ssize_t m, const T *apack, const T *bias, T *y, Py_ssize_t y_img, Py_ssize_t j0, Py_ssize_t nc, T *ws, int stream, int pointwise),
    (kern, blk, x, x_img, g, m, apack, bias, y, y_img, j0, nc, ws, stream, pointwise))

/* Weight gradient over the flattened (image, pixel) range [r0, r1) of the batch:
 * gw(m x K) += gy(m x P) * im2col(x)^T for each group, accumulated in a fixed order.
 * x, gy: whole batch; gw: groups*m x K (not cleared here).
 * wsa: ceil(m/mr)*mr*blk->kc; wsb: blk->kc*blk->nc elements. */
/* The GEMM depth of images smaller than blk->kc pixels spans images: (image, pixel) rows
 * [r, r + pc) of group gi.  gy rows packed as A (m rows in mr strips, rows past m zero). */
static void S(pack_gy_rows)(T *CCONV_RESTRICT dst, const T *CCONV_RESTRICT gy, Py_ssize_t groups,
                            Py_ssize_t gi, Py_ssize_t m, Py_ssize_t P, Py_ssize_t r, Py_ssize_t pc,
                            int mr)
{
    const Py_ssize_t mp = (m + mr - 1) / mr * mr;
    for (Py_ssize_t j = 0; j < pc;) {
        const Py_ssize_t img = (r + j) / P, pa = (r + j) % P, len = cconv_min(P - pa, pc - j);
        const T *src = gy + (img * groups + gi) * m * P + pa;
        for (Py_ssize_t o = 0; o < mp; o++) {
            T *d = dst + (o / mr) * pc * mr + j * mr + o % mr;
            for (Py_ssize_t t = 0; t < len; t++) d[t * mr] = o < m ? src[o * P + t] : 0;
        }
        j += len;
    }
}

/* im2col row k of (image, pixel) rows [r, r + pc) of group gi into out[0:pc]. */
static void S(im2col_rows)(const T *CCONV_RESTRICT x, const cconv_geom *g, Py_ssize_t groups,
                           Py_ssize_t gi, Py_ssize_t k, Py_ssize_t r, Py_ssize_t pc,
                           T *CCONV_RESTRICT out)
{
    const Py_ssize_t P = g->out_h * g->out_w, x_group = g->channels * g->in_h * g->in_w;
    for (Py_ssize_t j = 0; j < pc;) {
        const Py_ssize_t img = (r + j) / P, pa = (r + j) % P, len = cconv_min(P - pa, pc - j);
        S(im2col_row_fast)(x + (img * groups + gi) * x_group, g, k, pa, len, out + j);
        j += len;
    }
}

CCONV_BODY void CCONV_CAT(S(conv_gw_range), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const T *gy,
                             const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                             Py_ssize_t r0, Py_ssize_t r1, T *gw, T *wsa, T *wsb,
                                   int pointwise)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w;
    const Py_ssize_t x_group = g->channels * g->in_h * g->in_w;
    const int mr = kern->mr, nr = kern->nr;
    Py_ssize_t r = r0;
    /* Images of fewer than kc pixels: depth chunks of kc rows across images (one image at a
     * time, a 1x1 output would make every GEMM a rank-1 update of all of gw). */
    const Py_ssize_t kcb = cconv_min(blk->kc, CCONV_KC_MAX), ncb = blk->nc;
    while (P < kcb && r < r1) {
        const Py_ssize_t pc = cconv_min(kcb, r1 - r);
        for (Py_ssize_t gi = 0; gi < groups; gi++) {
            S(pack_gy_rows)(wsa, gy, groups, gi, m, P, r, pc, mr);
            for (Py_ssize_t k0 = 0; k0 < K; k0 += ncb) {
                const Py_ssize_t kb = cconv_min(ncb, K - k0);
                const Py_ssize_t kbp = (kb + nr - 1) / nr * nr;
                for (Py_ssize_t kj = 0; kj < kbp; kj++) {
                    T row[CCONV_KC_MAX];
                    T *col = wsb + (kj / nr) * pc * nr + kj % nr;
                    if (kj < kb)
                        S(im2col_rows)(x, g, groups, gi, k0 + kj, r, pc, row);
                    for (Py_ssize_t pp = 0; pp < pc; pp++) col[pp * nr] = kj < kb ? row[pp] : 0;
                }
                S(gemm_macro)(kern, m, kb, pc, wsa, pc * mr, wsb, gw + gi * m * K + k0, K, 1, NULL,
                              blk->mc);
            }
        }
        r += pc;
    }
    while (r < r1) {
        const Py_ssize_t img = r / P, pa = r % P, pb = cconv_min(P, pa + (r1 - r));
        for (Py_ssize_t gi = 0; gi < groups; gi++) {
            const T *xg = x + (img * groups + gi) * x_group;
            const T *gyg = gy + (img * groups + gi) * m * P;
            T *gwg = gw + gi * m * K;
            for (Py_ssize_t p0 = pa; p0 < pb; p0 += kcb) {
                const Py_ssize_t pc = cconv_min(kcb, pb - p0);
                S(pack_a_rows)(kern, wsa, gyg + p0, m, pc, P, mr);
                for (Py_ssize_t k0 = 0; k0 < K; k0 += ncb) {
                    const Py_ssize_t kb = cconv_min(ncb, K - k0);
                    const Py_ssize_t kbp = (kb + nr - 1) / nr * nr;
                    if (pointwise) {  /* im2col row k is input plane k: transpose-pack */
                        S(pack_a_rows)(kern, wsb, xg + k0 * P + p0, kb, pc, P, nr);
                        S(gemm_macro)(kern, m, kb, pc, wsa, pc * mr, wsb, gwg + k0, K, 1, NULL,
                                      blk->mc);
                        continue;
                    }
                    for (Py_ssize_t kj = 0; kj < kb; kj++) {
                        T row[CCONV_KC_MAX];
                        T *col = wsb + (kj / nr) * pc * nr + kj % nr;
                        S(im2col_row_fast)(xg, g, k0 + kj, p0, pc, row);
                        for (Py_ssize_t pp = 0; pp < pc; pp++) col[pp * nr] = row[pp];
                    }
                    for (Py_ssize_t kj = kb; kj < kbp; kj++)
                        for (Py_ssize_t pp = 0; pp < pc; pp++)
                            wsb[(kj / nr) * pc * nr + pp * nr + kj % nr] = 0;
                    S(gemm_macro)(kern, m, kb, pc, wsa, pc * mr, wsb, gwg + k0, K, 1, NULL,
                                  blk->mc);
                }
            }
        }
        r += pb - pa;
    }
}
CCONV_ISA_VARIANTS(S(conv_gw_range), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const T *gy, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t r0, Py_ssize_t r1, T *gw, T *wsa, T *wsb, int pointwise),
    (kern, blk, x, gy, g, groups, m, r0, r1, gw, wsa, wsb, pointwise))

/* Input gradient of one image-group slice by GEMM + col2im (any stride):
 * col(K x P) = W^T(K x m) * gy(m x P), scattered back into gi (which must be zeroed)
 * nc pixels at a time.  apack: W^T packed by pack_a (K rows, depth m);
 * wsb: blk->kc*ceil(nc/nr)*nr; wsc: K*nc elements. */
CCONV_BODY void CCONV_CAT(S(conv_gi_block), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const T *gy, const cconv_geom *g,
                             Py_ssize_t m, const T *apack, T *gi, Py_ssize_t nc_max,
                             T *wsb, T *wsc)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    for (Py_ssize_t p0 = 0; p0 < P; p0 += nc_max) {
        const Py_ssize_t nc = cconv_min(nc_max, P - p0);
        for (Py_ssize_t o0 = 0; o0 < m; o0 += blk->kc) {
            const Py_ssize_t kc = cconv_min(blk->kc, m - o0);
            S(pack_b)(wsb, gy + o0 * P + p0, kc, nc, P, nr);
            S(gemm_macro)(kern, K, nc, kc, apack + o0 * mr, m * mr, wsb, wsc, nc, o0 > 0, NULL,
                          blk->mc);
        }
        S(col2im_rows)(gi, g, K, p0, nc, wsc, nc);
    }
}
/* conv_gi_block over nimg images of one group at once (gy and gi images gy_img and gi_img
 * elements apart): the GEMM's columns are (image, pixel) pairs, so images of a few pixels
 * still make a GEMM, not a matrix-vector product per image. */
CCONV_BODY void CCONV_CAT(S(conv_gi_images), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const T *gy,
                             Py_ssize_t gy_img, const cconv_geom *g, Py_ssize_t m,
                             const T *apack, T *gi, Py_ssize_t gi_img, Py_ssize_t nimg,
                             Py_ssize_t nc_max, T *wsb, T *wsc)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w, cols = nimg * P;
    const int mr = kern->mr, nr = kern->nr;
    for (Py_ssize_t j0 = 0; j0 < cols; j0 += nc_max) {
        const Py_ssize_t nc = cconv_min(nc_max, cols - j0);
        for (Py_ssize_t o0 = 0; o0 < m; o0 += blk->kc) {
            const Py_ssize_t kc = cconv_min(blk->kc, m - o0);
            for (Py_ssize_t jb = 0; jb < nc; jb += nr) {   /* B panels, column by column */
                T *panel = wsb + (jb / nr) * kc * nr;
                for (Py_ssize_t j = 0; j < nr; j++) {
                    const Py_ssize_t col = j0 + jb + j;
                    if (jb + j >= nc) {
                        for (Py_ssize_t kk = 0; kk < kc; kk++) panel[kk * nr + j] = 0;
                        continue;
                    }
                    const T *src = gy + (col / P) * gy_img + o0 * P + col % P;
                    for (Py_ssize_t kk = 0; kk < kc; kk++) panel[kk * nr + j] = src[kk * P];
                }
            }
            S(gemm_macro)(kern, K, nc, kc, apack + o0 * mr, m * mr, wsb, wsc, nc, o0 > 0, NULL,
                          blk->mc);
        }
        for (Py_ssize_t j = 0; j < nc;) {
            const Py_ssize_t col = j0 + j, pa = col % P, len = cconv_min(P - pa, nc - j);
            S(col2im_rows)(gi + (col / P) * gi_img, g, K, pa, len, wsc + j, nc);
            j += len;
        }
    }
}
CCONV_ISA_VARIANTS(S(conv_gi_images), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *gy, Py_ssize_t gy_img, const cconv_geom *g, Py_ssize_t m, const T *apack, T *gi, Py_ssize_t gi_img, Py_ssize_t nimg, Py_ssize_t nc_max, T *wsb, T *wsc),
    (kern, blk, gy, gy_img, g, m, apack, gi, gi_img, nimg, nc_max, wsb, wsc))
CCONV_ISA_VARIANTS(S(conv_gi_block), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *gy, const cconv_geom *g, Py_ssize_t m, const T *apack, T *gi, Py_ssize_t nc_max, T *wsb, T *wsc),
    (kern, blk, gy, g, m, apack, gi, nc_max, wsb, wsc))
