"""GFLOP/s of cconv's GEMM-based algorithms on one thread, against the machine's sgemm.

Times the layers whose work is a GEMM: 1x1 convolutions (pure GEMM), the strided and
3x3 layers of ResNet-18 (CIFAR, batch 32) forward / grad_input / grad_weight, and
one-row images (conv1d), and prints GFLOP/s (2*MACs / time, best of --repeat) with the
algorithm the planner chose, and the single-thread NumPy matmul rate as the peak.

    python benchmarks/gemm_rate.py [--repeat 5] [--dtype float32] [--json FILE]

To compare two builds, run it once per build (e.g. PYTHONPATH pointing at each) in
alternation and compare the medians.
"""
import argparse
import json
import time

import numpy as np

import cconv

# (name, N, C, H, W, O, k, stride, pad)
LAYERS = [
    ("1x1 512->512 64x64 N1", 1, 512, 64, 64, 512, 1, 1, 0),
    ("1x1 256->256 32x32 N8", 8, 256, 32, 32, 256, 1, 1, 0),
    ("1x1 128->256 8x8 N32", 32, 128, 8, 8, 256, 1, 1, 0),
    ("r18 64->128 32 k3s2", 32, 64, 32, 32, 128, 3, 2, 1),
    ("r18 128->128 16 k3s1", 32, 128, 16, 16, 128, 3, 1, 1),
    ("r18 128->256 16 k3s2", 32, 128, 16, 16, 256, 3, 2, 1),
    ("r18 256->512 8 k3s2", 32, 256, 8, 8, 512, 3, 2, 1),
    ("r18 64->128 32 k1s2", 32, 64, 32, 32, 128, 1, 2, 0),
    ("conv1d 256->256 L1024 k3", 16, 256, 1, 1024, 256, 3, 1, 1),
]


def _best(f, repeat):
    f()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def _sgemm_peak(dtype, repeat):
    from threadpoolctl import threadpool_limits

    a = np.random.rand(1024, 1024).astype(dtype)
    b = np.random.rand(1024, 1024).astype(dtype)
    with threadpool_limits(1):
        return 2 * 1024**3 / _best(lambda: a @ b, repeat) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--json", help="write the rates to this file")
    args = ap.parse_args()
    cconv.set_num_threads(1)
    rng = np.random.default_rng(0)
    out = {"peak": _sgemm_peak(args.dtype, args.repeat), "layers": {}}
    print(f"numpy matmul 1024^3, 1 thread: {out['peak']:.1f} GF/s")
    for name, n, c, h, w, o, k, s, p in LAYERS:
        kh = 1 if h == 1 else k
        x = rng.random((n, c, h, w), dtype=np.float32).astype(args.dtype)
        wt = (rng.random((o, c, kh, k), dtype=np.float32) - 0.5).astype(args.dtype)
        pad = (0 if h == 1 else p, p)
        y = cconv.conv2d(x, wt, None, s, pad)
        gy = rng.random(y.shape, dtype=np.float32).astype(args.dtype)
        flops = 2.0 * n * o * c * kh * k * y.shape[2] * y.shape[3]
        fwd = cconv.explain("conv2d", x, wt, None, s, pad)["forward"]["algorithm"]
        bwd = cconv.explain("conv2d_backward", gy, x, wt, s, pad)
        row = {}
        for op, algo, f in [
            ("fwd", fwd, lambda: cconv.conv2d(x, wt, None, s, pad)),
            ("gi", bwd["grad_input"]["algorithm"],
             lambda: cconv.conv2d_backward(gy, x, wt, s, pad, output_mask=(True, False, False))),
            ("gw", bwd["grad_weight"]["algorithm"],
             lambda: cconv.conv2d_backward(gy, x, wt, s, pad, output_mask=(False, True, False))),
        ]:
            row[op] = (algo, flops / _best(f, args.repeat) / 1e9)
        out["layers"][name] = row
        print(f"{name:26s} " + "  ".join(f"{op} {a:>9s} {r:5.1f}" for op, (a, r) in row.items()),
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
