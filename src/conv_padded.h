/* Implicit-GEMM driver on a zero-padded, polyphase copy of one image slice.
 * Type-generic: included by conv_impl.h once per float type (T, TI, S(name)); no
 * include guard on purpose. */

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

/* The sw column phases of one input row: row d + b*dstep gets row[b - pad + t*sw] for
 * t < wph (0 outside [0, W)).  Stride 2 splits the row in one pass that reads each input
 * value once (an even/odd split) instead of a strided gather per
 * phase, which cost a third of a stride-2 volume forward.  Always inlined (as is
 * pad_vol_phases): each ISA variant of conv_fwd_vol gets its own copy for its target. */
CCONV_BODY void S(split_row)(T *CCONV_RESTRICT d, Py_ssize_t dstep,
                             const T *CCONV_RESTRICT row, Py_ssize_t pad, Py_ssize_t wph,
                             Py_ssize_t sw, Py_ssize_t W)
{
    if (sw != 2) {
        for (Py_ssize_t b = 0; b < sw; b++)
            S(copy_segment)(d + b * dstep, row, b - pad, wph, sw, W);
        return;
    }
    T *CCONV_RESTRICT d0 = d;
    T *CCONV_RESTRICT d1 = d + dstep;
    /* [lo, hi): the t whose columns 2t - pad and 2t + 1 - pad both lie in [0, W) */
    Py_ssize_t lo = pad > 0 ? (pad + 1) / 2 : 0;
    Py_ssize_t hi = W - 2 + pad >= 0 ? (W - 2 + pad) / 2 + 1 : 0;
    lo = cconv_min(lo, wph);
    hi = cconv_max(lo, cconv_min(hi, wph));
    for (Py_ssize_t t = 0; t < lo; t++) {
        const Py_ssize_t c0 = 2 * t - pad;
        d0[t] = c0 >= 0 && c0 < W ? row[c0] : (T)0;
        d1[t] = c0 + 1 >= 0 && c0 + 1 < W ? row[c0 + 1] : (T)0;
    }
    if (hi > lo) {
        const T *CCONV_RESTRICT src = row + 2 * lo - pad;
        Py_ssize_t t = 0;
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
        /* four outputs per phase at a time: two unaligned 4-vectors split by two shuffles
         * (gcc 12 leaves the scalar loop below unvectorised, even for AVX2) */
        typedef T v4 __attribute__((vector_size(4 * sizeof(T))));
        for (; t + 4 <= hi - lo; t += 4) {
            v4 a, b, e, o;
            memcpy(&a, src + 2 * t, sizeof a);
            memcpy(&b, src + 2 * t + 4, sizeof b);
            e = __builtin_shufflevector(a, b, 0, 2, 4, 6);
            o = __builtin_shufflevector(a, b, 1, 3, 5, 7);
            memcpy(d0 + lo + t, &e, sizeof e);
            memcpy(d1 + lo + t, &o, sizeof o);
        }
#endif
        for (; t < hi - lo; t++) {
            d0[lo + t] = src[2 * t];
            d1[lo + t] = src[2 * t + 1];
        }
    }
    for (Py_ssize_t t = hi; t < wph; t++) {
        const Py_ssize_t c0 = 2 * t - pad;
        d0[t] = c0 >= 0 && c0 < W ? row[c0] : (T)0;
        d1[t] = c0 + 1 >= 0 && c0 + 1 < W ? row[c0 + 1] : (T)0;
    }
}

/* Fill xp (padded_size elements) from the (channels, in_h, in_w) slice x: input row by
 * input row, each row split into its sw column phases at once (split_row: stride 2 reads
 * each value once instead of a strided copy per phase; the dot weight gradient, depthwise
 * and lanes passes of stride-2 layers make this copy for every image). */
static void S(pad_phases)(const T *CCONV_RESTRICT x, const cconv_geom *g, int nr,
                          T *CCONV_RESTRICT xp)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    const Py_ssize_t sh = g->stride_h, sw = g->stride_w, H = g->in_h, W = g->in_w;
    const Py_ssize_t plane_size = hph * wph;
    for (Py_ssize_t c = 0; c < g->channels; c++) {
        const T *plane = x + c * H * W;
        for (Py_ssize_t a = 0; a < sh; a++) {
            T *d = xp + (c * sh + a) * sw * plane_size;
            for (Py_ssize_t r = 0; r < hph; r++, d += wph) {
                const Py_ssize_t ih = r * sh + a - g->pad_top;
                if (ih < 0 || ih >= H) {
                    for (Py_ssize_t b = 0; b < sw; b++)
                        for (Py_ssize_t t = 0; t < wph; t++) d[b * plane_size + t] = 0;
                } else {
                    S(split_row)(d, plane_size, plane + ih * W, g->pad_left, wph, sw, W);
                }
            }
        }
    }
    T *tail = xp + g->channels * sh * sw * plane_size;
    for (Py_ssize_t t = 0; t < wph + 2 * nr; t++) tail[t] = 0;
}

/* Columns of the flat grid handled per block; the C block is m x (CCONV_NB_PANELS*nr). */
#define CCONV_NB_PANELS 4

/* Forward of grid columns [j_lo, j_hi) of one image-group slice, whose padded copy xp
 * (pad_phases) is ready: those output pixels of y(m x P) = W * x (+ bias), by implicit GEMM.
 * apack: the group's weights packed by pack_a over the full K; off: tap_offsets;
 * ctmp: ceil(m/mr)*mr * CCONV_NB_PANELS*nr elements.  Splitting a slice's grid between
 * tasks gives the same bits as one task: each column is computed alone. */
CCONV_BODY void CCONV_CAT(S(conv_fwd_grid), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const cconv_geom *g,
                              Py_ssize_t m, const T *apack, const Py_ssize_t *off,
                              const T *bias, T *y, const T *xp, T *ctmp, Py_ssize_t j_lo,
                              Py_ssize_t j_hi)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t Wo = g->out_w, P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    const Py_ssize_t NB = CCONV_NB_PANELS * nr;
    /* Row blocks of about blk->mc rows: the A block they cycle through (mc x kc) stays
     * in L2 while the block's B columns are reread from L1 (m = 512: 512 KiB per kc). */
    const Py_ssize_t mc = cconv_max(mr, blk->mc / mr * mr);
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    for (Py_ssize_t j0 = j_lo; j0 < j_hi; j0 += NB) {
        const Py_ssize_t nb = cconv_min(NB, j_hi - j0);
        for (Py_ssize_t pc = 0; pc < K; pc += blk->kc) {
            const Py_ssize_t kc = cconv_min(blk->kc, K - pc);
            for (Py_ssize_t ic = 0; ic < m; ic += mc) {
                const Py_ssize_t iend = cconv_min(m, ic + mc);
                for (Py_ssize_t jr = 0; jr < nb; jr += nr)
                    for (Py_ssize_t ir = ic; ir < iend; ir += mr)
                        kern->fn_ind(kc, apack + (ir / mr) * K * mr + pc * mr, xp + j0 + jr,
                                     off + pc, ctmp + ir * NB + jr, NB,
                                     (int)cconv_min(mr, m - ir), (int)cconv_min(nr, nb - jr),
                                     pc > 0, bias != NULL ? bias + ir : NULL);
            }
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
CCONV_ISA_VARIANTS(S(conv_fwd_grid), (const S(kernel_t) *kern, const cconv_blocking *blk, const cconv_geom *g, Py_ssize_t m, const T *apack, const Py_ssize_t *off, const T *bias, T *y, const T *xp, T *ctmp, Py_ssize_t j_lo, Py_ssize_t j_hi),
    (kern, blk, g, m, apack, off, bias, y, xp, ctmp, j_lo, j_hi))

/* Grid columns of slice geometry g (out_h rows of wph). */
CCONV_MAYBE_UNUSED
static Py_ssize_t S(grid_cols)(const cconv_geom *g)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    return g->out_h * wph;
}

/* Forward of one image-group slice: pad_phases into xp (padded_size elements), then
 * conv_fwd_grid over the whole grid. */
static void S(conv_fwd_slice)(const S(kernel_t) *kern, const cconv_blocking *blk,
                              const T *x, const cconv_geom *g,
                              Py_ssize_t m, const T *apack, const Py_ssize_t *off,
                              const T *bias, T *y, T *xp, T *ctmp)
{
    S(pad_phases)(x, g, kern->nr, xp);
    S(conv_fwd_grid)(kern, blk, g, m, apack, off, bias, y, xp, ctmp, 0, S(grid_cols)(g));
}

/* ---- the same on a volume: depth taps are grid offsets too ------------------------
 * A 3-d slice x (channels, in_d, in_h, in_w) is split into sd*sh*sw phase volumes, each
 * dph x hph x wph, for a chunk of nd output depths from od0:
 * xp[c][e][a][b][r][u][v] = x[c][od0*sd - pad_front + r*sd + e][u*sh + a - pad_top][v*sw + b - pad_left].
 * Output (od0 + r, oh, ow) under tap (t, p, q) reads phase ((t*dd) % sd, (p*dh) % sh,
 * (q*dw) % sw) at (r + t*dd/sd, oh + p*dh/sh, ow + q*dw/sw): on the flat grid
 * j = (r*hph + oh)*wph + ow every tap is again a constant offset.  Rows oh >= out_h and
 * columns ow >= out_w of each depth plane are computed and dropped. */

/* Phase depth of a chunk of nd output depths. */
static Py_ssize_t S(vol_phase_depth)(const cconv_depth *d, Py_ssize_t nd)
{
    const Py_ssize_t req = (nd - 1) * d->stride_d + d->dilation_d * (d->kernel_d - 1) + 1;
    return (req + d->stride_d - 1) / d->stride_d;
}

/* Elements of the padded copy of one chunk of nd output depths, with padded_size's slack. */
static Py_ssize_t S(padded_vol_size)(const cconv_geom *g, const cconv_depth *d, Py_ssize_t nd,
                                     int nr)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    return (g->channels * d->stride_d * g->stride_h * g->stride_w * S(vol_phase_depth)(d, nd)
            * hph * wph + wph + 2 * nr);
}

/* off[k] for every kernel tap k = ((c*kd + t)*kh + p)*kw + q, for chunks of nd depths. */
CCONV_MAYBE_UNUSED
static void S(vol_tap_offsets)(const cconv_geom *g, const cconv_depth *d, Py_ssize_t nd,
                               Py_ssize_t *off)
{
    Py_ssize_t hph, wph, k = 0;
    S(phase_dims)(g, &hph, &wph);
    const Py_ssize_t sd = d->stride_d, sh = g->stride_h, sw = g->stride_w;
    const Py_ssize_t plane = hph * wph, vol = S(vol_phase_depth)(d, nd) * plane;
    for (Py_ssize_t c = 0; c < g->channels; c++)
        for (Py_ssize_t t = 0; t < d->kernel_d; t++)
            for (Py_ssize_t p = 0; p < g->kernel_h; p++)
                for (Py_ssize_t q = 0; q < g->kernel_w; q++) {
                    const Py_ssize_t dz = t * d->dilation_d, dy = p * g->dilation_h;
                    const Py_ssize_t dx = q * g->dilation_w;
                    off[k++] = (((c * sd + dz % sd) * sh + dy % sh) * sw + dx % sw) * vol
                               + (dz / sd) * plane + (dy / sh) * wph + dx / sw;
                }
}

/* Fill xp (padded_vol_size elements) for output depths [od0, od0 + nd) of slice x: row by
 * input row, each row split into its sw column phases at once (split_row). */
CCONV_BODY void S(pad_vol_phases)(const T *CCONV_RESTRICT x, const cconv_geom *g,
                                  const cconv_depth *d, Py_ssize_t od0, Py_ssize_t nd, int nr,
                                  T *CCONV_RESTRICT xp)
{
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    const Py_ssize_t dph = S(vol_phase_depth)(d, nd), sd = d->stride_d;
    const Py_ssize_t sh = g->stride_h, sw = g->stride_w, H = g->in_h, W = g->in_w;
    const Py_ssize_t id0 = od0 * sd - d->pad_front, pv = dph * hph * wph;
    for (Py_ssize_t c = 0; c < g->channels; c++)
        for (Py_ssize_t e = 0; e < sd; e++)
            for (Py_ssize_t a = 0; a < sh; a++)
                for (Py_ssize_t r = 0; r < dph; r++) {
                    const Py_ssize_t id = id0 + r * sd + e;
                    const int live = id >= 0 && id < d->in_d;
                    const T *plane = x + (c * d->in_d + (live ? id : 0)) * H * W;
                    T *o = xp + ((c * sd + e) * sh + a) * sw * pv + r * hph * wph;
                    for (Py_ssize_t u = 0; u < hph; u++, o += wph) {
                        const Py_ssize_t ih = u * sh + a - g->pad_top;
                        if (!live || ih < 0 || ih >= H) {
                            for (Py_ssize_t b = 0; b < sw; b++)
                                for (Py_ssize_t t = 0; t < wph; t++) o[b * pv + t] = 0;
                        } else {
                            S(split_row)(o, pv, plane + ih * W, g->pad_left, wph, sw, W);
                        }
                    }
                }
    T *tail = xp + g->channels * sd * sh * sw * pv;
    for (Py_ssize_t t = 0; t < wph + 2 * nr; t++) tail[t] = 0;
}

/* Forward of output depths [od0, od0 + nout) of one volume-group slice: y (m x out_d x
 * out_h x out_w, the slice's full output) = W * x (+ bias) by implicit GEMM, on the copy
 * laid out for chunks of nd >= nout depths (every chunk shares the offsets).  apack, off
 * (vol_tap_offsets for nd), xp (padded_vol_size for nd) and ctmp as in conv_fwd_slice;
 * rows_in_place: the plan's vol_rows (plan_volume's rule). */
CCONV_BODY void CCONV_CAT(S(conv_fwd_vol), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, int rows_in_place,
                              const T *x, const cconv_geom *g,
                              const cconv_depth *d, Py_ssize_t od0, Py_ssize_t nout,
                              Py_ssize_t nd, Py_ssize_t m, const T *apack, const Py_ssize_t *off,
                              const T *bias, T *y, T *xp, T *ctmp)
{
    const Py_ssize_t K = g->channels * d->kernel_d * g->kernel_h * g->kernel_w;
    const Py_ssize_t Ho = g->out_h, Wo = g->out_w, HWo = Ho * Wo, P = d->out_d * HWo;
    const int mr = kern->mr, nr = kern->nr;
    const Py_ssize_t NB = CCONV_NB_PANELS * nr;
    Py_ssize_t hph, wph;
    S(phase_dims)(g, &hph, &wph);
    S(pad_vol_phases)(x, g, d, od0, nd, nr, xp);
    /* Output rows of whole panels: each panel written by the micro-kernel straight into y
     * (ctmp is not used: the plan books none). */
    if (rows_in_place) {
        const Py_ssize_t row_panels = Wo / nr, rows = nout * Ho;
        for (Py_ssize_t q0 = 0; q0 < rows * row_panels; q0 += CCONV_NB_PANELS) {
            const Py_ssize_t q1 = cconv_min(rows * row_panels, q0 + CCONV_NB_PANELS);
            for (Py_ssize_t pc = 0; pc < K; pc += blk->kc) {
                const Py_ssize_t kc = cconv_min(blk->kc, K - pc);
                for (Py_ssize_t q = q0; q < q1; q++) {
                    const Py_ssize_t rr = q / row_panels, ow = q % row_panels * nr;
                    const Py_ssize_t r = rr / Ho, oh = rr % Ho;
                    const T *b = xp + (r * hph + oh) * wph + ow;
                    T *yc = y + (od0 + r) * HWo + oh * Wo + ow;
                    for (Py_ssize_t ir = 0; ir < m; ir += mr)
                        kern->fn_ind(kc, apack + (ir / mr) * K * mr + pc * mr, b, off + pc,
                                     yc + ir * P, P, (int)cconv_min(mr, m - ir), nr, pc > 0,
                                     bias != NULL ? bias + ir : NULL);
                }
            }
        }
        return;
    }
    /* The grid's columns as one run over the chunk's planes, or each plane's first Ho rows
     * alone when that computes fewer nr-wide panels: the hph - Ho extra rows a plane
     * carries (kh - 1 at stride 1: 20% of an 8x8 output plane's grid) are then skipped. */
    const Py_ssize_t plane = hph * wph, live = Ho * wph, J = (nout - 1) * plane + live;
    const int per_plane = nout * ((live + nr - 1) / nr) < (J + nr - 1) / nr;
    const Py_ssize_t runs = per_plane ? nout : 1, run = per_plane ? live : J;
    for (Py_ssize_t q = 0; q < runs; q++) {
        for (Py_ssize_t j0 = q * plane; j0 < q * plane + run; j0 += NB) {
            const Py_ssize_t nb = cconv_min(NB, q * plane + run - j0);
            for (Py_ssize_t pc = 0; pc < K; pc += blk->kc) {
                const Py_ssize_t kc = cconv_min(blk->kc, K - pc);
                for (Py_ssize_t jr = 0; jr < nb; jr += nr)
                    for (Py_ssize_t ir = 0; ir < m; ir += mr)
                        kern->fn_ind(kc, apack + (ir / mr) * K * mr + pc * mr, xp + j0 + jr, off + pc,
                                     ctmp + ir * NB + jr, NB, (int)cconv_min(mr, m - ir),
                                     (int)cconv_min(nr, nb - jr), pc > 0,
                                     bias != NULL ? bias + ir : NULL);
            }
            /* Drop each plane's extra rows and columns while copying the block out. */
            Py_ssize_t j = j0;
            while (j < j0 + nb) {
                const Py_ssize_t r = j / plane, oh = j % plane / wph, ow = j % wph;
                const Py_ssize_t seg = cconv_min(wph - ow, j0 + nb - j);
                if (oh < Ho && ow < Wo) {
                    const Py_ssize_t len = cconv_min(seg, Wo - ow);
                    const T *src = ctmp + (j - j0);
                    T *dst = y + (od0 + r) * HWo + oh * Wo + ow;
                    for (Py_ssize_t i = 0; i < m; i++)
                        S(copy_row)(dst + i * P, src + i * NB, len);
                }
                j += seg;
            }
        }
    }
}
CCONV_ISA_VARIANTS(S(conv_fwd_vol), (const S(kernel_t) *kern, const cconv_blocking *blk, int rows_in_place, const T *x, const cconv_geom *g, const cconv_depth *d, Py_ssize_t od0, Py_ssize_t nout, Py_ssize_t nd, Py_ssize_t m, const T *apack, const Py_ssize_t *off, const T *bias, T *y, T *xp, T *ctmp),
    (kern, blk, rows_in_place, x, g, d, od0, nout, nd, m, apack, off, bias, y, xp, ctmp))
