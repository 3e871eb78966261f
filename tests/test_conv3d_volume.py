"""conv3d on the compiled volume algorithm (an implicit GEMM over a padded copy of each volume)
against the independent N-d NumPy reference: random geometries (odd sizes, stride, dilation,
groups, 'same'/'valid'/int padding, non-contiguous operands, non-finite values), with the
algorithm counters proving which passes ran on it and which folded into a conv2d.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cconv
from cconv import _api_nd
from cconv import _reference_nd as ref
from conftest import assert_close, assert_identical, gemm_tile, run_under_isa, tally

pytestmark = pytest.mark.skipif("cython" not in cconv.available_backends(),
                                reason="the volume algorithm is in the compiled backend")
HERE = os.path.dirname(os.path.abspath(__file__))


def _counts():
    from cconv import _compiled
    return _compiled._conv.algorithm_counts()


def _volume_runs(before):
    """{pass: times the volume algorithm ran it} since ``before``."""
    return {p: n - before.get(("volume", p), 0) for (a, p), n in _counts().items()
            if a == "volume" and n > before.get(("volume", p), 0)}


def _case(rng):
    """A conv3d with 4-8 channels per group in and out: the planner takes the volume (>= 4), and
    the folded conv2d would not run Winograd (< 16 output channels)."""
    groups = int(rng.choice([1, 1, 2]))
    c_in, c_out = groups * int(rng.integers(4, 7)), groups * int(rng.integers(4, 9))
    kernel = tuple(int(k) for k in rng.integers(1, 4, size=3))
    stride = tuple(int(s) for s in rng.integers(1, 3, size=3)) if rng.random() < 0.5 else (1, 1, 1)
    dilation = tuple(int(d) for d in rng.integers(1, 3, size=3))
    size = tuple(int(d * (k - 1) + 1 + rng.integers(0, 6)) for k, d in zip(kernel, dilation))
    mode = rng.integers(0, 4)
    if mode == 0:
        padding, stride = "same", (1, 1, 1)
    elif mode == 1:
        padding = "valid"
    else:
        padding = tuple(int(rng.integers(0, 3)) for _ in range(3))
    n = int(rng.integers(1, 3))
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (n, c_in) + size, (c_out, c_in // groups) + kernel, args


def _ref_args(args, kernel):
    p = args["padding"]
    if p == "valid":
        pads = ((0, 0),) * 3
    elif p == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, args["dilation"])]
        pads = tuple((t // 2, t - t // 2) for t in totals)
    else:
        pads = tuple((q, q) for q in p)
    return args["stride"], pads, args["dilation"], args["groups"]


def _operands(rng, x_shape, w_shape, args, dtype):
    """Random x, w, b of these shapes and the reference's geometry for ``args`` (int or triple
    stride and padding, no dilation or groups)."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    stride = args["stride"] if isinstance(args["stride"], tuple) else (args["stride"],) * 3
    pad = args["padding"] if isinstance(args["padding"], tuple) else (args["padding"],) * 3
    return x, w, b, (stride, tuple((p, p) for p in pad), (1, 1, 1), 1)


def _all_padding(x_shape, w_shape, args):
    """Whether every kernel tap of some dimension reads only zero padding (the planner folds: the
    conv2d's plan knows the output is the bias)."""
    _, pads, dilation, _ = _ref_args(args, w_shape[2:])
    for n, k, s, (p, q), d in zip(x_shape[2:], w_shape[2:], args["stride"], pads, dilation):
        out = (n + p + q - d * (k - 1) - 1) // s + 1
        if all(not any(0 <= o * s - p + t * d < n for o in range(out)) for t in range(k)):
            return True
    return False


def _noncontiguous(rng, a):
    kind = rng.integers(0, 3)
    if kind == 1:
        return np.asfortranarray(a)
    if kind == 2:
        wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    return a


def _sprinkle(rng, a, values=(np.nan, np.inf, -np.inf)):
    a = a.copy()
    flat = a.reshape(-1)
    flat[rng.integers(0, flat.size, size=2)] = rng.choice(values, size=2)
    return a


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_volume_matches_reference(rng, dtype):
    for i in range(16):
        x_shape, w_shape, args = _case(rng)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        finite_w = i % 4 != 3
        if i % 4 == 2:
            x = _sprinkle(rng, x)
        if not finite_w:
            w = _sprinkle(rng, w, (np.inf,))
        geo = _ref_args(args, w_shape[2:])
        ctx = f"{x_shape} {w_shape} {args} finite weights {finite_w}"
        before = _counts()
        with np.errstate(invalid="ignore", over="ignore"):
            y = cconv.conv3d(_noncontiguous(rng, x), _noncontiguous(rng, w), b, **args, backend="cython")
            expected = ref.conv(x, w, b, *geo)
        # (kd, 1, 1) kernels run on a 2-d view; all-padding kernels fold
        rows = _api_nd._conv3d_plan(x_shape, w_shape, **args).depth_as_rows or _all_padding(x_shape, w_shape, args)
        assert _volume_runs(before) == ({} if rows else {"forward": 1}), ctx
        assert_close(y, expected, context=ctx)
        gy = rng.standard_normal(y.shape).astype(dtype)
        if i % 4 == 1:
            gy = _sprinkle(rng, gy)
        before = _counts()
        with np.errstate(invalid="ignore", over="ignore"):
            grads = cconv.conv3d_backward(_noncontiguous(rng, gy), x, w, **args, backend="cython")
            want = ref.conv_backward(gy, x, w, *geo)
        # the input gradient runs on the volume for stride 1 and finite weights, else folds
        expect = {"grad_input": 1} if args["stride"] == (1, 1, 1) and finite_w and not rows else {}
        assert _volume_runs(before) == expect, ctx
        for got, exp, name in zip(grads, want, ("grad_input", "grad_weight", "grad_bias")):
            assert_close(got, exp, context=f"{name} {ctx}")
        only_input = cconv.conv3d_backward(gy, x, w, **args, output_mask=(True, False, False), backend="cython")
        assert only_input[1] is None and only_input[2] is None
        assert_identical(only_input[0], grads[0], context=f"masked {ctx}")
        tally("differential", "conv3d (folded)" if rows else "conv3d (volume)")


def test_volume_unbatched_and_thread_count_invariant(rng):
    x = rng.standard_normal((6, 9, 11, 10)).astype(np.float32)
    w = rng.standard_normal((8, 6, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((8, 9, 11, 10)).astype(np.float32)
    results, saved = [], cconv.get_num_threads()
    try:
        for threads in (1, 2):
            cconv.set_num_threads(threads)
            results.append((cconv.conv3d(x, w, padding=1), cconv.conv3d_backward(gy, x, w, padding=1)[0]))
    finally:
        cconv.set_num_threads(saved)
    for a, b in zip(*results):
        assert_identical(a, b)
    assert_close(results[0][0], ref.conv(x[None], w, None, (1, 1, 1), ((1, 1),) * 3, (1, 1, 1), 1)[0])


def test_explain_says_which_passes_run_on_the_volume(rng):
    x = rng.standard_normal((2, 8, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3, 3)).astype(np.float32)
    plan = cconv.explain("conv3d", x, w, padding=1, backend="cython")["forward"]
    assert plan["algorithm"] == "volume" and plan["runs_as"] == "volume on (2, 8, 5, 6, 7)"
    assert plan["reason"].startswith("conv3d runs on the volume algorithm")
    gy = np.zeros((2, 8, 5, 6, 7), np.float32)
    plans = cconv.explain("conv3d_backward", gy, x, w, padding=1, backend="cython")
    assert plans["grad_input"]["algorithm"] == "volume"
    assert "flipped kernel" in plans["grad_input"]["reason"]
    assert plans["grad_weight"]["runs_as"].startswith("conv2d_backward on ")
    # stride 2, non-finite weights or few output channels: folded into a conv2d
    bad = w.copy()
    bad[0, 0, 0, 0, 0] = np.inf
    assert cconv.explain("conv3d_backward", gy, x, bad, padding=1)["grad_input"]["runs_as"].startswith("conv2d_backward")
    assert cconv.explain("conv3d", x, w[:2], padding=1)["forward"]["runs_as"].startswith("conv2d")
    folded = cconv.explain("conv3d_backward", np.zeros((2, 8, 3, 3, 4), np.float32), x, w, stride=2, padding=1)
    assert folded["grad_input"]["runs_as"].startswith("conv2d_backward")
    # dead taps (reading only zero padding: H = 1, D = 1) are cropped, depth taps too
    for shape, taps in (((2, 8, 5, 1, 7), {"depth": (0, 2), "rows": (1, 1), "cols": (0, 2)}),
                        ((2, 8, 1, 6, 7), {"depth": (1, 1), "rows": (0, 2), "cols": (0, 2)})):
        thin = rng.standard_normal(shape).astype(np.float32)
        for plan in cconv.explain("conv3d_backward", np.zeros(shape[:1] + (8,) + shape[2:], np.float32),
                                        thin, w, padding=1, output_mask=(True, False, False)).values():
            assert plan["algorithm"] == "volume", plan
            assert plan["taps"] == dict(taps, kernel=(3, 3, 3)), plan
        before = _counts()
        y = cconv.conv3d(thin, w, padding=1)
        assert_close(y, ref.conv(thin, w, None, (1, 1, 1), ((1, 1),) * 3, (1, 1, 1), 1))
        gy = rng.standard_normal(y.shape).astype(np.float32)
        assert_close(cconv.conv3d_backward(gy, thin, w, padding=1)[0],
                     ref.conv_backward(gy, thin, w, (1, 1, 1), ((1, 1),) * 3, (1, 1, 1), 1)[0])
        assert _volume_runs(before) == {"forward": 1, "grad_input": 1}
    # where the folded conv2d runs Winograd (3x3 in (h, w), >= 16 channels), it folds
    x16 = rng.standard_normal((2, 16, 6, 10, 10)).astype(np.float32)
    w16 = rng.standard_normal((16, 16, 3, 3, 3)).astype(np.float32)
    wino = cconv.explain("conv3d", x16, w16, padding=1)["forward"]
    assert wino["algorithm"] == "winograd" and wino["runs_as"].startswith("conv2d on ")
    before = _counts()
    assert_close(cconv.conv3d(x16, w16, padding=1),
                 ref.conv(x16, w16, None, (1, 1, 1), ((1, 1),) * 3, (1, 1, 1), 1))
    assert not _volume_runs(before)


def test_forced_volume_runs_few_channels():
    """CCONV_CONV_ALGO=volume takes conv3d passes with fewer than 4 channels per group too
    (including a non-finite weight meeting the depth padding); a forced conv2d algorithm folds."""
    code = """
import numpy as np, cconv
from cconv import _compiled, _reference_nd as ref
from conftest import assert_close
rng = np.random.default_rng(3)
x = rng.standard_normal((2, 3, 5, 6, 4)); w = rng.standard_normal((2, 3, 2, 3, 3))
w[1, 2, 0, 1, 1] = np.inf
with np.errstate(invalid="ignore"):
    y = cconv.conv3d(x, w, padding=(1, 0, 2))
    assert_close(y, ref.conv(x, w, None, (1, 1, 1), ((1, 1), (0, 0), (2, 2)), (1, 1, 1), 1))
w[1, 2, 0, 1, 1] = 0.5
gy = rng.standard_normal(y.shape)
gx = cconv.conv3d_backward(gy, x, w, padding=(1, 0, 2))[0]
assert_close(gx, ref.conv_backward(gy, x, w, (1, 1, 1), ((1, 1), (0, 0), (2, 2)), (1, 1, 1), 1)[0])
counts = _compiled._conv.algorithm_counts()
print(counts.get(("volume", "forward"), 0), counts.get(("volume", "grad_input"), 0))
"""
    for algo, expected in (("volume", "1 1"), ("im2col", "0 0")):
        env = dict(os.environ, CCONV_CONV_ALGO=algo)
        result = subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split() == expected.split(), (algo, result.stdout)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_volume_tasks_of_several_depth_planes(rng, dtype):
    """Volumes large enough to be cut into runs of output depth planes (the last one shorter):
    every run pads its own halo planes and writes only its planes."""
    for x_shape, w_shape, args in [((1, 4, 23, 30, 30), (5, 4, 3, 3, 3), dict(padding=1)),
                                   ((2, 4, 45, 29, 31), (6, 4, 3, 2, 3), dict(stride=(2, 1, 1), padding=(2, 0, 1),
                                                                             dilation=(2, 1, 1)))]:
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        stride, dilation = args.get("stride", (1, 1, 1)), args.get("dilation", (1, 1, 1))
        pad = args["padding"] if isinstance(args["padding"], tuple) else (args["padding"],) * 3
        geo = (stride, tuple((p, p) for p in pad), dilation, 1)
        before = _counts()
        y = cconv.conv3d(x, w, **args, backend="cython")
        assert_close(y, ref.conv(x, w, None, *geo))
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx = cconv.conv3d_backward(gy, x, w, **args, output_mask=(True, False, False), backend="cython")[0]
        assert_close(gx, ref.conv_backward(gy, x, w, *geo)[0])
        assert _volume_runs(before) == ({"forward": 1, "grad_input": 1} if stride == (1, 1, 1) else {"forward": 1})
        plan = cconv.explain("conv3d", x, w, **args)["forward"]
        assert plan["algorithm"] == "volume" and plan["depth_planes_per_task"] < y.shape[2]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_volume_stride2_rows_and_plane_runs(rng, dtype):
    """Stride 2 across rows long enough for the even/odd row split's vector loop, with 0-2
    columns of padding and either row parity (the split's zero edges), and stride-1 volumes
    with small planes whose grid rows beyond the output are skipped plane by plane."""
    for i in range(12):
        kw, pad_w, width = int(rng.integers(1, 4)), int(rng.integers(0, 3)), int(rng.integers(17, 42))
        if i % 2:
            w_shape, args = (6, 4, 3, 3, kw), dict(stride=(1, int(rng.integers(1, 3)), 2), padding=(1, 1, pad_w))
            x_shape = (int(rng.integers(1, 3)), 4, int(rng.integers(3, 7)), int(rng.integers(5, 12)), width)
        else:
            w_shape, args = (7, 5, 3, 3, 3), dict(stride=1, padding=1)
            x_shape = (1, 5, int(rng.integers(4, 9)), int(rng.integers(2, 9)), int(rng.integers(2, 9)))
        x, w, b, geo = _operands(rng, x_shape, w_shape, args, dtype)
        before = _counts()
        y = cconv.conv3d(x, w, b, **args, backend="cython")
        assert _volume_runs(before) == {"forward": 1}, (x_shape, w_shape, args)
        assert_close(y, ref.conv(x, w, b, *geo), context=f"{x_shape} {w_shape} {args}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_volume_output_rows_written_in_place(rng, dtype):
    """Output rows of whole micro-kernel panels (nr columns of this CPU's tile) with longer
    grid rows are computed row by row straight into the output: channel counts that leave a
    partial A strip, a kernel depth over one GEMM depth block (K > 256), several depth runs
    per volume and a team; rows that end in a partial panel, or whose grid rows have no extra
    columns, keep the grid and its copy-out."""
    nr = gemm_tile(dtype)[1]
    cases = [((2, 10, 9, 11, 2 * nr), (7, 10, 3, 3, 3), dict(stride=2, padding=1), True),
             ((1, 4, 23, 9, 4 * nr), (13, 4, 3, 2, 3), dict(stride=(1, 1, 2), padding=(1, 0, 1)), True),
             ((1, 6, 5, 6, nr + 2), (5, 6, 2, 3, 3), dict(stride=1, padding=(0, 1, 0)), True),
             ((2, 4, 6, 9, 2 * nr - 2), (6, 4, 3, 3, 3), dict(stride=2, padding=1), False),
             ((1, 4, 5, 6, 2 * nr), (6, 4, 2, 2, 1), dict(stride=(1, 1, 2), padding=0), False)]
    for x_shape, w_shape, args, in_place in cases:
        x, w, b, geo = _operands(rng, x_shape, w_shape, args, dtype)
        ctx = f"{x_shape} {w_shape} {args}"
        saved = cconv.get_num_threads()
        try:
            for threads in (1, 2):
                cconv.set_num_threads(threads)
                plan = cconv.explain("conv3d", x, w, b, **args)["forward"]
                assert plan["algorithm"] == "volume", ctx
                assert plan["output_rows"] == ("whole panels, written in place" if in_place
                                               else "grid panels, copied out"), ctx
                before = _counts()
                y = cconv.conv3d(x, w, b, **args, backend="cython")
                assert _volume_runs(before) == {"forward": 1}, ctx
                assert_close(y, ref.conv(x, w, b, *geo), context=ctx)
        finally:
            cconv.set_num_threads(saved)
        tally("differential", "conv3d (volume, rows in place)" if in_place else "conv3d (volume)")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_volume_stride2_row_split_every_width(rng, dtype):
    """The stride-2 row split copies four values per phase at a time, then one by one: every
    input width from 3 to 20 (interior runs of 0-9 values: no, one and two vector steps with
    every remainder), both column paddings' parities, on the volume."""
    for width in range(3, 21):
        for pad_w in (0, 1, 2):
            x_shape, w_shape = (1, 4, 3, 4, width), (5, 4, 2, 3, 3)
            args = dict(stride=(1, 1, 2), padding=(0, 1, pad_w))
            if width + 2 * pad_w < 3:
                continue
            x, w, b, geo = _operands(rng, x_shape, w_shape, args, dtype)
            before = _counts()
            y = cconv.conv3d(x, w, b, **args, backend="cython")
            assert _volume_runs(before) == {"forward": 1}, (width, pad_w)
            assert_close(y, ref.conv(x, w, b, *geo), context=f"width {width} pad {pad_w}")


def _padded_volume_elems(x_shape, w_shape, stride, padding, planes, nr):
    """Elements of one task's padded polyphase copy (conv_padded.h's padded_vol_size)."""
    elems = x_shape[1]
    grid = []
    for n, k, s, p in zip(x_shape[2:], w_shape[2:], stride, padding):
        out = (n + 2 * p - k) // s + 1
        grid.append(((min(planes, out) if not grid else out) - 1) * s + k)
    for req, s in zip(grid, stride):
        elems *= s * ((req + s - 1) // s)
    wph = (grid[2] + stride[2] - 1) // stride[2]
    return elems + wph + 2 * nr


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_volume_books_its_c_block_only_for_the_grid(dtype):
    """Each thread's workspace is the padded copy of its task's volume, plus the C block the
    grid's panels are copied out of only where the output is copied out (rows written in
    place use none); the explained sizes, for either layout, are exactly those."""
    round16 = lambda v: (v + 15) // 16 * 16  # noqa: E731
    nr = gemm_tile(dtype)[1]   # output rows of nr columns are whole panels, of nr - 1 not
    cases = [((2, 16, 12, 14, 2 * nr), (12, 16, 3, 3, 3), (2, 2, 2), (1, 1, 1), True),
             ((2, 3, 6, 20, 2 * nr - 2), (32, 3, 3, 3, 3), (1, 2, 2), (1, 1, 1), False)]
    for x_shape, w_shape, stride, padding, in_place in cases:
        x = np.zeros(x_shape, dtype)
        w = np.zeros(w_shape, dtype)
        plan = cconv.explain("conv3d", x, w, stride=stride, padding=padding)["forward"]
        assert plan["algorithm"] == "volume"
        assert (plan["output_rows"] == "whole panels, written in place") == in_place
        mr, nr = plan["tile"]
        per_thread = round16(_padded_volume_elems(x_shape, w_shape, stride, padding,
                                                  plan["depth_planes_per_task"], nr))
        if not in_place:
            per_thread += round16((w_shape[0] + mr - 1) // mr * mr * 4 * nr)
        assert plan["workspace"]["per_thread"] == plan["threads"] * per_thread * x.itemsize, plan


def _tile_runs(before):
    from cconv import _compiled
    now = _compiled._conv.volume_tile_counts()
    return {k: now[k] - before[k] for k in now}


def info_simd():
    return cconv.backend_info()["simd"]


def _tiles_of(dtype):
    """(default tile, the 4 x 3-vector tile or None) of the kernels in force."""
    info = cconv.backend_info()
    default = tuple(info["gemm_tile"][np.dtype(dtype).name])
    if info["simd"] != "avx2":
        return default, None
    return default, (4, 3 * 32 // np.dtype(dtype).itemsize)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_volume_wide_tile_chosen_where_it_pads_fewer_rows(rng, dtype):
    """On AVX2 the volume forward (and the stride-1 input gradient, a forward in disguise)
    runs the 4 x 3-vector tile where its strips and panels compute fewer multiply-add slots
    than the 6 x 2-vector tile's (32 output channels: 32 rows, not 36), never at the price of
    rows written in place; elsewhere (other ISAs, 12 or 6 channels) the default tile.  explain
    names the tile that ran, the counters prove it, the results match the reference."""
    from cconv import _compiled
    default, wide = _tiles_of(dtype)
    cases = [  # x, w, stride, padding, whether the wide tile pays
        ((2, 3, 6, 20, 30), (32, 3, 3, 3, 3), (1, 2, 2), 1, True),   # the video stem, smaller
        ((1, 5, 5, 9, 13), (16, 5, 3, 3, 3), 1, 1, True),
        ((1, 4, 4, 7, 11), (12, 4, 3, 3, 3), 1, 1, False),           # 12 rows either way
        ((1, 4, 4, 7, 11), (6, 4, 2, 2, 2), 1, 0, False),            # 6 rows: 8 in 4-row strips
        ((1, 4, 5, 9, 32), (8, 4, 3, 3, 3), 2, 1, False),            # 16-wide rows in place
    ]
    for x_shape, w_shape, stride, padding, pays in cases:
        args = dict(stride=stride, padding=padding)
        x, w, b, geo = _operands(rng, x_shape, w_shape, args, dtype)
        plan = cconv.explain("conv3d", x, w, b, **args)["forward"]
        ctx = f"{x_shape} {w_shape} {args} {plan}"
        assert plan["algorithm"] == "volume", ctx
        want_wide = pays and wide is not None
        if want_wide:
            assert plan["tile"] == wide, ctx
        elif info_simd() in ("generic", "avx2"):    # AVX-512 may take its 8-row strips
            assert plan["tile"] == default, ctx
        before = _compiled._conv.volume_tile_counts()
        y = cconv.conv3d(x, w, b, **args, backend="cython")
        assert _tile_runs(before) == {"default": int(not want_wide), "wide": int(want_wide)}, ctx
        assert_close(y, ref.conv(x, w, b, *geo), context=ctx)
        tally("differential", "conv3d (volume, 4x3-vector tile)" if want_wide else "conv3d (volume)")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_volume_wide_tile_random_geometries(rng, dtype):
    """Random volume layers of 4-40 output channels (partial 4- and 6-row strips, partial
    panels, several depth runs, strides, dilation, groups, 1 and 2 threads), forward and
    stride-1 input gradient, against the reference; on AVX2 both tiles must have run."""
    from cconv import _compiled
    default, wide = _tiles_of(dtype)
    before = _compiled._conv.volume_tile_counts()
    saved = cconv.get_num_threads()
    try:
        for i in range(24):
            cconv.set_num_threads(1 + i % 2)
            groups = int(rng.choice([1, 1, 2]))
            c_in = groups * int(rng.choice([4, 5, 8, 12]))
            c_out = groups * int(rng.choice([4, 7, 8, 12, 16, 20, 32, 40]))
            kernel = tuple(int(k) for k in rng.integers(1, 4, size=3))
            stride = tuple(int(s) for s in rng.integers(1, 3, size=3)) if i % 3 == 0 else (1, 1, 1)
            dilation = (1, 1, int(rng.integers(1, 3)))
            size = tuple(int(d * (k - 1) + 1 + rng.integers(0, 12)) for k, d in zip(kernel, dilation))
            args = dict(stride=stride, padding=tuple(int(rng.integers(0, 2)) for _ in range(3)),
                        dilation=dilation, groups=groups)
            x_shape, w_shape = (int(rng.integers(1, 3)), c_in) + size, (c_out, c_in // groups) + kernel
            x = rng.standard_normal(x_shape).astype(dtype)
            w = rng.standard_normal(w_shape).astype(dtype)
            b = rng.standard_normal(c_out).astype(dtype)
            geo = _ref_args(args, kernel)
            ctx = f"{x_shape} {w_shape} {args}"
            plan = cconv.explain("conv3d", x, w, b, **args)["forward"]
            if plan["algorithm"] == "volume" and info_simd() in ("generic", "avx2"):
                assert plan["tile"] in (default, wide), ctx
            y = cconv.conv3d(x, w, b, **args, backend="cython")
            assert_close(y, ref.conv(x, w, b, *geo), context=ctx)
            gy = rng.standard_normal(y.shape).astype(dtype)
            gi = cconv.conv3d_backward(gy, x, w, **args, output_mask=(True, False, False),
                                       backend="cython")[0]
            assert_close(gi, ref.conv_backward(gy, x, w, *geo)[0], context=f"grad_input {ctx}")
    finally:
        cconv.set_num_threads(saved)
    runs = _tile_runs(before)
    assert runs["default"] > 0, runs
    assert (runs["wide"] > 0) == (wide is not None), runs
    tally("differential", "conv3d (volume, random tiles)", 24)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_volume_wide_tile_isa_variants(isa):
    """The tile tests again under each CCONV_KERNEL_ISA this CPU runs: AVX2 runs the 4 x
    3-vector tile, generic only its own 4 x 8 tile."""
    run_under_isa(__file__, isa, "wide_tile and not variants", min_passed=4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_strided_weight_gradient_dot_row_split_random(rng, dtype):
    """The dot weight gradient's padded polyphase copy splits each input row into its column
    phases in one pass (stride 2: the even/odd split, four values per phase at a time): random
    strided conv3d layers whose folded conv2d weight gradient explain says runs on the dot
    kernel, every width parity and column padding, against the NumPy reference (and torch,
    where installed), and bit-identical at 1 and 2 threads."""
    try:
        import torch
    except ImportError:
        torch = None
    saved = cconv.get_num_threads()
    ran = 0
    try:
        for _ in range(24):
            c_in, c_out = int(rng.integers(1, 9)), int(rng.integers(4, 17))
            kernel = (int(rng.integers(1, 4)), 3, int(rng.integers(2, 4)))
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.choice([2, 2, 3])))
            padding = (int(rng.integers(0, 2)), int(rng.integers(0, 2)), int(rng.integers(0, 3)))
            size = (int(rng.integers(kernel[0], 6)), int(rng.integers(4, 12)), int(rng.integers(5, 30)))
            if size[2] + 2 * padding[2] < kernel[2]:
                continue
            x_shape, w_shape = (int(rng.integers(1, 3)), c_in) + size, (c_out, c_in) + kernel
            args = dict(stride=stride, padding=padding)
            x, w, _, geo = _operands(rng, x_shape, w_shape, args, dtype)
            y = cconv.conv3d(x, w, **args, backend="cython")
            gy = rng.standard_normal(y.shape).astype(dtype)
            mask = (False, True, False)
            plan = cconv.explain("conv3d_backward", gy, x, w, **args, output_mask=mask)["grad_weight"]
            if plan["algorithm"] != "dot":
                continue
            ran += 1
            ctx = f"x {x_shape} w {w_shape} {args}"
            got = {}
            for threads in (1, 2):
                cconv.set_num_threads(threads)
                got[threads] = cconv.conv3d_backward(gy, x, w, **args, output_mask=mask, backend="cython")[1]
            assert_identical(got[1], got[2], context=ctx)
            assert_close(got[1], ref.conv_backward(gy, x, w, *geo)[1], context=ctx)
            if torch is not None:
                tw = torch.ops.aten.convolution_backward(
                    torch.from_numpy(gy), torch.from_numpy(x), torch.from_numpy(w), [c_out], list(stride),
                    list(padding), [1, 1, 1], False, [0, 0, 0], 1, [False, True, False])[1]
                assert_close(got[1], tw.numpy(), context=ctx + " (torch)")
    finally:
        cconv.set_num_threads(saved)
    assert ran >= 8, ran
    tally("differential", "conv3d weight gradient (dot, strided row split)")
