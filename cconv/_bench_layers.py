"""Layers as benchmark tasks: a conv or pool layer's shapes, its inputs, and its passes.

Used by the random layer sweep (:mod:`cconv._bench_sweep`) and the network suite
(:mod:`cconv._bench_networks`). A :class:`ConvLayer` or :class:`PoolLayer` knows its
output shape and work, and builds, for one side of the comparison ("cconv" or
"torch", torch on its own tensors without cconv in between), the callables of its
passes: ``forward``, ``grad_input``, ``grad_weight`` (conv) or ``backward`` (pool).
Both sides read the same NumPy memory (``torch.from_numpy`` shares it).
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import numpy as np

from . import _api, _shapes


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


@dataclass(frozen=True)
class ConvLayer:
    """A conv2d (or conv_transpose2d) layer; ``padding`` is a pair or ``"same"``."""

    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: tuple
    stride: tuple = (1, 1)
    padding: object = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    transposed: bool = False
    output_padding: tuple = (0, 0)
    dtype: str = "float32"
    kind: str = "plain"

    op = "conv"

    @property
    def input_shape(self):
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self):
        kh, kw = self.kernel
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, kh, kw)
        return (self.out_channels, self.in_channels // self.groups, kh, kw)

    @property
    def explicit_padding(self):
        """The padding as a pair (``"same"`` resolved; the sweep uses it with odd kernels only)."""
        if self.padding == "same":
            return tuple(d * (k - 1) // 2 for d, k in zip(self.dilation, self.kernel))
        return _pair(self.padding)

    @property
    def output_shape(self):
        if self.transposed:
            g, shape = _shapes.conv_transpose_geometry(
                self.input_shape, self.weight_shape, self.stride, self.explicit_padding,
                self.output_padding, self.dilation, self.groups)
            return tuple(shape)
        g = _shapes.conv_geometry(self.input_shape, self.weight_shape, self.stride, self.padding,
                                  self.dilation, self.groups)
        return (g.batch, g.out_channels, g.out_h, g.out_w)

    @property
    def macs(self):
        """Multiply-adds of the forward pass (each gradient pass does as many)."""
        kh, kw = self.kernel
        if self.transposed:  # the input gradient of a conv from the output back to the input
            return int(np.prod(self.input_shape)) * (self.out_channels // self.groups) * kh * kw
        return int(np.prod(self.output_shape)) * (self.in_channels // self.groups) * kh * kw

    def describe(self):
        kh, kw = self.kernel
        pad = "same" if self.padding == "same" else "x".join(map(str, self.explicit_padding))
        text = (f"{'convT ' if self.transposed else ''}N{self.batch} C{self.in_channels}->"
                f"{self.out_channels} {self.height}x{self.width} k{kh}x{kw}")
        if self.stride != (1, 1):
            text += f" s{self.stride[0]}" + (f"x{self.stride[1]}" if self.stride[0] != self.stride[1] else "")
        text += f" p{pad}"
        if self.dilation != (1, 1):
            text += f" d{self.dilation[0]}" + (f"x{self.dilation[1]}" if self.dilation[0] != self.dilation[1] else "")
        if self.groups > 1:
            text += f" g{self.groups}"
        if self.dtype != "float32":
            text += f" {self.dtype}"
        return text

    def passes(self):
        return ("forward", "grad_input", "grad_weight")

    def arrays(self, rng):
        """Input, weight and an output gradient (the weight scaled like PyTorch's init)."""
        x = rng.standard_normal(self.input_shape, dtype=np.float64).astype(self.dtype)
        fan_in = self.weight_shape[1] * self.kernel[0] * self.kernel[1]
        w = (rng.standard_normal(self.weight_shape) / np.sqrt(max(fan_in, 1))).astype(self.dtype)
        gy = rng.standard_normal(self.output_shape, dtype=np.float64).astype(self.dtype)
        return x, w, gy

    def calls(self, side, x, w, gy, torch=None):
        """``{pass: zero-argument callable}`` for ``side`` ("cconv" or "torch")."""
        s, p, d, g = self.stride, self.explicit_padding, self.dilation, self.groups
        if side == "cconv":
            mask = {"grad_input": (True, False, False), "grad_weight": (False, True, False)}
            if self.transposed:
                op = self.output_padding
                back = _api.conv_transpose2d_backward
                return {"forward": lambda: _api.conv_transpose2d(x, w, None, s, p, op, g, d), **{
                    k: (lambda m=m: back(gy, x, w, s, p, op, g, d, output_mask=m)) for k, m in mask.items()}}
            pad = self.padding if self.padding == "same" else p
            return {"forward": lambda: _api.conv2d(x, w, None, s, pad, d, g), **{
                k: (lambda m=m: _api.conv2d_backward(gy, x, w, s, pad, d, g, output_mask=m))
                for k, m in mask.items()}}
        tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
        back = torch.ops.aten.convolution_backward
        op = list(self.output_padding) if self.transposed else [0, 0]
        masks = {"grad_input": [True, False, False], "grad_weight": [False, True, False]}
        pad = self.padding if self.padding == "same" else p

        def fwd():
            if self.transposed:
                return torch.nn.functional.conv_transpose2d(tx, tw, None, s, p, op, g, d)
            return torch.nn.functional.conv2d(tx, tw, None, s, pad, d, g)
        return {"forward": fwd, **{
            k: (lambda m=m: back(tgy, tx, tw, None, list(s), list(p), list(d), self.transposed, op, g, m))
            for k, m in masks.items()}}


@dataclass(frozen=True)
class PoolLayer:
    """A max_pool2d (with indices) or avg_pool2d layer."""

    batch: int
    channels: int
    height: int
    width: int
    kind: str  # "max" or "avg"
    kernel: tuple
    stride: tuple
    padding: tuple = (0, 0)
    ceil_mode: bool = False
    dtype: str = "float32"

    op = "pool"

    @property
    def input_shape(self):
        return (self.batch, self.channels, self.height, self.width)

    @property
    def output_shape(self):
        g = _shapes.pool_geometry(self.input_shape, self.kernel, self.stride, self.padding, 1,
                                  self.ceil_mode)
        return (self.batch, self.channels, g.out_h, g.out_w)

    @property
    def macs(self):
        n, c, ho, wo = self.output_shape
        return n * c * ho * wo * self.kernel[0] * self.kernel[1]

    def describe(self):
        return (f"{self.kind}pool N{self.batch} C{self.channels} {self.height}x{self.width} "
                f"k{self.kernel[0]}x{self.kernel[1]} s{self.stride[0]} p{self.padding[0]}")

    def passes(self):
        return ("forward", "backward")

    def arrays(self, rng):
        x = rng.standard_normal(self.input_shape, dtype=np.float64).astype(self.dtype)
        gy = rng.standard_normal(self.output_shape, dtype=np.float64).astype(self.dtype)
        return x, None, gy

    def calls(self, side, x, w, gy, torch=None):
        """``{pass: callable}``; max-pool's backward uses the indices of one forward call."""
        k, s, p, ceil = self.kernel, self.stride, self.padding, self.ceil_mode
        if side == "cconv":
            if self.kind == "max":
                _, idx = _api.max_pool2d(x, k, s, p, 1, ceil, return_indices=True)
                return {"forward": lambda: _api.max_pool2d(x, k, s, p, 1, ceil, return_indices=True),
                        "backward": lambda: _api.max_pool2d_backward(gy, idx, x.shape)}
            return {"forward": lambda: _api.avg_pool2d(x, k, s, p, ceil),
                    "backward": lambda: _api.avg_pool2d_backward(gy, x.shape, k, s, p, ceil)}
        aten = torch.ops.aten
        tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
        if self.kind == "max":
            _, tidx = aten.max_pool2d_with_indices(tx, list(k), list(s), list(p), [1, 1], ceil)
            return {"forward": lambda: aten.max_pool2d_with_indices(tx, list(k), list(s), list(p), [1, 1], ceil),
                    "backward": lambda: aten.max_pool2d_with_indices_backward(
                        tgy, tx, list(k), list(s), list(p), [1, 1], ceil, tidx)}
        return {"forward": lambda: aten.avg_pool2d(tx, list(k), list(s), list(p), ceil, True, None),
                "backward": lambda: aten.avg_pool2d_backward(tgy, tx, list(k), list(s), list(p), ceil,
                                                            True, None)}


# --------------------------------------------------------------------------
# paired timing
# --------------------------------------------------------------------------

def _loop_time(fn, number):
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - start


def paired_times(fns, repeat=5, min_time=0.01, max_loops=10_000):
    """Median seconds per call of each callable in ``fns`` (a dict), sampled alternately.

    Each callable is warmed up, then looped ``n`` times per sample so that a sample
    lasts at least ``min_time``; the order of the callables alternates between
    samples, so that a noisy phase of the machine hits them alike.
    """
    loops = {}
    for name, fn in fns.items():
        fn()
        one = _loop_time(fn, 1)
        loops[name] = int(min(max_loops, max(1, min_time / max(one, 1e-9))))
    samples = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeat):
        for name in (names if r % 2 == 0 else names[::-1]):
            samples[name].append(_loop_time(fns[name], loops[name]) / loops[name])
    return {name: statistics.median(v) for name, v in samples.items()}, samples


def write_report(text, meta, records, json_path=None, markdown_path=None, plot_path=None, plot=None):
    """Print a run's Markdown report and write the files asked for (``plot(records, path)`` draws)."""
    print(text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(text + "\n")
    if plot_path:
        plot(records, plot_path)
    return 0
