"""A hand-written diffusion sampling loop, run as written and with its sampling lines replaced by
``fastdiff.ops`` calls (the README's before / after example): the same tokens."""
import math

import pytest
import torch
from transformers import RobertaConfig, RobertaForMaskedLM

from fastdiff import ops

MASK_ID = 4


@torch.no_grad()
def loop_as_written(model, prompt, gen_length, steps, top_k=None):
    """Before: a full fp32 softmax over the vocabulary at every position, and a Python loop per row."""
    B = prompt.shape[0]
    x = torch.cat([prompt, torch.full((B, gen_length), MASK_ID)], dim=1)
    for step in range(steps):
        logits = model(input_ids=x).logits
        logits[..., MASK_ID] = -math.inf                        # never predict the mask token
        if top_k is not None:
            kth = torch.topk(logits, top_k).values[..., -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        probs = torch.softmax(logits.float(), dim=-1)
        confidence, tokens = probs.max(dim=-1)
        masked = x == MASK_ID
        k = math.ceil(int(masked[0].sum()) / (steps - step))    # tokens to commit this step
        for b in range(B):
            best = torch.topk(torch.where(masked[b], confidence[b], -math.inf), k).indices
            x[b, best] = tokens[b, best]
    return x


@torch.no_grad()
def loop_with_ops(model, prompt, gen_length, steps, top_k=None):
    """After: the same loop, its sampling lines replaced by fastdiff.ops."""
    B = prompt.shape[0]
    x = torch.cat([prompt, torch.full((B, gen_length), MASK_ID)], dim=1)
    confidence = torch.full(x.shape, math.nan)
    for step in range(steps):
        logits = model(input_ids=x).logits
        masked = x == MASK_ID
        tokens, scores = ops.sample_masked(logits, masked, top_k=top_k, suppress_ids=[MASK_ID])
        k = math.ceil(int(masked[0].sum()) / (steps - step))
        chosen = ops.select_topk(scores, masked, k)
        ops.commit_remask(x, confidence, tokens, scores, chosen, masked, 0, MASK_ID)
    return x


@pytest.mark.parametrize("top_k", [None, 10])
def test_ops_loop_gives_the_same_tokens(top_k, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = RobertaForMaskedLM(RobertaConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                             initializer_range=0.3)).eval()
    prompt = torch.randint(5, 500, (3, 6))
    expected = loop_as_written(model, prompt, gen_length=24, steps=7, top_k=top_k)
    out = loop_with_ops(model, prompt, gen_length=24, steps=7, top_k=top_k)
    assert not bool((out == MASK_ID).any())
    assert torch.equal(out, expected)
