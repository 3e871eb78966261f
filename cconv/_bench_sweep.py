"""``cconv bench --sweep N``: a seeded random sweep of realistic conv layers against PyTorch.

Layers are drawn from distributions shaped like the convolutions of real networks
(:func:`sample_layers`): channel counts follow the map size (wide layers on small
maps) and include counts that are no multiple of 8 or 16; kernels 1-11, square and
1xk / kx1; stride 1-4; dilation 1-18; padding 0, ``'same'``, symmetric and
asymmetric; groups 1, 2-64 and depthwise with channel multiplier 1-2; batch 1-256
(halved while the layer's forward exceeds the work cap); float32 and float64.

Every layer's three passes (forward, grad_input, grad_weight) are timed against
torch on its own tensors in the same process, alternately (:func:`paired_times`),
at each thread count. The ratio is torch time / cconv time: above 1, cconv is faster.
With ``autotune=True`` (``--autotune``) each pass is also timed with autotuning on, in the
same alternation (its tuning happens in the warm-up call, outside the timing), and the
report adds where the tuned algorithm beats the planner's prediction.
"""
from __future__ import annotations

import math
import platform
import sys

import numpy as np

from . import _autotune, _backends
from ._bench_layers import ConvLayer, paired_times, write_report
from ._threads import get_num_threads, set_num_threads

MAX_MACS = 1e9          # forward multiply-adds cap: the batch is halved until a layer fits
MAX_ELEMENTS = 2 ** 25  # input or output elements cap (128 MiB of float32)

# (kind, probability): the sweep's mix of layer classes
KINDS = {
    "plain": 0.24, "pointwise": 0.14, "strided": 0.12, "depthwise": 0.12, "grouped": 0.08,
    "dilated": 0.09, "asymmetric": 0.08, "first": 0.05, "transposed": 0.08,
}
# map side -> (min, max) channel range of layers at that resolution
_MAPS = {1: (256, 2048), 2: (256, 2048), 3: (128, 2048), 4: (128, 2048), 7: (128, 2048),
         8: (64, 1024), 13: (64, 1024), 14: (64, 1024), 17: (64, 768), 28: (32, 512),
         32: (16, 512), 35: (32, 384), 56: (16, 256), 64: (16, 256), 112: (8, 128),
         147: (8, 64), 224: (3, 64)}
_ODD_CHANNELS = (3, 17, 24, 33, 40, 48, 72, 100, 120, 144, 160, 200, 240, 320, 480, 576, 960)
_BATCHES = (1, 1, 2, 4, 8, 8, 16, 32, 32, 64, 128, 256)


def _channels(rng, lo, hi):
    """A channel count in [lo, hi]: usually a multiple of 16, sometimes an odd one."""
    if rng.random() < 0.3:
        fits = [c for c in _ODD_CHANNELS if lo <= c <= hi]
        if fits and rng.random() < 0.5:
            return int(rng.choice(fits))
        return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    c = round(math.exp(rng.uniform(math.log(lo), math.log(hi))) / 16) * 16
    return max(c, lo)


def _map(rng, low=1, high=224):
    sides = [s for s in _MAPS if low <= s <= high]
    h = int(rng.choice(sides))
    w = h if rng.random() < 0.85 else max(1, int(h * rng.choice([0.5, 0.75, 1.5, 2])))
    return h, w, _MAPS[h]


def _draw(rng):
    """One layer (batch not yet fitted to the work cap), or None to draw again."""
    kind = rng.choice(list(KINDS), p=np.array(list(KINDS.values())) / sum(KINDS.values()))
    stride, dilation, groups, transposed, output_padding = (1, 1), (1, 1), 1, False, (0, 0)
    if kind == "first":
        h, w, _ = _map(rng, 32, 224)
        cin, cout = int(rng.choice([1, 3, 3, 4])), _channels(rng, 16, 96)
        k = int(rng.choice([3, 5, 7, 11]))
        kernel, stride = (k, k), (int(rng.choice([1, 2, 2, 4])),) * 2
    else:
        h, w, (lo, hi) = _map(rng)
        cin = _channels(rng, lo, hi)
        cout = _channels(rng, lo, hi)
        if kind == "pointwise":
            kernel = (1, 1)
            stride = (2, 2) if rng.random() < 0.15 else (1, 1)
        elif kind == "asymmetric":
            k = int(rng.choice([3, 5, 7]))
            kernel = (1, k) if rng.random() < 0.5 else (k, 1)
        elif kind == "depthwise":
            k = int(rng.choice([3, 3, 3, 5, 5, 7]))
            kernel, groups = (k, k), cin
            cout = cin * int(rng.choice([1, 1, 1, 2]))
            stride = (int(rng.choice([1, 1, 2])),) * 2
        elif kind == "transposed":
            k = int(rng.choice([2, 3, 4]))
            kernel, stride, transposed = (k, k), (2, 2), True
            h, w = min(h, 112), min(w, 112)
        else:
            k = int(rng.choice([3, 3, 3, 3, 5, 7, 2, 4]))
            kernel = (k, k)
        if kind == "strided":
            stride = (int(rng.choice([2, 2, 2, 3, 4])),) * 2
        if kind == "dilated":
            kernel = (3, 3)
            dilation = (int(rng.choice([2, 2, 4, 6, 8, 12, 18])),) * 2
        if kind == "grouped":
            groups = int(rng.choice([2, 4, 8, 16, 32, 64]))
            cin = max(groups, cin // groups * groups)
            cout = max(groups, cout // groups * groups)
    padding = _padding(rng, kind, kernel, stride, dilation)
    if transposed:
        padding = ((kernel[0] - 1) // 2,) * 2 if rng.random() < 0.7 else (0, 0)
        output_padding = (kernel[0] % 2,) * 2 if kernel[0] - 2 * padding[0] < 2 else (0, 0)
        output_padding = tuple(min(o, stride[0] - 1) for o in output_padding)
    dtype = "float64" if rng.random() < 0.25 else "float32"
    return ConvLayer(1, cin, cout, h, w, kernel, stride, padding, dilation, groups, transposed,
                     output_padding, dtype, str(kind))


def _padding(rng, kind, kernel, stride, dilation):
    half = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    odd = all(k % 2 for k in kernel)
    r = rng.random()
    if r < 0.25 and stride == (1, 1) and odd:
        return "same"
    if r < 0.45 or kind == "pointwise":
        return (0, 0)
    if r < 0.85 or kind == "asymmetric":
        return half
    return (half[0], max(0, half[1] - 1)) if rng.random() < 0.5 else (max(0, half[0] - 1), half[1])


def _fits(layer):
    try:
        out = layer.output_shape
    except ValueError:
        return False
    return (min(out[2:]) >= 1 and layer.macs <= MAX_MACS
            and max(math.prod(layer.input_shape), math.prod(out)) <= MAX_ELEMENTS)


def sample_layers(count, seed=0):
    """``count`` valid layers drawn reproducibly from ``seed``, each with its batch fitted."""
    rng = np.random.default_rng(seed)
    layers = []
    while len(layers) < count:
        layer = _draw(rng)
        if layer is None or not _fits(layer):
            continue
        batch = int(rng.choice(_BATCHES))
        while batch > 1 and not _fits(_with_batch(layer, batch)):
            batch //= 2
        layers.append(_with_batch(layer, batch))
    return layers


def _with_batch(layer, batch):
    from dataclasses import replace
    return replace(layer, batch=batch)


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

def _ran_algorithm(fn):
    """(result, the conv algorithm one call of ``fn`` ran) (one compiled pass per call)."""
    counts = _backends._compiled._conv.algorithm_counts
    before = counts()
    result = fn()
    ran = [algo for (algo, p), n in counts().items() if n > before.get((algo, p), 0)]
    return result, "+".join(ran)


def _with_autotune(fn, on):
    def call():
        _autotune.set_autotune(on)
        return fn()
    return call


def measure(layers, threads, repeat=5, min_time=0.01, progress=None, autotune=False):
    """One record per (layer, pass, thread count): cconv and torch seconds, their ratio; with
    ``autotune``, also cconv's seconds with autotuning on and the algorithms each side ran."""
    import torch
    records = []
    previous = (get_num_threads(), torch.get_num_threads(), _autotune.get_autotune())
    rng = np.random.default_rng(1)
    try:
        for i, layer in enumerate(layers):
            x, w, gy = layer.arrays(rng)
            ours, theirs = layer.calls("cconv", x, w, gy), layer.calls("torch", x, w, gy, torch)
            for t in threads:
                set_num_threads(t)
                torch.set_num_threads(t)
                for name in layer.passes():
                    fns = {"cconv": ours[name], "torch": theirs[name]}
                    if autotune:
                        fns["cconv"] = _with_autotune(ours[name], False)
                        fns["tuned"] = _with_autotune(ours[name], True)
                    with torch.no_grad():
                        med, _ = paired_times(fns, repeat, min_time)
                    record = {
                        "layer": i, "describe": layer.describe(), "kind": layer.kind, "dtype": layer.dtype,
                        "batch": layer.batch, "pass": name, "threads": t, "macs": layer.macs,
                        "cconv_s": med["cconv"], "torch_s": med["torch"], "ratio": med["torch"] / med["cconv"],
                    }
                    if autotune:
                        default, tuned = (_ran_algorithm(fns[k])[1] for k in ("cconv", "tuned"))
                        record.update(tuned_s=med["tuned"], tuned_ratio=med["torch"] / med["tuned"],
                                      default_algorithm=default, tuned_algorithm=tuned)
                    records.append(record)
            if progress:
                progress(i + 1, len(layers), layer.describe())
    finally:
        set_num_threads(previous[0])
        torch.set_num_threads(previous[1])
        _autotune.set_autotune(previous[2])
    return records


# --------------------------------------------------------------------------
# summarising
# --------------------------------------------------------------------------

def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if len(values) else float("nan")


def _stats(ratios):
    r = np.sort(np.asarray(ratios))
    pct = {p: float(np.percentile(r, p)) for p in (5, 25, 50, 75, 95)}
    return {"count": len(r), "geomean": _geomean(r), "min": float(r[0]), **{f"p{p}": v for p, v in pct.items()},
            "at_least_1": float(np.mean(r >= 1.0)), "below_0.85": int(np.sum(r < 0.85))}


def _batch_bucket(batch):
    return "1" if batch == 1 else "2-8" if batch <= 8 else "16-64" if batch <= 64 else "128-256"


def summarise(records):
    """Per thread count: overall statistics and breakdowns by pass, class, dtype, batch."""
    out = {}
    for t in sorted({r["threads"] for r in records}):
        rows = [r for r in records if r["threads"] == t]
        f32 = [r for r in rows if r["dtype"] == "float32"]
        groups = {}
        for key, name in (("pass", "pass"), ("kind", "class"), ("dtype", "dtype")):
            for value in sorted({r[key] for r in rows}):
                groups[f"{name}={value}"] = _stats([r["ratio"] for r in rows if r[key] == value])
        for bucket in ("1", "2-8", "16-64", "128-256"):
            sel = [r["ratio"] for r in rows if _batch_bucket(r["batch"]) == bucket]
            if sel:
                groups[f"batch={bucket}"] = _stats(sel)
        big = [r for r in f32 if 2 * r["macs"] >= 1e9]
        out[t] = {
            "all": _stats([r["ratio"] for r in rows]),
            "float32": _stats([r["ratio"] for r in f32]) if f32 else None,
            "groups": groups,
            "worst": sorted(rows, key=lambda r: r["ratio"])[:20],
            "gflops_big_float32": [2 * r["macs"] / r["cconv_s"] / 1e9 / t for r in big],
        }
    return out


def _fmt_stats(s):
    return (f"{s['count']:4d} | {s['geomean']:5.2f} | {s['p5']:5.2f} | {s['p25']:5.2f} | {s['p50']:5.2f} | "
            f"{s['p75']:5.2f} | {s['p95']:5.2f} | {s['min']:5.2f} | {100 * s['at_least_1']:3.0f}% | "
            f"{s['below_0.85']:3d}")


_HEAD = ("| | tasks | geomean | p5 | p25 | median | p75 | p95 | min | >= 1.0 | < 0.85 |\n"
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def report_markdown(summary, meta):
    """The sweep's report as Markdown (tables of torch time / cconv time)."""
    flag = " --autotune" if meta.get("autotune") else ""
    intro = (f"{meta['layers']} layers drawn with seed {meta['seed']} (`cconv bench --sweep {meta['layers']} "
             f"--seed {meta['seed']}{flag}`), three passes each (forward, grad_input, grad_weight), "
             f"timed against torch {meta.get('torch', '?')} on its own tensors in the same process, "
             "alternating sample by sample. Ratio = torch time / cconv time (above 1: cconv faster).")
    lines = ["# Random layer sweep: cconv against PyTorch", "", intro, f"Machine: {meta.get('machine', '?')}.", ""]
    for t, s in summary.items():
        lines += [f"## {t} thread{'s' if int(t) > 1 else ''}", "", _HEAD,
                  f"| all | {_fmt_stats(s['all'])} |"]
        if s["float32"]:
            lines.append(f"| float32 | {_fmt_stats(s['float32'])} |")
        lines += [f"| {k} | {_fmt_stats(v)} |" for k, v in s["groups"].items()]
        if s["gflops_big_float32"]:
            g = sorted(s["gflops_big_float32"])
            lines += ["", (f"float32 tasks of >= 1 GFLOP ({len(g)}): cconv at {g[0]:.0f}-{g[-1]:.0f} GFLOP/s "
                           f"per thread (median {g[len(g) // 2]:.0f}).")]
        lines += ["", "Slowest relative to torch:", "", "| layer | pass | cconv | torch | ratio |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['describe']} | {r['pass']} | {r['cconv_s'] * 1e3:.3f} ms | {r['torch_s'] * 1e3:.3f} ms | "
                  f"{r['ratio']:.2f} |" for r in s["worst"]]
        lines.append("")
    return "\n".join(lines)


def autotune_markdown(records, top=25):
    """The autotune section: torch / cconv ratios with and without tuning, and the tasks where
    the tuned algorithm beats the planner's choice by the most (default / tuned time)."""
    lines = ["## Autotune against the planner's choice", "",
             "Each task also timed with `cconv.set_autotune(True)` (its tuning ran in the warm-up call, "
             "outside the timing), alternating with the default and torch. Speedup = default time / tuned "
             "time (above 1: the tuned algorithm is faster).", ""]
    for t in sorted({r["threads"] for r in records}):
        rows = [r for r in records if r["threads"] == t]
        changed = [r for r in rows if r["default_algorithm"] != r["tuned_algorithm"]]
        lines += [f"### {t} thread{'s' if t > 1 else ''}", "", _HEAD,
                  f"| torch / default | {_fmt_stats(_stats([r['ratio'] for r in rows]))} |",
                  f"| torch / tuned | {_fmt_stats(_stats([r['tuned_ratio'] for r in rows]))} |",
                  f"| default / tuned | {_fmt_stats(_stats([r['cconv_s'] / r['tuned_s'] for r in rows]))} |"]
        if changed:
            lines.append(f"| default / tuned, algorithm changed | "
                         f"{_fmt_stats(_stats([r['cconv_s'] / r['tuned_s'] for r in changed]))} |")
        lines += ["", f"The tuned algorithm differs from the planner's on {len(changed)} of {len(rows)} tasks. "
                  "Largest gains of tuning (where the default selection is wrong):", "",
                  "| default | tuned | speedup | default | tuned | torch | pass | layer |",
                  "|---|---|---:|---:|---:|---:|---|---|"]
        best = sorted(changed, key=lambda r: r["tuned_s"] / r["cconv_s"])[:top]
        lines += [f"| {r['default_algorithm']} | {r['tuned_algorithm']} | {r['cconv_s'] / r['tuned_s']:.2f}x | "
                  f"{r['cconv_s'] * 1e3:.3f} ms | {r['tuned_s'] * 1e3:.3f} ms | {r['torch_s'] * 1e3:.3f} ms | "
                  f"{r['pass']} | {r['describe']} |" for r in best]
        pairs = {}
        for r in changed:
            pairs.setdefault((r["pass"], r["default_algorithm"], r["tuned_algorithm"]), []).append(
                r["cconv_s"] / r["tuned_s"])
        lines += ["", "Changes by pass and algorithm pair:", "",
                  "| pass | default | tuned | tasks | geomean speedup | max |", "|---|---|---|---:|---:|---:|"]
        lines += [f"| {p} | {a} | {b} | {len(v)} | {_geomean(v):.2f}x | {max(v):.2f}x |"
                  for (p, a, b), v in sorted(pairs.items(), key=lambda kv: -len(kv[1]))]
        lines.append("")
    return "\n".join(lines)


def plot(records, path):
    """ECDF of the ratios per thread count (log scale), with the 1.0 line labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in sorted({r["threads"] for r in records}):
        r = np.sort([x["ratio"] for x in records if x["threads"] == t])
        ax.step(r, np.arange(1, len(r) + 1) / len(r), where="post", label=f"{t} thread{'s' if t > 1 else ''}")
    ax.axvline(1.0, color="gray", linestyle="--", label="as fast as torch")
    ax.set_xscale("log")
    ax.set_xlabel("torch time / cconv time (per layer and pass)")
    ax.set_ylabel("fraction of tasks at or below")
    ax.set_title("Random layer sweep: cconv vs PyTorch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(count, seed, threads, repeat, min_time, json_path=None, markdown_path=None, plot_path=None,
        show_progress=True, autotune=False):
    """Measure, print the Markdown report, write the requested files; returns an exit code."""
    try:
        import torch
    except ImportError:
        print("cconv bench --sweep compares against PyTorch, which is not installed "
              "(pip install \"cconv[bench]\")", file=sys.stderr)
        return 2
    layers = sample_layers(count, seed)

    def progress(done, total, what):
        if show_progress:
            print(f"\r[{done}/{total}] {what[:70]:70s}", end="", file=sys.stderr, flush=True)

    if autotune and _backends._compiled is None:
        print("cconv bench --sweep --autotune needs the compiled backend", file=sys.stderr)
        return 2
    records = measure(layers, threads, repeat, min_time, progress, autotune)
    if show_progress:
        print(file=sys.stderr)
    meta = {"layers": count, "seed": seed, "threads": threads, "torch": torch.__version__,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}"}
    meta["autotune"] = autotune
    return render(meta, records, json_path, markdown_path, plot_path)


def render(meta, records, json_path=None, markdown_path=None, plot_path=None):
    """Print a sweep's report from its records and write the requested files (also for ``--from-json``)."""
    text = report_markdown(summarise(records), meta)
    if meta.get("autotune"):
        text += "\n" + autotune_markdown(records)
    return write_report(text, meta, records, json_path, markdown_path, plot_path, plot)
