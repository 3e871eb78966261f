"""Thread count for the compiled kernels (OpenMP): ``cconv.set_num_threads(n)``.

Default: ``$OMP_NUM_THREADS`` if set, else the number of CPUs this process may use.
The compiled kernels parallelise over independent work (images, channel planes)
and call a single-threaded GEMM inside each thread, so the total never exceeds it.
"""
from __future__ import annotations

import os

from ._shapes import _as_int


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


_num_threads = _default_threads()


def get_num_threads():
    """Number of threads the compiled kernels use."""
    return _num_threads


def set_num_threads(n):
    """Use ``n`` >= 1 threads in the compiled kernels from now on (process-wide)."""
    global _num_threads
    n = _as_int(n, "n")
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = n
