"""What the installed package ships and reports: no build sources, one version, the build mode."""
from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import urllib.parse

import pytest

import cconv
from cconv import _backends

PACKAGE_DIR = pathlib.Path(cconv.__file__).resolve().parent
PYPROJECT = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"
PURE_PYTHON_MARKER = PACKAGE_DIR / "_pure_python"  # written by setup.py under CCONV_PURE_PYTHON=1


def test_no_build_sources_in_the_package():
    """Wheels carry the compiled modules, not the Cython sources or the C generated from them."""
    sources = sorted(str(p.relative_to(PACKAGE_DIR)) for p in PACKAGE_DIR.rglob("*")
                     if p.suffix in {".pyx", ".pxd", ".c", ".h"})
    assert sources == []


def _editable_install_of(dist, root):
    """True if ``dist`` is a ``pip install -e`` of the checkout at ``root``."""
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if not direct_url.get("dir_info", {}).get("editable"):
        return False
    return pathlib.Path(urllib.parse.urlparse(direct_url["url"]).path).resolve() == root


def test_version_is_the_distribution_version():
    try:
        dist = importlib.metadata.distribution("cconv")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("cconv is not installed (imported from a source tree)")
    installed_init = pathlib.Path(dist.locate_file("cconv/__init__.py")).resolve()
    if installed_init != PACKAGE_DIR / "__init__.py" and not _editable_install_of(dist, PACKAGE_DIR.parent):
        pytest.skip(f"the imported cconv ({PACKAGE_DIR}) is not the installed distribution")
    assert cconv.__version__ == dist.version


def test_pyproject_takes_the_version_from_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    if not PYPROJECT.exists():
        pytest.skip("no pyproject.toml beside the tests")
    config = tomllib.loads(PYPROJECT.read_text())
    project = config["project"]
    if "version" in project:  # a literal version must agree with the package's
        assert project["version"] == cconv.__version__
    else:
        assert "version" in project["dynamic"]
        assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cconv.__version__"}


@pytest.mark.skipif(_backends.pure_python, reason="a pure-Python run (CCONV_PURE_PYTHON=1)")
def test_compiled_backend_is_reported():
    info = cconv.backend_info()
    assert info["compiled"] is True
    assert info["compiled_import_error"] is None
    assert "cython" in info["available"]
    if not os.environ.get("CCONV_BACKEND"):
        assert info["active"] == "cython"
    assert not PURE_PYTHON_MARKER.exists()


@pytest.mark.skipif(not PURE_PYTHON_MARKER.exists(), reason="not a CCONV_PURE_PYTHON=1 install")
def test_pure_python_install_says_so_without_warning(tmp_path):
    info = cconv.backend_info()
    assert info["compiled"] is False
    assert info["active"] == "numpy"
    assert info["pure_python"] is True and info["compiled_import_error"] is None
    # The build recorded the mode: no switch at run time, and no fallback warning either.
    env = {k: v for k, v in os.environ.items() if k not in ("CCONV_PURE_PYTHON", "CCONV_REQUIRE_COMPILED")}
    subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", "import cconv"],
                   check=True, env=env, cwd=tmp_path)
