"""fastdiff.compat.llada.generate against an independent implementation of LLaDA's sampler.

``llada_reference`` below is written from the algorithm's description (LLaDA's ``generate.py`` and the
paper), not from fastdiff, and runs the model the way LLaDA does. Greedy runs on fp32 models must give
exactly its tokens; random remasking and sampling are checked structurally and statistically.

This module does not import ``conftest``: ``benchmarks/test_compat_bench.py`` imports it for
``llada_reference`` and ``TinyMaskedLM``.
"""
import gc
import math
import types
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastdiff.compat
from fastdiff.compat import llada
from fastdiff.compat.llada import LLADA_EOS_ID, LLADA_EOT_ID

LLADA_VOCAB = 126464
PAD_ID = 1


class TinyMaskedLM(nn.Module):
    """A small random bidirectional transformer that takes both LLaDA's and Dream's calling conventions.

    ``forward(input_ids, attention_mask=None, position_ids=None)``: positions are the indices
    ``0..L-1`` (LLaDA: the model numbers positions itself) unless ``position_ids`` are given (Dream's
    ``tok_idx``); ``attention_mask`` is ``None`` / ``"full"`` (attend everywhere), ``[B, L]`` of 0/1 (0:
    a key that is never attended, LLaDA's padding) or bool ``[B, 1, L, L]`` (Dream's padding mask).
    Every call takes the same attention path (an additive bias, zeros without masking), so equal inputs
    give bit-equal logits. The mask token's output bias is -1e4: like trained models, it never predicts
    the mask token (its probability is exactly 0 in fp32). Returns an object with ``.logits`` (fp32).
    """

    def __init__(self, vocab_size, mask_id, seed, dim=32, layers=2, heads=2, max_positions=512):
        super().__init__()
        self.config = types.SimpleNamespace(vocab_size=vocab_size, max_position_embeddings=max_positions)
        self.heads = heads
        self.embed = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_positions, dim)
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                                 for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        generator = torch.Generator().manual_seed(seed)
        for param in self.parameters():
            param.data = torch.randn(param.shape, generator=generator) * (0.6 if param.dim() > 1 else 0.3)
        self.head.bias.data[mask_id] = -1e4
        self.eval()

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        B, L = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(L, device=input_ids.device).expand(B, L)
        bias = torch.zeros(B, 1, L, L, device=input_ids.device)
        if isinstance(attention_mask, torch.Tensor):
            allowed = attention_mask[:, None, None, :].bool() if attention_mask.dim() == 2 else attention_mask
            bias = bias.masked_fill(~allowed, -1e9)
        h = self.embed(input_ids) + self.positions(position_ids)
        for qkv, mlp in zip(self.qkv, self.mlp):
            q, k, v = qkv(self.norm(h)).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            h = h + attended.transpose(1, 2).reshape(B, L, -1)
            h = h + mlp(self.norm(h))
        return types.SimpleNamespace(logits=self.head(self.norm(h)))


class TableModel:
    """A context-free model: position ``l`` gets ``table[l]`` whatever the canvas; records its inputs."""

    def __init__(self, table):
        self.table = table
        self.inputs = []

    def __call__(self, input_ids, attention_mask=None):
        self.inputs.append(input_ids.clone())
        B, L = input_ids.shape
        return types.SimpleNamespace(logits=self.table[:L].expand(B, L, -1).clone())


@torch.no_grad()
def llada_reference(model, prompt, attention_mask=None, steps=128, gen_length=128, block_length=128,
                    temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=126336,
                    logits_eos_inf=False, confidence_eos_eot_inf=False):
    """LLaDA's sampler, written from its description, with one deliberate change: with
    ``confidence_eos_eot_inf`` the positions that drew EOS / EoT rank below every other masked position
    of the block, in position order (what the flag is meant to do; LLaDA's code writes -inf into logits
    instead, see fastdiff.compat.llada)."""
    B, P = prompt.shape
    device = prompt.device
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id, dtype=torch.long, device=device)], dim=1)
    attention = None
    if attention_mask is not None:
        attention = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype, device=device)],
                              dim=1)
    prompt_positions = x != mask_id
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for block in range(num_blocks):
        start, end = P + block * block_length, P + (block + 1) * block_length
        to_fill = (x[:, start:end] == mask_id).sum(dim=1)
        # linear schedule, the remainder one each on the first steps
        counts = [[int(n) // steps_per_block + (1 if i < int(n) % steps_per_block else 0)
                   for i in range(steps_per_block)] for n in to_fill]
        for i in range(steps_per_block):
            masked = x == mask_id
            if cfg_scale > 0:
                unconditional = x.masked_fill(prompt_positions, mask_id)
                both_attention = None if attention is None else torch.cat([attention, attention])
                conditional_logits, unconditional_logits = model(
                    torch.cat([x, unconditional]), attention_mask=both_attention).logits.chunk(2)
                logits = unconditional_logits + (cfg_scale + 1) * (conditional_logits - unconditional_logits)
            else:
                logits = model(x, attention_mask=attention).logits
            if logits_eos_inf:
                logits[:, :, LLADA_EOS_ID] = -math.inf
            if temperature > 0:  # Gumbel-max in float64: a sample of softmax(logits / T)
                uniform = torch.rand(logits.shape, dtype=torch.float64, device=device)
                drawn = torch.argmax(logits.double() / temperature - torch.log(-torch.log(uniform)), dim=-1)
            else:
                drawn = torch.argmax(logits, dim=-1)
            if remasking == "low_confidence":
                confidence = torch.gather(F.softmax(logits, dim=-1), -1, drawn[..., None])[..., 0]
                if confidence_eos_eot_inf:  # below any probability, earlier positions first
                    eos_or_eot = (drawn == LLADA_EOS_ID) | (drawn == LLADA_EOT_ID)
                    last = -1.0 - torch.arange(x.shape[1], device=device) / x.shape[1]
                    confidence = torch.where(eos_or_eot, last, confidence)
            else:
                confidence = torch.rand(drawn.shape, device=device)
            confidence[:, end:] = -math.inf
            confidence = torch.where(masked, confidence, torch.full_like(confidence, -math.inf))
            drawn = torch.where(masked, drawn, x)
            for row in range(B):
                chosen = torch.topk(confidence[row], counts[row][i]).indices
                x[row, chosen] = drawn[row, chosen]
    return x


def _prompt(generator, batch, length, padded, high=399):
    """Random prompt ids in [5, high) (below the tests' mask ids); rows after the first left-padded."""
    prompt = torch.randint(5, high, (batch, length), generator=generator)
    attention = torch.ones(batch, length, dtype=torch.long)
    if padded:
        for row in range(1, batch):
            pad = int(torch.randint(1, length - 1, (1,), generator=generator))
            prompt[row, :pad] = PAD_ID
            attention[row, :pad] = 0
    return prompt, attention if padded else None


# ------------------------------------------------------------------------------------------------
# greedy: exactly the reference's tokens
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps,gen_length,block_length,cfg_scale,padded", [
    (16, 16, 16, 0.0, False),   # one block, one token per step
    (6, 24, 8, 0.0, False),     # three blocks, 2 steps each: 4 tokens per step
    (9, 24, 8, 0.0, True),      # 3 steps per block over 8 tokens: counts 3, 3, 2; left-padded batch
    (8, 16, 8, 1.5, False),     # classifier-free guidance
    (4, 16, 8, 2.0, True),      # guidance with left padding
    (24, 16, 8, 0.0, False),    # 12 steps per block over 8 tokens: the reference's last 4 commit nothing
])
def test_greedy_matches_reference_exactly(steps, gen_length, block_length, cfg_scale, padded, fresh_seed):
    generator = torch.Generator().manual_seed(fresh_seed)
    mask_id = 399
    model = TinyMaskedLM(400, mask_id, seed=fresh_seed)
    prompt, attention = _prompt(generator, 3, 7, padded)
    prompt_before = prompt.clone()
    expected = llada_reference(model, prompt, attention, steps=steps, gen_length=gen_length,
                               block_length=block_length, cfg_scale=cfg_scale, mask_id=mask_id)
    out = llada.generate(model, prompt, attention, steps=steps, gen_length=gen_length, block_length=block_length,
                         cfg_scale=cfg_scale, mask_id=mask_id)
    assert out.dtype == torch.int64 and out.shape == (3, 7 + gen_length)
    assert torch.equal(out, expected)
    assert torch.equal(prompt, prompt_before)  # the caller's tensors are left alone
    assert not out.is_inference()  # like LLaDA's: usable in place and as training input


def test_steps_beyond_the_tokens_are_not_run(fresh_seed):
    table = torch.randn(20, 50, generator=torch.Generator().manual_seed(fresh_seed))
    table[:, 49] = -1e4
    model = TableModel(table)
    llada.generate(model, torch.tensor([[5, 6, 7, 8]]), steps=32, gen_length=16, block_length=8, mask_id=49)
    assert len(model.inputs) == 16  # 16 steps per block over 8 tokens: 8 forwards per block


class PrefersEos(nn.Module):
    """A TinyMaskedLM whose logits favour EOS at every third position and EoT at every fourth."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, attention_mask=None):
        logits = self.inner(input_ids, attention_mask).logits
        logits[:, ::3, LLADA_EOS_ID] += 50.0
        logits[:, 1::4, LLADA_EOT_ID] += 50.0
        return types.SimpleNamespace(logits=logits)


def test_eos_flags_match_the_intended_algorithm(fresh_seed):
    model = PrefersEos(TinyMaskedLM(LLADA_VOCAB, llada.LLADA_MASK_ID, seed=fresh_seed, dim=16, layers=1))
    generator = torch.Generator().manual_seed(fresh_seed)
    prompt = torch.randint(5, 1000, (2, 6), generator=generator)
    settings = dict(steps=4, gen_length=8, block_length=4)

    plain = llada.generate(model, prompt, **settings)
    assert torch.equal(plain, llada_reference(model, prompt, **settings))
    assert bool((plain == LLADA_EOS_ID).any()) and bool((plain == LLADA_EOT_ID).any())

    no_eos = llada.generate(model, prompt, logits_eos_inf=True, **settings)
    assert not bool((no_eos == LLADA_EOS_ID).any())
    assert torch.equal(no_eos, llada_reference(model, prompt, logits_eos_inf=True, **settings))

    deferred = llada.generate(model, prompt, confidence_eos_eot_inf=True, **settings)
    assert torch.equal(deferred, llada_reference(model, prompt, confidence_eos_eot_inf=True, **settings))


def test_eos_positions_are_committed_last_in_their_block(fresh_seed):
    """A context-free model: the positions that draw EOS / EoT are the last ones of their block."""
    generator = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(16, LLADA_VOCAB, generator=generator)
    table[:, llada.LLADA_MASK_ID] = -1e4
    eos_positions = [5, 6, 9, 12]  # in blocks [4, 8) and [8, 16): the most confident positions there
    for position in eos_positions:
        table[position, LLADA_EOS_ID if position % 2 else LLADA_EOT_ID] = 30.0
    model = TableModel(table)
    out = llada.generate(model, torch.tensor([[7, 8, 9, 10]]), steps=6, gen_length=12, block_length=4,
                         confidence_eos_eot_inf=True)
    committed_at = {}  # the last step whose input still had the position masked: the step committing it
    for step, canvas in enumerate(model.inputs):
        for position in (canvas[0] == llada.LLADA_MASK_ID).nonzero()[:, 0].tolist():
            committed_at[position] = step
    for position in eos_positions:
        block = range(4 + 4 * ((position - 4) // 4), 8 + 4 * ((position - 4) // 4))
        others = [committed_at[p] for p in block if p not in eos_positions]
        assert committed_at[position] >= max(others)
        assert int(out[0, position]) in (LLADA_EOS_ID, LLADA_EOT_ID)


# ------------------------------------------------------------------------------------------------
# random remasking and sampling
# ------------------------------------------------------------------------------------------------
def test_random_remasking_counts_blocks_and_tokens(fresh_seed):
    """Context-free model at temperature 0: the tokens are each position's argmax whatever the order,
    so they equal the reference's; each step commits LLaDA's count, inside the current block."""
    generator = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(23, 60, generator=generator)
    table[:, 59] = -1e4
    model = TableModel(table)
    prompt = torch.randint(5, 59, (2, 3), generator=generator)
    out = llada.generate(model, prompt, steps=6, gen_length=20, block_length=10, remasking="random", mask_id=59)
    assert torch.equal(out, llada_reference(TableModel(table), prompt, steps=6, gen_length=20, block_length=10,
                                            remasking="random", mask_id=59))
    canvases = model.inputs + [out]
    commits = []
    for before, after in zip(canvases, canvases[1:]):
        newly = (before == 59) & (after != 59)
        columns = newly.any(dim=0).nonzero()[:, 0]
        commits.append((newly.sum(dim=1).tolist(), int(columns.min()), int(columns.max())))
    assert [c[0] for c in commits] == [[4, 4], [3, 3], [3, 3]] * 2
    for step, (_, lowest, highest) in enumerate(commits):
        block = step // 3
        assert 3 + 10 * block <= lowest and highest < 3 + 10 * (block + 1)


def test_random_remasking_picks_positions_uniformly(fresh_seed):
    torch.manual_seed(fresh_seed)
    table = torch.randn(14, 30)
    table[:, 29] = -1e4
    table[6] *= 20  # a very confident position is no more likely to go first
    hits = torch.zeros(10)
    rows, runs = 50, 4
    for _ in range(runs):
        model = TableModel(table)
        llada.generate(model, torch.tensor([[5, 6, 7, 8]]).expand(rows, 4), steps=2, gen_length=10,
                       block_length=10, remasking="random", mask_id=29)
        hits += (model.inputs[1][:, 4:] != 29).float().sum(dim=0)  # the 5 positions the first step committed
    samples = rows * runs
    assert float(((hits - samples / 2).abs() / math.sqrt(samples / 4)).max()) < 4.5


def test_temperature_samples_tempered_softmax_and_scores_untempered(fresh_seed):
    """Two positions, two steps, one commit each. Position 0 (logits [3, 0, 0, 0, 0]) and position 1
    (two tokens of equal logit: confidence 0.5 at every temperature). At T = 3 position 0 draws its top
    token with p = e / (e + 4) = 0.405; LLaDA scores it untempered (0.834 > 0.5: it goes first), so
    position 0 goes first with probability 0.405. A tempered score (0.405 or 0.149) would never win.
    Its final token is the top one with probability 0.405 + 0.595 * 0.405 (drawn again at step 2)."""
    torch.manual_seed(fresh_seed)
    table = torch.full((3, 6), -1e4)
    table[0] = 0.0  # the prompt position: unused
    table[1, :5] = torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0])
    table[2, :2] = 1.5
    first, top = 0, 0
    rows, runs = 100, 4
    for _ in range(runs):
        model = TableModel(table)
        out = llada.generate(model, torch.zeros(rows, 1, dtype=torch.long), steps=2, gen_length=2, block_length=2,
                             temperature=3.0, mask_id=5)
        first += int((model.inputs[1][:, 1] != 5).sum())
        top += int((out[:, 1] == 0).sum())
    samples = rows * runs
    p_top = math.e / (math.e + 4)
    assert abs(first / samples - p_top) < 5 * math.sqrt(p_top * (1 - p_top) / samples)
    p_final_top = p_top * (2 - p_top)
    assert abs(top / samples - p_final_top) < 5 * math.sqrt(p_final_top * (1 - p_final_top) / samples)


# ------------------------------------------------------------------------------------------------
# calling conventions, errors, caching
# ------------------------------------------------------------------------------------------------
def test_cfg_runs_without_attention_mask_in_one_batched_forward(fresh_seed):
    """LLaDA's own code raises for cfg_scale > 0 without an attention mask; fastdiff runs it, with the
    prompt masked in the unconditional half of one batched forward."""
    generator = torch.Generator().manual_seed(fresh_seed)
    table = torch.randn(12, 40, generator=generator)
    table[:, 39] = -1e4
    model = TableModel(table)
    out = llada.generate(model, torch.tensor([[5, 6, 7, 8]]), steps=4, gen_length=8, block_length=8,
                         cfg_scale=1.0, mask_id=39)
    assert len(model.inputs) == 4 and all(ids.shape == (2, 12) for ids in model.inputs)
    assert all(bool((ids[1, :4] == 39).all()) and torch.equal(ids[0, :4], torch.tensor([5, 6, 7, 8]))
               for ids in model.inputs)
    assert not bool((out == 39).any())


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(gen_length=20, block_length=8), ValueError, "block_length"),
    (dict(steps=5, gen_length=16, block_length=8), ValueError, "steps"),
    (dict(remasking="high_confidence"), ValueError, "remasking"),
    (dict(steps=0), ValueError, "steps"),
    (dict(gen_length=16.0), TypeError, "gen_length"),
    (dict(logits_eos_inf=1), TypeError, "logits_eos_inf"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(cfg_scale="2"), TypeError, "cfg_scale"),
    (dict(mask_id=3.0), TypeError, "mask_id"),
])
def test_bad_arguments_raise_naming_them(kwargs, error, name):
    table = torch.zeros(40, 50)
    settings = dict(steps=8, gen_length=16, block_length=8, mask_id=49)
    settings.update(kwargs)
    with pytest.raises(error, match=name):
        llada.generate(TableModel(table), torch.tensor([[5, 6, 7]]), **settings)


def test_bad_prompts_raise():
    table = torch.zeros(40, 50)
    with pytest.raises(ValueError, match="mask_token_id"):
        llada.generate(TableModel(table), torch.tensor([[5, 49, 7]]), steps=8, gen_length=8, block_length=8,
                       mask_id=49)
    with pytest.raises(ValueError, match="left or right padding"):
        llada.generate(TableModel(table), torch.tensor([[5, 1, 6]]), torch.tensor([[1, 0, 1]]), steps=8,
                       gen_length=8, block_length=8, mask_id=49)
    # a right-padded prompt runs as the left-padded one (dllm's batches), and comes back left-padded
    right = llada.generate(TableModel(table), torch.tensor([[5, 6, 1]]), torch.tensor([[1, 1, 0]]), steps=8,
                           gen_length=8, block_length=8, mask_id=49)
    left = llada.generate(TableModel(table), torch.tensor([[1, 5, 6]]), torch.tensor([[0, 1, 1]]), steps=8,
                          gen_length=8, block_length=8, mask_id=49)
    assert torch.equal(right, left)


def test_samplers_are_cached_per_settings_and_do_not_keep_models_alive(monkeypatch, fresh_seed):
    built = []

    class CountingSampler(fastdiff.compat.Sampler):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(fastdiff.compat, "Sampler", CountingSampler)  # what cached_sampler builds
    model = TinyMaskedLM(100, 99, seed=fresh_seed, dim=16, layers=1)
    prompt = torch.tensor([[5, 6, 7]])
    first = llada.generate(model, prompt, steps=4, gen_length=8, block_length=4, mask_id=99)
    again = llada.generate(model, prompt, steps=8, gen_length=8, block_length=8, mask_id=99)  # per-call settings
    assert len(built) == 1
    assert torch.equal(first, llada_reference(model, prompt, steps=4, gen_length=8, block_length=4, mask_id=99))
    assert torch.equal(again, llada_reference(model, prompt, steps=8, gen_length=8, block_length=8, mask_id=99))
    llada.generate(model, prompt, steps=4, gen_length=8, block_length=4, mask_id=99, cfg_scale=1.0)
    assert len(built) == 2
    for temperature in range(1, fastdiff.compat.SAMPLERS_PER_MODEL + 1):  # a sweep keeps a bounded cache
        llada.generate(model, prompt, steps=4, gen_length=8, block_length=4, mask_id=99, temperature=temperature)
    assert len(fastdiff.compat._samplers[model]) == fastdiff.compat.SAMPLERS_PER_MODEL

    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
    assert all(sampler.model is None for sampler in built)


@pytest.mark.cuda  # (the benchmarks import this module, where tests/conftest.py is not loaded)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_greedy_matches_reference_on_cuda_with_llada_vocabulary(fresh_seed):
    model = TinyMaskedLM(LLADA_VOCAB, llada.LLADA_MASK_ID, seed=fresh_seed, dim=64).cuda()
    generator = torch.Generator().manual_seed(fresh_seed)
    prompt, attention = _prompt(generator, 4, 20, padded=True, high=1000)
    prompt, attention = prompt.cuda(), attention.cuda()
    settings = dict(steps=32, gen_length=64, block_length=16, cfg_scale=0.5)
    expected = llada_reference(model, prompt, attention, **settings)
    assert torch.equal(llada.generate(model, prompt, attention, **settings), expected)


def test_ties_go_to_the_lowest_token_id_and_the_leftmost_position():
    """Every logit equal (a saturated model): each position draws the lowest id that is not the mask,
    and equal confidences commit left to right, one position per step."""
    vocab, mask_id, gen = 16, 15, 6
    table = torch.zeros(8 + gen, vocab)
    table[:, mask_id] = -1e4
    model = TableModel(table)
    prompt = torch.tensor([[3, 4]])
    out = llada.generate(model, prompt, steps=gen, gen_length=gen, block_length=gen, mask_id=mask_id)
    assert out[0, 2:].tolist() == [0] * gen
    for step, canvas in enumerate(model.inputs):  # before step k, the k leftmost generated positions are filled
        assert (canvas[0, 2:2 + step] == 0).all() and (canvas[0, 2 + step:] == mask_id).all()


@torch.no_grad()
def fast_dllm_reference(model, prompt, steps, gen_length, block_length, mask_id, threshold=None, factor=None):
    """Fast-dLLM's greedy LLaDA loop, written from its description: each block loops until it is full;
    a step commits the scheduled count (no threshold / factor), or the most confident masked position
    and every other one at ``>= threshold``, or the factor rule's count. Ties go to the lowest index."""
    B, P = prompt.shape
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id, dtype=torch.long)], dim=1)
    nfe, steps_per_block = 0, steps // (gen_length // block_length)
    for start in range(P, P + gen_length, block_length):
        end = start + block_length
        counts = linear_counts(block_length, steps_per_block)
        i = 0
        while (x[:, start:end] == mask_id).any():
            nfe += 1
            logits = model(x).logits.double()
            logits[..., mask_id] = -float("inf")
            x0 = logits.argmax(dim=-1)
            confidence = torch.softmax(logits, dim=-1).gather(-1, x0[..., None])[..., 0]
            masked = x == mask_id
            masked[:, end:] = False
            for b in range(B):
                n = int(masked[b].sum())
                order = sorted((-float(confidence[b, l]), l) for l in range(x.shape[1]) if masked[b, l])
                ranked = [-c for c, _ in order]
                if threshold is not None:
                    k = 1 + sum(1 for c in ranked[1:] if c >= threshold)
                elif factor is not None:
                    k = n
                    for rank in range(1, n):
                        if ranked[rank] < 1 - factor / (rank + 2):
                            k = rank if rank < n - 1 else n
                            break
                else:
                    k = counts[i] if n else 0
                for _, l in order[:k]:
                    x[b, l] = x0[b, l]
            i += 1
    return x, nfe


def linear_counts(n, steps):
    base, extra = divmod(n, steps)
    return [base + (i < extra) for i in range(steps)]


@pytest.mark.parametrize("rule", [dict(threshold=0.05), dict(threshold=0.3), dict(factor=0.5), dict(factor=1.0),
                                  dict(factor=3.0), dict()])
def test_fast_dllm_rules_match_their_loop(rule, fresh_seed):
    vocab, mask_id = 48, 47
    model = TinyMaskedLM(vocab, mask_id, seed=fresh_seed, dim=16, layers=1)
    prompt = torch.randint(0, 40, (2, 3), generator=torch.Generator().manual_seed(fresh_seed))
    expected, expected_nfe = fast_dllm_reference(model, prompt, 8, 16, 8, mask_id, **rule)
    steps = []
    got, nfe = llada.fast_dllm_generate(model, prompt, steps=8, gen_length=16, block_length=8, mask_id=mask_id,
                                        step_callback=steps.append, **rule)
    assert torch.equal(got, expected) and nfe == expected_nfe == len(steps) and steps == list(range(nfe))
    assert torch.equal(llada.generate(model, prompt, steps=8, gen_length=16, block_length=8, mask_id=mask_id,
                                      **rule), expected)


def test_fast_dllm_rules_decode_in_parallel():
    """On a fixed model the rules commit several tokens per step (fewer forwards than tokens), and a
    high threshold falls back to one per step."""
    model = TinyMaskedLM(48, 47, seed=0, dim=16, layers=1)
    prompt = torch.randint(0, 40, (2, 3), generator=torch.Generator().manual_seed(0))
    nfe = {name: llada.fast_dllm_generate(model, prompt, steps=8, gen_length=16, block_length=8, mask_id=47,
                                          **rule)[1]
           for name, rule in (("low", dict(threshold=0.05)), ("high", dict(threshold=0.3)),
                              ("factor", dict(factor=3.0)))}
    assert nfe["low"] < nfe["factor"] < nfe["high"] == 16
