# Direct loops over kernel taps: few channels per group, depthwise layers, tiny calls.
# No packing and no workspace; each output plane is summed by one thread in a fixed order.
# Included by _conv.pyx.

cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Floor division for b > 0 (C division truncates toward zero)."""
    if a >= 0:
        return a // b
    return -((-a + b - 1) // b)


cdef inline void _valid_cols(Py_ssize_t col_off, Py_ssize_t stride, Py_ssize_t size,
                             Py_ssize_t out_size, Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): the output columns o with 0 <= o*stride + col_off < size."""
    lo[0] = max(<Py_ssize_t>0, -_floor_div(col_off, stride))
    hi[0] = min(out_size, _floor_div(size - 1 - col_off, stride) + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef inline floating _dot(const floating *a, const floating *b, Py_ssize_t n,
                          Py_ssize_t stride) noexcept nogil:
    """sum a[i] * b[i*stride] with four independent partial sums (a fixed order)."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i = 0
    if stride == 1:
        while i + 4 <= n:
            s0 += a[i] * b[i]
            s1 += a[i + 1] * b[i + 1]
            s2 += a[i + 2] * b[i + 2]
            s3 += a[i + 3] * b[i + 3]
            i += 4
    while i < n:
        s0 += a[i] * b[i * stride]
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef void _direct_plane(const floating *x, const floating *w, floating bias, floating *y,
                        const cconv_geom *s) noexcept nogil:
    """One output plane y (out_h x out_w) = bias + sum over the slice's channels and taps of
    w[c, p, q] * x[c] shifted: x is a (channels, in_h, in_w) slice, w (channels, kh, kw)."""
    cdef Py_ssize_t H = s.in_h, W = s.in_w, Ho = s.out_h, Wo = s.out_w
    cdef Py_ssize_t sh = s.stride_h, sw = s.stride_w
    cdef Py_ssize_t c, p, q, i, oh, ow, row_off, col_off, oh_lo, oh_hi, lo, hi
    cdef floating wv
    cdef const floating *xrow
    cdef floating *yrow
    for i in range(Ho * Wo):
        y[i] = bias
    for c in range(s.channels):
        for p in range(s.kernel_h):
            row_off = p * s.dilation_h - s.pad_top
            _valid_cols(row_off, sh, H, Ho, &oh_lo, &oh_hi)
            for q in range(s.kernel_w):
                wv = w[(c * s.kernel_h + p) * s.kernel_w + q]
                col_off = q * s.dilation_w - s.pad_left
                _valid_cols(col_off, sw, W, Wo, &lo, &hi)
                for oh in range(oh_lo, oh_hi):
                    xrow = x + (c * H + oh * sh + row_off) * W
                    yrow = y + oh * Wo
                    if sw == 1:
                        for ow in range(lo, hi):
                            yrow[ow] += wv * xrow[ow + col_off]
                    else:
                        for ow in range(lo, hi):
                            yrow[ow] += wv * xrow[ow * sw + col_off]


cdef void _direct_gi_plane(const floating *gy, const floating *w, floating *gi,
                           const cconv_geom *s, Py_ssize_t m, Py_ssize_t cl) noexcept nogil:
    """Input plane cl of one group's grad_input (in_h x in_w) from the group's grad_output
    gy (m, out_h, out_w) and weights w (m, channels, kh, kw), by scattering each tap."""
    cdef Py_ssize_t H = s.in_h, W = s.in_w, Ho = s.out_h, Wo = s.out_w
    cdef Py_ssize_t sh = s.stride_h, sw = s.stride_w
    cdef Py_ssize_t o, p, q, i, oh, ow, row_off, col_off, oh_lo, oh_hi, lo, hi
    cdef floating wv
    cdef floating *grow
    cdef const floating *gyrow
    for i in range(H * W):
        gi[i] = 0
    for o in range(m):
        for p in range(s.kernel_h):
            row_off = p * s.dilation_h - s.pad_top
            _valid_cols(row_off, sh, H, Ho, &oh_lo, &oh_hi)
            for q in range(s.kernel_w):
                wv = w[((o * s.channels + cl) * s.kernel_h + p) * s.kernel_w + q]
                col_off = q * s.dilation_w - s.pad_left
                _valid_cols(col_off, sw, W, Wo, &lo, &hi)
                for oh in range(oh_lo, oh_hi):
                    grow = gi + (oh * sh + row_off) * W
                    gyrow = gy + (o * Ho + oh) * Wo
                    for ow in range(lo, hi):
                        grow[ow * sw + col_off] += wv * gyrow[ow]


cdef void _direct_gw_channel(const floating *x, const floating *gy, floating *gw,
                             const cconv_geom *s, Py_ssize_t batch, Py_ssize_t x_image,
                             Py_ssize_t gy_image) noexcept nogil:
    """grad_weight (channels, kh, kw) of one output channel: x is its group's input slice
    and gy its grad_output plane, both of image 0 (image strides x_image, gy_image)."""
    cdef Py_ssize_t H = s.in_h, W = s.in_w, Ho = s.out_h, Wo = s.out_w
    cdef Py_ssize_t sh = s.stride_h, sw = s.stride_w
    cdef Py_ssize_t c, p, q, img, oh, row_off, col_off, oh_lo, oh_hi, lo, hi
    cdef floating acc
    cdef const floating *xp
    cdef const floating *gp
    for c in range(s.channels):
        for p in range(s.kernel_h):
            row_off = p * s.dilation_h - s.pad_top
            _valid_cols(row_off, sh, H, Ho, &oh_lo, &oh_hi)
            for q in range(s.kernel_w):
                col_off = q * s.dilation_w - s.pad_left
                _valid_cols(col_off, sw, W, Wo, &lo, &hi)
                acc = 0
                if hi > lo:
                    for img in range(batch):
                        xp = x + img * x_image + c * H * W
                        gp = gy + img * gy_image
                        for oh in range(oh_lo, oh_hi):
                            acc += _dot(gp + oh * Wo + lo,
                                        xp + (oh * sh + row_off) * W + lo * sw + col_off,
                                        hi - lo, sw)
                gw[(c * s.kernel_h + p) * s.kernel_w + q] = acc


cdef inline floating _dot_ones(const floating *a, Py_ssize_t n) noexcept nogil:
    """sum a[0:n] with four independent partial sums (a fixed order)."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        i += 4
    while i < n:
        s0 += a[i]
        i += 1
    return (s0 + s1) + (s2 + s3)
