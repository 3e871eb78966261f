"""Hardening of the compiled ops: threads, OpenMP thread counts, leaks, Ctrl-C, and a fuzz.

* Python threads: 4 threads calling every op concurrently, each on its own data, get results
  bit-identical to serial calls (the kernels keep no shared mutable state).
* OpenMP thread count: results with ``cconv.set_num_threads(1)``, ``2`` and ``3`` are
  bit-identical for every op and output except those in ``ROUNDING_ACROSS_THREADS``: the
  weight gradients of conv2d_backward and conv_transpose2d_backward, whose sum over (image,
  pixel) is split into one range per thread and the partial sums then added in thread order.
  Those differ by rounding only (measured over 80 random layer shapes x 2 dtypes x 2-4
  threads vs 1: the weight gradient differed in 138 of 480 comparisons, by at most 3.9e-7
  relative to its largest element; all other outputs never) and are checked with the suite's
  ``assert_close`` tolerance. Each thread count on its own is deterministic.
* Leaks: 10,000 calls of each op (after 1,000 warm-up calls) grow the resident set by less
  than ``LEAK_BOUND_MIB`` (each call's output is several KiB, so leaking any output would grow
  it by tens of MiB), and leave the inputs' reference counts unchanged. Linux only; skipped
  under AddressSanitizer, whose quarantine keeps freed memory resident on purpose.
* Ctrl-C: a long call runs with the GIL released; a SIGINT that arrives meanwhile is handled
  by Python as soon as the call returns, so the program stops with KeyboardInterrupt after at
  most the rest of that one call.
* Fuzz: 10,000 calls of tools/fuzz.py (seeded); .ci/run adds 100,000 more under the sanitizers.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import cconv
from conftest import BACKENDS_UNDER_TEST, assert_close, assert_identical, backend_params, tally

pytestmark = pytest.mark.parametrize("name", backend_params(BACKENDS_UNDER_TEST))

OPS = ("conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
       "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward")

# (op, position in its result) that may change in the last bits with the OpenMP thread count:
# the weight gradients. Every other output is bit-identical across thread counts.
ROUNDING_ACROSS_THREADS = {("conv2d_backward", 1), ("conv_transpose2d_backward", 1)}

LEAK_CALLS = 10_000
LEAK_WARMUP = 1_000
LEAK_BOUND_MIB = 5.0

FUZZ_CALLS = 10_000
FUZZ_SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "tools" / "fuzz.py"


def op_calls(rng, dtype, n=2, c=4, hw=10):
    """``{op name: (function, args, kwargs)}``: every public op on fresh random data.

    Shapes: input (n, c, hw, hw); 3x3 conv to 8 channels in 2 groups; stride-2 transposed conv;
    3x3 stride-2 pools with padding and ceil_mode. Backward ops get a grad_output of their
    forward's output shape (taken from the reference, so no shape arithmetic is repeated here).
    """
    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x = normal(n, c, hw, hw)
    w = normal(8, c // 2, 3, 3)
    wt = normal(c, 3, 3, 3)
    b = normal(8)
    conv = dict(stride=1, padding=1, dilation=1, groups=2)
    transpose = dict(stride=2, padding=1, output_padding=1)
    maxp = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    avgp = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    gy_conv = normal(*cconv.conv2d(x, w, b, **conv, backend="numpy").shape)
    gy_transpose = normal(*cconv.conv_transpose2d(x, wt, **transpose, backend="numpy").shape)
    pooled, indices = cconv.max_pool2d(x, **maxp, return_indices=True, backend="numpy")
    gy_pool = normal(*pooled.shape)
    return {
        "conv2d": (cconv.conv2d, (x, w, b), conv),
        "conv2d_backward": (cconv.conv2d_backward, (gy_conv, x, w), conv),
        "conv_transpose2d": (cconv.conv_transpose2d, (x, wt, b[:3]), transpose),
        "conv_transpose2d_backward": (cconv.conv_transpose2d_backward, (gy_transpose, x, wt), transpose),
        "max_pool2d": (cconv.max_pool2d, (x,), dict(maxp, return_indices=True)),
        "max_pool2d_backward": (cconv.max_pool2d_backward, (gy_pool, indices, x.shape), {}),
        "avg_pool2d": (cconv.avg_pool2d, (x,), avgp),
        "avg_pool2d_backward": (cconv.avg_pool2d_backward, (gy_pool, x.shape), avgp),
    }


def run(call, name):
    fn, args, kwargs = call
    return fn(*args, backend=name, **kwargs)


def arrays(result):
    """The arrays of an op's result (a tuple's entries, Nones dropped)."""
    return [r for r in (result if isinstance(result, tuple) else (result,)) if r is not None]


@pytest.fixture
def restore_threads():
    before = cconv.get_num_threads()
    yield
    cconv.set_num_threads(before)


# --------------------------------------------------------------------------
# Python threads
# --------------------------------------------------------------------------

def test_python_threads_match_serial_calls(name):
    """4 threads, each running every op (in its own order) on its own data, 10 times over."""
    workers, repeats = 4, 10
    calls = [op_calls(np.random.default_rng(seed), dtype, n=3, c=8, hw=24)
             for seed, dtype in zip(range(workers), [np.float64, np.float32] * 2)]
    serial = [{op: run(calls[i][op], name) for op in OPS} for i in range(workers)]
    results = [[] for _ in range(workers)]
    errors = []
    barrier = threading.Barrier(workers)

    def work(i):
        try:
            barrier.wait()
            order = OPS[i:] + OPS[:i]  # different ops run at the same moment
            for _ in range(repeats):
                for op in order:
                    results[i].append((op, run(calls[i][op], name)))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(workers):
        assert len(results[i]) == repeats * len(OPS)
        for op, result in results[i]:
            for got, want in zip(arrays(result), arrays(serial[i][op]), strict=True):
                assert_identical(got, want, context=f"{op}, thread {i}")
    tally("threaded calls", name, workers * repeats * len(OPS))


# --------------------------------------------------------------------------
# OpenMP thread count
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op", OPS)
def test_openmp_thread_count_does_not_change_results(name, op, dtype, restore_threads):
    # Big enough to be split between threads; an odd batch so no thread count divides it.
    call = op_calls(np.random.default_rng(7), dtype, n=5, c=8, hw=33)[op]
    cconv.set_num_threads(1)
    single = arrays(run(call, name))
    for threads in (2, 3):
        cconv.set_num_threads(threads)
        for position, (got, want) in enumerate(zip(arrays(run(call, name)), single, strict=True)):
            context = f"{op} output {position} with {threads} threads vs 1"
            if (op, position) in ROUNDING_ACROSS_THREADS:
                assert_close(got, want, context=context)
            else:
                assert_identical(got, want, context=context)


# --------------------------------------------------------------------------
# leaks
# --------------------------------------------------------------------------

def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc/self/statm")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine keeps freed memory resident")
@pytest.mark.parametrize("op", OPS)
def test_many_calls_keep_memory_flat(name, op):
    call = op_calls(np.random.default_rng(3), np.float64, n=2, c=4, hw=16)[op]
    output_bytes = sum(a.nbytes for a in arrays(run(call, name)))
    assert output_bytes * LEAK_CALLS > 4 * LEAK_BOUND_MIB * 2**20  # a leaked output would show
    refcounts = [sys.getrefcount(a) for a in call[1]]
    for _ in range(LEAK_WARMUP):
        run(call, name)
    before = _resident_bytes()
    for _ in range(LEAK_CALLS):
        run(call, name)
    growth_mib = (_resident_bytes() - before) / 2**20
    assert growth_mib < LEAK_BOUND_MIB, f"{op}: resident set grew {growth_mib:.1f} MiB in {LEAK_CALLS} calls"
    assert [sys.getrefcount(a) for a in call[1]] == refcounts, f"{op} leaked references to its inputs"
    tally("leak-checked calls", op, LEAK_CALLS)


# --------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------

_LONG_LOOP = """
import faulthandler, signal, sys, time
import numpy as np
import cconv
# Ctrl-C as in a terminal: a runner started in the background (`cmd &` in a script, nohup, some
# CI agents) hands its children SIGINT ignored, and Python then installs no handler at all.
signal.signal(signal.SIGINT, signal.default_int_handler)
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks if we hang
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 64, 64, 64), dtype=np.float32)
w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
start = time.perf_counter()
cconv.conv2d(x, w, padding=1, backend=sys.argv[1])
print(time.perf_counter() - start, flush=True)
while True:
    cconv.conv2d(x, w, padding=1, backend=sys.argv[1])
"""


def _stacks_of_hung(proc):
    """The Python stacks (faulthandler, on SIGUSR1) and, where gdb is installed, the native
    stacks of every thread of a child that did not exit: what a hang report needs."""
    report = []
    if shutil.which("gdb"):
        try:
            report.append(subprocess.run(
                ["gdb", "-p", str(proc.pid), "-batch", "-ex", "thread apply all bt 30"],
                capture_output=True, text=True, timeout=60).stdout[-12000:])
        except subprocess.TimeoutExpired:
            report.append("(gdb did not answer within 60 s)")
    proc.send_signal(signal.SIGUSR1)
    time.sleep(2)
    proc.kill()
    _, stderr = proc.communicate()
    report.append(stderr.decode(errors="replace")[-8000:])
    return "\n".join(report)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_a_loop_of_long_calls(name, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _LONG_LOOP, name], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the child never finished its first call"
        line = proc.stdout.readline()
        assert line, f"the child died: {proc.communicate()[1].decode()[-2000:]}"
        one_call = float(line)
        time.sleep(min(1.0, one_call / 2))  # now inside a call (the loop is nothing else)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=one_call + 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the child still runs {one_call + 30:.0f} s after Ctrl-C; its stacks:\n"
                        + _stacks_of_hung(proc))
        waited = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"KeyboardInterrupt" in stderr, stderr.decode()[-2000:]
    assert proc.returncode == -signal.SIGINT  # Python re-raises SIGINT when it dies of Ctrl-C
    # At most the rest of the call under way, plus the interpreter's exit.
    assert waited < one_call + 5, f"exit took {waited:.2f} s; one call takes {one_call:.2f} s"


# --------------------------------------------------------------------------
# fuzz
# --------------------------------------------------------------------------

def test_differential_fuzz(name):
    if not FUZZ_SCRIPT.exists():
        pytest.skip(f"{FUZZ_SCRIPT} not found beside the tests")
    spec = importlib.util.spec_from_file_location("cconv_fuzz", FUZZ_SCRIPT)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    fuzzer = fuzz.Fuzzer(name, seed=12345).fuzz(FUZZ_CALLS)
    assert not fuzzer.mismatches, "\n".join(fuzzer.mismatches[:5])
    tally("fuzzed calls", name, sum(fuzzer.calls.values()))
