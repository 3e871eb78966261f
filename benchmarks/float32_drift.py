#!/usr/bin/env python
"""How far do float32 training runs of ResNet-18 (CIFAR) drift apart, with and without cconv?

Trains one ResNet-18 (the CIFAR variant of ``cconv bench --torch-model resnet18``) for 20 SGD
steps (lr 0.01, momentum 0.9, batch 32) from the same weights on the same images, three times:
torch in float64 (the exact run), torch in float32, and ``cconv.torch.convert`` of it in float32.
It prints, per data setup, each float32 run's largest relative loss gap to the exact run and the
gap between the two float32 runs, step by step. If torch's own float32 run is as far from the
exact run as cconv's is from torch's, the gap is the training's sensitivity to rounding, not a
kernel's error.

    python benchmarks/float32_drift.py                 # all three data setups (~10 min)
    python benchmarks/float32_drift.py --data fresh    # one of: cycled, fresh, learnable

Data setups: ``cycled`` (4 batches of random images and labels, repeated: what the model
benchmark trains on), ``fresh`` (a new random batch every step) and ``learnable`` (each class
has a template image; an image is half its class template plus noise).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

try:
    import cconv.torch
except ImportError:  # a source checkout: the package next to this directory (built in place)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import cconv.torch

from cconv._torch_model_bench import resnet18_cifar

STEPS, BATCH, LR, MOMENTUM = 20, 32, 0.01, 0.9


def _batches(setup, seed=1):
    """``STEPS`` (images float64 (B, 3, 32, 32), labels int64 (B,)) pairs for one data setup."""
    g = torch.Generator().manual_seed(seed)

    def noise(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float64)

    def labels():
        return torch.randint(0, 10, (BATCH,), generator=g)

    if setup == "cycled":
        four = [(noise(BATCH, 3, 32, 32), labels()) for _ in range(4)]
        return [four[i % 4] for i in range(STEPS)]
    if setup == "fresh":
        return [(noise(BATCH, 3, 32, 32), labels()) for _ in range(STEPS)]
    templates = noise(10, 3, 32, 32)
    out = []
    for _ in range(STEPS):
        y = labels()
        out.append((0.5 * templates[y] + noise(BATCH, 3, 32, 32), y))
    return out


def _losses(model, dtype, batches):
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    losses = []
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x.to(dtype)), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _gaps(a, b):
    return [abs(x - y) / abs(y) for x, y in zip(a, b)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["cycled", "fresh", "learnable"], action="append")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cconv.set_num_threads(args.threads)
    print(f"ResNet-18 (CIFAR), {STEPS} SGD steps (lr {LR}, momentum {MOMENTUM}), batch {BATCH}; "
          f"relative loss gaps |a - b| / |b|; torch {torch.__version__}, cconv {cconv.__version__}")
    for setup in args.data or ["cycled", "fresh", "learnable"]:
        batches = _batches(setup)
        torch.manual_seed(0)
        model = resnet18_cifar()
        exact = _losses(copy.deepcopy(model).double(), torch.float64, batches)
        torch32 = _losses(copy.deepcopy(model).float(), torch.float32, batches)
        cconv32 = _losses(cconv.torch.convert(copy.deepcopy(model).float()), torch.float32, batches)
        print(f"\n{setup}: exact loss {exact[0]:.4f} -> {exact[-1]:.4f}; largest gap over {STEPS} steps: "
              f"torch float32 vs exact {max(_gaps(torch32, exact)):.1e}, "
              f"cconv float32 vs exact {max(_gaps(cconv32, exact)):.1e}, "
              f"cconv float32 vs torch float32 {max(_gaps(cconv32, torch32)):.1e}")
        for name, gaps in [("torch32 vs exact ", _gaps(torch32, exact)),
                           ("cconv32 vs exact ", _gaps(cconv32, exact)),
                           ("cconv32 vs torch32", _gaps(cconv32, torch32))]:
            print(f"  {name} by step: " + " ".join(f"{g:.0e}" for g in gaps))


if __name__ == "__main__":
    main()
