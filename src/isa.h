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
/* ---- cache sizes ---------------------------------------------------------------------
 * The planner sizes its GEMM blocks from the data cache sizes (conv_plan.pxi, blocking),
 * probed once at import like the ISA level: Linux from /sys (sysconf as a fallback: glibc's
 * L3 figure can be the whole package's, e.g. 256 MiB on a 32 MiB EPYC slice), macOS from
 * sysctl, Windows from GetLogicalProcessorInformation.  A level the system does not report
 * keeps the default below (a common desktop core).  CCONV_CACHE_BYTES overrides (isa.pxi). */
enum { CCONV_CACHE_L1D = 0, CCONV_CACHE_L2 = 1, CCONV_CACHE_L3 = 2 };
static const long long cconv_cache_default[3] = {32768, 524288, 8388608};
static long long cconv_cache_bytes[3] = {32768, 524288, 8388608};

#if defined(__linux__)
#include <stdio.h>
#include <unistd.h>
/* Size in bytes of /sys/.../cache/index<i> if it is a data or unified cache of `level`. */
static long long cconv_sys_cache(int index, int level)
{
    char path[96], text[32];
    long long value = 0;
    int got_level = 0;
    FILE *f;
    snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
    if ((f = fopen(path, "r")) == NULL) return -1;               /* no such index: stop */
    if (fscanf(f, "%d", &got_level) != 1) got_level = 0;
    fclose(f);
    if (got_level != level) return 0;
    snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%d/type", index);
    if ((f = fopen(path, "r")) == NULL) return 0;
    if (fscanf(f, "%31s", text) != 1) text[0] = '\0';
    fclose(f);
    if (strcmp(text, "Data") != 0 && strcmp(text, "Unified") != 0) return 0;
    snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
    if ((f = fopen(path, "r")) == NULL) return 0;
    text[0] = '\0';                                              /* a unit may not follow */
    if (fscanf(f, "%lld%31s", &value, text) < 1) value = 0;
    else if (text[0] == 'K') value *= 1024;
    else if (text[0] == 'M') value *= 1024 * 1024;
    fclose(f);
    return value;
}
#elif defined(__APPLE__)
#include <sys/types.h>
#include <sys/sysctl.h>
#elif defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <stdlib.h>
#endif

/* Fill cconv_cache_bytes from the system; levels it does not report keep the defaults. */
static void cconv_cache_probe(void)
{
    long long found[3] = {0, 0, 0};
    int i;
#if defined(__linux__)
    for (int level = 1; level <= 3; level++)
        for (int index = 0; index < 8; index++) {
            const long long v = cconv_sys_cache(index, level);
            if (v < 0) break;
            if (v > 0) { found[level - 1] = v; break; }
        }
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
    {
        const int names[3] = {_SC_LEVEL1_DCACHE_SIZE, _SC_LEVEL2_CACHE_SIZE, _SC_LEVEL3_CACHE_SIZE};
        for (i = 0; i < 3; i++)
            if (found[i] <= 0) found[i] = (long long)sysconf(names[i]);
    }
#endif
#elif defined(__APPLE__)
    {
        const char *names[3] = {"hw.l1dcachesize", "hw.l2cachesize", "hw.l3cachesize"};
        for (i = 0; i < 3; i++) {            /* 64-bit values; accept 32-bit ones too */
            unsigned char buf[8];
            size_t len = sizeof(buf);
            if (sysctlbyname(names[i], buf, &len, NULL, 0) != 0) continue;
            if (len == 8) {
                long long v;
                memcpy(&v, buf, 8);
                found[i] = v;
            } else if (len == 4) {
                int v;
                memcpy(&v, buf, 4);
                found[i] = v;
            }
        }
    }
#elif defined(_WIN32)
    {
        DWORD len = 0;
        SYSTEM_LOGICAL_PROCESSOR_INFORMATION *info = NULL;
        if (!GetLogicalProcessorInformation(NULL, &len)
                && GetLastError() == ERROR_INSUFFICIENT_BUFFER
                && (info = (SYSTEM_LOGICAL_PROCESSOR_INFORMATION *)malloc(len)) != NULL) {
            if (GetLogicalProcessorInformation(info, &len)) {
                const DWORD n = (DWORD)(len / sizeof(*info));
                for (DWORD k = 0; k < n; k++) {
                    const CACHE_DESCRIPTOR *c = &info[k].Cache;
                    if (info[k].Relationship != RelationCache || c->Level < 1 || c->Level > 3
                            || (c->Type != CacheData && c->Type != CacheUnified))
                        continue;
                    if (found[c->Level - 1] < (long long)c->Size)
                        found[c->Level - 1] = (long long)c->Size;
                }
            }
            free(info);
        }
    }
#endif
    for (i = 0; i < 3; i++)
        cconv_cache_bytes[i] = found[i] > 0 ? found[i] : cconv_cache_default[i];
}

#define CCONV_ISA_CAT_(a, b) a##b
#define CCONV_ISA_CAT(a, b) CCONV_ISA_CAT_(a, b)

#endif /* CCONV_ISA_H */
