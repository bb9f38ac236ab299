"""``python -m ftcjax ...``: the ``ftcjax`` command line (see :mod:`ftcjax.cli`)."""
import sys

from ftcjax.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
