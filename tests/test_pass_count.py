"""How many times ``sample_masked`` reads each masked row, counted through the Triton interpreter.

Every logit element the kernel loads is counted (:func:`fastdiff.kernels.cost_model.count_passes`),
so these tests hold the pass counts documented in ``fastdiff/kernels/sample_masked.py`` to what the kernel
really does, on peaked, random and near-uniform rows.
"""
import pytest
import torch

from conftest import requires_kernels
from fastdiff.backend import interpreter_enabled
from fastdiff.kernels import cost_model

pytestmark = [requires_kernels,
              pytest.mark.skipif(not interpreter_enabled(), reason="counts loads through the Triton interpreter")]

# (mode, logits dtype) -> passes over a masked row, as the kernel's docstring states them: one pass
# per 8-bit digit of the logits' keys (2 for bf16 / fp16, 4 for fp32), then the draw; with top-k and
# top-p both on, the nucleus search adds a pass per digit from the one where it parts from top-k's
DOCUMENTED_PASSES = {
    "greedy": {"16-bit": (1,), "fp32": (1,)},
    "temperature": {"16-bit": (1,), "fp32": (1,)},
    "top-k 50": {"16-bit": (3,), "fp32": (5,)},
    "top-p 0.95": {"16-bit": (3,), "fp32": (5,)},
    "top-k 50 + top-p 0.95": {"16-bit": (3, 4), "fp32": (5, 6, 7, 8)},
}
DTYPES = {torch.bfloat16: "16-bit", torch.float16: "16-bit", torch.float32: "fp32"}


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("profile", cost_model.PROFILES)
@pytest.mark.parametrize("mode", list(cost_model.MODES))
def test_passes_over_a_masked_row_are_the_documented_ones(mode, profile, dtype):
    # rows one at a time: each row's count must be a documented one, not only their mean
    logits = cost_model.profile_logits(profile, rows=2, vocab=300).to(dtype)
    for row in range(2):
        passes = cost_model.count_passes(cost_model.MODES[mode], logits[:, row:row + 1], block_v=128)
        assert passes in DOCUMENTED_PASSES[mode][DTYPES[dtype]]


@pytest.mark.parametrize("filters", [dict(top_k=300), dict(top_p=0.95), dict(top_k=300, top_p=0.95),
                                     dict(top_k=7, top_p=0.1)])
def test_worst_cases_stay_within_four_passes_for_16_bit_logits(filters):
    # near-uniform logits with top-p 0.95 keep ~95% of the row; top-k up to the vocabulary; the
    # nucleus parting from the top-k threshold at the first digit (top_k = V, a narrow nucleus)
    logits = cost_model.profile_logits("near-uniform", rows=1, vocab=300).to(torch.bfloat16)
    assert cost_model.count_passes(dict(temperature=0.8, **filters), logits, block_v=128) <= 4
    spread = cost_model.profile_logits("random", rows=1, vocab=300).to(torch.bfloat16)
    assert cost_model.count_passes(dict(temperature=0.8, top_k=300, top_p=0.2), spread, block_v=128) == 4


def test_unmasked_positions_read_nothing_and_odd_rows_are_read_once():
    from fastdiff.kernels.sample_masked import sample_masked_triton

    # rows of an odd length start at unaligned addresses: the aligned read must still load each once
    logits = torch.randn(1, 5, 301)
    mask = torch.tensor([[True, False, True, False, False]])
    with cost_model.recording_loads(logits) as loaded:
        sample_masked_triton(logits, mask, torch.zeros(1, 3, dtype=torch.int64), block_v=64, temperature=1.0)
    assert sorted(loaded) == list(range(0, 301)) + list(range(2 * 301, 3 * 301))
