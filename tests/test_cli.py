"""The command line: ``python -m cconv info`` / ``train`` in fresh processes (as a user runs
them), and argument errors through :func:`cconv.__main__.main` in-process."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import cconv
from cconv.__main__ import main


def _cconv(*args, env=None, timeout=120):
    environ = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "cconv", *args], capture_output=True, text=True,
                          env=environ, timeout=timeout)


def _field(output, name):
    match = re.search(rf"^{re.escape(name)}\s*: (.*)$", output, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{output}"
    return match.group(1).strip()


def test_info_tells_the_truth():
    run = _cconv("info")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"cconv {cconv.__version__} ")
    assert _field(run.stdout, "backends available").split(", ") == cconv.available_backends()
    assert _field(run.stdout, "active backend") == cconv.get_backend()
    assert _field(run.stdout, "threads") == str(cconv.get_num_threads())
    compiled = _field(run.stdout, "compiled backend")
    info = cconv.backend_info()
    assert _field(run.stdout, "imported from") == os.path.dirname(os.path.abspath(cconv.__file__))
    if info["compiled"]:
        assert compiled.startswith("yes")
    elif info["pure_python"]:  # no extension by design: said so, without alarm
        assert compiled.startswith("none, by design") and "MISSING" not in run.stdout
    else:  # the reason the extension failed to import is shown, not just "no"
        assert compiled.startswith("MISSING") and info["compiled_import_error"] in compiled
    assert "Traceback" not in run.stderr


def test_info_explains_a_missing_compiled_extension():
    """Block the extension modules' import, as a failed build would, and ask `cconv info`."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('cconv._conv', 'cconv._pool'):\n"
        "            raise ImportError('extension blocked by the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from cconv.__main__ import main\n"
        "sys.exit(main(['info']))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CCONV_REQUIRE_COMPILED", "CCONV_BACKEND")}
    run = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert _field(run.stdout, "compiled backend").startswith("MISSING")
    assert "ImportError: extension blocked by the test" in run.stdout
    assert _field(run.stdout, "active backend") == "numpy"
    assert "cython" not in _field(run.stdout, "backends available")


def test_info_follows_cconv_backend_environment_variable():
    run = _cconv("info", "--json", env={"CCONV_BACKEND": "numpy"})
    assert run.returncode == 0, run.stderr
    assert '"active": "numpy"' in run.stdout
    text = _cconv("info", env={"CCONV_BACKEND": "numpy"})
    assert _field(text.stdout, "active backend") == "numpy"


def test_train_one_epoch_reports_accuracy_and_op_times():
    run = _cconv("train", "--epochs", "1", "--seed", "3")
    assert run.returncode == 0, run.stderr
    backend = cconv.get_backend()
    accuracy = re.search(rf"^\[{backend}\] test accuracy: ([\d.]+)% \((\d+)/360\)", run.stdout, re.MULTILINE)
    assert accuracy, run.stdout
    assert float(accuracy.group(1)) > 50  # one epoch is far above chance (10%)
    assert float(accuracy.group(1)) == pytest.approx(int(accuracy.group(2)) / 3.6, abs=0.006)
    table = run.stdout[run.stdout.index("time per epoch (ms)"):].splitlines()
    assert table[0].split()[-1] == backend
    rows = {line[:21].strip(): float(line[21:]) for line in table[1:]}
    parts = ("conv forward", "conv backward", "pool forward", "pool backward", "other")
    assert rows["total"] == pytest.approx(sum(rows[p] for p in parts), abs=0.3)
    assert all(rows[p] >= 0 for p in ("conv forward", "conv backward", "pool forward", "pool backward"))
    assert rows["test accuracy (%)"] == float(accuracy.group(1))


def test_train_defaults_reach_97_percent():
    """The README's first command: default settings, default backend (its time is printed, not
    asserted: a shared machine makes any bound on it a flaky test)."""
    run = _cconv("train", timeout=600)
    assert run.returncode == 0, run.stderr
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", run.stdout).group(1))
    assert accuracy >= 97.0, run.stdout
    assert f"[{cconv.get_backend()}] epoch" in run.stdout


@pytest.fixture
def restore_threads():
    threads = cconv.get_num_threads()
    yield
    cconv.set_num_threads(threads)


def test_train_compare_has_one_column_per_backend(capsys, restore_threads):
    assert main(["train", "--compare", "--epochs", "1", "--batch-size", "128", "--threads", "1"]) == 0
    assert cconv.get_num_threads() == 1
    out = capsys.readouterr().out
    header = out[out.index("time per epoch (ms)"):].splitlines()[0]
    assert header.split()[4:] == cconv.available_backends()
    # Same seed, same data, same arithmetic up to rounding: every backend lands on the same accuracy
    # give or take a couple of borderline test images.
    accuracies = [float(a) for a in re.findall(r"test accuracy: ([\d.]+)%", out)]
    assert len(accuracies) == len(cconv.available_backends())
    assert max(accuracies) - min(accuracies) <= 1.0


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "--epochs: expected a positive integer"),
    (["train", "--lr", "abc"], "--lr: expected a positive number"),
    (["train", "--backend", "nosuch"], "unknown or unavailable backend 'nosuch'"),
    (["train", "--backend", "numpy", "--compare"], "not allowed with argument"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cconv") and all(cmd in out for cmd in ("info", "train", "bench"))
