"""tools/fuzz.py's N-d part: it runs every 1-d/3-d and adaptive op (forward and backward) against
cconv._reference_nd and finds a planted wrong answer; and its float32 re-judging rule (a result
outside the relative tolerance agrees only when it is no less accurate than the reference)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import cconv

FUZZ_SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "fuzz.py"

ND_OPS = [f"{op}{d}d{suffix}" for d in (1, 3) for op in ("conv", "conv_transpose", "max_pool", "avg_pool")
          for suffix in ("", "_backward")] + \
         [f"adaptive_{kind}_pool{d}d{suffix}" for kind in ("avg", "max") for d in (1, 2, 3)
          for suffix in ("", "_backward")]


@pytest.fixture(scope="module")
def fuzz():
    if not FUZZ_SCRIPT.exists():
        pytest.skip(f"{FUZZ_SCRIPT} not found beside the tests")
    spec = importlib.util.spec_from_file_location("cconv_fuzz_nd", FUZZ_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_nd_op_is_fuzzed_and_agrees(fuzz, monkeypatch):
    monkeypatch.setattr(fuzz, "ND_SHARE", 1.0)
    fuzzer = fuzz.Fuzzer("cython", seed=3).fuzz(1500)
    assert not fuzzer.mismatches, "\n".join(fuzzer.mismatches[:5])
    # the dead-tap and few-pixel families add 2-d convs on a schedule of their own
    assert set(fuzzer.calls) - {"conv2d", "conv2d_backward"} == set(ND_OPS)
    assert fuzzer.rejected > 0  # some drawn argument sets were invalid, and both sides said so
    assert fuzzer.rows_in_place > 0  # conv3d forwards whose output rows the volume writes in place
    assert fuzzer.patch_backwards > 0  # conv3d backwards on kernel == stride patches (a 1x1 conv2d)


def test_a_wrong_nd_answer_is_found(fuzz, monkeypatch):
    monkeypatch.setattr(fuzz, "ND_SHARE", 1.0)
    original = cconv.avg_pool3d

    def off_by_a_little(*args, **kwargs):
        return original(*args, **kwargs) * np.float32(1.001)

    monkeypatch.setattr(cconv, "avg_pool3d", off_by_a_little)
    fuzzer = fuzz.Fuzzer("cython", seed=4).fuzz(600)
    assert any("avg_pool3d on cython: relative error" in m for m in fuzzer.mismatches), fuzzer.mismatches[:3]


def test_float32_rejudging_accepts_only_the_more_accurate(fuzz):
    exact = np.array([0.00898979], np.float64)
    close, far = np.array([0.00898969], np.float32), np.array([0.00898886], np.float32)
    assert fuzz._no_less_accurate(close, far, exact)
    assert not fuzz._no_less_accurate(far, close, exact)
    assert not fuzz._no_less_accurate(close.astype(np.float64), far.astype(np.float64), exact)  # float32 only
