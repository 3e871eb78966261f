# Declarations of the C kernels (conv_kernels.h and the headers it includes): micro-kernel
# registry, packing, and the single-threaded drivers of each algorithm.  Included by _conv.pyx.

cdef extern from "conv_kernels.h" nogil:
    ctypedef struct cconv_geom:
        Py_ssize_t channels
        Py_ssize_t in_h, in_w
        Py_ssize_t kernel_h, kernel_w
        Py_ssize_t stride_h, stride_w
        Py_ssize_t pad_top, pad_left
        Py_ssize_t dilation_h, dilation_w
        Py_ssize_t out_h, out_w

    ctypedef struct cconv_depth:
        Py_ssize_t in_d, kernel_d, stride_d, pad_front, dilation_d, out_d

    ctypedef struct kernel_f32 "kernel_t_f32":
        int mr, nr
        void *dot
        int dot_mo, dot_nk
        const char *isa
    ctypedef struct kernel_f64 "kernel_t_f64":
        int mr, nr
        void *dot
        int dot_mo, dot_nk
        const char *isa

    ctypedef struct cconv_blocking:
        Py_ssize_t kc, mc, nc, dot_gy_bytes
    const Py_ssize_t CCONV_KC_MAX
    const int CCONV_VECTOR_BYTES
    const char *CCONV_COMPILER
    const int CCONV_OPENMP

    const kernel_f32 *cconv_kernel_f32()
    const kernel_f64 *cconv_kernel_f64()
    const kernel_f32 *cconv_kernel_tall_f32()
    const kernel_f64 *cconv_kernel_tall_f64()
    const kernel_f32 *cconv_kernel_wide_f32()
    const kernel_f64 *cconv_kernel_wide_f64()

    void copy_run_f32(float *dst, const float *src, Py_ssize_t n)
    void copy_run_f64(double *dst, const double *src, Py_ssize_t n)
    void pack_a_f32(float *dst, const float *src, Py_ssize_t m, Py_ssize_t k,
                    Py_ssize_t rs, Py_ssize_t cs, int mr)
    void pack_a_f64(double *dst, const double *src, Py_ssize_t m, Py_ssize_t k,
                    Py_ssize_t rs, Py_ssize_t cs, int mr)
    void conv_fwd_block_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                            const float *x, const cconv_geom *g,
                            Py_ssize_t m, const float *apack, const float *bias, float *y,
                            Py_ssize_t p0, Py_ssize_t nc, float *ws)
    void conv_fwd_block_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                            const double *x, const cconv_geom *g,
                            Py_ssize_t m, const double *apack, const double *bias, double *y,
                            Py_ssize_t p0, Py_ssize_t nc, double *ws)
    Py_ssize_t padded_size_f32(const cconv_geom *g, int nr)
    Py_ssize_t padded_size_f64(const cconv_geom *g, int nr)
    void tap_offsets_f32(const cconv_geom *g, Py_ssize_t *off)
    void conv_fwd_slice_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                            const float *x, const cconv_geom *g,
                            Py_ssize_t m, const float *apack, const Py_ssize_t *off,
                            const float *bias, float *y, float *xp, float *ctmp)
    void conv_fwd_slice_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                            const double *x, const cconv_geom *g,
                            Py_ssize_t m, const double *apack, const Py_ssize_t *off,
                            const double *bias, double *y, double *xp, double *ctmp)
    void pad_phases_f32(const float *x, const cconv_geom *g, int nr, float *xp)
    void pad_phases_f64(const double *x, const cconv_geom *g, int nr, double *xp)
    Py_ssize_t grid_cols_f32(const cconv_geom *g)
    void conv_fwd_grid_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                           const cconv_geom *g, Py_ssize_t m,
                           const float *apack, const Py_ssize_t *off, const float *bias,
                           float *y, const float *xp, float *ctmp, Py_ssize_t j_lo,
                           Py_ssize_t j_hi)
    void conv_fwd_grid_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                           const cconv_geom *g, Py_ssize_t m,
                           const double *apack, const Py_ssize_t *off, const double *bias,
                           double *y, const double *xp, double *ctmp, Py_ssize_t j_lo,
                           Py_ssize_t j_hi)
    const int CCONV_NB_PANELS
    void phase_dims_f32(const cconv_geom *g, Py_ssize_t *hph, Py_ssize_t *wph)
    Py_ssize_t padded_vol_size_f32(const cconv_geom *g, const cconv_depth *d, Py_ssize_t nd,
                                   int nr)
    Py_ssize_t padded_vol_size_f64(const cconv_geom *g, const cconv_depth *d, Py_ssize_t nd,
                                   int nr)
    void vol_tap_offsets_f32(const cconv_geom *g, const cconv_depth *d, Py_ssize_t nd,
                             Py_ssize_t *off)
    void conv_fwd_vol_f32(const kernel_f32 *kern, const cconv_blocking *blk, int rows_in_place,
                          const float *x, const cconv_geom *g,
                          const cconv_depth *d, Py_ssize_t od0, Py_ssize_t nout, Py_ssize_t nd,
                          Py_ssize_t m, const float *apack, const Py_ssize_t *off,
                          const float *bias, float *y, float *xp, float *ctmp)
    void conv_fwd_vol_f64(const kernel_f64 *kern, const cconv_blocking *blk, int rows_in_place,
                          const double *x, const cconv_geom *g,
                          const cconv_depth *d, Py_ssize_t od0, Py_ssize_t nout, Py_ssize_t nd,
                          Py_ssize_t m, const double *apack, const Py_ssize_t *off,
                          const double *bias, double *y, double *xp, double *ctmp)
    Py_ssize_t wino_gw_size_f32(Py_ssize_t C, Py_ssize_t m, Py_ssize_t nty, Py_ssize_t tw,
                                Py_ssize_t tpad, int mr, int nr)
    void conv_wino_gw_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                          const float *x, const float *gy,
                          const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                          Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t nimg, Py_ssize_t nty,
                          Py_ssize_t tpad, float *sacc, float *ws)
    void conv_wino_gw_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                          const double *x, const double *gy,
                          const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                          Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t nimg, Py_ssize_t nty,
                          Py_ssize_t tpad, double *sacc, double *ws)
    void wino_weights_grad_f32(const float *sacc, Py_ssize_t groups, Py_ssize_t m,
                               Py_ssize_t C, Py_ssize_t gi, Py_ssize_t c, float *gw,
                               float *tmp)
    void wino_weights_grad_f64(const double *sacc, Py_ssize_t groups, Py_ssize_t m,
                               Py_ssize_t C, Py_ssize_t gi, Py_ssize_t c, double *gw,
                               double *tmp)
    int all_finite_f32(const float *x, Py_ssize_t n)
    int all_finite_f64(const double *x, Py_ssize_t n)
    void wino_weights_f32(const float *w, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t C,
                          int mr, Py_ssize_t o0, Py_ssize_t o1, float *upack,
                          Py_ssize_t upack_xi)
    void wino_weights_f64(const double *w, Py_ssize_t groups, Py_ssize_t m, Py_ssize_t C,
                          int mr, Py_ssize_t o0, Py_ssize_t o1, double *upack,
                          Py_ssize_t upack_xi)
    Py_ssize_t wino_task_size_f32(Py_ssize_t C, Py_ssize_t m, Py_ssize_t nty, Py_ssize_t tw,
                                  Py_ssize_t tpad)
    void conv_wino_rows_f32(const kernel_f32 *kern, const float *x, Py_ssize_t x_img,
                            const cconv_geom *g, Py_ssize_t m, const float *upack,
                            Py_ssize_t upack_xi, const Py_ssize_t *off, const float *bias,
                            float *y, Py_ssize_t y_img, Py_ssize_t nimg, Py_ssize_t ty0,
                            Py_ssize_t nty, Py_ssize_t tpad, float *ws)
    void conv_wino_rows_f64(const kernel_f64 *kern, const double *x, Py_ssize_t x_img,
                            const cconv_geom *g, Py_ssize_t m, const double *upack,
                            Py_ssize_t upack_xi, const Py_ssize_t *off, const double *bias,
                            double *y, Py_ssize_t y_img, Py_ssize_t nimg, Py_ssize_t ty0,
                            Py_ssize_t nty, Py_ssize_t tpad, double *ws)
    Py_ssize_t dot_grid_f32(const cconv_geom *g)
    Py_ssize_t dot_grid_f64(const cconv_geom *g)
    void dot_mask_f32(const cconv_geom *g, int *mask)
    void dot_mask_f64(const cconv_geom *g, long long *mask)
    void conv_gw_images_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                            const float *x, const float *gy,
                            const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                            Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t o_lo,
                            Py_ssize_t o_hi, const Py_ssize_t *off, const int *mask,
                            float *gw, float *ws)
    void conv_gw_images_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                            const double *x, const double *gy,
                            const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                            Py_ssize_t img0, Py_ssize_t img1, Py_ssize_t o_lo,
                            Py_ssize_t o_hi, const Py_ssize_t *off, const long long *mask,
                            double *gw, double *ws)
    void conv_gw_pointwise_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                               const float *x, const float *gy,
                               const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                               Py_ssize_t r0, Py_ssize_t r1, float *gw)
    void conv_gw_pointwise_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                               const double *x, const double *gy,
                               const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                               Py_ssize_t r0, Py_ssize_t r1, double *gw)
    Py_ssize_t dot_image_size_f32(const cconv_geom *g, Py_ssize_t m, int nr)
    Py_ssize_t dot_image_size_f64(const cconv_geom *g, Py_ssize_t m, int nr)
    Py_ssize_t dot_images_f32(const cconv_geom *g, Py_ssize_t m, int nr)
    Py_ssize_t dot_images_f64(const cconv_geom *g, Py_ssize_t m, int nr)
    void conv_fwd_pointwise_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                                const float *x, const cconv_geom *g, Py_ssize_t m,
                                const float *apack, const float *w, Py_ssize_t ars,
                                Py_ssize_t acs, const float *bias, float *y,
                                Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t j0, Py_ssize_t nc,
                                float *ws)
    void conv_fwd_pointwise_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                                const double *x, const cconv_geom *g, Py_ssize_t m,
                                const double *apack, const double *w, Py_ssize_t ars,
                                Py_ssize_t acs, const double *bias, double *y,
                                Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t j0, Py_ssize_t nc,
                                double *ws)
    void conv_fwd_span_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                           const float *x, Py_ssize_t x_img,
                           const cconv_geom *g, Py_ssize_t m, const float *apack,
                           const float *bias, float *y, Py_ssize_t y_img, Py_ssize_t j0,
                           Py_ssize_t nc, float *ws, int stream, int pointwise)
    void conv_fwd_span_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                           const double *x, Py_ssize_t x_img,
                           const cconv_geom *g, Py_ssize_t m, const double *apack,
                           const double *bias, double *y, Py_ssize_t y_img, Py_ssize_t j0,
                           Py_ssize_t nc, double *ws, int stream, int pointwise)
    void conv_gw_range_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                           const float *x, const float *gy,
                           const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                           Py_ssize_t r0, Py_ssize_t r1, float *gw, float *wsa, float *wsb,
                           int pointwise)
    void conv_gw_range_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                           const double *x, const double *gy,
                           const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                           Py_ssize_t r0, Py_ssize_t r1, double *gw, double *wsa, double *wsb,
                           int pointwise)
    void conv_gi_block_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                           const float *gy, const cconv_geom *g,
                           Py_ssize_t m, const float *apack, float *gi, Py_ssize_t nc_max,
                           float *wsb, float *wsc)
    void conv_gi_block_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                           const double *gy, const cconv_geom *g,
                           Py_ssize_t m, const double *apack, double *gi, Py_ssize_t nc_max,
                           double *wsb, double *wsc)
    void conv_gi_images_f32(const kernel_f32 *kern, const cconv_blocking *blk,
                            const float *gy, Py_ssize_t gy_img,
                            const cconv_geom *g, Py_ssize_t m, const float *apack, float *gi,
                            Py_ssize_t gi_img, Py_ssize_t nimg, Py_ssize_t nc_max, float *wsb,
                            float *wsc)
    void conv_gi_images_f64(const kernel_f64 *kern, const cconv_blocking *blk,
                            const double *gy, Py_ssize_t gy_img,
                            const cconv_geom *g, Py_ssize_t m, const double *apack, double *gi,
                            Py_ssize_t gi_img, Py_ssize_t nimg, Py_ssize_t nc_max, double *wsb,
                            double *wsc)

    const int CCONV_LANES_SLACK
    int cconv_lanes_available()
    int cconv_lanes_cols(const cconv_geom *g)
    Py_ssize_t cconv_lanes_weights_size(Py_ssize_t m, Py_ssize_t K)
    void cconv_lanes_pack_f32(const float *w, Py_ssize_t m, Py_ssize_t K, float *wt)
    void cconv_fwd_lanes_f32(const float *x, const cconv_geom *g, Py_ssize_t m,
                             const float *wt, const Py_ssize_t *off, const float *bias,
                             float *y, float *xp)

    # few output pixels, weights read in place (conv_rows.h)
    void rows_dot_f32(Py_ssize_t K, const float *w, Py_ssize_t ldw, Py_ssize_t r0,
                      Py_ssize_t r1, const float *col, Py_ssize_t ldc, Py_ssize_t J,
                      Py_ssize_t P, float *y, Py_ssize_t y_img, const float *bias)
    void rows_dot_f64(Py_ssize_t K, const double *w, Py_ssize_t ldw, Py_ssize_t r0,
                      Py_ssize_t r1, const double *col, Py_ssize_t ldc, Py_ssize_t J,
                      Py_ssize_t P, double *y, Py_ssize_t y_img, const double *bias)
    void rows_axpy_f32(Py_ssize_t R, Py_ssize_t Sn, Py_ssize_t k0, Py_ssize_t k1,
                       const float *a, Py_ssize_t a_rs, Py_ssize_t a_cs, const float *b,
                       Py_ssize_t ldb, float *out, Py_ssize_t ldo)
    void rows_axpy_f64(Py_ssize_t R, Py_ssize_t Sn, Py_ssize_t k0, Py_ssize_t k1,
                       const double *a, Py_ssize_t a_rs, Py_ssize_t a_cs, const double *b,
                       Py_ssize_t ldb, double *out, Py_ssize_t ldo)
    void rows_columns_f32(const float *x, const cconv_geom *g, float *colT, Py_ssize_t ldc)
    void rows_columns_f64(const double *x, const cconv_geom *g, double *colT, Py_ssize_t ldc)
    void rows_col2im_f32(const float *cols, Py_ssize_t ldc, const cconv_geom *g, Py_ssize_t c,
                         float *gi)
    void rows_col2im_f64(const double *cols, Py_ssize_t ldc, const cconv_geom *g,
                         Py_ssize_t c, double *gi)
    Py_ssize_t dw_ws_forward_f32(const cconv_geom *g)
    Py_ssize_t dw_ws_forward_f64(const cconv_geom *g)
    Py_ssize_t dw_ws_grad_input_f32(const cconv_geom *g, Py_ssize_t m)
    Py_ssize_t dw_ws_grad_input_f64(const cconv_geom *g, Py_ssize_t m)
    Py_ssize_t dw_ws_grad_weight_f32(const cconv_geom *g, Py_ssize_t m)
    Py_ssize_t dw_ws_grad_weight_f64(const cconv_geom *g, Py_ssize_t m)
    Py_ssize_t dw_gi_table_size_f32(const cconv_geom *g, Py_ssize_t m)
    Py_ssize_t dw_gi_table_size_f64(const cconv_geom *g, Py_ssize_t m)
    void dw_gi_table_f32(const cconv_geom *g, Py_ssize_t m, Py_ssize_t *tab)
    void dw_gi_table_f64(const cconv_geom *g, Py_ssize_t m, Py_ssize_t *tab)
    void dw_forward_f32(const float *x, const float *w, const float *bias, float *y,
                        const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                        const Py_ssize_t *off, Py_ssize_t t0, Py_ssize_t t1, float *ws)
    void dw_forward_f64(const double *x, const double *w, const double *bias, double *y,
                        const cconv_geom *g, Py_ssize_t groups, Py_ssize_t m,
                        const Py_ssize_t *off, Py_ssize_t t0, Py_ssize_t t1, double *ws)
    void dw_grad_input_f32(const float *gy, const float *w, float *gi, const cconv_geom *g,
                           Py_ssize_t groups, Py_ssize_t m, const Py_ssize_t *tab,
                           Py_ssize_t t0, Py_ssize_t t1, float *ws)
    void dw_grad_input_f64(const double *gy, const double *w, double *gi, const cconv_geom *g,
                           Py_ssize_t groups, Py_ssize_t m, const Py_ssize_t *tab,
                           Py_ssize_t t0, Py_ssize_t t1, double *ws)
    void dw_grad_weight_f32(const float *x, const float *gy, float *gw, const cconv_geom *g,
                            Py_ssize_t batch, Py_ssize_t groups, Py_ssize_t m,
                            const Py_ssize_t *off, Py_ssize_t c0, Py_ssize_t c1, float *ws)
    void dw_grad_weight_f64(const double *x, const double *gy, double *gw, const cconv_geom *g,
                            Py_ssize_t batch, Py_ssize_t groups, Py_ssize_t m,
                            const Py_ssize_t *off, Py_ssize_t c0, Py_ssize_t c1, double *ws)
    int dw_lanes_available_f32()
    Py_ssize_t dw_lanes_width_f32()
    Py_ssize_t dw_lanes_width_f64()
    Py_ssize_t dw_lanes_ws_f32(const cconv_geom *g)
    Py_ssize_t dw_lanes_ws_f64(const cconv_geom *g)
    void dw_lanes_weights_f32(const float *w, Py_ssize_t channels, Py_ssize_t khw, float *wt)
    void dw_lanes_weights_f64(const double *w, Py_ssize_t channels, Py_ssize_t khw, double *wt)
    void dw_lanes_forward_f32(const float *x, const float *wt, const float *bias, float *y,
                              const cconv_geom *g, Py_ssize_t groups, Py_ssize_t t0,
                              Py_ssize_t t1, float *ws)
    void dw_lanes_forward_f64(const double *x, const double *wt, const double *bias, double *y,
                              const cconv_geom *g, Py_ssize_t groups, Py_ssize_t t0,
                              Py_ssize_t t1, double *ws)
    void dw_lanes_grad_input_f32(const float *gy, const float *wt, float *gi,
                                 const cconv_geom *g, Py_ssize_t groups, Py_ssize_t t0,
                                 Py_ssize_t t1, float *ws)
    void dw_lanes_grad_input_f64(const double *gy, const double *wt, double *gi,
                                 const cconv_geom *g, Py_ssize_t groups, Py_ssize_t t0,
                                 Py_ssize_t t1, double *ws)
    void dw_lanes_grad_weight_f32(const float *x, const float *gy, float *gw,
                                  const cconv_geom *g, Py_ssize_t batch, Py_ssize_t groups,
                                  Py_ssize_t b0, Py_ssize_t b1, float *ws)
    void dw_lanes_grad_weight_f64(const double *x, const double *gy, double *gw,
                                  const cconv_geom *g, Py_ssize_t batch, Py_ssize_t groups,
                                  Py_ssize_t b0, Py_ssize_t b1, double *ws)
