"""How many times ``sample_masked`` reads each masked row, counted through the Triton interpreter.

Every logit element the kernel loads is counted (:func:`fastdiff.kernels.cost_model.count_passes`),
so these tests hold the pass counts documented in ``kernels/sample_masked.py`` to what the kernel
really does, on peaked, random and near-uniform rows.
"""
import pytest
import torch

from conftest import requires_kernels
from fastdiff.backend import interpreter_enabled
from fastdiff.kernels import cost_model

pytestmark = [requires_kernels,
              pytest.mark.skipif(not interpreter_enabled(), reason="counts loads through the Triton interpreter")]

# mode -> passes over a masked row, as the kernel's docstring states them
DOCUMENTED_PASSES = {"greedy": 1, "temperature": 1, "top-k 50": 34, "top-p 0.95": 35, "top-k 50 + top-p 0.95": 67}


@pytest.mark.parametrize("profile", cost_model.PROFILES)
@pytest.mark.parametrize("mode", list(cost_model.MODES))
def test_passes_over_a_masked_row_are_the_documented_ones(mode, profile):
    logits = cost_model.profile_logits(profile, rows=2, vocab=300)
    passes = cost_model.count_passes(cost_model.MODES[mode], logits, block_v=128)
    assert passes == DOCUMENTED_PASSES[mode]


def test_unmasked_positions_read_nothing_and_odd_rows_are_read_once():
    from fastdiff.kernels.sample_masked import sample_masked_triton

    # rows of an odd length start at unaligned addresses: the aligned read must still load each once
    logits = torch.randn(1, 5, 301)
    mask = torch.tensor([[True, False, True, False, False]])
    with cost_model.recording_loads(logits) as loaded:
        sample_masked_triton(logits, mask, torch.tensor([0, 0]), block_v=64, temperature=1.0)
    assert sorted(loaded) == list(range(0, 301)) + list(range(2 * 301, 3 * 301))
