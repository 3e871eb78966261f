"""Calls with few output pixels (batch 1-2, 1x1-4x4 maps, many channels) against PyTorch.

Named layers (classifier heads, late-stage layers at batch 1) plus a seeded spread of
small-pixel layers; every pass timed paired against torch in one process
(cconv._bench_sweep.measure) at 1 and 2 threads.

    python benchmarks/small_pixels.py --label before --json before.json
    python benchmarks/small_pixels.py --label after --json after.json
    python benchmarks/small_pixels.py --report before.json after.json > results-small-pixels.md
    python benchmarks/small_pixels.py --crossover     # rows vs the GEMM paths over P, channels
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from cconv._bench_layers import ConvLayer
from cconv._bench_sweep import _geomean, measure

NAMED = [
    ConvLayer(1, 1280, 1536, 1, 1, (1, 1), kind="head"),
    ConvLayer(1, 480, 432, 1, 1, (1, 1), kind="head"),
    ConvLayer(1, 304, 688, 2, 2, (1, 1), stride=(2, 2), kind="strided"),
    ConvLayer(2, 736, 263, 1, 1, (1, 1), kind="head"),
    ConvLayer(1, 389, 256, 1, 1, (1, 1), dtype="float64", kind="head"),
]


def spread(count, seed):
    """Small-pixel layers: batch 1-2, output maps 1x1-4x4 (N*OH*OW <= 32), 64-1024
    channels, 1x1 and 3x3 kernels, stride 1-2, both dtypes."""
    rng = np.random.default_rng(seed)
    layers = []
    while len(layers) < count:
        k = int(rng.choice([1, 1, 3]))
        stride = int(rng.choice([1, 1, 2]))
        out = int(rng.integers(1, 5))
        pad = k // 2 if rng.random() < 0.7 else 0
        side = (out - 1) * stride + k - 2 * pad
        if side < 1:
            continue
        layers.append(ConvLayer(int(rng.choice([1, 1, 2])), int(rng.integers(64, 1025)),
                                int(rng.integers(64, 1025)), side, side, (k, k),
                                stride=(stride, stride), padding=(pad, pad),
                                dtype="float64" if rng.random() < 0.25 else "float32",
                                kind="spread"))
    return layers


_CROSS_CODE = """
import json, sys, time, numpy as np, cconv
cconv.set_num_threads(1)
out = []
for c, o, h, w in json.loads(sys.argv[1]):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((o, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    gy = rng.standard_normal((1, o, h, w)).astype(np.float32)
    calls = {"forward": lambda: cconv.conv2d(x, wt),
             "grad_input": lambda: cconv.conv2d_backward(gy, x, wt, output_mask=(True, False, False)),
             "grad_weight": lambda: cconv.conv2d_backward(gy, x, wt, output_mask=(False, True, False))}
    for name, fn in calls.items():
        fn()
        best = []
        for _ in range(5):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 0.01:
                fn()
                n += 1
            best.append((time.perf_counter() - t0) / n)
        plan = cconv.explain("conv2d", x, wt) if name == "forward" else \
            cconv.explain("conv2d_backward", gy, x, wt)
        out.append([c, o, h * w, name, sorted(best)[2], plan[name]["algorithm"]])
print(json.dumps(out))
"""


def crossover():
    """rows (forced) against the GEMM paths (im2col forced: im2col / col2im / flipped
    forward) over P = 1..256 pixels (1x1 kernels, batch 1, float32, 1 thread): the
    largest P at which rows is faster, per channel count and pass."""
    shapes = [(c, o, h, w) for c, o in ((64, 64), (256, 256), (512, 1024), (1024, 2048))
              for h, w in ((1, 1), (1, 2), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16))]
    runs = {}
    for algo in ("rows", "im2col", ""):
        env = dict(os.environ, CCONV_CONV_ALGO=algo)
        res = subprocess.run([sys.executable, "-c", _CROSS_CODE, json.dumps(shapes)], env=env,
                             capture_output=True, text=True, check=True)
        runs[algo or "planner"] = {tuple(r[:4]): r[4:] for r in json.loads(res.stdout)}
    print("| C->O | pass | " + " | ".join(f"P={h * w}" for _, _, h, w in shapes[:9]) + " |")
    print("|---|---|" + "---:|" * 9)
    for c, o in dict.fromkeys((c, o) for c, o, _, _ in shapes):
        for name in ("forward", "grad_input", "grad_weight"):
            cells = []
            for _, _, h, w in shapes[:9]:
                key = (c, o, h * w, name)
                rows, gemm, chosen = runs["rows"][key][0], runs["im2col"][key][0], runs["planner"][key][1]
                cells.append(f"{gemm / rows:.2f}{'*' if chosen == 'rows' else ''}")
            print(f"| {c}->{o} | {name} | " + " | ".join(cells) + " |")
    print("\nGEMM time / rows time (above 1: rows faster); * the planner picks rows.")


def report(before_path, after_path):
    """Markdown: per layer, pass and thread count, cconv before/after and torch (ms), ratios."""
    runs = [json.load(open(p)) for p in (before_path, after_path)]
    key = lambda r: (r["layer"], r["pass"], r["threads"])  # noqa: E731
    before = {key(r): r for r in runs[0]["records"]}
    lines = [f"cconv before ({runs[0]['meta']['label']}) and after ({runs[1]['meta']['label']}) "
             f"against torch {runs[1]['meta']['torch']}, float32 unless noted. Each run times cconv "
             "and torch alternately in one process (median of 7 samples, each >= 10 ms of calls); "
             "ratio = torch time / cconv time (above 1: cconv faster).", ""]
    for threads in sorted({r["threads"] for r in runs[1]["records"]}):
        lines += [f"### {threads} thread{'s' if threads > 1 else ''}", "",
                  "| layer | pass | before ms | torch ms | ratio | after ms | torch ms | ratio | speed-up |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        old_r, new_r = [], []
        for r in runs[1]["records"]:
            if r["threads"] != threads:
                continue
            b = before[key(r)]
            old_r.append(b["ratio"])
            new_r.append(r["ratio"])
            lines.append(f"| {r['describe']} | {r['pass']} | {b['cconv_s'] * 1e3:.3f} | "
                         f"{b['torch_s'] * 1e3:.3f} | {b['ratio']:.2f} | {r['cconv_s'] * 1e3:.3f} | "
                         f"{r['torch_s'] * 1e3:.3f} | {r['ratio']:.2f} | "
                         f"{b['cconv_s'] / r['cconv_s']:.1f}x |")
        lines += ["", f"Geomean ratio at {threads} thread(s): before {_geomean(old_r):.2f}, "
                  f"after {_geomean(new_r):.2f}; worst before {min(old_r):.2f}, "
                  f"after {min(new_r):.2f}.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="this build")
    parser.add_argument("--json")
    parser.add_argument("--spread", type=int, default=16, help="random layers (default 16)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--crossover", action="store_true")
    args = parser.parse_args(argv)
    if args.crossover:
        crossover()
        return 0
    if args.report:
        print(report(*args.report))
        return 0
    import torch
    layers = NAMED + spread(args.spread, args.seed)
    records = []
    for threads in (1, 2):
        for r in measure(layers, (threads,), repeat=7, min_time=0.01):
            records.append(r)
            print(f"{r['describe']:<40} {r['pass']:<12} t{threads} cconv {r['cconv_s'] * 1e3:8.3f} ms "
                  f"torch {r['torch_s'] * 1e3:8.3f} ms ratio {r['ratio']:.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": {"label": args.label, "torch": torch.__version__}, "records": records},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
