"""Data-parallel scaling of cconv.distributed on one host: N ranks x 1 thread against 1 rank x 1 thread.

    python benchmarks/distributed_scaling.py [--repeats 5] [--out FILE.md]

Needs ``pip install "cconv[mpi]"`` (mpiexec from the MPI wheel, next to the interpreter).

Part 1, throughput: a VGG-style cconv.nn model (four 3x3 convolutions, 32-64 channels, on the
digits upsampled to 32x32) trained with SGD for a fixed number of steps at a fixed global
batch, launched as ``mpiexec -n 1`` and ``mpiexec -n 2`` (and 1 rank x 2 OpenMP threads for
reference), alternating, several repeats. Each rank times every step's parts: forward +
backward on its share, ``allreduce_gradients`` (which includes waiting for the slower rank),
and the SGD update; rank 0 reports samples/s over the timed steps (between two barriers).
The allreduce is also timed alone, right after a barrier, on a buffer of the same size: that
is the cost of the message itself, without the wait. Parallel efficiency = samples/s at N
ranks / (N x samples/s at 1 rank).

Part 2, ``cconv train``: wall time (process start to exit) and test accuracy of
``mpiexec -n 2 cconv train --distributed`` (1 thread per rank) against ``cconv train
--threads 1`` and ``--threads 2``, same seed, alternating, several repeats.

Results go to stdout and, as a Markdown report, to ``--out`` (default
benchmarks/results-distributed.md). Medians and ranges over the repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------------------------
# the rank program (run under mpiexec)
# --------------------------------------------------------------------------------------------

def build_model(rng, width):
    """(N, 1, 32, 32) -> 10 logits: [conv3x3-relu] x2, maxpool, [conv3x3-relu] x2, maxpool, linear."""
    from cconv import nn

    w, w2 = width, 2 * width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1, rng=rng), nn.ReLU(),
        nn.Conv2d(w, w, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),       # w x 16 x 16
        nn.Conv2d(w, w2, 3, padding=1, rng=rng), nn.ReLU(),
        nn.Conv2d(w2, w2, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),     # 2w x 8 x 8
        nn.Flatten(), nn.Linear(w2 * 8 * 8, 10, rng=rng))


def _rank_program(args):
    from mpi4py import MPI

    from cconv import distributed, get_num_threads, nn

    comm = distributed.init()
    images, labels = nn.load_digits()
    images = images.repeat(4, axis=2).repeat(4, axis=3)  # 8x8 -> 32x32: a bigger problem, same data
    rng = np.random.default_rng(0)
    model = build_model(rng, args.width)
    distributed.broadcast_parameters(model, comm)
    loss_fn = nn.SoftmaxCrossEntropy()
    optimizer = nn.SGD(model.parameters(), lr=0.02, momentum=0.9)
    order = rng.permutation(len(labels))
    parts = {"compute": [], "allreduce": [], "update": []}
    losses = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            comm.Barrier()
            start = time.perf_counter()
        batch = np.take(order, np.arange(step * args.batch, (step + 1) * args.batch), mode="wrap")
        t0 = time.perf_counter()
        mine = distributed.shard(batch, comm)
        loss = loss_fn.forward(model.forward(images[mine]), labels[mine])
        model.backward(loss_fn.backward())
        t1 = time.perf_counter()
        (loss_sum,) = distributed.allreduce_gradients(model, comm, len(mine), sums=(loss * len(mine),))
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if step >= args.warmup:
            for name, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[name].append(seconds)
        losses.append(loss_sum / len(batch))
    comm.Barrier()
    wall = time.perf_counter() - start

    # The message alone: the same fused size, each call right after a barrier (no waiting).
    buffer = np.ones(sum(p.size for p, _ in model.parameters()) + 2, np.float32)
    alone = []
    for _ in range(50):
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        alone.append(time.perf_counter() - t)
    gathered = comm.gather({k: float(np.median(v)) for k, v in parts.items()}, root=0)
    if comm.Get_rank() == 0:
        print(json.dumps({
            "ranks": comm.Get_size(), "threads": get_num_threads(), "batch": args.batch,
            "steps": args.steps, "samples_per_s": args.steps * args.batch / wall,
            "step_ms": 1e3 * wall / args.steps,
            "parts_ms": {k: 1e3 * max(g[k] for g in gathered) for k in parts},  # slowest rank
            "allreduce_alone_ms": 1e3 * float(np.median(alone)),
            "parameters": int(buffer.size - 2), "first_loss": losses[0], "last_loss": losses[-1],
        }), flush=True)


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------

def _mpiexec():
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if found is None:
        raise SystemExit('no mpiexec: pip install "cconv[mpi]" (the MPI wheel puts it beside python)')
    return found


def _env(threads):
    # OpenMPI refuses root without these; MPICH ignores them.
    return dict(os.environ, OMP_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1",
                OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def _throughput(ranks, threads, args):
    command = [_mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--rank-program",
               "--width", str(args.width), "--batch", str(args.batch), "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
    run = subprocess.run(command, capture_output=True, text=True, env=_env(threads), timeout=600, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stdout}\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _train_cli(distributed, threads):
    command = [sys.executable, "-m", "cconv", "train"]
    if distributed:
        command = [_mpiexec(), "-n", str(distributed), *command, "--distributed"]
    else:
        command += ["--threads", str(threads)]
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=_env(threads), timeout=600, check=False)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stdout}\n{run.stderr}")
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", run.stdout).group(1))
    per_epoch = float(re.search(r"([\d.]+) s per epoch", run.stdout).group(1))
    return {"wall_s": seconds, "accuracy": accuracy, "epoch_s": per_epoch}


def _spread(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank-program", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=32, help="channels of the first convolutions (default 32)")
    parser.add_argument("--batch", type=int, default=64, help="global batch size (default 64)")
    parser.add_argument("--steps", type=int, default=20, help="timed SGD steps per run (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--ranks", type=int, default=2, help="ranks to compare with 1 (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats (default 5)")
    parser.add_argument("--out", default=os.path.join(HERE, "results-distributed.md"))
    args = parser.parse_args()
    if args.rank_program:
        _rank_program(args)
        return

    configs = [(1, 1), (args.ranks, 1), (1, args.ranks)]  # (ranks, threads per rank)
    runs = {config: [] for config in configs}
    load_start = os.getloadavg()
    for repeat in range(args.repeats):
        for config in configs:
            runs[config].append(_throughput(*config, args))
            r = runs[config][-1]
            print(f"[{repeat + 1}/{args.repeats}] {config[0]} rank(s) x {config[1]} thread(s): "
                  f"{r['samples_per_s']:.1f} samples/s, step {r['step_ms']:.1f} ms, "
                  f"allreduce {r['parts_ms']['allreduce']:.2f} ms (alone {r['allreduce_alone_ms']:.3f} ms)",
                  flush=True)
    cli_configs = [("cconv train --threads 1", 0, 1), ("cconv train --threads 2", 0, 2),
                   (f"mpiexec -n {args.ranks} cconv train --distributed (1 thread per rank)", args.ranks, 1)]
    cli = {name: [] for name, _, _ in cli_configs}
    for repeat in range(args.repeats):
        for name, distributed, threads in cli_configs:
            cli[name].append(_train_cli(distributed, threads))
            r = cli[name][-1]
            print(f"[{repeat + 1}/{args.repeats}] {name}: {r['wall_s']:.2f} s wall, {r['epoch_s']:.3f} s per epoch, "
                  f"test accuracy {r['accuracy']:.2f}%", flush=True)
    load_end = os.getloadavg()

    # Efficiency per repeat (the 1-rank and N-rank runs of one repeat ran back to back), then the median.
    base, multi, omp = (runs[c] for c in configs)
    efficiency = [m["samples_per_s"] / (args.ranks * b["samples_per_s"]) for b, m in zip(base, multi)]
    speedup_omp = [o["samples_per_s"] / b["samples_per_s"] for b, o in zip(base, omp)]
    share = [m["parts_ms"]["allreduce"] / m["step_ms"] for m in multi]
    alone_share = [m["allreduce_alone_ms"] / m["step_ms"] for m in multi]
    first = base[0]
    lines = [
        "# Data-parallel scaling of cconv.distributed", "",
        (f"Produced by `python benchmarks/distributed_scaling.py --repeats {args.repeats}` (with no other benchmark, "
        f"build or test running) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."), "",
        (f"- Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}; MPI: {_mpi_version()}"),
        (f"- Load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f} (a shared machine: "
        "other people's work competes for the 2 cores)"),
        (f"- Model: digits upsampled to 1x32x32; conv 3x3 1->{args.width}, {args.width}->{args.width}, maxpool, "
        f"{args.width}->{2 * args.width}, {2 * args.width}->{2 * args.width}, maxpool, linear "
        f"{2 * args.width * 64}->10 ({first['parameters']:,} float32 parameters, "
        f"{first['parameters'] * 4 / 2**20:.2f} MiB of gradients per allreduce); SGD momentum 0.9"),
        (f"- Global batch {args.batch} (each of {args.ranks} ranks: {args.batch // args.ranks}), "
        f"{args.steps} timed steps after {args.warmup} warm-up steps; {args.repeats} repeats, the "
        "configurations alternating; median (min-max) over repeats"), "",
        "## Throughput", "",
        "| ranks x threads | samples/s | step (ms) | forward+backward (ms) | allreduce (ms) | update (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for config in configs:
        rs = runs[config]
        lines.append(
            f"| {config[0]} x {config[1]} | {_spread([r['samples_per_s'] for r in rs], '{:.1f}')} | "
            f"{_spread([r['step_ms'] for r in rs], '{:.1f}')} | "
            f"{_spread([r['parts_ms']['compute'] for r in rs], '{:.1f}')} | "
            f"{_spread([r['parts_ms']['allreduce'] for r in rs], '{:.2f}')} | "
            f"{_spread([r['parts_ms']['update'] for r in rs], '{:.2f}')} |")
    lines += [
        "",
        ("Per-step parts are each rank's median, the slower rank's shown; the allreduce column includes "
        "waiting for the slower rank."), "",
        (f"- **Parallel efficiency at {args.ranks} ranks x 1 thread: {_spread([100 * e for e in efficiency], '{:.0f}')}%** "
        f"(samples/s at {args.ranks} ranks / ({args.ranks} x samples/s at 1 rank), per repeat)"),
        (f"- For comparison, 1 rank x {args.ranks} OpenMP threads: speed-up "
        f"{_spread(speedup_omp, '{:.2f}')}x over 1 thread"),
        (f"- **Allreduce share of the step at {args.ranks} ranks: {_spread([100 * s for s in share], '{:.1f}')}%** "
        "(including waiting); the message alone (after a barrier): "
        f"{_spread([m['allreduce_alone_ms'] for m in multi], '{:.3f}')} ms = "
        f"{_spread([100 * s for s in alone_share], '{:.2f}')}% of the step"),
        (f"- Training loss over the run (1 rank, first repeat): {first['first_loss']:.3f} -> {first['last_loss']:.3f}; "
        f"{args.ranks} ranks: {multi[0]['first_loss']:.3f} -> {multi[0]['last_loss']:.3f}"), "",
        "## `cconv train` (8x8 digits, default settings, seed 0)", "",
        "| command | wall time (s) | time per epoch (s) | test accuracy (%) |", "|---|---:|---:|---:|",
    ]
    for name, rs in cli.items():
        lines.append(f"| `{name}` | {_spread([r['wall_s'] for r in rs], '{:.2f}')} | "
                     f"{_spread([r['epoch_s'] for r in rs], '{:.3f}')} | "
                     f"{_spread([r['accuracy'] for r in rs], '{:.2f}')} |")
    lines.append("")
    report = "\n".join(lines)
    print("\n" + report)
    with open(args.out, "w") as f:
        f.write(report)


def _mpi_version():
    code = "from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    import mpi4py

    return f"{' '.join(run.stdout.split())}, mpi4py {mpi4py.__version__}"


if __name__ == "__main__":
    main()
