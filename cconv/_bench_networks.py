"""``cconv bench --networks``: whole networks' conv and pool layers against PyTorch.

Each network is the list of its convolution and pooling layers with their shapes
(batch-norm, activations and the classifier are not cconv's business and are left
out). Two measurements per network, batch size and thread count:

* training step: every layer's forward (max-pools with indices), then every layer's
  backward in reverse order (conv: input and weight gradients, none for the first
  layer's input; pool: input gradient), each layer on inputs of its own shape;
* inference: every layer's forward at batch 1.

Both sides run the same layers on the same NumPy memory, torch on its own tensors;
the two steps alternate sample by sample, and the reported time is the median.
"""
from __future__ import annotations

import math
import platform
import sys
from dataclasses import replace

import numpy as np

from ._bench_layers import ConvLayer, PoolLayer, paired_times, write_report
from ._threads import get_num_threads, set_num_threads


class _Net:
    """Builds a layer list by following one activation's shape (C, H, W)."""

    def __init__(self, channels, size):
        self.c, self.h, self.w = channels, size, size
        self.layers = []

    def conv(self, out, k, stride=1, padding=None, dilation=1, groups=1):
        kernel = k if isinstance(k, tuple) else (k, k)
        if padding is None:
            padding = tuple(dilation * (kk - 1) // 2 for kk in kernel)
        padding = padding if isinstance(padding, tuple) else (padding, padding)
        layer = ConvLayer(1, self.c, out, self.h, self.w, kernel, (stride, stride), padding,
                          (dilation, dilation), groups)
        self.layers.append(layer)
        _, self.c, self.h, self.w = layer.output_shape
        return self

    def up(self, out, k=2, stride=2):
        layer = ConvLayer(1, self.c, out, self.h, self.w, (k, k), (stride, stride), (0, 0),
                          transposed=True, kind="transposed")
        self.layers.append(layer)
        _, self.c, self.h, self.w = layer.output_shape
        return self

    def pool(self, kind, k, stride, padding=0, ceil_mode=False):
        layer = PoolLayer(1, self.c, self.h, self.w, kind, (k, k), (stride, stride), (padding, padding), ceil_mode)
        self.layers.append(layer)
        _, self.c, self.h, self.w = layer.output_shape
        return self

    def state(self):
        return (self.c, self.h, self.w)

    def restore(self, state):
        self.c, self.h, self.w = state
        return self


def _resnet(blocks, bottleneck, imagenet, width=64):
    net = _Net(3, 224 if imagenet else 32)
    if imagenet:
        net.conv(width, 7, 2, 3).pool("max", 3, 2, 1)
    else:
        net.conv(width, 3)
    channels = width
    for stage, count in enumerate(blocks):
        planes = width * 2 ** stage
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            start = net.state()
            if bottleneck:
                net.conv(planes, 1).conv(planes, 3, stride).conv(planes * 4, 1)
                out = planes * 4
            else:
                net.conv(planes, 3, stride).conv(planes, 3)
                out = planes
            if stride != 1 or channels != out:
                end = net.state()
                net.restore(start).conv(out, 1, stride)
                net.restore(end)
            channels = out
    return net.pool("avg", net.h, net.h).layers


def _mobilenet_v2():
    net = _Net(3, 224).conv(32, 3, 2)
    channels = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            hidden = channels * t
            if t != 1:
                net.conv(hidden, 1)
            net.conv(hidden, 3, s if i == 0 else 1, groups=hidden).conv(c, 1)
            channels = c
    return net.conv(1280, 1).pool("avg", 7, 7).layers


def _vgg16():
    net = _Net(3, 224)
    for widths in ([64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3):
        for c in widths:
            net.conv(c, 3)
        net.pool("max", 2, 2)
    return net.layers


def _inception_v3_blocks():
    """InceptionA (35x35), the 35->17 reduction, InceptionC (17x17, 1x7/7x1), InceptionE (8x8)."""
    net = _Net(288, 35)
    a = net.state()
    net.conv(64, 1).restore(a).conv(48, 1).conv(64, 5).restore(a).conv(64, 1).conv(96, 3).conv(96, 3)
    net.restore(a).pool("avg", 3, 1, 1).conv(64, 1)
    net.restore((288, 35, 35))
    b = net.state()
    net.conv(384, 3, 2, 0).restore(b).conv(64, 1).conv(96, 3).conv(96, 3, 2, 0).restore(b).pool("max", 3, 2)
    net.restore((768, 17, 17))
    c = net.state()
    net.conv(192, 1).restore(c).conv(128, 1).conv(128, (1, 7)).conv(192, (7, 1))
    net.restore(c).conv(128, 1).conv(128, (7, 1)).conv(128, (1, 7)).conv(128, (7, 1)).conv(192, (1, 7))
    net.restore(c).pool("avg", 3, 1, 1).conv(192, 1)
    net.restore((1280, 8, 8))
    e = net.state()
    net.conv(320, 1).restore(e).conv(384, 1)
    mid = net.state()
    net.conv(384, (1, 3)).restore(mid).conv(384, (3, 1))
    net.restore(e).conv(448, 1).conv(384, 3)
    mid = net.state()
    net.conv(384, (1, 3)).restore(mid).conv(384, (3, 1))
    net.restore(e).pool("avg", 3, 1, 1).conv(192, 1)
    return net.layers


def _resnext_stage():
    """ResNeXt-50 32x4d's first stage (56x56): three blocks, 3x3 convs in 32 groups."""
    net = _Net(64, 56)
    channels = 64
    for _ in range(3):
        start = net.state()
        net.conv(128, 1).conv(128, 3, groups=32).conv(256, 1)
        if channels != 256:
            end = net.state()
            net.restore(start).conv(256, 1).restore(end)
        channels = 256
    return net.layers


def _unet(size=128, width=32):
    """A 4-level U-Net: 3x3 conv pairs, 2x2 max-pools down, 2x2 stride-2 transposed convs up."""
    net = _Net(3, size)
    skips = []
    for level in range(4):
        net.conv(width * 2 ** level, 3).conv(width * 2 ** level, 3)
        skips.append(net.state())
        net.pool("max", 2, 2)
    net.conv(width * 16, 3).conv(width * 16, 3)
    for level in reversed(range(4)):
        c = width * 2 ** level
        net.up(c)
        net.restore((2 * c, net.h, net.w))   # concatenated with the skip connection
        net.conv(c, 3).conv(c, 3)
    return net.conv(2, 1).layers


def _aspp(channels=512, size=28):
    """DeepLab-v3's ASPP head on a 28x28 map: 1x1, three 3x3 at dilation 6/12/18, image pool."""
    net = _Net(channels, size)
    start = net.state()
    net.conv(256, 1)
    for d in (6, 12, 18):
        net.restore(start).conv(256, 3, dilation=d)
    net.restore(start).pool("avg", size, size).conv(256, 1)
    return net.restore((5 * 256, size, size)).conv(256, 1).conv(256, 3).layers


NETWORKS = {
    "resnet18-cifar": lambda: _resnet([2, 2, 2, 2], False, False),
    "resnet18": lambda: _resnet([2, 2, 2, 2], False, True),
    "resnet50-cifar": lambda: _resnet([3, 4, 6, 3], True, False),
    "resnet50": lambda: _resnet([3, 4, 6, 3], True, True),
    "mobilenet_v2": _mobilenet_v2,
    "vgg16": _vgg16,
    "inception_v3_blocks": _inception_v3_blocks,
    "resnext50_stage": _resnext_stage,
    "unet": _unet,
    "deeplab_aspp": _aspp,
}


def _step(layers, inputs, side, torch, train):
    """A callable running every layer's forward (then, for training, every backward)."""
    calls = [layer.calls(side, *inputs[i], torch) for i, layer in enumerate(layers)]

    def run():
        for c in calls:
            c["forward"]()
        if train:
            for i in reversed(range(len(calls))):
                c = calls[i]
                if "backward" in c:
                    c["backward"]()
                else:
                    c["grad_weight"]()
                    if i > 0:
                        c["grad_input"]()
    return run


def measure(names, batches, threads, repeat=3, dtype="float32", progress=None):
    """One record per (network, batch, thread count, kind of step)."""
    import torch
    records = []
    previous = (get_num_threads(), torch.get_num_threads())
    try:
        for name in names:
            base = NETWORKS[name]()
            for batch in batches:
                layers = [replace(layer, batch=batch, dtype=dtype) for layer in base]
                rng = np.random.default_rng(0)
                inputs = [layer.arrays(rng) for layer in layers]
                gflop = 2 * sum(layer.macs for layer in layers if layer.op == "conv") / 1e9
                modes = [("train", True)] + ([("inference", False)] if batch == 1 else [])
                for t in threads:
                    set_num_threads(t)
                    torch.set_num_threads(t)
                    for mode, train in modes:
                        steps = {side: _step(layers, inputs, side, torch, train) for side in ("cconv", "torch")}
                        with torch.no_grad():
                            med, samples = paired_times(steps, repeat, min_time=0.0)
                        records.append({"network": name, "batch": batch, "threads": t, "mode": mode,
                                        "layers": len(layers), "forward_gflop": gflop,
                                        "cconv_s": med["cconv"], "torch_s": med["torch"],
                                        "ratio": med["torch"] / med["cconv"], "samples": samples})
                        if progress:
                            progress(f"{name} batch {batch} {mode} {t}T: {med['torch'] / med['cconv']:.2f}x")
                del inputs
    finally:
        set_num_threads(previous[0])
        torch.set_num_threads(previous[1])
    return records


def report_markdown(records, meta):
    intro = ("Every conv and pool layer of each network (shapes in `cconv/_bench_networks.py`), "
             f"{meta['dtype']}, torch {meta.get('torch', '?')} on its own tensors in the same process. "
             "Training step: every forward (max-pool with indices), then every backward "
             "(input and weight gradients). Inference: every forward at batch 1. "
             f"Median of {meta['repeat']} alternating samples. Ratio = torch time / cconv time.")
    lines = ["# Whole networks: cconv against PyTorch", "", intro, ""]
    for t in sorted({r["threads"] for r in records}):
        rows = [r for r in records if r["threads"] == t]
        lines += [f"## {t} thread{'s' if t > 1 else ''}", "",
                  "| network | batch | step | conv GFLOP (fwd) | cconv | torch | ratio |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['network']} | {r['batch']} | {r['mode']} | {r['forward_gflop']:.2f} | "
                         f"{r['cconv_s'] * 1e3:.1f} ms | {r['torch_s'] * 1e3:.1f} ms | {r['ratio']:.2f} |")
        for mode in ("train", "inference"):
            sel = [r["ratio"] for r in rows if r["mode"] == mode]
            if sel:
                g = math.exp(sum(math.log(v) for v in sel) / len(sel))
                lines.append(f"\n{mode}: geometric mean {g:.2f}x, range {min(sel):.2f}-{max(sel):.2f}x "
                             f"over {len(sel)} runs.")
        lines.append("")
    return "\n".join(lines)


def plot(records, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    threads = sorted({r["threads"] for r in records})
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 5), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], threads):
        rows = [r for r in records if r["threads"] == t]
        labels = [f"{r['network']} b{r['batch']}{' inf' if r['mode'] == 'inference' else ''}" for r in rows]
        ax.barh(range(len(rows)), [r["ratio"] for r in rows],
                color=["tab:blue" if r["mode"] == "train" else "tab:orange" for r in rows])
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.axvline(1.0, color="gray", linestyle="--", label="as fast as torch")
        ax.set_xlabel("torch time / cconv time")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}: training step (blue), batch-1 inference (orange)", fontsize=9)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run(names, batches, threads, repeat, dtype="float32", json_path=None, markdown_path=None, plot_path=None,
        show_progress=True):
    try:
        import torch
    except ImportError:
        print("cconv bench --networks compares against PyTorch, which is not installed "
              "(pip install \"cconv[bench]\")", file=sys.stderr)
        return 2

    def progress(text):
        if show_progress:
            print(text, file=sys.stderr, flush=True)

    records = measure(names, batches, threads, repeat, dtype, progress)
    meta = {"networks": names, "batches": batches, "threads": threads, "repeat": repeat, "dtype": dtype,
            "torch": torch.__version__, "machine": f"{platform.machine()}"}
    return render(meta, records, json_path, markdown_path, plot_path)


def render(meta, records, json_path=None, markdown_path=None, plot_path=None):
    """Print a network run's report from its records and write the requested files (also for ``--from-json``)."""
    return write_report(report_markdown(records, meta), meta, records, json_path, markdown_path, plot_path, plot)
