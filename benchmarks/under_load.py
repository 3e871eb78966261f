"""Thread policy under load: cconv calls on 1 and 2 threads while another process keeps a core busy.

Each thread count runs in fresh processes, 1 and 2 threads in turn for a few rounds (optionally
with extra environment, e.g. a libgomp wait policy, which libgomp reads when it loads), next to
one competing busy process. Every call is
timed individually; the report gives per call and thread count the median and the 90th
percentile, and checks the target: on 2 threads the median is no worse than on 1 thread and the
p90 within 1.5x of the median.

    python benchmarks/under_load.py                         # default policy, 200 calls per case
    python benchmarks/under_load.py --env GOMP_SPINCOUNT=0  # compare a wait policy
    python benchmarks/under_load.py --json out.json

Run it on an otherwise idle machine (the competing process is the only load wanted).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CASES = {
    # name: (N, C, H, W, O, k, stride, pad)
    "conv 8x64x28x28 64 3x3": (8, 64, 28, 28, 64, 3, 1, 1),
    "lenet-2 64x6x12x12 16 5x5": (64, 6, 12, 12, 16, 5, 1, 0),
    "pointwise 32x256x14x14 512 1x1": (32, 256, 14, 14, 512, 1, 1, 0),
}


def _worker(calls):
    """Runs in the child: time each case's forward and full backward ``calls`` times."""
    import numpy as np

    import cconv
    rng = np.random.default_rng(0)
    out = {}
    for name, (n, c, h, w, o, k, s, p) in CASES.items():
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        wt = rng.standard_normal((o, c, k, k), dtype=np.float32) * 0.1
        gy = cconv.conv2d(x, wt, stride=s, padding=p)
        ops = {"forward": lambda: cconv.conv2d(x, wt, stride=s, padding=p),
               "backward": lambda: cconv.conv2d_backward(gy, x, wt, stride=s, padding=p)}
        for op, fn in ops.items():
            for _ in range(3):
                fn()
            out[f"{name} {op}"] = _timed(fn, calls)
    x = rng.standard_normal((32, 64, 32, 32), dtype=np.float32)
    out["max_pool2d 32x64x32x32 2x2 forward"] = _timed(lambda: cconv.max_pool2d(x, 2, return_indices=True),
                                                        calls)
    print(json.dumps(out))


def _timed(fn, calls):
    """Seconds of each of `calls` calls (at most 20 s in all), and the cores the process used
    meanwhile (its CPU time, every thread's, over the wall time): what the scheduler gave it."""
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + 20.0
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return {"times": times, "cores": (time.process_time() - cpu0) / (time.perf_counter() - wall0)}


def _busy():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _run(threads, calls, env_extra):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), **env_extra)
    result = subprocess.run([sys.executable, __file__, "--worker", str(calls)], env=env,
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _stats(times):
    import numpy as np
    t = np.sort(np.asarray(times)) * 1e3
    return float(np.median(t)), float(np.percentile(t, 90))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="timed calls per case (default 200)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternate 1- and 2-thread processes this many times, calls split "
                             "between them (default 4)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the timed processes (repeatable)")
    parser.add_argument("--no-load", action="store_true", help="no competing process (for comparison)")
    parser.add_argument("--json", help="write the raw times and the table here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    env_extra = dict(item.split("=", 1) for item in args.env)
    busy = None if args.no_load else _busy()
    raw = {1: {}, 2: {}}
    cores = {1: {}, 2: {}}   # per round: CPU time / wall time of the timed calls' process
    try:
        time.sleep(0.5)
        # Fresh processes on 1 and 2 threads in turn, so that both see the same drift in load.
        per_round = max(1, args.calls // args.rounds)
        for _ in range(args.rounds):
            for t in (1, 2):
                for name, run in _run(t, per_round, env_extra).items():
                    raw[t].setdefault(name, []).extend(run["times"])
                    cores[t].setdefault(name, []).append(run["cores"])
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    load = "no competing process" if args.no_load else "one competing busy process"
    extra = " ".join(args.env) or "default wait policy"
    print(f"# cconv under load: {load}; {extra}; {args.calls} calls per case in {args.rounds} "
          f"alternating rounds; float32; times in ms\n")
    print("| call | 1 thread median | 1 thread p90 | 2 threads median | 2 threads p90 | p90/median (2) "
          "| cores used (1 / 2 threads) | target met |")
    print("|---|---:|---:|---:|---:|---:|---:|:-:|")
    import numpy as np
    rows = []
    met_all = True
    for name in raw[1]:
        m1, q1 = _stats(raw[1][name])
        m2, q2 = _stats(raw[2][name])
        met = m2 <= m1 and q2 <= 1.5 * m2
        met_all &= met
        c1, c2 = (float(np.median(cores[t][name])) for t in (1, 2))
        rows.append(dict(call=name, median_1=m1, p90_1=q1, median_2=m2, p90_2=q2, cores_1=c1, cores_2=c2,
                         met=met))
        print(f"| {name} | {m1:.3f} | {q1:.3f} | {m2:.3f} | {q2:.3f} | {q2 / m2:.2f} | {c1:.2f} / {c2:.2f} "
              f"| {'yes' if met else 'NO'} |")
    print(f"\ntarget (2 threads: median <= 1 thread's, p90 <= 1.5x median) met for every call: "
          f"{'yes' if met_all else 'no'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": load, "env": args.env, "rows": rows, "raw_ms": raw}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
