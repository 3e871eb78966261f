#!/usr/bin/env python
"""Depthwise layers: two builds of cconv (before / after a change) and PyTorch, paired in one run.

    python benchmarks/depthwise.py --before /path/to/other/checkout --out results-depthwise.md

"after" is the cconv this script imports; "before" is the checkout given (its extension built in
place).  Each build runs in its own worker process (torch in the "after" one); for every layer,
thread count and pass the three are sampled in turn, round after round, so the machine's load
hits them alike.  A sample is the median call time over >= 10 ms of calls; the table shows the
median of the rounds' samples.  Ratio vs torch = torch time / cconv time (above 1: cconv faster).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PASSES = ("forward", "grad_input", "grad_weight")

# The slow cases reported against the planner's generic paths, then MobileNetV2 / EfficientNet /
# ConvNeXt depthwise layers (channels, map, kernel, stride), drawn with a seed below.
NAMED = [
    dict(batch=32, channels=1312, size=7, kernel=5, stride=2, padding=0, mult=1),
    dict(batch=4, channels=16, size=64, kernel=5, stride=1, padding="same", mult=1),
    dict(batch=128, channels=144, size=4, kernel=3, stride=1, padding=0, mult=1),
]
LAYERS = [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 5, 2), (192, 28, 3, 1),
          (240, 28, 5, 1), (240, 28, 3, 2), (384, 14, 3, 1), (480, 14, 5, 1), (576, 14, 3, 2),
          (672, 14, 5, 2), (960, 7, 3, 1), (1152, 7, 5, 1), (96, 56, 7, 1), (192, 28, 7, 1),
          (768, 7, 7, 1)]


def spread(count, seed):
    """``count`` depthwise layers: a network layer at full, half or quarter resolution (maps
    4-112), batch 1-32 (fewer for big maps), channel multiplier 2 for about one in four."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in rng.permutation(len(LAYERS))[:count]:
        channels, size, kernel, stride = LAYERS[i]
        size = max(4, size // int(rng.choice([1, 2, 4])))
        batch = int(rng.choice([1, 4, 8, 16, 32]))
        while batch > 1 and batch * channels * size * size > 4_000_000:
            batch //= 2
        cases.append(dict(batch=batch, channels=channels, size=size, kernel=kernel, stride=stride,
                          padding=kernel // 2, mult=2 if rng.random() < 0.25 else 1))
    return cases


def label(c):
    pad = c["padding"] if c["padding"] == "same" else f"p{c['padding']}"
    mult = f" m{c['mult']}" if c["mult"] > 1 else ""
    return f"N{c['batch']} C{c['channels']} {c['size']}x{c['size']} k{c['kernel']} s{c['stride']} {pad}{mult}"


# ---- worker: one build of cconv (and torch), timing calls on request --------------------------

def _worker(with_torch, path):
    if path:
        # this build, not an editable install's import hook (which would win over sys.path)
        sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
        sys.path.insert(0, path)
    import cconv
    torch = None
    if with_torch:
        import torch
    arrays = {}

    def operands(c):
        key = json.dumps(c, sort_keys=True)
        if key not in arrays:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((c["batch"], c["channels"], c["size"], c["size"]), dtype=np.float32)
            w = rng.standard_normal((c["channels"] * c["mult"], 1, c["kernel"], c["kernel"]), dtype=np.float32)
            kw = dict(stride=c["stride"], padding=c["padding"], groups=c["channels"])
            gy = rng.standard_normal(cconv.conv2d(x, w, **kw).shape, dtype=np.float32)
            arrays.clear()
            arrays[key] = x, w, gy, kw
        return arrays[key]

    def call(impl, c, pass_):
        x, w, gy, kw = operands(c)
        if impl == "torch":
            tx, tw, tg = (torch.from_numpy(a) for a in (x, w, gy))
            pad = [c["kernel"] // 2] * 2 if c["padding"] == "same" else [c["padding"]] * 2
            mask = [pass_ == "grad_input", pass_ == "grad_weight", False]
            if pass_ == "forward":
                return lambda: torch.nn.functional.conv2d(tx, tw, **kw)
            return lambda: torch.ops.aten.convolution_backward(
                tg, tx, tw, None, [c["stride"]] * 2, pad, [1, 1], False, [0, 0], c["channels"], mask)
        if pass_ == "forward":
            return lambda: cconv.conv2d(x, w, **kw)
        mask = (pass_ == "grad_input", pass_ == "grad_weight", False)
        return lambda: cconv.conv2d_backward(gy, x, w, **kw, output_mask=mask)

    for line in sys.stdin:
        req = json.loads(line)
        if req.get("info"):
            info = {"cconv": cconv.backend_info().get("simd"), "file": cconv.__file__}
            if torch is not None:
                info["torch"] = torch.__version__
            print(json.dumps(info), flush=True)
            continue
        cconv.set_num_threads(req["threads"])
        if torch is not None:
            torch.set_num_threads(req["threads"])
        fn = call(req["impl"], req["case"], req["pass"])
        fn()                                  # warm: workspace, plan cache, pages
        times, start = [], time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - start < 0.01 and len(times) < 50):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        algo = None
        if req["impl"] != "torch" and "explain" in dir(cconv):
            x, w, gy, kw = operands(req["case"])
            if req["pass"] == "forward":
                plan = cconv.explain("conv2d", x, w, **kw)
            else:
                plan = cconv.explain("conv2d_backward", gy, x, w, **kw)
            algo = plan[req["pass"]]["algorithm"]
        print(json.dumps({"time": float(np.median(times)), "algorithm": algo}), flush=True)


class _Worker:
    def __init__(self, path, with_torch):
        args = [sys.executable, os.path.abspath(__file__), "--worker"] + (["--torch"] if with_torch else [])
        args += ["--path", path] if path else []
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd="/")

    def ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a benchmark worker died")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ---- driver -----------------------------------------------------------------------------------

def run(args):
    cases = NAMED + spread(args.layers, args.seed)
    workers = {"before": _Worker(os.path.abspath(args.before), False), "after": _Worker(None, True)}
    workers["torch"] = workers["after"]
    info = workers["after"].ask(info=True)
    if workers["before"].ask(info=True)["file"] == info["file"]:
        raise SystemExit("--before imports the same cconv as this script: give another checkout")
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    for case in cases:
        for threads in args.threads:
            for pass_ in PASSES:
                samples = {impl: [] for impl in ("before", "after", "torch")}
                algos = {}
                for r in range(args.rounds):
                    order = ["before", "after", "torch"]
                    order = order[r % 3:] + order[:r % 3]
                    for impl in order:
                        got = workers[impl].ask(impl="torch" if impl == "torch" else "cconv",
                                                case=case, threads=threads, **{"pass": pass_})
                        samples[impl].append(got["time"] * 1e3)
                        algos[impl] = got["algorithm"]
                row = dict(case=label(case), threads=threads, pass_=pass_,
                           algorithm_before=algos["before"], algorithm_after=algos["after"],
                           **{impl: float(np.median(v)) for impl, v in samples.items()},
                           **{impl + "_spread": (float(min(v)), float(max(v))) for impl, v in samples.items()})
                rows.append(row)
                print(f"{row['case']:<40} t{threads} {pass_:<11} before {row['before']:8.3f}  after "
                      f"{row['after']:8.3f}  torch {row['torch']:8.3f} ms", flush=True)
    for w in (workers["before"], workers["after"]):
        w.close()
    finished = time.strftime("%H:%M", time.gmtime())
    with open(args.out, "w") as f:
        f.write(_report(rows, args, info, started, finished, len(NAMED)))
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(rows, f, indent=1)


def _report(rows, args, info, started, finished, named):
    from cconv._bench_sweep import _geomean   # here: a "before" worker must import its own cconv first
    out = ["# Depthwise convolutions: before and after the depthwise kernels, against PyTorch", ""]
    out.append(f"Measured {started}-{finished} UTC on {platform.machine()} ({os.cpu_count()} cores, "
               f"cconv kernels: {info['cconv']}), torch {info.get('torch')}, float32. "
               f"`python benchmarks/depthwise.py --before <checkout> --layers {args.layers} "
               f"--seed {args.seed} --rounds {args.rounds}`: the first {named} layers are the slow "
               "cases reported before the change, then a seeded spread of MobileNetV2 / "
               "EfficientNet / ConvNeXt depthwise layers. Before: the planner's generic paths; "
               "after: the depthwise algorithm. Times in ms: the median of the rounds' samples, "
               "the three builds sampled in turn. vs torch = torch time / cconv time (above 1: "
               "cconv faster). Every number: the .json file beside this one.")
    out.append("")
    out.append("## Summary (geomean and minimum of vs torch; speedup = before / after)")
    out.append("")
    out.append("| threads | pass | n | speedup geomean | vs torch before: geomean | min | "
               "vs torch after: geomean | min |")
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        for pass_ in PASSES + ("all",):
            sel = [r for r in rows if r["threads"] == threads and (pass_ == "all" or r["pass_"] == pass_)]
            before = [r["torch"] / r["before"] for r in sel]
            after = [r["torch"] / r["after"] for r in sel]
            speed = [r["before"] / r["after"] for r in sel]
            out.append(f"| {threads} | {pass_} | {len(sel)} | {_geomean(speed):.2f}x | {_geomean(before):.2f} | "
                       f"{min(before):.2f} | {_geomean(after):.2f} | {min(after):.2f} |")
    out.append("")
    out.append("## Every layer")
    out.append("")
    out.append("| layer | threads | pass | before ms (algorithm) | after ms | torch ms | speedup | "
               "vs torch before | vs torch after |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        out.append(f"| {r['case']} | {r['threads']} | {r['pass_']} | {r['before']:.3f} ({r['algorithm_before']}) | "
                   f"{r['after']:.3f} | {r['torch']:.3f} | {r['before'] / r['after']:.2f}x | "
                   f"{r['torch'] / r['before']:.2f} | {r['torch'] / r['after']:.2f} |")
    out.append("")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a checkout of cconv with its extension built in place")
    parser.add_argument("--out", default=os.path.join(HERE, "results-depthwise.md"))
    parser.add_argument("--layers", type=int, default=16, help="layers in the seeded spread")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.torch, args.path)
    if not args.before:
        parser.error("--before is required")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
