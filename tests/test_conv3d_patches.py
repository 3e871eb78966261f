"""conv3d backward on the compiled backend's kernel == stride lowering (no padding: the
patches do not overlap, so the conv3d is a 1x1 conv2d of the patches gathered into the
channels) and the compiled scatter of a folded conv3d's input gradient back into its depth
slices, against the independent N-d NumPy reference and the NumPy backend (which keeps the
depth fold), with explain and the algorithm counters proving which path ran.
"""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from cconv import _api_nd
from cconv import _reference_nd as ref
from conftest import assert_close, assert_identical, tally

pytestmark = pytest.mark.skipif("cython" not in cconv.available_backends(),
                                reason="the patch lowering and the compiled scatter are the compiled backend's")

PATCHES = "non-overlapping kernel == stride patches"


def _counts():
    from cconv import _compiled
    return _compiled._conv.algorithm_counts()


def _ran(before):
    """{(algorithm, pass): runs} since ``before``."""
    return {k: n - before.get(k, 0) for k, n in _counts().items() if n > before.get(k, 0)}


def _patch_case(rng):
    """kernel == stride, no padding: odd sizes leave edge remainders no patch reads; dilation
    only on size-1 kernel dimensions (where it changes nothing); groups; wide channel counts
    now and then (the 1x1 conv2d's GEMMs)."""
    groups = int(rng.choice([1, 1, 2, 3]))
    wide = rng.random() < 0.3
    c_in = groups * int(rng.integers(8, 24) if wide else rng.integers(1, 5))
    c_out = groups * int(rng.integers(8, 40) if wide else rng.integers(1, 5))
    kernel = tuple(int(k) for k in rng.integers(1, 4, size=3))
    if kernel[1:] == (1, 1):           # (kd, 1, 1) with unit (h, w) stride runs on a row view
        kernel = kernel[:2] + (2,)
    size = tuple(int(k * rng.integers(1, 4) + rng.integers(0, k)) for k in kernel)
    dilation = tuple(1 if k > 1 else int(rng.integers(1, 3)) for k in kernel)
    padding = "valid" if rng.random() < 0.3 else 0
    n = int(rng.integers(1, 3))
    args = dict(stride=kernel, padding=padding, dilation=dilation, groups=groups)
    return (n, c_in) + size, (c_out, c_in // groups) + kernel, args


def _ref_geo(args):
    return args["stride"], ((0, 0),) * 3, args["dilation"], args["groups"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_patches_backward_matches_reference(rng, dtype):
    for i in range(24):
        x_shape, w_shape, args = _patch_case(rng)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        y = cconv.conv3d(x, w, **args, backend="cython")
        gy = rng.standard_normal(y.shape).astype(dtype)
        if i % 4 == 3:                 # non-finite values pass through the 1x1 GEMMs as in the reference
            gy.reshape(-1)[rng.integers(0, gy.size, 2)] = [np.inf, np.nan]
            x.reshape(-1)[rng.integers(0, x.size)] = -np.inf
        mask = [(True, True, True), (True, False, False), (False, True, True)][i % 3]
        ctx = f"{x_shape} {w_shape} {args} mask {mask}"
        plan = cconv.explain("conv3d_backward", gy, x, w, **args, output_mask=mask, backend="cython")
        assert plan and all(PATCHES in e["runs_as"] for e in plan.values()), (ctx, plan)
        before = _counts()
        with np.errstate(invalid="ignore", over="ignore"):
            grads = cconv.conv3d_backward(gy[:, ::-1].copy()[:, ::-1], x, w, **args, output_mask=mask,
                                          backend="cython")
            want = ref.conv_backward(gy, x, w, *_ref_geo(args))
            numpy_fold = cconv.conv3d_backward(gy, x, w, **args, output_mask=mask, backend="numpy")
        ran = _ran(before)
        assert ("volume", "grad_input") not in ran, ctx
        for name in ("grad_input", "grad_weight"):
            if name in plan:           # the 1x1 conv2d ran the pass on the algorithm explain names
                assert ran.get((plan[name]["algorithm"], name), 0) == 1, (ctx, name, plan[name], ran)
        for got, exp, fold, name, need in zip(grads, want, numpy_fold, ("grad_input", "grad_weight", "grad_bias"),
                                              mask):
            if not need:
                assert got is None
                continue
            assert_close(got, exp, context=f"{name} {ctx}")
            assert_close(got, fold, context=f"{name} vs numpy backend {ctx}")
        tally("differential", "conv3d backward (kernel == stride patches)")


def test_patches_unbatched_remainders_and_threads(rng):
    """The input elements past the last whole patch get exact zeros; results are the same bits
    on 1 and 2 threads; an unbatched call drops the batch axis."""
    x = rng.standard_normal((40, 9, 35, 37)).astype(np.float32)     # large enough for a 2-thread copy
    w = rng.standard_normal((24, 40, 2, 4, 4)).astype(np.float32)
    y = cconv.conv3d(x, w, stride=(2, 4, 4))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    results, saved = [], cconv.get_num_threads()
    try:
        for threads in (1, 2):
            cconv.set_num_threads(threads)
            results.append(cconv.conv3d_backward(gy, x, w, stride=(2, 4, 4)))
    finally:
        cconv.set_num_threads(saved)
    for a, b in zip(*results):
        assert_identical(a, b)
    gx, gw, _ = results[0]
    assert gx.shape == x.shape
    assert not gx[:, 8:].any() and not gx[:, :, 32:].any() and not gx[:, :, :, 36:].any()
    want = ref.conv_backward(gy[None], x[None], w, (2, 4, 4), ((0, 0),) * 3, (1, 1, 1), 1)
    assert_close(gx, want[0][0])
    assert_close(gw, want[1])


def test_patches_not_taken_where_patches_overlap_or_on_numpy(rng):
    x_shape, w_shape = (2, 4, 8, 8, 8), (6, 4, 2, 2, 2)
    for args in (dict(stride=2, padding=1), dict(stride=1), dict(stride=(2, 2, 1)), dict(stride=2, dilation=2)):
        plan = _api_nd._conv3d_plan(x_shape, w_shape, args.get("stride"), args.get("padding", 0),
                                    args.get("dilation", 1), 1)
        assert plan.patches is None, args
    plan = _api_nd._conv3d_plan(x_shape, w_shape, 2, 0, 1, 1)
    assert plan.patches == (2, 2, 2)
    assert _api_nd._patches(plan, "numpy", np.dtype(np.float32)) is None
    assert _api_nd._patches(plan, "cython", np.dtype(np.float64)) is not None
    calls = _api_nd.plan_2d("conv3d_backward", x_shape, w_shape, 2, backend="cython")
    assert calls == [("conv2d_backward", (2, 32, 4, 16), (6, 32, 1, 1),
                      dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1))]
    assert _api_nd.plan_2d("conv3d_backward", x_shape, w_shape, 2, backend="numpy")[0][1] == (8, 8, 8, 8)
    x, w = np.ones(x_shape, np.float32), np.ones(w_shape, np.float32)
    gy = np.ones((2, 6, 4, 4, 4), np.float32)
    assert all(PATCHES not in e["runs_as"]
               for e in cconv.explain("conv3d_backward", gy, x, w, stride=2, backend="numpy").values())
    # the forward stays on the volume algorithm
    assert cconv.explain("conv3d", x, w, stride=2, backend="cython")["forward"]["algorithm"] == "volume"


def _depth_geometry(rng):
    groups = int(rng.choice([1, 2, 3]))
    cg, n = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    kd, stride, dilation, pad = (int(v) for v in (rng.integers(1, 4), rng.integers(1, 3), rng.integers(1, 3),
                                                  rng.integers(0, 3)))
    depth = int(rng.integers(max(1, dilation * (kd - 1) + 1 - 2 * pad), 9))
    out = (depth + 2 * pad - dilation * (kd - 1) - 1) // stride + 1
    shape = (n, groups * cg, depth, int(rng.integers(1, 5)), int(rng.integers(1, 6)))
    return shape, _api_nd._DepthMap(depth, out, kd, stride, pad, dilation), groups


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_depth_scatter_has_the_numpy_bits(rng, dtype):
    """The compiled scatter of a folded input gradient adds the taps in the NumPy fold's order
    from a zero: the same bits, signed zeros and non-finite values included, on any thread count."""
    from cconv import _compiled
    saved = cconv.get_num_threads()
    try:
        for _ in range(60):
            shape, m, groups = _depth_geometry(rng)
            n, c = shape[:2]
            z = rng.standard_normal((n * m.out, c * m.taps) + shape[3:]).astype(dtype)
            flat = z.reshape(-1)
            flat[::7] = -0.0
            flat[rng.integers(0, z.size, 2)] = [np.inf, np.nan]
            with np.errstate(invalid="ignore"):
                want = _api_nd._scatter_depth(z, m, n, c, groups)
            depth = (m.size, m.taps, m.stride, m.pad, m.dilation, m.out)
            for threads in (1, 2):
                cconv.set_num_threads(threads)
                got = _compiled.conv3d_depth_scatter(z, shape, depth, groups)
                assert got.tobytes() == want.tobytes(), (shape, m, groups, threads)
        big = (2, 16, 32, 32, 32)          # a 2-thread scatter
        m = _api_nd._DepthMap(32, 16, 3, 2, 1, 1)
        z = rng.standard_normal((2 * 16, 48, 32, 32)).astype(dtype)
        cconv.set_num_threads(2)
        got = _compiled.conv3d_depth_scatter(z, big, (32, 3, 2, 1, 1, 16), 1)
        assert got.tobytes() == _api_nd._scatter_depth(z, m, 2, 16, 1).tobytes()
    finally:
        cconv.set_num_threads(saved)
    tally("differential", "conv3d depth scatter (bits)")


def test_folded_strided_grad_input_matches_reference(rng):
    """A stride-2 padded conv3d's input gradient (folded: col2im, then the compiled depth scatter)."""
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 5, 9, 8, 7)).astype(dtype)
        w = rng.standard_normal((6, 5, 3, 3, 3)).astype(dtype)
        gy = rng.standard_normal(cconv.conv3d(x, w, stride=2, padding=1).shape).astype(dtype)
        plan = cconv.explain("conv3d_backward", gy, x, w, stride=2, padding=1, backend="cython")
        assert plan["grad_input"]["runs_as"].startswith("conv2d_backward on (10, 15, 8, 7)")
        gx = cconv.conv3d_backward(gy, x, w, stride=2, padding=1, output_mask=(True, False, False))[0]
        assert_close(gx, ref.conv_backward(gy, x, w, (2, 2, 2), ((1, 1),) * 3, (1, 1, 1), 1)[0])
        assert_close(gx, cconv.conv3d_backward(gy, x, w, stride=2, padding=1, output_mask=(True, False, False),
                                               backend="numpy")[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stride2_col2im_pairs_match_reference(rng, dtype):
    """The col2im input gradient of stride-2 width-undilated kernels adds neighbour taps in
    pairs (interleaved columns): every edge of the pair's column range against the NumPy
    backend, padding and widths of both parities included."""
    hits = 0
    for _ in range(40):
        groups = int(rng.choice([1, 2]))
        c, o = groups * int(rng.integers(1, 5)), groups * int(rng.integers(8, 24))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(2, 6))
        pad = (int(rng.integers(0, 2)), int(rng.integers(0, kw)))
        h, w_ = int(rng.integers(kh + 4, 16)), int(rng.integers(max(1, kw - 2 * pad[1]), 40))
        x = rng.standard_normal((int(rng.integers(1, 3)), c, h, w_)).astype(dtype)
        w = rng.standard_normal((o, c // groups, kh, kw)).astype(dtype)
        args = dict(stride=(int(rng.integers(1, 3)), 2), padding=pad, dilation=(int(rng.integers(1, 3)), 1),
                    groups=groups)
        try:
            y = cconv.conv2d(x, w, **args, backend="numpy")
        except ValueError:
            continue
        gy = rng.standard_normal(y.shape).astype(dtype)
        plan = cconv.explain("conv2d_backward", gy, x, w, **args, output_mask=(True, False, False), backend="cython")
        if plan["grad_input"]["algorithm"] != "col2im":    # the planner's rows, for few pixels
            continue
        hits += 1
        got = cconv.conv2d_backward(gy, x, w, **args, output_mask=(True, False, False), backend="cython")[0]
        want = cconv.conv2d_backward(gy, x, w, **args, output_mask=(True, False, False), backend="numpy")[0]
        assert_close(got, want, context=f"{x.shape} {w.shape} {args}")
        tally("differential", "conv2d col2im stride 2 (tap pairs)")
    assert hits >= 10
