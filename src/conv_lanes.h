/* Forward convolution with the output channels in the vector lanes (float, AVX-512).
 *
 * The implicit GEMM of conv_impl.h puts output pixels in the vector lanes: a 32-column
 * panel of the padded grid.  When output rows are short (LeNet's 8 x 8 maps on a
 * 12-column grid), a third of every panel is grid columns that are computed and dropped.
 * Here the 16 lanes of a register hold 16 output channels of one pixel instead, and a
 * tile of 16 pixels (R rows x P columns, R*P = 16) keeps 16 accumulators.  Per kernel
 * tap: one load of 16 weights, then 16 FMAs whose input operand is broadcast straight
 * from the padded grid (every tap is a constant offset there, see tap_offsets), so there
 * is no im2col and no wasted column.  A 16 x 16 transpose turns the tile into 16
 * channel rows of 16 pixels for the NCHW store.
 *
 * Tiles at the right and bottom edges are moved back to end at the last column / row:
 * they recompute a few pixels (same taps in the same order, so the same values) instead
 * of needing masked variants.  Channel blocks of fewer than 16 run on zero weight lanes.
 *
 * Included by conv_kernels.h after the float instantiation of conv_impl.h (it uses the
 * padded-grid helpers phase_dims_f32, pad_phases_f32).  Elsewhere than x86 with GCC/Clang,
 * cconv_lanes_available() is 0 and the other entry points are never called. */
#ifndef CCONV_CONV_LANES_H
#define CCONV_CONV_LANES_H

/* Slack (elements) after a padded copy made for this kernel (pad_phases' nr argument). */
#define CCONV_LANES_SLACK 16

/* Whether the kernels run on AVX-512 (the ISA level of isa.h). */
static int cconv_lanes_available(void)
{
#if CCONV_X86_DISPATCH
    return cconv_isa_level == CCONV_ISA_AVX512F;
#else
    return 0;
#endif
}

/* Columns P of the pixel tile for slice geometry g (rows R = 16 / P): the one among
 * 16 x 1, 8 x 2 and 4 x 4 that recomputes the fewest pixels at the edges (the widest on
 * a tie); 0 when no 16-pixel tile fits in the output. */
static int cconv_lanes_cols(const cconv_geom *g)
{
    int best = 0;
    Py_ssize_t best_pixels = 0;
    for (int p = 16; p >= 4; p /= 2) {
        const int r = 16 / p;
        if (g->out_w < p || g->out_h < r) continue;
        const Py_ssize_t pixels = (g->out_w + p - 1) / p * p * ((g->out_h + r - 1) / r * r);
        if (best == 0 || pixels < best_pixels) {
            best = p;
            best_pixels = pixels;
        }
    }
    return best;
}

/* Elements of packed weights for m output channels of depth K: 16-channel blocks. */
static Py_ssize_t cconv_lanes_weights_size(Py_ssize_t m, Py_ssize_t K)
{
    return (m + 15) / 16 * 16 * K;
}

/* Pack w (m x K, rows contiguous) into blocks of 16 channels: channel o, tap k goes to
 * wt[(o/16)*K*16 + k*16 + o%16]; lanes past m are zero. */
static void cconv_lanes_pack_f32(const float *CCONV_RESTRICT w, Py_ssize_t m, Py_ssize_t K,
                                 float *CCONV_RESTRICT wt)
{
    for (Py_ssize_t o0 = 0; o0 < m; o0 += 16)
        for (Py_ssize_t k = 0; k < K; k++)
            for (Py_ssize_t l = 0; l < 16; l++)
                wt[o0 * K + k * 16 + l] = o0 + l < m ? w[(o0 + l) * K + k] : 0.0f;
}

#if CCONV_X86_DISPATCH
/* One tile: 16 channels (mb of them real) x R rows x P columns of output.  xg: the
 * tile's first pixel on the padded grid (row length wph); y: channel o0's plane at the
 * tile's first pixel (planes `plane` apart, rows Wo apart).  R and P are constants
 * after inlining, so acc[] lives in registers and the loops unroll. */
__attribute__((always_inline, target("avx512f")))
static inline void cconv_lanes_tile(const int R, const int P, Py_ssize_t K,
                                    const float *CCONV_RESTRICT wt, const Py_ssize_t *off,
                                    const float *xg, Py_ssize_t wph, __m512 bias,
                                    float *y, Py_ssize_t plane, Py_ssize_t Wo, int mb)
{
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = bias;
    for (Py_ssize_t k = 0; k < K; k++) {
        const __m512 wv = _mm512_loadu_ps(wt + k * 16);
        const float *xk = xg + off[k];
        for (int r = 0; r < R; r++)
            for (int p = 0; p < P; p++)
                acc[r * P + p] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xk[r * wph + p]),
                                                 acc[r * P + p]);
    }
    cconv_transpose16_f32(acc);   /* acc[j]: channel j, lanes r*P + p */
    for (int j = 0; j < mb; j++) {
        float *d = y + j * plane;
        if (P == 16) {
            _mm512_storeu_ps(d, acc[j]);
        } else if (P == 8) {
            _mm256_storeu_ps(d, _mm512_castps512_ps256(acc[j]));
            _mm256_storeu_ps(d + Wo, _mm256_castpd_ps(
                _mm512_extractf64x4_pd(_mm512_castps_pd(acc[j]), 1)));
        } else {
            _mm_storeu_ps(d, _mm512_castps512_ps128(acc[j]));
            _mm_storeu_ps(d + Wo, _mm512_extractf32x4_ps(acc[j], 1));
            _mm_storeu_ps(d + 2 * Wo, _mm512_extractf32x4_ps(acc[j], 2));
            _mm_storeu_ps(d + 3 * Wo, _mm512_extractf32x4_ps(acc[j], 3));
        }
    }
}

/* Forward of one image-group slice: y (m, out_h, out_w) = conv(x, w) (+ bias).
 * wt: cconv_lanes_pack_f32 of the group's weights; off: tap_offsets; xp: scratch of
 * padded_size(g, CCONV_LANES_SLACK) elements.  Requires cconv_lanes_cols(g) > 0. */
__attribute__((target("avx512f")))
static void cconv_fwd_lanes_f32(const float *x, const cconv_geom *g, Py_ssize_t m,
                                const float *wt, const Py_ssize_t *off, const float *bias,
                                float *y, float *xp)
{
    const Py_ssize_t K = g->channels * g->kernel_h * g->kernel_w;
    const Py_ssize_t Ho = g->out_h, Wo = g->out_w, plane = Ho * Wo;
    const int P = cconv_lanes_cols(g), R = 16 / P;
    Py_ssize_t hph, wph;
    phase_dims_f32(g, &hph, &wph);
    pad_phases_f32(x, g, CCONV_LANES_SLACK, xp);
    for (Py_ssize_t o0 = 0; o0 < m; o0 += 16) {
        const int mb = (int)cconv_min(16, m - o0);
        const __m512 bv = bias != NULL
            ? _mm512_maskz_loadu_ps((__mmask16)((1u << mb) - 1u), bias + o0)
            : _mm512_setzero_ps();
        const float *wb = wt + o0 * K;
        for (Py_ssize_t oh0 = 0; oh0 < Ho; oh0 += R) {
            const Py_ssize_t oh = cconv_min(oh0, Ho - R);
            for (Py_ssize_t ow0 = 0; ow0 < Wo; ow0 += P) {
                const Py_ssize_t ow = cconv_min(ow0, Wo - P);
                const float *xg = xp + oh * wph + ow;
                float *yt = y + o0 * plane + oh * Wo + ow;
                if (P == 16)
                    cconv_lanes_tile(1, 16, K, wb, off, xg, wph, bv, yt, plane, Wo, mb);
                else if (P == 8)
                    cconv_lanes_tile(2, 8, K, wb, off, xg, wph, bv, yt, plane, Wo, mb);
                else
                    cconv_lanes_tile(4, 4, K, wb, off, xg, wph, bv, yt, plane, Wo, mb);
            }
        }
    }
}
#else
static void cconv_fwd_lanes_f32(const float *x, const cconv_geom *g, Py_ssize_t m,
                                const float *wt, const Py_ssize_t *off, const float *bias,
                                float *y, float *xp)
{
    (void)x; (void)g; (void)m; (void)wt; (void)off; (void)bias; (void)y; (void)xp;
}
#endif

#endif /* CCONV_CONV_LANES_H */
