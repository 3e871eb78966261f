"""The compiled float16/bfloat16 <-> float32 conversions against NumPy's and ml_dtypes' ``astype``.

Bit for bit: every float16 and bfloat16 bit pattern widened; float32 values on and next to
every rounding boundary (the midpoints between neighbouring halves, normal and subnormal),
around overflow, float32 subnormals, NaNs of every kind and random bit patterns narrowed.
The variant that ran is asserted (``half_variant``: "f16c" or "portable"), and the module runs
again in a subprocess for each instruction set (CCONV_KERNEL_ISA), so each variant is tested.
Also: the half path of the ops converts with these functions.
"""
from __future__ import annotations

import platform
import re

import numpy as np
import pytest

import cconv
from conftest import BACKENDS_UNDER_TEST, run_under_isa, tally

COMPILED = "cython" in BACKENDS_UNDER_TEST
pytestmark = pytest.mark.skipif(not COMPILED, reason="the compiled conversions exist in the compiled backend only")

if COMPILED:
    from cconv import _conv


def _bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16)


def _cpu_has_f16c():
    """True/False on x86 Linux (from /proc/cpuinfo); None where this test cannot tell."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return " f16c" in flags


def _bits(a):
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def _assert_same_bits(got, want, what):
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    differ = np.flatnonzero(_bits(got).ravel() != _bits(want).ravel())
    assert differ.size == 0, (
        f"{what}: {differ.size} of {got.size} differ, e.g. input index {differ[:5].tolist()}: "
        f"{[hex(v) for v in _bits(got).ravel()[differ[:5]]]} != {[hex(v) for v in _bits(want).ravel()[differ[:5]]]}")


def _all_halves(dtype):
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)


def _narrowing_inputs(dtype):
    """float32 values that probe every way of rounding to ``dtype`` (a 2-byte float)."""
    halves = _all_halves(dtype)
    with np.errstate(all="ignore"):
        exact = halves.astype(np.float32)
    finite = np.sort(np.unique(exact[np.isfinite(exact) & (exact >= 0)]))
    # midpoints between neighbours (ties), one float32 ulp either side, and past the largest
    mid = (finite[:-1].astype(np.float64) + finite[1:]) / 2
    mid = np.concatenate([mid, [finite[-1] + (finite[-1] - finite[-2]) / 2.0]])
    assert np.all(mid.astype(np.float32).astype(np.float64) == mid)  # ties are float32 values
    mid = mid.astype(np.float32)
    near = np.concatenate([mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(np.inf))])
    nan_bits = np.array([0x7F800001, 0x7F801FFF, 0x7F802000, 0x7FA00000, 0x7FBFFFFF, 0x7FC00000, 0x7FC00001,
                         0x7FFFE000, 0x7FFFFFFF, 0x7F8FFFFF], np.uint32)
    special = np.concatenate([
        nan_bits.view(np.float32),
        np.array([0.0, np.inf, np.finfo(np.float32).max, np.finfo(np.float32).tiny, 65504, 65519.996, 65520,
                  65536, 1e10, 2.0 ** -24, 2.0 ** -25, 2.0 ** -26, 3 * 2.0 ** -26, 2.0 ** -14], np.float32),
        np.arange(1, 1 << 12, dtype=np.uint32).view(np.float32),           # float32 subnormals
        np.arange(0x33000000 - 4096, 0x33000000 + 4096, dtype=np.uint32).view(np.float32),  # around 2**-25
        np.arange(0x477FE000, 0x47800100, dtype=np.uint32).view(np.float32),  # 65504 .. just past 65536
    ])
    rng = np.random.default_rng(20261201)
    random_bits = rng.integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([exact, near, special, random_bits])
    return np.concatenate([values, -values])  # both signs (NaNs included)


def test_variant_follows_the_instruction_set():
    """generic runs the portable C; avx2/avx512f run F16C wherever the CPU has it."""
    variant, isa = _conv.half_variant(), cconv.backend_info()["simd"]
    assert cconv.backend_info()["half_conversion"] == variant
    if isa == "generic":
        assert variant == "portable"
    elif _cpu_has_f16c() is not None:
        assert variant == ("f16c" if _cpu_has_f16c() else "portable")
    tally("half conversions", variant)


@pytest.mark.parametrize("threads", [1, 2])
def test_float16_widening_every_pattern(threads):
    halves = _all_halves(np.float16)
    _assert_same_bits(_conv.half_to_float32(halves, False, threads), halves.astype(np.float32), "float16 -> float32")


@pytest.mark.parametrize("threads", [1, 2])
def test_float16_narrowing(threads):
    values = _narrowing_inputs(np.float16)
    with np.errstate(all="ignore"):
        want = values.astype(np.float16)
    _assert_same_bits(_conv.float32_to_half(values, np.float16, threads), want, "float32 -> float16")
    # ... and every float16 survives the round trip
    halves = _all_halves(np.float16)
    back = _conv.float32_to_half(_conv.half_to_float32(halves, False, threads), np.float16, threads)
    _assert_same_bits(back, halves, "float16 round trip")


@pytest.mark.parametrize("threads", [1, 2])
def test_bfloat16_both_ways(threads):
    bf16 = _bfloat16()
    halves = _all_halves(bf16)
    _assert_same_bits(_conv.half_to_float32(halves, True, threads), halves.astype(np.float32), "bfloat16 -> float32")
    values = _narrowing_inputs(bf16)
    with np.errstate(all="ignore"):
        want = values.astype(bf16)
    _assert_same_bits(_conv.float32_to_half(values, bf16, threads), want, "float32 -> bfloat16")


def test_array_kinds():
    """Any shape and layout in, a C-contiguous array of the same shape out; the input untouched."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for a in (x, x[:, ::2, 1:], np.asfortranarray(x), x[0, 0, 0], x[:0], x.reshape(-1)[:7]):
        a = np.asarray(a)
        h = a.astype(np.float16)
        h.flags.writeable = False
        before = h.copy()
        got = _conv.half_to_float32(h, False, 1)
        assert got.shape == a.shape and got.flags.c_contiguous
        _assert_same_bits(got, h.astype(np.float32), "layout")
        _assert_same_bits(_conv.float32_to_half(a, np.float16, 1), h, "layout")
        _assert_same_bits(h, before, "input untouched")


def test_large_arrays_on_a_team():
    """Arrays big enough for a team of threads: the same bits as one thread and as astype."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((1 << 22) + 4099) * 1000).astype(np.float32)  # past the one-thread limit
    h = _conv.float32_to_half(x, np.float16, 2)
    _assert_same_bits(h, x.astype(np.float16), "float32 -> float16, 2 threads")
    _assert_same_bits(_conv.half_to_float32(h, False, 2), h.astype(np.float32), "float16 -> float32, 2 threads")


def test_bad_dtypes_refused():
    with pytest.raises(TypeError, match="float16 or bfloat16 array, got float32"):
        _conv.half_to_float32(np.ones(3, np.float32), False, 1)
    with pytest.raises(TypeError, match="float16 or bfloat16 as the dtype, got int16"):
        _conv.float32_to_half(np.ones(3, np.float32), np.int16, 1)


def test_ops_convert_with_the_compiled_functions(monkeypatch, rng):
    """The half path of a 2-d op and an N-d op widens and narrows through the compiled code."""
    from cconv import _compiled
    calls = []
    widen, narrow = _compiled.half_to_float32, _compiled.float32_to_half
    monkeypatch.setattr(_compiled, "half_to_float32", lambda a, bf: calls.append("widen") or widen(a, bf))
    monkeypatch.setattr(_compiled, "float32_to_half", lambda a, d: calls.append("narrow") or narrow(a, d))
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float16)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    y = cconv.conv2d(x, w, padding=1)
    assert y.dtype == np.float16 and calls == ["widen", "widen", "narrow"], calls
    calls.clear()
    y1 = cconv.conv1d(x[:, :, 0], w[:, :, 0])
    assert y1.dtype == np.float16 and calls == ["widen", "widen", "narrow"], calls


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512f"])
def test_instruction_set_variants(isa):
    """This module again, in a subprocess with the kernels switched to one instruction set."""
    out = run_under_isa(__file__, isa, "not variants", min_passed=8)
    ran = re.search(r"cconv half conversions: \d+ cases \((\w+) 1\)", out)
    assert ran, out[-2000:]
    assert ran.group(1) == ("portable" if isa == "generic" else cconv.backend_info()["half_conversion"])
    tally("half conversions (instruction sets)", f"{isa}: {ran.group(1)}")
