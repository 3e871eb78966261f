# The ISA registry (isa.h), shared by the extension modules: CCONV_KERNEL_ISA picks the
# level every kernel of the module runs with; default: the best the CPU supports.
# Included by _conv.pyx and _pool.pyx; read once at import.

cdef extern from "isa.h" nogil:
    int cconv_isa_select(const char *want)
    int cconv_isa_best()
    int cconv_isa_level
    const char *const cconv_isa_names[3]

ISA_NAMES = ("generic", "avx2", "avx512f")


cdef int _select_isa() except -1:
    """Set the ISA level from $CCONV_KERNEL_ISA; a clear ValueError for anything else."""
    import os
    want = os.environ.get("CCONV_KERNEL_ISA", "").strip().lower()
    level = cconv_isa_select(want.encode())
    if level == -1:
        raise ValueError(f"CCONV_KERNEL_ISA={want!r} is not a known instruction set; "
                         f"accepted: {', '.join(ISA_NAMES)} (or unset: the best the CPU has)")
    if level == -2:
        raise ValueError(f"CCONV_KERNEL_ISA={want!r}: this CPU does not support it; it supports "
                         f"{', '.join(ISA_NAMES[:cconv_isa_best() + 1])}")
    return level


_select_isa()
isa = ISA_NAMES[cconv_isa_level]
isa_supported = ISA_NAMES[:cconv_isa_best() + 1]


# ---- cache sizes (isa.h): probed once at import; CCONV_CACHE_BYTES=l1d,l2,l3 overrides -------

cdef extern from "isa.h" nogil:
    void cconv_cache_probe()
    long long cconv_cache_bytes[3]

CACHE_LEVELS = ("l1d", "l2", "l3")


cdef int _select_caches() except -1:
    """Probe the data cache sizes, or take them from $CCONV_CACHE_BYTES (three byte counts,
    e.g. 32768,524288,33554432: small values force small GEMM blocks, for tests).  Returns
    1 when the variable set them."""
    import os
    cdef int i
    cconv_cache_probe()
    want = os.environ.get("CCONV_CACHE_BYTES", "").strip()
    if not want:
        return 0
    parts = [v.strip() for v in want.split(",")]
    if len(parts) != 3 or not all(v.isdigit() for v in parts):
        raise ValueError(f"CCONV_CACHE_BYTES={want!r} must be three byte counts "
                         f"l1d,l2,l3 (e.g. 32768,524288,33554432)")
    sizes = [int(v) for v in parts]
    if not 1024 <= sizes[0] <= sizes[1] <= sizes[2] <= 1 << 40:
        raise ValueError(f"CCONV_CACHE_BYTES={want!r}: need 1024 <= l1d <= l2 <= l3 <= 2**40 "
                         f"bytes")
    for i in range(3):
        cconv_cache_bytes[i] = sizes[i]
    return 1


cache_source = "CCONV_CACHE_BYTES" if _select_caches() else "probed"
cache_bytes = {name: int(cconv_cache_bytes[i]) for i, name in enumerate(CACHE_LEVELS)}
