"""Build script: compiles every ``src/_*.pyx`` into an extension module ``cconv._*``.

Environment switches
--------------------
CCONV_PURE_PYTHON=1   build no extension at all: a pure-Python install that runs on the
                      NumPy reference backend (for platforms without a wheel or compiler).
CCONV_SANITIZE=1      compile with -fsanitize=address,undefined (run the tests with the
                      ASan runtime in LD_PRELOAD; see tools/sanitizer.sh).
CCONV_NO_OPENMP=1     build without OpenMP (kernels then run single-threaded).
CCONV_WERROR=1        warnings (-Wall -Wextra) are errors (CI).
CCONV_EXTENSIONS=a,b  development only: build just these modules (e.g. ``_pool``).
"""
import os
import sys
from glob import glob

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# Left in the built package by a CCONV_PURE_PYTHON=1 build, so that the installed package knows at
# run time that it has no compiled backend by design (cconv/_backends.py reads it).
PURE_PYTHON_MARKER = "_pure_python"


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags():
    """(compile, link) flags for OpenMP on this platform's usual compiler."""
    if _flag("CCONV_NO_OPENMP"):
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang has no bundled OpenMP; use Homebrew's libomp when the wheel build provides it.
        prefix = os.environ.get("CCONV_LIBOMP_PREFIX", "")
        if prefix and os.path.isdir(prefix):
            return ([f"-I{prefix}/include", "-Xpreprocessor", "-fopenmp"],
                    [f"-L{prefix}/lib", "-lomp"])
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


def _extensions():
    import numpy as np
    from Cython.Build import cythonize
    from setuptools import Extension

    omp_compile, omp_link = _openmp_flags()
    if sys.platform == "win32":
        compile_args, link_args = ["/O2"] + omp_compile, omp_link
    else:
        # GCC >= 14 (the manylinux wheel images) makes these errors by default; fail the same
        # way everywhere instead of shipping a warning that is a crash (a mismatched call).
        strict = ["-Werror=incompatible-pointer-types", "-Werror=implicit-function-declaration",
                  "-Werror=int-conversion"]
        warnings = ["-Wall", "-Wextra"] + (["-Werror"] if _flag("CCONV_WERROR") else [])
        compile_args = ["-O3", "-ffp-contract=fast", "-fno-math-errno"] + warnings + strict + omp_compile
        link_args = list(omp_link)
        if _flag("CCONV_SANITIZE"):
            sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
            compile_args = [a for a in compile_args if a != "-O3"] + sanitize
            link_args += sanitize
    extensions = [
        Extension(
            "cconv." + os.path.splitext(os.path.basename(path))[0],
            sources=[path],
            # a changed kernel header or included Cython source rebuilds the modules
            depends=sorted(glob("src/*.h") + glob("src/*.pxi")),
            include_dirs=[np.get_include(), "src"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
        for path in sorted(glob("src/_*.pyx"))
    ]
    only = [name for name in os.environ.get("CCONV_EXTENSIONS", "").split(",") if name]
    if only:
        extensions = [ext for ext in extensions if ext.name.split(".")[-1] in only]
    return cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    )


# setuptools reuses whatever an earlier build left in build/ when only timestamps say so; the
# build modes differ in flags, not sources, so each mode must clear what another mode left there.

class BuildPyRecordingMode(build_py):
    """build_py that records a pure-Python build (marker file) and drops stale compiled modules
    from it; a compiled build removes a stale marker instead."""

    def run(self):
        super().run()
        package_dir = os.path.join(self.build_lib, "cconv")
        marker = os.path.join(package_dir, PURE_PYTHON_MARKER)
        if _flag("CCONV_PURE_PYTHON"):
            for stale in glob(os.path.join(package_dir, "_*.so")) + glob(os.path.join(package_dir, "_*.pyd")):
                os.remove(stale)
            with open(marker, "w") as f:
                f.write("built with CCONV_PURE_PYTHON=1: NumPy reference backend only\n")
        elif os.path.exists(marker):
            os.remove(marker)


class BuildExtTrackingFlags(build_ext):
    """build_ext that recompiles everything when the flags differ from the previous build in this
    build directory (e.g. after CCONV_SANITIZE=1), instead of trusting timestamps."""

    def run(self):
        flags = repr([(ext.name, ext.extra_compile_args, ext.extra_link_args) for ext in self.extensions])
        stamp = os.path.join(self.build_temp, "cconv-build-flags.txt")
        if not os.path.exists(stamp) or open(stamp).read() != flags:
            self.force = True
        super().run()
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(flags)


setup(
    ext_modules=[] if _flag("CCONV_PURE_PYTHON") else _extensions(),
    cmdclass={"build_py": BuildPyRecordingMode, "build_ext": BuildExtTrackingFlags},
)
