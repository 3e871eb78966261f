/* 1x1 (pointwise: stride 1, no padding) forward GEMM that reads the input in place.
 * Type-generic: included by conv_impl.h once per float type (T, TI, S(name)); no
 * include guard on purpose.
 *
 * For a 1x1 kernel the im2col matrix of an image-group slice is the slice itself: row k
 * (input channel k) is x[k*P : (k+1)*P].  So a B panel of nr columns starting at pixel j
 * is the nr contiguous values x[k*P + j ...] for each k: the indirect micro-kernel
 * (kern->fn_ind, B row k at b + off[k]) reads them straight from x with off[k] = k*P,
 * and the C tile goes straight into y (ldc = P).  Nothing is packed but the weights (once
 * per call, by the caller) and, per K block, the image's last panel when it has fewer
 * than nr pixels (reading nr values there would run past the slice), and panels that several
 * strips reread (see below).  The packed path
 * (conv_fwd_span) copies every B element once and stages C; at few output channels those
 * copies cost about as much as the multiply-adds.  Also the stride-1 1x1 input gradient
 * (a forward of grad_output with W^T). */

/* Output rows [r0, r1) (r0 a multiple of kern->mr) x pixels [j0, j0 + nc) of one
 * image-group slice: y(m x P) (+)= W(m x K) x(K x P) (+ bias on the first K block).
 * apack: the group's weights packed by pack_a over the full K (strip stride K*mr); or
 * NULL: the weights are read in place too (kern->fn_str), W(i, k) = w[i*ars + k*acs]
 * (the forward: ars = K, acs = 1; the input gradient's W^T: ars = 1, acs = m).  On small
 * maps each weight meets only a few panels, and packing them (a read and a write, then the
 * packed copy read back) costs more memory traffic than the GEMM's own reads.
 * ws: blk->kc * nr elements (the short last panel). */
CCONV_BODY void CCONV_CAT(S(conv_fwd_pointwise), _body)(const S(kernel_t) *kern, const cconv_blocking *blk, const T *x,
                                  const cconv_geom *g, Py_ssize_t m, const T *apack,
                                  const T *w, Py_ssize_t ars, Py_ssize_t acs,
                                  const T *bias, T *y, Py_ssize_t r0, Py_ssize_t r1,
                                  Py_ssize_t j0, Py_ssize_t nc, T *ws)
{
    const Py_ssize_t K = g->channels, P = g->out_h * g->out_w;
    const int mr = kern->mr, nr = kern->nr;
    const Py_ssize_t kcb = cconv_min(blk->kc, CCONV_KC_MAX);
    const Py_ssize_t mc = cconv_max(mr, blk->mc / mr * mr);
    const Py_ssize_t jend = j0 + nc;
    Py_ssize_t off[CCONV_KC_MAX];
    for (Py_ssize_t kk = 0; kk < kcb; kk++) off[kk] = kk * P;
    for (Py_ssize_t pc = 0; pc < K; pc += kcb) {
        const Py_ssize_t kc = cconv_min(kcb, K - pc);
        const T *xk = x + pc * P;
        const T *ap = apack != NULL ? apack + pc * mr : NULL;
        const int acc = pc > 0;
        for (Py_ssize_t ic = r0; ic < r1; ic += mc) {
            const Py_ssize_t iend = cconv_min(r1, ic + mc);
            /* Panels that several strips reread are copied to ws first: in place, a panel's kc
             * rows are P elements apart, and at P a multiple of 1024 floats they all fall in
             * one L1 set (8 ways), so every strip would fetch them from L2 again (N1
             * C64->178 64x64: 38x fewer L1 misses, 1.8x faster).  The copy (two vector loads
             * and stores per row) is small next to the strips' 12 multiply-adds per row each. */
            const int copy = iend - ic > mr;
            for (Py_ssize_t jr = j0; jr < jend; jr += nr) {
                const int nn = (int)cconv_min(nr, jend - jr);
                /* The next panel's rows are kc separate streams, too many for the hardware
                 * prefetcher: fetch them while this panel is computed (first row block only;
                 * later ones find the block in L2). */
                if (ic == r0 && jr + 2 * nr <= jend)
                    for (Py_ssize_t kk = 0; kk < kc; kk++) {
                        __builtin_prefetch(xk + kk * P + jr + nr);
                        __builtin_prefetch(xk + kk * P + jr + 2 * nr - 1);
                    }
                const int packed = nn < nr || copy;
                if (packed)   /* the short last panel is zero-padded to nr columns */
                    for (Py_ssize_t kk = 0; kk < kc; kk++) {
                        T *d = ws + kk * nr;
                        memcpy(d, xk + kk * P + jr, (size_t)nn * sizeof(T));
                        for (int t = nn; t < nr; t++) d[t] = 0;
                    }
                for (Py_ssize_t ir = ic; ir < iend; ir += mr) {
                    const int mm = (int)cconv_min(mr, m - ir);
                    T *c = y + ir * P + jr;
                    const T *bi = bias != NULL ? bias + ir : NULL;
                    if (ap == NULL) {
                        const T *a = w + ir * ars + pc * acs;
                        if (packed)
                            kern->fn_str(kc, a, ars, acs, ws, nr, c, P, mm, nn, acc, bi);
                        else
                            kern->fn_str(kc, a, ars, acs, xk + jr, P, c, P, mm, nn, acc, bi);
                        continue;
                    }
                    const T *a = ap + (ir / mr) * K * mr;
                    if (packed)
                        kern->fn(kc, a, ws, c, P, mm, nn, acc, bi);
                    else
                        kern->fn_ind(kc, a, xk + jr, off, c, P, mm, nn, acc, bi);
                }
            }
        }
    }
}
CCONV_ISA_VARIANTS(S(conv_fwd_pointwise), (const S(kernel_t) *kern, const cconv_blocking *blk, const T *x, const cconv_geom *g, Py_ssize_t m, const T *apack, const T *w, Py_ssize_t ars, Py_ssize_t acs, const T *bias, T *y, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t j0, Py_ssize_t nc, T *ws),
    (kern, blk, x, g, m, apack, w, ars, acs, bias, y, r0, r1, j0, nc, ws))
