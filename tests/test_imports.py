"""The core import carries no extras: ``import fastdiff`` (and the command line's module) loads neither
the training recipe nor the trace renderers, nor Pillow."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEFT_OUT = ("fastdiff.training", "fastdiff.trace", "PIL")


@pytest.mark.parametrize("module", ["fastdiff", "fastdiff.cli"])
def test_the_core_import_leaves_out_training_trace_and_pillow(module):
    code = f"import sys, {module}; print(*sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.split()
    assert module in loaded
    assert [name for name in loaded if name.startswith(tuple(p + "." for p in LEFT_OUT)) or name in LEFT_OUT] == []
