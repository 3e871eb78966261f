/* Vectorised row kernels behind src/_pool.pyx (max pooling).
 *
 * _pool.pyx walks the (n, c) planes in parallel and, for each output row, calls
 * pool_max_row_f32/_f64 here: it computes a block of adjacent windows of that row,
 * one kernel row at a time, with branch-free selects that the compiler turns into
 * vector compares and blends across the output row.  Random data would make a
 * branch per tap mispredict about half the time, which is what makes a scalar max
 * pool slow.
 *
 * The same C is compiled twice: baseline (SSE2 on x86-64, whatever the target is
 * elsewhere) and, on GCC/Clang for x86, with target("avx2"); pool_kernels_init()
 * picks one at import from the ISA level of isa.h, so the wheel stays baseline.
 * pool_impl.h is included once per dtype as a poor man's template.
 */
#ifndef CCONV_POOL_KERNELS_H
#define CCONV_POOL_KERNELS_H

#include <Python.h>   /* Py_ssize_t */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "isa.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define POOL_X86_DISPATCH 1
#else
#define POOL_X86_DISPATCH 0
#endif

#if defined(__GNUC__)
#define POOL_RESTRICT __restrict__
#define POOL_INLINE static inline __attribute__((always_inline))
#define POOL_ALIGNED(n) __attribute__((aligned(n)))
#elif defined(_MSC_VER)
#define POOL_RESTRICT __restrict
#define POOL_INLINE static __forceinline
#define POOL_ALIGNED(n) __declspec(align(n))
#else
#define POOL_RESTRICT
#define POOL_INLINE static inline
#define POOL_ALIGNED(n)
#endif

/* GCC and Clang vector extensions: explicit SIMD for the common kernels. */
#if defined(__GNUC__)
#define POOL_VECTOR_EXT 1
#else
#define POOL_VECTOR_EXT 0
#endif

#define POOL_CAT_(a, b) a##b
#define POOL_CAT(a, b) POOL_CAT_(a, b)

/* pool_max_row computes at most POOL_BLOCK windows per call; with a padded copy it
 * rounds their number up to a multiple of POOL_GROUP (the widest vector). */
#define POOL_BLOCK 256
#define POOL_GROUP 8

/* An adaptive pool's geometry: one (n, c) volume of (in_d, in_h, in_w) pooled to
 * (out_d, out_h, out_w) bins; output bin i of a dimension covers [bins[2*i], bins[2*i + 1])
 * of it (PyTorch's floor(i*in/out), ceil((i+1)*in/out), computed by the caller). */
typedef struct {
    Py_ssize_t in_d, in_h, in_w, out_d, out_h, out_w;
    const int64_t *bins_d, *bins_h, *bins_w;
} pool_adaptive_shape;

/* Name of the ISA the kernels run with (for build/backend info). */
static const char *pool_isa = "generic";

/* Per dtype: POOL_V elements per 32-byte vector, POOL_IT the same-width integer, and
 * POOL_EVENS(a, b) = elements 0, 2, 4, ... of p[0..2V-2] from a = p[0..V-1] and
 * b = p[V-1..2V-2] (the even taps of a stride-2 window row). */
#if defined(__clang__)
#define POOL_EVENS_F32(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 9, 11, 13, 15)
#define POOL_EVENS_F64(a, b) __builtin_shufflevector(a, b, 0, 2, 5, 7)
#else
#define POOL_EVENS_F32(a, b) __builtin_shuffle(a, b, (pool_ivec_f32){0, 2, 4, 6, 9, 11, 13, 15})
#define POOL_EVENS_F64(a, b) __builtin_shuffle(a, b, (pool_ivec_f64){0, 2, 5, 7})
#endif

#define POOL_T float
#define POOL_IT int32_t
#define POOL_V 8
#define POOL_SUFFIX _f32
#define POOL_EVENS POOL_EVENS_F32
#include "pool_impl.h"
#undef POOL_T
#undef POOL_IT
#undef POOL_V
#undef POOL_SUFFIX
#undef POOL_EVENS

#define POOL_T double
#define POOL_IT int64_t
#define POOL_V 4
#define POOL_SUFFIX _f64
#define POOL_EVENS POOL_EVENS_F64
#include "pool_impl.h"
#undef POOL_T
#undef POOL_IT
#undef POOL_V
#undef POOL_SUFFIX
#undef POOL_EVENS

/* Choose the kernels for ISA level `level` of isa.h (the AVX2 kernels also serve
 * AVX-512); call once before the first pooling call. */
static void pool_kernels_init(int level)
{
#if POOL_X86_DISPATCH
    if (level >= CCONV_ISA_AVX2) {
        pool_max_row_impl_f32 = pool_max_row_avx2_f32;
        pool_max_row_impl_f64 = pool_max_row_avx2_f64;
        pool_isa = "avx2";
    }
#endif
}

#endif /* CCONV_POOL_KERNELS_H */
