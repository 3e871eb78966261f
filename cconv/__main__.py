"""``python -m cconv`` (and the ``cconv`` script): see :mod:`cconv._cli`."""
import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
