"""1x1 (pointwise, stride 1, unpadded) convolutions at small batch against PyTorch.

Every distinct 1x1 stride-1 layer of MobileNetV2 and ResNet-50 (ImageNet 224) at batch 1 and
8, plus a seeded random set of 1x1 layers (batch 1-8, channel counts including odd ones such
as 3, 17, 33, 100, maps 7x7 to 112x112), float32.  Forward, grad_input and grad_weight are
timed separately, cconv and torch alternately in one process (cconv._bench_sweep.measure),
at 1 and 2 threads; the algorithm cconv's planner picked is recorded per pass.

    python benchmarks/pointwise.py --label before --json before.json
    python benchmarks/pointwise.py --label after --json after.json
    python benchmarks/pointwise.py --summary after.json            # re-print one run
    python benchmarks/pointwise.py --report before.json after.json  # markdown before/after
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

import cconv
from cconv._bench_layers import ConvLayer
from cconv._bench_networks import NETWORKS
from cconv._bench_sweep import _stats, measure

_CHANNELS = [3, 8, 16, 17, 24, 32, 33, 48, 64, 96, 100, 128, 144, 160, 192, 256, 320, 384,
             512, 576, 960, 1024]
_MAPS = [7, 8, 13, 14, 17, 28, 35, 56, 112]


def network_layers(batches=(1, 8)):
    """The distinct 1x1 stride-1 layers of MobileNetV2 and ResNet-50 at each batch size."""
    seen, layers = set(), []
    for name in ("mobilenet_v2", "resnet50"):
        for layer in NETWORKS[name]():
            if (not isinstance(layer, ConvLayer) or layer.kernel != (1, 1)
                    or layer.stride != (1, 1) or layer.groups != 1):
                continue
            for batch in batches:
                one = replace(layer, batch=batch, kind=name)
                key = (batch, one.in_channels, one.out_channels, one.height)
                if key not in seen:
                    seen.add(key)
                    layers.append(one)
    return layers


def random_layers(count, seed):
    """Seeded 1x1 layers: batch 1-8, channels from _CHANNELS, square maps from _MAPS,
    skipping layers whose forward exceeds 4e8 multiply-adds."""
    rng = np.random.default_rng(seed)
    layers = []
    while len(layers) < count:
        n = int(rng.choice([1, 1, 2, 3, 4, 8]))
        c, o = int(rng.choice(_CHANNELS)), int(rng.choice(_CHANNELS))
        h = int(rng.choice(_MAPS))
        if n * c * o * h * h > 4e8:
            continue
        layers.append(ConvLayer(n, c, o, h, h, (1, 1), kind="random"))
    return layers


def _algorithms(layer):
    """{pass: algorithm (variant)} the planner picks for this layer, from cconv.explain."""
    x, w, gy = layer.arrays(np.random.default_rng(0))
    plans = {"forward": cconv.explain("conv2d", x, w)["forward"]}
    plans.update(cconv.explain("conv2d_backward", gy, x, w))
    out = {}
    for name in ("forward", "grad_input", "grad_weight"):
        info = plans[name]
        out[name] = info["algorithm"] + (f"/{info['variant']}" if info.get("variant") else "")
    return out


def summary(run, worst=10):
    """Text: per thread count and pass, geomean, p5/p25/median, min, share >= 1; the worst tasks."""
    recs = run["records"]
    lines = [f"{run['meta']['label']}: {run['meta']['date']}, torch {run['meta']['torch']}, "
             f"{len({r['describe'] for r in recs})} layers, ratio = torch time / cconv time", ""]
    lines.append(f"{'threads':>7} {'pass':<12} {'set':<8} {'n':>4} {'geomean':>8} {'p5':>6} "
                 f"{'p25':>6} {'median':>7} {'min':>6} {'>=1':>6}")
    for t in sorted({r["threads"] for r in recs}):
        for name in ("forward", "grad_input", "grad_weight", "all"):
            for subset in ("nets", "random", "all"):
                vals = [r["ratio"] for r in recs if r["threads"] == t
                        and (name == "all" or r["pass"] == name)
                        and (subset == "all" or (r["kind"] == "random") == (subset == "random"))]
                if not vals:
                    continue
                st = _stats(vals)
                lines.append(f"{t:>7} {name:<12} {subset:<8} {len(vals):>4} {st['geomean']:8.2f} "
                             f"{st['p5']:6.2f} {st['p25']:6.2f} {st['p50']:7.2f} "
                             f"{st['min']:6.2f} {st['at_least_1']:6.0%}")
    lines += ["", f"worst {worst} tasks:"]
    for r in sorted(recs, key=lambda r: r["ratio"])[:worst]:
        lines.append(f"  {r['describe']:<34} {r['pass']:<12} t{r['threads']} {r['algorithm']:<18} "
                     f"cconv {r['cconv_s'] * 1e3:8.3f} ms torch {r['torch_s'] * 1e3:8.3f} ms "
                     f"ratio {r['ratio']:.2f}")
    return "\n".join(lines)


def report(before_path, after_path, worst=15):
    """Markdown: summary statistics before and after, and the worst tasks of each run."""
    runs = [json.load(open(p)) for p in (before_path, after_path)]
    key = lambda r: (r["describe"], r["pass"], r["threads"])  # noqa: E731
    before = {key(r): r for r in runs[0]["records"]}
    lines = ["| threads | pass | set | n | before geomean | after geomean | before p5 | after p5 | "
             "before p25 | after p25 | before median | after median | before min | after min | "
             "after >= 1 |", "|---:|---|---|---:|" + "---:|" * 11]
    for t in sorted({r["threads"] for r in runs[1]["records"]}):
        for name in ("forward", "grad_input", "grad_weight", "all"):
            for subset in ("nets", "random"):
                pairs = [(before[key(r)]["ratio"], r["ratio"]) for r in runs[1]["records"]
                         if r["threads"] == t and key(r) in before
                         and (name == "all" or r["pass"] == name)
                         and (r["kind"] == "random") == (subset == "random")]
                if not pairs:
                    continue
                b, a = _stats([p[0] for p in pairs]), _stats([p[1] for p in pairs])
                lines.append(f"| {t} | {name} | {subset} | {a['count']} | {b['geomean']:.2f} | "
                             f"{a['geomean']:.2f} | {b['p5']:.2f} | {a['p5']:.2f} | "
                             f"{b['p25']:.2f} | {a['p25']:.2f} | {b['p50']:.2f} | "
                             f"{a['p50']:.2f} | {b['min']:.2f} | {a['min']:.2f} | "
                             f"{a['at_least_1']:.0%} |")
    for label, run in (("before", runs[0]), ("after", runs[1])):
        lines += ["", f"Worst {worst} tasks {label} ({run['meta']['date']}):", "",
                  "| layer | pass | threads | algorithm | cconv ms | torch ms | ratio |",
                  "|---|---|---:|---|---:|---:|---:|"]
        for r in sorted(run["records"], key=lambda r: r["ratio"])[:worst]:
            lines.append(f"| {r['describe']} | {r['pass']} | {r['threads']} | {r['algorithm']} | "
                         f"{r['cconv_s'] * 1e3:.3f} | {r['torch_s'] * 1e3:.3f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="this build")
    parser.add_argument("--json")
    parser.add_argument("--random", type=int, default=40, help="random layers (default 40)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--summary", metavar="RUN")
    parser.add_argument("--report", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(json.load(open(args.summary))))
        return 0
    if args.report:
        print(report(*args.report))
        return 0
    import torch
    layers = network_layers() + random_layers(args.random, args.seed)
    algos = [_algorithms(layer) for layer in layers]
    meta = {"label": args.label, "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    records = []
    for threads in (int(t) for t in args.threads.split(",")):
        for r in measure(layers, (threads,), repeat=args.repeat, min_time=0.01):
            r["algorithm"] = algos[r["layer"]][r["pass"]]
            records.append(r)
            print(f"{r['describe']:<34} {r['pass']:<12} t{threads} {r['algorithm']:<18} "
                  f"cconv {r['cconv_s'] * 1e3:8.3f} ms torch {r['torch_s'] * 1e3:8.3f} ms "
                  f"ratio {r['ratio']:.2f}", flush=True)
    run = {"meta": meta, "records": records}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1)
    print()
    print(summary(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
