"""fastdiff.compat.dream.diffusion_generate against an independent implementation of Dream's sampler.

``dream_reference`` below is written from the description of Dream's ``DreamGenerationMixin._sample``,
not from fastdiff, and calls the model with Dream's convention. Greedy runs (``alg_temp=None``) on fp32
models must give exactly its tokens and history; ``origin`` and ``alg_temp`` are checked statistically.

This module does not import ``conftest``: ``benchmarks/test_compat_bench.py`` imports it.
"""
import inspect
import math
import types
import warnings

import pytest
import torch
import torch.nn.functional as F

from fastdiff.compat.dream import DreamGenerationConfig, DreamModelOutput, diffusion_generate
from test_compat_llada import TableModel, TinyMaskedLM

MASK_ID = 299
VOCAB = 300


def _filter_and_score(logits, temperature, top_p, top_k, alg):
    """Dream's token step: temperature, then top-p on the full distribution, then top-k (filtered
    logits set to the dtype's lowest value); returns (score, token)."""
    if temperature > 0:
        logits = logits / temperature
    lowest = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, descending=True)
        mass_through = torch.cumsum(F.softmax(ordered, dim=-1), dim=-1)
        drop = torch.zeros_like(mass_through, dtype=torch.bool)
        drop[..., 1:] = mass_through[..., :-1] > top_p  # keep up to and including the token crossing top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), lowest)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, lowest)
    probs = F.softmax(logits, dim=-1)
    if temperature > 0:
        token = torch.multinomial(probs, 1)[:, 0]
        score = probs.gather(-1, token[:, None])[:, 0]
    else:
        score, token = probs.max(dim=-1)
    if alg == "topk_margin":
        top2 = torch.sort(probs, dim=-1, descending=True).values
        score = top2[:, 0] - top2[:, 1]
    elif alg == "entropy":
        score = (probs * torch.log(probs + 1e-10)).sum(dim=-1)
    return score, token


@torch.no_grad()
def dream_reference(model, input_ids, attention_mask=None, *, max_new_tokens, steps, alg, mask_token_id=MASK_ID,
                    eps=1e-3, alg_temp=None, temperature=0.0, top_p=None, top_k=None, tokens_hook=None,
                    logits_hook=None):
    """Dream's sampler; returns (sequences, history)."""
    B, P = input_ids.shape
    x = F.pad(input_ids, (0, max_new_tokens), value=mask_token_id)
    if attention_mask is not None and bool((attention_mask == 0).any()):
        real = F.pad(attention_mask, (0, max_new_tokens), value=1)
        tok_idx = (real.long().cumsum(-1) - 1).masked_fill(real == 0, 1)
        mask = real[:, None, None, :].bool() & real[:, None, :, None].bool()
    else:
        tok_idx, mask = None, "full"
    times = torch.linspace(1, eps, steps + 1, device=x.device)
    if tokens_hook is not None:
        x = tokens_hook(None, x, None)
    history = []
    for i in range(steps):
        masked = x == mask_token_id
        logits = model(x, mask, tok_idx).logits
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # position i reads the logits of i - 1
        if logits_hook is not None:
            logits = logits_hook(i, x, logits)
        t, s = times[i], times[i + 1]
        if alg == "origin":
            reveal_probability = 1 - s / t if i < steps - 1 else 1
            revealed = torch.rand(int(masked.sum()), device=x.device) < reveal_probability
            filled = torch.full((int(masked.sum()),), mask_token_id, dtype=torch.long, device=x.device)
            filled[revealed] = _filter_and_score(logits[masked][revealed], temperature, top_p, top_k, alg)[1]
            x[masked] = filled
        else:
            score, token = _filter_and_score(logits[masked], temperature, top_p, top_k, alg)
            per_row = masked.sum() / B
            count = int(per_row * (1 - s / t)) if i < steps - 1 else int(per_row)
            if count > 0:
                scores = torch.full(x.shape, -math.inf, dtype=logits.dtype, device=x.device)
                scores[masked] = score
                if alg_temp:
                    chosen = torch.multinomial(F.softmax(scores / alg_temp, dim=-1), count)
                else:
                    chosen = torch.topk(scores, count).indices
                proposal = torch.full_like(x, mask_token_id)
                proposal[masked] = token
                rows = torch.arange(B, device=x.device)[:, None]
                x[rows, chosen] = proposal[rows, chosen]
        if tokens_hook is not None:
            x = tokens_hook(i, x, logits)
        history.append(x.clone())
    return x, history


def _prompt(seed, batch, length, padded):
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(5, MASK_ID, (batch, length), generator=generator)
    attention = torch.ones(batch, length, dtype=torch.long)
    if padded:
        for row in range(1, batch):
            pad = int(torch.randint(1, length - 1, (1,), generator=generator))
            prompt[row, :pad] = 1
            attention[row, :pad] = 0
    return prompt, attention if padded else None


def _count_calls(model):
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


# ------------------------------------------------------------------------------------------------
# greedy: exactly the reference's tokens and history
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg,steps,new_tokens,padded,options", [
    ("maskgit_plus", 8, 16, False, {}),
    ("maskgit_plus", 16, 16, True, dict(top_k=5)),
    ("maskgit_plus", 64, 16, False, dict(eps=0.05)),
    ("topk_margin", 24, 12, False, dict(top_p=0.9)),
    ("topk_margin", 12, 12, True, {}),
    ("entropy", 6, 12, True, dict(top_k=20)),
    ("entropy", 40, 12, False, dict(top_p=0.8)),
])
def test_greedy_matches_reference_exactly(alg, steps, new_tokens, padded, options, fresh_seed):
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=fresh_seed)
    prompt, attention = _prompt(fresh_seed, 3, 6, padded)
    expected, expected_history = dream_reference(model, prompt, attention, max_new_tokens=new_tokens, steps=steps,
                                                 alg=alg, **options)
    calls = _count_calls(model)
    out = diffusion_generate(model, prompt, attention_mask=attention, max_new_tokens=new_tokens, steps=steps,
                             alg=alg, mask_token_id=MASK_ID, return_dict_in_generate=True, output_history=True,
                             **options)
    assert isinstance(out, DreamModelOutput)
    assert not out.sequences.is_inference() and not any(h.is_inference() for h in out.history)
    assert torch.equal(out.sequences, expected)
    assert len(out.history) == steps
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(out.history, expected_history))
    # only the steps that commit something run the model
    before = [F.pad(prompt, (0, new_tokens), value=MASK_ID)] + expected_history[:-1]
    assert len(calls) == sum(not torch.equal(a, b) for a, b in zip(before, expected_history))


def test_hooks_get_dreams_step_numbers_and_give_the_same_tokens(fresh_seed):
    """The token-control hook of Dream's demo (fixed closing tokens) and a logits hook banning tokens,
    with more steps than tokens: hooks see Dream's indices of the steps that run."""
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=fresh_seed)
    prompt, _ = _prompt(fresh_seed, 2, 5, False)
    ending = torch.tensor([7, 8, 9])
    seen = {"tokens": [], "logits": []}

    def tokens_hook(step, x, logits):
        seen["tokens"].append(step)
        x[:, -3:] = ending
        return x

    def logits_hook(step, x, logits):
        seen["logits"].append(step)
        logits[:, :, 10:60] = -math.inf
        return logits

    settings = dict(max_new_tokens=10, steps=20, alg="maskgit_plus")
    expected, history = dream_reference(model, prompt, tokens_hook=tokens_hook, logits_hook=logits_hook, **settings)
    reference_seen, seen = seen, {"tokens": [], "logits": []}
    out = diffusion_generate(model, prompt, generation_tokens_hook_func=tokens_hook,
                             generation_logits_hook_func=logits_hook, mask_token_id=MASK_ID, **settings)
    assert torch.equal(out, expected)
    assert torch.equal(out[:, -3:], ending.expand(2, 3))
    assert not bool(((out[:, 5:] >= 10) & (out[:, 5:] < 60)).any())
    start = F.pad(prompt, (0, 10), value=MASK_ID)
    start[:, -3:] = ending
    committing = [i for i, (a, b) in enumerate(zip([start] + history[:-1], history)) if not torch.equal(a, b)]
    assert len(committing) < 20
    assert seen["tokens"] == [None] + committing and seen["logits"] == committing
    assert reference_seen["logits"] == list(range(20))


# ------------------------------------------------------------------------------------------------
# origin and alg_temp: positions are random
# ------------------------------------------------------------------------------------------------
def test_origin_greedy_tokens_on_a_context_free_model(fresh_seed):
    """Whatever order positions are revealed in, a context-free model gives each its argmax (of the
    logits one position to the left)."""
    torch.manual_seed(fresh_seed)
    table = torch.randn(20, 40)
    table[:, 39] = -1e4
    prompt = torch.randint(5, 39, (2, 4))
    out = diffusion_generate(TableModel(table), prompt, max_new_tokens=16, steps=30, mask_token_id=39)
    expected, _ = dream_reference(lambda ids, mask, positions: TableModel(table)(ids), prompt, max_new_tokens=16,
                                  steps=30, alg="origin", mask_token_id=39)
    assert torch.equal(out, expected)
    assert torch.equal(out[:, 4:], table[3:19].argmax(dim=-1).expand(2, 16))


def test_origin_reveal_steps_follow_dreams_law(fresh_seed):
    """Each position is revealed at step i with probability t_i - t_{i+1} (the last step: t_last):
    with steps=4, eps=0.2, that is 0.2, 0.2, 0.2, 0.4."""
    torch.manual_seed(fresh_seed)
    table = torch.randn(6, 12)
    table[:, 11] = -1e4
    law = torch.tensor([0.2, 0.2, 0.2, 0.4])
    reveal_steps = torch.zeros(4)
    runs, positions = 150, 4
    for _ in range(runs):
        model = TableModel(table)
        out = diffusion_generate(model, torch.tensor([[5, 6]]), max_new_tokens=positions, steps=4, eps=0.2,
                                 mask_token_id=11, return_dict_in_generate=True, output_history=True)
        masked = torch.stack([h[0, 2:] == 11 for h in out.history])  # [steps, positions]
        first_unmasked = (~masked).float().argmax(dim=0)
        reveal_steps += torch.bincount(first_unmasked, minlength=4)
        assert len(model.inputs) == len(set(first_unmasked.tolist()))  # steps revealing nothing do not run
    expected = law * runs * positions
    assert float(((reveal_steps - expected).abs() / torch.sqrt(expected * (1 - law))).max()) < 4.5


def test_alg_temp_samples_positions_from_softmax_of_scores(fresh_seed):
    """Three masked positions, two steps: the first commits one (int(3 * 0.4995) = 1), drawn with
    probability softmax(confidence / alg_temp)."""
    torch.manual_seed(fresh_seed)
    table = torch.full((4, 8), -1e4)
    table[0, :3] = torch.tensor([3.0, 0.0, 0.0])   # read by position 1 (the shift)
    table[1, :3] = torch.tensor([1.0, 0.0, 0.0])
    table[2, :3] = torch.tensor([0.0, 0.0, 0.0])
    confidence = torch.softmax(table[:3, :3], dim=-1).max(dim=-1).values
    law = torch.softmax(confidence / 0.2, dim=0)
    first = torch.zeros(3)
    rows, runs = 60, 5
    for _ in range(runs):
        model = TableModel(table)
        diffusion_generate(model, torch.full((rows, 1), 5), max_new_tokens=3, steps=2, alg="maskgit_plus",
                           alg_temp=0.2, mask_token_id=7)
        first += (model.inputs[1][:, 1:] != 7).float().sum(dim=0)
    samples = rows * runs
    assert float(((first - law * samples).abs() / torch.sqrt(samples * law * (1 - law))).max()) < 4.5


# ------------------------------------------------------------------------------------------------
# calling convention, configuration, errors
# ------------------------------------------------------------------------------------------------
class RecordingDream(TinyMaskedLM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        self.seen.append((attention_mask, position_ids))
        return super().forward(input_ids, attention_mask, position_ids)


def test_model_gets_dreams_attention_mask_and_positions(fresh_seed):
    model = RecordingDream(VOCAB, MASK_ID, seed=fresh_seed, dim=16, layers=1)
    prompt = torch.tensor([[1, 1, 20, 21], [22, 23, 24, 25]])
    diffusion_generate(model, prompt, attention_mask=torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]), max_new_tokens=3,
                       steps=3, alg="entropy", mask_token_id=MASK_ID)
    mask, positions = model.seen[0]
    real = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7]).bool()
    assert mask.dtype == torch.bool and torch.equal(mask, real[:, None, None, :] & real[:, None, :, None])
    assert positions.tolist() == [[1, 1, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6]]
    model.seen.clear()
    diffusion_generate(model, prompt[1:], attention_mask=torch.ones(1, 4, dtype=torch.long), max_new_tokens=3,
                       steps=3, alg="entropy", mask_token_id=MASK_ID)
    assert model.seen[0] == ("full", None)


def test_configuration_and_outputs(fresh_seed):
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=fresh_seed, dim=16, layers=1, max_positions=30)
    model.generation_config = types.SimpleNamespace(mask_token_id=MASK_ID)  # the mask id comes from the model
    prompt, _ = _prompt(fresh_seed, 2, 5, False)
    prompt_before = prompt.clone()
    out = diffusion_generate(model, prompt, steps=20, alg="maskgit_plus")
    assert out.shape == (2, 25)  # max_length left at 20: the prompt plus 20
    assert torch.equal(prompt, prompt_before)
    assert diffusion_generate(model, torch.randint(5, 200, (1, 15)), steps=4).shape == (1, 30)  # capped at 30
    config = DreamGenerationConfig(max_length=9, steps=4, alg="topk_margin", return_dict_in_generate=True)
    result = diffusion_generate(model, prompt, config, num_return_sequences=2)
    assert isinstance(result, DreamModelOutput) and result.history is None
    assert result.sequences.shape == (4, 9) and torch.equal(result.sequences[0], result.sequences[1])
    expected, _ = dream_reference(model, prompt, max_new_tokens=4, steps=4, alg="topk_margin")
    assert torch.equal(result.sequences[::2], expected)
    expected = dream_reference(model, prompt, max_new_tokens=3, steps=4, alg="entropy")[0]
    dreams_own = types.SimpleNamespace(steps=4, alg="entropy", max_new_tokens=3, temperature=0.0, unrelated=1)
    assert torch.equal(diffusion_generate(model, prompt, dreams_own), expected)
    assert torch.equal(diffusion_generate(model, prompt, {"steps": 4, "alg": "entropy", "max_new_tokens": 3}),
                       expected)


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(alg="greedy"), ValueError, "alg"),
    (dict(max_length=5), ValueError, "max_length"),
    (dict(eps=1.5), ValueError, "eps"),
    (dict(steps=0), ValueError, "steps"),
    (dict(alg_temp=-1.0), ValueError, "alg_temp"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(temperature=-0.5), ValueError, "temperature"),
    (dict(output_history=1), TypeError, "output_history"),
    (dict(mask_token_id=None), ValueError, "mask_token_id"),
    (dict(generation_tokens_hook_func=3), TypeError, "generation_tokens_hook_func"),
])
def test_bad_arguments_raise_naming_them(kwargs, error, name):
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=0, dim=16, layers=1)
    settings = dict(max_new_tokens=4, steps=4, mask_token_id=MASK_ID)
    settings.update(kwargs)
    if "max_length" in kwargs:
        del settings["max_new_tokens"]
    with pytest.raises(error, match=name):
        diffusion_generate(model, torch.tensor([[5, 6, 7, 8, 9]]), **settings)


def test_dreams_signature_unknown_keywords_warn_and_bookkeeping_is_accepted():
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=0, dim=16, layers=1)
    prompt = torch.tensor([[5, 6, 7]])
    settings = dict(max_new_tokens=3, steps=3, mask_token_id=MASK_ID, alg="entropy")  # deterministic
    expected = diffusion_generate(model, prompt, **settings)
    bookkeeping = dict(generation_kwargs={}, _from_model_config=True, _commit_hash="abc", transformers_version="4.46")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bookkeeping keywords are quiet
        assert torch.equal(diffusion_generate(model, prompt, **settings, **bookkeeping), expected)
    with pytest.warns(UserWarning, match=r"ignores the unknown argument\(s\) stepz "):
        got = diffusion_generate(model, prompt, **settings, stepz=4)
    assert torch.equal(got, expected)
    with warnings.catch_warnings():  # Fast-dLLM's keywords are known; threshold is its (unused) default here
        warnings.simplefilter("error")
        assert torch.equal(diffusion_generate(model, prompt, **settings, threshold=0.9, dual_cache=True), expected)
    with pytest.raises(ValueError, match="inputs must be given"):
        diffusion_generate(model, **settings)
    assert inspect.signature(diffusion_generate).parameters["inputs"].default is None


def test_a_canvas_without_masks_comes_back_unchanged(fresh_seed):
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=fresh_seed, dim=16, layers=1)
    calls = _count_calls(model)
    fill = lambda step, x, logits: x.masked_fill(x == MASK_ID, 5)  # noqa: E731
    out = diffusion_generate(model, torch.tensor([[5, 6]]), max_new_tokens=3, steps=4, mask_token_id=MASK_ID,
                             generation_tokens_hook_func=fill, return_dict_in_generate=True, output_history=True)
    assert out.sequences.tolist() == [[5, 6, 5, 5, 5]] and len(out.history) == 4 and not calls



# ------------------------------------------------------------------------------------------------
# Fast-dLLM's alg="confidence_threshold" (its generation_utils.py, without blocks)
# ------------------------------------------------------------------------------------------------
def fast_dllm_threshold_reference(model, input_ids, *, max_new_tokens, steps, threshold, mask_token_id=MASK_ID):
    """Fast-dLLM's Dream parallel decoding, batch 1, greedy: each step's budget is ``m / steps`` plus
    what earlier steps left; of the budget's best-confidence masked positions the first is committed and
    the others if their confidence is >= threshold. A shortfall at the last step adds a step whose budget
    is what is left, until nothing is. Returns (sequences, history, forward passes)."""
    x = F.pad(input_ids, (0, max_new_tokens), value=mask_token_id)
    per_step = int((x == mask_token_id).sum()) // steps
    left_over, history, forwards, i = 0, [], 0, 0
    while i < steps:
        masked = x == mask_token_id
        logits = model(x, "full", None).logits
        forwards += 1
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        score, token = _filter_and_score(logits[masked], 0.0, None, None, "maskgit_plus")
        scores = torch.full(x.shape, -math.inf)
        scores[masked] = score
        proposal = torch.full_like(x, mask_token_id)
        proposal[masked] = token
        budget, left_over = per_step + left_over, 0
        best, order = torch.topk(scores, budget)
        commit = torch.zeros_like(masked)
        commit[0, order[0]] = True
        for k in range(1, budget):
            if best[0, k] < threshold:
                commit[0, order[0, k]] = False
                left_over += 1
                if i == steps - 1:  # a shortfall at the last step: one more step, for what is left only
                    per_step = 0
                    steps += 1
        x = torch.where(commit, proposal, x)
        history.append(x.clone())
        i += 1
    return x, history, forwards


@pytest.mark.parametrize("steps,new_tokens,threshold", [(4, 16, 0.9), (4, 16, 0.02), (8, 16, 0.05), (2, 12, 0.5)])
def test_confidence_threshold_matches_fast_dllm_exactly(steps, new_tokens, threshold, fresh_seed):
    """Tokens, history and forward passes, whether the planned steps suffice or it steps on."""
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=fresh_seed)
    prompt, _ = _prompt(fresh_seed, 1, 6, False)
    expected, history, _ = fast_dllm_threshold_reference(model, prompt, max_new_tokens=new_tokens, steps=steps,
                                                         threshold=threshold)
    calls = _count_calls(model)
    out = diffusion_generate(model, prompt, max_new_tokens=new_tokens, steps=steps, alg="confidence_threshold",
                             threshold=threshold, mask_token_id=MASK_ID, return_dict_in_generate=True,
                             output_history=True, dual_cache=False)
    assert torch.equal(out.sequences, expected)
    assert len(out.history) == len(history) == len(calls)
    assert all(torch.equal(a, b) for a, b in zip(out.history, history))


def test_confidence_threshold_steps_on_after_a_shortfall(fresh_seed):
    """A threshold no confidence reaches: one position per step, so the loop runs past its 2 planned
    steps until every position is committed (16 steps for 16 tokens), as Fast-dLLM's does."""
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=fresh_seed)
    prompt, _ = _prompt(fresh_seed, 1, 4, False)
    expected, _, forwards = fast_dllm_threshold_reference(model, prompt, max_new_tokens=16, steps=2, threshold=1.0)
    calls = _count_calls(model)
    out = diffusion_generate(model, prompt, max_new_tokens=16, steps=2, alg="confidence_threshold", threshold=1.0,
                             mask_token_id=MASK_ID)
    assert torch.equal(out, expected) and len(calls) == forwards == 16


def test_confidence_threshold_options(fresh_seed):
    """Batches and blocks run (Fast-dLLM's code takes neither without its cache); factor replaces the
    threshold; block_length and factor are refused by the other algs."""
    model = TinyMaskedLM(VOCAB, MASK_ID, seed=fresh_seed)
    prompt, attention = _prompt(fresh_seed, 3, 6, True)
    base = dict(max_new_tokens=16, steps=4, mask_token_id=MASK_ID, attention_mask=attention)
    for extra in (dict(threshold=0.3), dict(factor=1.0), dict(threshold=0.3, block_length=8)):
        out = diffusion_generate(model, prompt, alg="confidence_threshold", **base, **extra)
        assert out.shape == (3, 22) and not bool((out[:, 6:] == MASK_ID).any())
    for name, value in (("block_length", 8), ("factor", 1.0)):
        with pytest.raises(ValueError, match=name):
            diffusion_generate(model, prompt, alg="entropy", **base, **{name: value})
    with pytest.raises(ValueError, match="threshold"):
        diffusion_generate(model, prompt, alg="confidence_threshold", threshold=1.5, **base)
