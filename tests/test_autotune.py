"""Autotune (cconv.set_autotune / CCONV_AUTOTUNE): timing the applicable algorithms per geometry.

* the switch, its environment variable (unknown values refused with the accepted ones) and
  backend_info's report;
* explain says "predicted" before a geometry's first tuned call and "tuned" (with the measured
  times) after it; the winner is one of the algorithms timed, which all apply to the pass;
* tuned results match the reference for forward, grad_input and grad_weight over random
  geometries, and are bit for bit those of the winning algorithm forced with CCONV_CONV_ALGO (in
  a subprocess) and of later (cached) calls; the extension's pass counters prove what ran;
* non-finite operands never get an algorithm that is inexact with them, also when the geometry
  was tuned on finite ones;
* the cache of tuned geometries is bounded; the thread count is part of a geometry;
* concurrent threads and a forked child tune and compute correctly.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import cconv
from conftest import BACKENDS_UNDER_TEST, REFERENCE, assert_close, assert_identical, tally
from test_algorithms import APPLIES, _counts, _draw, _poke, _ran_since

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif("cython" not in BACKENDS_UNDER_TEST,
                                reason="autotune exists in the compiled backend only")
PASSES = ("forward", "grad_input", "grad_weight")
INEXACT_WITH_NONFINITE = {"winograd"}   # mixes values in its transforms


def _conv():
    from cconv import _compiled
    return _compiled._conv


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with autotune off and nothing tuned, and leaves it so."""
    if os.environ.get("CCONV_CONV_ALGO"):
        pytest.skip("an algorithm is forced: autotune stands aside")
    saved = cconv.get_num_threads()
    _conv()._forget_tuned()
    cconv.set_autotune(False)
    yield
    cconv.set_autotune(False)
    cconv.set_num_threads(saved)
    _conv()._forget_tuned()


def _child(env_extra, code):
    env = dict(os.environ)
    env.pop("CCONV_CONV_ALGO", None)
    env.pop("CCONV_AUTOTUNE", None)
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True,
                          text=True, timeout=300)


def _case(rng, dtype=np.float32):
    """(x, w, gy, kwargs) of a random irregular conv2d, sometimes 3x3 with enough channels for
    Winograd and large enough for GEMMs."""
    if rng.random() < 0.4:
        n, c, o = int(rng.integers(1, 3)), int(rng.integers(16, 24)), int(rng.integers(16, 24))
        h, w_ = int(rng.integers(5, 14)), int(rng.integers(5, 14))
        x = rng.standard_normal((n, c, h, w_)).astype(dtype)
        w = rng.standard_normal((o, c, 3, 3)).astype(dtype)
        kwargs = dict(padding=int(rng.integers(0, 2)))
    else:
        x, w, _, kwargs = _draw(rng, "im2col", dtype)
    y = cconv.conv2d(x, w, **kwargs, backend=REFERENCE)
    gy = rng.standard_normal(y.shape).astype(dtype)
    return x, w, gy, kwargs


def _run_pass(name, x, w, gy, kwargs):
    """The pass's result, computed by the compiled backend."""
    if name == "forward":
        return cconv.conv2d(x, w, **kwargs, backend="cython")
    mask = (name == "grad_input", name == "grad_weight", False)
    gi, gw, _ = cconv.conv2d_backward(gy, x, w, **kwargs, output_mask=mask, backend="cython")
    return gi if name == "grad_input" else gw


def _explain(name, x, w, gy, kwargs):
    if name == "forward":
        return cconv.explain("conv2d", x, w, **kwargs)["forward"]
    mask = (name == "grad_input", name == "grad_weight", False)
    return cconv.explain("conv2d_backward", gy, x, w, **kwargs, output_mask=mask)[name]


def _reference(name, x, w, gy, kwargs):
    if name == "forward":
        return cconv.conv2d(x, w, **kwargs, backend=REFERENCE)
    gi, gw, _ = cconv.conv2d_backward(gy, x, w, **kwargs, backend=REFERENCE)
    return gi if name == "grad_input" else gw


# --------------------------------------------------------------------------
# the switch
# --------------------------------------------------------------------------

def test_switch():
    assert cconv.get_autotune() is False
    assert cconv.backend_info()["autotune"]["enabled"] is False
    cconv.set_autotune(True)
    assert cconv.get_autotune() is True
    info = cconv.backend_info()["autotune"]
    assert info["enabled"] and info["active"] and info["entries"] == 0 and info["capacity"] >= 64
    cconv.set_autotune(np.bool_(False))
    assert cconv.get_autotune() is False
    with pytest.raises(TypeError, match="bool"):
        cconv.set_autotune(1)
    with pytest.raises(TypeError, match="bool"):
        cconv.set_autotune("on")


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), (" On ", True), ("", False),
                                             ("false", False)])
def test_environment(value, expected):
    result = _child({"CCONV_AUTOTUNE": value},
                    "import cconv; print(cconv.get_autotune(), cconv.backend_info()['autotune']['enabled'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(expected)] * 2


def test_unknown_environment_value_is_refused():
    result = _child({"CCONV_AUTOTUNE": "fastest"}, "import cconv")
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "CCONV_AUTOTUNE='fastest'" in result.stderr
    assert "accepted: 1" in result.stderr and "0" in result.stderr


def test_forced_algorithm_stands_and_nothing_is_tuned():
    code = ("import json, numpy as np, cconv; x = np.ones((2, 16, 9, 9)); w = np.ones((16, 16, 3, 3));"
            "cconv.conv2d(x, w, padding=1); e = cconv.explain('conv2d', x, w, padding=1)['forward'];"
            "print(json.dumps([e['selected'], e['algorithm'], cconv.backend_info()['autotune']]))")
    result = _child({"CCONV_AUTOTUNE": "1", "CCONV_CONV_ALGO": "im2col"}, code)
    assert result.returncode == 0, result.stderr
    selected, algorithm, info = json.loads(result.stdout)
    assert (selected, algorithm) == ("forced", "im2col")
    assert info["enabled"] and not info["active"] and info["tunings"] == 0


# --------------------------------------------------------------------------
# explain, the winner, results
# --------------------------------------------------------------------------

def test_explain_predicted_then_tuned():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 12, 12), dtype=np.float32)
    w = rng.standard_normal((24, 16, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((2, 24, 12, 12), dtype=np.float32)
    kwargs = dict(padding=1)
    predicted = {name: _explain(name, x, w, gy, kwargs) for name in PASSES}
    assert all(e["selected"] == "predicted" and "timings_us" not in e for e in predicted.values())
    cconv.set_autotune(True)
    assert all(_explain(name, x, w, gy, kwargs)["selected"] == "predicted" for name in PASSES)
    assert cconv.backend_info()["autotune"]["tunings"] == 0     # explain computes nothing
    for name in PASSES:
        _run_pass(name, x, w, gy, kwargs)
        entry = _explain(name, x, w, gy, kwargs)
        assert entry["selected"] == "tuned", entry
        times = entry["timings_us"]
        assert len(times) >= 2 and all(t >= 0 for t in times.values()), times
        assert entry["algorithm"] in times
        assert predicted[name]["algorithm"] in times            # the planner's choice was a candidate
        # the fastest, unless within 3% of the one it had to beat
        assert times[entry["algorithm"]] <= min(times.values()) / 0.97 + 0.1, times
        assert "autotune" in entry["reason"]
    assert cconv.explain("conv2d_backward", gy, x, w, **kwargs)["grad_bias"]["selected"] == "predicted"
    info = cconv.backend_info()["autotune"]
    assert info["entries"] == 3 and info["tunings"] == 3 and info["timed_runs"] >= 6
    assert info["calls_served"] == 0          # explain's lookups are not calls
    _run_pass("forward", x, w, gy, kwargs)
    assert cconv.backend_info()["autotune"]["calls_served"] == 1
    cconv.set_autotune(False)     # off: calls use the planner's choice again
    assert all(_explain(name, x, w, gy, kwargs)["selected"] == "predicted" for name in PASSES)


def test_tuned_results_match_reference_and_forced_winner(tmp_path):
    """Random geometries, both dtypes, every pass: the tuning call's result, a later call's result
    and the reference agree; the later call ran the winner (counters); a child process with the
    winner forced by CCONV_CONV_ALGO gives the same bits."""
    rng = np.random.default_rng(7)
    cconv.set_autotune(True)
    cases = []
    for i in range(16):
        dtype = np.float32 if i % 2 == 0 else np.float64
        x, w, gy, kwargs = _case(rng, dtype)
        for name in PASSES:
            first = _run_pass(name, x, w, gy, kwargs)
            entry = _explain(name, x, w, gy, kwargs)
            before = _counts()
            again = _run_pass(name, x, w, gy, kwargs)
            ran = _ran_since(before)[name]
            context = f"{name} {dtype.__name__} x{x.shape} w{w.shape} {kwargs}"
            assert ran == entry["algorithm"], (ran, entry, context)
            assert_close(first, _reference(name, x, w, gy, kwargs), context=context)
            assert_identical(again, first, context=context)
            if entry["selected"] == "tuned":       # every candidate applies to the pass
                assert entry["algorithm"] in entry["timings_us"]
                assert set(entry["timings_us"]) <= {a for a, p in APPLIES.items() if name in p}, entry
                cases.append(dict(name=name, algo=entry["algorithm"], x=x, w=w, gy=gy, kwargs=kwargs,
                                  result=first))
    winners = {c["algo"] for c in cases}
    assert len(cases) >= 20 and len(winners) >= 2, winners
    for algo in sorted(winners):
        mine = [c for c in cases if c["algo"] == algo]
        path = tmp_path / f"{algo}.npz"
        np.savez(path, **{f"{a}{k}": c[a] for k, c in enumerate(mine) for a in ("x", "w", "gy")})
        specs = json.dumps([(c["name"], c["kwargs"]) for c in mine])
        code = ("import json, numpy as np, test_autotune as t\n"
                f"a = np.load({str(path)!r}); specs = json.loads({specs!r})\n"
                "out = {f'r{k}': t._run_pass(n, a[f'x{k}'], a[f'w{k}'], a[f'gy{k}'], kw)\n"
                "       for k, (n, kw) in enumerate(specs)}\n"
                f"np.savez({str(tmp_path / (algo + '-forced.npz'))!r}, **out)\n")
        result = _child({"CCONV_CONV_ALGO": algo}, code)
        assert result.returncode == 0, result.stderr[-3000:]
        forced = np.load(tmp_path / f"{algo}-forced.npz")
        for k, c in enumerate(mine):
            assert_identical(c["result"], forced[f"r{k}"], context=f"{algo} {c['name']} x{c['x'].shape} {c['kwargs']}")
    tally("autotune", "tuned passes checked against a forced winner", len(cases))


USES = {"forward": (0, 1), "grad_input": (2, 1), "grad_weight": (0, 2)}   # operands: x, w, gy


def test_nonfinite_operands_never_get_an_inexact_algorithm():
    """Winograd is timed on finite operands only; a geometry tuned on finite arrays and then called
    with a NaN or an infinity runs an exact algorithm (its winner if exact here, else one tuned
    for those facts)."""
    rng = np.random.default_rng(3)
    arrays = (rng.standard_normal((2, 16, 10, 10)), rng.standard_normal((16, 16, 3, 3)),
              rng.standard_normal((2, 16, 10, 10)))
    kwargs = dict(padding=1)
    cconv.set_autotune(True)
    finite_winner = {}
    for name in PASSES:      # tuned on finite operands: Winograd applies and is timed
        _run_pass(name, *arrays, kwargs)
        entry = _explain(name, *arrays, kwargs)
        assert "winograd" in entry["timings_us"], (name, entry)
        finite_winner[name] = entry["algorithm"]
    retuned = 0
    for poked in range(3):
        ops = tuple(_poke(rng, a) if i == poked else a for i, a in enumerate(arrays))
        for name in PASSES:
            got = _run_pass(name, *ops, kwargs)
            entry = _explain(name, *ops, kwargs)
            assert_close(got, _reference(name, *ops, kwargs), context=f"{name} non-finite operand {poked}")
            if poked not in USES[name]:
                continue
            assert entry["algorithm"] not in INEXACT_WITH_NONFINITE, (name, poked, entry)
            if finite_winner[name] in INEXACT_WITH_NONFINITE:   # tuned again, without Winograd
                assert entry["selected"] == "tuned" and not INEXACT_WITH_NONFINITE & set(entry["timings_us"])
                retuned += 1
    tally("autotune", "non-finite cases", 9)
    tally("autotune", "non-finite cases tuned again", retuned)


def test_cache_is_bounded():
    capacity = cconv.backend_info()["autotune"]["capacity"]
    w = np.ones((4, 2, 2, 2), np.float32)
    cconv.set_autotune(True)
    for width in range(2, capacity + 12):       # capacity + 10 geometries
        cconv.conv2d(np.zeros((1, 2, 2, width), np.float32), w)
    info = cconv.backend_info()["autotune"]
    assert info["entries"] == capacity and info["evictions"] == 10, info
    # the least recently used geometries went first
    assert cconv.explain("conv2d", np.zeros((1, 2, 2, 2), np.float32), w)["forward"]["selected"] == "predicted"
    last = np.zeros((1, 2, 2, capacity + 11), np.float32)
    assert cconv.explain("conv2d", last, w)["forward"]["selected"] == "tuned"


def test_thread_count_is_part_of_the_geometry():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 16, 24, 24), dtype=np.float32)
    w = rng.standard_normal((32, 16, 3, 3), dtype=np.float32)
    cconv.set_autotune(True)
    cconv.set_num_threads(1)
    y1 = cconv.conv2d(x, w, padding=1)
    assert cconv.explain("conv2d", x, w, padding=1)["forward"]["selected"] == "tuned"
    cconv.set_num_threads(2)
    assert cconv.explain("conv2d", x, w, padding=1)["forward"]["selected"] == "predicted"
    y2 = cconv.conv2d(x, w, padding=1)
    assert cconv.explain("conv2d", x, w, padding=1)["forward"]["selected"] == "tuned"
    assert_close(y2, y1)
    assert cconv.backend_info()["autotune"]["entries"] == 2


def test_concurrent_threads():
    """Python threads tuning different and equal geometries at once all get correct results."""
    rng = np.random.default_rng(4)
    cases = [_case(rng) for _ in range(6)]
    cases += cases[:3]           # the same geometries tuned twice at once
    cconv.set_autotune(True)
    errors = []

    def work(case):
        try:
            x, w, gy, kwargs = case
            for name in PASSES:
                assert_close(_run_pass(name, x, w, gy, kwargs), _reference(name, x, w, gy, kwargs),
                             context=f"thread {name}")
        except BaseException as exc:     # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert cconv.backend_info()["autotune"]["entries"] >= 6


def _child_conv(args):
    x, w = args
    import cconv as c
    c.set_autotune(True)
    y = c.conv2d(x, w, padding=1)
    return y, c.explain("conv2d", x, w, padding=1)["forward"]["selected"], c.get_num_threads()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
# Forking a process whose OpenMP workers are alive is what this test checks; Python 3.12+
# warns about any fork of a multi-threaded process.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_tunes_on_one_thread():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 12, 12))
    w = rng.standard_normal((16, 16, 3, 3))
    cconv.set_autotune(True)
    y = cconv.conv2d(x, w, padding=1)      # tuned in the parent (the child inherits the cache)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        yc, selected, threads = pool.apply_async(_child_conv, ((x, w),)).get(timeout=120)
    assert threads == 1 and selected == "tuned"
    assert_close(yc, y)
    assert_close(yc, cconv.conv2d(x, w, padding=1, backend=REFERENCE))


def test_differential_cross_section_with_autotune_on():
    """test_differential.py's cross-section (chunk 0 of every op, the large, hypothesis and
    non-finite cases) in a subprocess with CCONV_AUTOTUNE=1: every tuned result matches the
    reference, and tuning did happen there."""
    selection = "cython and (conv_large or conv2d_hypothesis or [0- or nonfinite) and not variants"
    code = ("import json, sys, pytest, cconv\n"
            "rc = pytest.main(['-q', '-p', 'no:cacheprovider', 'test_differential.py', '-k', "
            f"{selection!r}])\n"
            "print('AUTOTUNE', json.dumps(cconv.backend_info()['autotune']))\n"
            "sys.exit(int(rc))\n")
    result = _child({"CCONV_AUTOTUNE": "1", "CCONV_TEST_BACKENDS": "cython", "CCONV_TEST_LARGE_CASES": "8"},
                    code)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    info = json.loads(result.stdout.split("AUTOTUNE ")[-1].splitlines()[0])
    assert info["enabled"] and info["tunings"] >= 100, info
    tally("autotune", "differential cross-section tunings", info["tunings"])
