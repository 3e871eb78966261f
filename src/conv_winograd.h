/* Winograd F(2x2, 3x3) drivers: weight, input and output transforms, the forward
 * over tile rows and the weight gradient.
 * Type-generic: included by conv_impl.h once per float type (T, TI, S(name)); no
 * include guard on purpose. */

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
CCONV_BODY void CCONV_CAT(S(conv_wino_gw), _body)(const S(kernel_t) *kern, const cconv_blocking *blk,
                            const T *x, const T *gy,
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
                                  accumulate, NULL, blk->mc);
            }
        }
}
CCONV_ISA_VARIANTS(S(conv_wino_gw), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const T *gy, const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t nimg, Py_ssize_t nty, Py_ssize_t tpad, T *sacc, T *ws),
    (kern, blk, x, gy, g, groups, m, img0, img1, nimg, nty, tpad, sacc, ws))

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
