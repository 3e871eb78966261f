#!/usr/bin/env python
"""Per-call time of every public op on a tiny input, cconv and PyTorch in one run, 1 thread.

    python benchmarks/overhead.py                 # markdown table to stdout
    python benchmarks/overhead.py --rounds 15     # more rounds (the median is over rounds)

On inputs this small (a 1x1x5x5 image, a 2x2 kernel) the arithmetic is a few dozen
multiply-adds: what is measured is the cost of a call (argument checks, dispatch, output
allocation). Each round times every case over ``--calls`` calls, cconv then torch; a case's
figure is the median over the rounds of the mean per-call time, with the spread (min-max) of
those round means. PyTorch's backward rows are the aten backward ops autograd would run.
"""
from __future__ import annotations

import argparse
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


def _cases(dtype):
    """(name, cconv call, torch call or None) for every public op on a tiny input."""
    rng = np.random.default_rng(0)

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x, w, b, gy = arr(1, 1, 5, 5), arr(1, 1, 2, 2), arr(1), arr(1, 1, 4, 4)
    gyt = arr(1, 1, 6, 6)                       # conv_transpose2d's output gradient
    x1, w1, gy1 = arr(1, 1, 5), arr(1, 1, 2), arr(1, 1, 4)
    gyt1 = arr(1, 1, 6)
    x3, w3, gy3 = arr(1, 1, 5, 5, 5), arr(1, 1, 2, 2, 2), arr(1, 1, 4, 4, 4)
    gyt3 = arr(1, 1, 6, 6, 6)
    pool_gy, pool_gy1, pool_gy3 = arr(1, 1, 2, 2), arr(1, 1, 2), arr(1, 1, 2, 2, 2)
    _, idx = cconv.max_pool2d(x, 2, return_indices=True)
    _, idx1 = cconv.max_pool1d(x1, 2, return_indices=True)
    _, idx3 = cconv.max_pool3d(x3, 2, return_indices=True)
    _, aidx = cconv.adaptive_max_pool2d(x, 2, return_indices=True)
    mask = (True, True, True)
    c = cconv
    cases = [
        ("conv2d", lambda: c.conv2d(x, w, b)),
        ("conv2d_backward", lambda: c.conv2d_backward(gy, x, w, output_mask=mask)),
        ("conv_transpose2d", lambda: c.conv_transpose2d(x, w, b)),
        ("conv_transpose2d_backward", lambda: c.conv_transpose2d_backward(gyt, x, w, output_mask=mask)),
        ("max_pool2d", lambda: c.max_pool2d(x, 2, return_indices=True)),
        ("max_pool2d_backward", lambda: c.max_pool2d_backward(pool_gy, idx, x.shape)),
        ("avg_pool2d", lambda: c.avg_pool2d(x, 2)),
        ("avg_pool2d_backward", lambda: c.avg_pool2d_backward(pool_gy, x.shape, 2)),
        ("conv1d", lambda: c.conv1d(x1, w1, b)),
        ("conv1d_backward", lambda: c.conv1d_backward(gy1, x1, w1, output_mask=mask)),
        ("conv_transpose1d", lambda: c.conv_transpose1d(x1, w1, b)),
        ("conv_transpose1d_backward", lambda: c.conv_transpose1d_backward(gyt1, x1, w1, output_mask=mask)),
        ("max_pool1d", lambda: c.max_pool1d(x1, 2, return_indices=True)),
        ("max_pool1d_backward", lambda: c.max_pool1d_backward(pool_gy1, idx1, x1.shape)),
        ("avg_pool1d", lambda: c.avg_pool1d(x1, 2)),
        ("avg_pool1d_backward", lambda: c.avg_pool1d_backward(pool_gy1, x1.shape, 2)),
        ("conv3d", lambda: c.conv3d(x3, w3, b)),
        ("conv3d_backward", lambda: c.conv3d_backward(gy3, x3, w3, output_mask=mask)),
        ("conv_transpose3d", lambda: c.conv_transpose3d(x3, w3, b)),
        ("conv_transpose3d_backward", lambda: c.conv_transpose3d_backward(gyt3, x3, w3, output_mask=mask)),
        ("max_pool3d", lambda: c.max_pool3d(x3, 2, return_indices=True)),
        ("max_pool3d_backward", lambda: c.max_pool3d_backward(pool_gy3, idx3, x3.shape)),
        ("avg_pool3d", lambda: c.avg_pool3d(x3, 2)),
        ("avg_pool3d_backward", lambda: c.avg_pool3d_backward(pool_gy3, x3.shape, 2)),
        ("adaptive_avg_pool2d", lambda: c.adaptive_avg_pool2d(x, 2)),
        ("adaptive_avg_pool2d_backward", lambda: c.adaptive_avg_pool2d_backward(pool_gy, x.shape)),
        ("adaptive_max_pool2d", lambda: c.adaptive_max_pool2d(x, 2, return_indices=True)),
        ("adaptive_max_pool2d_backward", lambda: c.adaptive_max_pool2d_backward(pool_gy, aidx, x.shape)),
    ]
    torch_calls = _torch_cases(dict(x=x, w=w, b=b, gy=gy, gyt=gyt, x1=x1, w1=w1, gy1=gy1, gyt1=gyt1, x3=x3,
                                    w3=w3, gy3=gy3, gyt3=gyt3, pool_gy=pool_gy, pool_gy1=pool_gy1,
                                    pool_gy3=pool_gy3))
    return [(name, call, torch_calls.get(name)) for name, call in cases]


def _torch_cases(arrays):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}
    torch.set_num_threads(1)
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    aten = torch.ops.aten
    x, w, b, x1, w1, x3, w3 = t["x"], t["w"], t["b"], t["x1"], t["w1"], t["x3"], t["w3"]
    mask = [True, True, True]
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    _, idx1 = F.max_pool1d(x1, 2, return_indices=True)
    _, idx3 = F.max_pool3d(x3, 2, return_indices=True)
    _, aidx = F.adaptive_max_pool2d(x, 2, return_indices=True)

    def conv_bw(gy, x, w, transposed=False, dims=2):
        one, zero = [1] * dims, [0] * dims
        return lambda: aten.convolution_backward(gy, x, w, [1], one, zero, one, transposed, zero, 1, mask)

    return {
        "conv2d": lambda: F.conv2d(x, w, b),
        "conv2d_backward": conv_bw(t["gy"], x, w),
        "conv_transpose2d": lambda: F.conv_transpose2d(x, w, b),
        "conv_transpose2d_backward": conv_bw(t["gyt"], x, w, True),
        "max_pool2d": lambda: F.max_pool2d(x, 2, return_indices=True),
        "max_pool2d_backward": lambda: aten.max_pool2d_with_indices_backward(
            t["pool_gy"], x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx),
        "avg_pool2d": lambda: F.avg_pool2d(x, 2),
        "avg_pool2d_backward": lambda: aten.avg_pool2d_backward(
            t["pool_gy"], x, [2, 2], [2, 2], [0, 0], False, True, None),
        "conv1d": lambda: F.conv1d(x1, w1, b),
        "conv1d_backward": conv_bw(t["gy1"], x1, w1, dims=1),
        "conv_transpose1d": lambda: F.conv_transpose1d(x1, w1, b),
        "conv_transpose1d_backward": conv_bw(t["gyt1"], x1, w1, True, dims=1),
        "max_pool1d": lambda: F.max_pool1d(x1, 2, return_indices=True),
        "max_pool1d_backward": lambda: aten.max_pool2d_with_indices_backward(
            t["pool_gy1"][:, :, None], x1[:, :, None], [1, 2], [1, 2], [0, 0], [1, 1], False, idx1[:, :, None]),
        "avg_pool1d": lambda: F.avg_pool1d(x1, 2),
        "conv3d": lambda: F.conv3d(x3, w3, b),
        "conv3d_backward": conv_bw(t["gy3"], x3, w3, dims=3),
        "conv_transpose3d": lambda: F.conv_transpose3d(x3, w3, b),
        "conv_transpose3d_backward": conv_bw(t["gyt3"], x3, w3, True, dims=3),
        "max_pool3d": lambda: F.max_pool3d(x3, 2, return_indices=True),
        "max_pool3d_backward": lambda: aten.max_pool3d_with_indices_backward(
            t["pool_gy3"], x3, [2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], False, idx3),
        "avg_pool3d": lambda: F.avg_pool3d(x3, 2),
        "avg_pool3d_backward": lambda: aten.avg_pool3d_backward(
            t["pool_gy3"], x3, [2, 2, 2], [2, 2, 2], [0, 0, 0], False, True, None),
        "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(x, 2),
        "adaptive_avg_pool2d_backward": lambda: aten._adaptive_avg_pool2d_backward(t["pool_gy"], x),
        "adaptive_max_pool2d": lambda: F.adaptive_max_pool2d(x, 2, return_indices=True),
        "adaptive_max_pool2d_backward": lambda: aten.adaptive_max_pool2d_backward(t["pool_gy"], x, aidx),
    }


def _per_call(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def run(rounds, calls, dtype):
    cconv.set_num_threads(1)
    cases = _cases(dtype)
    samples = {name: ([], []) for name, _, _ in cases}
    for _, ours, theirs in cases:              # warm up: plans, caches, lazy imports
        ours()
        if theirs is not None:
            theirs()
    for _ in range(rounds):
        for name, ours, theirs in cases:
            samples[name][0].append(_per_call(ours, calls))
            if theirs is not None:
                samples[name][1].append(_per_call(theirs, calls))
    return cases, samples


def _us(values):
    if not values:
        return "-", "-"
    return f"{statistics.median(values) * 1e6:.2f}", f"{min(values) * 1e6:.2f}-{max(values) * 1e6:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args(argv)
    cases, samples = run(args.rounds, args.calls, np.dtype(args.dtype))
    print(f"cconv from {os.path.dirname(cconv.__file__)}, backend {cconv.get_backend()}, "
          f"{args.dtype}, 1 thread, {args.rounds} rounds x {args.calls} calls\n")
    print("| op | cconv us (median) | cconv spread | torch us (median) | torch spread |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in cases:
        ours, theirs = samples[name]
        print(f"| {name} | {' | '.join(_us(ours))} | {' | '.join(_us(theirs))} |")


if __name__ == "__main__":
    main()
