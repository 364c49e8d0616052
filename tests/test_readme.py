"""Every Python block of README.md runs as written, in order, in one namespace (as a reader pastes them
into one session). A block whose first line is a ``# needs: ...`` comment (a GPU, a local model
directory) is skipped, and says why."""
import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    return [match.group(1) for match in BLOCK.finditer(README.read_text())]


def test_readme_has_python_blocks_and_the_skipped_ones_say_why():
    blocks = _blocks()
    assert len(blocks) >= 5
    needs = [b.splitlines()[0] for b in blocks if b.startswith("# needs:")]
    assert all(len(line) > len("# needs: ") + 10 for line in needs)


def test_every_readme_python_block_runs():
    torch.manual_seed(0)
    namespace = {"__name__": "readme"}
    ran = 0
    for index, block in enumerate(_blocks()):
        if block.startswith("# needs:"):
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
            except Exception as error:  # pragma: no cover - the failure message names the block
                pytest.fail(f"README.md python block {index + 1} raised {type(error).__name__}: {error}")
        ran += 1
    assert ran >= 4
    assert not (namespace["x"] == namespace["mask_id"]).any()  # the bare-ops loop filled its canvas
