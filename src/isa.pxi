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
