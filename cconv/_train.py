"""``cconv train``: a small CNN on the 8x8 handwritten digits, trained with :mod:`cconv.nn`.

conv 1->16 3x3 pad 1 -> relu -> maxpool 2 -> conv 16->32 3x3 pad 1 -> relu -> maxpool 2
-> linear 128->10, softmax cross-entropy, SGD with momentum and a cosine learning-rate
decay per epoch. The train/test split is fixed
(1437/360 images); ``seed`` drives the initialisation and the shuffling, so a run is
reproducible. The time of every layer call is added to one of five buckets (conv/pool
forward/backward, other) to show where each backend spends an epoch. With ``--distributed``,
run under ``mpiexec``, every rank trains on its share of each batch (:mod:`cconv.distributed`),
rank 0 alone prints, and a sixth bucket holds the time spent averaging the gradients.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import _backends
from . import nn
from ._threads import get_num_threads, set_num_threads

TEST_SIZE = 360
SPLIT_SEED = 0  # the split never changes with --seed, so accuracies stay comparable
DEFAULTS = dict(epochs=10, batch_size=32, lr=0.05, momentum=0.9, seed=0)
BUCKETS = ("conv forward", "conv backward", "pool forward", "pool backward", "other")


def split_digits(dtype=np.float32):
    """``(x_train, y_train, x_test, y_test)``: the shipped digits in a fixed 1437/360 split."""
    images, labels = nn.load_digits(dtype)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return images[train], labels[train], images[test], labels[test]


def build_model(rng, backend=None, dtype=np.float32):
    """The CNN for (N, 1, 8, 8) inputs; 10 logits out."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, rng=rng, dtype=dtype, backend=backend), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend),                                       # 16 x 4 x 4
        nn.Conv2d(16, 32, 3, padding=1, rng=rng, dtype=dtype, backend=backend), nn.ReLU(),
        nn.MaxPool2d(2, backend=backend),                                       # 32 x 2 x 2
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10, rng=rng, dtype=dtype),
    )


def _bucket(layer, direction):
    if isinstance(layer, nn.Conv2d):
        return f"conv {direction}"
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        return f"pool {direction}"
    return None


@dataclass
class TrainResult:
    """What one training run reports; ``op_seconds`` are means per epoch; ``model`` is the trained model."""

    backend: str
    epochs: int
    accuracy: float
    correct: int
    test_size: int
    final_loss: float
    epoch_seconds: float
    op_seconds: dict = field(default_factory=dict)
    model: nn.Sequential | None = field(default=None, repr=False)


@contextlib.contextmanager
def _torch_threads(backend, threads):
    """PyTorch keeps its own thread count; make the torch backend honour --threads too."""
    if backend != "torch":
        yield
        return
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_digits(backend=None, epochs=DEFAULTS["epochs"], batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"],
                 momentum=DEFAULTS["momentum"], seed=DEFAULTS["seed"], dtype=np.float32, on_batch=None,
                 on_epoch=None, comm=None):
    """Train the CNN on the digits with ``backend``; return a :class:`TrainResult`.

    ``on_batch(epoch, batch, batches, loss)`` and ``on_epoch(epoch, loss, train_accuracy,
    seconds)`` are optional progress callbacks (epochs counted from 1). With an MPI
    communicator ``comm`` (:func:`cconv.distributed.init`), every rank of it must make this
    call: each trains on its share of every batch, and the gradients are averaged across
    ranks before each step, so the run computes what one process would (losses, accuracies
    and the model are the whole job's on every rank; times are this rank's).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    backend = _backends.get_backend() if backend is None else backend
    _backends.resolve(backend)  # unknown or unavailable names fail here, with the reason
    x_train, y_train, x_test, y_test = split_digits(dtype)
    rng = np.random.default_rng(seed)
    model = build_model(rng, backend, dtype)
    if comm is not None:
        from . import distributed
        distributed.broadcast_parameters(model, comm)
    loss_fn = nn.SoftmaxCrossEntropy()
    optimizer = nn.SGD(model.parameters(), lr=lr, momentum=momentum)
    timed = [(layer, _bucket(layer, "forward"), _bucket(layer, "backward")) for layer in model.layers]
    totals = dict.fromkeys(BUCKETS if comm is None else (*BUCKETS[:-1], "allreduce", BUCKETS[-1]), 0.0)
    batches = -(-len(y_train) // batch_size)
    epoch_total = 0.0
    loss = float("nan")

    with _torch_threads(backend, get_num_threads()):
        for epoch in range(1, epochs + 1):
            # Cosine decay of the learning rate, per epoch: large steps early, a quiet landing.
            optimizer.lr = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
            order = rng.permutation(len(y_train))
            loss_sum = correct = 0
            start = time.perf_counter()
            for b in range(batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                mine = idx if comm is None else distributed.shard(idx, comm)
                batch_loss = batch_correct = 0
                if len(mine):  # a share is empty only when a batch has fewer samples than ranks
                    out = x_train[mine]
                    for layer, bucket, _ in timed:
                        t = time.perf_counter()
                        out = layer.forward(out)
                        if bucket:
                            totals[bucket] += time.perf_counter() - t
                    batch_loss = loss_fn.forward(out, y_train[mine])
                    grad = loss_fn.backward()
                    for layer, _, bucket in reversed(timed):
                        t = time.perf_counter()
                        grad = layer.backward(grad)
                        if bucket:
                            totals[bucket] += time.perf_counter() - t
                    batch_correct = int((out.argmax(axis=1) == y_train[mine]).sum())
                if comm is not None:
                    t = time.perf_counter()
                    loss_total, batch_correct = distributed.allreduce_gradients(
                        model, comm, len(mine), sums=(batch_loss * len(mine), batch_correct))
                    totals["allreduce"] += time.perf_counter() - t
                    batch_loss, batch_correct = float(loss_total) / len(idx), round(float(batch_correct))
                optimizer.step()
                loss = batch_loss
                loss_sum += loss * len(idx)
                correct += batch_correct
                if on_batch:
                    on_batch(epoch, b + 1, batches, loss)
            seconds = time.perf_counter() - start
            epoch_total += seconds
            loss = loss_sum / len(y_train)
            if on_epoch:
                on_epoch(epoch, loss, correct / len(y_train), seconds)

        test = np.arange(len(y_test)) if comm is None else distributed.shard(np.arange(len(y_test)), comm)
        predictions = np.concatenate([model.forward(x_test[test[i:i + 256]]).argmax(axis=1)
                                      for i in range(0, len(test), 256)] or [np.zeros(0, np.int64)])
        correct = int((predictions == y_test[test]).sum())
        if comm is not None:
            correct = comm.allreduce(correct)
    op_seconds = {k: v / epochs for k, v in totals.items()}
    op_seconds["other"] = epoch_total / epochs - sum(op_seconds.values())
    return TrainResult(backend, epochs, correct / len(y_test), correct, len(y_test), loss,
                       epoch_total / epochs, op_seconds, model)


# --------------------------------------------------------------------------
# command line: add_arguments(parser) and run(args), the contract of every subcommand
# --------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def add_arguments(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--backend", help="backend to train with (default: the active one, see `cconv info`)")
    group.add_argument("--compare", action="store_true",
                       help="train once per available backend with the same seed; print a side-by-side table")
    parser.add_argument("--epochs", type=_positive_int, default=DEFAULTS["epochs"],
                        help="passes over the 1437 training images (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULTS["batch_size"],
                        help="images per SGD step (default: %(default)s)")
    parser.add_argument("--lr", type=_positive_float, default=DEFAULTS["lr"],
                        help="initial learning rate, cosine-decayed over the epochs (default: %(default)s)")
    parser.add_argument("--momentum", type=float, default=DEFAULTS["momentum"],
                        help="SGD momentum (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="seed of the initialisation and shuffling (default: %(default)s)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="threads for the kernels (default: cconv.get_num_threads())")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="parameter and activation dtype (default: %(default)s)")
    parser.add_argument("--distributed", action="store_true",
                        help="run as one rank of an MPI job (mpiexec -n N cconv train --distributed): "
                             "each rank trains on its share of every batch; needs cconv[mpi]")


def _table(results):
    """Side-by-side table: ms per epoch in each op bucket, then accuracy, one column per backend."""
    width = max(9, *(len(r.backend) + 1 for r in results))
    head = f"{'time per epoch (ms)':<21}" + "".join(f"{r.backend:>{width}}" for r in results)
    rows = [head]
    for bucket in results[0].op_seconds:  # BUCKETS, and "allreduce" in a distributed run
        rows.append(f"{bucket:<21}" + "".join(f"{r.op_seconds[bucket] * 1e3:>{width}.1f}" for r in results))
    rows.append(f"{'total':<21}" + "".join(f"{r.epoch_seconds * 1e3:>{width}.1f}" for r in results))
    rows.append(f"{'final train loss':<21}" + "".join(f"{r.final_loss:>{width}.4f}" for r in results))
    rows.append(f"{'test accuracy (%)':<21}" + "".join(f"{r.accuracy * 100:>{width}.2f}" for r in results))
    return "\n".join(rows)


def run(args):
    """Run ``cconv train`` with parsed ``args``; returns the exit status."""
    if not args.distributed:
        return _run(args, None)
    from ._cli import CommandError

    if args.compare:
        raise CommandError("--distributed trains one backend: it cannot be combined with --compare")
    try:
        from . import distributed
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    comm = distributed.init(abort_on_error=False)  # _run_rank ends every rank on an error itself
    return _run(args, comm) if comm.Get_size() == 1 else _run_rank(args, comm)


def _run_rank(args, comm):
    """One rank of an MPI job: a failure here ends every rank (MPI_Abort), not just this one,
    which would leave the others waiting forever for its gradients."""
    import traceback

    from ._cli import CommandError

    rank, size = comm.Get_rank(), comm.Get_size()
    try:
        return _run(args, comm)
    except CommandError as exc:
        message, status = str(exc), 2
    except KeyboardInterrupt:
        message, status = "interrupted", 130
    except BaseException as exc:  # noqa: BLE001 - any failure must end the whole job
        message, status = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", 1
    print(f"cconv: error on rank {rank} of {size}: {message}\ncconv: ending all {size} ranks",
          file=sys.stderr, flush=True)
    comm.Abort(status)
    return status  # not reached: Abort ends this process too


def _run(args, comm):
    from ._cli import CommandError, ProgressBar

    leader = comm is None or comm.Get_rank() == 0  # the one rank that prints
    if args.threads is not None:
        set_num_threads(args.threads)
    if args.compare:
        backends = _backends.available_backends()
    else:
        backends = [args.backend or _backends.get_backend()]
        try:
            _backends.resolve(backends[0])
        except (ValueError, TypeError) as exc:
            raise CommandError(str(exc)) from None
    x_train, _, x_test, _ = split_digits()
    threads = get_num_threads()
    workers = f"{threads} thread{'s' if threads > 1 else ''}"
    if comm is not None:
        workers = f"{comm.Get_size()} rank{'s' if comm.Get_size() > 1 else ''} x {workers}"
    if leader:
        print(f"cconv train: 8x8 digits, {len(x_train)} train / {len(x_test)} test images\n"
              f"{args.epochs} epoch{'s' if args.epochs > 1 else ''}, batch {args.batch_size}, "
              f"lr {args.lr} (cosine decay), momentum {args.momentum}, seed {args.seed}, "
              f"{workers}, {args.dtype}", flush=True)

    results = []
    for backend in backends:
        bar = None

        def on_batch(epoch, batch, batches, loss):
            nonlocal bar
            if bar is None:
                bar = ProgressBar(batches, f"{backend} epoch {epoch}/{args.epochs}")
            bar.update(batch, f"loss {loss:.4f}")

        def on_epoch(epoch, loss, accuracy, seconds):
            nonlocal bar
            if bar is not None:
                bar.close()
                bar = None
            print(f"[{backend}] epoch {epoch:>2}/{args.epochs}  loss {loss:.4f}  "
                  f"train accuracy {accuracy * 100:6.2f}%  {seconds:6.2f} s", flush=True)

        result = train_digits(backend, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              momentum=args.momentum, seed=args.seed, dtype=np.dtype(args.dtype),
                              on_batch=on_batch if leader else None, on_epoch=on_epoch if leader else None,
                              comm=comm)
        if leader:
            print(f"[{backend}] test accuracy: {result.accuracy * 100:.2f}% "
                  f"({result.correct}/{result.test_size}), {result.epoch_seconds:.2f} s per epoch", flush=True)
        results.append(result)
    if leader:
        print()
        print(_table(results))
    return 0
