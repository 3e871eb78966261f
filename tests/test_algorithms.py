"""Every convolution algorithm, proven to run and to match the reference.

The compiled backend's planner picks one algorithm per pass (``cconv.explain`` says which);
``CCONV_CONV_ALGO=<name>`` forces one wherever it applies.  Here:

* each algorithm the planner picks on its own, on a shape where it should, per dtype and pass;
* each algorithm forced (in a subprocess) over random geometries (odd sizes, kh != kw, stride,
  dilation, groups, padding, NaN/Inf where the algorithm is exact with them), both dtypes and
  every pass it applies to, with the pass counters of the extension as proof that it ran
  and ``explain`` agreeing with what ran;
* 1, 2 and 3 threads give bit-identical results for every algorithm, op and pass;
* unknown values of CCONV_CONV_ALGO and CCONV_KERNEL_ISA are refused with the accepted values.

The ISA variants (CCONV_KERNEL_ISA=generic|avx2|avx512f) re-run this module's in-process tests
through test_differential.py's kernel-variant runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import cconv
from conftest import BACKENDS_UNDER_TEST, REFERENCE, assert_close, assert_identical, tally

HERE = os.path.dirname(os.path.abspath(__file__))
COMPILED = "cython" in BACKENDS_UNDER_TEST
pytestmark = pytest.mark.skipif(not COMPILED, reason="plans and algorithms exist in the compiled backend only")


def _info():
    return cconv.backend_info()


def _counts():
    from cconv import _compiled
    return _compiled._conv.algorithm_counts()


def _dot_variants():
    from cconv import _compiled
    return _compiled._conv.dot_variant_counts()


def _dot_variant_check(plan, before, x):
    """After a weight gradient with explain's ``plan``: the dot kernel's variant that ran
    (counters) is the one explain named; on padded copies, it is the mask-free one iff x is
    finite. Returns that variant (None: the dot kernel did not run)."""
    ran = [v for v, n in _dot_variants().items() if n > before[v]]
    if plan["grad_weight"]["algorithm"] != "dot":
        assert not ran, (ran, plan)
        return None
    assert ran == [plan["grad_weight"]["variant"]], (ran, plan)
    if ran[0] != "in_place":    # 1x1 in place: no padding, no mask, whatever x holds
        assert ran[0] == ("finite" if np.isfinite(x).all() else "masked"), (ran, plan)
    return ran[0]


def _ran_since(before):
    """{pass: algorithm} of the passes executed since ``before`` (one call's worth)."""
    after = _counts()
    ran = {}
    for (algo, pass_), n in after.items():
        if n > before.get((algo, pass_), 0):
            assert pass_ not in ran, f"two algorithms ran for {pass_}: {ran[pass_]}, {algo}"
            ran[pass_] = algo
    return ran


# --------------------------------------------------------------------------
# random cases
# --------------------------------------------------------------------------

def _draw(rng, algo, dtype):
    """Arguments of a conv2d call on which ``algo`` can apply (forced), small and irregular."""
    groups = int(rng.choice([1, 1, 2, 3]))
    cin = groups * int(rng.integers(1, 6))
    cout = groups * int(rng.integers(1, 9))
    if algo == "depthwise":         # one input and 1-2 output channels per group
        groups = cin = int(rng.integers(1, 6))
        cout = groups * int(rng.integers(1, 3))
    kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    if algo == "winograd":
        kh = kw = 3
        stride = dilation = (1, 1)
    elif rng.random() < 0.6:        # stride 1 lets grad_input run as a forward pass
        stride = (1, 1)
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    if algo == "bands":             # dilation and padding that make taps read the padding
        dilation = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        padding = tuple(int(rng.integers(1, d * (k - 1) + 2)) for d, k in zip(dilation, (kh, kw)))
    h = int(rng.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 14))
    w = int(rng.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 14))
    n = int(rng.integers(1, 4))
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    wt = rng.standard_normal((cout, cin // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, wt, b, kwargs


def _poke(rng, a):
    """A copy of ``a`` with a NaN, +inf or -inf somewhere."""
    a = a.copy()
    a.flat[int(rng.integers(a.size))] = rng.choice([np.nan, np.inf, -np.inf])
    return a


def check_case(rng, algo, dtype, nonfinite):
    """Run one random case on the compiled backend and the reference; return {pass: algorithm
    that ran} after checking explain agreed and the results matched."""
    x, w, b, kwargs = _draw(rng, algo, dtype)
    y_ref = cconv.conv2d(x, w, b, **kwargs, backend=REFERENCE)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    if nonfinite:
        which = rng.integers(3)
        if algo == "dot" and which == 1:    # x's finiteness picks the dot kernel's variant
            which = 0
        x, w, gy = (_poke(rng, x) if which == 0 else x, _poke(rng, w) if which == 1 else w,
                    _poke(rng, gy) if which == 2 else gy)
        y_ref = cconv.conv2d(x, w, b, **kwargs, backend=REFERENCE)
    context = f"{algo} {dtype.__name__} x{x.shape} w{w.shape} {kwargs} nonfinite={nonfinite}"
    ran = {}

    plan = cconv.explain("conv2d", x, w, b, **kwargs, backend="cython")
    before = _counts()
    y = cconv.conv2d(x, w, b, **kwargs, backend="cython")
    did = _ran_since(before)
    assert did == {"forward": plan["forward"]["algorithm"]}, (did, plan, context)
    assert_close(y, y_ref, context="forward " + context)
    ran.update(did)

    plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs, backend="cython")
    before, dot_before = _counts(), _dot_variants()
    got = cconv.conv2d_backward(gy, x, w, **kwargs, backend="cython")
    did = _ran_since(before)
    assert did == {k: v["algorithm"] for k, v in plan.items()}, (did, plan, context)
    variant = _dot_variant_check(plan, dot_before, x)
    expected = cconv.conv2d_backward(gy, x, w, **kwargs, backend=REFERENCE)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, expected):
        assert_close(a, e, context=f"{name} {context}")
    ran.update(did)
    if variant is not None:
        ran["grad_weight " + variant] = "dot"
    return ran


def run_cases(algo, cases, seed=0):
    """``cases`` random cases per dtype; {"pass/dtype": times ``algo`` ran}."""
    rng = np.random.default_rng(seed)
    hits = {}
    for dtype in (np.float32, np.float64):
        for i in range(cases):
            ran = check_case(rng, algo, dtype, nonfinite=i % 5 == 4)
            for pass_, name in ran.items():
                if name == algo:
                    key = f"{pass_}/{np.dtype(dtype).name}"
                    hits[key] = hits.get(key, 0) + 1
    return hits


# --------------------------------------------------------------------------
# the planner's own choices
# --------------------------------------------------------------------------

def _natural_cases():
    """(algorithm, pass, op, args, kwargs): shapes on which the planner picks the algorithm."""
    rng = np.random.default_rng(1)

    def arr(*shape):
        return rng.standard_normal(shape)

    cases = [
        ("direct", "forward", "conv2d", (arr(1, 1, 5, 5), arr(1, 1, 2, 2)), {}),
        ("padded", "forward", "conv2d", (arr(2, 8, 12, 13), arr(8, 8, 3, 2)), dict(padding=1)),
        ("im2col", "forward", "conv2d", (arr(4, 16, 9, 9), arr(16, 16, 1, 1)), {}),
        ("winograd", "forward", "conv2d", (arr(2, 16, 10, 11), arr(16, 16, 3, 3)), dict(padding=1)),
        ("empty", "forward", "conv2d", (arr(0, 3, 5, 5), arr(4, 3, 3, 3)), {}),
        ("col2im", "grad_input", "conv2d_backward",
         (arr(2, 8, 9, 9), arr(2, 4, 19, 19), arr(8, 4, 3, 3)), dict(stride=2)),
        ("winograd", "grad_weight", "conv2d_backward",
         (arr(4, 128, 8, 8), arr(4, 128, 8, 8), arr(128, 128, 3, 3)), dict(padding=1)),
        ("im2col", "grad_weight", "conv2d_backward",
         (arr(4, 16, 9, 9), arr(4, 16, 9, 9), arr(16, 16, 1, 1)), {}),
        ("sum", "grad_bias", "conv2d_backward",
         (arr(2, 8, 5, 5), arr(2, 4, 11, 11), arr(8, 4, 3, 3)), dict(stride=2)),
        ("direct", "grad_weight", "conv2d_backward",
         (arr(1, 1, 4, 4), arr(1, 1, 5, 5), arr(1, 1, 2, 2)), {}),
        ("rows", "forward", "conv2d", (arr(1, 200, 1, 1), arr(240, 200, 1, 1)), {}),
        ("rows", "grad_input", "conv2d_backward",
         (arr(1, 240, 1, 1), arr(1, 200, 1, 1), arr(240, 200, 1, 1)), {}),
        ("rows", "grad_weight", "conv2d_backward",
         (arr(2, 48, 2, 2), arr(2, 40, 3, 3), arr(48, 40, 2, 2)), {}),
        ("depthwise", "forward", "conv2d", (arr(2, 12, 15, 14), arr(24, 1, 3, 5)),
         dict(padding=(1, 2), groups=12)),
        ("depthwise", "grad_input", "conv2d_backward",
         (arr(2, 12, 15, 14), arr(2, 12, 29, 27), arr(12, 1, 3, 3)),
         dict(stride=2, padding=1, groups=12)),
        ("depthwise", "grad_weight", "conv2d_backward",
         (arr(2, 12, 15, 14), arr(2, 12, 29, 27), arr(12, 1, 3, 3)),
         dict(stride=2, padding=1, groups=12)),
    ]
    cases += [("volume", "forward", "conv3d", (arr(2, 8, 5, 7, 6), arr(8, 8, 3, 3, 3)), dict(padding=1)),
              ("volume", "grad_input", "conv3d_backward",
               (arr(2, 8, 5, 7, 6), arr(2, 6, 5, 7, 6), arr(8, 6, 3, 3, 3)), dict(padding=1))]
    if _info()["gemm_tile"]["float32"][1] > 8 or cconv.backend_info()["simd"] != "generic":
        cases.append(("dot", "grad_weight", "conv2d_backward",
                      (arr(2, 8, 12, 12), arr(2, 8, 12, 12), arr(8, 8, 3, 3)), dict(padding=1)))
        cases.append(("dot", "grad_weight", "conv2d_backward",     # 1x1, few channels: in place
                      (arr(1, 16, 30, 41), arr(1, 4, 30, 41), arr(16, 4, 1, 1)), {}))
    # dilation 6 on 9x9 maps: 31% of the multiply-adds read real input
    cases += [("bands", "forward", "conv2d", (arr(8, 32, 9, 9), arr(48, 32, 3, 3)),
               dict(padding=6, dilation=6)),
              ("bands", "grad_input", "conv2d_backward",
               (arr(8, 48, 9, 9), arr(8, 32, 9, 9), arr(48, 32, 3, 3)), dict(padding=6, dilation=6)),
              ("bands", "grad_weight", "conv2d_backward",
               (arr(8, 48, 9, 9), arr(8, 32, 9, 9), arr(48, 32, 3, 3)), dict(padding=6, dilation=6))]
    if _info()["channels_in_lanes"]:
        cases.append(("lanes", "forward", "conv2d", (arr(2, 6, 12, 12), arr(16, 6, 5, 5)), {}))
    return cases


NATURAL = _natural_cases() if COMPILED else []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", NATURAL, ids=[f"{c[0]}-{c[1]}" for c in NATURAL])
def test_planner_choice(case, dtype):
    """The planner's choice on a shape made for it; explain says so; the pass ran and matched."""
    algo, pass_, op, args, kwargs = case
    if os.environ.get("CCONV_CONV_ALGO"):
        pytest.skip("an algorithm is forced")
    if algo == "lanes" and dtype is np.float64:
        pytest.skip("channels in lanes is a float32 kernel")
    args = tuple(a.astype(dtype) for a in args)
    plan = cconv.explain(op, *args, **kwargs)
    assert plan[pass_]["algorithm"] == algo, plan[pass_]
    for entry in plan.values():
        assert entry["algorithm"] in _info()["conv_algorithms"]
        assert isinstance(entry["reason"], str) and entry["reason"] and "\n" not in entry["reason"]
        assert entry["threads"] >= 1 and entry["workspace_bytes"] >= 0
    before = _counts()
    got = getattr(cconv, op)(*args, **kwargs, backend="cython")
    assert _ran_since(before)[pass_] == algo
    expected = getattr(cconv, op)(*args, **kwargs, backend=REFERENCE)
    for a, e in zip(got if isinstance(got, tuple) else (got,),
                    expected if isinstance(expected, tuple) else (expected,)):
        assert_close(a, e, context=f"{algo} {pass_}")
    tally("algorithms (planner's choice)", algo)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("poke", ["none", "x_nan", "x_inf_unread_column", "gy_inf"])
def test_dot_variants(dtype, poke):
    """The dot weight gradient runs its mask-free kernel exactly when x is finite, the masked
    one otherwise (an inf or NaN in x must not meet the grid's zero columns), and both
    match the reference, NaN and inf positions included.  Stride 2 over 14 columns: the
    grid carries extra columns, and the last input column is one that only those columns
    read, where a product with the zero grid would make a NaN PyTorch does not have."""
    if os.environ.get("CCONV_CONV_ALGO"):
        pytest.skip("an algorithm is forced")
    if _info()["simd"] == "generic":
        pytest.skip("the dot kernel exists for the vector ISAs only")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 8, 14, 14)).astype(dtype)
    w = rng.standard_normal((8, 8, 3, 3)).astype(dtype)
    gy = rng.standard_normal((2, 8, 6, 6)).astype(dtype)
    if poke == "x_nan":
        x[1, 3, 5, 7] = np.nan
    elif poke == "x_inf_unread_column":
        x[0, 2, 4, 13] = np.inf       # column 13: no output of the 3x3 stride-2 conv reads it
    elif poke == "gy_inf":
        gy[1, 0, 2, 3] = -np.inf
    x0, gy0 = x.copy(), gy.copy()
    plan = cconv.explain("conv2d_backward", gy, x, w, stride=2)
    assert plan["grad_weight"]["algorithm"] == "dot", plan["grad_weight"]
    before = _dot_variants()
    gw = cconv.conv2d_backward(gy, x, w, stride=2, output_mask=(False, True, False),
                               backend="cython")[1]
    variant = _dot_variant_check(plan, before, x)
    assert variant == ("masked" if poke.startswith("x_") else "finite")
    assert ("grid_mask" in plan["grad_weight"]["workspace"]) == (variant == "masked")
    expected = cconv.conv2d_backward(gy, x, w, stride=2, output_mask=(False, True, False),
                                     backend=REFERENCE)[1]
    assert_close(gw, expected, context=f"dot {variant} {poke}")
    if poke == "x_inf_unread_column":
        assert np.isfinite(gw).all()
    assert np.array_equal(x, x0, equal_nan=True) and np.array_equal(gy, gy0, equal_nan=True)
    tally("algorithms (planner's choice)", f"dot {variant}")


def test_every_algorithm_is_chosen_somewhere():
    names = set(_info()["conv_algorithms"])
    chosen = {c[0] for c in NATURAL}
    missing = names - chosen
    if not _info()["channels_in_lanes"]:
        missing.discard("lanes")       # the planner takes it on AVX-512 only
    assert not missing, f"no planner-choice case for {sorted(missing)}"


def test_random_geometries_unforced():
    """Random irregular cases with the planner's own choice, both dtypes, every pass."""
    if os.environ.get("CCONV_CONV_ALGO"):
        pytest.skip("an algorithm is forced")
    hits = run_cases("direct", 12, seed=5)
    tally("algorithms (random, planner's choice)", "cases", 24)
    assert hits  # tiny random cases run direct loops somewhere


def _draw_small_pixels(rng, dtype):
    """A conv2d call with few output pixels (batch 1-3, output maps 1x1-3x3) and enough
    channels for the rows algorithm: odd counts, kh != kw, stride, dilation, groups, padding."""
    groups = int(rng.choice([1, 1, 2, 3]))
    cin = groups * int(rng.integers(20, 90))
    cout = groups * int(rng.integers(20, 90))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
    while True:   # at most 6 output pixels in all: rows on every ISA's cost model
        batch, out = int(rng.integers(1, 4)), (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        h, w = [max(1, (o - 1) * s + d * (k - 1) + 1 - 2 * p)
                for o, s, d, k, p in zip(out, stride, dilation, (kh, kw), padding)]
        pixels = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                  for n, s, d, k, p in zip((h, w), stride, dilation, (kh, kw), padding)]
        if batch * pixels[0] * pixels[1] <= 6:
            break
    x = rng.standard_normal((batch, cin, h, w)).astype(dtype)
    wt = rng.standard_normal((cout, cin // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    return x, wt, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def test_rows_random_geometries_unforced():
    """Few output pixels, many channels: the planner picks rows for every pass (explain and the
    pass counters agree) and every result matches the reference, NaN/Inf included."""
    if os.environ.get("CCONV_CONV_ALGO"):
        pytest.skip("an algorithm is forced")
    rng = np.random.default_rng(11)
    hits = {}
    for dtype in (np.float32, np.float64):
        for i in range(12):
            x, w, b, kwargs = _draw_small_pixels(rng, dtype)
            y_ref = cconv.conv2d(x, w, b, **kwargs, backend=REFERENCE)
            gy = rng.standard_normal(y_ref.shape).astype(dtype)
            if i % 4 == 3:
                x, w, gy = _poke(rng, x), _poke(rng, w), _poke(rng, gy)
                y_ref = cconv.conv2d(x, w, b, **kwargs, backend=REFERENCE)
            context = f"{dtype.__name__} x{x.shape} w{w.shape} {kwargs}"
            plan = cconv.explain("conv2d", x, w, b, **kwargs)
            before = _counts()
            y = cconv.conv2d(x, w, b, **kwargs, backend="cython")
            ran = _ran_since(before)
            assert ran == {"forward": plan["forward"]["algorithm"]}, (ran, plan, context)
            assert_close(y, y_ref, context="forward " + context)
            entries = {"forward": plan["forward"]}
            plan = cconv.explain("conv2d_backward", gy, x, w, **kwargs)
            before = _counts()
            got = cconv.conv2d_backward(gy, x, w, **kwargs, backend="cython")
            did = _ran_since(before)
            assert did == {k: v["algorithm"] for k, v in plan.items()}, (did, plan, context)
            ran.update(did)
            entries.update(plan)
            expected = cconv.conv2d_backward(gy, x, w, **kwargs, backend=REFERENCE)
            for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, expected):
                assert_close(a, e, context=f"{name} {context}")
            # every pass runs rows, except tiny forward and weight-gradient passes: direct loops
            # (where they are exact: not with a non-finite operand meeting the padding)
            for pass_ in ("forward", "grad_input", "grad_weight"):
                entry = entries[pass_]
                if ran[pass_] == "empty":   # every tap reads only padding: nothing to compute
                    assert entry["reason"].startswith("every kernel tap"), (entry, context)
                    continue
                taps = entry.get("taps")    # the live taps the pass runs on
                kernel = ((taps["rows"][1] - taps["rows"][0] + 1) * (taps["cols"][1] - taps["cols"][0] + 1)
                          if taps else w[0, 0].size)
                macs = y.size * w.shape[1] * kernel
                tiny = macs < 32768 and pass_ != "grad_input"
                assert ran[pass_] in (("direct", "rows") if tiny else ("rows",)), (ran, macs, context)
                key = f"{pass_}/{np.dtype(dtype).name}"
                hits[key] = hits.get(key, 0) + (ran[pass_] == "rows")
    assert min(hits.values()) >= 6 and len(hits) == 6, hits
    tally("algorithms (rows, random small-pixel geometries)", "cases", 24)


def test_explain_computes_nothing():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 10, 10))
    w = rng.standard_normal((16, 16, 3, 3))
    before = _counts()
    cconv.explain("conv2d_backward", rng.standard_normal((2, 16, 8, 8)), x, w)
    cconv.explain("conv_transpose2d", x, w, padding=1)
    assert _counts() == before


def test_explain_passes_and_errors():
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((4, 2, 3, 3), np.float32)
    gy = np.ones((1, 4, 4, 4), np.float32)
    assert set(cconv.explain("conv2d_backward", gy, x, w, output_mask=(True, False, True))) == \
        {"grad_input", "grad_bias"}
    assert set(cconv.explain("conv_transpose2d_backward", x, gy, w)) == {"grad_input", "grad_weight", "grad_bias"}
    assert set(cconv.explain("conv_transpose2d", gy, w)) == {"forward"}
    pool = cconv.explain("max_pool2d", x, 2)["forward"]
    assert pool["algorithm"] in _info()["pool_algorithms"] and pool["threads"] >= 1
    assert set(cconv.explain("avg_pool2d_backward", np.ones((1, 2, 3, 3), np.float32), x.shape, 2)) == \
        {"grad_input"}
    with pytest.raises(ValueError, match="unknown op"):
        cconv.explain("conv4d", x, w)
    with pytest.raises(ValueError, match="weight must be 5-d"):   # validated as conv3d would
        cconv.explain("conv3d", x, w)
    with pytest.raises(ValueError, match="groups"):
        cconv.explain("conv2d", x, w, groups=3)
    assert cconv.explain("conv2d", x, w, backend="numpy")["forward"]["algorithm"] == "reference"


# --------------------------------------------------------------------------
# forced algorithms (subprocesses: CCONV_CONV_ALGO is read at import)
# --------------------------------------------------------------------------

APPLIES = {  # passes each algorithm applies to, on the random geometries of _draw
    "direct": ["forward", "grad_input", "grad_weight"],
    "padded": ["forward", "grad_input"],
    "im2col": ["forward", "grad_input", "grad_weight"],
    "lanes": ["forward", "grad_input"],
    "winograd": ["forward", "grad_input", "grad_weight"],
    "dot": ["grad_weight"],
    "col2im": ["grad_input"],
    "sum": ["grad_bias"],
    "rows": ["forward", "grad_input", "grad_weight"],
    "depthwise": ["forward", "grad_input", "grad_weight"],
    "bands": ["forward", "grad_input", "grad_weight"],
}


def _child(env_extra, code):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("algo", sorted(APPLIES))
def test_forced_algorithm(algo):
    """CCONV_CONV_ALGO=<algo> over random geometries: it ran for every pass and dtype it applies
    to (counters and explain agree), and every result matched the reference."""
    if algo == "lanes" and not _info()["channels_in_lanes"]:
        pytest.skip("channels in lanes needs AVX-512")
    if algo == "dot" and _info()["simd"] == "generic":
        pytest.skip("the dot kernel exists for the vector ISAs only")
    result = _child({"CCONV_CONV_ALGO": algo},
                    f"import json, test_algorithms as t; print(json.dumps(t.run_cases({algo!r}, 15)))")
    assert result.returncode == 0, result.stderr[-3000:]
    hits = json.loads(result.stdout.strip().splitlines()[-1])
    dtypes = ["float32"] if algo == "lanes" else ["float32", "float64"]
    passes = APPLIES[algo] + (["grad_weight finite", "grad_weight masked"] if algo == "dot" else [])
    missing = [f"{p}/{d}" for p in passes for d in dtypes if not hits.get(f"{p}/{d}")]
    assert not missing, f"{algo} never ran for {missing}: {hits}"
    tally("algorithms (forced, random geometries)", algo, sum(hits.values()))


@pytest.mark.parametrize("var,value", [("CCONV_CONV_ALGO", "fastest"), ("CCONV_KERNEL_ISA", "bogus")])
def test_unknown_switch_values_are_refused(var, value):
    result = _child({var: value}, "import cconv")
    assert result.returncode != 0
    assert "ValueError" in result.stderr and value in result.stderr and "accepted" in result.stderr


def test_forced_algorithm_that_does_not_apply_is_explained():
    code = ("import numpy as np, cconv; x = np.ones((1, 2, 6, 6)); w = np.ones((3, 2, 3, 3));"
            "print(cconv.explain('conv2d', x, w)['forward']['reason'])")
    result = _child({"CCONV_CONV_ALGO": "col2im"}, code)
    assert result.returncode == 0, result.stderr
    assert "CCONV_CONV_ALGO=col2im does not apply here" in result.stdout


# --------------------------------------------------------------------------
# thread counts
# --------------------------------------------------------------------------

def _thread_cases():
    cases = [(op, args, kwargs) for _, _, op, args, kwargs in NATURAL]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 17, 15))
    x_nan = rng.standard_normal((2, 8, 14, 14))
    x_nan[1, 2, 3, 4] = np.nan          # the dot weight gradient's masked kernel
    cases += [("conv2d_backward", (rng.standard_normal((4, 16, 17, 17)), rng.standard_normal((4, 8, 35, 35)),
                                   rng.standard_normal((16, 8, 3, 3))), dict(stride=2)),
              ("conv2d_backward", (rng.standard_normal((2, 8, 6, 6)), x_nan,
                                   rng.standard_normal((8, 8, 3, 3))), dict(stride=2)),
              ("conv2d_backward", (rng.standard_normal((8, 2, 19, 19)), rng.standard_normal((8, 2, 40, 40)),
                                   rng.standard_normal((2, 2, 3, 3))), dict(stride=2)),
              # 1x1 outputs: col2im takes more images per task on fewer threads
              ("conv2d_backward", (rng.standard_normal((3, 16, 1, 1)), rng.standard_normal((3, 24, 2, 2)),
                                   rng.standard_normal((16, 24, 2, 2))), dict(stride=2)),
              ("conv_transpose2d_backward", (rng.standard_normal((4, 5, 35, 31)), x,
                                             rng.standard_normal((6, 5, 3, 3))), dict(stride=2)),
              ("conv2d", (rng.standard_normal((1, 640, 1, 1)), rng.standard_normal((768, 640, 1, 1))), {}),
              ("conv2d_backward", (rng.standard_normal((2, 24, 9, 11)), rng.standard_normal((2, 16, 9, 11)),
                                   rng.standard_normal((24, 16, 3, 3))), dict(padding=(6, 8), dilation=(6, 8))),
              ("conv2d_backward", (rng.standard_normal((1, 384, 2, 2)), rng.standard_normal((1, 320, 3, 3)),
                                   rng.standard_normal((384, 320, 2, 2))), {}),
              ("max_pool2d", (x, 3), dict(stride=2, padding=1, return_indices=True)),
              ("avg_pool2d", (x, 3), dict(stride=2, padding=1)),
              ("avg_pool2d_backward", (rng.standard_normal((4, 6, 9, 8)), x.shape, 3),
               dict(stride=2, padding=1))]
    return cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_for_any_thread_count(dtype):
    """1, 2 and 3 threads: the same bits for every algorithm (on shapes large enough to use a
    team), op and pass."""
    saved = cconv.get_num_threads()
    teamed = set()
    try:
        for op, args, kwargs in _thread_cases():
            args = tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                         for a in args)
            if op in ("conv2d", "conv2d_backward"):   # a batch big enough for a team (1.66M
                batched = 2 if op == "conv2d_backward" else 1   # multiply-adds a thread)
                args = tuple(np.concatenate([a] * 64) if i < batched else a for i, a in enumerate(args))
            results = []
            for n in (1, 2, 3):
                cconv.set_num_threads(n)
                if n == 2 and op.startswith("conv"):
                    for entry in cconv.explain(op, *args, **kwargs).values():
                        if entry["threads"] == 2:
                            teamed.add(entry["algorithm"])
                out = getattr(cconv, op)(*args, **kwargs, backend="cython")
                results.append(out if isinstance(out, tuple) else (out,))
            for other in results[1:]:
                for a, b in zip(results[0], other):
                    if a is not None:
                        assert_identical(b, a, context=f"{op} {kwargs}")
            tally("bit-identical on 1, 2, 3 threads", op)
    finally:
        cconv.set_num_threads(saved)
    expected = set(APPLIES) - {"lanes"} if cconv.backend_info()["simd"] != "generic" else \
        set(APPLIES) - {"lanes", "dot"}
    if cconv.backend_info()["channels_in_lanes"] and dtype is np.float32:
        expected.add("lanes")
    assert teamed >= expected, f"never on a team of 2: {sorted(expected - teamed)}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
# Forking a process whose OpenMP workers are alive is what this test checks; Python 3.12+
# warns about any fork of a multi-threaded process.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_one_thread_enters_no_parallel_region_after_fork():
    """A forked child on one thread runs every pass without entering an OpenMP parallel region
    (libgomp's thread pool does not survive fork: entering one there can hang)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 20, 20), dtype=np.float32)
    w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
    saved = cconv.get_num_threads()
    cconv.set_num_threads(2)
    try:
        y = cconv.conv2d(x, w, padding=1)            # the parent's team exists now
        cconv.conv2d_backward(y, x, w, padding=1)
        cconv.set_num_threads(1)
        pid = os.fork()
        if pid == 0:                                  # child: every pass, then leave at once
            code = 1
            try:
                assert cconv.explain("conv2d_backward", y, x, w, padding=1)["grad_weight"]["threads"] == 1
                cconv.conv2d(x, w, padding=1)
                cconv.conv2d_backward(y, x, w, padding=1)
                cconv.conv2d(x, w, stride=2)
                cconv.max_pool2d(x, 2, return_indices=True)
                cconv.avg_pool2d_backward(cconv.avg_pool2d(x, 2), x.shape, 2)
                code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        cconv.set_num_threads(saved)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_long_row_splits_between_threads(dtype):
    """A batch of one long row (conv1d, batch 1): the padded forward and the stride-1 input
    gradient cut the one slice's grid into column chunks over a shared padded copy, the dot
    weight gradient cuts the output channels into blocks; on 2 threads both run on the team
    (explain says so, and shows the shared copies), match the reference and give the same
    bits as 1 and 3 threads."""
    rng = np.random.default_rng(11)
    # 20 input channels: the stride-1 input gradient's 20 output channels fill too little of a
    # 16-lane pair for channels in lanes (AVX-512), so it runs the padded grid on every ISA
    x = rng.standard_normal((1, 20, 900)).astype(dtype)
    w = rng.standard_normal((70, 20, 3)).astype(dtype)
    b = rng.standard_normal(70).astype(dtype)
    gy = rng.standard_normal((1, 70, 900)).astype(dtype)
    saved = cconv.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            cconv.set_num_threads(n)
            fwd = cconv.explain("conv1d", x, w, b, padding=1)["forward"]
            bwd = cconv.explain("conv1d_backward", gy, x, w, padding=1)
            if n == 2:
                assert (fwd["algorithm"], fwd["threads"]) == ("padded", 2)
                assert "padded_images" in fwd["workspace"] and "per_thread" in fwd["workspace"]
                assert (bwd["grad_input"]["algorithm"], bwd["grad_input"]["threads"]) == ("padded", 2)
                assert "padded_images" in bwd["grad_input"]["workspace"]
                assert (bwd["grad_weight"]["algorithm"], bwd["grad_weight"]["threads"]) == ("dot", 2)
            if n == 1:
                assert "padded_images" not in fwd["workspace"]
            before = _counts()
            y = cconv.conv1d(x, w, b, padding=1, backend="cython")
            grads = cconv.conv1d_backward(gy, x, w, padding=1, backend="cython")
            ran = _ran_since(before)
            assert (ran["forward"], ran["grad_input"], ran["grad_weight"]) == ("padded", "padded", "dot")
            results.append((y,) + tuple(grads))
    finally:
        cconv.set_num_threads(saved)
    ref = (cconv.conv1d(x, w, b, padding=1, backend=REFERENCE),) + tuple(
        cconv.conv1d_backward(gy, x, w, padding=1, backend=REFERENCE))
    for got, want in zip(results[0], ref):
        assert_close(got, want, context="conv1d batch 1")
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert_identical(c, a, context="conv1d batch 1 on 1, 2, 3 threads")


@pytest.mark.parametrize("stride, large, want", [
    (2, True, ("im2col", "im2col")),   # one strided row, packed weights 3x the L2 share
    (2, False, ("padded", "padded")),  # the same row with 64 channels' weights, which stay in L2
    (1, True, ("padded", "im2col")),   # stride 1: only a team streams the weights twice over
])
def test_row_with_large_weights_plans_im2col(stride, large, want):
    """A conv1d forward (its grid one output row) runs packed im2col once its packed weights
    exceed the L2 share when it is strided or runs on a team (the padded grid would stream
    them from L3 for every block of columns); explain says so with its own reason, the
    counters confirm the path, and the result matches the reference with and without bias
    on 1 and 2 threads.  float64 (channels in lanes, a float32 kernel, does not apply), with
    the channel count scaled to the probed L2 (half of it is the share; at 3x the share the
    restreaming outweighs what the grid saves in columns on every tile size, at 1.5x a 512 KiB
    L2 with AVX2's tiles still plans the grid)."""
    rng = np.random.default_rng(5)
    dtype = np.float64
    share = cconv.backend_info()["cache_bytes"]["l2"] // 2
    out_channels = 3 * share // (64 * 4 * 8) if large else 64
    x = rng.standard_normal((2, 64, 301)).astype(dtype)
    w = rng.standard_normal((out_channels, 64, 4)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    saved = cconv.get_num_threads()
    try:
        for n in (1, 2):
            cconv.set_num_threads(n)
            for bias in (None, b):
                plan = cconv.explain("conv1d", x, w, bias, stride=stride, padding=1)["forward"]
                assert plan["algorithm"] == want[n - 1], plan
                assert ("L3" in plan["reason"]) == (want[n - 1] == "im2col"), plan
                before = _counts()
                y = cconv.conv1d(x, w, bias, stride=stride, padding=1, backend="cython")
                assert _ran_since(before)["forward"] == want[n - 1]
                ref = cconv.conv1d(x, w, bias, stride=stride, padding=1, backend=REFERENCE)
                assert_close(y, ref, context=f"conv1d stride {stride} {out_channels} channels")
    finally:
        cconv.set_num_threads(saved)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, dilation, groups, out_channels", [
    (2, 1, 1, 237),   # strided, channel blocks with a partly empty last one (237 = 14 x 16 + 13)
    (1, 3, 1, 128),   # dilated stride 1, two full 64-channel spans
    (4, 1, 2, 2 * 75),  # grouped, stride 4
])
def test_row_channels_in_lanes(dtype, stride, dilation, groups, out_channels):
    """A conv1d forward (one output row) with more than 64 output channels per group filling
    the 16-lane blocks runs channels in lanes on AVX-512 float32 when it has >= 2 slices
    (explain says so with the one-row reason; the counters confirm the path); float64, a
    batch of one and the input gradient keep the GEMMs.  Every pass matches the reference,
    with and without bias, and gives the same bits on 1 and 2 threads."""
    rng = np.random.default_rng(17)
    c = 6 * groups
    w = rng.standard_normal((out_channels, c // groups, 5)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    args = dict(stride=stride, padding=2, dilation=dilation, groups=groups)
    lanes = bool(_info()["channels_in_lanes"]) and dtype is np.float32
    saved = cconv.get_num_threads()
    try:
        for batch in (2, 1):
            x = rng.standard_normal((batch, c, 1203)).astype(dtype)
            want = "lanes" if lanes and batch * groups >= 2 else None
            results = []
            for n in (1, 2):
                cconv.set_num_threads(n)
                for bias in (None, b):
                    plan = cconv.explain("conv1d", x, w, bias, **args)["forward"]
                    if want:
                        assert plan["algorithm"] == "lanes" and "one output row" in plan["reason"], plan
                    else:
                        assert plan["algorithm"] != "lanes", plan
                    before = _counts()
                    y = cconv.conv1d(x, w, bias, backend="cython", **args)
                    assert (_ran_since(before)["forward"] == "lanes") == bool(want)
                    ref = cconv.conv1d(x, w, bias, backend=REFERENCE, **args)
                    assert_close(y, ref, context=f"conv1d {out_channels} channels, batch {batch}")
                    results.append(y)
                gy = rng.standard_normal(y.shape).astype(dtype)
                bwd = cconv.explain("conv1d_backward", gy, x, w, **args)
                assert "one output row" not in bwd["grad_input"]["reason"]
                grads = cconv.conv1d_backward(gy, x, w, backend="cython", **args)
                for got, exp in zip(grads, cconv.conv1d_backward(gy, x, w, backend=REFERENCE, **args)):
                    assert_close(got, exp, context=f"conv1d backward {out_channels} channels")
            for a, other in zip(results[:2], results[2:]):
                assert_identical(other, a, context="conv1d in lanes on 1 and 2 threads")
    finally:
        cconv.set_num_threads(saved)
