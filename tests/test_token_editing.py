"""LLaDA 2.1 token editing (``edit_threshold``, ``max_edit_steps``) against an independent loop written
from its definition: at every step of a block a committed generated token is replaced by the token drawn
now when they differ and its probability is above the threshold; once the block is full, up to
``max_edit_steps`` more steps edit, until one edits nothing."""
import pytest
import torch

from fastdiff import Sampler
from test_compat_llada import TinyMaskedLM

VOCAB, MASK = 48, 47


@torch.no_grad()
def editing_reference(model, prompt, *, gen_length, block_length, steps, threshold, edit_threshold, max_edit_steps):
    """One row, greedy. Each block gets ``steps / blocks`` fill steps: commit every masked position of
    the block with confidence >= threshold (at least the most confident; the last fill step all of them),
    and edit. Then editing steps while the budget lasts and the previous one edited. Returns (canvas,
    forward passes, edits made)."""
    x = torch.cat([prompt, torch.full((1, gen_length), MASK)], dim=1)
    P = prompt.shape[1]
    forwards = edits_made = 0
    for start in range(P, P + gen_length, block_length):
        block = torch.zeros_like(x, dtype=torch.bool)
        block[:, start:start + block_length] = True
        fill_steps = steps // (gen_length // block_length)
        budget, i = max_edit_steps, 0
        while True:
            masked = block & (x == MASK)
            filling = bool(masked.any())
            if not filling and budget == 0:
                break
            logits = model(x).logits
            logits[..., MASK] = -torch.inf
            confidence, token = torch.softmax(logits, dim=-1).max(dim=-1)
            forwards += 1
            commit = torch.zeros_like(masked)
            if filling:
                if i == fill_steps - 1:
                    commit = masked
                else:
                    commit = masked & (confidence >= threshold)
                    if not bool(commit.any()):
                        commit[0, int(torch.argmax(confidence.masked_fill(~masked, -1.0)))] = True
            edits = block & ~masked & (token != x) & (confidence > edit_threshold)
            x = torch.where(commit | edits, token, x)
            edits_made += int(edits.sum())
            if not filling:
                budget = budget - 1 if bool(edits.any()) else 0
            i += 1
    return x, forwards, edits_made


@pytest.mark.parametrize("edit_threshold,max_edit_steps,threshold", [
    (0.05, 3, 0.1), (0.02, 6, 0.05), (0.3, 16, 0.2), (0.02, 0, 0.9)])  # the last: edits while filling only
@pytest.mark.parametrize("masked_head", [False, True])
def test_editing_matches_the_reference_loop(edit_threshold, max_edit_steps, threshold, masked_head, fresh_seed):
    model = TinyMaskedLM(VOCAB, MASK, seed=fresh_seed, dim=32, layers=1)
    prompt = torch.randint(5, 40, (1, 5), generator=torch.Generator().manual_seed(fresh_seed))
    settings = dict(gen_length=16, block_length=8, steps=8, threshold=threshold)
    expected, forwards, edits = editing_reference(model, prompt, edit_threshold=edit_threshold,
                                                  max_edit_steps=max_edit_steps, **settings)
    gen_length = settings.pop("gen_length")
    out = Sampler(model, MASK, edit_threshold=edit_threshold, max_edit_steps=max_edit_steps, masked_head=masked_head,
                  **settings).generate(prompt, gen_length=gen_length)
    assert torch.equal(out.sequences, expected)
    assert out.nfe == forwards
    if (edit_threshold, max_edit_steps) == (0.02, 6):
        assert edits > 0  # the case exercises editing (it edits on every model seed tried)


def test_editing_changes_committed_tokens_and_needs_confidence(fresh_seed):
    """With editing a row's result differs from the same call without it (tokens were replaced), every
    row's result is its result alone, and the option is refused by rules without probabilities."""
    model = TinyMaskedLM(VOCAB, MASK, seed=fresh_seed, dim=32, layers=1)
    prompts = torch.randint(5, 40, (3, 5), generator=torch.Generator().manual_seed(fresh_seed))
    settings = dict(steps=8, block_length=8, threshold=0.1)
    plain = Sampler(model, MASK, **settings).generate(prompts, gen_length=16).sequences
    edited = Sampler(model, MASK, edit_threshold=0.02, **settings).generate(prompts, gen_length=16).sequences
    assert not torch.equal(plain, edited)
    for row in range(3):
        alone = Sampler(model, MASK, edit_threshold=0.02, **settings).generate(prompts[row:row + 1], gen_length=16)
        assert torch.equal(alone.sequences[0], edited[row])
    for bad in (dict(unmask="margin"), dict(unmask="resample"), dict(remask="low_confidence")):
        with pytest.raises(ValueError, match="edit_threshold"):
            Sampler(model, MASK, edit_threshold=0.5, **bad)
    with pytest.raises(ValueError, match="max_edit_steps"):
        Sampler(model, MASK, edit_threshold=0.5, max_edit_steps=-1)
