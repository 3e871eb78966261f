"""The 1x1 forward and input gradient by the GEMM that reads its B operand in place
(explain: algorithm "im2col", variant "in_place"; src/conv_pointwise.h): the input (or
grad_output) planes are the panels, the output is written where it lives, only an image's
short last panel is packed.

Differential against the NumPy reference (and torch when installed) on random 1x1
geometries: odd channel counts, batch 1-3, odd maps (a short last panel, one panel exactly,
many), groups, row parts on a team, non-contiguous and Fortran-ordered inputs, NaN/Inf,
both dtypes; proof that the variant ran (the extension's counters, agreeing with explain).
The module runs again under each instruction set (CCONV_KERNEL_ISA, in a subprocess).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import cconv
from conftest import REFERENCE, assert_close, compiled_only, gemm_tile, run_under_isa, tally

pytestmark = compiled_only("the in-place GEMM")
GI = (True, False, False)


def _counts():
    from cconv import _compiled
    return _compiled._conv.pointwise_variant_counts()


def _ran(before):
    return {k for k, n in _counts().items() if n > before[k]}


def _forward(x, w, b, groups):
    """The compiled forward with proof that the in-place variant ran."""
    plan = cconv.explain("conv2d", x, w, b, groups=groups)["forward"]
    assert plan["algorithm"] == "im2col" and plan["variant"] == "in_place", plan
    before = _counts()
    y = cconv.conv2d(x, w, b, groups=groups, backend="cython")
    assert _ran(before) == {("forward", "in_place")}, (_ran(before), plan)
    return y


def _grad_input(gy, x, w, groups):
    """The compiled input gradient; in place (proved) unless the planner says otherwise
    (few input channels on a tiny pass, non-finite weights).  Returns (gi, in_place)."""
    plan = cconv.explain("conv2d_backward", gy, x, w, groups=groups, output_mask=GI)["grad_input"]
    in_place = plan.get("variant") == "in_place"
    before = _counts()
    gi = cconv.conv2d_backward(gy, x, w, groups=groups, output_mask=GI, backend="cython")[0]
    if in_place:
        assert plan["algorithm"] == "im2col" and plan["weights"] == "packed", plan
        assert _ran(before) == {("grad_input", "in_place")}, (_ran(before), plan)
    else:
        assert ("grad_input", "in_place") not in _ran(before), plan
    return gi, in_place


def _torch_check(x, w, b, gy, groups, y, gi, context):
    try:
        import torch
    except ImportError:
        return
    tx, tw = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(w))
    tb = None if b is None else torch.from_numpy(b)
    assert_close(y, torch.nn.functional.conv2d(tx, tw, tb, groups=groups).numpy(),
                 context="torch " + context)
    t_gi = torch.ops.aten.convolution_backward(
        torch.from_numpy(np.ascontiguousarray(gy)), tx, tw, None, [1, 1], [0, 0], [1, 1], False,
        [0, 0], groups, list(GI))[0]
    assert_close(gi, t_gi.numpy(), context="torch " + context)


def _check(x, w, b, groups, context):
    """Forward and grad_input through the in-place variant against the reference (and torch);
    the inputs are not modified."""
    copies = [a.copy() for a in (x, w)]
    y = _forward(x, w, b, groups)
    assert_close(y, cconv.conv2d(x, w, b, groups=groups, backend=REFERENCE), context=context)
    gy = np.random.default_rng(zlib.crc32(repr((x.shape, w.shape)).encode())).standard_normal(y.shape).astype(x.dtype)
    gi, gi_in_place = _grad_input(gy, x, w, groups)
    expected = cconv.conv2d_backward(gy, x, w, groups=groups, output_mask=GI, backend=REFERENCE)[0]
    assert_close(gi, expected, context="grad_input " + context)
    for a, a0 in zip((x, w), copies):
        assert np.array_equal(a, a0, equal_nan=True), context
    if np.isfinite(x).all() and np.isfinite(w).all():
        _torch_check(x, w, b, gy, groups, y, gi, context)
    _check.gi_in_place += gi_in_place
    return y, gi


_check.gi_in_place = 0


def _draw(rng, dtype, groups=1):
    """A random 1x1 layer the planner gives the in-place GEMM: odd channel counts of 4-100
    per group, batch 1-3, maps of 4-40 pixels a side (>= 16 pixels)."""
    c = groups * int(rng.choice([4, 5, 17, 24, 33, int(rng.integers(4, 101))]))
    o = groups * int(rng.choice([4, 7, 16, 17, 33, 100, int(rng.integers(4, 101))]))
    n = int(rng.integers(1, 4))
    while True:
        h, w_ = int(rng.integers(4, 41)), int(rng.integers(4, 41))
        if h * w_ >= 16:
            break
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = (rng.standard_normal((o, c // groups, 1, 1)) / np.sqrt(c)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if rng.random() < 0.5 else None
    return x, w, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_layers(dtype, rng):
    """Random geometries (groups 1-3) where the planner picks the variant."""
    done, gi_before = 0, _check.gi_in_place
    for _ in range(40):
        groups = int(rng.choice([1, 1, 2, 3]))
        x, w, b = _draw(rng, dtype, groups)
        plan = cconv.explain("conv2d", x, w, b, groups=groups)["forward"]
        if plan.get("variant") != "in_place":   # e.g. small maps at batch > 1 span images
            continue
        _check(x, w, b, groups, f"{x.shape} -> {w.shape} g{groups} {np.dtype(dtype).name}")
        done += 1
    assert done >= 20 and _check.gi_in_place - gi_before >= 15, (done, _check.gi_in_place)
    tally("pointwise in-place GEMM", f"random {np.dtype(dtype).name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", ["whole panels", "whole panels and one", (7, 7), (5, 13), (8, 8),
                                  (14, 14), (3, 67), (56, 56)])
def test_panel_edges(size, dtype, rng):
    """Maps whose pixel count is whole panels (one of nr columns, this CPU's tile width, or two
    where nr < 16: the layers below need 16 pixels to reach the GEMM), a few panels and a
    short last one (the packed edge), on output channel counts that are no multiple of the
    tile height."""
    nr = gemm_tile(dtype)[1]
    whole = -(-16 // nr) * nr
    h, w_ = {"whole panels": (1, whole), "whole panels and one": (1, whole + 1)}.get(size, size)
    for c, o in [(300, 7), (100, 33), (3, 700), (21, 200)]:   # >= 32768 multiply-adds
        x = rng.standard_normal((1, c, h, w_)).astype(dtype)
        w = rng.standard_normal((o, c, 1, 1)).astype(dtype)
        _check(x, w, rng.standard_normal(o).astype(dtype), 1, f"1x{c}x{h}x{w_} -> {o}")
    tally("pointwise in-place GEMM", "panel edges")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deep_layers_cross_depth_blocks(dtype, rng):
    """More input channels than one depth block (kc): later blocks accumulate into y."""
    x = rng.standard_normal((1, 1100, 9, 9)).astype(dtype)
    w = (rng.standard_normal((20, 1100, 1, 1)) / 30).astype(dtype)
    _check(x, w, rng.standard_normal(20).astype(dtype), 1, "deep")
    tally("pointwise in-place GEMM", "depth blocks")


@pytest.mark.parametrize("poke", ["x_nan", "x_inf", "w_inf", "w_nan", "x_inf_edge"])
def test_nonfinite(poke, rng):
    """NaN and inf land where the reference puts them (also in the packed short panel)."""
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 19, 9, 10)).astype(dtype)
        w = rng.standard_normal((23, 19, 1, 1)).astype(dtype)
        if poke == "x_inf_edge":
            x[1, 4, -1, -1] = np.inf
        elif poke.startswith("x"):
            x.flat[int(rng.integers(x.size))] = np.nan if poke.endswith("nan") else np.inf
        else:
            w.flat[int(rng.integers(w.size))] = np.nan if poke.endswith("nan") else np.inf
        y = _forward(x, w, None, 1)
        assert_close(y, cconv.conv2d(x, w, backend=REFERENCE), context=poke)
        if poke.startswith("x"):   # non-finite weights: grad_input takes col2im (no flip)
            gy = rng.standard_normal(y.shape).astype(dtype)
            gi, in_place = _grad_input(gy, x, w, 1)
            assert in_place
            assert_close(gi, cconv.conv2d_backward(gy, x, w, output_mask=GI,
                                                   backend=REFERENCE)[0], context=poke)
    tally("pointwise in-place GEMM", f"non-finite {poke}")


def test_array_layouts(rng):
    """Strided views and Fortran-ordered arrays give their contiguous copies' results."""
    xb = rng.standard_normal((2, 40, 30, 50)).astype(np.float32)
    x = xb[:, ::2, :, 1::2]                                # C=20, 30x25, non-contiguous
    xf = np.asfortranarray(xb[:1, :17])
    w = rng.standard_normal((24, 20, 1, 1)).astype(np.float32)
    wf = np.asfortranarray(rng.standard_normal((9, 17, 1, 1)).astype(np.float32))
    assert not x.flags.c_contiguous and not xf.flags.c_contiguous
    y, gi = _check(x, w, None, 1, "strided")
    y_c, gi_c = _check(np.ascontiguousarray(x), w, None, 1, "strided copy")
    np.testing.assert_array_equal(y, y_c)
    np.testing.assert_array_equal(gi, gi_c)
    _check(xf, wf, None, 1, "fortran")
    tally("pointwise in-place GEMM", "layouts")


def test_row_parts_on_a_team(rng):
    """Batch 1 on small maps: each column block is cut into row parts on 2-3 threads; the
    results equal one thread's bit for bit (each output element is one thread's sum)."""
    saved = cconv.get_num_threads()
    try:
        x = rng.standard_normal((1, 160, 7, 7)).astype(np.float32)
        w = rng.standard_normal((320, 160, 1, 1)).astype(np.float32)
        outs = []
        for threads in (1, 2, 3):
            cconv.set_num_threads(threads)
            outs.append(_check(x, w, None, 1, f"team {threads}"))
        for y, gi in outs[1:]:
            np.testing.assert_array_equal(y, outs[0][0])
            np.testing.assert_array_equal(gi, outs[0][1])
    finally:
        cconv.set_num_threads(saved)
    tally("pointwise in-place GEMM", "teams")


def test_explain_names_the_variant():
    """explain reports the variant and its reason; large maps at batch > 1 where spanning
    images saves columns keep the packed panels."""
    x = np.zeros((1, 24, 56, 56), np.float32)
    w = np.zeros((144, 24, 1, 1), np.float32)
    plan = cconv.explain("conv2d", x, w)["forward"]
    assert plan["variant"] == "in_place" and "in place" in plan["reason"], plan
    assert plan["weights"] == "packed", plan          # 3136 pixels: each weight meets many panels
    x = np.zeros((1, 160, 7, 7), np.float32)
    w = np.zeros((960, 160, 1, 1), np.float32)
    assert cconv.explain("conv2d", x, w)["forward"]["weights"] == "read in place"
    gy = np.zeros((1, 960, 7, 7), np.float32)
    gi = cconv.explain("conv2d_backward", gy, x, w, output_mask=GI)["grad_input"]
    assert gi["variant"] == "in_place" and gi["weights"] == "packed", gi
    x = np.zeros((8, 64, 7, 7), np.float32)           # 49 pixels: panels span images
    w = np.zeros((64, 64, 1, 1), np.float32)
    assert cconv.explain("conv2d", x, w)["forward"]["variant"] == "packed"


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512f"])
def test_instruction_set_variants(isa):
    """This module again, in a subprocess with the kernels switched to one instruction set."""
    run_under_isa(__file__, isa, "not variants", min_passed=20)
    tally("pointwise in-place GEMM (instruction sets)", isa)
