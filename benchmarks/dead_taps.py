"""Layers whose kernel has taps that only ever read the zero padding, against PyTorch.

The layers are those of the random sweep (``cconv bench --sweep 300``, seed 0, the layers of
benchmarks/results-sweep.md) with a dead tap, plus one float64 layer whose kernel covers the
whole 2x2 map (a plain GEMM; see WHOLE_MAP).  Each pass is timed against torch in the same
process, alternately, on one thread (cconv._bench_sweep.measure).  A run writes JSON; the report
pairs two runs (e.g. a build before and after a change) in one Markdown table.

    python benchmarks/dead_taps.py --label after --json after.json
    PYTHONPATH=/path/to/other/build python benchmarks/dead_taps.py --label before --json before.json
    python benchmarks/dead_taps.py --report before.json after.json --markdown results-dead-taps.md
"""
from __future__ import annotations

import argparse
import json
import platform

from cconv import _shapes
from cconv._bench_layers import ConvLayer
from cconv._bench_sweep import _stats, measure, sample_layers

SWEEP_LAYERS, SWEEP_SEED = 300, 0
WHOLE_MAP = ConvLayer(batch=256, in_channels=832, out_channels=608, height=2, width=2, kernel=(2, 2),
                      stride=(2, 2), dtype="float64", kind="plain")


def _dead_taps(layer):
    """Whether some kernel tap of the layer's conv2d geometry reads only zero padding."""
    if layer.transposed:
        g, _ = _shapes.conv_transpose_geometry(layer.input_shape, layer.weight_shape, layer.stride,
                                               layer.explicit_padding, layer.output_padding,
                                               layer.dilation, layer.groups)
    else:
        g = _shapes.conv_geometry(layer.input_shape, layer.weight_shape, layer.stride, layer.padding,
                                  layer.dilation, layer.groups)

    def live(size, out, kernel, stride, dilation, pad):
        return sum(any(0 <= o * stride + t * dilation - pad < size for o in range(out)) for t in range(kernel))

    return (live(g.in_h, g.out_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top) < g.kernel_h
            or live(g.in_w, g.out_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_left) < g.kernel_w)


def layers():
    chosen = [layer for layer in sample_layers(SWEEP_LAYERS, SWEEP_SEED) if _dead_taps(layer)]
    return chosen + [WHOLE_MAP]


def report(runs):
    """Markdown: per task, each run's cconv time and torch/cconv ratio; then geomeans."""
    labels = [r["meta"]["label"] for r in runs]
    keyed = [{(x["describe"], x["pass"]): x for x in r["records"]} for r in runs]
    lines = [f"Threads: 1. Machine: {runs[0]['meta']['machine']}; torch {runs[0]['meta']['torch']}. "
             "Ratio = torch time / cconv time (above 1: cconv faster), medians of paired samples, "
             "torch timed in the same run as each cconv build.", "",
             "| layer | pass | " + " | ".join(f"{lab} ms | torch ms | {lab} ratio" for lab in labels) + " |",
             "|---|---|" + "---:|---:|---:|" * len(labels)]
    for key in keyed[0]:
        cells = []
        for k in keyed:
            r = k.get(key)
            cells += ["-"] * 3 if r is None else [f"{1e3 * r['cconv_s']:.2f}", f"{1e3 * r['torch_s']:.2f}",
                                                   f"{r['ratio']:.2f}"]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    lines.append("")
    for lab, run in zip(labels, runs):
        ratios = [x["ratio"] for x in run["records"] if x["describe"] != WHOLE_MAP.describe()]
        st = _stats(ratios)
        lines.append(f"- {lab}: {st['count']} sweep tasks, geomean ratio {st['geomean']:.2f}, "
                     f"p5 {st['p5']:.2f}, min {st['min']:.2f}, max {max(ratios):.2f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="cconv")
    parser.add_argument("--json", help="write this run's records here")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--report", nargs="+", metavar="JSON", help="pair these runs' records instead")
    parser.add_argument("--markdown", help="write the report here")
    args = parser.parse_args(argv)
    if args.report:
        runs = []
        for path in args.report:
            with open(path) as f:
                runs.append(json.load(f))
        text = report(runs)
        print(text)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write("# Layers with kernel taps that read only zero padding\n\n" + __doc__.split("\n\n")[1]
                        + "\n\n" + text + "\n")
        return
    import torch
    chosen = layers()
    records = measure(chosen, [1], args.repeat, 0.01,
                      lambda done, total, what: print(f"[{done}/{total}] {what}", flush=True))
    meta = {"label": args.label, "torch": torch.__version__,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
