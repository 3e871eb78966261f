"""``cconv bench --torch-model resnet18``: train a PyTorch model with torch's kernels and with cconv's.

The model is built in plain torch (no torchvision). Each run starts both copies from the same
weights and trains them side by side on the same batches (random CIFAR-sized images, SGD with
momentum), once per dtype (float32, float64) and thread count (``torch.set_num_threads`` and
``cconv.set_num_threads`` set alike). It prints the median time of a training step (forward,
loss, backward, optimiser step) of each, and how far apart the two runs' losses and gradients
are. Steps alternate between the two models (which one goes first alternates too), so a noisy
phase of a shared machine hits both alike; the first steps warm up and are not timed.

Only the ``--torch-model`` options live here; torch is imported when the benchmark runs, so
``cconv bench --help`` works without it.
"""
from __future__ import annotations

import copy
import json
import statistics
import sys
import time

MODELS = ("resnet18",)
DTYPES = ("float32", "float64")
_UNTIMED = 2  # warm-up steps of each run
_LR, _MOMENTUM = 0.01, 0.9


def add_arguments(parser):
    """Add the ``--torch-model`` options to ``cconv bench``'s parser (``--threads``, ``--quick``,
    ``--json`` and ``--markdown`` are the harness's own and apply here too)."""
    parser.add_argument("--torch-model", choices=MODELS, metavar="NAME",
                        help="instead of the op suites: train this PyTorch model (resnet18: the CIFAR variant) "
                             "with torch's kernels and converted to cconv's (cconv.torch.convert), float32 and "
                             "float64, and compare step times, losses and gradients (needs torch). "
                             "With --quick: a smoke run of the model narrowed to 8-64 channels")
    parser.add_argument("--steps", type=int, metavar="N",
                        help=f"with --torch-model: training steps per run, the first {_UNTIMED} untimed "
                             "(default 20; quick 4)")
    parser.add_argument("--batch-size", type=int, metavar="B",
                        help="with --torch-model: images per step (default 32; quick 2)")


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------

def resnet18_cifar(num_classes=10, width=64):
    """ResNet-18 for 3x32x32 images (the CIFAR variant: a 3x3 stem, no stem pooling), in plain torch.

    Four stages of two basic blocks (3x3 conv, BN, ReLU, 3x3 conv, BN, plus a 1x1 conv + BN
    shortcut where the shape changes) with ``width``, 2, 4 and 8 times ``width`` channels, then a
    4x4 average pooling and a linear classifier. ``width`` 64 is the standard model.
    """
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    widths = [width, 2 * width, 4 * width, 8 * width]
    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for i, cout in enumerate(widths):
        layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AvgPool2d(4), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------
# one run: both models side by side
# --------------------------------------------------------------------------

def _step(torch, model, optimizer, x, y):
    """One SGD step; returns (seconds, loss, gradients as a list of tensors)."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    return seconds, loss.item(), [p.grad.detach().clone() for p in model.parameters()]


def _relative_gap(a, b):
    """max |a - b| / max |b| over matching tensors, the worst tensor's."""
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-300)) for x, y in zip(a, b))


def train_side_by_side(model, steps, batch, dtype, seed=0):
    """Train ``model`` and ``cconv.torch.convert(model)`` for ``steps`` steps from the same weights.

    Returns a dict: per-step times (s) and losses of each, each step's relative loss gap, and the
    largest relative gradient gap (max |g_cconv - g_torch| / max |g_torch| of the worst parameter)
    at the first step (same weights: the kernels' difference alone) and over all steps. float32
    runs also give each model's first-step gradient error against float64 gradients (same weights
    and data): float32 rounding can flip a ReLU or a max-pool choice, and batch norm spreads that
    over whole channels, so torch's own float32 gradients can be percents off.
    """
    import torch

    import cconv.torch

    torch.manual_seed(seed)
    reference = copy.deepcopy(model).to(getattr(torch, dtype))
    converted = cconv.torch.convert(reference)
    data = torch.Generator().manual_seed(seed + 1)
    # drawn in float64 and rounded, so runs of both dtypes see the same images
    images = torch.randn((4, batch, 3, 32, 32), generator=data, dtype=torch.float64).to(getattr(torch, dtype))
    labels = torch.randint(0, 10, (4, batch), generator=data)
    optimizers = [torch.optim.SGD(m.parameters(), lr=_LR, momentum=_MOMENTUM) for m in (reference, converted)]
    times = ([], [])
    losses = ([], [])
    grad_gaps = []
    exact = None
    if dtype != "float64":
        exact_model = copy.deepcopy(reference).double()
        exact = _step(torch, exact_model, torch.optim.SGD(exact_model.parameters(), lr=0),
                      images[0].double(), labels[0])[2]
    for i in range(steps):
        x, y = images[i % 4], labels[i % 4]
        order = (0, 1) if i % 2 == 0 else (1, 0)
        grads = [None, None]
        for k in order:
            seconds, loss, grads[k] = _step(torch, (reference, converted)[k], optimizers[k], x, y)
            times[k].append(seconds)
            losses[k].append(loss)
        grad_gaps.append(_relative_gap(grads[1], grads[0]))
        if i == 0 and exact is not None:
            float64_gaps = [_relative_gap([g.double() for g in grads[k]], exact) for k in (0, 1)]
    return {
        "torch_times": times[0], "cconv_times": times[1],
        "torch_losses": losses[0], "cconv_losses": losses[1],
        "loss_gaps": [abs(c - t) / abs(t) for t, c in zip(*losses)],
        "grad_gap_first": grad_gaps[0], "grad_gap": max(grad_gaps),
        "float64_gap_torch": float64_gaps[0] if exact is not None else None,
        "float64_gap_cconv": float64_gaps[1] if exact is not None else None,
    }


# --------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------

def _settings(args):
    quick = args.quick
    steps = args.steps if args.steps is not None else (4 if quick else 20)
    batch = args.batch_size if args.batch_size is not None else (2 if quick else 32)
    if steps <= _UNTIMED:
        raise ValueError(f"--steps must be more than {_UNTIMED} (the untimed warm-up steps), got {steps}")
    if batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch}")
    return {"model": args.torch_model, "width": 8 if quick else 64, "steps": steps, "batch": batch,
            "threads": list(dict.fromkeys(args.threads)),
            "dtypes": list(dict.fromkeys(args.dtype)) if args.dtype else list(DTYPES),
            "lr": _LR, "momentum": _MOMENTUM, "untimed_steps": _UNTIMED}


def _row(dtype, threads, result):
    torch_ms = 1e3 * statistics.median(result["torch_times"][_UNTIMED:])
    cconv_ms = 1e3 * statistics.median(result["cconv_times"][_UNTIMED:])
    return {"dtype": dtype, "threads": threads, "torch_ms": torch_ms, "cconv_ms": cconv_ms,
            "speedup": torch_ms / cconv_ms, **result}


def _add_float64_gaps(rows, steps=10):
    """Give each float32 row the largest relative gap of its losses (torch's and cconv's) to the
    float64 run's over the first ``steps`` steps: which float32 run tracks the exact one better."""
    exact = {r["threads"]: r["torch_losses"] for r in rows if r["dtype"] == "float64"}
    for row in rows:
        reference = exact.get(row["threads"]) if row["dtype"] != "float64" else None
        row["float64_loss_gaps"] = None if reference is None else [
            max(abs(a - b) / abs(b) for a, b in zip(row[key][:steps], reference[:steps]))
            for key in ("torch_losses", "cconv_losses")]


_HEADER = ("dtype", "threads", "torch ms/step", "cconv ms/step", "speedup", "loss gap step 1 / 10 / all",
           "grad gap step 1", "grad gap all steps", "step-1 grad error vs float64: torch / cconv",
           "10-step loss gap to the float64 run: torch / cconv")


def _cells(row):
    versus = "-" if row["float64_gap_torch"] is None else \
        f"{row['float64_gap_torch']:.1e} / {row['float64_gap_cconv']:.1e}"
    return (row["dtype"], str(row["threads"]), f"{row['torch_ms']:.1f}", f"{row['cconv_ms']:.1f}",
            f"{row['speedup']:.2f}x", " / ".join(f"{max(row['loss_gaps'][:n]):.0e}" for n in (1, 10, None)),
            f"{row['grad_gap_first']:.1e}",
            f"{row['grad_gap']:.1e}", versus,
            "-" if row.get("float64_loss_gaps") is None else "{:.1e} / {:.1e}".format(*row["float64_loss_gaps"]))


def _describe(settings, versions):
    narrow = "" if settings["width"] == 64 else f", narrowed to width {settings['width']}"
    return (f"{settings['model']} (CIFAR variant{narrow}, 3x32x32 inputs, 10 classes), batch {settings['batch']}, "
            f"SGD lr {settings['lr']} momentum {settings['momentum']}, {settings['steps']} steps per run "
            f"(median of the last {settings['steps'] - settings['untimed_steps']}); {versions}")


_LEGEND = ("speedup: torch's median step time / cconv's. Loss gap: largest |cconv - torch| / |torch| over the "
           "first step, the first 10 steps and all steps. Grad gap: max |cconv - torch| / max |torch| "
           "of the worst parameter (step 1: same weights; all "
           "steps: the runs drift apart). Step-1 error vs float64: the same measure against float64 gradients "
           "of the same weights and batch. 10-step loss gap to the float64 run: the largest relative gap of "
           "the float32 losses to the float64 torch run's (same initial weights and images) over the first 10 steps.")


def _table(rows):
    cells = [_HEADER] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADER))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells)


def _markdown(rows, description):
    lines = [f"Training steps of {description}.", "",
             "| " + " | ".join(_HEADER) + " |", "|" + "---|" * 2 + "---:|" * (len(_HEADER) - 2)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines + ["", _LEGEND]) + "\n"


def run(args):
    """Run the model benchmark for parsed ``args``; returns an exit code."""
    try:
        import cconv.torch  # first: its ImportError names the extra to install
    except ImportError as exc:
        print(f"error: --torch-model: {exc}", file=sys.stderr)
        return 2
    import torch

    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    versions = (f"torch {torch.__version__}, cconv {cconv.__version__} ({cconv.get_backend()} backend), "
                f"each step timed whole (forward, loss, backward, SGD update)")
    description = _describe(settings, versions)
    print(f"Training {description}.", flush=True)
    saved = (torch.get_num_threads(), cconv.get_num_threads())
    model = resnet18_cifar(width=settings["width"])
    rows = []
    try:
        for dtype in settings["dtypes"]:
            for threads in settings["threads"]:
                torch.set_num_threads(threads)
                cconv.set_num_threads(threads)
                result = train_side_by_side(model, settings["steps"], settings["batch"], dtype)
                rows.append(_row(dtype, threads, result))
                print(f"  {dtype}, {threads} thread(s): torch {rows[-1]['torch_ms']:.1f} ms, "
                      f"cconv {rows[-1]['cconv_ms']:.1f} ms", flush=True)
    finally:
        torch.set_num_threads(saved[0])
        cconv.set_num_threads(saved[1])
    _add_float64_gaps(rows)
    print()
    print(_table(rows))
    print(_LEGEND)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(_markdown(rows, description))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "versions": versions, "rows": rows}, f, indent=1)
    return 0
