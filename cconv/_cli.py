"""The ``cconv`` command line: ``cconv info``, ``cconv train``, ``cconv bench``.

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``; ``train`` and ``bench`` are imported only when run, so
``cconv info`` stays fast. Errors in arguments print one line and exit with status 2,
never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

__all__ = ["main", "ProgressBar", "CommandError"]


class CommandError(Exception):
    """A user error found while running a subcommand: printed as ``cconv: error: ...``, status 2."""


class ProgressBar:
    """A one-line progress bar on stderr, redrawn in place (on a terminal only).

    ``update(done, status)`` sets the count of finished steps; ``close()`` erases the
    bar. Off a terminal (logs, pipes, CI) it draws nothing, so logs stay clean.
    """

    def __init__(self, total, label="", width=30, stream=None):
        self.total, self.label, self.width = max(int(total), 1), label, width
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._drawn = 0

    def update(self, done, status=""):
        now = time.perf_counter()
        # Redraw at most 20 times a second (and always at the end): drawing is not free.
        if not self.enabled or (done < self.total and now - self._last_draw < 0.05):
            return
        self._last_draw = now
        filled = self.width * min(done, self.total) // self.total
        line = f"{self.label} |{'#' * filled}{'.' * (self.width - filled)}| {done}/{self.total} {status}"
        self.stream.write("\r" + line.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(line)

    def close(self):
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
        self._drawn = 0


# --------------------------------------------------------------------------
# cconv info
# --------------------------------------------------------------------------

def _blas():
    """NumPy's BLAS as its build configuration names it, e.g. 'scipy-openblas 0.3.29', or None."""
    import numpy as np

    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
    except Exception:  # older NumPy without mode="dicts", or a build without the section
        return None
    if not blas.get("found", True):
        return None
    return " ".join(str(part) for part in (blas.get("name"), blas.get("version")) if part)


def _torch_version():
    """PyTorch's version if installed, read from its metadata (importing torch takes seconds)."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def _info_dict():
    import numpy as np

    import cconv

    info = {"version": cconv.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform(), "package": os.path.dirname(os.path.abspath(cconv.__file__))}
    info.update(cconv.backend_info())
    info["blas"] = _blas()
    info["torch"] = _torch_version()
    return info


def _format_info(info):
    lines = [f"cconv {info['version']}  (Python {info['python']}, NumPy {info['numpy']}, {info['platform']})",
             f"backends available : {', '.join(info['available'])}",
             f"active backend     : {info['active']}"]
    lines.append(f"imported from      : {info['package']}")
    if info["compiled"]:
        lines.append("compiled backend   : yes (cython)")
    elif info["pure_python"]:
        lines.append("compiled backend   : none, by design (a pure-Python build, CCONV_PURE_PYTHON=1);"
                     " ops run on the NumPy reference")
    else:
        lines.append(f"compiled backend   : MISSING - {info['compiled_import_error']}")
        lines.append("                     (ops without backend= run on the NumPy reference)")
    lines.append(f"threads            : {info['num_threads']}")
    shown = {"version", "python", "numpy", "platform", "package", "available", "active", "compiled",
             "pure_python", "compiled_import_error", "num_threads", "blas", "torch"}
    for key, value in info.items():  # whatever the compiled extension reports about its build
        if key in shown:
            continue
        if isinstance(value, dict):
            lines.append(f"{key:<19}:")
            lines += [f"  {sub:<17}: {item}" for sub, item in value.items()]
        else:
            lines.append(f"{key:<19}: {value}")
    lines.append(f"BLAS (NumPy)       : {info['blas'] or 'unknown'}")
    lines.append(f"PyTorch            : {info['torch'] or 'not installed (optional: the torch backend)'}")
    return "\n".join(lines)


def _add_info_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print the information as JSON")


def _run_info(args):
    info = _info_dict()
    print(json.dumps(info, indent=2, default=str) if args.json else _format_info(info))
    return 0


# --------------------------------------------------------------------------
# parser and main
# --------------------------------------------------------------------------

_SUBCOMMANDS = {
    # name: (module with add_arguments/run, or None for the ones defined here, help)
    "info": (None, "version, backends, threads, build flags, BLAS"),
    "train": ("cconv._train", "train a small CNN on the 8x8 handwritten digits and time each op"),
    "bench": ("cconv._bench", "benchmark the ops on every backend (and PyTorch when installed)"),
}
# `cconv bench --torch-model NAME` runs this module instead of the op benchmark.
_TORCH_MODEL_BENCH = "cconv._torch_model_bench"


def _module(name):
    return importlib.import_module(name)


def _chosen_command(argv):
    """The subcommand named in ``argv`` (its first non-option word), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command=None):
    """The argument parser; only ``command``'s module is imported to add its options."""
    parser = argparse.ArgumentParser(
        prog="cconv", description="Fast, correct CPU convolution and pooling for NumPy.",
        epilog="Start with `cconv train`; `cconv <command> --help` shows a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module, help_text) in _SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if module is None:
            _add_info_arguments(p)
        elif name == command:
            try:
                _module(module).add_arguments(p)
                if name == "bench":
                    _module(_TORCH_MODEL_BENCH).add_arguments(p)
            except ImportError as exc:
                # Not part of this install (yet): the command stays listed and explains itself when run.
                p.set_defaults(missing=f"{module} could not be imported ({type(exc).__name__}: {exc})")
    return parser


def _run(args):
    if getattr(args, "missing", None):
        raise CommandError(f"`cconv {args.command}` is unavailable: {args.missing}")
    module = _SUBCOMMANDS[args.command][0]
    if getattr(args, "torch_model", None):
        module = _TORCH_MODEL_BENCH
    return _run_info(args) if module is None else _module(module).run(args)


def main(argv=None):
    """Entry point of ``python -m cconv`` and the ``cconv`` script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_chosen_command(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, message already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _run(args)
    except CommandError as exc:
        print(f"cconv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncconv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cconv train | head`): silence the final flush, as Python's docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
