"""The bands algorithm: dilated (or heavily padded) convolutions on small maps, cut into
rectangles of output pixels that share their live kernel taps.

With dilation comparable to the map, most taps of most output pixels read zero padding.  The
planner cuts each dimension's outputs into bands of equal live-tap ranges and runs every
rectangle as an unpadded im2col sub-pass on its taps.  Here, on random dilated geometries
(odd sizes, kh != kw, stride 1-2, groups, asymmetric 'same' padding), both dtypes: explain
proves the bands path ran (and the pass counters agree), forward, grad_input, grad_weight and
grad_bias match the NumPy reference; a brute-force count of live multiply-adds checks the
rectangles; 1, 2 and 3 threads give the same bits; non-finite weights (forward) or
grad_output (grad_weight) keep a path that multiplies the padding, as PyTorch does.  The
stride-1 input gradient runs as bands on the transposed geometry with the flipped kernel; its
kernels cropped to their live taps unevenly (more dead taps at one end than the other) once
gave wrong results and are pinned here (test_input_gradient_bands).
"""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from cconv import _shapes
from conftest import BACKENDS_UNDER_TEST, REFERENCE, assert_close, assert_identical, tally

pytestmark = pytest.mark.skipif("cython" not in BACKENDS_UNDER_TEST,
                                reason="plans exist in the compiled backend only")


def _counts():
    from cconv import _compiled
    return _compiled._conv.algorithm_counts()


def _ran(before):
    after = _counts()
    return {pass_: algo for (algo, pass_), n in after.items() if n > before.get((algo, pass_), 0)}


def _live_pairs(size, out, kernel, stride, dilation, pad):
    """Brute force: (live (output, tap) pairs, bands with live taps) of one dimension."""
    ranges = []
    for o in range(out):
        taps = [t for t in range(kernel) if 0 <= o * stride - pad + t * dilation < size]
        ranges.append((taps[0], taps[-1] + 1) if taps else None)
    bands = sum(1 for i, r in enumerate(ranges) if r is not None and (i == 0 or ranges[i - 1] != r))
    return sum(r[1] - r[0] for r in ranges if r), bands


def _draw(rng, dtype):
    """A dilated conv2d on a small map, with enough work that the planner takes bands."""
    while True:
        groups = int(rng.choice([1, 1, 2]))
        cin = groups * int(rng.integers(12, 33))
        cout = groups * int(rng.integers(12, 41))
        kh, kw = int(rng.choice([2, 3, 3, 4, 5])), int(rng.choice([2, 3, 3, 4]))
        h, w = int(rng.integers(5, 16)), int(rng.integers(5, 16))
        if rng.random() < 0.25:                       # asymmetric: even kernels, odd dilation
            dilation = (int(rng.choice([3, 5, 7])), int(rng.choice([3, 5, 7])))
            stride, padding = (1, 1), "same"
        else:
            dilation = (int(rng.integers(3, 10)), int(rng.integers(3, 10)))
            stride = (1, 1) if rng.random() < 0.5 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            padding = tuple(int(rng.integers(d * (k - 1) // 2, d * (k - 1) + 1))
                            for d, k in zip(dilation, (kh, kw)))
        n = int(rng.integers(4, 9))
        try:
            g = _shapes.conv_geometry((n, cin, h, w), (cout, cin // groups, kh, kw), stride, padding,
                                      dilation, groups)
        except ValueError:
            continue
        x = rng.standard_normal((n, cin, h, w)).astype(dtype)
        wt = (rng.standard_normal((cout, cin // groups, kh, kw)) * 0.1).astype(dtype)
        b = rng.standard_normal(cout).astype(dtype)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        if cconv.explain("conv2d", x, wt, b, **kwargs)["forward"]["algorithm"] == "bands":
            return x, wt, b, kwargs, g


def _expected_pieces(g, split):
    """Rectangles of a bands plan that cuts ``split`` ("rows", "cols" or "rows x cols")."""
    _, nh = _live_pairs(g.in_h, g.out_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top)
    _, nw = _live_pairs(g.in_w, g.out_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_left)
    return (nh if "rows" in split else 1) * (nw if "cols" in split else 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_dilated_geometries(dtype):
    rng = np.random.default_rng(7 if dtype is np.float32 else 8)
    hits = {"forward": 0, "grad_input": 0, "grad_weight": 0}
    for _ in range(16):
        x, w, b, kwargs, g = _draw(rng, dtype)
        context = f"{dtype.__name__} x{x.shape} w{w.shape} {kwargs}"
        plan = cconv.explain("conv2d", x, w, b, **kwargs)["forward"]
        assert plan["algorithm"] == "bands", (plan, context)
        assert plan["pieces"] == _expected_pieces(g, plan["split"]), (plan, context)
        assert "zero padding" in plan["reason"]
        before = _counts()
        y = cconv.conv2d(x, w, b, **kwargs, backend="cython")
        assert _ran(before) == {"forward": "bands"}, context
        assert_close(y, cconv.conv2d(x, w, b, **kwargs, backend=REFERENCE), context="forward " + context)
        hits["forward"] += 1
        gy = rng.standard_normal(y.shape).astype(dtype)
        plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs)
        before = _counts()
        got = cconv.conv2d_backward(gy, x, w, **kwargs, backend="cython")
        assert _ran(before) == {k: v["algorithm"] for k, v in plan.items()}, (plan, context)
        for name in ("grad_input", "grad_weight"):
            if plan[name]["algorithm"] == "bands":
                hits[name] += 1
        ref = cconv.conv2d_backward(gy, x, w, **kwargs, backend=REFERENCE)
        for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, ref):
            assert_close(a, e, context=f"{name} {context}")
    # grad_input runs as bands only at stride 1 (a forward of grad_output)
    assert hits["forward"] == 16 and hits["grad_input"] >= 3 and hits["grad_weight"] >= 3, hits
    tally("bands (random dilated geometries)", dtype.__name__, sum(hits.values()))


def test_live_work_only():
    """ASPP-like: the rectangles' live pairs are the brute-force count, far below the full."""
    g = _shapes.conv_geometry((1, 8, 33, 33), (8, 8, 3, 3), (1, 1), 18, (18, 18), 1)
    live, bands = _live_pairs(g.in_h, g.out_h, 3, 1, 18, 18)
    assert bands == 3 and live == 15 + 33 + 15   # outer taps live on 15 of 33 rows
    assert (live / (3 * 33)) ** 2 < 0.41


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_on_1_2_3_threads(dtype):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((64, 24, 13, 11)).astype(dtype)
    w = (rng.standard_normal((40, 12, 3, 2)) * 0.1).astype(dtype)
    gy_shape = cconv.conv2d(x, w, padding=(8, 6), dilation=(8, 7), groups=2).shape
    gy = rng.standard_normal(gy_shape).astype(dtype)
    kwargs = dict(padding=(8, 6), dilation=(8, 7), groups=2)
    saved = cconv.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            cconv.set_num_threads(n)
            plan = {**cconv.explain("conv2d", x, w, **kwargs),
                    **cconv.explain("conv2d_backward", gy, x, w, **kwargs)}
            assert all(plan[p]["algorithm"] == "bands"
                       for p in ("forward", "grad_input", "grad_weight")), plan
            if n == 2:
                assert plan["forward"]["threads"] == 2, plan
            results.append((cconv.conv2d(x, w, **kwargs, backend="cython"),)
                           + cconv.conv2d_backward(gy, x, w, **kwargs, backend="cython"))
        for other in results[1:]:
            for a, e in zip(results[0], other):
                assert_identical(e, a, context="bands threads")
    finally:
        cconv.set_num_threads(saved)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["w", "gy", "x"])
def test_nonfinite_operands(dtype, where):
    """Non-finite weights: forward and grad_input multiply the padding (0 * inf = NaN); a
    non-finite grad_output: grad_weight does; a non-finite input changes nothing (bands
    never multiply padding by anything but finite weights)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 32, 9, 9)).astype(dtype)
    w = rng.standard_normal((48, 32, 3, 3)).astype(dtype)
    gy = rng.standard_normal((8, 48, 9, 9)).astype(dtype)
    kwargs = dict(padding=6, dilation=6)
    if where == "w":
        w[3, 4, 0, 0] = np.inf
    elif where == "gy":
        gy[2, 5, 4, 4] = np.nan
    else:
        x[1, 2, 3, 3] = -np.inf
    fwd = cconv.explain("conv2d", x, w, **kwargs)["forward"]["algorithm"]
    plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs)
    assert (fwd == "bands") == (where != "w")
    assert (plan["grad_input"]["algorithm"] == "bands") == (where != "w")
    assert (plan["grad_weight"]["algorithm"] == "bands") == (where != "gy")
    with np.errstate(invalid="ignore", over="ignore"):
        assert_close(cconv.conv2d(x, w, **kwargs, backend="cython"),
                     cconv.conv2d(x, w, **kwargs, backend=REFERENCE), context=f"forward {where}")
        got = cconv.conv2d_backward(gy, x, w, **kwargs, backend="cython")
        ref = cconv.conv2d_backward(gy, x, w, **kwargs, backend=REFERENCE)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, ref):
        assert_close(a, e, context=f"{name} {where}")


def _uneven(g):
    """Whether the stride-1 conv g drops more dead taps at one end of its kernel than at the
    other in some dimension (the flipped kernel of its input gradient then starts at another
    tap than the cropped one)."""
    for size, out, k, d, pad in ((g.in_h, g.out_h, g.kernel_h, g.dilation_h, g.pad_top),
                                 (g.in_w, g.out_w, g.kernel_w, g.dilation_w, g.pad_left)):
        live = [t for t in range(k) if any(0 <= o - pad + t * d < size for o in range(out))]
        if live and live[0] != k - 1 - live[-1]:
            return True
    return False


def _check_input_gradient(x, w, kwargs, context):
    gy = np.random.default_rng(1).standard_normal(
        cconv.conv2d(x, w, **kwargs, backend=REFERENCE).shape).astype(x.dtype)
    plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs)
    assert plan["grad_input"]["algorithm"] == "bands", (plan, context)
    assert "flipped kernel" in plan["grad_input"]["reason"]
    before = _counts()
    got = cconv.conv2d_backward(gy, x, w, **kwargs, output_mask=(True, False, False),
                                backend="cython")[0]
    assert _ran(before) == {"grad_input": "bands"}, context
    ref = cconv.conv2d_backward(gy, x, w, **kwargs, output_mask=(True, False, False),
                                backend=REFERENCE)[0]
    assert_close(got, ref, context="grad_input " + context)
    return plan["grad_input"]


def test_input_gradient_bands():
    """Geometries where bands once gave a wrong input gradient: kernels cropped to their live
    taps unevenly (the fuzzer's x 5x14x5x11, k 4x4, 'same', dilation (5, 7): rows keep taps
    1-2, columns 0-2; x 3x9x9x4, k 4x3, padding (5, 3), dilation 4: columns keep taps 0-1; here
    with more images and channels, so that the planner takes bands on any ISA).  The
    transposed pass's padding had restored the taps dropped before the live ones where the
    flipped kernel puts those dropped after them.  Now bands runs there and matches."""
    rng = np.random.default_rng(3)
    cases = [((8, 48, 5, 11), (64, 48, 4, 4), dict(padding="same", dilation=(5, 7))),
             ((8, 40, 9, 4), (48, 40, 4, 3), dict(padding=(5, 3), dilation=(4, 4)))]
    for x_shape, w_shape, kwargs in cases:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(x_shape).astype(dtype)
            w = rng.standard_normal(w_shape).astype(dtype)
            plan = _check_input_gradient(x, w, kwargs, f"{x_shape} {w_shape} {kwargs}")
            assert plan["taps"]["kernel"] == w_shape[2:], plan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_gradient_bands_random(dtype):
    """Random stride-1 dilated layers whose planner takes bands for the input gradient (padding
    up to past the kernel's extent, 'same' with even kernels, groups), at least half of them
    cropped unevenly: explain and the pass counters say bands ran, and it matches."""
    rng = np.random.default_rng(31 if dtype is np.float32 else 32)
    done = uneven = 0
    while done < 12:
        groups = int(rng.choice([1, 1, 2]))
        cin, cout = groups * int(rng.integers(12, 33)), groups * int(rng.integers(12, 33))
        kh, kw = int(rng.integers(2, 6)), int(rng.integers(2, 5))
        h, w = int(rng.integers(3, 14)), int(rng.integers(3, 14))
        dilation = (int(rng.integers(2, 8)), int(rng.integers(2, 8)))
        padding = ("same" if rng.random() < 0.3 else
                   tuple(int(rng.integers(d * (k - 1) // 2, d * (k - 1) + 6))
                         for d, k in zip(dilation, (kh, kw))))
        try:
            g = _shapes.conv_geometry((4, cin, h, w), (cout, cin // groups, kh, kw), (1, 1),
                                      padding, dilation, groups)
        except ValueError:
            continue
        if g.out_h * g.out_w == 0 or (uneven < done // 2 + 1 and not _uneven(g)):
            continue
        x = rng.standard_normal((4, cin, h, w)).astype(dtype)
        wt = (rng.standard_normal((cout, cin // groups, kh, kw)) * 0.1).astype(dtype)
        kwargs = dict(padding=padding, dilation=dilation, groups=groups)
        gy = np.zeros(cconv.conv2d(x, wt, **kwargs, backend=REFERENCE).shape, dtype)
        if cconv.explain("conv2d_backward", gy, x, wt, **kwargs)["grad_input"]["algorithm"] != "bands":
            continue
        _check_input_gradient(x, wt, kwargs, f"{dtype.__name__} x{x.shape} w{wt.shape} {kwargs}")
        done += 1
        uneven += _uneven(g)
    assert uneven >= 6, uneven
    tally("bands (random input gradients)", dtype.__name__, done)


def _band_list(size, out, kernel, stride, dilation, pad):
    """Brute force: [o0, o1, t0, t1] of each band of one dimension (outputs with the same
    live taps)."""
    bands, prev = [], None
    for o in range(out):
        taps = [t for t in range(kernel) if 0 <= o * stride - pad + t * dilation < size]
        live = (taps[0], taps[-1] + 1) if taps else None
        if live is not None and live == prev:
            bands[-1][1] = o + 1
        elif live is not None:
            bands.append([o, o + 1, *live])
        prev = live
    return bands


def _rectangles(g, plan):
    """(input rows, input columns, output rows, output columns, tap rows, tap columns) of each
    rectangle of a bands plan: a dimension not cut is one band, the whole input and output
    on the plan's (cropped) taps."""
    dims = []
    for cut, size, out, k, stride, d, pad, name in (
            ("rows" in plan["split"], g.in_h, g.out_h, g.kernel_h, g.stride_h, g.dilation_h,
             g.pad_top, "rows"),
            ("cols" in plan["split"], g.in_w, g.out_w, g.kernel_w, g.stride_w, g.dilation_w,
             g.pad_left, "cols")):
        if cut:
            dims.append([((o1 - 1 - o0) * stride + (t1 - 1 - t0) * d + 1, o1 - o0, t1 - t0)
                         for o0, o1, t0, t1 in _band_list(size, out, k, stride, d, pad)])
        else:
            live = plan["taps"][name] if "taps" in plan else (0, k - 1)
            dims.append([(size, out, live[1] - live[0] + 1)])
    return [(a[0], b[0], a[1], b[1], a[2], b[2]) for a in dims[0] for b in dims[1]]


def _check_workspace(plan, g, x, w, pass_):
    """explain's regions of a forward or weight-gradient bands plan against its rectangles:
    on a team a forward's rectangles of at most an equal share of the multiply-adds run side
    by side (if two or more), each thread's block (per_thread) holding their copies and
    sub-pass, their plans in band_tasks; the largest of the others' copies and sub-pass
    workspace in the shared regions."""
    size, n, cin, cout = x.itemsize, x.shape[0], x.shape[1], w.shape[0]

    def booked(elems):
        return -(-elems // 16) * 16

    rects = _rectangles(g, plan)
    assert len(rects) == plan["pieces"], plan
    macs = [n * cout * w.shape[1] * r[2] * r[3] * r[4] * r[5] for r in rects]
    side = [plan["threads"] > 1 and pass_ == "forward" and m * plan["threads"] <= sum(macs)
            for m in macs]
    if sum(side) < 2:
        side = [False] * len(rects)
    assert plan["side_by_side"] == sum(side), plan
    ws = plan["workspace"]
    names = set()
    for key, f in (("band_inputs", lambda r: n * cin * r[0] * r[1]),
                   ("band_outputs", lambda r: n * cout * r[2] * r[3]),
                   ("cropped_weights", lambda r: cout * w.shape[1] * r[4] * r[5])):
        team = [f(r) for r, s in zip(rects, side) if not s]
        if team:
            assert ws[key] == booked(max(team)) * size, (key, plan)
            names |= {key, "sub_pass"}
    if any(side):
        blocks = [(n * cin * r[0] * r[1], n * cout * r[2] * r[3], cout * w.shape[1] * r[4] * r[5])
                  for r, s in zip(rects, side) if s]
        per_thread = sum(booked(max(b[k] for b in blocks)) for k in range(3))
        assert ws["per_thread"] > plan["threads"] * per_thread * size, plan
        names |= {"per_thread", "band_tasks"}
    assert set(ws) == names, (names, plan)
    assert plan["workspace_bytes"] == sum(ws.values()), plan


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_workspace_covers_the_rectangles(dtype, threads):
    """A bands plan books its buffers in its workspace (explain's regions, summing to
    workspace_bytes): input regions, output or grad_output blocks, blocks of weights or
    weight gradient, the sub-passes' workspace (_check_workspace) and, for the input
    gradient, the flipped kernel; the driver allocates nothing else."""
    rng = np.random.default_rng(41)
    hits = {"forward": 0, "grad_input": 0, "grad_weight": 0, "side": 0}
    saved = cconv.get_num_threads()
    try:
        cconv.set_num_threads(threads)
        for _ in range(8):
            x, w, b, kwargs, g = _draw(rng, dtype)
            gy = np.zeros(cconv.conv2d(x, w, b, **kwargs, backend=REFERENCE).shape, dtype)
            plans = {**cconv.explain("conv2d", x, w, b, **kwargs),
                     **cconv.explain("conv2d_backward", gy, x, w, **kwargs)}
            for name in ("forward", "grad_weight"):
                if plans[name]["algorithm"] == "bands":
                    _check_workspace(plans[name], g, x, w, name)
                    hits[name] += 1
                    hits["side"] += plans[name]["side_by_side"] > 0
            plan = plans["grad_input"]
            if plan["algorithm"] == "bands":
                ws = plan["workspace"]
                full = {"rows": (0, w.shape[2] - 1), "cols": (0, w.shape[3] - 1)}
                rows, cols = plan.get("taps", full)["rows"], plan.get("taps", full)["cols"]
                taps = (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1)
                assert ws["flipped_weights"] == -(-w.size // w.shape[2] // w.shape[3] * taps
                                                  // 16) * 16 * x.itemsize, plan
                assert {"band_tasks", "per_thread"} <= set(ws) if plan["side_by_side"] else \
                    {"band_inputs", "sub_pass"} <= set(ws), plan
                assert plan["workspace_bytes"] == sum(ws.values()), plan
                hits["grad_input"] += 1
    finally:
        cconv.set_num_threads(saved)
    assert hits["forward"] == 8 and hits["grad_input"] >= 2 and hits["grad_weight"] >= 2, hits
    assert (hits["side"] >= 4) == (threads > 1), hits
