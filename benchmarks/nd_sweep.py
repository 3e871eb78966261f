#!/usr/bin/env python
"""Benchmark cconv's 1-d/3-d convolutions, 1-d/3-d/adaptive pooling and half-precision convs
against PyTorch's CPU ops, in one run, at 1 and 2 threads.

    python benchmarks/nd_sweep.py                          # everything, markdown to stdout
    python benchmarks/nd_sweep.py --only conv1d --quick    # one group, short timings
    python benchmarks/nd_sweep.py --markdown benchmarks/results-nd.md
    python benchmarks/nd_sweep.py --random 40 --seed 1     # 40 seeded random conv1d layers
    python benchmarks/nd_sweep.py --random 30 --dims 3     # 30 seeded random conv3d layers

Each case is timed paired: cconv and torch alternate in rounds, every round timing each side
over at least ``--min-time`` seconds; the reported ratio (torch time / cconv time, > 1 means
cconv is faster) is the median over the rounds' ratios, with their spread (min-max). Backward
tasks compare ``*_backward`` with the aten backward op autograd would run (all three conv
gradients). Half rows compare cconv's float16/bfloat16 time with its own float32 time.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np

try:
    import cconv
except ImportError:  # a source checkout: the package next to this directory (built in place)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import cconv

import torch
from cconv import _bench_sweep

F = torch.nn.functional
aten = torch.ops.aten

# (name, N, C_in, C_out, L, k, stride, dilation, groups, padding)
CONV1D = [
    ("speech frontend k11 s4", 8, 1, 64, 16000, 11, 4, 1, 1, 5),
    ("TCN dilated k3 d8", 4, 64, 64, 8000, 3, 1, 8, 1, 8),
    ("conv block k3", 8, 256, 256, 4000, 3, 1, 1, 1, 1),
    ("sequence k5", 64, 128, 128, 256, 5, 1, 1, 1, 2),
    ("downsample k4 s2", 16, 128, 256, 2048, 4, 2, 1, 1, 1),
    ("depthwise k9", 16, 512, 512, 1024, 9, 1, 1, 512, 4),
    ("pointwise k1", 32, 512, 512, 512, 1, 1, 1, 1, 0),
    ("grouped k7 g8", 8, 256, 256, 2000, 7, 1, 2, 8, 6),
    ("wide k11 s3", 4, 32, 64, 12000, 11, 3, 1, 1, 5),
    ("batch-1 k3", 1, 256, 512, 4096, 3, 1, 1, 1, 1),
]

# (name, N, C_in, C_out, (D, H, W), kernel, stride, padding)
CONV3D = [
    ("video stem 3x3x3", 2, 3, 32, (16, 56, 56), (3, 3, 3), (1, 2, 2), (1, 1, 1)),
    ("volume 3x3x3", 2, 32, 32, (16, 32, 32), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("(2+1)d spatial 1x3x3", 4, 64, 64, (8, 28, 28), (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("(2+1)d temporal 3x1x1", 4, 64, 64, (8, 28, 28), (3, 1, 1), (1, 1, 1), (1, 0, 0)),
    ("pointwise 1x1x1", 8, 128, 128, (8, 14, 14), (1, 1, 1), (1, 1, 1), (0, 0, 0)),
    ("medical 3x3x3", 1, 1, 16, (64, 64, 64), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("downsample 3x3x3 s2", 2, 16, 32, (32, 32, 32), (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    ("deep 3x3x3", 4, 128, 128, (8, 8, 8), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ("2x2x2 s2 no pad", 2, 64, 64, (16, 16, 16), (2, 2, 2), (2, 2, 2), (0, 0, 0)),
]


def _paired(fns, rounds, min_time):
    """Per round, the mean time of each function over >= min_time; returns {name: [times]}."""
    for fn in fns.values():
        fn()  # warm-up (workspaces, first-touch)
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            loops, elapsed = 0, 0.0
            start = time.perf_counter()
            while elapsed < min_time:
                fn()
                loops += 1
                elapsed = time.perf_counter() - start
            times[name].append(elapsed / loops)
    return times


def _ratio(times, numerator, denominator):
    ratios = [a / b for a, b in zip(times[numerator], times[denominator])]
    return statistics.median(ratios), min(ratios), max(ratios), statistics.median(times[denominator])


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def random_conv1d(count, seed):
    """``count`` conv1d cases in CONV1D's form, drawn reproducibly from ``seed``: batch 1-64,
    channels 1-512 (odd counts too), length 256-16000, kernel 1-11, stride 1-4, dilation 1-8,
    groups 1, 2-16 or depthwise; the batch is halved until the forward fits the sweep's caps."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        ci, co = (int(round(math.exp(rng.uniform(0, math.log(512))))) for _ in range(2))
        length = int(round(math.exp(rng.uniform(math.log(256), math.log(16000)))))
        k, s = int(rng.integers(1, 12)), int(rng.integers(1, 5))
        d = 1 if k == 1 or rng.random() < 0.6 else int(rng.integers(2, 9))
        g, r = 1, rng.random()
        if r < 0.15:
            g, co = ci, ci * int(rng.choice([1, 1, 2]))
        elif r < 0.3:
            g = int(rng.choice([2, 4, 8, 16]))
            ci, co = max(g, ci // g * g), max(g, co // g * g)
        p = int(rng.integers(0, d * (k - 1) // 2 + 1))
        out = (length + 2 * p - d * (k - 1) - 1) // s + 1
        if out < 1:
            continue
        n = int(rng.choice([1, 2, 4, 8, 16, 32, 64]))
        while n > 1 and (n * co * out * (ci // g) * k > _bench_sweep.MAX_MACS
                         or n * max(ci * length, co * out) > _bench_sweep.MAX_ELEMENTS // 4):
            n //= 2
        cases.append((f"random {len(cases)}", n, ci, co, length, k, s, d, g, p))
    return cases


def random_conv3d(count, seed):
    """``count`` conv3d cases in CONV3D's form, drawn reproducibly from ``seed``: batch 1-8,
    channels 1-256, depth 2-32 and height/width 4-64, kernel 1-3 per dimension (one layer in
    five 1x3x3 or 3x1x1, one in five kernel == stride without padding, as in patch embeddings
    and 2x2x2 downsampling), stride 1-2, padding 0 to kernel // 2; the batch is halved until
    the forward fits the sweep's caps."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        ci, co = (int(round(math.exp(rng.uniform(0, math.log(256))))) for _ in range(2))
        size = (int(rng.integers(2, 33)),) + tuple(int(rng.integers(4, 65)) for _ in range(2))
        r = rng.random()
        if r < 0.2:
            k = ((1, 3, 3), (3, 1, 1))[int(rng.integers(0, 2))]
        else:
            k = tuple(int(rng.integers(1, 4)) for _ in range(3))
        if r > 0.8:
            s, p = k, (0, 0, 0)
        else:
            s = tuple(int(rng.integers(1, 3)) for _ in range(3))
            p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        out = [(n + 2 * pp - kk) // ss + 1 for n, pp, kk, ss in zip(size, p, k, s)]
        if min(out) < 1 or k == (1, 1, 1):
            continue
        n = int(rng.choice([1, 2, 4, 8]))
        macs = co * math.prod(out) * ci * math.prod(k)
        while n > 1 and (n * macs > _bench_sweep.MAX_MACS
                         or n * max(ci * math.prod(size), co * math.prod(out)) > _bench_sweep.MAX_ELEMENTS // 4):
            n //= 2
        if macs > _bench_sweep.MAX_MACS:
            continue
        cases.append((f"random {len(cases)}", n, ci, co, size, k, s, p))
    return cases


def _conv_tasks(dims, case, rng):
    if dims == 1:
        name, n, ci, co, length, k, s, d, g, p = case
        x = rng.standard_normal((n, ci, length), dtype=np.float32)
        w = rng.standard_normal((co, ci // g, k), dtype=np.float32) * 0.1
        args = dict(stride=s, padding=p, dilation=d, groups=g)
        targs = ([s], [p], [d], False, [0], g)
        label = f"{name}: {n}x{ci}x{length} -> {co}, k{k} s{s} d{d} g{g} p{p}"
    else:
        name, n, ci, co, size, k, s, p = case
        x = rng.standard_normal((n, ci) + size, dtype=np.float32)
        w = rng.standard_normal((co, ci) + k, dtype=np.float32) * 0.1
        args = dict(stride=s, padding=p)
        targs = (list(s), list(p), [1, 1, 1], False, [0, 0, 0], 1)
        label = f"{name}: {n}x{ci}x{'x'.join(map(str, size))} -> {co}, k{k} s{s}"
    fwd, bwd = getattr(cconv, f"conv{dims}d"), getattr(cconv, f"conv{dims}d_backward")
    tfwd = getattr(F, f"conv{dims}d")
    y = fwd(x, w, **args)
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    tx, tw, tgy = _t(x), _t(w), _t(gy)
    return label, {
        "forward": (lambda: fwd(x, w, **args), lambda: tfwd(tx, tw, **args)),
        "backward": (lambda: bwd(gy, x, w, **args),
                     lambda: aten.convolution_backward(tgy, tx, tw, [w.shape[0]], *targs, [True, True, True])),
    }


def _pool_tasks(rng):
    tasks = []
    x1 = rng.standard_normal((32, 128, 4000), dtype=np.float32)
    y1, i1 = cconv.max_pool1d(x1, 3, 2, 1, return_indices=True)
    t1, ti1 = _t(x1), _t(i1)
    g1 = rng.standard_normal(y1.shape, dtype=np.float32)
    tasks.append(("max_pool1d k3 s2 p1: 32x128x4000", {
        "forward": (lambda: cconv.max_pool1d(x1, 3, 2, 1, return_indices=True),
                    lambda: F.max_pool1d(t1, 3, 2, 1, return_indices=True)),
        "backward": (lambda: cconv.max_pool1d_backward(g1, i1, x1.shape),
                     lambda: aten.max_pool2d_with_indices_backward(_t(g1)[:, :, None], t1[:, :, None], [1, 3], [1, 2],
                                                                   [0, 1], [1, 1], False, ti1[:, :, None])),
    }))
    a1 = cconv.avg_pool1d(x1, 4, 4)
    ga1 = rng.standard_normal(a1.shape, dtype=np.float32)
    tasks.append(("avg_pool1d k4 s4: 32x128x4000", {
        "forward": (lambda: cconv.avg_pool1d(x1, 4, 4), lambda: F.avg_pool1d(t1, 4, 4)),
        "backward": (lambda: cconv.avg_pool1d_backward(ga1, x1.shape, 4, 4),
                     lambda: aten.avg_pool2d_backward(_t(ga1)[:, :, None], t1[:, :, None], [1, 4], [1, 4], [0, 0],
                                                      False, True, None)),
    }))
    for kernel, stride, pad in (((2, 2, 2), (2, 2, 2), (0, 0, 0)), ((3, 3, 3), (2, 2, 2), (1, 1, 1))):
        x3 = rng.standard_normal((4, 32, 16, 56, 56), dtype=np.float32)
        y3, i3 = cconv.max_pool3d(x3, kernel, stride, pad, return_indices=True)
        g3 = rng.standard_normal(y3.shape, dtype=np.float32)
        t3, ti3, tg3 = _t(x3), _t(i3), _t(g3)
        label = f"k{kernel[0]} s{stride[0]} p{pad[0]}: 4x32x16x56x56"
        tasks.append((f"max_pool3d {label}", {
            "forward": (lambda x3=x3, k=kernel, s=stride, p=pad: cconv.max_pool3d(x3, k, s, p, return_indices=True),
                        lambda t3=t3, k=kernel, s=stride, p=pad: F.max_pool3d(t3, k, s, p, return_indices=True)),
            "backward": (lambda g3=g3, i3=i3, x3=x3: cconv.max_pool3d_backward(g3, i3, x3.shape),
                         lambda tg3=tg3, t3=t3, ti3=ti3, k=kernel, s=stride, p=pad:
                         aten.max_pool3d_with_indices_backward(tg3, t3, list(k), list(s), list(p), [1, 1, 1], False,
                                                               ti3)),
        }))
        tasks.append((f"avg_pool3d {label}", {
            "forward": (lambda x3=x3, k=kernel, s=stride, p=pad: cconv.avg_pool3d(x3, k, s, p),
                        lambda t3=t3, k=kernel, s=stride, p=pad: F.avg_pool3d(t3, k, s, p)),
            "backward": (lambda g3=g3, x3=x3, k=kernel, s=stride, p=pad: cconv.avg_pool3d_backward(g3, x3.shape, k, s, p),
                         lambda tg3=tg3, t3=t3, k=kernel, s=stride, p=pad:
                         aten.avg_pool3d_backward(tg3, t3, list(k), list(s), list(p), False, True, None)),
        }))
    x2 = rng.standard_normal((64, 512, 7, 7), dtype=np.float32)
    t2 = _t(x2)
    g2 = rng.standard_normal((64, 512, 1, 1), dtype=np.float32)
    tasks.append(("adaptive_avg_pool2d to 1: 64x512x7x7", {
        "forward": (lambda: cconv.adaptive_avg_pool2d(x2, 1), lambda: F.adaptive_avg_pool2d(t2, 1)),
        "backward": (lambda: cconv.adaptive_avg_pool2d_backward(g2, x2.shape),
                     lambda: aten._adaptive_avg_pool2d_backward(_t(g2), t2)),
    }))
    x5 = rng.standard_normal((16, 256, 13, 13), dtype=np.float32)
    t5 = _t(x5)
    y5, i5 = cconv.adaptive_max_pool2d(x5, 6, True)
    g5 = rng.standard_normal(y5.shape, dtype=np.float32)
    tasks.append(("adaptive_max_pool2d 13 -> 6: 16x256x13x13", {
        "forward": (lambda: cconv.adaptive_max_pool2d(x5, 6, True), lambda: F.adaptive_max_pool2d(t5, 6, True)),
        "backward": (lambda: cconv.adaptive_max_pool2d_backward(g5, i5, x5.shape),
                     lambda: aten.adaptive_max_pool2d_backward(_t(g5), t5, _t(i5))),
    }))
    tasks.append(("adaptive_avg_pool2d 13 -> 6: 16x256x13x13", {
        "forward": (lambda: cconv.adaptive_avg_pool2d(x5, 6), lambda: F.adaptive_avg_pool2d(t5, 6)),
        "backward": (lambda: cconv.adaptive_avg_pool2d_backward(g5, x5.shape),
                     lambda: aten._adaptive_avg_pool2d_backward(_t(g5), t5)),
    }))
    return tasks


def _half_tasks(rng):
    import ml_dtypes
    tasks = []
    shapes = [("conv2d 3x3", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
              ("conv1d k5", (16, 128, 2048), (128, 128, 5), dict(padding=2)),
              ("conv3d 3x3x3", (2, 32, 16, 32, 32), (32, 32, 3, 3, 3), dict(padding=1))]
    for name, xs, ws, args in shapes:
        op = getattr(cconv, name.split()[0])
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32) * 0.1
        for dtype in (np.float16, ml_dtypes.bfloat16):
            xh, wh = x.astype(dtype), w.astype(dtype)
            tasks.append((f"{name} {np.dtype(dtype).name}: {'x'.join(map(str, xs))}",
                          {"forward": (lambda op=op, x=x, w=w, a=args: op(x, w, **a),
                                       lambda op=op, xh=xh, wh=wh, a=args: op(xh, wh, **a))}))
    return tasks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.05)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.01 s")
    parser.add_argument("--only", choices=["conv1d", "conv3d", "pool", "half"], action="append")
    parser.add_argument("--random", type=int, metavar="N", help="time N random conv1d layers instead")
    parser.add_argument("--dims", type=int, choices=[1, 3], default=1, help="--random's layers: conv1d or conv3d")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random's layers")
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.min_time = 3, 0.01
    groups = ["random"] if args.random else args.only or ["conv1d", "conv3d", "pool", "half"]
    rng = np.random.default_rng(0)
    lines = [f"cconv {cconv.__version__} vs torch {torch.__version__}; backend {cconv.get_backend()}; "
             f"{args.rounds} paired rounds of >= {args.min_time} s per case; ratio = torch time / cconv time "
             "(half rows: float32 time / half time), median over rounds [min-max]", ""]
    for threads in [int(t) for t in args.threads.split(",")]:
        cconv.set_num_threads(threads)
        torch.set_num_threads(threads)
        for group in groups:
            if group == "random" and args.dims == 3:
                tasks = [_conv_tasks(3, c, rng) for c in random_conv3d(args.random, args.seed)]
            elif group in ("conv1d", "random"):
                cases = CONV1D if group == "conv1d" else random_conv1d(args.random, args.seed)
                tasks = [_conv_tasks(1, c, rng) for c in cases]
            elif group == "conv3d":
                tasks = [_conv_tasks(3, c, rng) for c in CONV3D]
            elif group == "pool":
                tasks = _pool_tasks(rng)
            else:
                tasks = _half_tasks(rng)
            lines += [f"### {group}, {threads} thread{'s' * (threads > 1)}", "",
                      "| case | task | cconv ms | ratio | spread |", "|---|---|---:|---:|---:|"]
            ratios = []
            for label, task in tasks:
                for kind, (ours, theirs) in task.items():
                    times = _paired({"cconv": ours, "other": theirs}, args.rounds, args.min_time)
                    med, lo, hi, _ = _ratio(times, "other", "cconv")
                    ours_ms = statistics.median(times["cconv"]) * 1e3
                    if group == "half":  # "cconv" is the float32 call, "other" the half one
                        med, lo, hi = 1 / med, 1 / hi, 1 / lo
                        ours_ms = statistics.median(times["other"]) * 1e3
                    ratios.append(med)
                    lines.append(f"| {label} | {kind} | {ours_ms:.3f} | {med:.2f} | {lo:.2f}-{hi:.2f} |")
                    print(lines[-1], flush=True)
            st = _bench_sweep._stats(ratios)
            lines += ["", f"geomean {st['geomean']:.2f}, p5 {st['p5']:.2f}, median {st['p50']:.2f}, "
                          f"min {st['min']:.2f}", ""]
            print(lines[-2], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
