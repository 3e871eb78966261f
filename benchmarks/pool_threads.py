#!/usr/bin/env python
"""Where a second thread starts to pay for cconv's pooling kernels.

For each pooling op, over channel counts from 1 up, times the call at 1 and at 2 threads
(paired rounds, median) and prints the work the kernels' thread rule weighs (elements read
plus window taps visited) and the threads cconv.explain says the call uses. The rule's
threshold (_ELEMENTWISE_GRAIN in src/threads.pxi) belongs where the 1/2-thread ratio crosses 1.

    python benchmarks/pool_threads.py [--rounds 5] [--min-time 0.02]
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


def _bin_taps(size, out):
    """Summed lengths of the adaptive bins of a dimension of ``size`` pooled to ``out``."""
    return sum(-(-(i + 1) * size // out) - i * size // out for i in range(out))


def _cases(channels, rng):
    """(label, work, explain args, call) per op for ``channels`` planes."""
    x2 = rng.standard_normal((1, channels, 28, 28), dtype=np.float32)
    x13 = rng.standard_normal((1, channels, 13, 13), dtype=np.float32)
    x3 = rng.standard_normal((1, channels, 8, 28, 28), dtype=np.float32)
    taps13 = _bin_taps(13, 6)
    return [
        ("max_pool2d k2 s2 28x28", channels * (28 * 28 + 14 * 14 * 4), ("max_pool2d", x2, 2),
         lambda: cconv.max_pool2d(x2, 2)),
        ("max_pool3d k2 s2 8x28x28", channels * (8 * 28 * 28 + 4 * 14 * 14 * 8), ("max_pool3d", x3, 2),
         lambda: cconv.max_pool3d(x3, 2)),
        ("adaptive_max_pool2d 13->6", channels * (13 * 13 + taps13 ** 2), ("adaptive_max_pool2d", x13, 6),
         lambda: cconv.adaptive_max_pool2d(x13, 6, True)),
        ("adaptive_avg_pool2d 13->6", channels * (13 * 13 + taps13 ** 2), ("adaptive_avg_pool2d", x13, 6),
         lambda: cconv.adaptive_avg_pool2d(x13, 6)),
    ]


def _time(fn, min_time):
    loops, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time:
        fn()
        loops += 1
    return (time.perf_counter() - start) / loops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.02)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| op | planes | work | threads (rule) | 1 thread us | 2 threads us | 1t / 2t |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for channels in (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024):
        for label, work, explain_args, fn in _cases(channels, rng):
            cconv.set_num_threads(2)
            team = next(iter(cconv.explain(*explain_args).values()))["threads"]
            times = {1: [], 2: []}
            for threads in (1, 2):
                cconv.set_num_threads(threads)
                fn()
            for _ in range(args.rounds):
                for threads in (1, 2):
                    cconv.set_num_threads(threads)
                    times[threads].append(_time(fn, args.min_time))
            t1, t2 = statistics.median(times[1]), statistics.median(times[2])
            print(f"| {label} | {channels} | {work} | {team} | {t1 * 1e6:.1f} | {t2 * 1e6:.1f} | {t1 / t2:.2f} |",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
