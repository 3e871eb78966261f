# Drivers: execute a ConvPlan (conv_plan.pxi), one driver per algorithm.  They decide
# nothing: algorithm, micro-kernel, tiles, team size and workspace layout come from the
# plan.  Work is cut into independent tasks run by _run (one OpenMP loop per phase, none at
# all for a team of one).  Included by _conv.pyx.

cdef enum:  # task kinds
    K_FWD_DIRECT = 0
    K_WINO_WEIGHTS
    K_WINO_ROWS
    K_LANES
    K_PADDED
    K_PAD
    K_PADDED_GRID
    K_SPAN
    K_PW_IN_PLACE
    K_BLOCK
    K_GI_DIRECT
    K_GI_COL2IM
    K_GW_DIRECT
    K_GW_PART
    K_GW_REDUCE
    K_GW_WINO_OUT
    K_GB
    K_ROWS_COLUMNS
    K_ROWS_FWD
    K_ROWS_GI
    K_ROWS_COL2IM
    K_ROWS_GW
    K_DW_FWD
    K_DW_GI
    K_DW_GW
    K_VOLUME

DEF _REDUCE_CHUNK = 4096   # elements per task of a partial-sum reduction
# Input channels per task of the Winograd weight-gradient output transform: 16 channels write
# 576 contiguous bytes per output channel, so two threads share at most a line at a boundary.
DEF _WINO_GW_CHANNELS = 16


cdef struct _Job:
    const ConvPlan *p
    const void *x        # forward: the sliding operand (x, or grad_output for grad_input)
    const void *w        # weights (unpacked)
    const void *gy       # weight and bias gradients: grad_output
    const void *bias
    void *out            # y, grad_input, grad_weight or grad_bias
    void *ws             # the workspace, laid out by the plan
    int kind


cdef inline floating *_region(const _Job *job, int region, const floating *dummy) noexcept nogil:
    return <floating *>job.ws + job.p.off[region]


cdef inline floating *_thread_ws(const _Job *job, int tid, int region,
                                 const floating *dummy) noexcept nogil:
    return (<floating *>job.ws + job.p.off[R_THREADS] + tid * job.p.t_stride
            + job.p.t_off[region])


cdef inline floating *_partial(const _Job *job, Py_ssize_t part, const floating *dummy) noexcept nogil:
    """Where batch part `part` of a weight gradient accumulates (part 0: the output)."""
    cdef const ConvPlan *p = job.p
    cdef Py_ssize_t GW = p.groups * p.m * p.g.channels * p.g.kernel_h * p.g.kernel_w
    if p.algo == A_WINOGRAD:
        return _region(job, R_PARTIALS, dummy) + part * _round_up(16 * p.groups * p.m * p.g.channels, 16)
    if part == 0:
        return <floating *>job.out
    return _region(job, R_PARTIALS, dummy) + (part - 1) * _round_up(GW, 16)


cdef void _run(_Job *job, int kind, Py_ssize_t n, int threads) noexcept nogil:
    """Run tasks 0..n-1 of `kind` on a team of `threads` (no parallel region for one).

    Tasks are handed out one at a time as threads come free: when another process holds a
    core, the threads that do run take over the work of the one that does not, instead of
    waiting for its share.  Which thread runs a task never changes a result."""
    cdef Py_ssize_t t
    job.kind = kind
    if threads <= 1 or n <= 1:
        for t in range(n):
            _task(job, t, 0)
    else:
        for t in prange(n, num_threads=threads, schedule='dynamic'):
            _task(job, t, threadid())


cdef void _task(const _Job *job, Py_ssize_t t, int tid) noexcept nogil:
    if job.p.itemsize == 4:
        _task_typed(<float *>NULL, job, t, tid)
    else:
        _task_typed(<double *>NULL, job, t, tid)


cdef void _task_typed(const floating *d, const _Job *job, Py_ssize_t t, int tid) noexcept nogil:
    """Task t of job.kind, on thread tid (its workspace block)."""
    cdef const ConvPlan *p = job.p
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t m = p.m, groups = p.groups, O = groups * m, C = s.channels
    cdef Py_ssize_t K = C * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w
    cdef Py_ssize_t x_group = C * s.in_h * s.in_w
    cdef const floating *x = <const floating *>job.x
    cdef const floating *w = <const floating *>job.w
    cdef const floating *b = <const floating *>job.bias
    cdef floating *out = <floating *>job.out
    cdef const floating *apack = _region(job, R_WEIGHTS, d)
    cdef const Py_ssize_t *off = <const Py_ssize_t *>_region(job, R_OFFSETS, d)
    cdef Py_ssize_t a_size = _round_up(m, p.mr) * K
    cdef Py_ssize_t r, gidx, p0, p1, i, i1, part, nblk, th, tw, b0, ty0, nchunk, n_panels
    cdef floating acc
    cdef floating *dst
    if job.kind == K_FWD_DIRECT:
        _direct_plane(x + (t // O * groups + t % O // m) * x_group, w + t % O * K,
                      b[t % O] if b != NULL else <floating>0, out + t * P, s)
    elif job.kind == K_WINO_WEIGHTS:
        _wino_weights(p, w, t, <floating *>apack)
    elif job.kind == K_WINO_ROWS:
        th = (s.out_h + 1) // 2
        nblk = (th + p.nty - 1) // p.nty       # tile-row blocks per image
        r = t // nblk                          # chunk * groups + group
        ty0 = t % nblk * p.nty
        gidx = r % groups
        b0 = r // groups * p.nimg
        a_size = _round_up(m, p.mr) * C
        _wino_rows(p, x + (b0 * groups + gidx) * x_group, groups * x_group,
                   apack + gidx * a_size, groups * a_size, off,
                   b + gidx * m if b != NULL else NULL,
                   out + (b0 * groups + gidx) * m * P, O * P,
                   min(p.nimg, p.batch - b0), ty0, min(p.nty, th - ty0),
                   _thread_ws(job, tid, T_A, d))
    elif job.kind == K_LANES:
        if floating is float:
            a_size = cconv_lanes_weights_size(m, K)
            cconv_fwd_lanes_f32(x + t * x_group, s, m, apack + t % groups * a_size, off,
                                b + t % groups * m if b != NULL else NULL, out + t * m * P,
                                _thread_ws(job, tid, T_A, d))
    elif job.kind == K_PADDED:
        _fwd_slice(p, x + t * x_group, apack + t % groups * a_size, off,
                   b + t % groups * m if b != NULL else NULL, out + t * m * P,
                   _thread_ws(job, tid, T_A, d), _thread_ws(job, tid, T_B, d))
    elif job.kind == K_PAD:
        # slice t's padded copy, shared by the grid chunks of K_PADDED_GRID
        _pad_phases(p, x + t * x_group, _padded_copy(job, t, d))
    elif job.kind == K_PADDED_GRID:
        r = t // p.chunks                      # image * groups + group
        i = t % p.chunks
        nblk = (_grid_cols(p) + CCONV_NB_PANELS * p.nr - 1) // (CCONV_NB_PANELS * p.nr)
        p0 = i * nblk // p.chunks * CCONV_NB_PANELS * p.nr
        p1 = min(_grid_cols(p), (i + 1) * nblk // p.chunks * CCONV_NB_PANELS * p.nr)
        _fwd_grid(p, apack + r % groups * a_size, off,
                  b + r % groups * m if b != NULL else NULL, out + r * m * P,
                  _padded_copy(job, r, d), _thread_ws(job, tid, T_B, d), p0, p1)
    elif job.kind == K_SPAN:
        # Each share is an equal, contiguous run of the GEMM panels of one group, in blocks
        # of up to blk.nc columns (blocks of blk.nc for everyone left one thread a block
        # more than the other: pointwise at 2 threads, 3% idle).
        gidx = t // p.shares
        n_panels = (p.batch * P + p.nr - 1) // p.nr
        p0 = t % p.shares * n_panels // p.shares * p.nr
        p1 = min((t % p.shares + 1) * n_panels // p.shares * p.nr, p.batch * P)
        while p0 < p1:
            _fwd_span(p, x + gidx * x_group, groups * x_group, apack + gidx * a_size,
                      b + gidx * m if b != NULL else NULL, out + gidx * m * P, O * P, p0,
                      min(p.blk.nc, p1 - p0), _thread_ws(job, tid, T_A, d))
            p0 = p0 + p.blk.nc
    elif job.kind == K_PW_IN_PLACE:
        _pw_task(p, x, w, apack, b, out, t, _thread_ws(job, tid, T_A, d))
    elif job.kind == K_BLOCK:
        nblk = (P + p.blk.nc - 1) // p.blk.nc
        r = t // nblk                          # image * groups + group
        p0 = t % nblk * p.blk.nc
        _fwd_block(p, x + r * x_group, apack + r % groups * a_size,
                   b + r % groups * m if b != NULL else NULL, out + r * m * P,
                   p0, min(p.blk.nc, P - p0), _thread_ws(job, tid, T_A, d))
    elif job.kind == K_GI_DIRECT:
        # here s is the conv2d geometry and x is grad_output: plane t of grad_input
        gidx = t % (groups * C) // C
        _direct_gi_plane(x + (t // (groups * C) * groups + gidx) * m * P, w + gidx * m * K,
                         out + t * s.in_h * s.in_w, s, m, t % C)
    elif job.kind == K_GI_COL2IM:
        # images [b0, b0 + nimg) of group t % groups
        a_size = _round_up(K, p.mr) * m
        gidx = t % groups
        b0 = t // groups * p.nimg
        nblk = min(p.nimg, p.batch - b0)
        r = b0 * groups + gidx                 # image b0's slice
        for i in range(nblk):
            memset(out + (r + i * groups) * x_group, 0, x_group * sizeof(floating))
        if nblk == 1:
            _gi_block(p, x + r * m * P, apack + gidx * a_size, out + r * x_group,
                      _thread_ws(job, tid, T_A, d), _thread_ws(job, tid, T_B, d))
        elif floating is float:
            conv_gi_images_f32(<const kernel_f32 *>p.kern, &p.blk, x + r * m * P, O * P, s, m,
                               apack + gidx * a_size, out + r * x_group, groups * x_group, nblk,
                               p.nc, _thread_ws(job, tid, T_A, d), _thread_ws(job, tid, T_B, d))
        else:
            conv_gi_images_f64(<const kernel_f64 *>p.kern, &p.blk, x + r * m * P, O * P, s, m,
                               apack + gidx * a_size, out + r * x_group, groups * x_group, nblk,
                               p.nc, _thread_ws(job, tid, T_A, d), _thread_ws(job, tid, T_B, d))
    elif job.kind == K_GW_DIRECT:
        _direct_gw_channel(x + t // m * x_group, <const floating *>job.gy + t * P, out + t * K,
                           s, p.batch, groups * x_group, O * P)
    elif job.kind == K_GW_PART:
        _gw_part(job, t, tid, d)
    elif job.kind == K_GW_REDUCE:
        # Fixed order per element: part 0, 1, 2, ... whatever the team.
        i1 = min((t + 1) * _REDUCE_CHUNK, _reduce_size(p))
        dst = _partial(job, 0, d)
        for i in range(t * _REDUCE_CHUNK, i1):
            acc = dst[i]
            for part in range(1, p.parts):
                acc = acc + _partial(job, part, d)[i]
            dst[i] = acc
    elif job.kind == K_GW_WINO_OUT:
        # gw = G^T dU G for one group's block of _WINO_GW_CHANNELS input channels; the thread's
        # tile block holds the 12 x m intermediate.  One channel writes 9 values per output
        # channel, next to its neighbour's: a block keeps two threads off each other's lines.
        nblk = (C + _WINO_GW_CHANNELS - 1) // _WINO_GW_CHANNELS
        gidx = t // nblk
        for i in range(t % nblk * _WINO_GW_CHANNELS, min(C, (t % nblk + 1) * _WINO_GW_CHANNELS)):
            if floating is float:
                wino_weights_grad_f32(_partial(job, 0, d), groups, m, C, gidx, i, out,
                                      _thread_ws(job, tid, T_A, d))
            else:
                wino_weights_grad_f64(_partial(job, 0, d), groups, m, C, gidx, i, out,
                                      _thread_ws(job, tid, T_A, d))
    elif job.kind == K_GB:
        acc = 0
        for i in range(p.batch):
            acc = acc + _dot_ones(<const floating *>job.gy + (i * O + t) * P, P)
        out[t] = acc
    elif job.kind == K_VOLUME:
        _vol_task(job, t, tid, d)
    elif job.kind >= K_DW_FWD:
        _dw_task(job, t, _thread_ws(job, tid, T_A, d))
    else:
        _rows_task(job, t, d)


cdef void _vol_task(const _Job *job, Py_ssize_t t, int tid, const floating *d) noexcept nogil:
    """Output depths [c*dchunk, +dchunk) of volume-group slice t // chunks (c = t % chunks)."""
    cdef const ConvPlan *p = job.p
    cdef Py_ssize_t chunks = (p.d.out_d + p.dchunk - 1) // p.dchunk
    cdef Py_ssize_t sl = t // chunks, od0 = t % chunks * p.dchunk, gidx = sl % p.groups
    cdef Py_ssize_t K = p.g.channels * p.d.kernel_d * p.g.kernel_h * p.g.kernel_w
    cdef const floating *x = <const floating *>job.x + sl * p.g.channels * p.d.in_d * p.g.in_h * p.g.in_w
    cdef const floating *apack = _region(job, R_WEIGHTS, d) + gidx * _round_up(p.m, p.mr) * K
    cdef const floating *b = <const floating *>job.bias
    cdef floating *y = <floating *>job.out + sl * p.m * p.d.out_d * p.g.out_h * p.g.out_w
    cdef const Py_ssize_t *off = <const Py_ssize_t *>_region(job, R_OFFSETS, d)
    cdef Py_ssize_t nout = min(p.dchunk, p.d.out_d - od0)
    if b != NULL:
        b = b + gidx * p.m
    if floating is float:
        conv_fwd_vol_f32(<const kernel_f32 *>p.kern, &p.blk, p.vol_rows, x, &p.g, &p.d, od0, nout,
                         p.dchunk, p.m, apack, off, b, y, _thread_ws(job, tid, T_A, d),
                         _thread_ws(job, tid, T_B, d))
    else:
        conv_fwd_vol_f64(<const kernel_f64 *>p.kern, &p.blk, p.vol_rows, x, &p.g, &p.d, od0, nout,
                         p.dchunk, p.m, apack, off, b, y, _thread_ws(job, tid, T_A, d),
                         _thread_ws(job, tid, T_B, d))


# ---- rows (few output pixels; conv_rows.h) ------------------------------------------------
# R_COLUMNS holds, per group, J = batch * P rows of ldc: the im2col columns with pixels as
# rows (image-major), then per group a small copy of grad_output (J x m for grad_input,
# m x J for grad_weight).

cdef inline Py_ssize_t _rows_ldc(const ConvPlan *p) noexcept nogil:
    return _round_up(p.g.channels * p.g.kernel_h * p.g.kernel_w, 16)


cdef inline floating *_rows_cols(const _Job *job, Py_ssize_t gidx, const floating *d) noexcept nogil:
    cdef const ConvPlan *p = job.p
    return _region(job, R_COLUMNS, d) + gidx * p.batch * p.g.out_h * p.g.out_w * _rows_ldc(p)


cdef inline floating *_rows_gy(const _Job *job, Py_ssize_t gidx, const floating *d) noexcept nogil:
    cdef const ConvPlan *p = job.p
    cdef Py_ssize_t J = p.batch * p.g.out_h * p.g.out_w
    return _rows_cols(job, p.groups, d) + gidx * J * _round_up(p.m, 16)


cdef void _rows_task(const _Job *job, Py_ssize_t t, const floating *d) noexcept nogil:
    cdef const ConvPlan *p = job.p
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t m = p.m, groups = p.groups, C = s.channels, P = s.out_h * s.out_w
    cdef Py_ssize_t K = C * s.kernel_h * s.kernel_w, J = p.batch * P, ldc = _rows_ldc(p)
    cdef Py_ssize_t mchunks = (m + _ROWS_CHUNK - 1) // _ROWS_CHUNK
    cdef Py_ssize_t kchunks = (K + _ROWS_K_CHUNK - 1) // _ROWS_K_CHUNK
    cdef Py_ssize_t gidx, r0, r1, k0
    cdef const floating *x = <const floating *>job.x
    cdef const floating *w = <const floating *>job.w
    cdef const floating *b = <const floating *>job.bias
    cdef floating *out = <floating *>job.out
    if job.kind == K_ROWS_COLUMNS:       # task: image * groups + group
        gidx = t % groups
        if floating is float:
            rows_columns_f32(x + t * C * s.in_h * s.in_w, s,
                             _rows_cols(job, gidx, d) + t // groups * P * ldc, ldc)
        else:
            rows_columns_f64(x + t * C * s.in_h * s.in_w, s,
                             _rows_cols(job, gidx, d) + t // groups * P * ldc, ldc)
    elif job.kind == K_ROWS_FWD:         # task: group * mchunks + chunk of output channels
        gidx = t // mchunks
        r0 = t % mchunks * _ROWS_CHUNK
        r1 = min(r0 + _ROWS_CHUNK, m)
        if floating is float:
            rows_dot_f32(K, w + gidx * m * K, K, r0, r1, _rows_cols(job, gidx, d), ldc, J, P,
                         out + gidx * m * P, groups * m * P,
                         b + gidx * m if b != NULL else NULL)
        else:
            rows_dot_f64(K, w + gidx * m * K, K, r0, r1, _rows_cols(job, gidx, d), ldc, J, P,
                         out + gidx * m * P, groups * m * P,
                         b + gidx * m if b != NULL else NULL)
    elif job.kind == K_ROWS_GI:          # task: group * kchunks + chunk of columns
        gidx = t // kchunks
        k0 = t % kchunks * _ROWS_K_CHUNK
        if floating is float:
            rows_axpy_f32(J, m, k0, min(k0 + _ROWS_K_CHUNK, K), _rows_gy(job, gidx, d),
                          _round_up(m, 16), 1, w + gidx * m * K, K, _rows_cols(job, gidx, d),
                          ldc)
        else:
            rows_axpy_f64(J, m, k0, min(k0 + _ROWS_K_CHUNK, K), _rows_gy(job, gidx, d),
                          _round_up(m, 16), 1, w + gidx * m * K, K, _rows_cols(job, gidx, d),
                          ldc)
    elif job.kind == K_ROWS_COL2IM:      # task: input plane (image, group, channel)
        gidx = t // C % groups
        if floating is float:
            rows_col2im_f32(_rows_cols(job, gidx, d) + t // (groups * C) * P * ldc, ldc, s,
                            t % C, out + t * s.in_h * s.in_w)
        else:
            rows_col2im_f64(_rows_cols(job, gidx, d) + t // (groups * C) * P * ldc, ldc, s,
                            t % C, out + t * s.in_h * s.in_w)
    elif job.kind == K_ROWS_GW:          # task: group * mchunks + chunk of output channels
        gidx = t // mchunks
        r0 = t % mchunks * _ROWS_CHUNK
        r1 = min(r0 + _ROWS_CHUNK, m)
        if floating is float:
            rows_axpy_f32(r1 - r0, J, 0, K, _rows_gy(job, gidx, d) + r0 * J, J, 1,
                          _rows_cols(job, gidx, d), ldc, out + (gidx * m + r0) * K, K)
        else:
            rows_axpy_f64(r1 - r0, J, 0, K, _rows_gy(job, gidx, d) + r0 * J, J, 1,
                          _rows_cols(job, gidx, d), ldc, out + (gidx * m + r0) * K, K)


cdef void _rows_copy_gy(const _Job *job, const floating *gy, bint by_pixel) noexcept nogil:
    """Each group's grad_output as a small contiguous matrix: J x m (by_pixel, rows of
    grad_input's axpy) or m x J (the weight gradient's)."""
    cdef const ConvPlan *p = job.p
    cdef Py_ssize_t m = p.m, P = p.g.out_h * p.g.out_w, J = p.batch * P, mp = _round_up(m, 16)
    cdef Py_ssize_t gidx, o, j
    cdef floating *a
    cdef const floating *src
    for gidx in range(p.groups):
        a = _rows_gy(job, gidx, gy)
        for o in range(m):
            for j in range(J):
                src = gy + (j // P * p.groups * m + gidx * m + o) * P + j % P
                if by_pixel:
                    a[j * mp + o] = src[0]
                else:
                    a[o * J + j] = src[0]


cdef void _rows_forward(_Job *job) noexcept nogil:
    cdef const ConvPlan *p = job.p
    _run(job, K_ROWS_COLUMNS, p.batch * p.groups, p.threads)
    _run(job, K_ROWS_FWD, p.groups * ((p.m + _ROWS_CHUNK - 1) // _ROWS_CHUNK), p.threads)


cdef void _grad_input_rows(const ConvPlan *p, const floating *gy, const floating *w,
                           floating *gi, floating *ws) noexcept nogil:
    """gi (batch, groups*channels, in_h, in_w): per group the columns sum_o gy[o, j] w[o, :]
    (tasks over column chunks: each column is one sum over o in order), then col2im per
    input plane."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w
    cdef _Job job
    job.p = p
    job.x = NULL
    job.w = w
    job.gy = gy
    job.bias = NULL
    job.out = gi
    job.ws = ws
    _rows_copy_gy(&job, gy, True)
    _run(&job, K_ROWS_GI, p.groups * ((K + _ROWS_K_CHUNK - 1) // _ROWS_K_CHUNK), p.threads)
    _run(&job, K_ROWS_COL2IM, p.batch * p.groups * s.channels, p.threads)


cdef void _dw_task(const _Job *job, Py_ssize_t t, floating *tws) noexcept nogil:
    """Depthwise task t: planes [t*planes, (t+1)*planes) (grad_weight: channels; in blocks
    of channels with dw_lanes)."""
    cdef const ConvPlan *p = job.p
    cdef Py_ssize_t t0 = t * p.planes
    cdef Py_ssize_t t1 = min(t0 + p.planes, _dw_total(p, job.kind == K_DW_GW, tws))
    cdef const floating *x = <const floating *>job.x
    cdef const floating *w = <const floating *>job.w
    cdef const floating *wt = _region(job, R_WEIGHTS, tws)
    cdef const Py_ssize_t *off = <const Py_ssize_t *>_region(job, R_OFFSETS, tws)
    if p.dw_lanes:
        if floating is float:
            if job.kind == K_DW_FWD:
                dw_lanes_forward_f32(x, wt, <const float *>job.bias, <float *>job.out, &p.g,
                                     p.groups, t0, t1, tws)
            elif job.kind == K_DW_GI:
                dw_lanes_grad_input_f32(x, wt, <float *>job.out, &p.g, p.groups, t0, t1, tws)
            else:
                dw_lanes_grad_weight_f32(x, <const float *>job.gy, <float *>job.out, &p.g,
                                         p.batch, p.groups, t0, t1, tws)
        else:
            if job.kind == K_DW_FWD:
                dw_lanes_forward_f64(x, wt, <const double *>job.bias, <double *>job.out, &p.g,
                                     p.groups, t0, t1, tws)
            elif job.kind == K_DW_GI:
                dw_lanes_grad_input_f64(x, wt, <double *>job.out, &p.g, p.groups, t0, t1, tws)
            else:
                dw_lanes_grad_weight_f64(x, <const double *>job.gy, <double *>job.out, &p.g,
                                         p.batch, p.groups, t0, t1, tws)
    elif job.kind == K_DW_FWD:
        if floating is float:
            dw_forward_f32(x, w, <const float *>job.bias, <float *>job.out, &p.g, p.groups,
                           p.m, off, t0, t1, tws)
        else:
            dw_forward_f64(x, w, <const double *>job.bias, <double *>job.out, &p.g, p.groups,
                           p.m, off, t0, t1, tws)
    elif job.kind == K_DW_GI:
        if floating is float:
            dw_grad_input_f32(x, w, <float *>job.out, &p.g, p.groups, p.m, off, t0, t1, tws)
        else:
            dw_grad_input_f64(x, w, <double *>job.out, &p.g, p.groups, p.m, off, t0, t1, tws)
    else:
        if floating is float:
            dw_grad_weight_f32(x, <const float *>job.gy, <float *>job.out, &p.g, p.batch,
                               p.groups, p.m, off, t0, t1, tws)
        else:
            dw_grad_weight_f64(x, <const double *>job.gy, <double *>job.out, &p.g, p.batch,
                               p.groups, p.m, off, t0, t1, tws)


cdef inline Py_ssize_t _dw_total(const ConvPlan *p, bint per_channel,
                                 const floating *dummy) noexcept nogil:
    """Planes (per_channel: channels) of a depthwise pass, or blocks of them with dw_lanes."""
    cdef Py_ssize_t n = p.groups
    cdef Py_ssize_t width = dw_lanes_width_f32() if floating is float else dw_lanes_width_f64()
    if p.dw_lanes:
        n = (p.groups + width - 1) // width
    return n if per_channel else p.batch * n


cdef void _dw_run(_Job *job, int kind, const floating *dummy) noexcept nogil:
    """Prepare (tap offsets or table; lanes: transposed weights) and run a depthwise pass."""
    cdef const ConvPlan *p = job.p
    cdef Py_ssize_t khw = p.g.kernel_h * p.g.kernel_w
    if p.dw_lanes and kind != K_DW_GW:
        if floating is float:
            dw_lanes_weights_f32(<const float *>job.w, p.groups, khw, _region(job, R_WEIGHTS, dummy))
        else:
            dw_lanes_weights_f64(<const double *>job.w, p.groups, khw, _region(job, R_WEIGHTS, dummy))
    elif kind == K_DW_GI:
        if floating is float:
            dw_gi_table_f32(&p.g, p.m, <Py_ssize_t *>_region(job, R_OFFSETS, dummy))
        else:
            dw_gi_table_f64(&p.g, p.m, <Py_ssize_t *>_region(job, R_OFFSETS, dummy))
    elif not p.dw_lanes:
        tap_offsets_f32(&p.g, <Py_ssize_t *>_region(job, R_OFFSETS, dummy))
    _run(job, kind, (_dw_total(p, kind == K_DW_GW, dummy) + p.planes - 1) // p.planes, p.threads)


cdef inline Py_ssize_t _reduce_size(const ConvPlan *p) noexcept nogil:
    """Elements of one weight-gradient partial (Winograd: the 16 x O x C sums dU)."""
    if p.algo == A_WINOGRAD:
        return 16 * p.groups * p.m * p.g.channels
    return p.groups * p.m * p.g.channels * p.g.kernel_h * p.g.kernel_w


cdef void _gw_part(const _Job *job, Py_ssize_t t, int tid, const floating *d) noexcept nogil:
    """Task t: batch part t // oblocks of a weight gradient into its own partial (images
    for dot and Winograd, flattened (image, pixel) rows for im2col); the dot kernel's
    output-channel block t % oblocks of it."""
    cdef const ConvPlan *p = job.p
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t part = t // p.oblocks
    cdef Py_ssize_t o_lo = 0, o_hi = p.m     # output-channel blocks: the dot kernel's only
    if p.algo == A_DOT and not p.pointwise:  # (other ISAs may have no dot tile at all)
        o_lo = _dot_block_rows(p, t % p.oblocks)
        o_hi = _dot_block_rows(p, t % p.oblocks + 1)
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w, gi
    cdef Py_ssize_t n = (p.batch * s.out_h * s.out_w if p.algo == A_IM2COL or p.pointwise
                         else p.batch)
    cdef Py_ssize_t lo = n * part // p.parts, hi = n * (part + 1) // p.parts
    cdef floating *dst = _partial(job, part, d)
    cdef const floating *x = <const floating *>job.x
    cdef const floating *gy = <const floating *>job.gy
    cdef floating *tws = _thread_ws(job, tid, T_A, d)
    if p.algo == A_WINOGRAD:      # writes (not accumulates) its partial
        if floating is float:
            conv_wino_gw_f32(<const kernel_f32 *>p.kern, &p.blk, x, gy, s, p.groups, p.m, lo, hi,
                             p.nimg, p.nty, p.tpad, dst, tws)
        else:
            conv_wino_gw_f64(<const kernel_f64 *>p.kern, &p.blk, x, gy, s, p.groups, p.m, lo, hi,
                             p.nimg, p.nty, p.tpad, dst, tws)
        return
    cdef const void *mask = NULL      # dot: no grid mask for a finite input
    if p.algo == A_DOT and p.pointwise:     # in place: no copies, no mask (no padding)
        memset(dst, 0, _reduce_size(p) * sizeof(floating))
        if floating is float:
            conv_gw_pointwise_f32(<const kernel_f32 *>p.kern, &p.blk, x, gy, s, p.groups, p.m, lo, hi,
                                  dst)
        else:
            conv_gw_pointwise_f64(<const kernel_f64 *>p.kern, &p.blk, x, gy, s, p.groups, p.m, lo, hi,
                                  dst)
    elif p.algo == A_DOT:
        for gi in range(p.groups):      # this block's rows of each group
            memset(dst + (gi * p.m + o_lo) * K, 0, (o_hi - o_lo) * K * sizeof(floating))
        if not p.dot_finite:
            mask = _region(job, R_MASK, d)
        if floating is float:
            conv_gw_images_f32(<const kernel_f32 *>p.kern, &p.blk, x, gy, s, p.groups, p.m, lo, hi,
                               o_lo, o_hi, <const Py_ssize_t *>_region(job, R_OFFSETS, d),
                               <const int *>mask, dst, tws)
        else:
            conv_gw_images_f64(<const kernel_f64 *>p.kern, &p.blk, x, gy, s, p.groups, p.m, lo, hi,
                               o_lo, o_hi, <const Py_ssize_t *>_region(job, R_OFFSETS, d),
                               <const long long *>mask, dst, tws)
    else:
        memset(dst, 0, _reduce_size(p) * sizeof(floating))
        if floating is float:
            conv_gw_range_f32(<const kernel_f32 *>p.kern, &p.blk, x, gy, s, p.groups, p.m, lo, hi, dst,
                              tws, _thread_ws(job, tid, T_B, d), p.pointwise)
        else:
            conv_gw_range_f64(<const kernel_f64 *>p.kern, &p.blk, x, gy, s, p.groups, p.m, lo, hi, dst,
                              tws, _thread_ws(job, tid, T_B, d), p.pointwise)


# ---- typed calls of the C drivers (the plan's micro-kernel) -------------------------------

cdef inline void _pack_a(const ConvPlan *p, floating *dst, const floating *src, Py_ssize_t m,
                         Py_ssize_t k, Py_ssize_t rs, Py_ssize_t cs) noexcept nogil:
    if floating is float:
        pack_a_f32(dst, src, m, k, rs, cs, p.mr)
    else:
        pack_a_f64(dst, src, m, k, rs, cs, p.mr)


cdef inline void _fwd_block(const ConvPlan *p, const floating *x, const floating *apack,
                            const floating *bias, floating *y, Py_ssize_t p0, Py_ssize_t nc,
                            floating *ws) noexcept nogil:
    if floating is float:
        conv_fwd_block_f32(<const kernel_f32 *>p.kern, &p.blk, x, &p.g, p.m, apack, bias, y, p0, nc, ws)
    else:
        conv_fwd_block_f64(<const kernel_f64 *>p.kern, &p.blk, x, &p.g, p.m, apack, bias, y, p0, nc, ws)


cdef inline void _fwd_slice(const ConvPlan *p, const floating *x, const floating *apack,
                            const Py_ssize_t *off, const floating *bias, floating *y,
                            floating *xp, floating *ctmp) noexcept nogil:
    if floating is float:
        conv_fwd_slice_f32(<const kernel_f32 *>p.kern, &p.blk, x, &p.g, p.m, apack, off, bias, y, xp,
                           ctmp)
    else:
        conv_fwd_slice_f64(<const kernel_f64 *>p.kern, &p.blk, x, &p.g, p.m, apack, off, bias, y, xp,
                           ctmp)


cdef inline Py_ssize_t _grid_cols(const ConvPlan *p) noexcept nogil:
    return grid_cols_f32(&p.g)


cdef inline floating *_padded_copy(const _Job *job, Py_ssize_t r,
                                   const floating *dummy) noexcept nogil:
    """Slice r's padded copy in R_PADDED (a padded forward cut into grid chunks)."""
    cdef Py_ssize_t size
    if floating is float:
        size = _round_up(padded_size_f32(&job.p.g, job.p.nr), 16)
    else:
        size = _round_up(padded_size_f64(&job.p.g, job.p.nr), 16)
    return _region(job, R_PADDED, dummy) + r * size


cdef inline void _pad_phases(const ConvPlan *p, const floating *x, floating *xp) noexcept nogil:
    if floating is float:
        pad_phases_f32(x, &p.g, p.nr, xp)
    else:
        pad_phases_f64(x, &p.g, p.nr, xp)


cdef inline void _fwd_grid(const ConvPlan *p, const floating *apack, const Py_ssize_t *off,
                           const floating *bias, floating *y, const floating *xp,
                           floating *ctmp, Py_ssize_t j_lo, Py_ssize_t j_hi) noexcept nogil:
    if floating is float:
        conv_fwd_grid_f32(<const kernel_f32 *>p.kern, &p.blk, &p.g, p.m, apack, off, bias, y, xp, ctmp,
                          j_lo, j_hi)
    else:
        conv_fwd_grid_f64(<const kernel_f64 *>p.kern, &p.blk, &p.g, p.m, apack, off, bias, y, xp, ctmp,
                          j_lo, j_hi)


cdef inline void _fwd_span(const ConvPlan *p, const floating *x, Py_ssize_t x_img,
                           const floating *apack, const floating *bias, floating *y,
                           Py_ssize_t y_img, Py_ssize_t j0, Py_ssize_t nc,
                           floating *ws) noexcept nogil:
    if floating is float:
        conv_fwd_span_f32(<const kernel_f32 *>p.kern, &p.blk, x, x_img, &p.g, p.m, apack, bias, y,
                          y_img, j0, nc, ws, p.stream, p.pointwise)
    else:
        conv_fwd_span_f64(<const kernel_f64 *>p.kern, &p.blk, x, x_img, &p.g, p.m, apack, bias, y,
                          y_img, j0, nc, ws, p.stream, p.pointwise)


cdef void _pw_task(const ConvPlan *p, const floating *x, const floating *w,
                   const floating *apack, const floating *b, floating *y, Py_ssize_t t,
                   floating *ws) noexcept nogil:
    """In-place 1x1 forward task t: slice r (image * groups + group), column block cb of
    _pw_col_blocks (whole nr panels, split evenly), row part rp of rparts (whole mr strips).
    With p.pw_unpacked the weights are read in place: w as given for a forward, or the
    unflipped conv2d weights (W^T: row i is column i) for an input gradient."""
    cdef Py_ssize_t P = p.g.out_h * p.g.out_w, m = p.m, K = p.g.channels
    cdef Py_ssize_t cblocks = _pw_col_blocks(p), panels = (P + p.nr - 1) // p.nr
    cdef Py_ssize_t strips = (m + p.mr - 1) // p.mr
    cdef Py_ssize_t rp = t % p.rparts, cb = t // p.rparts % cblocks
    cdef Py_ssize_t r = t // p.rparts // cblocks, gidx = r % p.groups
    cdef Py_ssize_t j0 = cb * panels // cblocks * p.nr
    cdef Py_ssize_t j1 = min(P, (cb + 1) * panels // cblocks * p.nr)
    cdef Py_ssize_t r0 = rp * strips // p.rparts * p.mr
    cdef Py_ssize_t r1 = min(m, (rp + 1) * strips // p.rparts * p.mr)
    cdef const floating *ap = NULL
    cdef Py_ssize_t ars = 1 if p.via_forward else K, acs = m if p.via_forward else 1
    if j0 >= j1 or r0 >= r1:
        return
    if not p.pw_unpacked:
        ap = apack + gidx * _round_up(m, p.mr) * K
    if floating is float:
        conv_fwd_pointwise_f32(<const kernel_f32 *>p.kern, &p.blk, x + r * K * P, &p.g, m,
                               ap, w + gidx * m * K, ars, acs,
                               b + gidx * m if b != NULL else NULL, y + r * m * P, r0, r1,
                               j0, j1 - j0, ws)
    else:
        conv_fwd_pointwise_f64(<const kernel_f64 *>p.kern, &p.blk, x + r * K * P, &p.g, m,
                               ap, w + gidx * m * K, ars, acs,
                               b + gidx * m if b != NULL else NULL, y + r * m * P, r0, r1,
                               j0, j1 - j0, ws)


cdef inline void _wino_weights(const ConvPlan *p, const floating *w, Py_ssize_t strip,
                               floating *upack) noexcept nogil:
    """Transform the weights of GEMM strip `strip` (mr output channels of one group).  A task
    is a whole strip because a strip interleaves its mr channels: one task per channel had two
    threads writing the same cache lines all the time (N1 C256->256 16x16: 2.3 ms on 1
    thread, 7.8 ms on 2)."""
    cdef Py_ssize_t upack_xi = p.groups * _round_up(p.m, p.mr) * p.g.channels
    cdef Py_ssize_t per_group = (p.m + p.mr - 1) // p.mr
    cdef Py_ssize_t o0 = strip // per_group * p.m + strip % per_group * p.mr
    cdef Py_ssize_t o1 = strip // per_group * p.m + min(p.m, (strip % per_group + 1) * p.mr)
    if floating is float:
        wino_weights_f32(w, p.groups, p.m, p.g.channels, p.mr, o0, o1, upack, upack_xi)
    else:
        wino_weights_f64(w, p.groups, p.m, p.g.channels, p.mr, o0, o1, upack, upack_xi)


cdef inline void _wino_rows(const ConvPlan *p, const floating *x, Py_ssize_t x_img,
                            const floating *upack, Py_ssize_t upack_xi, const Py_ssize_t *off,
                            const floating *bias, floating *y, Py_ssize_t y_img,
                            Py_ssize_t nimg, Py_ssize_t ty0, Py_ssize_t nty,
                            floating *ws) noexcept nogil:
    if floating is float:
        conv_wino_rows_f32(<const kernel_f32 *>p.kern, x, x_img, &p.g, p.m, upack, upack_xi,
                           off, bias, y, y_img, nimg, ty0, nty, p.tpad, ws)
    else:
        conv_wino_rows_f64(<const kernel_f64 *>p.kern, x, x_img, &p.g, p.m, upack, upack_xi,
                           off, bias, y, y_img, nimg, ty0, nty, p.tpad, ws)


cdef inline void _gi_block(const ConvPlan *p, const floating *gy, const floating *apack,
                           floating *gi, floating *wsb, floating *wsc) noexcept nogil:
    if floating is float:
        conv_gi_block_f32(<const kernel_f32 *>p.kern, &p.blk, gy, &p.g, p.m, apack, gi, p.nc, wsb, wsc)
    else:
        conv_gi_block_f64(<const kernel_f64 *>p.kern, &p.blk, gy, &p.g, p.m, apack, gi, p.nc, wsb, wsc)


# ---- one driver per pass ------------------------------------------------------------------

cdef void _forward(const ConvPlan *p, const floating *x, const floating *w, const floating *b,
                   floating *y, floating *ws) noexcept nogil:
    """y (batch, groups*m, out_h, out_w) = conv(x, w) + b as planned (also the stride-1
    grad_input, with grad_output as x and the flipped weights as w)."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t m = p.m, K = s.channels * s.kernel_h * s.kernel_w
    cdef Py_ssize_t P = s.out_h * s.out_w, O = p.groups * m, gidx, c, th
    cdef _Job job
    job.p = p
    job.x = x
    job.w = w
    job.gy = NULL
    job.bias = b
    job.out = y
    job.ws = ws
    if p.algo == A_DIRECT:
        _run(&job, K_FWD_DIRECT, p.batch * O, p.threads)
    elif p.algo == A_ROWS:
        _rows_forward(&job)
    elif p.algo == A_DEPTHWISE:
        _dw_run(&job, K_DW_FWD, x)
    elif p.algo == A_VOLUME:
        K = K * p.d.kernel_d
        for gidx in range(p.groups):
            _pack_a(p, _region(&job, R_WEIGHTS, x) + gidx * _round_up(m, p.mr) * K,
                    w + gidx * m * K, m, K, K, 1)
        vol_tap_offsets_f32(s, &p.d, p.dchunk, <Py_ssize_t *>_region(&job, R_OFFSETS, x))
        _run(&job, K_VOLUME, p.batch * p.groups * ((p.d.out_d + p.dchunk - 1) // p.dchunk),
             p.threads)
    elif p.algo == A_WINOGRAD:
        # weight transform straight into GEMM strips: 16*O*C values, worth a team
        _run(&job, K_WINO_WEIGHTS, p.groups * ((m + p.mr - 1) // p.mr), p.side_threads)
        for c in range(s.channels):
            (<Py_ssize_t *>_region(&job, R_OFFSETS, x))[c] = c * p.tpad
        th = (s.out_h + 1) // 2
        _run(&job, K_WINO_ROWS, (p.batch + p.nimg - 1) // p.nimg * p.groups
             * ((th + p.nty - 1) // p.nty), p.threads)
    elif p.algo == A_LANES:
        if floating is float:
            for gidx in range(p.groups):
                cconv_lanes_pack_f32(w + gidx * m * K, m, K, _region(&job, R_WEIGHTS, x)
                                     + gidx * cconv_lanes_weights_size(m, K))
            tap_offsets_f32(s, <Py_ssize_t *>_region(&job, R_OFFSETS, x))
            _run(&job, K_LANES, p.batch * p.groups, p.threads)
    else:
        for gidx in range(p.groups if not p.pw_unpacked else 0):
            if p.via_forward and p.in_place:   # W^T of a 1x1, unflipped: row i is column i of w
                _pack_a(p, _region(&job, R_WEIGHTS, x) + gidx * _round_up(m, p.mr) * K,
                        w + gidx * m * K, m, K, 1, m)
            else:
                _pack_a(p, _region(&job, R_WEIGHTS, x) + gidx * _round_up(m, p.mr) * K,
                        w + gidx * m * K, m, K, K, 1)
        if p.algo == A_PADDED:
            tap_offsets_f32(s, <Py_ssize_t *>_region(&job, R_OFFSETS, x))
            if p.chunks > 1:
                _run(&job, K_PAD, p.batch * p.groups, p.threads)
                _run(&job, K_PADDED_GRID, p.batch * p.groups * p.chunks, p.threads)
            else:
                _run(&job, K_PADDED, p.batch * p.groups, p.threads)
        elif p.in_place:
            _run(&job, K_PW_IN_PLACE, p.batch * p.groups * _pw_col_blocks(p) * p.rparts,
                 p.threads)
        elif p.span:
            _run(&job, K_SPAN, p.groups * p.shares, p.threads)
        else:
            _run(&job, K_BLOCK, p.batch * p.groups * ((P + p.blk.nc - 1) // p.blk.nc),
                 p.threads)


cdef void _grad_input_col2im(const ConvPlan *p, const floating *gy, const floating *w,
                             floating *gi, floating *ws) noexcept nogil:
    """gi (batch, groups*channels, in_h, in_w) for any stride: GEMM with W^T and col2im per
    image and group, scatter loops per input plane (direct), or the depthwise correlations
    of each polyphase plane."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t K = s.channels * s.kernel_h * s.kernel_w, gidx
    cdef _Job job
    job.p = p
    job.x = gy
    job.w = w
    job.gy = NULL
    job.bias = NULL
    job.out = gi
    job.ws = ws
    if p.algo == A_DIRECT:
        _run(&job, K_GI_DIRECT, p.batch * p.groups * s.channels, p.threads)
        return
    if p.algo == A_DEPTHWISE:
        _dw_run(&job, K_DW_GI, gy)
        return
    for gidx in range(p.groups):
        _pack_a(p, _region(&job, R_WEIGHTS, gy) + gidx * _round_up(K, p.mr) * p.m,
                w + gidx * p.m * K, K, p.m, 1, K)
    _run(&job, K_GI_COL2IM, (p.batch + p.nimg - 1) // p.nimg * p.groups, p.threads)


cdef void _grad_weight(const ConvPlan *p, const floating *x, const floating *gy, floating *gw,
                       floating *ws) noexcept nogil:
    """gw (groups*m, channels, kh, kw): each batch part into its own partial (part 0 into
    gw), then the parts added element by element in part order."""
    cdef const cconv_geom *s = &p.g
    cdef Py_ssize_t O = p.groups * p.m, C = s.channels
    cdef _Job job
    job.p = p
    job.x = x
    job.w = NULL
    job.gy = gy
    job.bias = NULL
    job.out = gw
    job.ws = ws
    if p.algo == A_DIRECT:
        _run(&job, K_GW_DIRECT, O, p.threads)
        return
    if p.algo == A_ROWS:
        _rows_copy_gy(&job, gy, False)
        _run(&job, K_ROWS_COLUMNS, p.batch * p.groups, p.threads)
        _run(&job, K_ROWS_GW, p.groups * ((p.m + _ROWS_CHUNK - 1) // _ROWS_CHUNK), p.threads)
        return
    if p.algo == A_DEPTHWISE:     # each task sums its channels over the whole batch
        _dw_run(&job, K_DW_GW, x)
        return
    if p.algo == A_DOT and not p.pointwise:
        tap_offsets_f32(s, <Py_ssize_t *>_region(&job, R_OFFSETS, x))
        if p.dot_finite:
            pass
        elif floating is float:
            dot_mask_f32(s, <int *>_region(&job, R_MASK, x))
        else:
            dot_mask_f64(s, <long long *>_region(&job, R_MASK, x))
    _run(&job, K_GW_PART, p.parts * p.oblocks, p.threads)
    if p.parts > 1:
        _run(&job, K_GW_REDUCE, (_reduce_size(p) + _REDUCE_CHUNK - 1) // _REDUCE_CHUNK,
             p.side_threads)
    if p.algo == A_WINOGRAD:
        _run(&job, K_GW_WINO_OUT, p.groups * ((C + _WINO_GW_CHANNELS - 1) // _WINO_GW_CHANNELS),
             p.side_threads)


cdef void _grad_bias(const ConvPlan *p, const floating *gy, floating *gb) noexcept nogil:
    """gb[o] = sum of grad_output over images and pixels, per channel in a fixed order."""
    cdef _Job job
    job.p = p
    job.x = NULL
    job.w = NULL
    job.gy = gy
    job.bias = NULL
    job.out = gb
    job.ws = NULL
    _run(&job, K_GB, p.groups * p.m, p.threads)
