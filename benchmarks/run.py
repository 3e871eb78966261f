#!/usr/bin/env python
"""Benchmark cconv against PyTorch: the same harness as ``python -m cconv bench``.

    python benchmarks/run.py                       # full suite, 1 and 2 threads
    python benchmarks/run.py --quick               # smoke run
    python benchmarks/run.py --help                # every option

See benchmarks/README.md; the harness itself is cconv/_bench.py.
"""
import argparse
import os
import sys

try:
    import cconv  # noqa: F401  (an installed cconv, or one on PYTHONPATH)
except ImportError:
    # run from a source checkout: use the package next to this directory (build it in place first)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cconv import _bench


def main(argv=None):
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    _bench.add_arguments(parser)
    return _bench.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
