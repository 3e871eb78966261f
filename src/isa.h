/* The ISA registry: which instruction set every compiled kernel runs with.
 *
 * One level per extension module, chosen once at import (cconv_isa_select) from
 * CCONV_KERNEL_ISA or, by default, the best the CPU supports.  Every dispatch site reads
 * it: the GEMM micro-kernels (conv_impl.h), the per-ISA variants of the packing and
 * transform drivers (CCONV_ISA_VARIANTS below), the channels-in-lanes kernel and the
 * pooling row kernels.  The wheel itself stays baseline x86-64: ISA-specific code is
 * compiled with per-function target attributes.
 */
#ifndef CCONV_ISA_H
#define CCONV_ISA_H

#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CCONV_X86_DISPATCH 1
#else
#define CCONV_X86_DISPATCH 0
#endif

enum { CCONV_ISA_GENERIC = 0, CCONV_ISA_AVX2 = 1, CCONV_ISA_AVX512F = 2 };

/* Names accepted by CCONV_KERNEL_ISA, indexed by level. */
static const char *const cconv_isa_names[3] = {"generic", "avx2", "avx512f"};

static int cconv_isa_level = CCONV_ISA_GENERIC;

/* The best level this CPU runs (AVX2 counts only with FMA, which its kernels use). */
static int cconv_isa_best(void)
{
#if CCONV_X86_DISPATCH
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return CCONV_ISA_GENERIC;
    return __builtin_cpu_supports("avx512f") ? CCONV_ISA_AVX512F : CCONV_ISA_AVX2;
#else
    return CCONV_ISA_GENERIC;
#endif
}

/* Select the level named `want` ("" or NULL: the best the CPU has).  Returns the level,
 * -1 for an unknown name, -2 for a level this CPU cannot run (nothing changes then). */
static int cconv_isa_select(const char *want)
{
    int level = cconv_isa_best(), i;
    if (want != NULL && want[0] != '\0') {
        for (i = 0; i < 3 && strcmp(want, cconv_isa_names[i]) != 0; i++) {}
        if (i == 3) return -1;
        if (i > level) return -2;
        level = i;
    }
    cconv_isa_level = level;
    return level;
}

/* ISA variants of a driver whose body is written once as an always-inline function
 * NAME_body: the body is compiled into one function per level (the compiler vectorises
 * each for its target) and NAME calls the one for cconv_isa_level. */
#if CCONV_X86_DISPATCH
#define CCONV_BODY static inline __attribute__((always_inline))
#define CCONV_ISA_VARIANTS(name, params, args)                                            \
    __attribute__((target("avx512f,avx2,fma"))) static void CCONV_ISA_CAT(name, _avx512f) \
        params { CCONV_ISA_CAT(name, _body) args; }                                       \
    __attribute__((target("avx2,fma"))) static void CCONV_ISA_CAT(name, _avx2)            \
        params { CCONV_ISA_CAT(name, _body) args; }                                       \
    static void CCONV_ISA_CAT(name, _generic) params { CCONV_ISA_CAT(name, _body) args; } \
    static void name params                                                               \
    {                                                                                     \
        if (cconv_isa_level == CCONV_ISA_AVX512F) CCONV_ISA_CAT(name, _avx512f) args;     \
        else if (cconv_isa_level == CCONV_ISA_AVX2) CCONV_ISA_CAT(name, _avx2) args;      \
        else CCONV_ISA_CAT(name, _generic) args;                                          \
    }
#define CCONV_ISA_VARIANTS_INT(name, params, args)                                        \
    __attribute__((target("avx512f,avx2,fma"))) static int CCONV_ISA_CAT(name, _avx512f)  \
        params { return CCONV_ISA_CAT(name, _body) args; }                                \
    __attribute__((target("avx2,fma"))) static int CCONV_ISA_CAT(name, _avx2)             \
        params { return CCONV_ISA_CAT(name, _body) args; }                                \
    static int CCONV_ISA_CAT(name, _generic) params { return CCONV_ISA_CAT(name, _body) args; } \
    static int name params                                                                \
    {                                                                                     \
        if (cconv_isa_level == CCONV_ISA_AVX512F) return CCONV_ISA_CAT(name, _avx512f) args; \
        if (cconv_isa_level == CCONV_ISA_AVX2) return CCONV_ISA_CAT(name, _avx2) args;    \
        return CCONV_ISA_CAT(name, _generic) args;                                        \
    }
#else
#define CCONV_BODY static inline
#define CCONV_ISA_VARIANTS(name, params, args) \
    static void name params { CCONV_ISA_CAT(name, _body) args; }
#define CCONV_ISA_VARIANTS_INT(name, params, args) \
    static int name params { return CCONV_ISA_CAT(name, _body) args; }
#endif
#define CCONV_ISA_CAT_(a, b) a##b
#define CCONV_ISA_CAT(a, b) CCONV_ISA_CAT_(a, b)

#endif /* CCONV_ISA_H */
