"""Kernel taps that only ever read the zero padding are dropped by the compiled planner.

On small maps with large kernels or padding (a 7x1 kernel with padding 3 on a 1x1 map: only
the centre tap reads the input) the planner runs each pass on the cropped kernel, where that
saves enough multiply-adds per weight plane to pay for the crop (the batches below are sized
so that it does; ``test_crop_only_where_it_pays`` checks the other side).  Here, on
random such geometries (odd sizes, kh != kw, stride, dilation, groups, depthwise, 'same'
padding with even kernels, transposed convolutions, conv1d and conv3d), both dtypes and every
pass: ``explain`` names the live taps (the proof that the crop ran, checked against a brute
force count), and the results match the NumPy reference, NaN and Inf included.  A dead tap is
dropped from a forward pass only when the weights are finite and from a weight gradient only
when grad_output is (PyTorch computes 0 * inf = NaN on the padding); the input gradient never
adds a dead tap's products to a real pixel.
"""
from __future__ import annotations

import numpy as np
import pytest

import cconv
from cconv import _shapes
from conftest import BACKENDS_UNDER_TEST, REFERENCE, assert_close

pytestmark = pytest.mark.skipif("cython" not in BACKENDS_UNDER_TEST,
                                reason="plans exist in the compiled backend only")


def _live(size, out, kernel, stride, dilation, pad):
    """(first, last) live tap of one dimension, by brute force over every output position;
    the first is capped at pad // dilation (the cropped kernel never pads negatively)."""
    live = [t for t in range(kernel)
            if any(0 <= o * stride + t * dilation - pad < size for o in range(out))]
    if not live:
        return None
    return min(live[0], pad // dilation), live[-1]


def _expected_taps(g):
    """explain's "taps" entry for conv geometry ``g``: None when every tap is live, "none"
    when no tap is."""
    rows = _live(g.in_h, g.out_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top)
    cols = _live(g.in_w, g.out_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_left)
    if rows is None or cols is None:
        return "none"
    if rows == (0, g.kernel_h - 1) and cols == (0, g.kernel_w - 1):
        return None
    return {"rows": rows, "cols": cols, "kernel": (g.kernel_h, g.kernel_w)}


def _crop_pays(g):
    """The batch of geometry g raised so that cropping pays for every pass: each weight used at
    least TRIM_PLANE_MACS times over the output pixels (and the input pixels: the input
    gradient run as a forward) saves that many multiply-adds per dead tap."""
    from cconv import _backends
    need = _backends._compiled._conv.TRIM_PLANE_MACS
    pixels = min(g.out_h * g.out_w, g.in_h * g.in_w)
    return max(g.batch, -(-need // pixels))


def _channels(rng):
    if rng.random() < 0.25:                       # depthwise, channel multiplier 1 or 2
        c = int(rng.integers(1, 7))
        return c, c * int(rng.integers(1, 3)), c
    groups = int(rng.choice([1, 1, 2, 3]))
    return groups * int(rng.integers(1, 6)), groups * int(rng.integers(1, 9)), groups


def _draw_conv(rng, dtype):
    """(x, w, b, kwargs, geometry) of a conv2d on a small map with at least one dead tap."""
    while True:
        cin, cout, groups = _channels(rng)
        kh, kw = (int(k) for k in rng.integers(1, 8, size=2))
        h, w = (int(s) for s in rng.integers(1, 5, size=2))
        if rng.random() < 0.25:                   # asymmetric for even kernels
            stride, dilation, padding = (1, 1), (1, int(rng.integers(1, 3))), "same"
        else:
            stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
            dilation = tuple(int(d) for d in rng.integers(1, 3, size=2))
            padding = (int(rng.integers(0, dilation[0] * (kh - 1) + 2)),
                       int(rng.integers(0, dilation[1] * (kw - 1) + 2)))
        n = int(rng.integers(1, 4))
        try:
            g = _shapes.conv_geometry((n, cin, h, w), (cout, cin // groups, kh, kw), stride, padding,
                                      dilation, groups)
        except ValueError:
            continue
        if _expected_taps(g) is not None:
            n = _crop_pays(g)
            g = _shapes.conv_geometry((n, cin, h, w), (cout, cin // groups, kh, kw), stride, padding,
                                      dilation, groups)
            break
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    wt = rng.standard_normal((cout, cin // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    return x, wt, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups), g


def _dead_tap(g):
    """(row, col) of a dead kernel tap of geometry g."""
    for p in range(g.kernel_h):
        for q in range(g.kernel_w):
            if not any(0 <= oh * g.stride_h + p * g.dilation_h - g.pad_top < g.in_h
                       and 0 <= ow * g.stride_w + q * g.dilation_w - g.pad_left < g.in_w
                       for oh in range(g.out_h) for ow in range(g.out_w)):
                return p, q
    raise AssertionError("no dead tap")


def _check_entry(entry, expected, trimmed, context):
    if expected == "none" and trimmed:
        assert entry["algorithm"] == "empty" and "padding" in entry["reason"], (entry, context)
        assert "taps" not in entry
    elif trimmed:
        assert entry.get("taps") == expected, (entry, expected, context)
        assert "cropped_weights" in entry["workspace"], (entry, context)
        assert entry["reason"].startswith("only kernel taps"), (entry, context)
    else:
        assert "taps" not in entry and entry["algorithm"] != "empty", (entry, context)


def _run_conv(x, w, b, kwargs, g, gy, context, nonfinite_w=False, nonfinite_gy=False):
    """Forward and backward against the reference; explain proves which passes were cropped."""
    expected = _expected_taps(g)
    plan = cconv.explain("conv2d", x, w, b, **kwargs)
    _check_entry(plan["forward"], expected, not nonfinite_w, "forward " + context)
    with np.errstate(invalid="ignore", over="ignore"):
        assert_close(cconv.conv2d(x, w, b, **kwargs), cconv.conv2d(x, w, b, **kwargs, backend=REFERENCE),
                     context="forward " + context)
        plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs)
        _check_entry(plan["grad_input"], expected, True, "grad_input " + context)
        _check_entry(plan["grad_weight"], expected, not nonfinite_gy, "grad_weight " + context)
        got = cconv.conv2d_backward(gy, x, w, **kwargs)
        ref = cconv.conv2d_backward(gy, x, w, **kwargs, backend=REFERENCE)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, ref):
        assert_close(a, e, context=f"{name} {context}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_dead_tap_geometries(dtype):
    rng = np.random.default_rng(np.dtype(dtype).itemsize)
    for _ in range(60):
        x, w, b, kwargs, g = _draw_conv(rng, dtype)
        gy = rng.standard_normal(g.output_shape).astype(dtype)
        _run_conv(x, w, b, kwargs, g, gy, f"x{x.shape} w{w.shape} {kwargs}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_at_dead_taps(dtype, value):
    """A non-finite weight at a dead tap reaches the forward output through the padding
    (0 * inf = NaN) and not the input gradient; a non-finite grad_output reaches the dead
    taps' weight gradient.  Finite operands elsewhere keep their passes cropped."""
    rng = np.random.default_rng(7)
    for _ in range(15):
        x, w, b, kwargs, g = _draw_conv(rng, dtype)
        gy = rng.standard_normal(g.output_shape).astype(dtype)
        w_bad = w.copy()
        w_bad[(int(rng.integers(w.shape[0])), int(rng.integers(w.shape[1]))) + _dead_tap(g)] = value
        _run_conv(x, w_bad, b, kwargs, g, gy, f"bad w x{x.shape} w{w.shape} {kwargs}", nonfinite_w=True)
        gy_bad = gy.copy()
        gy_bad.flat[int(rng.integers(gy.size))] = value
        _run_conv(x, w, b, kwargs, g, gy_bad, f"bad gy x{x.shape} w{w.shape} {kwargs}", nonfinite_gy=True)


def test_nonfinite_at_dead_taps_like_torch():
    """The same rules as PyTorch (float64: its float32 forward may skip the padding)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4, 1, 2))
    w = rng.standard_normal((5, 4, 7, 3))
    gy = rng.standard_normal((3, 5, 1, 2))
    w[1, 2, 0, 1] = np.inf          # a dead row
    gy[2, 3, 0, 1] = np.nan
    kwargs = dict(padding=(3, 1))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, **kwargs)
    yt.backward(torch.from_numpy(gy))
    with np.errstate(invalid="ignore"):
        y = cconv.conv2d(x, w, **kwargs)
        gx, gw, _ = cconv.conv2d_backward(gy, x, w, **kwargs)
    # the inf weight never reaches grad_input; the NaN of image 2 reaches all of its own
    assert np.isnan(y[:, 1]).all() and np.isfinite(gx[:2]).all() and np.isnan(gw[3]).all()
    assert_close(y, yt.detach().numpy())
    assert_close(gx, xt.grad.numpy())
    assert_close(gw, wt.grad.numpy())
    # finite grad_output: the dead taps' weight gradient is exactly zero, computed cropped
    assert cconv.explain("conv2d_backward", np.nan_to_num(gy), x, w, **kwargs)["grad_weight"]["taps"] == {
        "rows": (3, 3), "cols": (0, 2), "kernel": (7, 3)}
    gw = cconv.conv2d_backward(np.nan_to_num(gy), x, w, **kwargs)[1]
    assert (gw[:, :, :3] == 0).all() and (gw[:, :, 4:] == 0).all() and (gw[:, :, 3] != 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_live_tap(dtype):
    """Every window lies in the padding (1x1 kernel, stride 2, padding 1 on a 1x1 map): the
    output is the bias, the gradients zero; a NaN weight still poisons the output."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 1, 1)).astype(dtype)
    w = rng.standard_normal((4, 3, 1, 1)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    kwargs = dict(stride=2, padding=1)
    g = _shapes.conv_geometry(x.shape, w.shape, (2, 2), (1, 1), (1, 1), 1)
    gy = rng.standard_normal(g.output_shape).astype(dtype)
    assert _expected_taps(g) == "none"
    _run_conv(x, w, b, kwargs, g, gy, "no live tap")
    w[0, 0, 0, 0] = np.nan
    gy[0, 0, 0, 0] = np.inf
    _run_conv(x, w, b, kwargs, g, gy, "no live tap, non-finite", nonfinite_w=True, nonfinite_gy=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose2d_dead_taps(dtype):
    """conv_transpose2d is conv2d's input gradient: cropped whenever its geometry has dead taps
    (its backward: a cropped forward and weight gradient)."""
    rng = np.random.default_rng(5 + np.dtype(dtype).itemsize)
    done = 0
    while done < 30:
        cin, cout, groups = _channels(rng)
        kh, kw = (int(k) for k in rng.integers(1, 8, size=2))
        h, w = (int(s) for s in rng.integers(1, 4, size=2))
        stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
        dilation = tuple(int(d) for d in rng.integers(1, 3, size=2))
        padding = (int(rng.integers(0, dilation[0] * (kh - 1) + 1)),
                   int(rng.integers(0, dilation[1] * (kw - 1) + 1)))
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        n = int(rng.integers(1, 3))
        try:
            g, out_shape = _shapes.conv_transpose_geometry((n, cin, h, w), (cin, cout // groups, kh, kw),
                                                           stride, padding, (0, 0), dilation, groups)
        except ValueError:
            continue
        expected = _expected_taps(g)
        if expected is None or expected == "none":
            continue
        n = _crop_pays(g)
        g, out_shape = _shapes.conv_transpose_geometry((n, cin, h, w), (cin, cout // groups, kh, kw),
                                                       stride, padding, (0, 0), dilation, groups)
        done += 1
        x = rng.standard_normal((n, cin, h, w)).astype(dtype)
        wt = rng.standard_normal((cin, cout // groups, kh, kw)).astype(dtype)
        b = rng.standard_normal(cout).astype(dtype)
        context = f"transposed x{x.shape} w{wt.shape} {kwargs}"
        plan = cconv.explain("conv_transpose2d", x, wt, b, **kwargs)
        assert [e.get("taps") for e in plan.values()] == [expected], (plan, context)
        assert_close(cconv.conv_transpose2d(x, wt, b, **kwargs),
                     cconv.conv_transpose2d(x, wt, b, **kwargs, backend=REFERENCE), context=context)
        gy = rng.standard_normal(out_shape).astype(dtype)
        plan = cconv.explain("conv_transpose2d_backward", gy, x, wt, **kwargs)
        for name in ("grad_input", "grad_weight"):
            assert plan[name].get("taps") == expected, (name, plan, context)
        got = cconv.conv_transpose2d_backward(gy, x, wt, **kwargs)
        ref = cconv.conv_transpose2d_backward(gy, x, wt, **kwargs, backend=REFERENCE)
        for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, ref):
            assert_close(a, e, context=f"{name} {context}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1d_conv3d_ride_on_the_crop(dtype):
    """conv1d (a 1-row conv2d) crops the rows and columns of its 2-d call; conv3d (here on the
    volume algorithm, its weight gradient on a conv2d over stacked depth slices) crops its
    forward and input gradient in depth too."""
    rng = np.random.default_rng(13)
    x1, w1 = rng.standard_normal((16, 6, 1)).astype(dtype), rng.standard_normal((5, 6, 7)).astype(dtype)
    x3, w3 = (rng.standard_normal((2, 3, 4, 1, 2)).astype(dtype),
              rng.standard_normal((4, 3, 3, 5, 5)).astype(dtype))
    taps3 = {"rows": (2, 2), "cols": (1, 3), "kernel": (5, 5)}
    for op, x, w, kwargs, taps, forward_taps in (
            ("conv1d", x1, w1, dict(padding=3), {"rows": (0, 0), "cols": (3, 3), "kernel": (1, 7)}, None),
            # 4 output channels: the forward runs on the volume; 3 input channels: the input
            # gradient (and always the weight gradient) on the folded conv2d
            ("conv3d", x3, w3, dict(padding=(1, 2, 2)), taps3, dict(taps3, depth=(0, 2), kernel=(3, 5, 5)))):
        for entry in cconv.explain(op, x, w, **kwargs).values():
            assert entry.get("taps") == (forward_taps or taps), (op, entry)
        y = getattr(cconv, op)(x, w, **kwargs)
        assert_close(y, getattr(cconv, op)(x, w, **kwargs, backend=REFERENCE), context=op)
        gy = rng.standard_normal(y.shape).astype(dtype)
        plan = cconv.explain(op + "_backward", gy, x, w, **kwargs)
        assert plan["grad_input"].get("taps") == taps and plan["grad_weight"].get("taps") == taps, (op, plan)
        got = getattr(cconv, op + "_backward")(gy, x, w, **kwargs)
        ref = getattr(cconv, op + "_backward")(gy, x, w, **kwargs, backend=REFERENCE)
        for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, ref):
            assert_close(a, e, context=f"{op} {name}")


LAYERS = [  # (x shape, w shape, kwargs): dead-tap layers of the benchmark sweep, scaled down
    ((4, 64, 1, 1), (48, 64, 7, 1), dict(padding=(3, 0))),
    ((2, 48, 2, 2), (40, 48, 5, 5), dict(stride=2, padding=2)),
    ((2, 32, 1, 1), (32, 32, 3, 3), dict(stride=2, padding=1)),
    ((2, 40, 1, 1), (24, 40, 7, 7), dict(padding=3)),
    ((2, 24, 1, 1), (24, 1, 5, 5), dict(padding=2, groups=24)),
    ((3, 32, 1, 1), (40, 32, 1, 7), dict(padding=(0, 3))),
    ((2, 16, 3, 9), (32, 16, 7, 3), dict(padding=(3, 1))),
    ((2, 32, 2, 5), (16, 32, 5, 3), dict(padding="same")),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sweep_like_layers(dtype):
    """Layers with enough channels for the GEMM-class algorithms: cropped in every pass, and
    not only by the direct loops."""
    rng = np.random.default_rng(17)
    algorithms = set()
    for x_shape, w_shape, kwargs in LAYERS:
        geometry = (w_shape, kwargs.get("stride", 1), kwargs["padding"], 1, kwargs.get("groups", 1))
        x_shape = (_crop_pays(_shapes.conv_geometry(x_shape, *geometry)),) + x_shape[1:]
        g = _shapes.conv_geometry(x_shape, *geometry)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        gy = rng.standard_normal(g.output_shape).astype(dtype)
        _run_conv(x, w, b, kwargs, g, gy, f"x{x_shape} w{w_shape} {kwargs}")
        plans = {**cconv.explain("conv2d", x, w, b, **kwargs),
                 **cconv.explain("conv2d_backward", gy, x, w, **kwargs)}
        algorithms |= {e["algorithm"] for e in plans.values()}
    assert algorithms - {"direct", "sum"}, algorithms


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crop_only_where_it_pays(dtype):
    """A 3x3 kernel with padding 1 on a 1x1 map has one live tap of 9: at batch 1 each weight is
    used once, cropping would save 8 multiply-adds per plane and costs a copy of every plane,
    so the dead taps are computed (their zeros) and nothing is cropped; at a batch large enough
    to save TRIM_PLANE_MACS per plane every pass runs cropped.  Both match the reference."""
    from cconv import _backends
    need = _backends._compiled._conv.TRIM_PLANE_MACS
    rng = np.random.default_rng(17)
    w = rng.standard_normal((6, 5, 3, 3)).astype(dtype)
    for n, cropped in ((1, False), (-(-need // 8), True)):
        x = rng.standard_normal((n, 5, 1, 1)).astype(dtype)
        gy = rng.standard_normal((n, 6, 1, 1)).astype(dtype)
        g = _shapes.conv_geometry(x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1)
        plans = cconv.explain("conv2d", x, w, None, padding=1)
        plans.update(cconv.explain("conv2d_backward", gy, x, w, padding=1))
        taps = [plans[name].get("taps") for name in ("forward", "grad_input", "grad_weight")]
        assert taps == [_expected_taps(g) if cropped else None] * 3, (n, plans)
        assert_close(cconv.conv2d(x, w, padding=1), cconv.conv2d(x, w, padding=1, backend=REFERENCE))
        got = cconv.conv2d_backward(gy, x, w, padding=1)
        ref = cconv.conv2d_backward(gy, x, w, padding=1, backend=REFERENCE)
        for a, e in zip(got, ref):
            assert_close(a, e, context=f"batch {n}")
