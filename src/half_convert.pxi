# float16/bfloat16 <-> float32 conversion of whole arrays (half_convert.h): what the 2-byte
# float path of every op (cconv._widen) converts with.  Included by _conv.pyx; the variant
# follows the module's ISA level (CCONV_KERNEL_ISA).

from libc.stdint cimport uint16_t, uint32_t

cdef extern from "half_convert.h" nogil:
    const char *cconv_half_variant()
    void cconv_f16_to_f32(const uint16_t *src, uint32_t *dst, Py_ssize_t n)
    void cconv_f32_to_f16(const uint32_t *src, uint16_t *dst, Py_ssize_t n)
    void cconv_bf16_to_f32(const uint16_t *src, uint32_t *dst, Py_ssize_t n)
    void cconv_f32_to_bf16(const uint32_t *src, uint16_t *dst, Py_ssize_t n)

# Conversions stream memory: measured, a second thread gains little below ~4M elements
# (1.6M: none; 4M: up to 1.3x on this 2-core machine), so only larger arrays get a team.
DEF _CONVERT_CHUNK = 65536              # elements per task
DEF _CONVERT_MIN_PARALLEL = 1 << 22     # elements below which one thread converts


cdef void _widen_span(const uint16_t *src, uint32_t *dst, Py_ssize_t n, bint bfloat16) noexcept nogil:
    if bfloat16:
        cconv_bf16_to_f32(src, dst, n)
    else:
        cconv_f16_to_f32(src, dst, n)


cdef void _narrow_span(const uint32_t *src, uint16_t *dst, Py_ssize_t n, bint bfloat16) noexcept nogil:
    if bfloat16:
        cconv_f32_to_bf16(src, dst, n)
    else:
        cconv_f32_to_f16(src, dst, n)


def half_to_float32(a, bint bfloat16, int threads):
    """float32 array (a's shape) holding the 2-byte floats of ``a`` (float16, or bfloat16
    when ``bfloat16``); exact."""
    if a.dtype.itemsize != 2:
        raise TypeError(f"expected a float16 or bfloat16 array, got {a.dtype}")
    src_array = np.ascontiguousarray(a).reshape(-1).view(np.uint16)
    out = np.empty(a.shape, np.float32)
    cdef const uint16_t[::1] src = src_array
    cdef uint32_t[::1] dst = out.reshape(-1).view(np.uint32)
    cdef Py_ssize_t n = src.shape[0], tasks = (n + _CONVERT_CHUNK - 1) // _CONVERT_CHUNK, t, lo
    cdef int team = _team_size(threads, <double>n, _CONVERT_MIN_PARALLEL, tasks)
    if n == 0:
        return out
    with nogil:
        if team == 1:
            _widen_span(&src[0], &dst[0], n, bfloat16)
        else:
            for t in prange(tasks, num_threads=team, schedule="static"):
                lo = t * _CONVERT_CHUNK
                _widen_span(&src[lo], &dst[lo], min(_CONVERT_CHUNK, n - lo), bfloat16)
    return out


def float32_to_half(a, dtype, int threads):
    """Array of ``dtype`` (float16 or bfloat16; a's shape) holding the float32 ``a`` rounded
    to nearest even, as NumPy's and ml_dtypes' ``astype`` round."""
    dtype = np.dtype(dtype)
    if dtype.itemsize != 2 or dtype.name not in ("float16", "bfloat16"):
        raise TypeError(f"expected float16 or bfloat16 as the dtype, got {dtype}")
    cdef bint bfloat16 = dtype.name == "bfloat16"
    src_array = np.ascontiguousarray(a, np.float32).reshape(-1).view(np.uint32)
    out = np.empty(a.shape, dtype)
    cdef const uint32_t[::1] src = src_array
    cdef uint16_t[::1] dst = out.reshape(-1).view(np.uint16)
    cdef Py_ssize_t n = src.shape[0], tasks = (n + _CONVERT_CHUNK - 1) // _CONVERT_CHUNK, t, lo
    cdef int team = _team_size(threads, <double>n, _CONVERT_MIN_PARALLEL, tasks)
    if n == 0:
        return out
    with nogil:
        if team == 1:
            _narrow_span(&src[0], &dst[0], n, bfloat16)
        else:
            for t in prange(tasks, num_threads=team, schedule="static"):
                lo = t * _CONVERT_CHUNK
                _narrow_span(&src[lo], &dst[lo], min(_CONVERT_CHUNK, n - lo), bfloat16)
    return out


def half_variant():
    """The float16 conversion this module runs at its ISA level: "f16c" or "portable"."""
    return cconv_half_variant().decode()
