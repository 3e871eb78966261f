#!/usr/bin/env python
"""Small layers at 1 and 2 threads: does a second thread pay, and does the planner know?

A grid of small batch-1 layers (1x1 and 3x3 kernels, maps 1x1-7x7, 64-1024 channels, every
pass) plus a few larger ones that must keep their 2-thread speed-up, float32.  In one process,
for each layer and pass, 1-thread and 2-thread calls are sampled in turn, round after round
(a sample: the mean call time over >= 2 ms of calls; the record: the median of the rounds and
the spread between the lowest and highest sample).  Run it once per build, then compare:

    python benchmarks/small_teams.py --label before --build /path/to/other/checkout --json b.json
    python benchmarks/small_teams.py --label after --json a.json
    python benchmarks/small_teams.py --report b.json a.json

``--build``: time the cconv built in place in that checkout instead of the one installed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

PASSES = ("forward", "grad_input", "grad_weight")
# (batch, in, out, side, kernel): the small grid, then larger layers a team must keep.
SMALL = [(1, c, o, side, k) for k in (1, 3) for side in (1, 2, 3, 5, 7)
         for c, o in ((64, 64), (128, 256), (256, 256), (480, 432), (544, 448), (512, 1024),
                      (1024, 1024))]
LARGE = [(1, 64, 64, 56, 3), (1, 256, 256, 14, 3), (8, 128, 128, 28, 3), (1, 512, 512, 14, 1),
         (4, 256, 512, 14, 1), (1, 128, 128, 28, 1)]


def _import_cconv(build):
    if build:
        # this build, not an editable install's import hook (which would win over sys.path)
        sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
        sys.path.insert(0, build)
    import cconv
    return cconv


def _sample(fn, min_time=0.002):
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed / n


def measure(args):
    cconv = _import_cconv(args.build)
    import numpy as np
    from cconv._bench_layers import ConvLayer
    records = []
    rng = np.random.default_rng(0)
    for kind, shapes in (("small", SMALL), ("large", LARGE)):
        for batch, c, o, side, k in shapes:
            layer = ConvLayer(batch, c, o, side, side, (k, k), padding=(k // 2, k // 2))
            x, w, gy = layer.arrays(rng)
            calls = layer.calls("cconv", x, w, gy)
            for name in PASSES:
                times = {1: [], 2: []}
                plan = {}
                for t in (1, 2):
                    cconv.set_num_threads(t)
                    calls[name]()
                    explain = (cconv.explain("conv2d", x, w, None, padding=k // 2) if name == "forward"
                               else cconv.explain("conv2d_backward", gy, x, w, padding=k // 2))
                    plan[t] = (explain[name]["algorithm"], explain[name]["threads"])
                for r in range(args.rounds):
                    for t in ((1, 2) if r % 2 == 0 else (2, 1)):
                        cconv.set_num_threads(t)
                        times[t].append(_sample(calls[name]))
                records.append({"layer": layer.describe(), "kind": kind, "pass": name,
                                "macs": batch * c * o * k * k * side * side,
                                **{f"t{t}_s": float(np.median(v)) for t, v in times.items()},
                                **{f"t{t}_spread": [float(min(v)), float(max(v))] for t, v in times.items()},
                                "plan": {str(t): list(p) for t, p in plan.items()}})
                print(f"{layer.describe():<28} {name:<12} 1t {records[-1]['t1_s'] * 1e3:7.3f} ms  "
                      f"2t {records[-1]['t2_s'] * 1e3:7.3f} ms  plan {plan[2]}", file=sys.stderr)
    cconv.set_num_threads(2)
    return {"meta": {"label": args.label, "date": datetime.datetime.now(datetime.timezone.utc)
                     .strftime("%Y-%m-%d %H:%M UTC"), "cconv": cconv.__file__,
                     "rounds": args.rounds}, "records": records}


def report(before_path, after_path):
    """Markdown: per kind of layer and pass, 2-thread time / 1-thread time before and after,
    the count of tasks where 2 threads lose by more than 5%, and the after/before time at 2
    threads; then every task where either build loses at 2 threads."""
    from cconv._bench_sweep import _stats
    runs = [json.load(open(p)) for p in (before_path, after_path)]
    key = lambda r: (r["layer"], r["pass"])  # noqa: E731
    before = {key(r): r for r in runs[0]["records"]}
    pairs = [(before[key(r)], r) for r in runs[1]["records"] if key(r) in before]
    lines = [f"before: {runs[0]['meta']['date']}; after: {runs[1]['meta']['date']}; "
             f"{runs[1]['meta']['rounds']} rounds, 1 and 2 threads interleaved in each process.", "",
             "| layers | pass | n | before t2/t1 median (max) | before 2t > 1.05x 1t | "
             "after t2/t1 median (max) | after 2t > 1.05x 1t | after/before at 2t (geomean) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for kind in ("small", "large"):
        for name in PASSES + ("all",):
            sel = [(b, a) for b, a in pairs if a["kind"] == kind and (name == "all" or a["pass"] == name)]
            if not sel:
                continue
            rb = [b["t2_s"] / b["t1_s"] for b, _ in sel]
            ra = [a["t2_s"] / a["t1_s"] for _, a in sel]
            sb, sa = _stats(rb), _stats(ra)
            gain = _stats([a["t2_s"] / b["t2_s"] for b, a in sel])["geomean"]
            lines.append(f"| {kind} | {name} | {len(sel)} | {sb['p50']:.2f} ({max(rb):.2f}) | "
                         f"{sum(v > 1.05 for v in rb)} | {sa['p50']:.2f} ({max(ra):.2f}) | "
                         f"{sum(v > 1.05 for v in ra)} | {gain:.2f} |")
    lines += ["", "Tasks where 2 threads lose to 1 by more than 5% in either build (times in ms, "
              "median [min-max] of the rounds; threads = the planner's team at 2):", "",
              "| layer | pass | MACs | before 1t | before 2t | threads | after 1t | after 2t | threads |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(r, t):
        lo, hi = r[f"t{t}_spread"]
        return f"{r[f't{t}_s'] * 1e3:.3f} [{lo * 1e3:.3f}-{hi * 1e3:.3f}]"

    for b, a in pairs:
        if b["t2_s"] > 1.05 * b["t1_s"] or a["t2_s"] > 1.05 * a["t1_s"]:
            lines.append(f"| {a['layer']} | {a['pass']} | {a['macs']:,} | {cell(b, 1)} | {cell(b, 2)} | "
                         f"{b['plan']['2'][1]} | {cell(a, 1)} | {cell(a, 2)} | {a['plan']['2'][1]} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="run")
    parser.add_argument("--build", help="a checkout whose extension is built in place")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="write the records here")
    parser.add_argument("--report", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.report:
        print(report(*args.report))
        return
    run = measure(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1)


if __name__ == "__main__":
    main()
