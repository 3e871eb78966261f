"""Randomized differential fuzz: every public cconv op on a backend under test (the compiled
``"cython"`` one by default) against the NumPy reference, on tiny random shapes and geometries.
The 2-d ops are compared with the ``"numpy"`` backend; the 1-d/3-d and adaptive ops (which run
on the 2-d ones) with the direct N-d reference, cconv._reference_nd, while their rejections must
match the ``"numpy"`` backend's.

For each drawn argument set, both backends must either both reject it (same exception type) or
both return results that agree by cconv's one comparison rule (cconv._compare.agreement: exactly
for max-pool indices; for floats NaN and Inf in exactly the same places and a relative error norm
within 1e-5 for float32, 1e-12 for float64; a float32 result outside it still agrees when it is
at least as close to the reference's float64 result as the float32 reference is, as happens to
sums of a few dozen values that nearly cancel). The backend under test must also leave every
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
import contextlib
import sys
import time

import numpy as np

import cconv
from cconv import _reference_nd as _nd
from cconv._compare import agreement

REFERENCE = "numpy"
SHOW_MISMATCHES = 5
ND_SHARE = 0.4  # of the draws: 1-d/3-d and adaptive ops (the rest: the 2-d ops)


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
        # dead-tap layers draw from their own stream: the other families' draws stay as they were
        self.dead_tap_rng = np.random.default_rng([seed, 1])
        self.rng_few = np.random.default_rng([seed, 2])   # conv_few_pixels' own stream
        # depthwise layers come from a stream of their own: every other draw stays as it was
        self.depthwise_rng = np.random.default_rng([seed, 3])
        # conv3d with >= 4 channels per group (the volume algorithm): a stream of its own too
        self.volume_rng = np.random.default_rng([seed, 4])
        # 1x1 layers with few channels on maps of many pixels (the dot kernel in place)
        self.pointwise_rng = np.random.default_rng([seed, 5])
        # 1x1 layers with channels enough for the GEMM (the forward reading x in place)
        self.pointwise_gemm_rng = np.random.default_rng([seed, 6])
        # conv1d with 65-150 output channels per group (channels in lanes on one output row)
        self.row_lanes_rng = np.random.default_rng([seed, 7])
        # dilated layers on small maps with channels enough for the bands algorithm
        self.dilated_rng = np.random.default_rng([seed, 8])
        # conv3d with kernel == stride and no padding (the backward on its non-overlapping patches)
        self.patches_rng = np.random.default_rng([seed, 9])
        self.calls = collections.Counter()      # op -> calls that reached the backend under test
        self.rejected = 0                       # argument sets both backends refused
        self.rows_in_place = 0                  # conv3d forwards planned with output rows written in place
        self.patch_backwards = 0                # conv3d backwards planned on kernel == stride patches
        # the GEMM tile's width per dtype (the compiled backend's, on this CPU): output rows of
        # that many columns are whole panels
        self.tile_width = ({name: nr for name, (_, nr) in cconv.backend_info()["gemm_tile"].items()}
                           if backend == "cython" else {"float32": 16, "float64": 16})
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

    def _compare(self, op, ref, out, inputs, detail, exact=None):
        """``exact``: None, or a function giving the reference's result computed in float64 (see
        :func:`_no_less_accurate`)."""
        if isinstance(ref, tuple):
            if not isinstance(out, tuple) or len(out) != len(ref):
                return self._mismatch(op, f"returned {type(out).__name__}, reference a tuple", detail)
            for i, (r, o) in enumerate(zip(ref, out)):
                self._compare(f"{op}[{i}]", r, o, inputs, detail, None if exact is None else lambda i=i: exact()[i])
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
        if problem is not None and problem.startswith("relative error") and exact is not None \
                and _no_less_accurate(out, ref, exact()):
            problem = None
        if problem is not None:
            self._mismatch(op, problem, detail)

    @contextlib.contextmanager
    def _drawing_from(self, stream):
        """Draw from ``stream`` instead of the main generator inside the block: a family drawn on
        a schedule of its own leaves every other family's draws as they were."""
        main, self.rng = self.rng, stream
        try:
            yield
        finally:
            self.rng = main

    def _mismatch(self, op, what, detail):
        self.mismatches.append(f"seed {self.seed} draw {self.draw}: {op} on {self.backend}: {what}; {detail}")

    def _call_under_test(self, op, fn, args, kwargs, arrays, detail, reference_error, reference):
        """Call ``fn`` on the backend under test: (False, None) if it rejected the arguments (a
        mismatch unless ``reference_error()``, the reference's exception, is of the same
        ValueError/TypeError type), else (True, its result), its input arrays checked untouched."""
        snapshots = [a.copy() for a in arrays]
        out, error = _call(fn, args, kwargs, self.backend)
        if error is not None:
            ref_error = reference_error()
            if not isinstance(error, (ValueError, TypeError)):
                self._mismatch(op, f"raised {error!r}", detail)
            elif ref_error is None:
                self._mismatch(op, f"raised {error!r}, {reference} did not", detail)
            elif type(error) is not type(ref_error):
                self._mismatch(op, f"raised {type(error).__name__}, {reference} "
                                   f"{type(ref_error).__name__}", detail)
            else:
                self.rejected += 1
            return False, None
        self.calls[op] += 1
        for a, before in zip(arrays, snapshots):
            if not np.array_equal(a, before, equal_nan=True):
                self._mismatch(op, "modified an input array", detail)
        return True, out

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
        accepted, out = self._call_under_test(op, fn, args, kwargs, arrays, detail,
                                              lambda: ref_error, "the reference")
        if not accepted:
            return None
        if ref_error is not None:
            self._mismatch(op, f"accepted arguments the reference rejects ({ref_error})", detail)
            return None
        self._compare(op, ref, out, arrays, detail,
                      _once(lambda: fn(*(_widen(a) for a in args), backend=REFERENCE, **kwargs)))
        return ref

    # ---- one draw per op family -------------------------------------------------------------

    def _mask(self):
        return tuple(bool(b) for b in self.rng.random(3) < 0.7)

    def conv(self, dtype):
        if self.depthwise_rng.random() < 0.05:   # a depthwise layer, drawn from its own stream
            with self._drawing_from(self.depthwise_rng):
                self.conv_medium(dtype, depthwise=True)
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

    def conv_dead_taps(self, dtype):
        """A 1-3 pixel map under a kernel of up to 7x7 and padding up to its extent: kernel taps
        that read only the zero padding (the compiled planner crops them), sometimes with
        channels enough for the GEMM kernels.  Drawn from dead_tap_rng."""
        with self._drawing_from(self.dead_tap_rng):
            self._conv_dead_taps(dtype)

    def _conv_dead_taps(self, dtype):
        groups = self._int(1, 2)
        wide = self.rng.random() < 0.3
        c = groups * (self._int(4, 12) if wide else self._int(1, 3))
        o = groups * (self._int(4, 12) if wide else self._int(1, 3))
        kh, kw = self._int(1, 7), self._int(1, 7)
        dh, dw = self._int(1, 2), self._int(1, 2)
        x = self._array(self._input_shape(c, low=1, high=3), dtype)
        w = self._array((o, c // groups, kh, kw), dtype)
        b = self._array((o,), dtype) if self.rng.random() < 0.5 else None
        if self.rng.random() < 0.2:
            geometry = dict(stride=1, padding="same")
        else:
            geometry = dict(stride=self._pair(1, 3),
                            padding=(self._int(0, dh * (kh - 1) + 1), self._int(0, dw * (kw - 1) + 1)))
        geometry.update(dilation=(dh, dw), groups=groups)
        y = self.run("conv2d", x, w, b, **geometry)
        if y is not None:
            gy = self._array(y.shape, dtype)
            # no bias gradient: it does not see the kernel, and a float32 sum of a few
            # cancelling values can differ from the reference's by more than 1e-5 relative
            need_input, need_weight, _ = self._mask()
            self.run("conv2d_backward", gy, x, w, **geometry, output_mask=(need_input, need_weight, False))

    def conv_dilated(self, dtype):
        """A dilated layer (dilation 2-9, padding up to the kernel's extent, 'same' with even
        kernels now and then) on a map of 4-15 pixels a side with 12-40 channels, batch 1-6:
        most taps of most pixels read the padding (the bands algorithm, when the planner
        finds it pays).  Drawn from dilated_rng."""
        with self._drawing_from(self.dilated_rng):
            groups = self._int(1, 2)
            c, o = groups * self._int(12, 32), groups * self._int(12, 40)
            kh, kw = self._int(2, 5), self._int(2, 5)
            dh, dw = self._int(2, 9), self._int(2, 9)
            x = self._array((self._int(1, 6), c, self._int(4, 15), self._int(4, 15)), dtype)
            w = self._array((o, c // groups, kh, kw), dtype)
            b = self._array((o,), dtype) if self.rng.random() < 0.5 else None
            if self.rng.random() < 0.2:
                geometry = dict(stride=1, padding="same")
            else:
                geometry = dict(stride=(1, 1) if self.rng.random() < 0.5 else self._pair(1, 2),
                                padding=(self._int(dh * (kh - 1) // 2, dh * (kh - 1)),
                                         self._int(dw * (kw - 1) // 2, dw * (kw - 1))))
            geometry.update(dilation=(dh, dw), groups=groups)
            y = self.run("conv2d", x, w, b, **geometry)
            if y is not None:
                gy = self._array(y.shape, dtype)
                need_input, need_weight, _ = self._mask()
                self.run("conv2d_backward", gy, x, w, **geometry,
                         output_mask=(need_input, need_weight, False))

    def conv_pointwise(self, dtype):
        """A 1x1 stride-1 layer with 1-8 channels on one side, 1-40 on the other, on a map of
        10-60 pixels a side, some grouped: the weight gradient's dot kernel in place (vector
        chunks and a scalar tail per image).  Drawn from pointwise_rng."""
        with self._drawing_from(self.pointwise_rng):
            groups = self._int(1, 2)
            few, other = self._int(1, 8), self._int(1, 40)
            c, o = (few, other) if self.rng.random() < 0.5 else (other, few)
            c, o = groups * c, groups * o
            x = self._array(self._input_shape(c, low=10, high=60), dtype)
            w = self._array((o, c // groups, 1, 1), dtype)
            y = self.run("conv2d", x, w, None, groups=groups)
            if y is not None:
                gy = self._array(y.shape, dtype)
                self.run("conv2d_backward", gy, x, w, groups=groups, output_mask=self._mask())

    def conv_pointwise_gemm(self, dtype):
        """A 1x1 stride-1 layer with 4-60 channels per group on both sides, batch 1-3, on a
        map of 4-24 pixels a side, some grouped: the forward and input gradient GEMM reading
        its B operand in place (short last panels, row blocks).  Drawn from
        pointwise_gemm_rng."""
        with self._drawing_from(self.pointwise_gemm_rng):
            groups = self._int(1, 2)
            c, o = groups * self._int(4, 60), groups * self._int(4, 60)
            x = self._array(self._input_shape(c, low=4, high=24), dtype)
            w = self._array((o, c // groups, 1, 1), dtype)
            b = self._array((o,), dtype) if self.rng.random() < 0.5 else None
            y = self.run("conv2d", x, w, b, groups=groups)
            if y is not None:
                gy = self._array(y.shape, dtype)
                self.run("conv2d_backward", gy, x, w, groups=groups, output_mask=self._mask())

    def conv1d_row_lanes(self, dtype):
        """A conv1d layer with 65-150 output channels per group, 2-8 input channels, batch 2-3,
        rows of 40-200, kernel 2-5, stride 1-4, dilation 1-3: a forward of one output row with
        lanes-filling channels on >= 2 slices (on AVX-512 float32 the planner runs channels in
        lanes there), and its gradients.  Drawn from row_lanes_rng."""
        with self._drawing_from(self.row_lanes_rng):
            groups = self._int(1, 2)
            c, o, k = groups * self._int(2, 8), groups * self._int(65, 150), self._int(2, 5)
            geometry = dict(stride=self._int(1, 4), padding=self._int(0, 2), dilation=self._int(1, 3),
                            groups=groups)
            span = geometry["dilation"] * (k - 1) + 1
            x = self._array((self._int(2, 3), c, self._int(max(40, span), 200)), dtype)
            w = self._array((o, c // groups, k), dtype)
            b = self._array((o,), dtype) if self.rng.random() < 0.5 else None

            def args():
                stride, dilation = (geometry["stride"],), (geometry["dilation"],)
                return stride, ((geometry["padding"],) * 2,), dilation, groups

            y = self.run_nd("conv1d", lambda cv: _reference(_nd.conv, 1, cv(x), cv(w), cv(b), *args()),
                            x, w, b, **geometry)
            if y is not None:
                gy, mask = self._array(y.shape, dtype), self._mask()
                self.run_nd("conv1d_backward",
                            lambda cv: _masked(_reference(_nd.conv_backward, 1, cv(gy), cv(x), cv(w), *args(),
                                                          batched=2, batched_results=1), mask),
                            gy, x, w, **geometry, output_mask=mask)

    def conv_few_pixels(self, dtype):
        """Output maps of 1x1-3x3 at batch 1-3 with 24-90 channels per group: the rows
        algorithm's passes (weights read in place).  Drawn from a stream of its own, so the
        other families draw what they drew before it existed."""
        with self._drawing_from(self.rng_few):
            self._conv_few_pixels(dtype)

    def _conv_few_pixels(self, dtype):
        groups = self._int(1, 2)
        c, o = groups * self._int(24, 90), groups * self._int(24, 90)
        kernel = (self._int(1, 3), self._int(1, 3))
        stride, dilation, padding = ((self._int(low, high), self._int(low, high))
                                     for low, high in ((1, 2), (1, 2), (0, 1)))
        h, w = ((self._int(1, 3) - 1) * s + d * (k - 1) + 1 - 2 * p
                for s, d, k, p in zip(stride, dilation, kernel, padding))
        x = self._array((self._int(1, 3), c, max(1, h), max(1, w)), dtype)
        wt = self._array((o, c // groups) + kernel, dtype)
        b = self._array((o,), dtype) if self.rng.random() < 0.5 else None
        geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        y = self.run("conv2d", x, wt, b, **geometry)
        if y is not None:
            gy = self._array(y.shape, dtype)
            self.run("conv2d_backward", gy, x, wt, **geometry, output_mask=self._mask())

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

    # ---- N-d ops (1-d, 3-d, adaptive) against cconv._reference_nd ------------------------------
    # The public 1-d/3-d/adaptive ops run on the 2-d ones, so on the numpy backend they would share
    # their own plumbing with the backend under test: their results are compared with the direct
    # N-d reference instead (written from the definitions). A rejection must still be the numpy
    # backend's (same exception type).

    def run_nd(self, op, oracle, *args, **kwargs):
        """Call ``cconv.<op>`` on the backend under test; if it accepts the arguments, compare its
        result with ``oracle(cast)``, which computes on ``cast(array)`` for each of its arrays (cast
        is the identity, or :func:`_widen` for the float64 result). Returns the oracle's result, or
        None if the arguments were rejected."""
        fn = getattr(cconv, op)
        arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
        detail = ", ".join([f"{a.dtype}{a.shape}" if isinstance(a, np.ndarray) else repr(a) for a in args]
                           + [f"{k}={v!r}" for k, v in kwargs.items()])
        accepted, out = self._call_under_test(op, fn, args, kwargs, arrays, detail,
                                              lambda: _call(fn, args, kwargs, REFERENCE)[1],
                                              f"the {REFERENCE} backend")
        if not accepted:
            return None
        try:
            ref = oracle(_same)
        except Exception as exc:  # noqa: BLE001 - arguments the definitions give no result for
            self._mismatch(op, f"accepted arguments the N-d reference cannot compute ({exc!r})", detail)
            return None
        self._compare(op, ref, out, arrays, detail, _once(lambda: oracle(_widen)))
        return ref

    def _nd_arg(self, low, high, dims, hostile=()):
        """An int, a tuple of ``dims`` ints or a 1-tuple (broadcast) in [low, high]; now and then a
        hostile value instead (and a tuple of the wrong length is always among those)."""
        if self.rng.random() < 0.03:
            choices = (*hostile, (low,) * (dims + 1))
            return choices[self._int(0, len(choices) - 1)]
        form = self.rng.random()
        if form < 0.5:
            return self._int(low, high)
        return (self._int(low, high),) if form < 0.6 else tuple(self._int(low, high) for _ in range(dims))

    def _nd_shape(self, channels, dims, high):
        """(N, C, *spatial), N sometimes 0, or unbatched (C, *spatial); sizes in [1, high]."""
        spatial = tuple(self._int(1, high) for _ in range(dims))
        if self.rng.random() < 0.2:
            return (channels,) + spatial
        return (0 if self.rng.random() < 0.03 else self._int(1, 3), channels) + spatial

    def conv_nd(self, dtype, wide=False, patches=False):
        if not wide and not patches and self.volume_rng.random() < 0.1:
            with self._drawing_from(self.volume_rng):
                self.conv_nd(dtype, wide=True)
        if not wide and not patches and self.patches_rng.random() < 0.1:
            with self._drawing_from(self.patches_rng):
                self.conv_nd(dtype, patches=True)
        if patches:
            return self.conv_patches(dtype)
        dims = 3 if wide else (1, 3)[self._int(0, 1)]
        groups = self._int(1, 2)
        c, o = (groups * 4, groups * 4) if wide else (groups * self._int(1, 2), groups * self._int(1, 2))
        kernel = tuple(self._int(1, 3) for _ in range(dims))
        # volume conv3d with nr-wide output rows (a width-3 stride-2 kernel over 2nr-1 or 2nr
        # columns, nr the tile width of this CPU): rows of whole micro-kernel panels, which
        # the volume forward writes in place
        wide_rows = wide and self.rng.random() < 0.3
        if wide_rows:
            kernel = kernel[:2] + (3,)
        shape = self._nd_shape(c, dims, 12 if dims == 1 else 5)
        if wide_rows:
            nr = self.tile_width[np.dtype(dtype).name]
            shape = shape[:-1] + (self._int(2 * nr - 1, 2 * nr),)
        x = self._array(shape, dtype)
        w = self._array((o, c // groups) + kernel, dtype)
        b = self._array((o,), dtype) if self.rng.random() < 0.5 else None
        padding = (["same", "valid"][self._int(0, 1)] if self.rng.random() < 0.2
                   else self._nd_arg(0, 2, dims, hostile=(-1,)))
        geometry = dict(stride=self._nd_arg(1, 3, dims, hostile=(0,)), padding=padding,
                        dilation=self._nd_arg(1, 2, dims, hostile=(0,)), groups=groups)
        if wide_rows:
            geometry.update(stride=(self._int(1, 2), self._int(1, 2), 2), padding=(self._int(0, 1), 1, 1),
                            dilation=(self._int(1, 2), 1, 1))
            padding = geometry["padding"]
            if self.backend == "cython" and min(shape) > 0:
                try:
                    plan = cconv.explain("conv3d", x, w, b, **geometry).get("forward", {})
                except ValueError:  # a kernel larger than the padded input: the call is refused too
                    plan = {}
                self.rows_in_place += plan.get("output_rows", "").endswith("in place")

        def args():  # the reference's arguments (the backend under test accepted the public ones)
            stride, dilation = _per_dim(geometry["stride"], dims), _per_dim(geometry["dilation"], dims)
            return stride, _conv_pads(padding, kernel, dilation, dims), dilation, groups

        y = self.run_nd(f"conv{dims}d", lambda c: _reference(_nd.conv, dims, c(x), c(w), c(b), *args()), x, w, b, **geometry)
        if y is not None:
            gy, mask = self._array(y.shape, dtype), self._mask()
            self.run_nd(f"conv{dims}d_backward",
                        lambda c: _masked(_reference(_nd.conv_backward, dims, c(gy), c(x), c(w), *args(), batched=2,
                                                      batched_results=1), mask),
                        gy, x, w, **geometry, output_mask=mask)

    def conv_patches(self, dtype):
        """conv3d with kernel == stride and no padding: the backward runs on the non-overlapping
        patches (a 1x1 conv2d), edge remainders and all."""
        groups = self._int(1, 2)
        c, o = groups * self._int(1, 3), groups * self._int(1, 3)
        kernel = tuple(self._int(1, 3) for _ in range(3))
        shape = self._nd_shape(c, 3, 7)
        x = self._array(shape, dtype)
        w = self._array((o, c // groups) + kernel, dtype)
        b = self._array((o,), dtype) if self.rng.random() < 0.5 else None
        geometry = dict(stride=kernel, padding="valid" if self.rng.random() < 0.2 else 0,
                        dilation=tuple(1 if k > 1 else self._int(1, 2) for k in kernel), groups=groups)

        def args():
            return kernel, _conv_pads(0, kernel, geometry["dilation"], 3), geometry["dilation"], groups

        y = self.run_nd("conv3d", lambda c: _reference(_nd.conv, 3, c(x), c(w), c(b), *args()), x, w, b, **geometry)
        if y is not None:
            gy, mask = self._array(y.shape, dtype), self._mask()
            if self.backend == "cython":
                plan = cconv.explain("conv3d_backward", gy, x, w, **geometry, output_mask=mask)
                self.patch_backwards += any("patches" in e.get("runs_as", "") for e in plan.values())
            self.run_nd("conv3d_backward",
                        lambda c: _masked(_reference(_nd.conv_backward, 3, c(gy), c(x), c(w), *args(), batched=2,
                                                      batched_results=1), mask),
                        gy, x, w, **geometry, output_mask=mask)

    def conv_transpose_nd(self, dtype):
        dims = (1, 3)[self._int(0, 1)]
        groups = self._int(1, 2)
        c_in, c_out = groups * self._int(1, 2), groups * self._int(1, 2)
        kernel = tuple(self._int(1, 3) for _ in range(dims))
        x = self._array(self._nd_shape(c_in, dims, 8 if dims == 1 else 4), dtype)
        w = self._array((c_in, c_out // groups) + kernel, dtype)
        b = self._array((c_out,), dtype) if self.rng.random() < 0.5 else None
        geometry = dict(stride=self._nd_arg(1, 3, dims, hostile=(0,)), padding=self._nd_arg(0, 2, dims, hostile=(-1,)),
                        output_padding=self._nd_arg(0, 2, dims), groups=groups, dilation=self._nd_arg(1, 2, dims))

        def args():
            stride, padding, output_padding, dilation = (
                _per_dim(geometry[k], dims) for k in ("stride", "padding", "output_padding", "dilation"))
            return stride, padding, output_padding, dilation, groups

        y = self.run_nd(f"conv_transpose{dims}d", lambda c: _reference(_nd.conv_transpose, dims, c(x), c(w), c(b),
                                                                     *args()),
                        x, w, b, **geometry)
        if y is not None:
            gy, mask = self._array(y.shape, dtype), self._mask()
            self.run_nd(f"conv_transpose{dims}d_backward",
                        lambda c: _masked(_reference(_nd.conv_transpose_backward, dims, c(gy), c(x), c(w), *args(),
                                                   batched=2, batched_results=1),
                                        mask),
                        gy, x, w, **geometry, output_mask=mask)

    def _pool_geometry(self, dims):
        kernel = self._nd_arg(1, 3, dims, hostile=(0,))
        return dict(kernel_size=kernel, stride=None if self.rng.random() < 0.3 else self._nd_arg(1, 3, dims, hostile=(0,)),
                    padding=self._nd_arg(0, 2, dims, hostile=(-1,)), ceil_mode=bool(self.rng.random() < 0.5))

    def max_pool_nd(self, dtype):
        dims = (1, 3)[self._int(0, 1)]
        x = self._array(self._nd_shape(self._int(1, 2), dims, 10 if dims == 1 else 5), dtype)
        geometry = dict(self._pool_geometry(dims), dilation=self._nd_arg(1, 2, dims))

        def oracle(c):
            kernel, stride, padding, dilation = _pool_args(geometry, dims)
            return _reference(_nd.max_pool, dims, c(x), kernel, stride, padding, dilation, geometry["ceil_mode"])

        result = self.run_nd(f"max_pool{dims}d", oracle, x, **geometry, return_indices=True)
        if result is not None:
            self._max_backward_nd(f"max_pool{dims}d_backward", result, x, dims, dtype)

    def _max_backward_nd(self, op, forward, x, dims, dtype):
        out, indices = forward
        gy = self._array(out.shape, dtype)
        unbatched = x.ndim == dims + 1
        shape = (1,) * unbatched + x.shape

        def oracle(c):
            if shape[0] == 0:  # an empty batch: the reference's flat reshape needs rows
                return np.zeros(x.shape, c(gy).dtype)
            return _drop(_nd.max_pool_backward(_lift(c(gy), unbatched), _lift(indices, unbatched), shape), unbatched)

        self.run_nd(op, oracle, gy, indices, x.shape)

    def avg_pool_nd(self, dtype):
        dims = (1, 3)[self._int(0, 1)]
        x = self._array(self._nd_shape(self._int(1, 2), dims, 10 if dims == 1 else 5), dtype)
        geometry = dict(self._pool_geometry(dims), count_include_pad=bool(self.rng.random() < 0.5))
        if dims == 3:  # avg_pool1d has no divisor_override, as in PyTorch
            geometry["divisor_override"] = None if self.rng.random() < 0.7 else self._int(-2, 5)

        def args():
            kernel, stride, padding, _ = _pool_args(dict(geometry, dilation=1), dims)
            return (kernel, stride, padding, geometry["ceil_mode"], geometry["count_include_pad"],
                    geometry.get("divisor_override"))

        y = self.run_nd(f"avg_pool{dims}d", lambda c: _reference(_nd.avg_pool, dims, c(x), *args()), x, **geometry)
        if y is not None:
            gy = self._array(y.shape, dtype)
            unbatched = x.ndim == dims + 1
            shape = (1,) * unbatched + x.shape
            self.run_nd(f"avg_pool{dims}d_backward",
                        lambda c: _drop(_nd.avg_pool_backward(_lift(c(gy), unbatched), shape, *args()), unbatched),
                        gy, x.shape, **geometry)

    def adaptive_pool(self, dtype):
        dims = self._int(1, 3)
        kind = ("avg", "max")[self._int(0, 1)]
        x = self._array(self._nd_shape(self._int(1, 2), dims, (12, 8, 5)[dims - 1]), dtype)
        if self.rng.random() < 0.03:
            output_size = (0, -1, (2,) * (dims + 1))[self._int(0, 2)]
        elif self.rng.random() < 0.4:
            output_size = self._int(1, 7)
        else:
            output_size = tuple(None if self.rng.random() < 0.2 else self._int(1, 7) for _ in range(dims))
        unbatched = x.ndim == dims + 1
        op = f"adaptive_{kind}_pool{dims}d"

        def oracle(c):
            sizes = tuple(n if s is None else s for s, n in zip(_per_dim(output_size, dims), x.shape[-dims:]))
            return _reference(_nd.adaptive_avg_pool if kind == "avg" else _nd.adaptive_max_pool, dims, c(x), sizes)

        if kind == "max":
            result = self.run_nd(op, oracle, x, output_size, return_indices=True)
            if result is not None:
                self._max_backward_nd(f"{op}_backward", result, x, dims, dtype)
            return
        y = self.run_nd(op, oracle, x, output_size)
        if y is not None:
            gy = self._array(y.shape, dtype)
            shape = (1,) * unbatched + x.shape
            self.run_nd(f"{op}_backward", lambda c: _drop(_nd.adaptive_avg_pool_backward(_lift(c(gy), unbatched), shape),
                                                        unbatched),
                        gy, x.shape)

    def fuzz(self, calls):
        """Draw until the backend under test has run ``calls`` op calls: the 2-d families, and the
        N-d ones (1-d/3-d convolutions and pools, adaptive pools) in ``ND_SHARE`` of the draws."""
        families = (self.conv, self.conv_transpose, self.max_pool, self.avg_pool)
        nd_families = (self.conv_nd, self.conv_transpose_nd, self.max_pool_nd, self.avg_pool_nd, self.adaptive_pool)
        dtypes = (np.float32, np.float64)
        with np.errstate(all="ignore"):  # NaN/Inf inputs are drawn on purpose
            while sum(self.calls.values()) < calls:
                self.draw += 1
                drawn = nd_families if self.rng.random() < ND_SHARE else families
                drawn[self._int(0, len(drawn) - 1)](dtypes[self._int(0, 1)])
                if self.draw % 8 == 0:
                    self.conv_dead_taps(dtypes[self.draw // 8 % 2])
                if self.draw % 40 == 0:
                    self.conv_few_pixels(dtypes[self.draw // 40 % 2])
                if self.draw % 200 == 0:
                    self.conv_pointwise(dtypes[self.draw // 200 % 2])
                if self.draw % 100 == 50:
                    self.conv_pointwise_gemm(dtypes[self.draw // 100 % 2])
                if self.draw % 50 == 25:
                    self.conv1d_row_lanes(dtypes[self.draw // 50 % 2])
                if self.draw % 100 == 25:
                    self.conv_dilated(dtypes[self.draw // 100 % 2])
        return self


# ---- the N-d reference's arguments -------------------------------------------------------------

def _per_dim(value, dims):
    """A valid public per-dimension argument (int, 1-tuple or ``dims``-tuple) as ``dims`` values."""
    return tuple(value) * (dims // len(value)) if isinstance(value, tuple) else (value,) * dims


def _conv_pads(padding, kernel, dilation, dims):
    """A conv's padding as (before, after) per dimension; 'same' puts the odd extra one after."""
    if padding == "valid":
        return ((0, 0),) * dims
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _per_dim(padding, dims))


def _pool_args(geometry, dims):
    kernel = _per_dim(geometry["kernel_size"], dims)
    stride = kernel if geometry["stride"] is None else _per_dim(geometry["stride"], dims)
    return kernel, stride, _per_dim(geometry["padding"], dims), _per_dim(geometry["dilation"], dims)


def _lift(a, unbatched):
    return a[np.newaxis] if unbatched else a


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _drop(a, unbatched):
    return a[0] if unbatched else a


def _reference(fn, dims, *args, batched=1, batched_results=None):
    """``fn`` of the N-d reference, which takes batched arrays: its first ``batched`` arguments get
    a batch axis when the forward input (the last of them) is unbatched, and its first
    ``batched_results`` results (all by default) lose it again. An empty batch is computed as one
    sample of zeros (the reference's reshapes need a non-empty batch), then cut to none."""
    unbatched = args[batched - 1].ndim == dims + 1
    arrays = [_lift(a, unbatched) for a in args[:batched]]
    empty = arrays[0].shape[0] == 0
    if empty:
        arrays = [np.zeros((1,) + a.shape[1:], a.dtype) for a in arrays]
    result = fn(*arrays, *args[batched:])
    results = _as_tuple(result)
    count = len(results) if batched_results is None else batched_results
    results = tuple(_drop(r[:0] if empty else r, unbatched) if i < count else r for i, r in enumerate(results))
    return results if isinstance(result, tuple) else results[0]


def _masked(grads, mask):
    return tuple(g if keep else None for g, keep in zip(grads, mask))


def _once(fn):
    """``fn()``, computed at the first call only."""
    results = []

    def once():
        if not results:
            results.append(fn())
        return results[0]
    return once


def _same(a):
    return a


def _widen(a):
    """float32 arrays as float64 (other arguments as they are): the reference's exact result."""
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a


def _no_less_accurate(out, ref, exact):
    """Whether float32 ``out`` is at least as close as the float32 reference ``ref`` to ``exact``
    (the reference in float64; NaN/Inf already agree). A float32 sum with heavy cancellation
    (a grad_bias of a few dozen values adding up to nearly 0) can differ from the reference by
    more than the relative tolerance while being the more accurate of the two."""
    if out.dtype != np.float32 or exact is None:
        return False
    finite = np.isfinite(ref)
    e = np.asarray(exact, np.float64)[finite]
    return bool(np.linalg.norm(out[finite] - e) <= np.linalg.norm(ref[finite] - e))


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
          f"{fuzzer.rows_in_place} conv3d forwards with output rows in place; "
          f"{fuzzer.patch_backwards} conv3d backwards on kernel == stride patches; "
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
    variants = _compiled._conv.dot_variant_counts()
    if "dot" in runnable:   # the dot kernel's variants: with the grid mask, without, in place
        note = (f" (dot: {variants['finite']} finite, {variants['masked']} masked, "
                f"{variants['in_place']} in place){note}")
    pointwise = collections.Counter()
    for (_, variant), n in _compiled._conv.pointwise_variant_counts().items():
        pointwise[variant] += n
    note = (f" (1x1 im2col forward/grad_input: {pointwise['packed']} packed, "
            f"{pointwise['in_place']} in place){note}")
    tiles = _compiled._conv.volume_tile_counts()
    wide_tile = info["simd"] == "avx2"      # the volume's 4 x 3-vector tile exists on AVX2 only
    if "volume" in runnable:
        note = (f" (volume: {tiles['default']} default tile"
                + (f", {tiles['wide']} 4x3-vector tile" if wide_tile else "") + f"){note}")
    print("calls per algorithm: " + " ".join(f"{a}={counts[a]}" for a in runnable) + note)
    unused = [a for a in runnable if counts[a] == 0]
    if wide_tile and counts["volume"] and not tiles["wide"]:
        unused.append("volume (4x3-vector tile)")
    if counts["im2col"] and not pointwise["in_place"]:
        unused.append("im2col (1x1 in place)")
    if "dot" in runnable and counts["dot"]:
        unused += [f"dot ({v})" for v, n in variants.items() if n == 0]
    return unused


if __name__ == "__main__":
    sys.exit(main())
