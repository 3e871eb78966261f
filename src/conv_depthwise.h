/* Depthwise convolution: one input channel and m (1 or 2) output channels per group.
 * Type-generic: included by conv_impl.h once per float type (T, TI, S(name)); no include
 * guard on purpose.
 *
 * A GEMM tile is 4-8 output channels tall, so with one or two per group most of it is
 * padding; here every (image, channel) plane is its own small problem.  The plane is
 * copied once into the zero-padded polyphase layout of conv_padded.h (pad_phases), where
 * every kernel tap is a constant offset on a flat grid j = oh * wph + ow, so each pass is a
 * loop over grid columns in the vector lanes with the taps as the outer, scalar loop:
 *
 *   forward      y[j]  = b + sum_k w[k] * xp[off[k] + j]              (dw_corr)
 *   grad_input   each polyphase plane of the padded input gradient is a correlation of
 *                grad_output (on the grid, zero margins) with the taps of that phase:
 *                gxp[j] = sum_k w[k] * gyp[Z + j - d[k]]              (dw_corr again)
 *   grad_weight  gw[k] = sum_n sum_j gyg[j] * xp[off[k] + j], per-lane partial sums over
 *                the whole batch, the lanes added in order at the end (dw_gw_image)
 *
 * The grid has wph >= out_w columns; the extra ("garbage") columns are computed and
 * dropped (forward), or hold zeros in grad_output's copy (gradients).  Every sum runs in a
 * fixed order per plane, and a task is a range of planes (or channels, for grad_weight,
 * over the whole batch), so results do not depend on the thread count.
 *
 * Non-finite values: the forward multiplies the padding like PyTorch (0 * inf = NaN).  The
 * weight gradient would multiply a garbage column's zero grad_output by whatever x holds
 * there; an image plane that is not all finite is therefore summed with a lane mask of the
 * real output pixels.  The input gradient multiplies zero margins by the weights: the
 * planner uses it with finite weights only. */

/* Grid columns per forward / grad_input block (registers: 8 vectors of 32 bytes) and per
 * vector-sized remainder block; lanes of the weight gradient's partial sums. */
#define DW_BW ((Py_ssize_t)(256 / sizeof(T)))
#define DW_V ((Py_ssize_t)(32 / sizeof(T)))
#define DW_L ((Py_ssize_t)(64 / sizeof(T)))

/* Vectors of 32 bytes: GCC/Clang vector extensions (each ISA variant compiles them to its
 * registers; plain loops left the accumulators on the stack), scalar loops elsewhere. */
#define DW_VL ((int)DW_V)
#if defined(__GNUC__)
typedef T S(dw_vec) __attribute__((vector_size(32)));
typedef T S(dw_uvec) __attribute__((vector_size(32), aligned(sizeof(T)), may_alias));
#define DW_LOAD(p) (*(const S(dw_uvec) *)(p))
#define DW_STORE(p, v) (*(S(dw_uvec) *)(p) = (v))
#define DW_SPLAT(v) ((S(dw_vec)){0} + (v))

/* NV vectors of out[j ...] = bias + sum_{k < ntaps} wt[k] * src[off[k] + j ...]. */
CCONV_BODY void S(dw_corr_block)(const int NV, const T *CCONV_RESTRICT src,
                                 const Py_ssize_t *CCONV_RESTRICT off,
                                 const T *CCONV_RESTRICT wt, Py_ssize_t ntaps, T bias,
                                 T *CCONV_RESTRICT out)
{
    S(dw_vec) acc[8];
    for (int i = 0; i < NV; i++) acc[i] = DW_SPLAT(bias);
    for (Py_ssize_t k = 0; k < ntaps; k++) {
        const S(dw_vec) wk = DW_SPLAT(wt[k]);
        const T *s = src + off[k];
        for (int i = 0; i < NV; i++) acc[i] += wk * DW_LOAD(s + i * DW_VL);
    }
    for (int i = 0; i < NV; i++) DW_STORE(out + i * DW_VL, acc[i]);
}
#else
CCONV_BODY void S(dw_corr_block)(const int NV, const T *CCONV_RESTRICT src,
                                 const Py_ssize_t *CCONV_RESTRICT off,
                                 const T *CCONV_RESTRICT wt, Py_ssize_t ntaps, T bias,
                                 T *CCONV_RESTRICT out)
{
    for (Py_ssize_t l = 0; l < NV * DW_VL; l++) {
        T acc = bias;
        for (Py_ssize_t k = 0; k < ntaps; k++) acc += wt[k] * src[off[k] + l];
        out[l] = acc;
    }
}
#endif

/* out[j] = bias + sum_{k < ntaps} wt[k] * src[off[k] + j] for j in [0, round_up(n, DW_V)):
 * blocks of DW_BW columns kept in registers while the taps stream, then DW_V columns. */
CCONV_BODY void S(dw_corr)(const T *CCONV_RESTRICT src, const Py_ssize_t *CCONV_RESTRICT off,
                           const T *CCONV_RESTRICT wt, Py_ssize_t ntaps, T bias,
                           T *CCONV_RESTRICT out, Py_ssize_t n)
{
    Py_ssize_t j = 0;
    for (; j + DW_BW <= n; j += DW_BW)
        S(dw_corr_block)(8, src + j, off, wt, ntaps, bias, out + j);
    for (; j < n; j += DW_V)
        S(dw_corr_block)(1, src + j, off, wt, ntaps, bias, out + j);
}

/* Per-thread workspace (elements) of each pass; slack covers the last block's reads. */
CCONV_MAYBE_UNUSED
static Py_ssize_t S(dw_ws_forward)(const cconv_geom *g)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    return S(padded_size)(g, (int)DW_V) + g->out_h * wph + 2 * DW_BW;
}

/* grad_input: grad_output on the grid behind a margin of Z zeros, per output channel. */
static void S(dw_gi_dims)(const cconv_geom *g, Py_ssize_t *wph, Py_ssize_t *hph,
                          Py_ssize_t *Z, Py_ssize_t *bsz)
{
    S(phase_dims)(g, hph, wph);
    *Z = (g->dilation_h * (g->kernel_h - 1) / g->stride_h) * *wph
        + g->dilation_w * (g->kernel_w - 1) / g->stride_w;
    *bsz = *Z + *hph * *wph + 2 * DW_BW;
}

CCONV_MAYBE_UNUSED
static Py_ssize_t S(dw_ws_grad_input)(const cconv_geom *g, Py_ssize_t m)
{
    Py_ssize_t hph, wph, Z, bsz;
    S(dw_gi_dims)(g, &wph, &hph, &Z, &bsz);
    return m * bsz + hph * wph + 2 * DW_BW + m * g->kernel_h * g->kernel_w;
}

/* The grad_input tap table: tab[0 .. sh*sw] are where each phase's entries start; then per
 * entry (grouped by phase) its offset into the grad_output copies and its weight index
 * o * kh * kw + k.  tab holds sh*sw + 1 + 2 * m*kh*kw values. */
CCONV_MAYBE_UNUSED
static Py_ssize_t S(dw_gi_table_size)(const cconv_geom *g, Py_ssize_t m)
{
    return g->stride_h * g->stride_w + 1 + 2 * m * g->kernel_h * g->kernel_w;
}

CCONV_MAYBE_UNUSED
static void S(dw_gi_table)(const cconv_geom *g, Py_ssize_t m, Py_ssize_t *tab)
{
    Py_ssize_t hph, wph, Z, bsz, e = 0;
    const Py_ssize_t sh = g->stride_h, sw = g->stride_w, khw = g->kernel_h * g->kernel_w;
    const Py_ssize_t nph = sh * sw, E = m * khw;
    S(dw_gi_dims)(g, &wph, &hph, &Z, &bsz);
    for (Py_ssize_t ph = 0; ph < nph; ph++) {
        tab[ph] = e;
        for (Py_ssize_t o = 0; o < m; o++)
            for (Py_ssize_t p = 0; p < g->kernel_h; p++)
                for (Py_ssize_t q = 0; q < g->kernel_w; q++) {
                    const Py_ssize_t dy = p * g->dilation_h, dx = q * g->dilation_w;
                    if ((dy % sh) * sw + dx % sw != ph) continue;
                    tab[nph + 1 + e] = o * bsz + Z - ((dy / sh) * wph + dx / sw);
                    tab[nph + 1 + E + e] = o * khw + p * g->kernel_w + q;
                    e++;
                }
    }
    tab[nph] = e;
}

/* grad_weight: grad_output on the grid (zero garbage columns), per output channel; the
 * grid's lane mask; per-lane partial sums of every tap. */
static Py_ssize_t S(dw_gw_grid)(const cconv_geom *g)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    return (g->out_h * wph + DW_L - 1) / DW_L * DW_L;
}

CCONV_MAYBE_UNUSED
static Py_ssize_t S(dw_ws_grad_weight)(const cconv_geom *g, Py_ssize_t m)
{
    return S(padded_size)(g, (int)DW_L) + (m + 1) * S(dw_gw_grid)(g)
        + m * g->kernel_h * g->kernel_w * DW_L;
}

/* ---- forward ---------------------------------------------------------------------------
 * Planes [t0, t1) of y (batch, groups*m, out_h, out_w); plane t = n * groups + group holds
 * the m output channels of that image and group.  off: tap_offsets of g. */
CCONV_BODY void CCONV_CAT(S(dw_forward), _body)(const T *x, const T *w, const T *bias, T *y,
                                                const cconv_geom *g, Py_ssize_t groups,
                                                Py_ssize_t m, const Py_ssize_t *off,
                                                Py_ssize_t t0, Py_ssize_t t1, T *ws)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    const Py_ssize_t khw = g->kernel_h * g->kernel_w, Wo = g->out_w, P = g->out_h * Wo;
    const Py_ssize_t n = g->out_h * wph;
    T *xp = ws, *grid = ws + S(padded_size)(g, (int)DW_V);
    for (Py_ssize_t t = t0; t < t1; t++) {
        S(pad_phases)(x + t * g->in_h * g->in_w, g, (int)DW_V, xp);
        for (Py_ssize_t o = 0; o < m; o++) {
            const Py_ssize_t oc = t % groups * m + o;
            S(dw_corr)(xp, off, w + oc * khw, khw, bias != NULL ? bias[oc] : (T)0, grid, n);
            T *yo = y + (t * m + o) * P;
            for (Py_ssize_t oh = 0; oh < g->out_h; oh++)
                memcpy(yo + oh * Wo, grid + oh * wph, Wo * sizeof(T));
        }
    }
}
CCONV_ISA_VARIANTS(S(dw_forward), (const T *x, const T *w, const T *bias, T *y, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, const Py_ssize_t *off, Py_ssize_t t0, Py_ssize_t t1, T *ws),
    (x, w, bias, y, g, groups, m, off, t0, t1, ws))

/* ---- input gradient --------------------------------------------------------------------
 * Planes [t0, t1) of gi (batch, groups, in_h, in_w) from gy (batch, groups*m, out_h, out_w);
 * tab: dw_gi_table of g. */
CCONV_BODY void CCONV_CAT(S(dw_grad_input), _body)(const T *gy, const T *w, T *gi,
                                                   const cconv_geom *g, Py_ssize_t groups,
                                                   Py_ssize_t m, const Py_ssize_t *tab,
                                                   Py_ssize_t t0, Py_ssize_t t1, T *ws)
{
    Py_ssize_t hph, wph, Z, bsz;
    S(dw_gi_dims)(g, &wph, &hph, &Z, &bsz);
    const Py_ssize_t sh = g->stride_h, sw = g->stride_w, nph = sh * sw;
    const Py_ssize_t H = g->in_h, W = g->in_w, Ho = g->out_h, Wo = g->out_w;
    const Py_ssize_t khw = g->kernel_h * g->kernel_w, E = tab[nph];
    const Py_ssize_t *offs = tab + nph + 1, *widx = tab + nph + 1 + m * khw;
    /* rows / columns of gi that no phase plane reaches get no gradient: zero them first */
    const int covered = H - 1 + g->pad_top < hph * sh && W - 1 + g->pad_left < wph * sw;
    T *gyp = ws, *tmp = ws + m * bsz, *wg = tmp + hph * wph + 2 * DW_BW;
    for (Py_ssize_t o = 0; o < m; o++) {     /* the margins stay zero from task to task */
        memset(gyp + o * bsz, 0, Z * sizeof(T));
        memset(gyp + o * bsz + Z + Ho * wph, 0, (bsz - Z - Ho * wph) * sizeof(T));
    }
    for (Py_ssize_t t = t0; t < t1; t++) {
        const Py_ssize_t gidx = t % groups;
        for (Py_ssize_t e = 0; e < E; e++) wg[e] = w[gidx * m * khw + widx[e]];
        for (Py_ssize_t o = 0; o < m; o++) {
            const T *src = gy + (t * m + o) * Ho * Wo;
            T *dst = gyp + o * bsz + Z;
            for (Py_ssize_t oh = 0; oh < Ho; oh++) {
                memcpy(dst + oh * wph, src + oh * Wo, Wo * sizeof(T));
                memset(dst + oh * wph + Wo, 0, (wph - Wo) * sizeof(T));
            }
        }
        T *gplane = gi + t * H * W;
        if (!covered) memset(gplane, 0, H * W * sizeof(T));
        for (Py_ssize_t ph = 0; ph < nph; ph++) {
            const Py_ssize_t a = ph / sw, b = ph % sw;
            S(dw_corr)(gyp, offs + tab[ph], wg + tab[ph], tab[ph + 1] - tab[ph], (T)0, tmp,
                       hph * wph);
            /* phase (a, b), position (r, s) is padded pixel (r*sh + a, s*sw + b) */
            const Py_ssize_t s0 = cconv_max(0, (g->pad_left - b + sw - 1) / sw);
            const Py_ssize_t last = W - 1 + g->pad_left - b;    /* may be < 0 */
            const Py_ssize_t s1 = last < 0 ? 0 : cconv_min(wph, last / sw + 1);
            for (Py_ssize_t r = 0; r < hph; r++) {
                const Py_ssize_t ih = r * sh + a - g->pad_top;
                if (ih < 0 || ih >= H || s1 <= s0) continue;
                T *row = gplane + ih * W + s0 * sw + b - g->pad_left;
                const T *src = tmp + r * wph;
                if (sw == 1) memcpy(row, src + s0, (s1 - s0) * sizeof(T));
                else for (Py_ssize_t s = s0; s < s1; s++) row[(s - s0) * sw] = src[s];
            }
        }
    }
}
CCONV_ISA_VARIANTS(S(dw_grad_input), (const T *gy, const T *w, T *gi, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, const Py_ssize_t *tab, Py_ssize_t t0, Py_ssize_t t1, T *ws),
    (gy, w, gi, g, groups, m, tab, t0, t1, ws))

/* ---- weight gradient -------------------------------------------------------------------
 * acc[i][l] += sum over grid blocks j of gyg[j+l] * xp[off[i] + j + l] (l < DW_L) for NT taps
 * at once (NT: a constant after inlining; one load of grad_output feeds NT products);
 * masked: a lane whose msk is 0 (a garbage column) adds nothing, whatever x holds there
 * (scalar: only planes with non-finite values take it). */
CCONV_BODY void S(dw_gw_taps)(const int NT, const int masked, const T *CCONV_RESTRICT gyg,
                              const T *CCONV_RESTRICT msk, const T *CCONV_RESTRICT xp,
                              const Py_ssize_t *off, Py_ssize_t G, T *CCONV_RESTRICT acc)
{
    if (masked) {
        for (int i = 0; i < NT; i++)
            for (Py_ssize_t j = 0; j < G; j++)
                if (msk[j] != 0) acc[i * DW_L + j % DW_L] += gyg[j] * xp[off[i] + j];
        return;
    }
#if defined(__GNUC__)
    S(dw_vec) a[4][2];
    for (int i = 0; i < NT; i++)
        for (int h = 0; h < 2; h++) a[i][h] = DW_LOAD(acc + i * DW_L + h * DW_VL);
    for (Py_ssize_t j = 0; j < G; j += DW_L) {
        const S(dw_vec) g0 = DW_LOAD(gyg + j), g1 = DW_LOAD(gyg + j + DW_VL);
        for (int i = 0; i < NT; i++) {
            const T *xs = xp + off[i] + j;
            a[i][0] += g0 * DW_LOAD(xs);
            a[i][1] += g1 * DW_LOAD(xs + DW_VL);
        }
    }
    for (int i = 0; i < NT; i++)
        for (int h = 0; h < 2; h++) DW_STORE(acc + i * DW_L + h * DW_VL, a[i][h]);
#else
    for (int i = 0; i < NT; i++)
        for (Py_ssize_t j = 0; j < G; j++)
            acc[i * DW_L + j % DW_L] += gyg[j] * xp[off[i] + j];
#endif
}

/* Channels (groups) [c0, c1) of gw (groups*m, 1, kh, kw), each summed over the whole batch
 * in image order.  off: tap_offsets of g. */
CCONV_BODY void CCONV_CAT(S(dw_grad_weight), _body)(const T *x, const T *gy, T *gw,
                                                    const cconv_geom *g, Py_ssize_t batch,
                                                    Py_ssize_t groups, Py_ssize_t m,
                                                    const Py_ssize_t *off, Py_ssize_t c0,
                                                    Py_ssize_t c1, T *ws)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    const Py_ssize_t khw = g->kernel_h * g->kernel_w, Ho = g->out_h, Wo = g->out_w;
    const Py_ssize_t HW = g->in_h * g->in_w, G = S(dw_gw_grid)(g);
    T *xp = ws, *gyg = xp + S(padded_size)(g, (int)DW_L), *msk = gyg + m * G;
    T *acc = msk + G;
    int have_mask = 0;                   /* built when a plane first needs it */
    memset(gyg, 0, m * G * sizeof(T));   /* garbage columns and the tail stay zero */
    for (Py_ssize_t c = c0; c < c1; c++) {
        memset(acc, 0, m * khw * DW_L * sizeof(T));
        for (Py_ssize_t n = 0; n < batch; n++) {
            const T *xs = x + (n * groups + c) * HW;
            const int finite = CCONV_CAT(S(all_finite), _body)(xs, HW);
            S(pad_phases)(xs, g, (int)DW_L, xp);
            for (Py_ssize_t o = 0; o < m; o++) {
                const T *src = gy + ((n * groups + c) * m + o) * Ho * Wo;
                T *dst = gyg + o * G;
                for (Py_ssize_t oh = 0; oh < Ho; oh++)
                    memcpy(dst + oh * wph, src + oh * Wo, Wo * sizeof(T));
                T *ao = acc + o * khw * DW_L;
                Py_ssize_t k = 0;
                if (finite) {
                    for (; k + 4 <= khw; k += 4)
                        S(dw_gw_taps)(4, 0, dst, msk, xp, off + k, G, ao + k * DW_L);
                    for (; k < khw; k++)
                        S(dw_gw_taps)(1, 0, dst, msk, xp, off + k, G, ao + k * DW_L);
                } else {
                    if (!have_mask) {
                        memset(msk, 0, G * sizeof(T));
                        for (Py_ssize_t oh = 0; oh < Ho; oh++)
                            for (Py_ssize_t ow = 0; ow < Wo; ow++) msk[oh * wph + ow] = 1;
                        have_mask = 1;
                    }
                    for (; k < khw; k++)
                        S(dw_gw_taps)(1, 1, dst, msk, xp, off + k, G, ao + k * DW_L);
                }
            }
        }
        for (Py_ssize_t o = 0; o < m; o++)
            for (Py_ssize_t k = 0; k < khw; k++) {
                const T *a = acc + (o * khw + k) * DW_L;
                T sum = a[0];
                for (Py_ssize_t l = 1; l < DW_L; l++) sum += a[l];
                gw[(c * m + o) * khw + k] = sum;
            }
    }
}
CCONV_ISA_VARIANTS(S(dw_grad_weight), (const T *x, const T *gy, T *gw, const cconv_geom *g, Py_ssize_t batch, Py_ssize_t groups, Py_ssize_t m, const Py_ssize_t *off, Py_ssize_t c0, Py_ssize_t c1, T *ws),
    (x, gy, gw, g, batch, groups, m, off, c0, c1, ws))


/* ---- small maps: channels in the vector lanes ------------------------------------------
 * On a 4x4 or 7x7 map a plane is a few dozen pixels: the per-plane copies and loops above
 * cost more than its arithmetic.  Here (m == 1) the DW_VL lanes of a vector hold DW_VL
 * neighbouring channels of one image: their planes are transposed into a zero-padded
 * (rows, cols, lanes) block, each tap is one vector of DW_VL weights (wt: the weights
 * transposed to (channel block, tap, lane) by dw_lanes_weights), and every output pixel is
 * a plain sum over its window with no garbage column.  The gradients only add products of
 * real (tap, output pixel) pairs, so they are exact whatever the operands hold.  GCC/Clang
 * only (vector extensions): dw_lanes_available() is 0 elsewhere. */

CCONV_MAYBE_UNUSED
static int S(dw_lanes_available)(void)
{
#if defined(__GNUC__)
    return 1;
#else
    return 0;
#endif
}

CCONV_MAYBE_UNUSED
static Py_ssize_t S(dw_lanes_width)(void) { return DW_V; }

/* The window extent: rows / columns of the padded block the outputs read. */
static void S(dw_lanes_dims)(const cconv_geom *g, Py_ssize_t *hp, Py_ssize_t *wp)
{
    *hp = (g->out_h - 1) * g->stride_h + g->dilation_h * (g->kernel_h - 1) + 1;
    *wp = (g->out_w - 1) * g->stride_w + g->dilation_w * (g->kernel_w - 1) + 1;
}

CCONV_MAYBE_UNUSED
static Py_ssize_t S(dw_lanes_ws)(const cconv_geom *g)
{
    Py_ssize_t hp, wp;
    S(dw_lanes_dims)(g, &hp, &wp);
    return (hp * wp + g->out_h * g->out_w + g->kernel_h * g->kernel_w) * DW_V;
}

/* wt[(c / DW_V) * khw * DW_V + k * DW_V + c % DW_V] = w[c * khw + k], zero past `channels`. */
CCONV_MAYBE_UNUSED
static void S(dw_lanes_weights)(const T *w, Py_ssize_t channels, Py_ssize_t khw, T *wt)
{
    const Py_ssize_t nblk = (channels + DW_V - 1) / DW_V;
    for (Py_ssize_t b = 0; b < nblk; b++)
        for (Py_ssize_t k = 0; k < khw; k++)
            for (Py_ssize_t l = 0; l < DW_V; l++)
                wt[(b * khw + k) * DW_V + l] = b * DW_V + l < channels ? w[(b * DW_V + l) * khw + k] : 0;
}

/* The first rows x cols of planes (nl of them, `plane` apart, rows `sld` long) ->
 * blk[(r0 + r) * ld + c0 + c][lane]; the rest of blk (hp x ld lane vectors) zero. */
static inline void S(dw_lanes_in)(const T *src, Py_ssize_t plane, Py_ssize_t sld, Py_ssize_t nl,
                                  Py_ssize_t rows, Py_ssize_t cols, T *blk, Py_ssize_t hp,
                                  Py_ssize_t ld, Py_ssize_t r0, Py_ssize_t c0)
{
    memset(blk, 0, hp * ld * DW_V * sizeof(T));
    for (Py_ssize_t l = 0; l < nl; l++)
        for (Py_ssize_t r = 0; r < rows; r++) {
            const T *row = src + l * plane + r * sld;
            T *d = blk + ((r0 + r) * ld + c0) * DW_V + l;
            for (Py_ssize_t c = 0; c < cols; c++) d[c * DW_V] = row[c];
        }
}

/* The inverse: blk[(r0 + r) * ld + c0 + c][lane] -> planes (zero where r0 + r >= hp or
 * c0 + c >= ld: pixels no window reaches). */
static inline void S(dw_lanes_out)(const T *blk, Py_ssize_t hp, Py_ssize_t ld, Py_ssize_t r0,
                                   Py_ssize_t c0, T *dst, Py_ssize_t plane, Py_ssize_t nl,
                                   Py_ssize_t rows, Py_ssize_t cols)
{
    for (Py_ssize_t l = 0; l < nl; l++)
        for (Py_ssize_t r = 0; r < rows; r++) {
            T *row = dst + l * plane + r * cols;
            if (r0 + r >= hp) {
                memset(row, 0, cols * sizeof(T));
                continue;
            }
            const T *s = blk + ((r0 + r) * ld + c0) * DW_V + l;
            for (Py_ssize_t c = 0; c < cols; c++) row[c] = c0 + c < ld ? s[c * DW_V] : 0;
        }
}

#if defined(__GNUC__)
/* Blocks [t0, t1) of y: block t = n * nblk + b is channels b*DW_V.. of image n. */
CCONV_BODY void CCONV_CAT(S(dw_lanes_forward), _body)(const T *x, const T *wt, const T *bias, T *y,
                                                      const cconv_geom *g, Py_ssize_t groups,
                                                      Py_ssize_t t0, Py_ssize_t t1, T *ws)
{
    Py_ssize_t hp, wp;
    S(dw_lanes_dims)(g, &hp, &wp);
    const Py_ssize_t H = g->in_h, W = g->in_w, Ho = g->out_h, Wo = g->out_w;
    const Py_ssize_t kh = g->kernel_h, kw = g->kernel_w, khw = kh * kw;
    const Py_ssize_t nblk = (groups + DW_V - 1) / DW_V;
    const Py_ssize_t rows = cconv_min(H, hp - g->pad_top), cols = cconv_min(W, wp - g->pad_left);
    T *xt = ws, *yt = ws + hp * wp * DW_V;
    for (Py_ssize_t t = t0; t < t1; t++) {
        const Py_ssize_t n = t / nblk, c0 = t % nblk * DW_V, nl = cconv_min(DW_V, groups - c0);
        const T *w = wt + t % nblk * khw * DW_V;
        S(dw_vec) b = DW_SPLAT(0);
        for (Py_ssize_t l = 0; l < nl && bias != NULL; l++) b[l] = bias[c0 + l];
        S(dw_lanes_in)(x + (n * groups + c0) * H * W, H * W, W, nl, rows, cols, xt, hp, wp,
                       g->pad_top, g->pad_left);
        for (Py_ssize_t oh = 0; oh < Ho; oh++)
            for (Py_ssize_t ow = 0; ow < Wo; ow++) {
                S(dw_vec) acc = b;
                for (Py_ssize_t p = 0; p < kh; p++) {
                    const T *row = xt + ((oh * g->stride_h + p * g->dilation_h) * wp
                                         + ow * g->stride_w) * DW_V;
                    const T *wr = w + p * kw * DW_V;
                    for (Py_ssize_t q = 0; q < kw; q++)
                        acc += DW_LOAD(wr + q * DW_V) * DW_LOAD(row + q * g->dilation_w * DW_V);
                }
                DW_STORE(yt + (oh * Wo + ow) * DW_V, acc);
            }
        S(dw_lanes_out)(yt, Ho, Wo, 0, 0, y + (n * groups + c0) * Ho * Wo, Ho * Wo, nl, Ho, Wo);
    }
}

/* Blocks [t0, t1) of gi (as above), from gy. */
CCONV_BODY void CCONV_CAT(S(dw_lanes_grad_input), _body)(const T *gy, const T *wt, T *gi,
                                                         const cconv_geom *g, Py_ssize_t groups,
                                                         Py_ssize_t t0, Py_ssize_t t1, T *ws)
{
    Py_ssize_t hp, wp;
    S(dw_lanes_dims)(g, &hp, &wp);
    const Py_ssize_t H = g->in_h, W = g->in_w, Ho = g->out_h, Wo = g->out_w;
    const Py_ssize_t kh = g->kernel_h, kw = g->kernel_w, khw = kh * kw;
    const Py_ssize_t nblk = (groups + DW_V - 1) / DW_V;
    T *gxt = ws, *gyt = ws + hp * wp * DW_V;
    for (Py_ssize_t t = t0; t < t1; t++) {
        const Py_ssize_t n = t / nblk, c0 = t % nblk * DW_V, nl = cconv_min(DW_V, groups - c0);
        const T *w = wt + t % nblk * khw * DW_V;
        S(dw_lanes_in)(gy + (n * groups + c0) * Ho * Wo, Ho * Wo, Wo, nl, Ho, Wo, gyt, Ho, Wo, 0, 0);
        memset(gxt, 0, hp * wp * DW_V * sizeof(T));
        for (Py_ssize_t oh = 0; oh < Ho; oh++)
            for (Py_ssize_t ow = 0; ow < Wo; ow++) {
                const S(dw_vec) gv = DW_LOAD(gyt + (oh * Wo + ow) * DW_V);
                for (Py_ssize_t p = 0; p < kh; p++) {
                    T *row = gxt + ((oh * g->stride_h + p * g->dilation_h) * wp
                                    + ow * g->stride_w) * DW_V;
                    const T *wr = w + p * kw * DW_V;
                    for (Py_ssize_t q = 0; q < kw; q++) {
                        T *d = row + q * g->dilation_w * DW_V;
                        DW_STORE(d, DW_LOAD(d) + DW_LOAD(wr + q * DW_V) * gv);
                    }
                }
            }
        S(dw_lanes_out)(gxt, hp, wp, g->pad_top, g->pad_left, gi + (n * groups + c0) * H * W,
                        H * W, nl, H, W);
    }
}

/* Channel blocks [b0, b1) of gw, each summed over the whole batch in image order. */
CCONV_BODY void CCONV_CAT(S(dw_lanes_grad_weight), _body)(const T *x, const T *gy, T *gw,
                                                          const cconv_geom *g, Py_ssize_t batch,
                                                          Py_ssize_t groups, Py_ssize_t b0,
                                                          Py_ssize_t b1, T *ws)
{
    Py_ssize_t hp, wp;
    S(dw_lanes_dims)(g, &hp, &wp);
    const Py_ssize_t H = g->in_h, W = g->in_w, Ho = g->out_h, Wo = g->out_w;
    const Py_ssize_t kh = g->kernel_h, kw = g->kernel_w, khw = kh * kw;
    const Py_ssize_t rows = cconv_min(H, hp - g->pad_top), cols = cconv_min(W, wp - g->pad_left);
    T *xt = ws, *gyt = ws + hp * wp * DW_V, *acc = gyt + Ho * Wo * DW_V;
    for (Py_ssize_t b = b0; b < b1; b++) {
        const Py_ssize_t c0 = b * DW_V, nl = cconv_min(DW_V, groups - c0);
        memset(acc, 0, khw * DW_V * sizeof(T));
        for (Py_ssize_t n = 0; n < batch; n++) {
            S(dw_lanes_in)(x + (n * groups + c0) * H * W, H * W, W, nl, rows, cols, xt, hp, wp,
                           g->pad_top, g->pad_left);
            S(dw_lanes_in)(gy + (n * groups + c0) * Ho * Wo, Ho * Wo, Wo, nl, Ho, Wo, gyt, Ho, Wo, 0, 0);
            for (Py_ssize_t p = 0; p < kh; p++)
                for (Py_ssize_t q = 0; q < kw; q++) {
                    S(dw_vec) a = DW_LOAD(acc + (p * kw + q) * DW_V);
                    for (Py_ssize_t oh = 0; oh < Ho; oh++) {
                        const T *row = xt + ((oh * g->stride_h + p * g->dilation_h) * wp
                                             + q * g->dilation_w) * DW_V;
                        const T *gr = gyt + oh * Wo * DW_V;
                        for (Py_ssize_t ow = 0; ow < Wo; ow++)
                            a += DW_LOAD(gr + ow * DW_V) * DW_LOAD(row + ow * g->stride_w * DW_V);
                    }
                    DW_STORE(acc + (p * kw + q) * DW_V, a);
                }
        }
        for (Py_ssize_t l = 0; l < nl; l++)
            for (Py_ssize_t k = 0; k < khw; k++) gw[(c0 + l) * khw + k] = acc[k * DW_V + l];
    }
}
#else
CCONV_BODY void CCONV_CAT(S(dw_lanes_forward), _body)(const T *x, const T *wt, const T *bias, T *y,
                                                      const cconv_geom *g, Py_ssize_t groups,
                                                      Py_ssize_t t0, Py_ssize_t t1, T *ws)
{
    (void)x; (void)wt; (void)bias; (void)y; (void)g; (void)groups; (void)t0; (void)t1; (void)ws;
}
CCONV_BODY void CCONV_CAT(S(dw_lanes_grad_input), _body)(const T *gy, const T *wt, T *gi,
                                                         const cconv_geom *g, Py_ssize_t groups,
                                                         Py_ssize_t t0, Py_ssize_t t1, T *ws)
{
    (void)gy; (void)wt; (void)gi; (void)g; (void)groups; (void)t0; (void)t1; (void)ws;
}
CCONV_BODY void CCONV_CAT(S(dw_lanes_grad_weight), _body)(const T *x, const T *gy, T *gw,
                                                          const cconv_geom *g, Py_ssize_t batch,
                                                          Py_ssize_t groups, Py_ssize_t b0,
                                                          Py_ssize_t b1, T *ws)
{
    (void)x; (void)gy; (void)gw; (void)g; (void)batch; (void)groups; (void)b0; (void)b1; (void)ws;
}
#endif
CCONV_ISA_VARIANTS(S(dw_lanes_forward), (const T *x, const T *wt, const T *bias, T *y, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t t0, Py_ssize_t t1, T *ws),
    (x, wt, bias, y, g, groups, t0, t1, ws))
CCONV_ISA_VARIANTS(S(dw_lanes_grad_input), (const T *gy, const T *wt, T *gi, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t t0, Py_ssize_t t1, T *ws),
    (gy, wt, gi, g, groups, t0, t1, ws))
CCONV_ISA_VARIANTS(S(dw_lanes_grad_weight), (const T *x, const T *gy, T *gw, const cconv_geom *g, Py_ssize_t batch, Py_ssize_t groups, Py_ssize_t b0, Py_ssize_t b1, T *ws),
    (x, gy, gw, g, batch, groups, b0, b1, ws))

#undef DW_BW
#undef DW_V
#undef DW_L
#undef DW_VL
#undef DW_LOAD
#undef DW_STORE
#undef DW_SPLAT
