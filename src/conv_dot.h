/* Weight-gradient driver of the register-tiled dot kernel over padded images.
 * Type-generic: included by conv_impl.h once per float type (T, TI, S(name)); no
 * include guard on purpose. */

/* Grid length the dot kernel runs over: out_h*wph rounded up to whole CCONV_VECTOR_BYTES
 * vectors, so every kernel's vector width divides it. */
static Py_ssize_t S(dot_grid)(const cconv_geom *g)
{
    Py_ssize_t hph, wph;
    const Py_ssize_t lanes = CCONV_VECTOR_BYTES / (Py_ssize_t)sizeof(T);
    S(phase_dims)(g, &hph, &wph);
    return (g->out_h * wph + lanes - 1) / lanes * lanes;
}

/* mask[j] = -1 (all bits) where grid position j is a real output pixel, else 0. */
static void S(dot_mask)(const cconv_geom *g, TI *mask)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    const Py_ssize_t jp = S(dot_grid)(g), J = g->out_h * wph;
    for (Py_ssize_t j = 0; j < jp; j++) mask[j] = (j < J && j % wph < g->out_w) ? (TI)-1 : 0;
}

/* Scratch elements for one image of the dot kernel: its padded copy, then its grad_output
 * on the grid (m rows of dot_grid); a thread holds dot_images of these. */
static Py_ssize_t S(dot_image_size)(const cconv_geom *g, Py_ssize_t m, int nr)
{
    const Py_ssize_t xp = (S(padded_size)(g, nr) + 15) / 16 * 16;
    return xp + m * S(dot_grid)(g);
}

/* Images per dot-kernel call: enough for ~2048 grid positions per reduction, so the
 * final lane sums stay cheap on small images, within a scratch budget; 0 if even one
 * image does not fit (then the packed-im2col GEMM is used). */
#define CCONV_DOT_BUDGET 4194304
static Py_ssize_t S(dot_images)(const cconv_geom *g, Py_ssize_t m, int nr)
{
    const Py_ssize_t size = S(dot_image_size)(g, m, nr);
    Py_ssize_t n = (2048 + S(dot_grid)(g) - 1) / S(dot_grid)(g);
    n = cconv_min(n, 32);
    n = cconv_min(n, CCONV_DOT_BUDGET / size);
    return n;
}

/* Weight gradient of images [img0, img1) by the dot kernel (kern->dot != NULL), rows
 * [o_lo, o_hi) of each group's m output channels:
 * gw(groups*m x K) += gy * im2col(x)^T, dot_images images at a time, tile by tile in a
 * fixed order.  Each gw element is summed alone, so cutting the rows between tasks gives
 * the same bits (and so does the blocking: output channels in blocks of blk->dot_gy_bytes
 * of grad_output).  x, gy: whole batch; off: tap_offsets; mask: dot_mask, or NULL when x is
 * finite (the mask-free kernel);
 * ws: dot_images * dot_image_size elements. */
CCONV_BODY void CCONV_CAT(S(conv_gw_images), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const T *gy,
                              const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                              Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t o_lo,
                              Py_ssize_t o_hi, const Py_ssize_t *off, const TI *mask, T *gw,
                              T *ws)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t Wo = g->out_w, P = g->out_h * Wo;
    const Py_ssize_t x_group = g->channels * g->in_h * g->in_w;
    const Py_ssize_t jp = S(dot_grid)(g);
    const Py_ssize_t stride = S(dot_image_size)(g, m, kern->nr);
    const Py_ssize_t xp_size = stride - m * jp;
    const int mo = kern->dot_mo, nk = kern->dot_nk;
    const S(dot_fn) dot = mask != NULL ? kern->dot : kern->dot_finite;
    const Py_ssize_t per_call = S(dot_images)(g, m, kern->nr);
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    for (Py_ssize_t gi = 0; gi < groups; gi++)
        for (Py_ssize_t b0 = img0; b0 < img1; b0 += per_call) {
            const int nimg = (int)cconv_min(per_call, img1 - b0);
            for (int b = 0; b < nimg; b++) {
                T *xp = ws + b * stride, *gyp = xp + xp_size;
                S(pad_phases)(x + ((b0 + b) * groups + gi) * x_group, g, kern->nr, xp);
                const T *gyg = gy + ((b0 + b) * groups + gi) * m * P;
                /* grad_output onto the grid: rows of wph with zeros past out_w, zero tail. */
                for (Py_ssize_t i = o_lo; i < o_hi; i++) {
                    T *d = gyp + (i - o_lo) * jp;
                    Py_ssize_t j = 0;
                    for (Py_ssize_t oh = 0; oh < g->out_h; oh++) {
                        const T *src = gyg + i * P + oh * Wo;
                        for (Py_ssize_t t = 0; t < Wo; t++) d[j + t] = src[t];
                        for (Py_ssize_t t = Wo; t < wph; t++) d[j + t] = 0;
                        j += wph;
                    }
                    for (; j < jp; j++) d[j] = 0;
                }
            }
            T *gwg = gw + gi * m * K;
            /* Blocks of ob output channels whose grad_output rows (all nimg images) fit in
             * L2, so they are reused from there for every tap, instead of streaming the
             * images' padded copies again for each tile of mo channels.  Every gw element is
             * still one kernel call's sum: the result does not depend on the blocking. */
            const Py_ssize_t rows = blk->dot_gy_bytes / ((Py_ssize_t)sizeof(T) * jp * nimg);
            const Py_ssize_t ob = cconv_max(1, rows / mo) * mo;
            for (Py_ssize_t o1 = o_lo; o1 < o_hi; o1 += ob)
                for (Py_ssize_t k0 = 0; k0 < K; k0 += nk)
                    for (Py_ssize_t o0 = o1; o0 < cconv_min(o_hi, o1 + ob); o0 += mo)
                        dot(ws + xp_size + (o0 - o_lo) * jp, jp, jp, ws, stride, nimg, off + k0,
                            mask, gwg + o0 * K + k0, K, (int)cconv_min(mo, o_hi - o0),
                            (int)cconv_min(nk, K - k0));
        }
}
CCONV_ISA_VARIANTS(S(conv_gw_images), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const T *gy, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t o_lo, Py_ssize_t o_hi, const Py_ssize_t *off, const TI *mask, T *gw, T *ws),
    (kern, blk, x, gy, g, groups, m, img0, img1, o_lo, o_hi, off, mask, gw, ws))

/* Weight gradient of a 1x1, stride-1, unpadded pass (g pointwise) by the dot kernel on the
 * arrays in place: a plane of x and of grad_output is already a grid row, so nothing is
 * copied or packed.  gw(groups*m x C) += gy * x^T over the flattened (image, pixel) rows
 * [r0, r1): each image's run in chunks of whole CCONV_VECTOR_BYTES vectors, sized so the chunk's m
 * grad_output rows stay in L2 while every tile of dot_nk input rows passes over them; the
 * last pixels of a run (fewer than a vector) are added by a scalar loop.  Every gw element
 * sums its chunks in the same order whatever the thread count. */
CCONV_BODY void CCONV_CAT(S(conv_gw_pointwise), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const T *x,
                                 const T *gy, const cconv_geom *g, Py_ssize_t groups,
                                 Py_ssize_t m, Py_ssize_t r0, Py_ssize_t r1, T *gw)
{
    const Py_ssize_t C = g->channels, P = g->out_h * g->out_w;
    const Py_ssize_t lanes = CCONV_VECTOR_BYTES / (Py_ssize_t)sizeof(T);
    const int mo = kern->dot_mo, nk = kern->dot_nk;
    Py_ssize_t chunk = blk->dot_gy_bytes / ((Py_ssize_t)sizeof(T) * (m + nk)) / lanes * lanes;
    chunk = cconv_max(16 * lanes, cconv_min(chunk, 256 * lanes));
    Py_ssize_t off[16];   /* input-channel rows of one tile (dot_nk <= 16) */
    for (Py_ssize_t r = r0; r < r1;) {
        const Py_ssize_t img = r / P, pa = r % P, pb = cconv_min(P, pa + (r1 - r));
        for (Py_ssize_t gi = 0; gi < groups; gi++) {
            const T *xg = x + (img * groups + gi) * C * P;
            const T *gyg = gy + (img * groups + gi) * m * P;
            T *gwg = gw + gi * m * C;
            const Py_ssize_t vend = pa + (pb - pa) / lanes * lanes;
            for (Py_ssize_t p0 = pa; p0 < vend; p0 += chunk) {
                const Py_ssize_t len = cconv_min(chunk, vend - p0);
                for (Py_ssize_t c0 = 0; c0 < C; c0 += nk) {
                    const int nc = (int)cconv_min(nk, C - c0);
                    for (int l = 0; l < nc; l++) off[l] = (c0 + l) * P;
                    for (Py_ssize_t o0 = 0; o0 < m; o0 += mo)
                        kern->dot_finite(gyg + o0 * P + p0, len, P, xg + p0, 0, 1, off, NULL,
                                         gwg + o0 * C + c0, C, (int)cconv_min(mo, m - o0), nc);
                }
            }
            if (vend < pb)
                for (Py_ssize_t o = 0; o < m; o++)
                    for (Py_ssize_t c = 0; c < C; c++) {
                        T sum = 0;
                        for (Py_ssize_t q = vend; q < pb; q++)
                            sum += gyg[o * P + q] * xg[c * P + q];
                        gwg[o * C + c] += sum;
                    }
        }
        r += pb - pa;
    }
}
CCONV_ISA_VARIANTS(S(conv_gw_pointwise), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const T *gy, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t r0, Py_ssize_t r1, T *gw),
    (kern, blk, x, gy, g, groups, m, r0, r1, gw))
