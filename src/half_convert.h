/* float16 and bfloat16 <-> float32 conversion of whole buffers, bit for bit as NumPy
 * (float16) and ml_dtypes (bfloat16) convert.
 *
 * float16 -> float32 is exact; a NaN keeps its sign and payload (a signalling NaN stays
 * signalling, as NumPy leaves it).  float32 -> float16 rounds to nearest even; values
 * from 65520 up become inf, results below 2**-14 are subnormal; a NaN keeps its sign and
 * the top 10 bits of its payload, made non-zero (0x7c01) if they are all zero (NumPy's
 * rule; the F16C instruction would set the quiet bit instead, so blocks holding a NaN take
 * the portable code).  bfloat16 is the top half of a float32: widening is a shift,
 * narrowing rounds to nearest even and makes every NaN the quiet NaN 0x7fc0 with the
 * input's sign (ml_dtypes' rule).
 *
 * Two float16 variants: portable C, and F16C (vcvtph2ps / vcvtps2ph with round to nearest
 * even) on x86 at the ISA levels avx2 and avx512f of isa.h when the CPU has F16C, so
 * CCONV_KERNEL_ISA=generic forces the portable one.  The bfloat16 loops are integer code
 * that the compiler vectorises per level through CCONV_ISA_VARIANTS.  All of these are
 * free of floating-point state: MXCSR rounding, FTZ and DAZ do not change a result.
 */
#ifndef CCONV_HALF_CONVERT_H
#define CCONV_HALF_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "isa.h"

#if CCONV_X86_DISPATCH
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---- portable, one element ------------------------------------------------------------ */

static inline uint32_t cconv_f16_to_f32_bits(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = h & 0x7c00u, mantissa = h & 0x03ffu;
    if (exponent == 0x7c00u)                    /* inf, NaN: payload kept */
        return sign | 0x7f800000u | (mantissa << 13);
    if (exponent != 0)                          /* normal: rebias 15 -> 127 */
        return sign | ((((uint32_t)h & 0x7fffu) << 13) + ((uint32_t)(127 - 15) << 23));
    if (mantissa == 0)
        return sign;
    /* subnormal mantissa * 2**-24: shift it up to a leading 1 at bit 10 */
    uint32_t biased = 127 - 14;
    while (!(mantissa & 0x0400u)) {
        mantissa <<= 1;
        biased--;
    }
    return sign | (biased << 23) | ((mantissa & 0x03ffu) << 13);
}

static inline uint16_t cconv_f32_bits_to_f16(uint32_t f)
{
    uint16_t sign = (uint16_t)((f >> 16) & 0x8000u);
    uint32_t a = f & 0x7fffffffu;
    if (a > 0x7f800000u) {                      /* NaN: top payload bits, never inf */
        uint16_t payload = (uint16_t)((a & 0x007fffffu) >> 13);
        return (uint16_t)(sign | 0x7c00u | (payload ? payload : 1u));
    }
    if (a >= 0x477ff000u)                       /* >= 65520 (and inf): inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) {                     /* normal half: round the low 13 bits */
        a += 0x0fffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | ((a >> 13) - ((uint32_t)(127 - 15) << 10)));
    }
    if (a <= 0x33000000u)                       /* <= 2**-25: rounds to zero */
        return sign;
    /* subnormal half: the 24-bit significand shifted right by 14..24 places, rounded */
    uint32_t shift = 126 - (a >> 23), significand = (a & 0x007fffffu) | 0x00800000u;
    uint32_t result = significand >> shift, rest = significand & ((1u << shift) - 1u);
    uint32_t half_ulp = 1u << (shift - 1);
    if (rest > half_ulp || (rest == half_ulp && (result & 1u)))
        result++;
    return (uint16_t)(sign | result);
}

static inline uint16_t cconv_f32_bits_to_bf16(uint32_t f)
{
    if ((f & 0x7fffffffu) > 0x7f800000u)         /* NaN: the quiet NaN, sign kept */
        return (uint16_t)(((f >> 16) & 0x8000u) | 0x7fc0u);
    return (uint16_t)((f + 0x7fffu + ((f >> 16) & 1u)) >> 16);
}

static void cconv_f16_to_f32_portable(const uint16_t *src, uint32_t *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = cconv_f16_to_f32_bits(src[i]);
}

static void cconv_f32_to_f16_portable(const uint32_t *src, uint16_t *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = cconv_f32_bits_to_f16(src[i]);
}

/* ---- F16C, 8 elements at a time -------------------------------------------------------- */

#if CCONV_X86_DISPATCH
__attribute__((target("avx,f16c"))) static void
cconv_f16_to_f32_f16c(const uint16_t *src, uint32_t *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i)));
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
            cconv_f16_to_f32_portable(src + i, dst + i, 8);  /* a NaN: keep its payload as is */
        else
            _mm256_storeu_ps((float *)(dst + i), v);
    }
    cconv_f16_to_f32_portable(src + i, dst + i, n - i);
}

__attribute__((target("avx,f16c"))) static void
cconv_f32_to_f16_f16c(const uint32_t *src, uint16_t *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps((const float *)(src + i));
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)))
            cconv_f32_to_f16_portable(src + i, dst + i, 8);  /* a NaN: NumPy's payload rule */
        else
            _mm_storeu_si128((__m128i *)(dst + i),
                             _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    cconv_f32_to_f16_portable(src + i, dst + i, n - i);
}

static int cconv_cpu_has_f16c(void)
{
    unsigned int eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}
#endif

/* The float16 variant the current ISA level runs: 1 F16C, 0 portable. */
static int cconv_half_f16c(void)
{
#if CCONV_X86_DISPATCH
    static int has_f16c = -1;
    if (has_f16c < 0) has_f16c = cconv_cpu_has_f16c();
    return cconv_isa_level >= CCONV_ISA_AVX2 && has_f16c;
#else
    return 0;
#endif
}

static const char *cconv_half_variant(void)
{
    return cconv_half_f16c() ? "f16c" : "portable";
}

/* The public entry points work on bit patterns: float32 buffers are uint32_t here. */
static void cconv_f16_to_f32(const uint16_t *src, uint32_t *dst, ptrdiff_t n)
{
#if CCONV_X86_DISPATCH
    if (cconv_half_f16c()) {
        cconv_f16_to_f32_f16c(src, dst, n);
        return;
    }
#endif
    cconv_f16_to_f32_portable(src, dst, n);
}

static void cconv_f32_to_f16(const uint32_t *src, uint16_t *dst, ptrdiff_t n)
{
#if CCONV_X86_DISPATCH
    if (cconv_half_f16c()) {
        cconv_f32_to_f16_f16c(src, dst, n);
        return;
    }
#endif
    cconv_f32_to_f16_portable(src, dst, n);
}

/* ---- bfloat16: integer loops, vectorised per ISA level --------------------------------- */

CCONV_BODY void cconv_bf16_to_f32_body(const uint16_t *src, uint32_t *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = (uint32_t)src[i] << 16;
}
CCONV_ISA_VARIANTS(cconv_bf16_to_f32, (const uint16_t *src, uint32_t *dst, ptrdiff_t n),
                   (src, dst, n))

CCONV_BODY void cconv_f32_to_bf16_body(const uint32_t *src, uint16_t *dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = cconv_f32_bits_to_bf16(src[i]);
}
CCONV_ISA_VARIANTS(cconv_f32_to_bf16, (const uint32_t *src, uint16_t *dst, ptrdiff_t n),
                   (src, dst, n))

#endif /* CCONV_HALF_CONVERT_H */
