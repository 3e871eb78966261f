"""Randomized differential fuzz: every public cconv op on a backend under test (the compiled
``"cython"`` one by default) against the NumPy reference, on tiny random shapes and geometries.

For each drawn argument set, both backends must either both reject it (same exception type) or
both return results that agree by cconv's one comparison rule (cconv._compare.agreement: exactly
for max-pool indices; for floats NaN and Inf in exactly the same places and a relative error norm
within 1e-5 for float32, 1e-12 for float64). The backend under test must also leave every
input array unchanged and return outputs that share no memory with the inputs. Arguments are
drawn from ranges that make some of them invalid (kernel larger than the input, stride 0,
negative padding, ...), and arrays come as float32/float64, batched or not, C-ordered or as
strided views, sometimes with NaN/Inf, sometimes with a zero-size batch.

    python tools/fuzz.py                     # 10,000 calls of the compiled ops, seed 0
    python tools/fuzz.py --calls 200000 --seed 7 --backend torch
    python tools/fuzz.py --finite            # no NaN/Inf drawn (to triage a mismatch)

Prints one summary line; exits 1 on any mismatch (the first few are described with the seed
and draw number that reproduce them), 2 if the backend under test is unavailable.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time

import numpy as np

import cconv
from cconv._compare import agreement

REFERENCE = "numpy"
SHOW_MISMATCHES = 5


def _call(fn, args, kwargs, backend):
    """(result, None) or (None, the exception) of ``fn(*args, backend=backend, **kwargs)``."""
    try:
        return fn(*args, backend=backend, **kwargs), None
    except Exception as exc:  # noqa: BLE001 - any exception is a finding or an agreed rejection
        return None, exc


def _kind(result):
    return "None" if result is None else f"{type(result).__name__} {getattr(result, 'shape', '')}"


class Fuzzer:
    """Draws argument sets and runs each op on both backends; tallies calls and mismatches."""

    def __init__(self, backend="cython", seed=0, special_values=True):
        self.backend = backend
        self.seed = seed
        self.special_values = special_values    # draw NaN/Inf into some arrays
        self.rng = np.random.default_rng(seed)
        # depthwise layers come from a stream of their own: every other draw stays as it was
        self.depthwise_rng = np.random.default_rng([seed, 1])
        self.calls = collections.Counter()      # op -> calls that reached the backend under test
        self.rejected = 0                       # argument sets both backends refused
        self.mismatches = []                    # descriptions
        self.draw = 0

    # ---- random arguments -------------------------------------------------------------------

    def _int(self, low, high):
        return int(self.rng.integers(low, high + 1))

    def _pair(self, low, high, hostile=()):
        """An int or an (h, w) pair in [low, high]; now and then a hostile value instead."""
        if hostile and self.rng.random() < 0.03:
            return hostile[self._int(0, len(hostile) - 1)]
        if self.rng.random() < 0.5:
            return self._int(low, high)
        return (self._int(low, high), self._int(low, high))

    def _array(self, shape, dtype):
        """Random normal array of ``shape``: C-ordered, Fortran-ordered or a strided view,
        with the odd NaN or Inf."""
        layout = self.rng.random()
        if layout < 0.15 and len(shape) >= 2:  # a view with a step on the last axis
            base = self.rng.standard_normal(tuple(shape[:-1]) + (2 * shape[-1],)).astype(dtype)
            a = base[..., ::2]
        else:
            a = self.rng.standard_normal(shape).astype(dtype)
            if layout < 0.25:
                a = np.asfortranarray(a)
        if a.size and self.rng.random() < 0.05 and self.special_values:
            flat = a.reshape(-1) if a.flags.c_contiguous else None
            value = [np.nan, np.inf, -np.inf][self._int(0, 2)]
            if flat is not None:
                flat[self._int(0, a.size - 1)] = value
            else:
                a[tuple(self._int(0, s - 1) for s in a.shape)] = value
        return a

    def _input_shape(self, channels, low=1, high=8):
        n = 0 if self.rng.random() < 0.03 else self._int(1, 3)
        hw = (self._int(low, high), self._int(low, high))
        if self.rng.random() < 0.2:  # unbatched (C, H, W)
            return (channels,) + hw
        return (n, channels) + hw

    # ---- running one op on both backends ----------------------------------------------------

    def _compare(self, op, ref, out, inputs, detail):
        if isinstance(ref, tuple):
            if not isinstance(out, tuple) or len(out) != len(ref):
                return self._mismatch(op, f"returned {type(out).__name__}, reference a tuple", detail)
            for i, (r, o) in enumerate(zip(ref, out)):
                self._compare(f"{op}[{i}]", r, o, inputs, detail)
            return
        if ref is None or out is None:
            if ref is not out:
                self._mismatch(op, f"returned {_kind(out)}, the reference {_kind(ref)}", detail)
            return
        if out.shape != ref.shape or out.dtype != ref.dtype:
            return self._mismatch(op, f"shape/dtype {out.shape} {out.dtype}, reference {ref.shape} "
                                      f"{ref.dtype}", detail)
        if any(np.shares_memory(out, a) for a in inputs):
            self._mismatch(op, "output shares memory with an input", detail)
        problem = agreement(out, ref)      # cconv's one comparison rule
        if problem is not None:
            self._mismatch(op, problem, detail)

    def _mismatch(self, op, what, detail):
        self.mismatches.append(f"seed {self.seed} draw {self.draw}: {op} on {self.backend}: {what}; {detail}")

    def run(self, op, *args, **kwargs):
        """Call ``cconv.<op>`` on both backends; return the reference result, or None if rejected."""
        fn = getattr(cconv, op)
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        detail = ", ".join([f"{a.dtype}{a.shape}" if isinstance(a, np.ndarray) else repr(a) for a in args]
                           + [f"{k}={v!r}" for k, v in kwargs.items()])
        ref, ref_error = _call(fn, args, kwargs, REFERENCE)
        if ref_error is not None and not isinstance(ref_error, (ValueError, TypeError)):
            self._mismatch(op, f"raised {ref_error!r} on the reference (bad input must give "
                               "ValueError/TypeError)", detail)
            return None
        snapshots = [a.copy() for a in arrays]
        out, error = _call(fn, args, kwargs, self.backend)
        if error is not None:
            if not isinstance(error, (ValueError, TypeError)):
                self._mismatch(op, f"raised {error!r}", detail)
            elif ref_error is None:
                self._mismatch(op, f"raised {error!r}, the reference did not", detail)
            elif type(error) is not type(ref_error):
                self._mismatch(op, f"raised {type(error).__name__}, the reference "
                                   f"{type(ref_error).__name__}", detail)
            else:
                self.rejected += 1
            return None
        self.calls[op] += 1
        for a, before in zip(arrays, snapshots):
            if not np.array_equal(a, before, equal_nan=True):
                self._mismatch(op, "modified an input array", detail)
        if ref_error is not None:
            self._mismatch(op, f"accepted arguments the reference rejects ({ref_error})", detail)
            return None
        self._compare(op, ref, out, arrays, detail)
        return ref

    # ---- one draw per op family -------------------------------------------------------------

    def _mask(self):
        return tuple(bool(b) for b in self.rng.random(3) < 0.7)

    def conv(self, dtype):
        if self.depthwise_rng.random() < 0.05:   # a depthwise layer, drawn from its own stream
            main, self.rng = self.rng, self.depthwise_rng
            try:
                self.conv_medium(dtype, depthwise=True)
            finally:
                self.rng = main
        if self.rng.random() < 0.05:     # now and then one large enough for the GEMM kernels
            return self.conv_medium(dtype)
        groups = self._int(1, 3)
        c, o = groups * self._int(1, 2), groups * self._int(1, 2)
        kernel = (self._int(1, 4), self._int(1, 4))
        x = self._array(self._input_shape(c), dtype)
        w = self._array((o, c // groups) + kernel, dtype)
        b = self._array((o,), dtype) if self.rng.random() < 0.5 else None
        padding = (["same", "valid"][self._int(0, 1)] if self.rng.random() < 0.2
                   else self._pair(0, 2, hostile=(-1, (0, -2))))
        geometry = dict(stride=self._pair(1, 3, hostile=(0, (1, -1))), padding=padding,
                        dilation=self._pair(1, 2, hostile=(0,)), groups=groups)
        y = self.run("conv2d", x, w, b, **geometry)
        if y is not None:
            gy = self._array(y.shape, dtype)
            self.run("conv2d_backward", gy, x, w, **geometry, output_mask=self._mask())

    def conv_medium(self, dtype, depthwise=False):
        """Enough channels and pixels for the GEMM-class algorithms: 3x3 stride-1 layers with
        >= 16 channels (Winograd), 1x1 (im2col), strided (col2im), a few output channels
        (padded grids, dot kernel); depthwise layers (groups == channels, 1-2 output channels
        per group) with ``depthwise``."""
        groups = self._int(1, 2)
        kind = self._int(0, 3)
        c = groups * (16 + self._int(0, 8) if kind == 0 else self._int(1, 12))
        o = groups * (16 + self._int(0, 8) if kind == 0 else self._int(1, 20))
        if depthwise:
            groups = c = self._int(8, 40)
            o = c * self._int(1, 2)
        kernel = {0: (3, 3), 1: (1, 1)}.get(kind, (self._int(1, 5), self._int(1, 5)))
        x = self._array(self._input_shape(c, low=6, high=18), dtype)
        w = self._array((o, c // groups) + kernel, dtype)
        b = self._array((o,), dtype) if self.rng.random() < 0.5 else None
        geometry = dict(stride=1 if kind < 2 else self._pair(1, 3), padding=self._pair(0, 2),
                        dilation=1 if kind < 2 else self._pair(1, 2), groups=groups)
        y = self.run("conv2d", x, w, b, **geometry)
        if y is not None:
            gy = self._array(y.shape, dtype)
            self.run("conv2d_backward", gy, x, w, **geometry, output_mask=self._mask())

    def conv_transpose(self, dtype):
        groups = self._int(1, 2)
        c_in, c_out = groups * self._int(1, 2), groups * self._int(1, 2)
        kernel = (self._int(1, 4), self._int(1, 4))
        x = self._array(self._input_shape(c_in, high=6), dtype)
        w = self._array((c_in, c_out // groups) + kernel, dtype)
        b = self._array((c_out,), dtype) if self.rng.random() < 0.5 else None
        geometry = dict(stride=self._pair(1, 3, hostile=(0,)), padding=self._pair(0, 2, hostile=(-1,)),
                        output_padding=self._pair(0, 2), groups=groups, dilation=self._pair(1, 2))
        y = self.run("conv_transpose2d", x, w, b, **geometry)
        if y is not None:
            gy = self._array(y.shape, dtype)
            self.run("conv_transpose2d_backward", gy, x, w, **geometry, output_mask=self._mask())

    def max_pool(self, dtype):
        x = self._array(self._input_shape(self._int(1, 3)), dtype)
        geometry = dict(kernel_size=self._pair(1, 4, hostile=(0,)),
                        stride=None if self.rng.random() < 0.3 else self._pair(1, 3, hostile=(0,)),
                        padding=self._pair(0, 2, hostile=(-1,)), dilation=self._pair(1, 2),
                        ceil_mode=bool(self.rng.random() < 0.5))
        result = self.run("max_pool2d", x, **geometry, return_indices=True)
        if result is not None:
            out, indices = result
            gy = self._array(out.shape, dtype)
            self.run("max_pool2d_backward", gy, indices, x.shape)

    def avg_pool(self, dtype):
        x = self._array(self._input_shape(self._int(1, 3)), dtype)
        divisor = None if self.rng.random() < 0.7 else self._int(-2, 5)
        geometry = dict(kernel_size=self._pair(1, 4, hostile=(0,)),
                        stride=None if self.rng.random() < 0.3 else self._pair(1, 3, hostile=(0,)),
                        padding=self._pair(0, 2, hostile=(-1,)), ceil_mode=bool(self.rng.random() < 0.5),
                        count_include_pad=bool(self.rng.random() < 0.5), divisor_override=divisor)
        y = self.run("avg_pool2d", x, **geometry)
        if y is not None:
            gy = self._array(y.shape, dtype)
            self.run("avg_pool2d_backward", gy, x.shape, **geometry)

    def fuzz(self, calls):
        """Draw until the backend under test has run ``calls`` op calls."""
        families = (self.conv, self.conv_transpose, self.max_pool, self.avg_pool)
        dtypes = (np.float32, np.float64)
        with np.errstate(all="ignore"):  # NaN/Inf inputs are drawn on purpose
            while sum(self.calls.values()) < calls:
                self.draw += 1
                families[self._int(0, len(families) - 1)](dtypes[self._int(0, 1)])
        return self


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="op calls to make (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--backend", default="cython", help="backend under test (default cython)")
    parser.add_argument("--finite", action="store_true", help="never draw NaN or Inf into the arrays")
    args = parser.parse_args(argv)
    if args.backend not in cconv.available_backends():
        print(f"fuzz: backend {args.backend!r} is not available here ({cconv.available_backends()}); "
              f"{cconv.backend_info().get('compiled_import_error') or ''}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    fuzzer = Fuzzer(args.backend, args.seed, special_values=not args.finite).fuzz(args.calls)
    seconds = time.perf_counter() - start
    for line in fuzzer.mismatches[:SHOW_MISMATCHES]:
        print("MISMATCH", line)
    per_op = ", ".join(f"{op} {n}" for op, n in sorted(fuzzer.calls.items()))
    print(f"fuzz: {sum(fuzzer.calls.values())} calls on {args.backend} vs {REFERENCE} ({per_op}); "
          f"{fuzzer.rejected} argument sets rejected by both; {len(fuzzer.mismatches)} mismatches; "
          f"seed {args.seed}; {seconds:.1f} s")
    unused = _algorithm_line(args.backend) if args.backend == "cython" else []
    if unused:
        print(f"fuzz: FAIL: these algorithms never ran: {', '.join(unused)}")
    return 1 if fuzzer.mismatches or unused else 0


def _algorithm_line(backend):
    """Print how many passes each convolution algorithm ran; return those that never ran
    (of the ones this CPU can run)."""
    from cconv import _compiled
    info = cconv.backend_info()
    counts = collections.Counter()
    for (algo, _), n in _compiled._conv.algorithm_counts().items():
        counts[algo] += n
    runnable = [a for a in info["conv_algorithms"]
                if not (a == "lanes" and not info["channels_in_lanes"])
                and not (a == "dot" and info["simd"] == "generic")]
    skipped = [a for a in info["conv_algorithms"] if a not in runnable]
    note = f" (not on this CPU: {', '.join(skipped)})" if skipped else ""
    print("calls per algorithm: " + " ".join(f"{a}={counts[a]}" for a in runnable) + note)
    return [a for a in runnable if counts[a] == 0]


if __name__ == "__main__":
    sys.exit(main())
