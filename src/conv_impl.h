/* Type-generic body of conv_kernels.h: included once with T=float, S(x)=x_f32 and
 * once with T=double, S(x)=x_f64.  No include guard on purpose. */

/* ---- micro-kernels ---------------------------------------------------------- */

typedef void (*S(ukr_fn))(Py_ssize_t kc, const T *a, const T *b, T *c, Py_ssize_t ldc,
                          int m, int n, int accumulate, const T *bias);
typedef void (*S(ukr_ind_fn))(Py_ssize_t kc, const T *a, const T *b, const Py_ssize_t *off,
                              T *c, Py_ssize_t ldc, int m, int n, int accumulate, const T *bias);

typedef void (*S(dot_fn))(const T *gy, Py_ssize_t jp, const T *xp, Py_ssize_t img_stride,
                          int nimg, const Py_ssize_t *off, const TI *mask, T *gw,
                          Py_ssize_t ldg, int mo, int nk);

typedef struct {
    int mr, nr;          /* tile shape: A strips are mr rows, B panels nr columns */
    S(ukr_fn) fn;        /* B from packed panels */
    S(ukr_ind_fn) fn_ind;  /* B rows read at b + off[k] (implicit GEMM on a padded image) */
    S(dot_fn) dot;       /* weight-gradient tile (gemm_dot.h), or NULL: use conv_gw_range */
    int dot_mo, dot_nk;  /* its tile: output channels x kernel taps */
    const char *isa;
} S(kernel_t);

/* Portable C kernels (any compiler, any CPU): 4 x 8, auto-vectorised by -O3. */
#define GENERIC_MR 4
#define GENERIC_NR 8
static inline void S(generic_tile)(Py_ssize_t kc, const T *CCONV_RESTRICT a,
                                   const T *CCONV_RESTRICT b, const Py_ssize_t *off,
                                   T *CCONV_RESTRICT c, Py_ssize_t ldc, int m, int n,
                                   int accumulate, const T *CCONV_RESTRICT bias)
{
    T acc[GENERIC_MR][GENERIC_NR];
    int i, j;
    for (i = 0; i < GENERIC_MR; i++) {
        T init = (!accumulate && bias != NULL && i < m) ? bias[i] : (T)0;
        for (j = 0; j < GENERIC_NR; j++) acc[i][j] = init;
    }
    for (Py_ssize_t k = 0; k < kc; k++) {
        const T *brow = off != NULL ? b + off[k] : b + k * GENERIC_NR;
        for (i = 0; i < GENERIC_MR; i++)
            for (j = 0; j < GENERIC_NR; j++) acc[i][j] += a[i] * brow[j];
        a += GENERIC_MR;
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
    S(generic_tile)(kc, a, b, NULL, c, ldc, m, n, accumulate, bias);
}

static void S(ukr_generic_ind)(Py_ssize_t kc, const T *a, const T *b, const Py_ssize_t *off,
                               T *c, Py_ssize_t ldc, int m, int n, int accumulate,
                               const T *bias)
{
    S(generic_tile)(kc, a, b, off, c, ldc, m, n, accumulate, bias);
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
#define DOT_NAME S(dot_avx2)
#define DOT_TARGET UKR_TARGET
#define DOT_VBYTES 32
#define DOT_MO 3
#define DOT_NK 4
#include "gemm_dot.h"
#undef DOT_NAME
#undef DOT_TARGET
#undef DOT_VBYTES
#undef DOT_MO
#undef DOT_NK
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
#define DOT_NAME S(dot_avx512)
#define DOT_TARGET UKR_TARGET
#define DOT_VBYTES 64
#define DOT_MO 4
#define DOT_NK 6
#include "gemm_dot.h"
#undef DOT_NAME
#undef DOT_TARGET
#undef DOT_VBYTES
#undef DOT_MO
#undef DOT_NK
#undef UKR_TARGET
#undef UKR_VBYTES
#undef UKR_MR
#endif

static const S(kernel_t) S(kernel_generic) = {GENERIC_MR, GENERIC_NR, S(ukr_generic),
                                              S(ukr_generic_ind), NULL, 0, 0, "generic"};
#if CCONV_X86_DISPATCH
static const S(kernel_t) S(kernel_avx2) = {6, 64 / (int)sizeof(T), S(ukr_avx2),
                                           S(ukr_avx2_ind), S(dot_avx2), 3, 4, "avx2+fma"};
static const S(kernel_t) S(kernel_avx512) = {6, 128 / (int)sizeof(T), S(ukr_avx512),
                                             S(ukr_avx512_ind), S(dot_avx512), 4, 6, "avx512f"};
static const S(kernel_t) S(kernel_avx512_m8) = {8, 128 / (int)sizeof(T), S(ukr_avx512_m8),
                                                S(ukr_avx512_m8_ind), S(dot_avx512), 4, 6,
                                                "avx512f"};
#endif
/* The micro-kernels of the level cconv_isa_level names (isa.h): the default one and, on
 * AVX-512, a variant with taller A strips (NULL elsewhere).  Which of the two a GEMM uses
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

/* ---- GEMM building blocks ----------------------------------------------------- */

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
 * of depth kc.  jr outer: one B panel stays in L1 while the A strips stream from L2. */
static void S(gemm_macro)(const S(kernel_t) *kern, Py_ssize_t m, Py_ssize_t n, Py_ssize_t kc,
                          const T *a, Py_ssize_t a_strip, const T *b, T *c, Py_ssize_t ldc,
                          int accumulate, const T *bias)
{
    const int mr = kern->mr, nr = kern->nr;
    /* Row blocks of about CCONV_MC rows keep the A strips they cycle through in L2. */
    const Py_ssize_t mc = cconv_max(mr, CCONV_MC / mr * mr);
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
    for (t = 0; t < lo; t++) d[t] = 0;
    if (sw == 1)
        for (t = lo; t < hi; t++) d[t] = row[iw0 + t];
    else
        for (t = lo; t < hi; t++) d[t] = row[iw0 + t * sw];
    for (t = hi; t < len; t++) d[t] = 0;
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
 * by pack_a over the full K; ws: CCONV_KC * ceil(nc/nr)*nr elements.  Requires K >= 1. */
CCONV_BODY void CCONV_CAT(S(conv_fwd_block), _body)(const S(kernel_t) *kern, const T *x, const cconv_geom *g,
                              Py_ssize_t m, const T *apack, const T *bias, T *y,
                              Py_ssize_t p0, Py_ssize_t nc, T *ws)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    for (Py_ssize_t pc = 0; pc < K; pc += CCONV_KC) {
        const Py_ssize_t kc = cconv_min(CCONV_KC, K - pc);
        S(pack_b_im2col)(x, g, pc, kc, p0, nc, nr, ws);
        S(gemm_macro)(kern, m, nc, kc, apack + pc * mr, K * mr, ws, y + p0, P, pc > 0, bias);
    }
}
CCONV_ISA_VARIANTS(S(conv_fwd_block), (const S(kernel_t) *kern, const T *x, const cconv_geom *g, Py_ssize_t m, const T *apack, const T *bias, T *y, Py_ssize_t p0, Py_ssize_t nc, T *ws),
    (kern, x, g, m, apack, bias, y, p0, nc, ws))

/* ---- implicit GEMM on a padded, polyphase copy of the image ---------------------
 * For stride (sh, sw) the zero-padded slice is split into sh*sw phase planes,
 * xp[c][a][b][r][s] = x[c][r*sh + a - pad_top][s*sw + b - pad_left], each hph x wph.
 * Output pixel (oh, ow) under kernel tap (p, q) then reads phase ((p*dh) % sh, (q*dw) % sw)
 * at row oh + (p*dh)/sh, column ow + (q*dw)/sw: on the flat grid j = oh*wph + ow every tap
 * is a constant offset off[k], so NR consecutive j are NR contiguous inputs.  The grid
 * has wph >= out_w columns; the extra ("garbage") columns are computed and dropped. */

/* Phase plane size of slice geometry g: *hph x *wph. */
static void S(phase_dims)(const cconv_geom *g, Py_ssize_t *hph, Py_ssize_t *wph)
{
    const Py_ssize_t hreq = (g->out_h - 1) * g->stride_h + g->dilation_h * (g->kernel_h - 1) + 1;
    const Py_ssize_t wreq = (g->out_w - 1) * g->stride_w + g->dilation_w * (g->kernel_w - 1) + 1;
    *hph = (hreq + g->stride_h - 1) / g->stride_h;
    *wph = (wreq + g->stride_w - 1) / g->stride_w;
}

/* Elements of the padded copy, including slack so the last NR-wide grid block of every
 * tap stays inside the buffer (those extra values only feed dropped columns). */
static Py_ssize_t S(padded_size)(const cconv_geom *g, int nr)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    return g->channels * g->stride_h * g->stride_w * hph * wph + wph + 2 * nr;
}

/* off[k] for every kernel tap k = (c*kh + p)*kw + q (K entries). */
CCONV_MAYBE_UNUSED
static void S(tap_offsets)(const cconv_geom *g, Py_ssize_t *off)
{
    Py_ssize_t hph, wph, k = 0;
    S(phase_dims)(g, &hph, &wph);
    const Py_ssize_t sh = g->stride_h, sw = g->stride_w, plane = hph * wph;
    for (Py_ssize_t c = 0; c < g->channels; c++)
        for (Py_ssize_t p = 0; p < g->kernel_h; p++)
            for (Py_ssize_t q = 0; q < g->kernel_w; q++) {
                const Py_ssize_t dy = p * g->dilation_h, dx = q * g->dilation_w;
                off[k++] = ((c * sh + dy % sh) * sw + dx % sw) * plane + (dy / sh) * wph + dx / sw;
            }
}

/* Fill xp (padded_size elements) from the (channels, in_h, in_w) slice x. */
static void S(pad_phases)(const T *CCONV_RESTRICT x, const cconv_geom *g, int nr,
                          T *CCONV_RESTRICT xp)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    const Py_ssize_t sh = g->stride_h, sw = g->stride_w, H = g->in_h, W = g->in_w;
    T *d = xp;
    for (Py_ssize_t c = 0; c < g->channels; c++) {
        const T *plane = x + c * H * W;
        for (Py_ssize_t a = 0; a < sh; a++)
            for (Py_ssize_t b = 0; b < sw; b++)
                for (Py_ssize_t r = 0; r < hph; r++, d += wph) {
                    const Py_ssize_t ih = r * sh + a - g->pad_top;
                    if (ih < 0 || ih >= H) {
                        for (Py_ssize_t t = 0; t < wph; t++) d[t] = 0;
                    } else {
                        S(copy_segment)(d, plane + ih * W, b - g->pad_left, wph, sw, W);
                    }
                }
    }
    for (Py_ssize_t t = 0; t < wph + 2 * nr; t++) d[t] = 0;
}

/* Columns of the flat grid handled per block; the C block is m x (CCONV_NB_PANELS*nr). */
#define CCONV_NB_PANELS 4

/* Forward of one image-group slice: y(m x P) = W * x (+ bias) by implicit GEMM.
 * apack: the group's weights packed by pack_a over the full K; off: tap_offsets;
 * xp: padded_size elements; ctmp: ceil(m/mr)*mr * CCONV_NB_PANELS*nr elements. */
CCONV_BODY void CCONV_CAT(S(conv_fwd_slice), _body)(const S(kernel_t) *kern, const T *x, const cconv_geom *g,
                              Py_ssize_t m, const T *apack, const Py_ssize_t *off,
                              const T *bias, T *y, T *xp, T *ctmp)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t Wo = g->out_w, P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    const Py_ssize_t NB = CCONV_NB_PANELS * nr;
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    S(pad_phases)(x, g, nr, xp);
    const Py_ssize_t J = g->out_h * wph;
    for (Py_ssize_t j0 = 0; j0 < J; j0 += NB) {
        const Py_ssize_t nb = cconv_min(NB, J - j0);
        for (Py_ssize_t pc = 0; pc < K; pc += CCONV_KC) {
            const Py_ssize_t kc = cconv_min(CCONV_KC, K - pc);
            for (Py_ssize_t jr = 0; jr < nb; jr += nr)
                for (Py_ssize_t ir = 0; ir < m; ir += mr)
                    kern->fn_ind(kc, apack + (ir / mr) * K * mr + pc * mr, xp + j0 + jr, off + pc,
                                 ctmp + ir * NB + jr, NB, (int)cconv_min(mr, m - ir),
                                 (int)cconv_min(nr, nb - jr), pc > 0,
                                 bias != NULL ? bias + ir : NULL);
        }
        /* Drop the grid's extra columns while copying the block out. */
        Py_ssize_t j = j0;
        while (j < j0 + nb) {
            const Py_ssize_t oh = j / wph, ow = j % wph;
            const Py_ssize_t seg = cconv_min(wph - ow, j0 + nb - j);
            if (ow < Wo) {
                const Py_ssize_t len = cconv_min(seg, Wo - ow);
                for (Py_ssize_t i = 0; i < m; i++) {
                    const T *src = ctmp + i * NB + (j - j0);
                    T *dst = y + i * P + oh * Wo + ow;
                    for (Py_ssize_t t = 0; t < len; t++) dst[t] = src[t];
                }
            }
            j += seg;
        }
    }
}
CCONV_ISA_VARIANTS(S(conv_fwd_slice), (const S(kernel_t) *kern, const T *x, const cconv_geom *g, Py_ssize_t m, const T *apack, const Py_ssize_t *off, const T *bias, T *y, T *xp, T *ctmp),
    (kern, x, g, m, apack, off, bias, y, xp, ctmp))

/* ---- Winograd F(2x2, 3x3) for 3x3 stride-1 undilated convolutions ------------------
 * Each 2x2 output tile costs 16 multiplies per (input, output channel) pair instead of 36:
 *   Y = A^T [ sum_c (G g G^T) .* (B^T d B) ] A
 * for the 4x4 input patch d at rows 2*ty - pad_top.., columns 2*tx - pad_left...  The
 * elementwise products over channels are 16 GEMMs (one per position xi of the 4x4
 * transformed tile), M_xi(m x T) = U_xi(m x C) * V_xi(C x T), run by the indirect
 * micro-kernel on V_xi rows (row c at c*tpad).  Transforms are written as loops over a
 * tile row (tx), which vectorise.  Rounding stays within a few ulps per product. */

/* v0..v3 (element stride `stride`) = (a0 - a2, a1 + a2, a2 - a1, a1 - a3) over n tiles. */
static inline void S(wino_combine)(T *CCONV_RESTRICT v0, T *CCONV_RESTRICT v1,
                                   T *CCONV_RESTRICT v2, T *CCONV_RESTRICT v3,
                                   const T *CCONV_RESTRICT a0, const T *CCONV_RESTRICT a1,
                                   const T *CCONV_RESTRICT a2, const T *CCONV_RESTRICT a3,
                                   Py_ssize_t n, Py_ssize_t stride)
{
    if (stride == 1) {
        for (Py_ssize_t t = 0; t < n; t++) {
            v0[t] = a0[t] - a2[t];
            v1[t] = a1[t] + a2[t];
            v2[t] = a2[t] - a1[t];
            v3[t] = a1[t] - a3[t];
        }
    } else {
        for (Py_ssize_t t = 0; t < n; t++) {
            v0[t * stride] = a0[t] - a2[t];
            v1[t * stride] = a1[t] + a2[t];
            v2[t * stride] = a2[t] - a1[t];
            v3[t * stride] = a1[t] - a3[t];
        }
    }
}

/* The 2x2 outputs (y00, y01, y10, y11) + b of n tiles from their 16 transformed products,
 * mm[xi*xi_stride + t]. */
static inline void S(wino_output)(const T *CCONV_RESTRICT mm, Py_ssize_t xi_stride, T b,
                                  T *CCONV_RESTRICT y00, T *CCONV_RESTRICT y01,
                                  T *CCONV_RESTRICT y10, T *CCONV_RESTRICT y11, Py_ssize_t n)
{
    for (Py_ssize_t t = 0; t < n; t++) {
        T s0[4], s1[4];
        for (int j = 0; j < 4; j++) {
            const T m0 = mm[j * xi_stride + t], m1 = mm[(4 + j) * xi_stride + t];
            const T m2 = mm[(8 + j) * xi_stride + t], m3 = mm[(12 + j) * xi_stride + t];
            s0[j] = m0 + m1 + m2;
            s1[j] = m1 - m2 - m3;
        }
        y00[t] = b + (s0[0] + s0[1] + s0[2]);
        y01[t] = b + (s0[1] - s0[2] - s0[3]);
        y10[t] = b + (s1[0] + s1[1] + s1[2]);
        y11[t] = b + (s1[1] - s1[2] - s1[3]);
    }
}

/* row[2t] = even[t], row[2t + 1] = odd[t] for the row's width (odd widths drop the last odd). */
static inline void S(wino_interleave)(T *CCONV_RESTRICT row, const T *CCONV_RESTRICT even,
                                      const T *CCONV_RESTRICT odd, Py_ssize_t width)
{
    const Py_ssize_t pairs = width / 2;
    for (Py_ssize_t t = 0; t < pairs; t++) {
        row[2 * t] = even[t];
        row[2 * t + 1] = odd[t];
    }
    if (width % 2) row[width - 1] = even[pairs];
}

/* 1 if none of x[0:n] is inf or NaN.  Winograd mixes the inputs of a tile before the
 * products, so one inf would turn neighbouring outputs into inf - inf = NaN where direct
 * summation gives a finite or infinite value: non-finite data takes another algorithm. */
CCONV_BODY int CCONV_CAT(S(all_finite), _body)(const T *CCONV_RESTRICT x, Py_ssize_t n)
{
    const TI exponent = sizeof(T) == 4 ? (TI)0x7f800000 : (TI)0x7ff0000000000000LL;
    TI bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        TI bits;
        memcpy(&bits, x + i, sizeof bits);
        bad |= (TI)((bits & exponent) == exponent);
    }
    return bad == 0;
}
CCONV_ISA_VARIANTS_INT(S(all_finite), (const T *CCONV_RESTRICT x, Py_ssize_t n),
    (x, n))

/* U = G g G^T for output channels [o0, o1) of the (groups*m, C, 3, 3) weights w, written
 * straight into GEMM A strips: U_xi of group gi is packed like pack_a would (strips of mr
 * output channels, k-major over C) at upack + xi*upack_xi + gi*a_size, a_size =
 * ceil(m/mr)*mr*C; strip rows past m are zeroed by the thread that owns the strip's last
 * channel.  G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]. */
static void S(wino_weights)(const T *CCONV_RESTRICT w, Py_ssize_t groups, Py_ssize_t m,
                            Py_ssize_t C, int mr, Py_ssize_t o0, Py_ssize_t o1,
                            T *CCONV_RESTRICT upack, Py_ssize_t upack_xi)
{
    const Py_ssize_t a_size = (m + mr - 1) / mr * mr * C;
    (void)groups;
    for (Py_ssize_t o = o0; o < o1; o++) {
        const Py_ssize_t gi = o / m, ol = o % m;
        T *strip = upack + gi * a_size + (ol / mr) * C * mr + ol % mr;
        for (Py_ssize_t c = 0; c < C; c++) {
            const T *g = w + (o * C + c) * 9;
            T t[4][3], r[4][4];
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[j];
                t[1][j] = (T)0.5 * (g[j] + g[3 + j] + g[6 + j]);
                t[2][j] = (T)0.5 * (g[j] - g[3 + j] + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            for (int i = 0; i < 4; i++) {
                r[i][0] = t[i][0];
                r[i][1] = (T)0.5 * (t[i][0] + t[i][1] + t[i][2]);
                r[i][2] = (T)0.5 * (t[i][0] - t[i][1] + t[i][2]);
                r[i][3] = t[i][2];
            }
            for (int xi = 0; xi < 16; xi++) strip[xi * upack_xi + c * mr] = r[xi / 4][xi % 4];
        }
        if (ol == m - 1 && m % mr)     /* zero the padding rows of the group's last strip */
            for (int xi = 0; xi < 16; xi++)
                for (Py_ssize_t c = 0; c < C; c++)
                    for (Py_ssize_t i = m % mr; i < mr; i++)
                        upack[xi * upack_xi + gi * a_size + (m / mr) * C * mr + c * mr + i] = 0;
    }
}

/* Input transform of tile rows [ty0, ty0 + nty) of nimg image slices (image b at
 * x + b*x_img): element (xi, c, t) of layout L = (B^T d B)[xi] for channel c and tile
 * t = (b*nty + ty - ty0)*tw + tx.  rows: (2*nty + 2)*4*(tw + 1) scratch elements,
 * prow: 2*tw + 4. */
static void S(wino_input)(const T *x, Py_ssize_t x_img, const cconv_geom *g, Py_ssize_t nimg,
                          Py_ssize_t ty0, Py_ssize_t nty, const cconv_layout *L, T *V,
                          T *rows, T *prow)
{
    const Py_ssize_t C = g->channels, H = g->in_h, W = g->in_w;
    const Py_ssize_t tw = (g->out_w + 1) / 2;
    const Py_ssize_t rstride = tw + 1;
    for (Py_ssize_t c = 0; c < C; c++)
    for (Py_ssize_t bi = 0; bi < nimg; bi++) {
        const T *plane = x + bi * x_img + c * H * W;
        const Py_ssize_t t0 = bi * nty * tw;
        for (Py_ssize_t rr = 0; rr < 2 * nty + 2; rr++) {
            const Py_ssize_t ih = 2 * ty0 + rr - g->pad_top;
            T *R = rows + rr * 4 * rstride;
            if (ih < 0 || ih >= H) {
                for (Py_ssize_t t = 0; t < 4 * rstride; t++) R[t] = 0;
                continue;
            }
            S(copy_segment)(prow, plane + ih * W, -g->pad_left, 2 * tw + 2, 1, W);
            /* Row transform with B = columns (d0-d2, d1+d2, d2-d1, d1-d3) of each patch. */
            for (Py_ssize_t tx = 0; tx < tw; tx++) {
                const T d0 = prow[2 * tx], d1 = prow[2 * tx + 1];
                const T d2 = prow[2 * tx + 2], d3 = prow[2 * tx + 3];
                R[tx] = d0 - d2;
                R[rstride + tx] = d1 + d2;
                R[2 * rstride + tx] = d2 - d1;
                R[3 * rstride + tx] = d1 - d3;
            }
        }
        for (Py_ssize_t ty = 0; ty < nty; ty++) {
            const T *q0 = rows + (2 * ty) * 4 * rstride, *q1 = q0 + 4 * rstride;
            const T *q2 = q1 + 4 * rstride, *q3 = q2 + 4 * rstride;
            T *vc = V + (c / L->cb) * L->cb_stride + (c % L->cb) * L->c_stride
                      + (t0 + ty * tw) * L->t_stride;
            for (int j = 0; j < 4; j++)
                S(wino_combine)(vc + (0 * 4 + j) * L->xi_stride, vc + (1 * 4 + j) * L->xi_stride,
                                vc + (2 * 4 + j) * L->xi_stride, vc + (3 * 4 + j) * L->xi_stride,
                                q0 + j * rstride, q1 + j * rstride, q2 + j * rstride,
                                q3 + j * rstride, tw, L->t_stride);
        }
    }
}

/* Scratch elements of one Winograd task over nty tile rows of tw tiles, tpad >= nty*tw:
 * V (16 x C x tpad) and M (16 x m x tpad), planes skewed, row transforms, one padded row. */
CCONV_MAYBE_UNUSED
static Py_ssize_t S(wino_task_size)(Py_ssize_t C, Py_ssize_t m, Py_ssize_t nty, Py_ssize_t tw,
                                    Py_ssize_t tpad)
{
    return 16 * (C + m) * tpad + 32 * CCONV_XI_SKEW + (2 * nty + 2) * 4 * (tw + 1) + 4 * (tw + 2)
           + 16;
}

/* Output tile rows [ty0, ty0 + nty) of nimg image-group slices (3x3, stride 1, dilation 1;
 * several images only with whole images, so small images still fill the GEMM panels):
 * x (C, in_h, in_w) -> y (m, out_h, out_w) (+ bias), image b at x + b*x_img, y + b*y_img.  upack: for each xi the group's U_xi
 * packed by pack_a (strip stride C*mr, xi stride upack_xi); off[c] = c*tpad, where tpad
 * >= nty*tw is a multiple of nr; ws: wino_task_size elements for that tpad. */
CCONV_BODY void CCONV_CAT(S(conv_wino_rows), _body)(const S(kernel_t) *kern, const T *x, Py_ssize_t x_img,
                              const cconv_geom *g, Py_ssize_t m, const T *upack,
                              Py_ssize_t upack_xi, const Py_ssize_t *off, const T *bias, T *y,
                              Py_ssize_t y_img, Py_ssize_t nimg, Py_ssize_t ty0, Py_ssize_t nty,
                              Py_ssize_t tpad, T *ws)
{
    const Py_ssize_t C = g->channels;
    const Py_ssize_t Ho = g->out_h, Wo = g->out_w, tw = (Wo + 1) / 2;
    const int mr = kern->mr, nr = kern->nr;
    const Py_ssize_t T_ = nimg * nty * tw;
    const Py_ssize_t vxi = C * tpad + CCONV_XI_SKEW, mxi = m * tpad + CCONV_XI_SKEW;
    T *V = ws, *M = V + 16 * vxi;
    T *rows = M + 16 * mxi;                      /* (2*nty + 2) x 4 x (tw + 1) */
    T *prow = rows + (2 * nty + 2) * 4 * (tw + 1);   /* padded input row, 2*tw + 2 (+2) */
    const cconv_layout L = {vxi, C, 0, tpad, 1};   /* V[xi][c][t], rows of tpad */
    S(wino_input)(x, x_img, g, nimg, ty0, nty, &L, V, rows, prow);
    for (Py_ssize_t c = 0; c < C; c++)   /* padding tiles: defined values, results unused */
        for (int xi = 0; xi < 16; xi++)
            for (Py_ssize_t t = T_; t < tpad; t++) V[xi * vxi + c * tpad + t] = 0;
    /* 16 GEMMs: M_xi (m x tpad) = U_xi (m x C) * V_xi (C x tpad). */
    for (int xi = 0; xi < 16; xi++) {
        const T *ua = upack + xi * upack_xi, *vb = V + xi * vxi;
        T *mc = M + xi * mxi;
        for (Py_ssize_t jr = 0; jr < T_; jr += nr)
            for (Py_ssize_t ir = 0; ir < m; ir += mr)
                kern->fn_ind(C, ua + (ir / mr) * C * mr, vb + jr, off, mc + ir * tpad + jr, tpad,
                             (int)cconv_min(mr, m - ir), (int)cconv_min(nr, T_ - jr), 0, NULL);
    }
    /* Output transform: Y = A^T M A, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], + bias. */
    T *e = prow;   /* 4 rows of tw: the 2x2 outputs of a tile row before interleaving */
    for (Py_ssize_t bi = 0; bi < nimg; bi++)
    for (Py_ssize_t o = 0; o < m; o++) {
        const T b = bias != NULL ? bias[o] : (T)0;
        T *yo = y + bi * y_img + o * Ho * Wo;
        for (Py_ssize_t ty = 0; ty < nty; ty++) {
            const Py_ssize_t oh = 2 * (ty0 + ty);
            const T *mm = M + o * tpad + (bi * nty + ty) * tw;
            S(wino_output)(mm, mxi, b, e, e + tw, e + 2 * tw, e + 3 * tw, tw);
            S(wino_interleave)(yo + oh * Wo, e, e + tw, Wo);
            if (oh + 1 < Ho) S(wino_interleave)(yo + (oh + 1) * Wo, e + 2 * tw, e + 3 * tw, Wo);
        }
    }
}
CCONV_ISA_VARIANTS(S(conv_wino_rows), (const S(kernel_t) *kern, const T *x, Py_ssize_t x_img, const cconv_geom *g, Py_ssize_t m, const T *upack, Py_ssize_t upack_xi, const Py_ssize_t *off, const T *bias, T *y, Py_ssize_t y_img, Py_ssize_t nimg, Py_ssize_t ty0, Py_ssize_t nty, Py_ssize_t tpad, T *ws),
    (kern, x, x_img, g, m, upack, upack_xi, off, bias, y, y_img, nimg, ty0, nty, tpad, ws))

/* ---- Winograd F(2x2, 3x3) weight gradient -------------------------------------------
 * Forward: Y_t = A^T M_t A with M_xi = sum_c U_xi V_xi and U = G g G^T.  So
 *   dU_xi (m x C) = sum_t Z_xi[:, t] V_xi[:, t]^T  with  Z_t = A dY_t A^T,
 *   dg = G^T dU G,
 * 16 GEMMs whose depth is the tile count, accumulated over tiles and images. */

/* Z = (A g A^T) for the 2x2 grad_output tiles of tile rows [ty0, ty0 + nty) of nimg images
 * (image b at gy + b*gy_img; m planes of out_h x out_w), element (xi, o, t) stored by
 * layout L; A = [[1, 0], [1, 1], [1, -1], [0, -1]].  Tiles past the output read zeros.
 * tmp: 4*tw elements. */
static void S(wino_gy)(const T *gy, Py_ssize_t gy_img, const cconv_geom *g, Py_ssize_t m,
                       Py_ssize_t nimg, Py_ssize_t ty0, Py_ssize_t nty, const cconv_layout *L,
                       T *Z, T *tmp)
{
    const Py_ssize_t Ho = g->out_h, Wo = g->out_w, tw = (Wo + 1) / 2, ts = L->t_stride;
    T *a = tmp, *b = tmp + tw, *c = tmp + 2 * tw, *d = tmp + 3 * tw;
    for (Py_ssize_t bi = 0; bi < nimg; bi++)
        for (Py_ssize_t o = 0; o < m; o++) {
            const T *plane = gy + bi * gy_img + o * Ho * Wo;
            T *zo = Z + (o / L->cb) * L->cb_stride + (o % L->cb) * L->c_stride;
            for (Py_ssize_t ty = 0; ty < nty; ty++) {
                const Py_ssize_t oh = 2 * (ty0 + ty), t0 = (bi * nty + ty) * tw;
                const T *r0 = plane + oh * Wo, *r1 = r0 + Wo;
                const int second_row = oh + 1 < Ho;
                for (Py_ssize_t tx = 0; tx < tw; tx++) {
                    const int second_col = 2 * tx + 1 < Wo;
                    a[tx] = r0[2 * tx];
                    b[tx] = second_col ? r0[2 * tx + 1] : (T)0;
                    c[tx] = second_row ? r1[2 * tx] : (T)0;
                    d[tx] = second_row && second_col ? r1[2 * tx + 1] : (T)0;
                }
                T *z = zo + t0 * ts;
                const Py_ssize_t xs = L->xi_stride;
                for (Py_ssize_t tx = 0; tx < tw; tx++) {
                    /* rows of A g: (a, b), (a + c, b + d), (a - c, b - d), (-c, -d);
                     * each row (u, v) times A^T: (u, u + v, u - v, -v). */
                    const T u[4] = {a[tx], a[tx] + c[tx], a[tx] - c[tx], -c[tx]};
                    const T v[4] = {b[tx], b[tx] + d[tx], b[tx] - d[tx], -d[tx]};
                    T *zt = z + tx * ts;
                    for (int i = 0; i < 4; i++) {
                        zt[(4 * i) * xs] = u[i];
                        zt[(4 * i + 1) * xs] = u[i] + v[i];
                        zt[(4 * i + 2) * xs] = u[i] - v[i];
                        zt[(4 * i + 3) * xs] = -v[i];
                    }
                }
            }
        }
}

/* Scratch elements of one thread of the Winograd weight gradient (see conv_wino_gw). */
CCONV_MAYBE_UNUSED
static Py_ssize_t S(wino_gw_size)(Py_ssize_t C, Py_ssize_t m, Py_ssize_t nty, Py_ssize_t tw,
                                  Py_ssize_t tpad, int mr, int nr)
{
    return (16 * ((C + mr) + (m + nr)) * tpad + 32 * CCONV_XI_SKEW
            + (2 * nty + 2) * 4 * (tw + 1) + 4 * (tw + 2) + 16);
}

/* dU^T over images [img0, img1) (img1 > img0), nimg images and nty tile rows at a time:
 * sacc[xi][group][c][o] (xi stride groups*C*m) = sum of V_xi Z_xi^T (no clearing needed), 16 GEMMs whose depth is the
 * block's tile count.  The transforms write V straight into GEMM A strips (channels) and
 * Z into B panels (output channels), so nothing is repacked.  x, gy: whole batch. */
CCONV_BODY void CCONV_CAT(S(conv_wino_gw), _body)(const S(kernel_t) *kern, const T *x, const T *gy,
                            const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                            Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t nimg, Py_ssize_t nty,
                            Py_ssize_t tpad, T *sacc, T *ws)
{
    const Py_ssize_t C = g->channels, tw = (g->out_w + 1) / 2, th = (g->out_h + 1) / 2;
    const Py_ssize_t x_group = C * g->in_h * g->in_w, y_group = m * g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    const Py_ssize_t Cp = (C + mr - 1) / mr * mr, mp = (m + nr - 1) / nr * nr;
    const Py_ssize_t plane = groups * C * m;
    T *V = ws, *Z = V + 16 * (Cp * tpad + CCONV_XI_SKEW);
    T *rows = Z + 16 * (mp * tpad + CCONV_XI_SKEW);
    T *prow = rows + (2 * nty + 2) * 4 * (tw + 1);
    for (Py_ssize_t gi = 0; gi < groups; gi++)
        for (Py_ssize_t b0 = img0; b0 < img1; b0 += nimg) {
            const Py_ssize_t nb = cconv_min(nimg, img1 - b0);
            for (Py_ssize_t ty0 = 0; ty0 < th; ty0 += nty) {
                const Py_ssize_t rows_here = cconv_min(nty, th - ty0);
                const Py_ssize_t n = nb * rows_here * tw;     /* GEMM depth: tiles */
                const cconv_layout LV = {Cp * n + CCONV_XI_SKEW, mr, n * mr, 1, mr};
                const cconv_layout LZ = {mp * n + CCONV_XI_SKEW, nr, n * nr, 1, nr};
                /* Rows of the last strip / panel past C / m must be zero. */
                for (int xi = 0; xi < 16; xi++) {
                    if (Cp > C) memset(V + xi * LV.xi_stride + (Cp - mr) * n, 0, mr * n * sizeof(T));
                    if (mp > m) memset(Z + xi * LZ.xi_stride + (mp - nr) * n, 0, nr * n * sizeof(T));
                }
                S(wino_input)(x + (b0 * groups + gi) * x_group, groups * x_group, g, nb, ty0,
                              rows_here, &LV, V, rows, prow);
                S(wino_gy)(gy + (b0 * groups + gi) * y_group, groups * y_group, g, m, nb, ty0,
                           rows_here, &LZ, Z, prow);
                const int accumulate = b0 > img0 || ty0 > 0;   /* first block overwrites */
                for (int xi = 0; xi < 16; xi++)
                    S(gemm_macro)(kern, C, m, n, V + xi * LV.xi_stride, n * mr,
                                  Z + xi * LZ.xi_stride, sacc + xi * plane + gi * C * m, m,
                                  accumulate, NULL);
            }
        }
}
CCONV_ISA_VARIANTS(S(conv_wino_gw), (const S(kernel_t) *kern, const T *x, const T *gy, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t nimg, Py_ssize_t nty, Py_ssize_t tpad, T *sacc, T *ws),
    (kern, x, gy, g, groups, m, img0, img1, nimg, nty, tpad, sacc, ws))

/* gw = G^T dU G for the input channels c of group gi, all m output channels at once
 * (dU[xi] = sacc[xi][gi][c][0:m], contiguous, so the transform vectorises over o). */
static void S(wino_weights_grad)(const T *CCONV_RESTRICT sacc, Py_ssize_t groups, Py_ssize_t m,
                                 Py_ssize_t C, Py_ssize_t gi, Py_ssize_t c, T *CCONV_RESTRICT gw,
                                 T *CCONV_RESTRICT tmp)
{
    const Py_ssize_t plane = groups * C * m;
    const T *du = sacc + (gi * C + c) * m;          /* du[xi*plane + o] */
    T *t = tmp;                                      /* t[(p*4 + j)*m + o], 12 rows */
    for (int j = 0; j < 4; j++) {
        const T *d0 = du + j * plane, *d1 = du + (4 + j) * plane;
        const T *d2 = du + (8 + j) * plane, *d3 = du + (12 + j) * plane;
        T *t0 = t + j * m, *t1 = t + (4 + j) * m, *t2 = t + (8 + j) * m;
        for (Py_ssize_t o = 0; o < m; o++) {
            t0[o] = d0[o] + (T)0.5 * (d1[o] + d2[o]);
            t1[o] = (T)0.5 * (d1[o] - d2[o]);
            t2[o] = (T)0.5 * (d1[o] + d2[o]) + d3[o];
        }
    }
    for (int p = 0; p < 3; p++) {
        const T *a0 = t + (p * 4) * m, *a1 = a0 + m, *a2 = a1 + m, *a3 = a2 + m;
        for (Py_ssize_t o = 0; o < m; o++) {
            T *out = gw + ((gi * m + o) * C + c) * 9 + p * 3;
            out[0] = a0[o] + (T)0.5 * (a1[o] + a2[o]);
            out[1] = (T)0.5 * (a1[o] - a2[o]);
            out[2] = (T)0.5 * (a1[o] + a2[o]) + a3[o];
        }
    }
}

/* Grid length the dot kernel runs over: out_h*wph rounded up to the widest vector
 * (64 bytes), so every kernel's vector width divides it. */
static Py_ssize_t S(dot_grid)(const cconv_geom *g)
{
    Py_ssize_t hph, wph;
    const Py_ssize_t lanes = 64 / (Py_ssize_t)sizeof(T);
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

/* Weight gradient of images [img0, img1) by the dot kernel (kern->dot != NULL):
 * gw(groups*m x K) += gy * im2col(x)^T, dot_images images at a time, tile by tile in a
 * fixed order.  x, gy: whole batch; off: tap_offsets; mask: dot_mask;
 * ws: dot_images * dot_image_size elements. */
CCONV_BODY void CCONV_CAT(S(conv_gw_images), _body)(const S(kernel_t) *kern, const T *x, const T *gy,
                              const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                              Py_ssize_t img0, Py_ssize_t img1, const Py_ssize_t *off,
                              const TI *mask, T *gw, T *ws)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t Wo = g->out_w, P = g->out_h * Wo;
    const Py_ssize_t x_group = g->channels * g->in_h * g->in_w;
    const Py_ssize_t jp = S(dot_grid)(g);
    const Py_ssize_t stride = S(dot_image_size)(g, m, kern->nr);
    const Py_ssize_t xp_size = stride - m * jp;
    const int mo = kern->dot_mo, nk = kern->dot_nk;
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
                for (Py_ssize_t i = 0; i < m; i++) {
                    T *d = gyp + i * jp;
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
            for (Py_ssize_t o0 = 0; o0 < m; o0 += mo)
                for (Py_ssize_t k0 = 0; k0 < K; k0 += nk)
                    kern->dot(ws + xp_size + o0 * jp, jp, ws, stride, nimg, off + k0, mask,
                              gwg + o0 * K + k0, K, (int)cconv_min(mo, m - o0),
                              (int)cconv_min(nk, K - k0));
        }
}
CCONV_ISA_VARIANTS(S(conv_gw_images), (const S(kernel_t) *kern, const T *x, const T *gy, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t img0, Py_ssize_t img1, const Py_ssize_t *off, const TI *mask, T *gw, T *ws),
    (kern, x, gy, g, groups, m, img0, img1, off, mask, gw, ws))


/* Forward, packed-im2col GEMM over columns [j0, j0 + nc) of the batch-flattened pixel
 * range (column j = image*P + pixel): blocks may span images, so small images (P not a
 * multiple of nr) do not leave a mostly empty panel per image.  x, y: the group's slice of
 * image 0 (image strides x_img, y_img).  ws: CCONV_KC*ncp + ncp + ceil(m/mr)*mr*ncp
 * elements, ncp = ceil(nc/nr)*nr.  stream: write y with non-temporal stores (see
 * cconv_copy_out).  Requires K >= 1. */
CCONV_BODY void CCONV_CAT(S(conv_fwd_span), _body)(const S(kernel_t) *kern, const T *x, Py_ssize_t x_img,
                             const cconv_geom *g, Py_ssize_t m, const T *apack, const T *bias,
                             T *y, Py_ssize_t y_img, Py_ssize_t j0, Py_ssize_t nc, T *ws,
                             int stream, int pointwise)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    const Py_ssize_t ncp = (nc + nr - 1) / nr * nr;
    T *bpk = ws, *row = bpk + CCONV_KC * ncp, *ct = row + ncp;
    for (Py_ssize_t pc = 0; pc < K; pc += CCONV_KC) {
        const Py_ssize_t kc = cconv_min(CCONV_KC, K - pc);
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
            S(gemm_macro)(kern, m, nc, kc, apack + pc * mr, K * mr, bpk, ct, ncp, pc > 0, bias);
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
        S(gemm_macro)(kern, m, nc, kc, apack + pc * mr, K * mr, bpk, ct, ncp, pc > 0, bias);
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
CCONV_ISA_VARIANTS(S(conv_fwd_span), (const S(kernel_t) *kern, const T *x, Py_ssize_t x_img, const cconv_geom *g, Py_ssize_t m, const T *apack, const T *bias, T *y, Py_ssize_t y_img, Py_ssize_t j0, Py_ssize_t nc, T *ws, int stream, int pointwise),
    (kern, x, x_img, g, m, apack, bias, y, y_img, j0, nc, ws, stream, pointwise))

/* Weight gradient over the flattened (image, pixel) range [r0, r1) of the batch:
 * gw(m x K) += gy(m x P) * im2col(x)^T for each group, accumulated in a fixed order.
 * x, gy: whole batch; gw: groups*m x K (not cleared here).
 * wsa: ceil(m/mr)*mr*CCONV_KC; wsb: CCONV_KC*CCONV_NC elements. */
CCONV_BODY void CCONV_CAT(S(conv_gw_range), _body)(const S(kernel_t) *kern, const T *x, const T *gy,
                             const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                             Py_ssize_t r0, Py_ssize_t r1, T *gw, T *wsa, T *wsb,
                                   int pointwise)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w;
    const Py_ssize_t x_group = g->channels * g->in_h * g->in_w;
    const int mr = kern->mr, nr = kern->nr;
    Py_ssize_t r = r0;
    while (r < r1) {
        const Py_ssize_t img = r / P, pa = r % P, pb = cconv_min(P, pa + (r1 - r));
        for (Py_ssize_t gi = 0; gi < groups; gi++) {
            const T *xg = x + (img * groups + gi) * x_group;
            const T *gyg = gy + (img * groups + gi) * m * P;
            T *gwg = gw + gi * m * K;
            for (Py_ssize_t p0 = pa; p0 < pb; p0 += CCONV_KC) {
                const Py_ssize_t pc = cconv_min(CCONV_KC, pb - p0);
                S(pack_a_rows)(kern, wsa, gyg + p0, m, pc, P, mr);
                for (Py_ssize_t k0 = 0; k0 < K; k0 += CCONV_NC) {
                    const Py_ssize_t kb = cconv_min(CCONV_NC, K - k0);
                    const Py_ssize_t kbp = (kb + nr - 1) / nr * nr;
                    if (pointwise) {  /* im2col row k is input plane k: transpose-pack */
                        S(pack_a_rows)(kern, wsb, xg + k0 * P + p0, kb, pc, P, nr);
                        S(gemm_macro)(kern, m, kb, pc, wsa, pc * mr, wsb, gwg + k0, K, 1, NULL);
                        continue;
                    }
                    for (Py_ssize_t kj = 0; kj < kb; kj++) {
                        T row[CCONV_KC];
                        T *col = wsb + (kj / nr) * pc * nr + kj % nr;
                        S(im2col_row_fast)(xg, g, k0 + kj, p0, pc, row);
                        for (Py_ssize_t pp = 0; pp < pc; pp++) col[pp * nr] = row[pp];
                    }
                    for (Py_ssize_t kj = kb; kj < kbp; kj++)
                        for (Py_ssize_t pp = 0; pp < pc; pp++)
                            wsb[(kj / nr) * pc * nr + pp * nr + kj % nr] = 0;
                    S(gemm_macro)(kern, m, kb, pc, wsa, pc * mr, wsb, gwg + k0, K, 1, NULL);
                }
            }
        }
        r += pb - pa;
    }
}
CCONV_ISA_VARIANTS(S(conv_gw_range), (const S(kernel_t) *kern, const T *x, const T *gy, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t r0, Py_ssize_t r1, T *gw, T *wsa, T *wsb, int pointwise),
    (kern, x, gy, g, groups, m, r0, r1, gw, wsa, wsb, pointwise))

/* Input gradient of one image-group slice by GEMM + col2im (any stride):
 * col(K x P) = W^T(K x m) * gy(m x P), scattered back into gi (which must be zeroed)
 * nc pixels at a time.  apack: W^T packed by pack_a (K rows, depth m);
 * wsb: CCONV_KC*ceil(nc/nr)*nr; wsc: K*nc elements. */
CCONV_BODY void CCONV_CAT(S(conv_gi_block), _body)(const S(kernel_t) *kern, const T *gy, const cconv_geom *g,
                             Py_ssize_t m, const T *apack, T *gi, Py_ssize_t nc_max,
                             T *wsb, T *wsc)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    for (Py_ssize_t p0 = 0; p0 < P; p0 += nc_max) {
        const Py_ssize_t nc = cconv_min(nc_max, P - p0);
        for (Py_ssize_t o0 = 0; o0 < m; o0 += CCONV_KC) {
            const Py_ssize_t kc = cconv_min(CCONV_KC, m - o0);
            S(pack_b)(wsb, gy + o0 * P + p0, kc, nc, P, nr);
            S(gemm_macro)(kern, K, nc, kc, apack + o0 * mr, m * mr, wsb, wsc, nc, o0 > 0, NULL);
        }
        for (Py_ssize_t k = 0; k < K; k++)
            S(col2im_row)(gi, g, k, p0, nc, wsc + k * nc);
    }
}
CCONV_ISA_VARIANTS(S(conv_gi_block), (const S(kernel_t) *kern, const T *gy, const cconv_geom *g, Py_ssize_t m, const T *apack, T *gi, Py_ssize_t nc_max, T *wsb, T *wsc),
    (kern, gy, g, m, apack, gi, nc_max, wsb, wsc))

#undef GENERIC_MR
#undef GENERIC_NR
