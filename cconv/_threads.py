"""Thread count for the compiled kernels (OpenMP): :func:`get_num_threads` decides it.

In order of precedence:

1. in a process started by ``fork()`` (e.g. a ``multiprocessing`` "fork" worker): 1.
   GNU libgomp's thread team does not survive a fork: a child that starts a parallel
   region of two or more threads after its parent ran one waits forever for threads
   that no longer exist; a region of one thread never touches the team.
2. ``cconv.set_num_threads(n)``, once called (process-wide).
3. OpenMP's own setting in the calling thread, ``omp_get_max_threads()``: it follows
   ``$OMP_NUM_THREADS`` and the CPUs this process may use, and is what
   ``threadpoolctl.threadpool_limits(n)`` (user_api ``"openmp"``) changes.
4. Without OpenMP (or before the compiled module is loaded): ``$OMP_NUM_THREADS`` if
   set, else the number of CPUs this process may use.

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


_default = _default_threads()
_user_choice: int | None = None  # set_num_threads(n)
_openmp_max_threads = None       # the compiled module's omp_get_max_threads(), once loaded
_forked = False                  # True in a child of fork()


def _after_fork_in_child():
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _use_openmp_query(query):
    """Called by the compiled backend on import: ``query()`` returns omp_get_max_threads(),
    or 0 when the extension was built without OpenMP."""
    global _openmp_max_threads
    _openmp_max_threads = query if query() > 0 else None


def get_num_threads():
    """Number of threads the compiled kernels use for a call made now, from this thread."""
    if _forked:
        return 1
    if _user_choice is not None:
        return _user_choice
    if _openmp_max_threads is not None:
        return max(1, _openmp_max_threads())
    return _default


def set_num_threads(n):
    """Use ``n`` >= 1 threads in the compiled kernels from now on (process-wide; it takes
    precedence over ``$OMP_NUM_THREADS`` and threadpoolctl's limits; a forked child uses 1)."""
    global _user_choice
    n = _as_int(n, "n")
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _user_choice = n
