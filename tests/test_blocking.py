"""GEMM cache blocking: the cache-size probe, the blocking the planner derives from it, and
every GEMM-based algorithm on tiny caches (CCONV_CACHE_BYTES), where its multi-block paths run
(several kc depth chunks, several mc row blocks, several nc column blocks), against the
reference, with explain's "blocking" entry and the pass counters proving what ran.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cconv
from conftest import BACKENDS_UNDER_TEST, REFERENCE, assert_close, tally

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif("cython" not in BACKENDS_UNDER_TEST,
                                reason="cache blocking exists in the compiled backend only")

TINY = "1024,8192,65536"      # l1d, l2, l3 bytes: kc 8-16, mc 48, nc 96 (see _expected)


def _expected(l1d, l2, nr, itemsize):
    """The blocking rule of src/conv_plan.pxi (_blocking), restated."""
    kc = max(8, min(l1d // (2 * nr * itemsize) // 8 * 8, 1024))
    return {"kc": kc, "mc": max(1, 3 * l2 // (64 * kc)),
            "nc": max(nr, 3 * l2 // (32 * kc) // nr * nr), "dot_gy_bytes": 3 * l2 // 8}


def _child(env_extra, code):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True,
                          text=True, timeout=300)


def test_cache_sizes_are_reported_and_drive_the_blocking():
    info = cconv.backend_info()
    caches = info["cache_bytes"]
    assert set(caches) == {"l1d", "l2", "l3"}
    assert all(isinstance(v, int) for v in caches.values()), caches
    assert 1024 <= caches["l1d"] <= caches["l2"] <= caches["l3"], caches
    for name, itemsize in (("float32", 4), ("float64", 8)):
        nr = info["gemm_tile"][name][1]
        assert info["gemm_blocking"][name] == _expected(caches["l1d"], caches["l2"], nr,
                                                        itemsize), (name, info)


def test_the_tuning_machines_caches_give_the_tuned_constants():
    """32 KiB L1d, 512 KiB L2 and one 64-byte vector per panel row (AVX2, both types): the
    blocking the planner was tuned with (kc 256, mc 96, nc 192, 192 KiB of grad_output)."""
    code = ("import json, cconv; i = cconv.backend_info(); "
            "print(json.dumps([i['gemm_blocking'], i['gemm_tile'], i['cache_bytes_from']]))")
    result = _child({"CCONV_CACHE_BYTES": "32768,524288,33554432"}, code)
    assert result.returncode == 0, result.stderr[-3000:]
    blocking, tiles, source = json.loads(result.stdout.strip().splitlines()[-1])
    assert source == "CCONV_CACHE_BYTES"
    for name, itemsize in (("float32", 4), ("float64", 8)):
        if tiles[name][1] * itemsize == 64:
            assert blocking[name] == {"kc": 256, "mc": 96, "nc": 192, "dot_gy_bytes": 196608}
        assert blocking[name] == _expected(32768, 524288, tiles[name][1], itemsize)


@pytest.mark.parametrize("value", ["abc", "32768,524288", "32768,524288,1e9", "512,8192,65536",
                                   "65536,32768,1048576", "-1,8192,65536"])
def test_bad_cache_sizes_are_refused(value):
    result = _child({"CCONV_CACHE_BYTES": value}, "import cconv")
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "CCONV_CACHE_BYTES" in result.stderr, result.stderr


# --------------------------------------------------------------------------
# every GEMM-based algorithm on tiny caches (run in a child with CCONV_CACHE_BYTES=TINY and
# CCONV_CONV_ALGO=<algo>: both are read at import)
# --------------------------------------------------------------------------

# algorithm -> (op, x shape, w shape, kwargs, passes that run it, blocking keys it uses);
# each shape makes every blocked loop of the algorithm take several blocks on TINY caches.
CASES = {
    "im2col": [
        # forward: K = 108 > kc, 50 rows > mc, blocks of nc of the 143-pixel images;
        # grad_weight: 108 columns > nc, pixels > kc
        ("conv2d", (2, 12, 13, 11), (50, 12, 3, 3), {"padding": 1},
         ("forward", "grad_input", "grad_weight"), ("kc", "mc", "nc")),
        # one image: forward blocks of nc pixels per image (196 > nc)
        ("conv2d", (1, 12, 14, 14), (50, 12, 3, 3), {"padding": 1},
         ("forward", "grad_input", "grad_weight"), ("kc", "mc", "nc")),
        # 25-pixel images (a 5x5 map wastes over 1/16 of its panels): forward blocks of nc
        # columns span images
        ("conv2d", (8, 12, 5, 5), (50, 12, 3, 3), {"padding": 1},
         ("forward", "grad_input", "grad_weight"), ("kc", "mc", "nc")),
        # 4-pixel images: the weight gradient's depth chunks span images
        ("conv2d", (5, 12, 2, 3), (50, 12, 1, 2), {},
         ("forward", "grad_weight"), ("kc", "mc", "nc")),
    ],
    "padded": [
        ("conv2d", (2, 12, 13, 11), (50, 12, 3, 3), {"padding": 1},
         ("forward", "grad_input"), ("kc", "mc")),
    ],
    "col2im": [    # rows K = 450 > mc, depth 20 output channels > kc
        ("conv2d", (2, 50, 13, 11), (20, 50, 3, 3), {"stride": 2, "padding": 1},
         ("grad_input",), ("kc", "mc", "nc")),
    ],
    "winograd": [  # weight gradient: 16 GEMMs of C = 50 rows > mc
        ("conv2d", (2, 50, 8, 8), (20, 50, 3, 3), {"padding": 1},
         ("grad_weight",), ("mc",)),
    ],
    "dot": [       # output channels in blocks of dot_gy_bytes of grad_output
        ("conv2d", (2, 12, 13, 11), (50, 12, 3, 3), {"padding": 1},
         ("grad_weight",), ("dot_gy_bytes",)),
        # 1x1 in place: 576-pixel images in chunks
        ("conv2d", (2, 12, 24, 24), (50, 12, 1, 1), {},
         ("grad_weight",), ("dot_gy_bytes",)),
    ],
    "volume": [    # K = 162 > kc
        ("conv3d", (2, 6, 5, 6, 7), (8, 6, 3, 3, 3), {"padding": 1},
         ("forward", "grad_input"), ("kc",)),
        # stride 2, 16-wide output rows: whole panels written in place (output_rows)
        ("conv3d", (2, 6, 5, 32, 32), (8, 6, 3, 3, 3), {"stride": 2, "padding": 1},
         ("forward",), ("kc",)),
    ],
}


def _counts():
    from cconv import _compiled
    return _compiled._conv.algorithm_counts()


def _ran(before, algo):
    return {p for (a, p), n in _counts().items() if a == algo and n > before.get((a, p), 0)}


def run_tiny(algo):
    """In a child with CCONV_CACHE_BYTES=TINY and CCONV_CONV_ALGO=algo: every case of CASES[algo]
    in both dtypes (plus two jittered copies each); returns {"pass/dtype": cases run}."""
    info = cconv.backend_info()
    assert info["cache_bytes"] == dict(zip(("l1d", "l2", "l3"), map(int, TINY.split(",")))), info
    rng = np.random.default_rng(7)
    hits = {}
    for op, xs, ws, kwargs, passes, keys in CASES[algo]:
        for dtype in (np.float32, np.float64):
            blk = info["gemm_blocking"][np.dtype(dtype).name]
            assert blk["kc"] <= 16 and blk["mc"] <= 48 and blk["nc"] <= 96, blk
            for jitter in range(3):
                x_shape = xs if jitter == 0 else xs[:2] + tuple(d + int(rng.integers(0, 3))
                                                                 for d in xs[2:])
                x = rng.standard_normal(x_shape).astype(dtype)
                w = rng.standard_normal(ws).astype(dtype)
                b = rng.standard_normal(ws[0]).astype(dtype)
                fwd, bwd = getattr(cconv, op), getattr(cconv, op + "_backward")
                context = f"{algo} {op} {np.dtype(dtype).name} x{x.shape} w{w.shape} {kwargs}"
                y_ref = fwd(x, w, b, **kwargs, backend=REFERENCE)
                gy = rng.standard_normal(y_ref.shape).astype(dtype)
                plans = cconv.explain(op, x, w, b, **kwargs, backend="cython")
                plans.update(cconv.explain(op + "_backward", gy, x, w, **kwargs,
                                           backend="cython"))
                for pass_ in passes:
                    entry = plans[pass_]
                    assert entry["algorithm"] == algo, (pass_, entry, context)
                    used = entry["blocking"]
                    assert set(used) == set(keys), (pass_, entry, context)
                    for key in keys:    # col2im's column block is its own (images' columns)
                        if not (algo == "col2im" and key == "nc"):
                            assert used[key] == blk[key], (key, entry, blk, context)
                before = _counts()
                y = fwd(x, w, b, **kwargs, backend="cython")
                got = bwd(gy, x, w, **kwargs, backend="cython")
                ran = _ran(before, algo)
                assert set(passes) <= ran, (passes, ran, context)
                assert_close(y, y_ref, context="forward " + context)
                expected = bwd(gy, x, w, **kwargs, backend=REFERENCE)
                for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, expected):
                    assert_close(a, e, context=f"{name} {context}")
                for pass_ in passes:
                    key = f"{pass_}/{np.dtype(dtype).name}"
                    hits[key] = hits.get(key, 0) + 1
    return hits


def test_cases_take_several_blocks():
    """The shapes of CASES exceed the tiny blocks where each algorithm blocks (so the tiny-cache
    runs below go through the multi-block loops, not one block that happens to fit)."""
    kc, mc, nc = 16, 48, 96       # the largest TINY gives (kc 8 or 16 by the kernel's width)
    _, x, w, _, _, _ = CASES["im2col"][0]
    depth = w[1] * w[2] * w[3]
    assert depth > kc and w[0] > mc and x[2] * x[3] > nc and depth > nc
    _, x, w, _, _, _ = CASES["im2col"][1]
    assert x[0] == 1 and x[2] * x[3] > nc
    _, x, w, _, _, _ = CASES["im2col"][2]
    assert x[0] * x[2] * x[3] > nc and 16 * (32 - x[2] * x[3]) > 32
    _, x, w, _, _, _ = CASES["col2im"][0]
    assert w[1] * w[2] * w[3] > mc and w[0] > kc
    _, x, w, _, _, _ = CASES["winograd"][0]
    assert x[1] > mc
    _, x, w, _, _, _ = CASES["volume"][0]
    assert w[1] * w[2] * w[3] * w[4] > kc


@pytest.mark.parametrize("algo", sorted(CASES))
def test_tiny_caches(algo):
    info = cconv.backend_info()
    if algo == "dot" and info["simd"] == "generic":
        pytest.skip("the dot kernel exists for the vector ISAs only")
    result = _child({"CCONV_CACHE_BYTES": TINY, "CCONV_CONV_ALGO": algo},
                    f"import json, test_blocking as t; print(json.dumps(t.run_tiny({algo!r})))")
    assert result.returncode == 0, result.stderr[-3000:]
    hits = json.loads(result.stdout.strip().splitlines()[-1])
    wanted = {f"{p}/{d}" for case in CASES[algo] for p in case[4] for d in ("float32", "float64")}
    assert wanted <= set(hits), (wanted, hits)
    tally("blocking (tiny caches)", algo, sum(hits.values()))
