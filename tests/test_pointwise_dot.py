"""The 1x1 weight gradient by the dot kernel in place (explain: algorithm "dot", variant
"in_place"): x and grad_output are read where they are, in chunks of whole vectors per
image run plus a scalar tail, the batch cut into fixed parts of (image, pixel) rows.

Differential against the NumPy reference (and torch when installed) on random geometries
of the class the planner gives it (few channels, large maps) and on forced odd ones: maps
whose pixel count is no multiple of the vector width, one pixel, groups, batch parts that
cut an image, NaN/Inf in either operand, non-contiguous inputs, both dtypes; proof that the
variant ran (the extension's counters, agreeing with explain); bit-identical on 1-3 threads.
"""
from __future__ import annotations


import numpy as np
import pytest

import cconv
from conftest import REFERENCE, assert_close, assert_identical, compiled_only, tally

pytestmark = compiled_only("the dot kernel")
MASK = (False, True, False)


def _skip_generic():
    if cconv.backend_info()["simd"] == "generic":
        pytest.skip("the dot kernel exists for the vector ISAs only")


def _variants():
    from cconv import _compiled
    return _compiled._conv.dot_variant_counts()


def _grad_weight(gy, x, w, groups, want_in_place=True):
    """The compiled 1x1 weight gradient, with proof of the path that ran."""
    plan = cconv.explain("conv2d_backward", gy, x, w, groups=groups, output_mask=MASK)["grad_weight"]
    before = _variants()
    gw = cconv.conv2d_backward(gy, x, w, groups=groups, output_mask=MASK, backend="cython")[1]
    ran = [v for v, n in _variants().items() if n > before[v]]
    if want_in_place:
        assert plan["algorithm"] == "dot" and plan["variant"] == "in_place", plan
        assert ran == ["in_place"], (ran, plan)
    else:
        assert plan.get("variant") != "in_place" and "in_place" not in ran, (ran, plan)
    return gw, plan, ran


def _check(gy, x, w, groups, context, want_in_place=True, long_sums=False):
    """The planner's 1x1 weight gradient against the reference; ``long_sums``: against the
    exact sums (see _assert_within_sum_bound)."""
    x0, gy0 = x.copy(), gy.copy()
    gw, _, _ = _grad_weight(gy, x, w, groups, want_in_place)
    if long_sums:
        _assert_within_sum_bound(gw, gy, x, w, groups, context)
    else:
        expected = cconv.conv2d_backward(gy, x, w, groups=groups, output_mask=MASK,
                                         backend=REFERENCE)[1]
        assert_close(gw, expected, context=context)
    assert np.array_equal(x, x0, equal_nan=True) and np.array_equal(gy, gy0, equal_nan=True)
    if long_sums:   # torch's float32 sums are no closer to exact than the reference's
        return gw
    try:
        import torch
    except ImportError:
        return gw
    t = torch.ops.aten.convolution_backward(
        torch.from_numpy(np.ascontiguousarray(gy)), torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(w), None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups, list(MASK))[1]
    assert_close(gw, t.numpy(), context="torch " + context)
    return gw



def _assert_within_sum_bound(gw, gy, x, w, groups, context):
    """gw against the exact (float64) sums, each within the dtype's tolerance of the sum of
    its terms' magnitudes: the right yardstick for sums of thousands of terms, whose result
    can cancel far below them (20000 one-pixel images: the float32 reference itself is off by
    1e-4 of the result there); NaN and inf where the exact sums have them."""
    def grad(a, b):
        return cconv.conv2d_backward(a.astype(np.float64), b.astype(np.float64),
                                     w.astype(np.float64), groups=groups, output_mask=MASK,
                                     backend=REFERENCE)[1]
    exact, scale = grad(gy, x), grad(np.abs(gy), np.abs(x))
    tol = 1e-5 if gw.dtype == np.float32 else 1e-12
    assert gw.dtype == x.dtype and gw.shape == exact.shape, context
    assert np.array_equal(np.isnan(gw), np.isnan(exact)), f"NaN positions differ ({context})"
    finite = np.isfinite(exact)
    assert np.array_equal(gw[~finite & ~np.isnan(exact)], exact[~finite & ~np.isnan(exact)]), context
    error = np.abs(gw[finite] - exact[finite])
    assert np.all(error <= tol * scale[finite]), (
        f"error {error.max():.3e} beyond {tol:g} of the terms' magnitudes ({context})")

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_planner_picks_it_on_few_channels(dtype, rng):
    """Few input or output channels on maps of many pixels: the planner's own choice, each
    random geometry matching the reference and torch."""
    _skip_generic()
    for case in range(8):
        few, other = int(rng.integers(1, 9)), int(rng.integers(1, 97))
        c, o = (few, other) if case % 2 else (other, few)
        n = int(rng.integers(1, 4))
        h, w_ = int(rng.integers(20, 70)), int(rng.integers(20, 70))
        x = rng.standard_normal((n, c, h, w_)).astype(dtype)
        gy = rng.standard_normal((n, o, h, w_)).astype(dtype)
        w = np.zeros((o, c, 1, 1), dtype)
        _check(gy, x, w, 1, f"N{n} C{c}->{o} {h}x{w_} {np.dtype(dtype).name}")
        tally("pointwise dot (in place)", "planner's choice")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("poke", ["none", "x_nan", "x_inf", "gy_inf", "gy_nan_tail"])
def test_nonfinite_and_odd_sizes(dtype, poke, rng):
    """Pixel counts 1..40 and a few large odd ones (vector part, scalar tail, both, a batch
    part ending inside an image), groups, and a NaN or inf in either operand (also in the
    tail that the scalar loop sums): NaN and inf land where the reference puts them.  Images
    smaller than one vector are not given to the in-place kernel (it would sum one product
    per image into the result, sequentially over thousands of images): checked too."""
    _skip_generic()
    for h, w_ in [(1, 1), (1, 7), (3, 5), (4, 4), (5, 8), (2, 17), (40, 1), (37, 29), (63, 65)]:
        groups = int(rng.choice([1, 1, 2, 3]))
        # (one input channel and 1-2 outputs per group would be a depthwise layer)
        c = groups * int(rng.integers(2, 5))
        o = groups * int(rng.integers(1, 4))
        # enough images for the planner to leave direct loops (tiny passes) and rows
        n = max(int(rng.integers(1, 4)), -(-40000 // (c * o * h * w_ // groups)))
        x = rng.standard_normal((n, c, h, w_)).astype(dtype)
        gy = rng.standard_normal((n, o, h, w_)).astype(dtype)
        target = {"x_nan": x, "x_inf": x, "gy_inf": gy, "gy_nan_tail": gy}.get(poke)
        if target is not None:
            value = np.nan if poke.endswith(("nan", "nan_tail")) else np.inf
            index = -1 if poke == "gy_nan_tail" else int(rng.integers(target.size))
            target.flat[index] = value
        w = np.zeros((o, c // groups, 1, 1), dtype)
        in_place = h * w_ * x.itemsize >= 64
        _check(gy, x, w, groups, f"N{n} C{c}->{o} {h}x{w_} g{groups} {poke}", in_place,
               long_sums=True)   # up to 20000 terms per sum
    tally("pointwise dot (in place)", f"odd sizes {poke}")


def test_non_contiguous_inputs(rng):
    """Strided views of x and grad_output give the result of their contiguous copies."""
    _skip_generic()
    xb = rng.standard_normal((2, 6, 50, 90)).astype(np.float32)
    gyb = rng.standard_normal((2, 16, 50, 90)).astype(np.float32)
    x, gy = xb[:, ::2, :, ::2], gyb[:, :, :, 1::2]          # C=3, O=16, 50x45
    assert not x.flags.c_contiguous and not gy.flags.c_contiguous
    w = np.zeros((16, 3, 1, 1), np.float32)
    gw = _check(gy, x, w, 1, "non-contiguous")
    gw_c, _, _ = _grad_weight(np.ascontiguousarray(gy), np.ascontiguousarray(x), w, 1)
    assert_identical(gw, gw_c, "strided vs contiguous")
    tally("pointwise dot (in place)", "non-contiguous")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_for_any_thread_count(dtype, rng):
    """The batch parts are fixed, not per thread: 1, 2 and 3 threads give the same bits, on a
    single image cut between parts and on a batch."""
    _skip_generic()
    saved = cconv.get_num_threads()
    try:
        for n, c, o, h, w_ in [(1, 4, 16, 150, 111), (3, 16, 5, 41, 60)]:
            x = rng.standard_normal((n, c, h, w_)).astype(dtype)
            gy = rng.standard_normal((n, o, h, w_)).astype(dtype)
            w = np.zeros((o, c, 1, 1), dtype)
            results = []
            for threads in (1, 2, 3):
                cconv.set_num_threads(threads)
                gw, plan, _ = _grad_weight(gy, x, w, 1)
                results.append(gw)
            assert plan["batch_parts"] >= 2, plan
            for r in results[1:]:
                assert_identical(r, results[0], f"N{n} C{c}->{o} {h}x{w_}")
    finally:
        cconv.set_num_threads(saved)
    tally("pointwise dot (in place)", "thread counts")


def test_wide_layers_keep_the_gemm(rng):
    """Many channels on both sides: the packed GEMM's reuse wins, and the planner keeps it."""
    x = rng.standard_normal((2, 256, 28, 28)).astype(np.float32)
    gy = rng.standard_normal((2, 256, 28, 28)).astype(np.float32)
    w = np.zeros((256, 256, 1, 1), np.float32)
    plan = cconv.explain("conv2d_backward", gy, x, w, output_mask=MASK)["grad_weight"]
    assert plan["algorithm"] == "im2col", plan
