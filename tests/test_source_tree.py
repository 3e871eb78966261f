"""A source checkout whose compiled modules are not built: what users and test runs see.

Python puts the current directory first on ``sys.path`` (``python -m ...``), so in a clone's
root ``import cconv`` finds the checkout's ``cconv/``, not the installed package. Without the
compiled modules there, cconv must say so plainly (the path, and the two ways out), and a test
run must stop instead of testing the NumPy reference against itself, from the root and from
``tests/`` alike, unless it is explicitly pure-Python.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import cconv

PACKAGE_DIR = pathlib.Path(cconv.__file__).resolve().parent
TESTS_DIR = pathlib.Path(__file__).resolve().parent


@pytest.fixture
def unbuilt_checkout(tmp_path):
    """A copy of the package's Python sources in a checkout layout, without compiled modules."""
    root = tmp_path / "checkout"
    shutil.copytree(PACKAGE_DIR, root / "cconv",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "_pure_python", "__pycache__"))
    (root / "setup.py").write_text("# the checkout's build script\n")
    (root / "src").mkdir()
    (root / "src" / "_conv.pyx").write_text("# a Cython source\n")
    (root / "tests").mkdir()
    shutil.copy(TESTS_DIR / "conftest.py", root / "tests")
    (root / "tests" / "test_one.py").write_text("def test_one():\n    assert 1\n")
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    return root


# Runs module argv[1] as `python -m` would, after dropping setuptools' editable-install finders:
# with an editable install of cconv, such a finder would hand the checkout copy the compiled
# modules of the developer's build, which a user's unbuilt clone does not have.
_AS_MODULE = ("import runpy, sys\n"
              "sys.meta_path[:] = [f for f in sys.meta_path\n"
              "                    if not str(getattr(f, '__module__', '')).startswith('__editable__')]\n"
              "module = sys.argv.pop(1)\n"
              "runpy.run_module(module, run_name='__main__', alter_sys=True)\n")


def _run(args, cwd, **env):
    """``python -m`` or ``python -c`` in ``cwd``, with no cconv settings from this run's environment."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("CCONV_REQUIRE_COMPILED", "CCONV_PURE_PYTHON", "CCONV_BACKEND", "PYTHONPATH")}
    environment.update(env)
    if args[0] == "-m":
        args = ["-c", _AS_MODULE, *args[1:]]
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=120)


def _explains_itself(text, root):
    assert f"cconv was imported from {root / 'cconv'}, a source checkout" in text, text
    assert f"`pip install -e .` in {root}" in text, text          # way out 1: build in place
    assert "run Python from another directory" in text, text      # way out 2: use the installed one
    assert "circular import" not in text and "partially initialized" not in text, text


def test_cli_in_an_unbuilt_checkout_explains_itself(unbuilt_checkout):
    run = _run(["-m", "cconv", "info"], cwd=unbuilt_checkout)
    assert run.returncode == 0, run.stderr
    assert f"imported from      : {unbuilt_checkout / 'cconv'}" in run.stdout
    _explains_itself(run.stdout, unbuilt_checkout)
    _explains_itself(run.stderr, unbuilt_checkout)               # the RuntimeWarning says the same
    assert "falling back to the slower NumPy reference backend" in run.stderr


def test_require_compiled_in_an_unbuilt_checkout_raises_the_explanation(unbuilt_checkout):
    run = _run(["-m", "cconv", "info"], cwd=unbuilt_checkout, CCONV_REQUIRE_COMPILED="1")
    assert run.returncode != 0
    assert "ImportError: CCONV_REQUIRE_COMPILED=1" in run.stderr
    _explains_itself(run.stderr, unbuilt_checkout)


@pytest.mark.parametrize("where", [".", "tests"])
@pytest.mark.parametrize("command", [["-m", "pytest"], ["-m", "pytest", "tests"]], ids=["plain", "path"])
def test_a_test_run_without_the_extension_fails_loudly(unbuilt_checkout, where, command):
    if where == "tests":
        command = command[:2]   # from tests/ the README runs plain pytest
        # From tests/ the checkout is not on sys.path: make it importable the way a
        # non-editable "pip install ." of the unbuilt tree would.
        run = _run([*command, "-q", "-p", "no:cacheprovider"], cwd=unbuilt_checkout / where,
                   PYTHONPATH=str(unbuilt_checkout))
    else:
        run = _run([*command, "-q", "-p", "no:cacheprovider"], cwd=unbuilt_checkout)
    assert run.returncode not in (0, 5), run.stdout + run.stderr   # 5: no tests collected
    assert "compiled backend is not available" in run.stderr, run.stdout + run.stderr
    assert "passed" not in run.stdout
    _explains_itself(run.stderr, unbuilt_checkout)


def test_an_explicitly_pure_python_test_run_goes_ahead(unbuilt_checkout):
    run = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=unbuilt_checkout, CCONV_PURE_PYTHON="1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert "RuntimeWarning" not in run.stdout + run.stderr   # pure-Python by choice: no fallback warning
