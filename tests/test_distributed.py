"""cconv.distributed and ``cconv train --distributed``: data-parallel training over MPI.

The multi-rank tests launch ``mpiexec -n 2`` on this file (its ``__main__`` part is the rank
program) and compare with the same training run in this process. Each launch has a timeout
and fails, killing what it started, instead of hanging. Without mpi4py or mpiexec those
tests are skipped, saying why; ``CCONV_REQUIRE_MPI=1`` (set in CI) makes that a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cconv import _train, nn

HERE = os.path.abspath(__file__)
RANKS = 2


def _mpi_status():
    """(cconv.distributed or None, path of mpiexec or None, why MPI tests cannot run or None)."""
    try:
        from cconv import distributed
    except ImportError as exc:
        return None, None, f"cconv.distributed is unavailable: {exc}"
    # The mpiexec beside this interpreter belongs to the MPI wheel mpi4py loads; prefer it.
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        return distributed, None, "no mpiexec beside the interpreter or on PATH"
    return distributed, mpiexec, None


distributed, MPIEXEC, MPI_MISSING = _mpi_status()
REQUIRE_MPI = os.environ.get("CCONV_REQUIRE_MPI", "").strip() not in ("", "0")


def _need(what_is_missing):
    if what_is_missing:
        if REQUIRE_MPI:
            pytest.fail(f"CCONV_REQUIRE_MPI=1 but {what_is_missing}")
        pytest.skip(what_is_missing)


@pytest.fixture
def mpi():
    """cconv.distributed, for tests that run in this process (a 1-rank MPI world)."""
    _need(distributed is None and MPI_MISSING)
    return distributed


@pytest.fixture
def mpirun(tmp_path):
    """``mpirun(*args, timeout=...)``: run ``mpiexec -n 2 args`` in ``tmp_path``; a timeout fails."""
    _need(MPI_MISSING)

    def run(*args, timeout=120):
        # OpenMPI refuses to run as root without these (CI runs as root); MPICH ignores them.
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        command = [MPIEXEC, "-n", str(RANKS), *args]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=tmp_path, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM: mpiexec then ends the ranks it started (they run in sessions of their own,
            # out of reach of a signal to its process group); SIGKILL if it does not exit.
            proc.terminate()
            try:
                out, err = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            pytest.fail(f"{' '.join(command)} did not finish in {timeout} s (hung?)\n{out}\n{err}")
        return subprocess.CompletedProcess(command, proc.returncode, out, err)

    return run


def _rank_program(*args):
    return [sys.executable, HERE, *args]


# --------------------------------------------------------------------------------------------
# without MPI
# --------------------------------------------------------------------------------------------

def test_import_cconv_does_not_import_mpi4py():
    code = ("import sys, cconv, cconv.nn, cconv._train, cconv._cli\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n")
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


_BLOCK_MPI4PY = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'mpi4py':\n"
    "            raise ImportError('No module named mpi4py (blocked by the test)')\n"
    "sys.meta_path.insert(0, Block())\n")


def test_without_mpi4py_the_error_names_the_extra():
    code = _BLOCK_MPI4PY + (
        "try:\n"
        "    import cconv.distributed\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported without mpi4py')\n"
        "from cconv.__main__ import main\n"
        "sys.exit(main(['train', '--distributed']))\n")
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert 'pip install "cconv[mpi]"' in run.stdout and "blocked by the test" in run.stdout
    assert run.stderr.startswith("cconv: error: cconv.distributed needs mpi4py")
    assert 'pip install "cconv[mpi]"' in run.stderr and "Traceback" not in run.stderr


# --------------------------------------------------------------------------------------------
# one rank, in this process
# --------------------------------------------------------------------------------------------

class _Ranks:
    """The rank/size part of a communicator, to check shard() for any world size."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):  # mpi4py's spelling
        return self.rank

    def Get_size(self):
        return self.size


def test_shard_splits_each_batch_exactly_once(mpi):
    for size in range(1, 7):
        for length in range(20):
            batch = np.random.default_rng(length).permutation(100)[:length]
            shares = [mpi.shard(batch, _Ranks(rank, size)) for rank in range(size)]
            np.testing.assert_array_equal(np.concatenate(shares), batch)  # none dropped, none twice
            lengths = [len(share) for share in shares]
            assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
            assert all(np.shares_memory(share, batch) for share in shares if len(share))
    np.testing.assert_array_equal(mpi.shard([5, 6, 7], _Ranks(1, 2)), [7])  # any 1-d sequence
    with pytest.raises(ValueError, match="1-d"):
        mpi.shard(np.zeros((2, 3), np.int64), _Ranks(0, 2))


class _CountingComm:
    """A 1-rank communicator that records each Allreduce's buffer size."""

    def __init__(self, comm):
        self.comm, self.allreduce_sizes = comm, []

    def Allreduce(self, send, recv, op):
        self.allreduce_sizes.append(np.asarray(recv).size)
        return self.comm.Allreduce(send, recv, op=op)


def _every_layer_model(rng, dtype):
    """A model with each cconv.nn layer type (and a conv without bias): (N, 1, 8, 8) -> (N, 10)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, rng=rng, dtype=dtype), nn.ReLU(), nn.AvgPool2d(2),       # 6x4x4
        nn.Conv2d(6, 8, 3, padding=1, groups=2, bias=False, rng=rng, dtype=dtype), nn.ReLU(),  # 8x4x4
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32, 10, rng=rng, dtype=dtype))


def test_allreduce_is_one_fused_message_in_place(mpi):
    from mpi4py import MPI

    model = _every_layer_model(np.random.default_rng(0), np.float64)
    x, y = nn.load_digits(np.float64)
    nn.SoftmaxCrossEntropy().forward(model.forward(x[:8]), y[:8])
    model.backward(np.ones((8, 10)) / 8)
    grads = [grad for _, grad in model.parameters()]
    before = [grad.copy() for grad in grads]
    comm = _CountingComm(MPI.COMM_SELF)
    sums = mpi.allreduce_gradients(model, comm, 8, sums=(2.5, 3))
    # One message: every gradient (5 arrays), the sample count and the two sums.
    assert comm.allreduce_sizes == [sum(g.size for g in grads) + 1 + 2]
    np.testing.assert_array_equal(sums, [2.5, 3.0])
    assert [g is h for g, h in zip(grads, (grad for _, grad in model.parameters()))] == [True] * 5
    for grad, old in zip(grads, before):  # one rank: (8 * g) / 8, rounding aside
        np.testing.assert_allclose(grad, old, rtol=1e-15)
    with pytest.raises(ValueError, match="no rank had a sample"):
        mpi.allreduce_gradients(model, comm, 0)
    with pytest.raises(ValueError, match="local_size must be >= 0"):
        mpi.allreduce_gradients(model, comm, -1)
    with pytest.raises(TypeError, match="cconv.nn layer"):
        mpi.allreduce_gradients(object(), comm)
    with pytest.raises(ValueError, match="no parameters"):
        mpi.allreduce_gradients(nn.ReLU(), comm)
    with pytest.raises(ValueError, match="root must be a rank"):
        mpi.broadcast_parameters(model, MPI.COMM_SELF, root=1)


# --------------------------------------------------------------------------------------------
# two ranks under mpiexec, against one process
# --------------------------------------------------------------------------------------------

_BATCH_SIZES = (31, 32, 1, 7)  # uneven shares, and a batch of 1 leaves one rank with nothing


def _train_steps(comm, steps=20):
    """``steps`` SGD steps of the every-layer model on the digits in float64; its parameters.

    With ``comm``, this rank trains on its shares; without, one process on whole batches.
    """
    x, y = nn.load_digits(np.float64)
    rng = np.random.default_rng(7)
    model = _every_layer_model(rng, np.float64)
    loss_fn = nn.SoftmaxCrossEntropy()
    if comm is not None:
        distributed.broadcast_parameters(model, comm)
    optimizer = nn.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    order, start = rng.permutation(len(y)), 0
    for step in range(steps):
        batch = order[start:start + _BATCH_SIZES[step % len(_BATCH_SIZES)]]
        start += len(batch)
        mine = batch if comm is None else distributed.shard(batch, comm)
        if len(mine):
            loss_fn.forward(model.forward(x[mine]), y[mine])
            model.backward(loss_fn.backward())
        if comm is not None:
            distributed.allreduce_gradients(model, comm, len(mine))
        optimizer.step()
    return [param for param, _ in model.parameters()]


def _assert_parameters_close(actual, expected, rtol):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype
        error = np.max(np.abs(a - e)) / np.max(np.abs(e))
        assert error <= rtol, f"parameter {i}: relative difference {error:.2e} > {rtol:.0e}"


def _saved(path):
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def test_float64_twenty_steps_match_one_process(mpirun, tmp_path):
    run = mpirun(*_rank_program("steps", str(tmp_path / "params.npz")))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ranks hold identical parameters" in run.stdout
    expected = _train_steps(None)
    actual = _saved(tmp_path / "params.npz")
    _assert_parameters_close(actual, expected, 1e-10)


def test_float32_epoch_of_cconv_train_matches_one_process(mpirun, tmp_path):
    run = mpirun(*_rank_program("epoch", str(tmp_path / "params.npz")))
    assert run.returncode == 0, run.stdout + run.stderr
    single = _train.train_digits(epochs=1)
    _assert_parameters_close(_saved(tmp_path / "params.npz"), [p for p, _ in single.model.parameters()], 1e-4)
    loss, correct = re.search(r"loss ([\d.]+) correct (\d+)", run.stdout).groups()
    assert float(loss) == pytest.approx(single.final_loss, rel=1e-4)
    assert abs(int(correct) - single.correct) <= 1


def _test_accuracy(output):
    found = re.findall(r"test accuracy: ([\d.]+)%", output)
    assert len(found) == 1, output
    return float(found[0])


def test_cconv_train_distributed_matches_cconv_train(mpirun):
    start = time.perf_counter()
    run = mpirun(sys.executable, "-m", "cconv", "train", "--distributed", timeout=300)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, run.stdout + run.stderr
    # Rank 0 alone prints: one header, one line per epoch, one accuracy, one table.
    assert run.stdout.count("cconv train: 8x8 digits") == 1
    assert f"{RANKS} ranks x 1 thread" in run.stdout
    assert len(re.findall(r"epoch +\d+/10 ", run.stdout)) == 10
    assert run.stdout.count("time per epoch (ms)") == 1 and "\nallreduce " in run.stdout
    single = subprocess.run([sys.executable, "-m", "cconv", "train", "--threads", "1"], check=False,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    assert abs(_test_accuracy(run.stdout) - _test_accuracy(single.stdout)) <= 0.5, (run.stdout, single.stdout)
    print(f"mpiexec -n {RANKS} cconv train --distributed: {seconds:.1f} s")


def test_a_failing_rank_ends_every_rank(mpirun):
    """Rank 1 fails mid-epoch while rank 0 waits for its gradients: both end, with the reason."""
    start = time.perf_counter()
    run = mpirun(*_rank_program("fail-in-cli"), timeout=120)
    assert run.returncode != 0
    assert "cconv: error on rank 1 of 2: RuntimeError: injected failure" in run.stderr, run.stderr
    assert "ending all 2 ranks" in run.stderr
    assert time.perf_counter() - start < 60


def test_an_uncaught_exception_after_init_ends_every_rank(mpirun):
    run = mpirun(*_rank_program("fail-in-script"), timeout=120)
    assert run.returncode != 0
    assert "RuntimeError: injected failure" in run.stderr, run.stderr
    assert "uncaught RuntimeError on rank 1 of 2; aborting every rank" in run.stderr


def test_different_models_on_different_ranks_are_refused(mpirun):
    run = mpirun(*_rank_program("mismatch"), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for rank, verdict in ((0, "match"), (1, "differ from")):
        assert (f"rank {rank}: ValueError: the model's parameters differ between ranks (shapes or dtypes "
                f"on rank {rank} {verdict} rank 0's)") in run.stdout, run.stdout


# --------------------------------------------------------------------------------------------
# the rank program: python test_distributed.py <what> [output], under mpiexec
# --------------------------------------------------------------------------------------------

def _rank_main(what, *args):
    comm = distributed.init()
    if comm.Get_size() != RANKS:  # e.g. an mpiexec of another MPI than the one mpi4py loaded
        raise SystemExit(f"expected {RANKS} ranks, got {comm.Get_size()}: mpiexec and mpi4py's MPI differ?")
    rank = comm.Get_rank()
    if what == "steps":
        params = _train_steps(comm)
        gathered = comm.gather(params, root=0)
        if rank == 0:
            assert all(np.array_equal(a, b) for other in gathered for a, b in zip(params, other))
            print("ranks hold identical parameters")
            np.savez(args[0], *params)
    elif what == "epoch":
        result = _train.train_digits(epochs=1, comm=comm)
        if rank == 0:
            print(f"loss {result.final_loss!r} correct {result.correct}")
            np.savez(args[0], *[param for param, _ in result.model.parameters()])
    elif what == "fail-in-cli":
        from cconv.__main__ import main

        if rank == 1:
            calls, backward = [0], nn.Linear.backward

            def failing_backward(self, grad):
                calls[0] += 1
                if calls[0] == 5:
                    raise RuntimeError("injected failure")
                return backward(self, grad)

            nn.Linear.backward = failing_backward
        sys.exit(main(["train", "--distributed", "--epochs", "1"]))
    elif what == "fail-in-script":
        model = nn.Linear(4, 2, rng=np.random.default_rng(0))
        if rank == 1:
            raise RuntimeError("injected failure")
        distributed.allreduce_gradients(model, comm, 1)  # waits for rank 1, which never comes
        raise SystemExit("rank 0 was not aborted")
    elif what == "mismatch":
        model = nn.Linear(4, 2 + rank, rng=np.random.default_rng(0))
        try:
            distributed.broadcast_parameters(model, comm)
        except ValueError as exc:
            print(f"rank {rank}: ValueError: {exc}", flush=True)
        else:
            raise SystemExit(f"rank {rank}: the mismatch went unnoticed")
    else:
        raise SystemExit(f"unknown rank program {what!r}")


if __name__ == "__main__":
    _rank_main(*sys.argv[1:])
