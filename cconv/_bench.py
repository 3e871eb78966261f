"""The benchmark harness behind ``python -m cconv bench`` and ``benchmarks/run.py``.

One run times every (case, op) of the chosen suites on every chosen backend at each
thread count, measures the machine's single-thread GEMM peak, and prints a table::

    case | op | backend | threads | time | spread | GFLOP/s or GB/s | % of peak | torch/this

How the numbers are made (issue 4: the machine is shared and noisy):

* Each thread count runs in ``--processes`` fresh worker processes (``--in-process``
  runs everything here instead). With several processes the reported time is the
  median of the per-process medians and the spread is their min-max, because OpenMP
  regions on this VM sometimes stall for whole scheduler ticks in one process.
* Within a process every task warms each backend up, calibrates how many calls make
  one sample (at least ``--min-time`` seconds, so microsecond calls are timed in
  loops), then takes ``--repeat`` samples, alternating backends sample by sample so
  that a noisy phase of the machine hits all of them alike.
* Every backend runs through the public API (``cconv.conv2d(..., backend=name)``), so
  all pay the same validation; ``torch-native`` (opt-in) times torch on its own
  tensors, without cconv in between, for reference.
* Conv rates are forward FLOPs ``2*N*O*Ho*Wo*(C/groups)*kh*kw`` (full backward: twice
  that); pool rates are bytes moved (inputs read plus outputs written) per second.
* The peak is the best single-thread ``n x n`` matmul among NumPy as configured, NumPy
  with the OpenBLAS core-type override removed (a fresh process) and ``torch.matmul``;
  ``% peak`` divides a rate by ``threads * peak``.
* Peak extra memory: the largest convolution (by whole-batch im2col size) runs once per
  backend in a fresh process; the resident-set high-water mark over that first call
  (Linux ``VmHWM`` after resetting it, else ``ru_maxrss``) minus the resident set before.

The command-line contract: :func:`add_arguments` fills a parser, :func:`run` takes
the parsed namespace and returns an exit code.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import _api
from . import _backends
from . import _shapes
from . import _bench_networks, _bench_sweep
from ._threads import get_num_threads, set_num_threads

# --------------------------------------------------------------------------
# the suite (issue 4): float32 NCHW, (N, C, H, W, O, k, stride, pad)
# --------------------------------------------------------------------------

CONV_SUITES = {
    "lenet": [(64, 1, 28, 28, 6, 5, 1, 0), (64, 6, 12, 12, 16, 5, 1, 0)],
    "cifar": [(32, 3, 32, 32, 16, 3, 1, 1), (32, 64, 32, 32, 64, 3, 1, 1),
              (32, 128, 16, 16, 128, 3, 1, 1), (32, 256, 8, 8, 256, 3, 1, 1)],
    "imagenet": [(8, 3, 224, 224, 64, 7, 2, 3), (8, 64, 56, 56, 64, 3, 1, 1),
                 (8, 256, 14, 14, 256, 3, 1, 1)],
    "pointwise": [(32, 256, 14, 14, 512, 1, 1, 0)],
    "seed": [(1, 1, 5, 5, 1, 2, 1, 0)],
}
# max_pool2d (kernel, stride, pad) on each input (N, C, H, W)
POOL_WINDOWS = [(2, 2, 0), (3, 2, 1)]
POOL_INPUTS = [(64, 6, 24, 24), (32, 64, 32, 32)]
SUITE_NAMES = list(CONV_SUITES) + ["pool"]
QUICK_SUITES = ["seed", "lenet", "pool"]

# Issue 4's "large shapes": these must reach 80% of the sgemm peak.
LARGE_SHAPES = {(32, 64, 32, 32, 64, 3, 1, 1), (32, 128, 16, 16, 128, 3, 1, 1),
                (32, 256, 8, 8, 256, 3, 1, 1), (8, 64, 56, 56, 64, 3, 1, 1),
                (8, 256, 14, 14, 256, 3, 1, 1), (32, 256, 14, 14, 512, 1, 1, 0)}
SEED_SHAPE = (1, 1, 5, 5, 1, 2, 1, 0)

OPS = ("forward", "backward")
BASELINE = "torch"
NATIVE = "torch-native"  # torch on its own tensors, not a cconv backend


@dataclass(frozen=True)
class Case:
    """One benchmark input: a convolution (``out_channels`` set) or a max pooling."""

    suite: str
    batch: int
    channels: int
    height: int
    width: int
    kernel: int
    stride: int
    pad: int
    out_channels: int | None = None  # None for pooling

    @classmethod
    def conv(cls, suite, shape):
        """The convolution (N, C, H, W, O, k, stride, pad) in the suite's notation."""
        n, c, h, w, o, k, stride, pad = shape
        return cls(suite, n, c, h, w, k, stride, pad, out_channels=o)

    @property
    def kind(self):
        return "pool" if self.out_channels is None else "conv"

    @property
    def input_shape(self):
        return (self.batch, self.channels, self.height, self.width)

    @property
    def conv_tuple(self):
        """(N, C, H, W, O, k, stride, pad), the suite's notation."""
        return (self.batch, self.channels, self.height, self.width, self.out_channels,
                self.kernel, self.stride, self.pad)

    def geometry(self):
        if self.kind == "conv":
            return _shapes.conv_geometry(self.input_shape, (self.out_channels, self.channels, self.kernel, self.kernel),
                                         self.stride, self.pad, 1, 1)
        return _shapes.pool_geometry(self.input_shape, self.kernel, self.stride, self.pad, 1, False)

    @property
    def label(self):
        n, c, h, w = self.input_shape
        if self.kind == "conv":
            return f"{n}x{c}x{h}x{w} o{self.out_channels} k{self.kernel} s{self.stride} p{self.pad}"
        return f"{n}x{c}x{h}x{w} max{self.kernel}/{self.stride} p{self.pad}"

    def im2col_bytes(self, itemsize):
        """Size of an im2col matrix for the whole batch: what issue 4 forbids allocating."""
        g = self.geometry()
        return g.batch * g.in_channels * g.kernel_h * g.kernel_w * g.out_h * g.out_w * itemsize

    def work(self, op, itemsize):
        """(amount, unit) of work in one call: FLOPs for conv, bytes moved for pooling."""
        g = self.geometry()
        if self.kind == "conv":
            return g.flops * (2 if op == "backward" else 1), "flop"
        n_in = g.batch * g.channels * g.in_h * g.in_w
        n_out = g.batch * g.channels * g.out_h * g.out_w
        index_bytes = 8 * n_out  # int64 indices: written forward, read backward
        return (n_in + n_out) * itemsize + index_bytes, "byte"


def suite_cases(names, shapes=()):
    """The cases of the named suites in suite order, then custom conv ``shapes``."""
    cases = []
    for name in SUITE_NAMES:
        if name not in names:
            continue
        if name == "pool":
            cases += [Case("pool", *shape, *window) for shape in POOL_INPUTS for window in POOL_WINDOWS]
        else:
            cases += [Case.conv(name, shape) for shape in CONV_SUITES[name]]
    cases += [Case.conv("custom", shape) for shape in shapes]
    return cases


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

def _comma_list(choices=None, convert=str):
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        try:
            values = [convert(item) for item in items]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if choices is not None:
            unknown = [v for v in values if v not in choices]
            if unknown:
                raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(choices)}")
        return values
    return parse


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError(f"expected an integer >= 1, got {text}")
    return value


def _conv_shape(text):
    """``N,C,H,W,O,k,s,p`` -> a validated tuple of 8 ints."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape takes 8 integers N,C,H,W,O,k,stride,pad, got {text!r}") from None
    if len(values) != 8:
        raise argparse.ArgumentTypeError(f"--shape takes 8 integers N,C,H,W,O,k,stride,pad, got {len(values)}")
    n, c, h, w, o, k, s, p = values
    if min(n, c, h, w, o, k, s) < 1 or p < 0:
        raise argparse.ArgumentTypeError(f"--shape {text}: sizes, kernel and stride must be >= 1, pad >= 0")
    try:
        _shapes.conv_geometry((n, c, h, w), (o, c, k, k), s, p, 1, 1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--shape {text}: {exc}") from None
    return values


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise ValueError(f"expected a number >= 0, got {text}")
    return value


def add_arguments(parser):
    """Add the harness's options to ``parser`` (an ``argparse.ArgumentParser``)."""
    parser.add_argument("--suite", type=_comma_list(SUITE_NAMES), metavar="NAMES",
                        help=f"comma-separated subset of {','.join(SUITE_NAMES)} (default: all; with "
                             f"--quick: {','.join(QUICK_SUITES)}; with --shape: none)")
    parser.add_argument("--shape", type=_conv_shape, action="append", default=[], metavar="N,C,H,W,O,k,s,p",
                        help="a custom float NCHW convolution (square kernel); repeatable")
    parser.add_argument("--ops", type=_comma_list(OPS), default=list(OPS), metavar="OPS",
                        help="forward,backward (default: both; pool cases time forward with indices and backward)")
    parser.add_argument("--backends", type=_comma_list(), metavar="NAMES",
                        help="comma-separated backends, from cython, numpy, torch and torch-native (torch on "
                             "its own tensors, bypassing cconv); default: cython (numpy if not compiled) and "
                             "torch when installed. numpy is slow on the large shapes")
    parser.add_argument("--threads", type=_comma_list(convert=_positive_int), default=[1, 2], metavar="LIST",
                        help="thread counts to run, e.g. 1,2 (default); sets cconv's and torch's thread counts")
    parser.add_argument("--dtype", type=_comma_list(["float32", "float64"]), default=None, metavar="DTYPES",
                        help="float32 (the default; with --torch-model: both), float64 or float32,float64")
    parser.add_argument("--repeat", type=_positive_int, metavar="R", help="timed samples per task (default 7; quick 3)")
    parser.add_argument("--min-time", type=_non_negative_float, metavar="SECONDS",
                        help="shortest sample: fast calls are looped to fill it (default 0.02; quick 0.005)")
    parser.add_argument("--warmup", type=_non_negative_float, metavar="SECONDS",
                        help="warm-up time per backend and task, at least 2 calls (default 0.05; quick 0.01)")
    parser.add_argument("--processes", type=_positive_int, default=1, metavar="P",
                        help="fresh worker processes per thread count; the time is the median of their "
                             "medians and the spread their min-max (default 1)")
    parser.add_argument("--in-process", action="store_true",
                        help="time everything in this process (no fresh processes; skips the memory "
                             "measurement and the OpenBLAS-default peak)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory measurement (measured on Linux only)")
    parser.add_argument("--quick", action="store_true",
                        help="fast smoke run: small suites, few samples, small peak matmul, no memory")
    parser.add_argument("--json", metavar="FILE", help="write every number (and every sample) to FILE")
    parser.add_argument("--markdown", metavar="FILE", help="write the report as a Markdown page to FILE")
    parser.add_argument("--plot", metavar="FILE.png", help="plot the torch/backend time ratio of every task (needs matplotlib)")
    parser.add_argument("--from-json", metavar="FILE",
                        help="do not measure: re-render the table (and --markdown/--plot) from a --json file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    group = parser.add_argument_group(
        "sweeps and networks", "instead of the suite: a seeded random sweep of realistic layers, or whole "
        "networks' conv and pool layers, each against torch in the same run (--threads, --repeat, --json, "
        "--markdown, --plot apply)")
    group.add_argument("--sweep", type=_positive_int, metavar="N",
                       help="time N random layer configurations (forward, grad_input, grad_weight)")
    group.add_argument("--seed", type=int, default=0, help="the sweep's seed (default 0)")
    group.add_argument("--autotune", action="store_true",
                       help="--sweep: also time every pass with cconv.set_autotune(True) (tuning outside the "
                            "timing) and report where the tuned algorithm beats the planner's choice")
    group.add_argument("--networks", type=_comma_list(list(_bench_networks.NETWORKS)), metavar="NAMES",
                       help=f"time a training step and a batch-1 forward of these networks: "
                            f"{','.join(_bench_networks.NETWORKS)}")
    group.add_argument("--batches", type=_comma_list(convert=_positive_int), default=[1, 8, 32], metavar="LIST",
                       help="batch sizes for --networks (default 1,8,32)")


def _settings(args):
    """Fill the defaults that depend on --quick / --shape; returns a plain dict."""
    quick = args.quick
    suites = args.suite
    if suites is None:
        suites = [] if args.shape else (QUICK_SUITES if quick else SUITE_NAMES)
    available = _backends.available_backends()
    backends = args.backends
    if backends is None:
        backends = ["cython" if "cython" in available else "numpy"]
        if BASELINE in available:
            backends.append(BASELINE)
    for name in backends:
        if name == NATIVE:
            if BASELINE not in available:
                raise ValueError("backend 'torch-native' needs torch, which is not installed")
        elif name not in available:
            why = ""
            if name == "cython" and _backends.compiled_import_error:
                why = f" (the compiled extension failed to import: {_backends.compiled_import_error})"
            raise ValueError(f"backend {name!r} is not available here; available: {', '.join(available)}{why}")
    return {
        "suites": list(suites),
        "shapes": [list(s) for s in args.shape],
        "ops": list(args.ops),
        "backends": list(dict.fromkeys(backends)),
        "threads": list(dict.fromkeys(args.threads)),
        "dtypes": list(dict.fromkeys(args.dtype or ["float32"])),
        "repeat": args.repeat or (3 if quick else 7),
        "min_time": args.min_time if args.min_time is not None else (0.005 if quick else 0.02),
        "warmup": args.warmup if args.warmup is not None else (0.01 if quick else 0.05),
        "processes": args.processes,
        "in_process": args.in_process,
        # resident-set accounting is read from Linux's /proc (and ru_maxrss in KiB)
        "memory": not (args.no_memory or args.in_process or quick) and sys.platform.startswith("linux"),
        "peak_size": 512 if quick else 2048,
    }


# --------------------------------------------------------------------------
# timing (runs in the worker processes, or here with --in-process)
# --------------------------------------------------------------------------

def _torch():
    """The torch module, or None when it is not installed."""
    if BASELINE not in _backends.available_backends():
        return None
    import torch
    return torch


@contextlib.contextmanager
def _thread_count(n):
    """Use ``n`` threads in cconv's kernels, torch and the BLAS under NumPy; restore on exit."""
    previous = get_num_threads()
    set_num_threads(n)
    torch = _torch()
    torch_previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        import threadpoolctl
        limit = threadpoolctl.threadpool_limits(n)
    except ImportError:
        limit = None
    try:
        yield
    finally:
        if limit is not None:
            limit.restore_original_limits()
        if torch is not None:
            torch.set_num_threads(torch_previous)
        set_num_threads(previous)


def _task_inputs(case, op, dtype, seed=0):
    """Random inputs for one task, shared by every backend."""
    rng = np.random.default_rng(seed)
    g = case.geometry()
    x = rng.standard_normal(case.input_shape, dtype=dtype)
    if case.kind == "conv":
        w = rng.standard_normal(g.weight_shape, dtype=dtype) / dtype.type(math.sqrt(case.channels * case.kernel ** 2))
        b = rng.standard_normal(case.out_channels, dtype=dtype)
        gy = rng.standard_normal(g.output_shape, dtype=dtype) if op == "backward" else None
        return {"x": x, "w": w, "b": b, "gy": gy}
    inputs = {"x": x}
    if op == "backward":
        _, inputs["indices"] = _api.max_pool2d(x, case.kernel, case.stride, case.pad, return_indices=True,
                                               backend="numpy")
        inputs["gy"] = rng.standard_normal(g.output_shape, dtype=dtype)
    return inputs


def _call(case, op, backend, a):
    """A no-argument callable running the task once on ``backend``."""
    k, s, p = case.kernel, case.stride, case.pad
    if backend == NATIVE:
        return _native_call(case, op, a)
    if case.kind == "conv":
        if op == "forward":
            return lambda: _api.conv2d(a["x"], a["w"], a["b"], s, p, backend=backend)
        return lambda: _api.conv2d_backward(a["gy"], a["x"], a["w"], s, p, backend=backend)
    if op == "forward":
        return lambda: _api.max_pool2d(a["x"], k, s, p, return_indices=True, backend=backend)
    shape = case.input_shape
    return lambda: _api.max_pool2d_backward(a["gy"], a["indices"], shape, backend=backend)


def _native_call(case, op, a):
    """torch's own entry points on torch tensors: the floor for any wrapper around torch."""
    import torch
    import torch.nn.functional as F

    t = {name: None if v is None else torch.from_numpy(v) for name, v in a.items()}
    k, s, p = case.kernel, case.stride, case.pad
    if case.kind == "conv":
        if op == "forward":
            return lambda: F.conv2d(t["x"], t["w"], t["b"], s, p)
        return lambda: torch.ops.aten.convolution_backward(
            t["gy"], t["x"], t["w"], [case.out_channels], [s, s], [p, p], [1, 1], False, [0, 0], 1,
            [True, True, True])
    if op == "forward":
        return lambda: F.max_pool2d(t["x"], k, s, p, return_indices=True)
    return lambda: torch.ops.aten.max_pool2d_with_indices_backward(
        t["gy"], t["x"], [k, k], [s, s], [p, p], [1, 1], False, t["indices"])


def _loop_time(fn, number):
    """Seconds per call over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _calibrate(fn, warmup, min_time):
    """Warm ``fn`` up (>= 2 calls, >= ``warmup`` s); return calls per sample to fill ``min_time``."""
    calls, start, fastest = 0, time.perf_counter(), float("inf")
    while calls < 2 or time.perf_counter() - start < warmup:
        fastest = min(fastest, _loop_time(fn, 1))
        calls += 1
    return max(1, min(1_000_000, math.ceil(min_time / max(fastest, 1e-9))))


def _time_task(case, op, dtype, backends, repeat, warmup, min_time):
    """Samples (seconds per call) and calls per sample for each backend, interleaved."""
    inputs = _task_inputs(case, op, np.dtype(dtype))
    calls = {b: _call(case, op, b, inputs) for b in backends}
    numbers = {b: _calibrate(calls[b], warmup, min_time) for b in backends}
    samples = {b: [] for b in backends}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeat):
            order = backends[r % len(backends):] + backends[:r % len(backends)]
            for b in order:
                samples[b].append(_loop_time(calls[b], numbers[b]))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {b: (samples[b], numbers[b]) for b in backends}


def _tasks(settings):
    cases = suite_cases(settings["suites"], [tuple(s) for s in settings["shapes"]])
    return [(case, op, dtype) for dtype in settings["dtypes"] for case in cases for op in settings["ops"]]


def _time_tasks(settings, threads, process, emit):
    """Time every task at ``threads``; ``emit(record)`` once per (task, backend)."""
    with _thread_count(threads):
        for case, op, dtype in _tasks(settings):
            timed = _time_task(case, op, dtype, settings["backends"], settings["repeat"],
                               settings["warmup"], settings["min_time"])
            for backend, (samples, number) in timed.items():
                emit({"case": asdict(case), "op": op, "dtype": dtype, "backend": backend,
                      "threads": threads, "process": process, "number": number, "samples": samples})


# --------------------------------------------------------------------------
# machine peak and memory
# --------------------------------------------------------------------------

def _blas_kernel():
    """OpenBLAS's kernel name (e.g. 'Haswell', 'SkylakeX') as threadpoolctl reports it, or None."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    for info in threadpoolctl.threadpool_info():
        if info.get("user_api") == "blas" and info.get("filepath", "").find("numpy") >= 0:
            return f"{info.get('internal_api')} {info.get('architecture')}"
    return None


def _best_matmul_gflops(matmul, a, b, repeat=8):
    matmul(a, b)
    best = min(_loop_time(lambda: matmul(a, b), 1) for _ in range(repeat))
    n = a.shape[0]
    return 2 * n ** 3 / best / 1e9


def _measure_peak(size, dtypes, with_torch=True):
    """Best single-thread ``size x size`` matmul GFLOP/s per dtype: NumPy (and torch)."""
    with _thread_count(1):
        rng = np.random.default_rng(0)
        found = {}
        for dtype in dtypes:
            a = rng.standard_normal((size, size)).astype(dtype)
            b = rng.standard_normal((size, size)).astype(dtype)
            found[dtype] = {"numpy": _best_matmul_gflops(np.matmul, a, b)}
            torch = _torch() if with_torch else None
            if torch is not None:
                found[dtype]["torch"] = _best_matmul_gflops(torch.matmul, torch.from_numpy(a), torch.from_numpy(b))
        return {"results": found, "blas": _blas_kernel()}


def _rss_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset Linux's VmHWM to the current resident set; False where that is not possible.

    Free heap memory is handed back first (glibc's ``malloc_trim``): pages that the
    allocator kept resident would otherwise absorb the call's allocations unseen.
    """
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure_memory(case, op, dtype, backend, threads):
    """Peak extra resident memory (bytes) of the first call of a task, in this (fresh) process."""
    with _thread_count(threads):
        # a first call on the seed shape loads lazily imported code (torch's kernels, the
        # extension's dispatch) so that what is measured below is data, not code
        seed = Case.conv("seed", SEED_SHAPE)
        _call(seed, op, backend, _task_inputs(seed, op, np.dtype(dtype)))()
        inputs = _task_inputs(case, op, np.dtype(dtype))
        fn = _call(case, op, backend, inputs)
        gc.collect()
        if _reset_peak_rss():
            method = "VmHWM"
            before = _rss_kib("VmRSS")
            result = fn()
            after = _rss_kib("VmHWM")
        else:  # no clear_refs: the process's high-water mark so far, a coarser baseline
            import resource
            method = "ru_maxrss"
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result = fn()
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        parts = result if isinstance(result, tuple) else (result,)
        output_bytes = sum(int(np.asarray(r).nbytes) for r in parts if r is not None)
        return {"extra_bytes": (after - before) * 1024, "output_bytes": output_bytes, "method": method}


# --------------------------------------------------------------------------
# worker processes
# --------------------------------------------------------------------------

_WORKER_CODE = ("import warnings; warnings.filterwarnings('ignore', message='cconv.s compiled extension'); "
                "from cconv._bench import _worker_main; _worker_main()")


def _worker_main():
    """Entry point of a fresh worker: a JSON job on stdin, JSON lines on stdout."""
    job = json.load(sys.stdin)
    out = sys.stdout

    def emit(record):
        out.write(json.dumps(record) + "\n")
        out.flush()

    mode = job["mode"]
    if mode == "time":
        _time_tasks(job["settings"], job["threads"], job["process"], emit)
    elif mode == "peak":
        emit(_measure_peak(job["size"], job["dtypes"], job["with_torch"]))
    elif mode == "memory":
        emit(_measure_memory(Case(**job["case"]), job["op"], job["dtype"], job["backend"], job["threads"]))
    else:
        raise ValueError(f"unknown worker mode {mode!r}")


def _package_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker_env(threads, drop=()):
    env = dict(os.environ)
    for name in drop:
        env.pop(name, None)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    # import this very cconv (e.g. an in-tree build), not some other installed copy
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
    return env


def _run_worker(job, threads, on_record, drop_env=()):
    """Run one fresh worker process; call ``on_record`` with each JSON record it prints."""
    env = _worker_env(threads, drop_env)
    if job["mode"] == "memory":
        # a fixed mmap threshold: glibc's adaptive one would serve large blocks from heap pages
        # that an earlier free left resident, hiding them from the high-water mark
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        for line in proc.stdout:
            on_record(json.loads(line))
    finally:
        proc.stdout.close()
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"benchmark worker ({job['mode']}, {threads} thread(s)) failed with exit code {code}; "
                           "its error is printed above")


class _Steps:
    """Counts finished steps onto the command line's progress bar (drawn on a terminal only)."""

    def __init__(self, total, enabled=True):
        from ._cli import ProgressBar
        self.bar = ProgressBar(total, "bench")
        self.bar.enabled = self.bar.enabled and enabled
        self.done = 0

    def update(self, status="", step=1):
        self.done += step
        self.bar.update(self.done, status)

    def close(self):
        self.bar.close()


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

def _machine():
    info = {"platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["simd"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16") if f in flags]
                break
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2 ** 20, 1)
    except OSError:
        info["cpu"] = platform.processor()
    from . import __version__
    from ._info import backend_info
    info["cconv"] = __version__
    info["cconv_build"] = backend_info()
    if BASELINE in _backends.available_backends():
        import torch
        info["torch"] = torch.__version__
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = list(os.getloadavg())
    return info


_OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _peak_runs(settings, dtypes):
    """One round of single-thread matmul measurements: [(label, worker result)]."""
    size = settings["peak_size"]
    if settings["in_process"]:
        return [("numpy", _measure_peak(size, dtypes))]
    job = {"mode": "peak", "size": size, "dtypes": dtypes, "with_torch": True}
    runs = []
    _run_worker(job, 1, lambda found: runs.append(("numpy", found)))
    if any(name in os.environ for name in _OPENBLAS_OVERRIDES):
        # this machine pins OpenBLAS to an older kernel for safety; measure what it can do without
        _run_worker(dict(job, with_torch=False), 1, lambda found: runs.append(("numpy (OPENBLAS_CORETYPE unset)", found)),
                    drop_env=_OPENBLAS_OVERRIDES)
    return runs


def _peak(settings, dtypes, runs):
    """Per dtype: each source's best GFLOP/s over all ``runs`` rounds, and the best of them all.

    Rounds at the start and the end of a run: a peak is a best case, and on a shared
    machine one round can land in a busy moment.
    """
    peak = {}
    for dtype in dtypes:
        sources = {}
        for label, run in runs:
            for lib, gflops in run["results"][dtype].items():
                name = label if lib == "numpy" else "torch.matmul"
                if lib == "numpy" and run["blas"]:
                    name += f" [{run['blas']}]"
                sources[name] = max(gflops, sources.get(name, 0.0))
        best = max(sources, key=sources.get)
        peak[dtype] = {"size": settings["peak_size"], "sources": sources, "best": sources[best],
                       "best_source": best}
    return peak


def _measure_all(settings, progress):
    """Raw timing records of every task, thread count and process."""
    records = []

    def on_record(record):
        records.append(record)
        case = Case(**record["case"])
        progress.update(f"{case.suite} {case.kind} {record['op']} {record['backend']} t={record['threads']}")

    # processes outermost: a slow phase of a shared machine then spreads over every thread count
    for process in range(settings["processes"]):
        for threads in settings["threads"]:
            if settings["in_process"]:
                _time_tasks(settings, threads, process, on_record)
            else:
                _run_worker({"mode": "time", "settings": settings, "threads": threads, "process": process},
                            threads, on_record)
    return records


def _memory(settings, progress):
    """Peak extra memory of the largest convolution's first call, per backend, op and thread count."""
    convs = [c for c in suite_cases(settings["suites"], [tuple(s) for s in settings["shapes"]]) if c.kind == "conv"]
    if not convs:
        return None
    dtype = settings["dtypes"][0]
    itemsize = np.dtype(dtype).itemsize
    case = max(convs, key=lambda c: c.im2col_bytes(itemsize))
    rows = []
    for backend in settings["backends"]:
        for op in settings["ops"]:
            for threads in settings["threads"]:
                found = []
                _run_worker({"mode": "memory", "case": asdict(case), "op": op, "dtype": dtype,
                             "backend": backend, "threads": threads}, threads, found.append)
                rows.append(dict(found[0], backend=backend, op=op, threads=threads))
                progress.update(f"memory {backend} {op} t={threads}")
    return {"case": asdict(case), "label": case.label, "dtype": dtype,
            "im2col_bytes": case.im2col_bytes(itemsize), "rows": rows}


def _summarise(records, settings, peak):
    """Group raw records into one result row per (task, backend, threads) with medians and rates."""
    groups = {}
    for r in records:
        key = (json.dumps(r["case"], sort_keys=True), r["op"], r["dtype"], r["backend"], r["threads"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (case_json, op, dtype, backend, threads), group in groups.items():
        case = Case(**json.loads(case_json))
        samples = [s for r in group for s in r["samples"]]
        medians = [statistics.median(r["samples"]) for r in group]
        quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
        work, unit = case.work(op, np.dtype(dtype).itemsize)
        median = statistics.median(medians)
        row = {"suite": case.suite, "case": asdict(case), "label": case.label, "kind": case.kind, "op": op,
               "dtype": dtype, "backend": backend, "threads": threads, "median_s": median,
               "min_s": min(samples), "max_s": max(samples), "q1_s": quartiles[0], "q3_s": quartiles[2],
               "process_medians_s": medians, "process_samples_s": [r["samples"] for r in group],
               "calls_per_sample": [r["number"] for r in group], "work": work,
               "work_unit": unit, "rate": work / median / 1e9,
               "rate_unit": "GFLOP/s" if unit == "flop" else "GB/s"}
        if unit == "flop" and dtype in peak:
            row["pct_peak"] = 100 * row["rate"] / (threads * peak[dtype]["best"])
        rows.append(row)
    index = {(r["label"], r["op"], r["dtype"], r["backend"], r["threads"]): r for r in rows}
    for r in rows:
        for base, field in ((BASELINE, "torch_ratio"), (NATIVE, "native_ratio")):
            ref = index.get((r["label"], r["op"], r["dtype"], base, r["threads"]))
            if ref is not None and r["backend"] not in (BASELINE, NATIVE):
                r[field] = ref["median_s"] / r["median_s"]
    order = {name: i for i, name in enumerate(["cython", "numpy", BASELINE, NATIVE])}
    tasks = [(c.label, op, dtype) for c, op, dtype in _tasks(settings)]
    rows.sort(key=lambda r: (tasks.index((r["label"], r["op"], r["dtype"])), r["threads"],
                             order.get(r["backend"], 99)))
    return rows


def _geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _headline(rows, settings):
    """Geometric-mean torch/backend ratios per (backend, dtype, kind, threads)."""
    out = []
    for backend in settings["backends"]:
        if backend in (BASELINE, NATIVE):
            continue
        for dtype in settings["dtypes"]:
            for kind in ("conv", "pool"):
                for threads in settings["threads"]:
                    sel = [r for r in rows if (r["backend"], r["dtype"], r["kind"], r["threads"]) ==
                           (backend, dtype, kind, threads)]
                    for field, base in (("torch_ratio", BASELINE), ("native_ratio", NATIVE)):
                        values = [r[field] for r in sel if field in r]
                        if values:
                            out.append({"backend": backend, "dtype": dtype, "kind": kind, "threads": threads,
                                        "versus": base, "tasks": len(values), "geomean": _geomean(values),
                                        "min": min(values), "max": max(values)})
    return out


_SHORT_OP = {"forward": "fwd", "backward": "bwd"}


def _sig(value, digits=3):
    """``value`` with about ``digits`` significant digits and no exponent: 0.0123, 1.23, 1234."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def _time_unit(seconds):
    """(scale, unit) to print a time: microseconds below 1 ms, else milliseconds."""
    return (1e6, "us") if seconds < 1e-3 else (1e3, "ms")


def _spread(row):
    """(low, high) seconds: min-max of the process medians, or the IQR with one process."""
    medians = row["process_medians_s"]
    return (min(medians), max(medians)) if len(medians) > 1 else (row["q1_s"], row["q3_s"])


def _targets(rows, memory, settings, peak):
    """Issue 4's targets, each as {target, met (True/False/None = not measured), detail}."""
    cy = "cython"
    targets = []

    def add(target, met, detail):
        targets.append({"target": target, "met": met, "detail": detail})

    f32 = [r for r in rows if r["backend"] == cy and r["dtype"] == "float32"]
    conv = [r for r in f32 if r["kind"] == "conv" and "torch_ratio" in r]
    if not conv:
        add("cconv (cython) vs torch, float32 conv", None, "not measured (needs backends cython and torch)")
    for threads in settings["threads"]:
        sel = [r for r in conv if r["threads"] == threads]
        if not sel:
            continue
        slow = [f"{r['label']} {r['op']} {r['torch_ratio']:.2f}" for r in sel if r["torch_ratio"] < 1.0]
        add(f"every conv shape, forward and backward, ratio >= 1.0 at {threads} thread(s)", not slow,
            f"{len(sel) - len(slow)}/{len(sel)} tasks at >= 1.0" + (f"; below: {'; '.join(slow)}" if slow else ""))
        gm = _geomean([r["torch_ratio"] for r in sel])
        add(f"geometric mean of torch/cconv >= 1.3 at {threads} thread(s)", gm >= 1.3,
            f"{gm:.2f} over {len(sel)} conv tasks (min {min(r['torch_ratio'] for r in sel):.2f}, "
            f"max {max(r['torch_ratio'] for r in sel):.2f})")
    large = [r for r in f32 if r["kind"] == "conv" and Case(**r["case"]).conv_tuple in LARGE_SHAPES
             and "pct_peak" in r]
    for threads in settings["threads"]:
        sel = [r for r in large if r["threads"] == threads]
        if sel:
            low = [f"{r['label']} {r['op']} {r['pct_peak']:.0f}%" for r in sel if r["pct_peak"] < 80]
            rates = [r["rate"] / threads for r in sel]
            # the same rates against every other measured peak, e.g. the AVX2-only OpenBLAS kernel
            others = "".join(f"; {100 * min(rates) / g:.0f}-{100 * max(rates) / g:.0f}% of {name} ({g:.0f} GFLOP/s)"
                             for name, g in peak["float32"]["sources"].items()
                             if name != peak["float32"]["best_source"])
            add(f"large shapes >= 80% of the sgemm peak at {threads} thread(s) (peak x threads)", not low,
                f"{len(sel) - len(low)}/{len(sel)} tasks at >= 80%; range "
                f"{min(r['pct_peak'] for r in sel):.0f}-{max(r['pct_peak'] for r in sel):.0f}% of "
                f"{peak['float32']['best']:.0f} GFLOP/s{others}" + (f"; below: {'; '.join(low)}" if low else ""))
    seed = {(r["op"], r["threads"]): r for r in f32 if r["kind"] == "conv" and Case(**r["case"]).conv_tuple == SEED_SHAPE}
    for op, limit in (("forward", 5e-6), ("backward", 10e-6)):
        r = seed.get((op, min(settings["threads"])))
        if r is None:
            continue
        others = "; ".join(f"{b['backend']} {b['median_s'] * 1e6:.1f} us" for b in rows
                           if b["label"] == r["label"] and b["op"] == op and b["dtype"] == "float32"
                           and b["threads"] == r["threads"] and b["backend"] != cy)
        add(f"seed example {op} <= {limit * 1e6:.0f} us per call", r["median_s"] <= limit,
            f"cython {r['median_s'] * 1e6:.1f} us at {r['threads']} thread(s)" + (f" ({others})" if others else ""))
    if memory:
        for row in (m for m in memory["rows"] if m["backend"] == cy):
            workspace = row["extra_bytes"] - row["output_bytes"]
            add(f"no whole-batch im2col: {memory['label']} {row['op']}, {row['threads']} thread(s)",
                workspace < memory["im2col_bytes"],
                f"peak extra {row['extra_bytes'] / 2**20:.1f} MiB, of which outputs {row['output_bytes'] / 2**20:.1f} "
                f"MiB; whole-batch im2col would be {memory['im2col_bytes'] / 2**20:.1f} MiB")
    f64 = [r for r in rows if r["backend"] == cy and r["dtype"] == "float64" and r["kind"] == "conv"
           and "torch_ratio" in r]
    if f64:
        for threads in settings["threads"]:
            sel = [r for r in f64 if r["threads"] == threads]
            if sel:
                gm = _geomean([r["torch_ratio"] for r in sel])
                add(f"float64 at full speed, {threads} thread(s): torch/cconv geometric mean >= 1.0", gm >= 1.0,
                    f"{gm:.2f} over {len(sel)} conv tasks (min {min(r['torch_ratio'] for r in sel):.2f})")
    elif "float64" not in settings["dtypes"]:
        add("float64 at full speed", None, "not measured (run with --dtype float64)")
    pool = [r for r in f32 if r["kind"] == "pool" and "torch_ratio" in r]
    for op, need in (("forward", 5.0), ("backward", 1.0)):
        sel = [r for r in pool if r["op"] == op]
        if sel:
            low = [f"{r['label']} t={r['threads']} {r['torch_ratio']:.2f}" for r in sel if r["torch_ratio"] < need]
            add(f"max_pool2d {op} >= {need:g}x faster than torch on every pool case", not low,
                f"ratios {min(r['torch_ratio'] for r in sel):.2f}-{max(r['torch_ratio'] for r in sel):.2f}"
                + (f"; below: {'; '.join(low)}" if low else ""))
    return targets


def _load_note(machine):
    """A warning when other processes were using the CPUs: multi-thread numbers then mean little."""
    loads = [machine.get(key, [0])[0] for key in ("load_average_start", "load_average_end")]
    if max(loads) < 0.5:
        return None
    return (f"note: the machine was busy (1-minute load average {loads[0]:.1f} at start, {loads[1]:.1f} at end "
            f"on {machine['cpus']} CPU(s)); multi-thread timings stall whenever a thread waits for a core, "
            "and the low end of a spread is the least disturbed process")


def _report_text(report):
    """The report as the plain-text table printed on stdout."""
    lines = []
    m = report["machine"]
    lines.append(f"cconv bench {report['date']}: {m.get('cpu', '?')}, {m['cpus']} CPU(s), "
                 f"{' '.join(m.get('simd', []))}; cconv {m['cconv']}, numpy {m['numpy']}"
                 + (f", torch {m['torch']}" if "torch" in m else ""))
    for dtype, p in report["peak"].items():
        sources = ", ".join(f"{name} {g:.1f}" for name, g in p["sources"].items())
        lines.append(f"{dtype} matmul peak, 1 thread, {p['size']}^3: {sources} GFLOP/s -> peak {p['best']:.1f}")
    s = report["settings"]
    lines.append(f"{s['repeat']} samples x {s['processes']} process(es) per thread count; time = median"
                 + (" of process medians, spread = their min-max" if s["processes"] > 1 else ", spread = IQR"))
    note = _load_note(m)
    if note:
        lines.append(note)
    lines.append("")
    header = (f"{'case':<30} {'op':<8} {'dtype':<7} {'backend':<12} {'thr':>3} {'time':>11} {'spread':>17} "
              f"{'rate':>15} {'%peak':>6} {'torch/this':>10}")
    lines.append(header)
    lines.append("-" * len(header))
    previous = None
    for r in report["results"]:
        task = (r["label"], r["op"], r["dtype"])
        if previous is not None and task != previous:
            lines.append("")
        previous = task
        scale, unit = _time_unit(r["median_s"])
        lo, hi = _spread(r)
        time_text = f"{_sig(r['median_s'] * scale, 4)} {unit}"
        spread = f"{_sig(lo * scale)}-{_sig(hi * scale)}"
        pct = f"{r['pct_peak']:5.1f}%" if "pct_peak" in r else ""
        ratio = f"{r['torch_ratio']:9.2f}x" if "torch_ratio" in r else ""
        kind_op = ("pool " if r["kind"] == "pool" else "") + _SHORT_OP[r["op"]]
        lines.append(f"{r['label']:<30} {kind_op:<8} {r['dtype']:<7} {r['backend']:<12} {r['threads']:>3} "
                     f"{time_text:>11} {spread:>13} {_sig(r['rate']):>7} {r['rate_unit']:<7}"
                     f"{pct:>6} {ratio:>10}")
    if report.get("memory"):
        mem = report["memory"]
        lines.append("")
        lines.append(f"peak extra memory, first call in a fresh process, {mem['label']} {mem['dtype']} "
                     f"(whole-batch im2col would be {mem['im2col_bytes'] / 2**20:.1f} MiB):")
        for row in mem["rows"]:
            lines.append(f"  {row['backend']:<12} {row['op']:<8} {row['threads']} thread(s): "
                         f"{row['extra_bytes'] / 2**20:7.1f} MiB (outputs {row['output_bytes'] / 2**20:.1f} MiB, "
                         f"{row['method']})")
    if report["headline"]:
        lines.append("")
        lines.append("geometric mean of time ratios (> 1: faster than the reference):")
        for h in report["headline"]:
            lines.append(f"  {h['versus']}/{h['backend']} {h['dtype']} {h['kind']} at {h['threads']} thread(s): "
                         f"{h['geomean']:.2f}x over {h['tasks']} tasks (min {h['min']:.2f}, max {h['max']:.2f})")
    if report["targets"]:
        lines.append("")
        lines.append("performance targets:")
        for t in report["targets"]:
            mark = {True: "met    ", False: "NOT MET", None: "n/a    "}[t["met"]]
            lines.append(f"  [{mark}] {t['target']}: {t['detail']}")
    return "\n".join(lines)


def _loads(values):
    return "n/a" if not values else ", ".join(f"{v:.2f}" for v in values)


def _ratio_tables(report):
    """Markdown: one compact table per (backend, dtype) of torch/backend ratios, a column per op and thread count."""
    rows = [r for r in report["results"] if "torch_ratio" in r]
    out = []
    for backend, dtype in dict.fromkeys((r["backend"], r["dtype"]) for r in rows):
        sel = [r for r in rows if (r["backend"], r["dtype"]) == (backend, dtype)]
        columns = list(dict.fromkeys((r["op"], r["threads"]) for r in sel))
        cell = {(r["label"], r["op"], r["threads"]): r for r in sel}
        out += [f"## torch/{backend} time ratio per task, {dtype} (> 1: {backend} is faster)", "",
                "| case | " + " | ".join(f"{_SHORT_OP[op]} {t}T" for op, t in columns) + " |",
                "|---|" + "---:|" * len(columns)]
        for label in dict.fromkeys(r["label"] for r in sel):
            values = [cell.get((label, op, t)) for op, t in columns]
            out.append(f"| {label} | " + " | ".join(
                "" if v is None else (f"**{v['torch_ratio']:.2f}**" if v["torch_ratio"] < 1 else f"{v['torch_ratio']:.2f}")
                for v in values) + " |")
        out.append("")
    return out


def _report_markdown(report):
    """The report as a Markdown page (benchmarks/results.md)."""
    m = report["machine"]
    s = report["settings"]
    out = ["# cconv benchmark results", "",
           f"Produced by `{report['command']}` on {report['date']}.", "",
           "## Machine", "",
           f"- CPU: {m.get('cpu', '?')}, {m['cpus']} CPU(s), {m.get('memory_gib', '?')} GiB; SIMD: "
           f"{', '.join(m.get('simd', []))}",
           f"- {m['platform']}, Python {m['python']}, NumPy {m['numpy']}"
           + (f", torch {m['torch']}" if "torch" in m else "") + f", cconv {m['cconv']}",
           f"- cconv build: {json.dumps({k: v for k, v in m['cconv_build'].items() if k not in ('available',)})}",
           f"- load average (1, 5, 15 min) at start: {_loads(m.get('load_average_start'))}, "
           f"at end: {_loads(m.get('load_average_end'))}", ""]
    note = _load_note(m)
    if note:
        out += [f"**{note[0].upper()}{note[1:]}.**", ""]
    out += ["## Peak (single-thread matmul, same run)", ""]
    for dtype, p in report["peak"].items():
        out.append(f"- {dtype}, {p['size']}x{p['size']}: "
                   + "; ".join(f"{name}: {g:.1f} GFLOP/s" for name, g in p["sources"].items())
                   + f". **Peak used: {p['best']:.1f} GFLOP/s** ({p['best_source']}); `% peak` = rate / "
                     "(threads x peak).")
    out += ["", f"Settings: {s['repeat']} samples per task, {s['processes']} fresh process(es) per thread count, "
            f"at least {s['min_time'] * 1e3:g} ms per sample; time = median"
            + (" of the per-process medians, spread = min-max of those medians." if s["processes"] > 1
               else ", spread = interquartile range."), ""]
    if report["targets"]:
        out += ["## Performance targets", ""]
        for t in report["targets"]:
            mark = {True: "met", False: "**not met**", None: "not measured"}[t["met"]]
            out.append(f"- {mark}: {t['target']}: {t['detail']}")
        out.append("")
    if report["headline"]:
        out += ["## Headline: geometric mean of time ratios", "",
                "| reference/backend | dtype | ops | threads | geomean | min | max | tasks |",
                "|---|---|---|---:|---:|---:|---:|---:|"]
        for h in report["headline"]:
            out.append(f"| {h['versus']}/{h['backend']} | {h['dtype']} | {h['kind']} | {h['threads']} | "
                       f"{h['geomean']:.2f} | {h['min']:.2f} | {h['max']:.2f} | {h['tasks']} |")
        out.append("")
    if report.get("memory"):
        mem = report["memory"]
        out += ["## Peak extra memory", "",
                f"First call in a fresh process, {mem['label']} {mem['dtype']}; a whole-batch im2col matrix would "
                f"be {mem['im2col_bytes'] / 2**20:.1f} MiB.", "",
                "| backend | op | threads | peak extra (MiB) | of which outputs (MiB) |", "|---|---|---:|---:|---:|"]
        for row in mem["rows"]:
            out.append(f"| {row['backend']} | {row['op']} | {row['threads']} | {row['extra_bytes'] / 2**20:.1f} | "
                       f"{row['output_bytes'] / 2**20:.1f} |")
        out.append("")
    out += _ratio_tables(report)
    out += ["## All results", "",
            "| case | op | dtype | backend | threads | time | spread | rate | % peak | torch/this |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        scale, unit = _time_unit(r["median_s"])
        lo, hi = _spread(r)
        kind_op = ("pool " if r["kind"] == "pool" else "") + _SHORT_OP[r["op"]]
        out.append(f"| {r['label']} | {kind_op} | {r['dtype']} | {r['backend']} | {r['threads']} | "
                   f"{_sig(r['median_s'] * scale, 4)} {unit} | {_sig(lo * scale)}-{_sig(hi * scale)} | "
                   f"{_sig(r['rate'])} {r['rate_unit']} | "
                   + (f"{r['pct_peak']:.1f}" if "pct_peak" in r else "") + " | "
                   + (f"{r['torch_ratio']:.2f}" if "torch_ratio" in r else "") + " |")
    return "\n".join(out) + "\n"


def _plot(report, path):
    """Bar charts of the torch/backend time ratio per task, one panel per (dtype, threads), log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "torch_ratio" in r]
    panels = list(dict.fromkeys((r["dtype"], r["threads"]) for r in rows)) or [("float32", 1)]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    tasks = list(dict.fromkeys((r["label"], r["op"]) for r in rows))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.4 * len(tasks) + 2), 4.2 * len(panels)),
                             squeeze=False)
    width = 0.8 / max(len(backends), 1)
    for ax, (dtype, threads) in zip(axes[:, 0], panels):
        for i, backend in enumerate(backends):
            values = {(r["label"], r["op"]): r["torch_ratio"] for r in rows
                      if (r["dtype"], r["threads"], r["backend"]) == (dtype, threads, backend)}
            xs = [j + i * width for j, task in enumerate(tasks) if task in values]
            ax.bar(xs, [values[task] for task in tasks if task in values], width, label=backend)
        ax.axhline(1.0, color="black", linewidth=0.8, label="1.0: as fast as torch")
        ax.axhline(1.3, color="gray", linewidth=0.8, linestyle="--", label="1.3: target geometric mean")
        ax.set_yscale("log")
        ax.set_ylabel("torch time / backend time")
        ax.set_title(f"{dtype}, {threads} thread(s): above 1 = faster than torch {report['machine'].get('torch', '')}")
        ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(tasks))])
        ax.set_xticklabels([f"{label} {_SHORT_OP[op]}" for label, op in tasks], rotation=60, ha="right",
                           fontsize=8)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _write_outputs(report, args):
    print(_report_text(report))
    if getattr(args, "json", None):
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        print(f"\nwrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(_report_markdown(report))
        print(f"wrote {args.markdown}")
    if args.plot:
        _plot(report, args.plot)
        print(f"wrote {args.plot}")


def _command_line():
    """How this run was started, for the record: ``python -m cconv bench ...`` or the script."""
    argv = list(sys.argv) or ["cconv"]
    name = os.path.basename(argv[0])
    program = {"__main__.py": "python -m cconv", "cconv": "cconv"}.get(name, f"python {os.path.relpath(argv[0])}")
    return " ".join([program] + argv[1:])


def _run_sweep_or_networks(args):
    """``--sweep N`` or ``--networks NAMES``: see cconv/_bench_sweep.py and cconv/_bench_networks.py."""
    threads = list(dict.fromkeys(args.threads))
    common = {"json_path": args.json, "markdown_path": args.markdown, "plot_path": args.plot,
              "show_progress": not args.no_progress}
    dtype = args.dtype[0] if args.dtype and len(args.dtype) == 1 else "float32"
    if args.sweep:
        return _bench_sweep.run(args.sweep, args.seed, threads, args.repeat or 5,
                                args.min_time if args.min_time is not None else 0.01,
                                autotune=args.autotune, **common)
    return _bench_networks.run(args.networks, list(dict.fromkeys(args.batches)), threads, args.repeat or 3,
                               dtype, **common)


def run(args):
    """Run the benchmark described by parsed ``args`` (see :func:`add_arguments`); return an exit code."""
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib, which is not installed (pip install matplotlib)", file=sys.stderr)
            return 2
    if args.sweep or args.networks:
        return _run_sweep_or_networks(args)
    if args.from_json:
        try:
            with open(args.from_json) as f:
                report = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {args.from_json}: {exc}", file=sys.stderr)
            return 2
        if isinstance(report, dict) and "records" in report:   # a --sweep or --networks run
            kind = _bench_networks if "networks" in report.get("meta", {}) else _bench_sweep
            return kind.render(report["meta"], report["records"], args.json, args.markdown, args.plot)
        if not isinstance(report, dict) or "results" not in report:
            print(f"error: {args.from_json} is not a report written by cconv bench --json", file=sys.stderr)
            return 2
        # the summary is recomputed: a saved run shows the current targets' wording and logic
        report["headline"] = _headline(report["results"], report["settings"])
        report["targets"] = _targets(report["results"], report["memory"], report["settings"], report["peak"])
        _write_outputs(report, args)
        return 0
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings["suites"] and not settings["shapes"]:
        print("error: nothing to run (empty --suite and no --shape)", file=sys.stderr)
        return 2
    if "numpy" in settings["backends"] and not args.quick and set(settings["suites"]) - {"seed", "lenet", "pool"}:
        print("note: the numpy backend takes minutes on the large shapes", file=sys.stderr)
    ntasks = len(_tasks(settings)) * len(settings["backends"]) * len(settings["threads"]) * settings["processes"]
    nmemory = (len(settings["backends"]) * len(settings["ops"]) * len(settings["threads"])
               if settings["memory"] else 0)
    progress = _Steps(ntasks + nmemory, enabled=not args.no_progress)
    machine = _machine()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        progress.update("matmul peak", step=0)
        peak_runs = _peak_runs(settings, settings["dtypes"])
        records = _measure_all(settings, progress)
        memory = _memory(settings, progress) if settings["memory"] else None
        if not args.quick:
            progress.update("matmul peak again", step=0)
            peak_runs += _peak_runs(settings, settings["dtypes"])
    except (RuntimeError, OSError) as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    progress.close()
    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = list(os.getloadavg())
    peak = _peak(settings, settings["dtypes"], peak_runs)
    rows = _summarise(records, settings, peak)
    report = {"date": date, "command": _command_line(),
              "machine": machine, "settings": settings, "peak": peak, "results": rows, "memory": memory,
              "headline": _headline(rows, settings), "targets": _targets(rows, memory, settings, peak),
              "peak_rounds": [{"label": label, **run} for label, run in peak_runs]}
    _write_outputs(report, args)
    return 0
