"""Who decides the thread count, and what happens across fork().

* Fork safety: after a multithreaded call, children started by ``fork()`` (a
  ``multiprocessing`` "fork" pool, or ``os.fork()`` itself) run every op and finish, on
  one thread. GNU libgomp's thread team does not survive a fork: a region of two or more
  threads in such a child waits forever, which is what these tests would catch. They run
  in a fresh interpreter with a timeout, so a hang fails the test instead of stalling CI.
* threadpoolctl: ``threadpool_limits(n)`` (user_api "openmp") sets the threads cconv uses
  inside the block; ``cconv.set_num_threads`` wins where the user called it.

Thread use is proved by counting the process's OS threads (Linux ``/proc/self/task``):
OpenMP keeps its worker threads alive after a parallel region, so a process that has only
ever run one-thread regions has no thread beyond those it started with (the main thread,
and whatever NumPy's BLAS keeps; a forked child starts with one).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import cconv

pytestmark = [
    pytest.mark.skipif(cconv.backend_info().get("openmp") is not True,
                       reason="the compiled backend is built without OpenMP: it runs on one thread"),
    pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in Linux /proc"),
]

# Every op once, on a layer big enough to be split over threads (8x64x28x28, 64 3x3 filters).
_PRELUDE = textwrap.dedent("""
    import os, sys
    import numpy as np
    import cconv

    def os_threads():  # OS threads beyond those the process had before any cconv call, + 1
        return len(os.listdir("/proc/self/task")) - BASELINE

    BASELINE = 0
    BASELINE = os_threads() - 1

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 64, 28, 28), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32) * 0.05

    def every_op(n):
        xs = x[n:n + 2]
        y = cconv.conv2d(xs, w, padding=1)
        gi, gw, gb = cconv.conv2d_backward(y, xs, w, padding=1)
        t = cconv.conv_transpose2d(xs, w, stride=2)
        ti, tw, tb = cconv.conv_transpose2d_backward(t, xs, w, stride=2)
        p, idx = cconv.max_pool2d(y, 2, return_indices=True)
        gp = cconv.max_pool2d_backward(p, idx, y.shape)
        a = cconv.avg_pool2d(y, 3, stride=2, padding=1)
        ga = cconv.avg_pool2d_backward(a, y.shape, 3, stride=2, padding=1)
        return [r.astype(np.float64).sum() for r in (y, gi, gw, gb, t, ti, tw, tb, p, gp, a, ga)]
    """)


def _run(body, env=None, timeout=150):
    """Run ``_PRELUDE + body`` in a fresh interpreter; a hang past ``timeout`` fails the test."""
    environment = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    for name in ("CCONV_BACKEND", "CCONV_PURE_PYTHON"):
        environment.pop(name, None)
    # A session of its own, so that a timeout kills the forked children too.
    with subprocess.Popen([sys.executable, "-c", _PRELUDE + textwrap.dedent(body)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=environment, start_new_session=True) as run:
        try:
            stdout, stderr = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            stdout, stderr = run.communicate()
            pytest.fail(f"timed out after {timeout} s (a hang):\n{stdout}\n{stderr}")
    assert run.returncode == 0, f"exit {run.returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    return stdout


_PARENT_RUNS_TWO_THREADS = """
    assert cconv.get_backend() == "cython" and cconv.get_num_threads() == 2
    assert os_threads() == 1
    expected = [every_op(n) for n in (0, 2, 4, 6)]
    assert os_threads() >= 2, "the parent did not run a multithreaded region"
"""


def test_fork_pool_after_a_multithreaded_call_runs_every_op():
    out = _run(_PARENT_RUNS_TWO_THREADS + """
    import multiprocessing

    def work(n):
        return cconv.get_num_threads(), len(os.listdir("/proc/self/task")), every_op(n)

    with multiprocessing.get_context("fork").Pool(2) as pool:
        try:
            results = pool.map_async(work, [0, 2, 4, 6]).get(timeout=60)
        except multiprocessing.TimeoutError:
            print("HANG: a forked worker did not finish in 60 s", flush=True)
            os.killpg(0, 9)
    for (threads, os_count, sums), want in zip(results, expected):
        assert threads == 1, threads
        assert os_count <= 2, os_count   # the worker and, at most, the pool's result thread
        # Only the weight gradients depend on the thread count (partial sums): rounding.
        np.testing.assert_allclose(sums, want, rtol=1e-4)
    print("ok", len(results))
    """)
    assert out.strip().endswith("ok 4")


def test_os_fork_after_a_multithreaded_call_runs_every_op():
    out = _run(_PARENT_RUNS_TWO_THREADS + """
    import time

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sums = every_op(2)
            np.testing.assert_allclose(sums, expected[1], rtol=1e-4)
            assert cconv.get_num_threads() == 1 and len(os.listdir("/proc/self/task")) == 1
            code = 0
        finally:
            os._exit(code)
    for _ in range(600):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("HANG: the forked child did not finish in 60 s", flush=True)
        os._exit(3)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert cconv.get_num_threads() == 2   # the parent keeps its threads
    every_op(0)
    print("ok")
    """)
    assert out.strip().endswith("ok")


def test_threadpoolctl_limits_cconv_inside_the_block():
    out = _run("""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        assert cconv.get_num_threads() == 1
        assert cconv.backend_info()["num_threads"] == 1
        every_op(0)
        assert os_threads() == 1, "a limit of 1 still started OpenMP threads"
    assert cconv.get_num_threads() == 2   # restored after the block
    every_op(0)
    assert os_threads() >= 2
    print("ok")
    """)
    assert out.strip().endswith("ok")


def test_set_num_threads_wins_over_threadpoolctl():
    out = _run("""
    from threadpoolctl import threadpool_limits

    cconv.set_num_threads(2)
    with threadpool_limits(limits=1, user_api="openmp"):
        assert cconv.get_num_threads() == 2
        every_op(0)
        assert os_threads() >= 2, "the user's set_num_threads(2) was not honoured"
    print("ok")
    """)
    assert out.strip().endswith("ok")


def test_omp_num_threads_sets_the_default():
    out = _run("print(cconv.get_num_threads())", env={"OMP_NUM_THREADS": "3"})
    assert out.strip() == "3"


_IDLE_CPU = """
    import time
    every_op(0)                       # 2-thread regions: the OpenMP worker exists and now waits
    assert os_threads() >= 2
    assert os.environ.get("OMP_WAIT_POLICY") == EXPECTED   # the import left the environment alone
    before = time.process_time()
    time.sleep(0.3)                   # nothing to do: does the waiting worker burn a core?
    print(time.process_time() - before)
"""


def test_idle_threads_sleep_instead_of_spinning():
    """cconv loads OpenMP with the passive wait policy, so idle workers leave the cores to others
    (a spinning worker starves a teammate on a busy machine); a user's own setting is kept."""
    ours = float(_run("\n    EXPECTED = None" + _IDLE_CPU))
    # libgomp's own default: spin 300,000 times at each wait, then sleep (a user's setting: kept)
    spinning = float(_run("\n    EXPECTED = None" + _IDLE_CPU, env={"GOMP_SPINCOUNT": "300000"}))
    active = float(_run("\n    EXPECTED = 'active'" + _IDLE_CPU, env={"OMP_WAIT_POLICY": "active"}))
    # a spinning worker takes most of a core in 0.3 s; a loaded machine (a build beside the
    # tests) leaves it less, still far above a sleeping worker's
    assert active > 0.05, f"with OMP_WAIT_POLICY=active the worker should spin: {active:.4f} s of CPU"
    assert ours < 0.003, f"the idle worker used {ours:.4f} s of CPU in 0.3 s"
    if spinning > 0.003:  # where libgomp's default spin is visible (not in every build: ASan's is not)
        assert ours < spinning / 3, f"idle worker: {ours:.4f} s of CPU, libgomp's default spin {spinning:.4f} s"


def test_a_team_only_where_each_share_outlasts_waking_it():
    """At 2 threads, tiny batch-1 layers plan one thread for every pass (waking the second
    takes ~0.1 ms, longer than their whole work) and a large one plans two: matrix-vector
    sized 1x1s on a 1x1 map (0.2M and 1M multiply-adds, both given a team before), against a
    3x3 256->256 layer on a 14x14 map (116M)."""
    import numpy as np
    rng = np.random.default_rng(0)
    saved = cconv.get_num_threads()
    try:
        cconv.set_num_threads(2)
        for (c, o, side, k), want in (((480, 432, 1, 1), 1), ((1024, 1024, 1, 1), 1),
                                      ((256, 256, 14, 3), 2)):
            x = rng.standard_normal((1, c, side, side)).astype(np.float32)
            w = rng.standard_normal((o, c, k, k)).astype(np.float32)
            gy = rng.standard_normal((1, o, side, side)).astype(np.float32)
            plan = cconv.explain("conv2d", x, w, None, padding=k // 2)
            plan.update(cconv.explain("conv2d_backward", gy, x, w, padding=k // 2))
            threads = {name: plan[name]["threads"] for name in ("forward", "grad_input", "grad_weight")}
            assert threads == dict.fromkeys(threads, want), (x.shape, w.shape, threads)
    finally:
        cconv.set_num_threads(saved)


def _modules():
    from cconv import _backends
    return _backends._compiled._conv, _backends._compiled._pool


def test_timed_team_choice_keeps_the_faster_size():
    """The choice on made-up times: the team is timed first (its first call is a warm-up),
    then one thread; the faster runs from then on and the other is measured again (two calls:
    the first is a warm-up after the switch) every 16 calls when the two are close and every
    256 when the team is clearly ahead; when a busy core slows the team down, one thread
    takes over within a few calls, and the team comes back when the core is free again."""
    for module in _modules():
        trace = module.team_choice_trace
        ahead = trace(2, [(1.0, 0.5)] * 600)           # a free second core: the team
        assert ahead[:4] == [2, 2, 1, 1] and ahead[4:20] == [2] * 16
        assert ahead.count(1) == 2 + 2 * 2, "the team clearly ahead: one probe per 256 calls"
        behind = trace(2, [(1.0, 1.3)] * 200)          # the team loses (a busy core, a tiny call)
        assert behind[4:19] == [1] * 15 and behind[19:21] == [2, 2] and behind.count(2) <= 2 + 2 * 200 // 16
        loaded = trace(2, [(1.0, 0.5)] * 100 + [(1.0, 1.4)] * 100 + [(1.0, 0.5)] * 100)
        assert loaded[110:200].count(2) <= 2 * 90 // 16 + 2, "load came: one thread within a few calls"
        assert loaded[230:300] == [2] * 70, "load went: the team again at the next probe"
        assert trace(1, [(1.0, 0.5)] * 10) == [1] * 10, "a team of one has nothing to choose"
        counted = module.team_runs()
        trace(2, [(1.0, 0.5)] * 20)
        assert module.team_runs() == counted, "made-up calls are not counted as calls run"


def test_timed_team_choice_runs_both_sizes_with_identical_results():
    """Through the op: repeated 2-thread calls run both sizes (the counters prove which ran)
    and every result is bit-identical; switched off, the choice stays out of the calls (the
    plan's team runs: explain's count)."""
    import numpy as np
    conv, pool = _modules()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 32, 28, 28), dtype=np.float32)
    w = rng.standard_normal((32, 32, 3, 3), dtype=np.float32)
    xp = rng.standard_normal((16, 64, 32, 32), dtype=np.float32)   # a team's worth of pooling
    saved = cconv.get_num_threads()
    try:
        cconv.set_num_threads(1)
        y1 = cconv.conv2d(x, w, padding=1)
        p1 = cconv.max_pool2d(xp, 2)
        cconv.set_num_threads(2)
        assert cconv.explain("conv2d", x, w, None, padding=1)["forward"]["threads"] == 2
        assert cconv.explain("max_pool2d", xp, 2)["forward"]["threads"] == 2
        for module, call, want in ((conv, lambda: cconv.conv2d(x, w, padding=1), y1),
                                   (pool, lambda: cconv.max_pool2d(xp, 2), p1)):
            for on, sizes in ((True, (1, 1)), (False, (0, 0))):
                module.set_adaptive_threads(on)
                before = module.team_runs()
                for _ in range(24):
                    np.testing.assert_array_equal(call(), want)
                after = module.team_runs()
                ran = tuple(int(a > b) for a, b in zip(after, before))
                assert ran == sizes, (module.__name__, on, before, after)
    finally:
        conv.set_adaptive_threads(False)     # the default
        pool.set_adaptive_threads(False)
        cconv.set_num_threads(saved)


def test_adaptive_threads_variable_is_checked():
    result = subprocess.run([sys.executable, "-c", "import cconv, sys; sys.exit(cconv.get_backend() != 'cython')"],
                            env={**os.environ, "CCONV_ADAPTIVE_THREADS": "sometimes", "CCONV_REQUIRE_COMPILED": "1"},
                            capture_output=True, text=True)
    assert result.returncode != 0 and "CCONV_ADAPTIVE_THREADS='sometimes'" in result.stderr
