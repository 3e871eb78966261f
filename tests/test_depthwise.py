"""The depthwise algorithm (one input channel and 1-2 output channels per group), pass by pass.

Random depthwise geometries (odd map sizes, kh != kw, stride 1-3, dilation, padding including
'same' with even kernels, channel multiplier 1 and 2, batch 1-3, both dtypes, NaN/Inf in each
operand): ``cconv.explain`` and the extension's pass counters prove the depthwise kernels ran
(or, for an input gradient with non-finite weights, that the planner kept them out), and every
result matches the NumPy reference and, where installed, PyTorch.  Also: the same bits on 1, 2
and 3 threads, and this module again under every instruction set the CPU runs.
"""
from __future__ import annotations


import numpy as np
import pytest

import cconv
from conftest import BACKENDS_UNDER_TEST, REFERENCE, assert_close, assert_identical, run_under_isa, tally

pytestmark = pytest.mark.skipif("cython" not in BACKENDS_UNDER_TEST,
                                reason="the depthwise kernels exist in the compiled backend only")

PASSES = ("forward", "grad_input", "grad_weight")
MASK = {"grad_input": (True, False, False), "grad_weight": (False, True, False)}


def _counts():
    from cconv import _compiled
    return _compiled._conv.algorithm_counts()


def _draw(rng, dtype, big=False, small=False):
    """(x, w, b, kwargs) of a random depthwise conv2d, large enough for the planner to pick
    the depthwise kernels over the tiny-pass direct loops (``big``: a team of threads too;
    ``small``: small maps with many channels, mostly one output channel per group)."""
    channels = int(rng.integers(8, 17)) * (2 if big else 1) * (4 if small else 1)
    mult = 1 if small and rng.random() < 0.8 else int(rng.integers(1, 3))
    kh, kw = int(rng.integers(3 if big else 1, 8)), int(rng.integers(3 if big else 1, 8))
    if rng.random() < 0.25:
        stride, dilation, padding = (1, 1), (int(rng.integers(1, 3)), 1), "same"
    else:
        stride = (int(rng.integers(1, 3 if big else 4)), int(rng.integers(1, 3 if big else 4)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        padding = (int(rng.integers(0, kh + 1)), int(rng.integers(0, kw + 1)))
    reach_h = dilation[0] * (kh - 1) + 1
    reach_w = dilation[1] * (kw - 1) + 1
    more = 6 if small else 30
    h = int(rng.integers(max(reach_h, 3 if small else 9), reach_h + more)) | 1     # odd sizes
    w = int(rng.integers(max(reach_w, 3 if small else 9), reach_w + more)) | 1
    n = int(rng.integers(1, 4)) + (16 if big else 4 if small else 0)   # big: > 2 x 1.66M multiply-adds
    x = rng.standard_normal((n, channels, h, w)).astype(dtype)
    wt = rng.standard_normal((channels * mult, 1, kh, kw)).astype(dtype)
    b = rng.standard_normal(channels * mult).astype(dtype)
    return x, wt, b, dict(stride=stride, padding=padding, dilation=dilation, groups=channels)


def _poke(rng, a):
    a = a.copy()
    a.flat[int(rng.integers(a.size))] = rng.choice([np.nan, np.inf, -np.inf])
    return a


def _run(pass_, x, w, b, gy, kwargs, backend):
    if pass_ == "forward":
        return cconv.conv2d(x, w, b, **kwargs, backend=backend)
    gi, gw, _ = cconv.conv2d_backward(gy, x, w, **kwargs, output_mask=MASK[pass_], backend=backend)
    return gi if pass_ == "grad_input" else gw


def _lanes_expected(x, w, y, dtype):
    """Whether the planner should put channels in the vector lanes (small maps, m == 1)."""
    width = 32 // np.dtype(dtype).itemsize
    return w.shape[0] == x.shape[1] >= width and y.shape[2] * y.shape[3] <= 64


def _case(rng, dtype, pass_, nonfinite, small):
    """One random case of ``pass_``: returns the algorithm that ran (with "+lanes" for channels
    in the vector lanes), after checking that explain agreed with the counters and the result
    matched the reference."""
    x, w, b, kwargs = _draw(rng, dtype, small=small)
    gy = rng.standard_normal(cconv.conv2d(x, w, **kwargs, backend=REFERENCE).shape).astype(dtype)
    if nonfinite:
        which = int(rng.integers(3))
        x, w, gy = (_poke(rng, x) if which == 0 else x, _poke(rng, w) if which == 1 else w,
                    _poke(rng, gy) if which == 2 else gy)
    context = f"{pass_} {np.dtype(dtype).name} x{x.shape} w{w.shape} {kwargs} nonfinite={nonfinite}"
    if pass_ == "forward":
        plan = cconv.explain("conv2d", x, w, b, **kwargs)["forward"]
    else:
        plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs, output_mask=MASK[pass_])[pass_]
    before = _counts()
    got = _run(pass_, x, w, b, gy, kwargs, "cython")
    ran = [a for (a, p), n in _counts().items() if p == pass_ and n > before.get((a, p), 0)]
    assert ran == [plan["algorithm"]], (ran, plan, context)
    assert_close(got, _run(pass_, x, w, b, gy, kwargs, REFERENCE), context=context)
    if pass_ == "grad_input" and not np.isfinite(w).all():
        # its zero margins would meet the non-finite weights: the planner must keep it out
        assert plan["algorithm"] != "depthwise", context
    elif "multiply-adds" not in plan["reason"]:     # tiny passes keep the direct loops
        assert plan["algorithm"] == "depthwise", (plan, context)
        assert plan["isa"] == cconv.backend_info()["simd"], plan
    if plan["algorithm"] != "depthwise":
        return plan["algorithm"]
    lanes = "vector lanes" in plan["reason"]
    assert lanes == _lanes_expected(x, w, gy, dtype), (plan, context)
    return "depthwise+lanes" if lanes else "depthwise"


@pytest.mark.parametrize("maps", ["any", "small"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pass_", PASSES)
def test_random_depthwise_geometries(pass_, dtype, maps):
    """Per pass: on any maps most cases run the per-plane kernels; on small maps with many
    channels most put channels in the vector lanes."""
    rng = np.random.default_rng(PASSES.index(pass_) * 10 + (dtype is np.float32) + 100 * (maps == "small"))
    ran = [_case(rng, dtype, pass_, nonfinite=i % 4 == 3, small=maps == "small") for i in range(24)]
    want = "depthwise+lanes" if maps == "small" else "depthwise"
    assert ran.count(want) >= 8, ran
    tally("depthwise (random geometries)", f"{pass_} {maps}", len(ran))


def test_chosen_for_network_layers():
    """MobileNet / EfficientNet-like layers: every pass runs the depthwise kernels."""
    x = np.ones((2, 32, 28, 28), np.float32)
    for k, stride in ((3, 1), (3, 2), (5, 1), (5, 2), (7, 1)):
        w = np.ones((32, 1, k, k), np.float32)
        gy = np.ones(cconv.conv2d(x, w, stride=stride, padding=k // 2, groups=32).shape, np.float32)
        plan = cconv.explain("conv2d_backward", gy, x, w, stride=stride, padding=k // 2, groups=32)
        plan.update(cconv.explain("conv2d", x, w, stride=stride, padding=k // 2, groups=32))
        for pass_ in PASSES:
            assert plan[pass_]["algorithm"] == "depthwise", (k, stride, plan[pass_])
            assert "depthwise" in plan[pass_]["reason"]
    assert "depthwise" in cconv.backend_info()["conv_algorithms"]


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for _ in range(12):
        x, w, b, kwargs = _draw(rng, np.float64)
        y = cconv.conv2d(x, w, b, **kwargs)
        gy = rng.standard_normal(y.shape)
        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        ty = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b), **kwargs)
        ty.backward(torch.from_numpy(gy))
        gi, gw, _ = cconv.conv2d_backward(gy, x, w, **kwargs)
        for name, a, t in (("forward", y, ty), ("grad_input", gi, tx.grad), ("grad_weight", gw, tw.grad)):
            assert_close(a, t.detach().numpy(), context=f"{name} vs torch {kwargs}")
        tally("depthwise (vs torch)", "cases")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_for_any_thread_count(dtype):
    rng = np.random.default_rng(11)
    saved = cconv.get_num_threads()
    teamed = set()
    try:
        for i in range(8):
            x, w, b, kwargs = _draw(rng, dtype, big=True, small=i % 2 == 1)
            gy = rng.standard_normal(cconv.conv2d(x, w, **kwargs).shape).astype(dtype)
            results = []
            for n in (1, 2, 3):
                cconv.set_num_threads(n)
                plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs)
                plan.update(cconv.explain("conv2d", x, w, b, **kwargs))
                assert {plan[p]["algorithm"] for p in PASSES} == {"depthwise"}, plan
                teamed |= {p for p in PASSES if plan[p]["threads"] > 1}
                results.append((cconv.conv2d(x, w, b, **kwargs),) + cconv.conv2d_backward(gy, x, w, **kwargs)[:2])
            for other in results[1:]:
                for a, e in zip(other, results[0]):
                    assert_identical(a, e, context=f"{kwargs}")
    finally:
        cconv.set_num_threads(saved)
    assert teamed == set(PASSES), teamed    # every pass ran on a team somewhere


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512f"])
def test_instruction_set_variants(isa):
    """This module again, in a subprocess with the kernels switched to one instruction set."""
    run_under_isa(__file__, isa, "not variants and not torch", min_passed=8)
    tally("depthwise (instruction sets)", isa)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pass_", ["forward", "grad_weight"])
def test_tiny_depthwise_passes_run_the_depthwise_kernels(pass_, dtype):
    """Depthwise layers of fewer multiply-adds than the direct-loop threshold (maps of 1-8
    pixels a side, 4-176 channels, NaN/Inf now and then) still run the depthwise kernels,
    which beat the direct loops there; a single-channel conv keeps the direct loops."""
    rng = np.random.default_rng(7 + (pass_ == "forward") + 2 * (dtype is np.float32))
    for i in range(16):
        channels, mult = int(rng.integers(4, 177)), int(rng.integers(1, 3))
        k = int(rng.choice([1, 3, 5]))
        pad = int(rng.integers(0, k // 2 + 1))
        side = int(rng.integers(max(1, k - 2 * pad), 9))
        n = int(rng.integers(1, 5))
        x = rng.standard_normal((n, channels, side, side)).astype(dtype)
        w = rng.standard_normal((channels * mult, 1, k, k)).astype(dtype)
        kwargs = dict(padding=pad, groups=channels)
        gy = rng.standard_normal(cconv.conv2d(x, w, **kwargs, backend=REFERENCE).shape).astype(dtype)
        if gy.size * k * k >= 32768:
            continue
        if i % 4 == 3:
            x, w = _poke(rng, x), _poke(rng, w)
        context = f"{pass_} x{x.shape} w{w.shape} {kwargs}"
        if pass_ == "forward":
            plan = cconv.explain("conv2d", x, w, None, **kwargs)["forward"]
        else:
            plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs, output_mask=MASK[pass_])[pass_]
        assert plan["algorithm"] == "depthwise", (plan, context)
        before = _counts()
        got = _run(pass_, x, w, None, gy, kwargs, "cython")
        ran = [a for (a, p), n in _counts().items() if p == pass_ and n > before.get((a, p), 0)]
        assert ran == ["depthwise"], (ran, context)
        assert_close(got, _run(pass_, x, w, None, gy, kwargs, REFERENCE), context=context)
        tally("depthwise (tiny passes)", pass_)
    x, w = rng.standard_normal((1, 1, 5, 5)).astype(dtype), rng.standard_normal((1, 1, 2, 2)).astype(dtype)
    assert cconv.explain("conv2d", x, w)["forward"]["algorithm"] == "direct"
