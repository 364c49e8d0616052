"""``python -m fastdiff.training``: the training recipe's command line (see :mod:`fastdiff.training.cli`)."""
import sys

from fastdiff.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
