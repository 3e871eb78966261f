/* Type-generic body of conv_kernels.h: included once with T=float, S(x)=x_f32 and
 * once with T=double, S(x)=x_f64.  No include guard on purpose.  One source per part:
 *   conv_registry.h  micro-kernels per ISA and their lookup
 *   gemm_pack.h      packing and the GEMM macro-kernel
 *   conv_im2col.h    packed-im2col forward / weight gradient, col2im input gradient
 *   conv_padded.h    implicit GEMM on a padded image copy
 *   conv_pointwise.h 1x1 forward GEMM reading the input in place
 *   conv_winograd.h  Winograd F(2x2, 3x3) forward and weight gradient
 *   conv_dot.h       dot-kernel weight gradient
 *   conv_rows.h      few output pixels: weights read in place (rows kernels)
 *   conv_depthwise.h depthwise (one input channel per group) passes
 * The planner (conv_plan.pxi) decides which runs; the drivers here are single-threaded. */

#include "conv_registry.h"
#include "gemm_pack.h"
#include "conv_im2col.h"
#include "conv_padded.h"
#include "conv_pointwise.h"
#include "conv_winograd.h"
#include "conv_dot.h"
#include "conv_rows.h"
#include "conv_depthwise.h"

#undef GENERIC_MR
#undef GENERIC_NR
