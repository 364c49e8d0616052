"""``python -m fastdiff``: the ``fastdiff`` command line (see :mod:`fastdiff.cli`). With no arguments it
runs ``fastdiff demo``: a quick end-to-end generation with no download."""
import sys

from fastdiff.cli import main

if __name__ == "__main__":
    sys.exit(main())
