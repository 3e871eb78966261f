"""Data-parallel training of :mod:`cconv.nn` models over MPI (``pip install "cconv[mpi]"``).

Every rank (process) holds the whole model. Each global batch is split across the ranks
(:func:`shard`); each rank runs forward and backward on its share, then
:func:`allreduce_gradients` replaces every rank's gradients by the gradient of the whole
batch, so every rank takes the same optimiser step and the models stay identical. Launch
the script on N ranks with ``mpiexec -n N python train.py``::

    comm = distributed.init()                        # MPI.COMM_WORLD; comm.rank, comm.size
    model = build_model(np.random.default_rng(0))    # same code on every rank
    distributed.broadcast_parameters(model, comm)    # start from rank 0's weights
    optimizer = nn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for batch in np.array_split(rng.permutation(n), n // 32):   # same rng seed on every rank
        mine = distributed.shard(batch, comm)
        loss_fn.forward(model.forward(x[mine]), y[mine])
        model.backward(loss_fn.backward())
        distributed.allreduce_gradients(model, comm, len(mine))
        optimizer.step()

The loss is a mean over each rank's share, so the whole batch's gradient is
``sum_r (n_r / B) * g_r`` for shares of ``n_r`` samples out of ``B``: that is what
:func:`allreduce_gradients` computes, in one message per step. The result equals a
single process's training on batch ``B`` up to floating-point summation order.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from ._threads import set_num_threads

try:
    from mpi4py import MPI
except (ImportError, RuntimeError) as exc:  # RuntimeError: mpi4py found no MPI library to load
    raise ImportError(
        f'cconv.distributed needs mpi4py and an MPI runtime: pip install "cconv[mpi]" '
        f"({type(exc).__name__}: {exc})") from exc

__all__ = ["allreduce_gradients", "broadcast_parameters", "init", "shard"]


def init(comm=None, *, abort_on_error=True):
    """The communicator to train over: ``MPI.COMM_WORLD`` unless ``comm`` is given.

    ``comm.rank`` is this process's number (0 .. ``comm.size - 1``) and ``comm.size`` the
    number of ranks. Unless ``OMP_NUM_THREADS`` is set, cconv's thread count becomes this
    host's CPUs divided by the ranks running on it, so that ranks sharing a host do not
    oversubscribe its cores. With ``abort_on_error`` (the default), an uncaught exception on
    any rank prints its traceback and aborts every rank (``MPI_Abort``, exit status 1)
    instead of leaving the others waiting forever in a collective call.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator, got {type(comm).__name__}")
    if not os.environ.get("OMP_NUM_THREADS", "").strip():
        set_num_threads(_cpus_per_rank(comm))
    if abort_on_error:
        _abort_on_uncaught_exception(comm)
    return comm


def _cpus_per_rank(comm):
    """This host's usable CPUs shared evenly among the ranks of ``comm`` on this host (>= 1)."""
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks_here = local.Get_size()
    finally:
        local.Free()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, cpus // ranks_here)


def _abort_on_uncaught_exception(comm):
    if getattr(sys.excepthook, "_cconv_aborts", False):
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        if comm.Get_size() > 1:
            print(f"cconv.distributed: uncaught {kind.__name__} on rank {comm.Get_rank()} of "
                  f"{comm.Get_size()}; aborting every rank", file=sys.stderr, flush=True)
            # The launcher forwards each rank's output asynchronously and stops forwarding once
            # MPI_Abort tears the job down: give it a moment to pass the traceback on (seen lost
            # on a loaded machine otherwise).
            time.sleep(0.5)
            comm.Abort(1)

    hook._cconv_aborts = True
    sys.excepthook = hook


def shard(indices, comm):
    """This rank's share of one global batch's ``indices`` (a 1-d sequence), as a view.

    Rank ``r`` of ``P`` gets a contiguous slice; shares differ by at most one sample (the
    first ``len(indices) % P`` ranks get one more), so the ranks' shares in rank order are
    exactly ``indices``: no sample is dropped or used twice. A rank's share is empty when
    the batch has fewer samples than there are ranks.
    """
    indices = np.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(f"indices must be 1-d (one global batch), got shape {indices.shape}")
    size, rank = comm.Get_size(), comm.Get_rank()
    base, extra = divmod(len(indices), size)
    start = rank * base + min(rank, extra)
    return indices[start:start + base + (rank < extra)]


def _pairs(model):
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        raise TypeError(f"model must be a cconv.nn layer (with parameters()), got {type(model).__name__}")
    pairs = list(parameters())
    if not pairs:
        raise ValueError("the model has no parameters to synchronise")
    return pairs


def _check_root(root, comm):
    if not isinstance(root, (int, np.integer)) or isinstance(root, bool) or not 0 <= root < comm.Get_size():
        raise ValueError(f"root must be a rank in [0, {comm.Get_size()}), got {root!r}")


def broadcast_parameters(model, comm, root=0):
    """Overwrite every parameter of ``model`` (in place) with rank ``root``'s, in one broadcast.

    Call it once before training, on every rank. It also checks that every rank built the
    same model (same parameter shapes and dtypes, in the same order) and raises ValueError
    on every rank if not: the fused messages of :func:`allreduce_gradients` rely on it.
    """
    _check_root(root, comm)
    params = [param for param, _ in _pairs(model)]
    layout = [(param.shape, param.dtype.str) for param in params]
    same = layout == comm.bcast(layout, root=root)
    if not comm.allreduce(same, op=MPI.LAND):
        raise ValueError(f"the model's parameters differ between ranks (shapes or dtypes on rank "
                         f"{comm.Get_rank()} {'match' if same else 'differ from'} rank {root}'s): "
                         f"build the same model on every rank")
    dtype = np.result_type(*params)
    if comm.Get_rank() == root:
        buffer = np.concatenate([param.ravel() for param in params]).astype(dtype, copy=False)
    else:
        buffer = np.empty(sum(param.size for param in params), dtype)
    comm.Bcast(buffer, root=root)
    _unpack(buffer, params)


def allreduce_gradients(model, comm, local_size=None, *, sums=()):
    """Replace every parameter gradient of ``model`` (in place) by the whole batch's gradient.

    ``local_size``: the number of samples this rank's loss was averaged over (its share of
    the global batch, possibly 0); each rank's gradient counts in proportion to it. None
    weights every rank equally. All gradients travel in one fused buffer: one
    ``MPI_Allreduce`` per call, however many layers. ``sums``: a few numbers (e.g. a loss
    sum and a count of correct predictions) added up across ranks in the same message;
    returned as a float64 array (empty if none), carried at the gradients' precision.
    """
    grads = [grad for _, grad in _pairs(model)]
    weight = 1.0 if local_size is None else float(local_size)
    if not weight >= 0:
        raise ValueError(f"local_size must be >= 0, got {local_size!r}")
    sums = np.asarray(sums, dtype=np.float64).ravel()
    dtype = np.result_type(*grads)
    count = sum(grad.size for grad in grads)
    buffer = np.empty(count + 1 + sums.size, dtype)
    if weight:
        offset = 0
        for grad in grads:
            np.multiply(grad.reshape(-1), weight, out=buffer[offset:offset + grad.size])
            offset += grad.size
    else:  # an empty share: its stale gradients (NaN even) must not leak into the sum
        buffer[:count] = 0
    buffer[count] = weight
    buffer[count + 1:] = sums
    comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
    total = buffer[count]
    if not total > 0:  # the same on every rank, so every rank raises: no rank is left waiting
        raise ValueError("no rank had a sample in this batch (every local_size was 0)")
    buffer[:count] /= total
    _unpack(buffer, grads)
    return buffer[count + 1:].astype(np.float64)


def _unpack(buffer, arrays):
    """Copy consecutive slices of the flat ``buffer`` into ``arrays``, in place."""
    offset = 0
    for array in arrays:
        array[...] = buffer[offset:offset + array.size].reshape(array.shape)
        offset += array.size
