"""Dilated 2-d layers on small maps: cconv (whichever build is on PYTHONPATH) and torch, forward,
grad_input and grad_weight, 1 and 2 threads; the best of `--repeat` timed runs per pass.

Run it alternately with the before and after builds in one hold of the benchmark lock
(benchmarks/results-dilated.md):  python benchmarks/dilated_pairs.py OUT.json
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

import cconv

LAYERS = [  # N, C, O, H, W, padding, dilation (3x3)
    (1, 80, 144, 14, 21, (11, 12), 12),
    (32, 80, 191, 13, 13, (8, 7), 8),
    (8, 128, 418, 14, 14, 8, 8),
    (8, 95, 272, 13, 9, "same", 6),
]


def best(f, repeat):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main(out, repeat=7):
    rng = np.random.default_rng(0)
    result = {}
    for threads in (1, 2):
        cconv.set_num_threads(threads)
        torch.set_num_threads(threads)
        for (n, c, o, h, w, p, d) in LAYERS:
            x = rng.standard_normal((n, c, h, w)).astype(np.float32)
            wt = (rng.standard_normal((o, c, 3, 3)) * 0.1).astype(np.float32)
            y = cconv.conv2d(x, wt, padding=p, dilation=d)
            gy = rng.standard_normal(y.shape).astype(np.float32)
            plan = {**cconv.explain("conv2d", x, wt, padding=p, dilation=d),
                    **cconv.explain("conv2d_backward", gy, x, wt, padding=p, dilation=d)}
            tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(wt).requires_grad_()
            tgy = torch.from_numpy(gy)

            def torch_bwd(mask):
                yy = torch.nn.functional.conv2d(tx, tw, padding=p, dilation=d)
                return torch.autograd.grad(yy, [tx] if mask == "gi" else [tw], tgy)
            key = f"{threads}t N{n} C{c}->{o} {h}x{w} p{p} d{d}"
            result[key] = {
                "forward": best(lambda: cconv.conv2d(x, wt, padding=p, dilation=d), repeat),
                "grad_input": best(lambda: cconv.conv2d_backward(
                    gy, x, wt, padding=p, dilation=d, output_mask=(True, False, False)), repeat),
                "grad_weight": best(lambda: cconv.conv2d_backward(
                    gy, x, wt, padding=p, dilation=d, output_mask=(False, True, False)), repeat),
                "torch_forward": best(lambda: torch.nn.functional.conv2d(
                    tx.detach(), tw.detach(), padding=p, dilation=d), repeat),
                "torch_grad_input": best(lambda: torch_bwd("gi"), repeat),
                "algorithms": {k: v["algorithm"] for k, v in plan.items()},
            }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
