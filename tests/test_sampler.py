"""Behaviour of the reference sampler (torch backend) on oracle models with known logits and on tiny
random-init Hugging Face models."""
import math

import numpy as np
import pytest
import torch

from conftest import MASK_ID, OracleModel
from fastdiff import GenerationOutput, Sampler, SamplerConfig
from fastdiff.schedule import cosine_schedule

V = 32


def _masks_per_step(out: GenerationOutput, start: int = 0):
    """Masked counts of the generated span before the first step and after every step."""
    counts = [int((h[:, start:] == MASK_ID).sum(dim=-1).max()) for h in out.history]
    return counts


def _commits_per_step(out: GenerationOutput, start: int, gen_length: int):
    left = [gen_length] + _masks_per_step(out, start)
    return [a - b for a, b in zip(left, left[1:])]


def _random_table(L, seed, vocab=V):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(L, vocab, generator=g) * 2
    table[:, MASK_ID] = 10.0  # the mask token is always suppressed, however likely
    return table


# ------------------------------------------------------------------------------------------------
# schedules and counts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule,expected", [
    ("linear", [3, 3, 2, 2]),
    ("cosine", cosine_schedule(10, 4)),
    (lambda n, s: [n - s + 1] + [1] * (s - 1), [7, 1, 1, 1]),
])
def test_exact_commit_counts_per_step(schedule, expected):
    model = OracleModel(_random_table(14, 0))
    out = Sampler(model, MASK_ID, steps=4, schedule=schedule, return_history=True).generate(
        torch.tensor([[5, 6, 7, 8]]), gen_length=10)
    assert out.nfe == 4 == model.calls
    assert _commits_per_step(out, 4, 10) == expected
    assert not (out.sequences == MASK_ID).any()


def test_steps_default_to_one_per_token_and_clamp_to_the_tokens():
    model = OracleModel(_random_table(9, 1))
    out = Sampler(model, MASK_ID).generate(torch.tensor([[5, 6, 7]]), gen_length=6)
    assert out.nfe == 6
    model = OracleModel(_random_table(9, 1))
    out = Sampler(model, MASK_ID, steps=50).generate(torch.tensor([[5, 6, 7]]), gen_length=6)
    assert out.nfe == 6 == model.calls  # clamped: no forward that could commit nothing


# ------------------------------------------------------------------------------------------------
# which positions: the score of each rule
# ------------------------------------------------------------------------------------------------
def _probs(table):
    t = table.double().clone()
    t[:, MASK_ID] = -math.inf
    return torch.softmax(t, dim=-1)


@pytest.mark.parametrize("unmask", ["confidence", "margin", "entropy"])
def test_positions_are_chosen_by_the_rule_score(unmask, fresh_seed):
    for trial in range(5):
        table = _random_table(12, fresh_seed + trial)
        table[2:] *= torch.linspace(0.2, 3.0, 10)[:, None]  # spread the scores
        p = _probs(table)[2:]
        top = p.sort(dim=-1, descending=True).values
        score = {"confidence": top[:, 0], "margin": top[:, 0] - top[:, 1],
                 "entropy": (p * torch.log(p.clamp_min(1e-300))).sum(-1)}[unmask]
        out = Sampler(OracleModel(table), MASK_ID, steps=5, unmask=unmask, return_history=True).generate(
            torch.tensor([[5, 6]]), gen_length=10)
        first = (out.history[0][0, 2:] != MASK_ID).nonzero()[:, 0]
        assert sorted(first.tolist()) == sorted(torch.topk(score, 2).indices.tolist())
        # and the tokens are the argmax
        assert torch.equal(out.sequences[0, 2:], p.argmax(-1))


def test_random_unmask_picks_positions_uniformly(fresh_seed):
    table = _random_table(10, 3)
    table[5] *= 20  # a very confident position must not be preferred
    rows = 300
    out = Sampler(OracleModel(table), MASK_ID, steps=10, unmask="random", return_history=True,
                  seed=fresh_seed).generate(torch.zeros(rows, 0, dtype=torch.long), gen_length=10)
    firsts = np.bincount((out.history[0] != MASK_ID).nonzero()[:, 1].numpy(), minlength=10)
    assert firsts.sum() == rows  # one position per row and step
    expected = rows / 10
    assert ((firsts - expected) ** 2 / expected).sum() < 9 + 10 * math.sqrt(18) + 20


def test_position_temperature_samples_positions(fresh_seed):
    table = _random_table(6, 4)
    chosen = set()
    for seed in range(40):
        out = Sampler(OracleModel(table), MASK_ID, steps=6, position_temperature=5.0, return_history=True,
                      seed=fresh_seed + seed).generate(torch.zeros(1, 0, dtype=torch.long), gen_length=6)
        chosen.add(int((out.history[0][0] != MASK_ID).nonzero()[0, 0]))
    assert len(chosen) >= 3  # plain top-k would always pick the same position


# ------------------------------------------------------------------------------------------------
# greedy determinism, seeds, sampling through the sampler
# ------------------------------------------------------------------------------------------------
def test_greedy_is_deterministic_and_seed_independent(tiny_roberta):
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=6)
    prompt = torch.randint(5, 1000, (3, 5), generator=torch.Generator().manual_seed(0))
    a = sampler.generate(prompt, gen_length=12, seed=1).sequences
    b = sampler.generate(prompt, gen_length=12, seed=2).sequences
    assert torch.equal(a, b)


def test_seeds_reproduce_and_differ(tiny_roberta):
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=6, temperature=1.0)
    prompt = torch.randint(5, 1000, (2, 5), generator=torch.Generator().manual_seed(0))
    a = sampler.generate(prompt, gen_length=12, seed=7).sequences
    b = sampler.generate(prompt, gen_length=12, seed=7).sequences
    c = sampler.generate(prompt, gen_length=12, seed=8).sequences
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = sampler.generate(prompt, gen_length=12).sequences
    torch.manual_seed(5)
    e = sampler.generate(prompt, gen_length=12).sequences
    assert torch.equal(d, e)


def test_sampler_token_frequencies_match_filtered_softmax(fresh_seed):
    row = torch.tensor([1.0, 0.5, 2.0, 0.0, 1.5, -1.0, 0.3, 0.8])
    table = torch.cat([row, torch.tensor([float("-inf"), 4.0])])  # id 9 is the mask: suppressed
    n = 4000
    out = Sampler(OracleModel(table), 9, steps=1, temperature=0.8, top_k=5, top_p=0.9,
                  suppress_token_ids=[2], seed=fresh_seed).generate(torch.zeros(1, 0, dtype=torch.long), gen_length=n)
    tokens = out.sequences[0].numpy()
    z = table.double().numpy() / 0.8
    z[[2, 9]] = -np.inf
    kept = np.argsort(-z)[:5]
    p = np.exp(z[kept] - z[kept].max())
    p /= p.sum()
    order = np.argsort(-p)
    mass_before = np.cumsum(p[order]) - p[order]
    nucleus = kept[order[mass_before < 0.9]]
    assert set(np.unique(tokens)) <= set(nucleus.tolist())
    probs = np.zeros(10)
    probs[nucleus] = np.exp(z[nucleus] - z[nucleus].max())
    probs /= probs.sum()
    counts = np.bincount(tokens, minlength=10)
    chi2 = ((counts - n * probs)[probs > 0] ** 2 / (n * probs[probs > 0])).sum()
    assert chi2 < len(nucleus) - 1 + 10 * math.sqrt(2 * (len(nucleus) - 1)) + 20


# ------------------------------------------------------------------------------------------------
# ancestral
# ------------------------------------------------------------------------------------------------
def test_ancestral_reveal_rate_is_t_minus_s_over_t(fresh_seed):
    steps, n, rows = 5, 400, 4
    out = Sampler(OracleModel(_random_table(1, 2)[0]), MASK_ID, steps=steps, unmask="ancestral",
                  return_history=True, seed=fresh_seed).generate(torch.zeros(rows, 0, dtype=torch.long), gen_length=n)
    masked = [rows * n] + [int((h == MASK_ID).sum()) for h in out.history]
    for i in range(steps):
        prob = 1.0 / (steps - i)  # linear schedule: t = 1 - i/steps, (t - s) / t
        revealed = masked[i] - masked[i + 1]
        mean, sd = masked[i] * prob, math.sqrt(masked[i] * prob * (1 - prob)) + 1e-9
        assert abs(revealed - mean) <= 5 * sd
    assert masked[-1] == 0 and out.nfe == steps


def test_binomial_transfer_counts_are_ancestral_counts_at_confident_positions(fresh_seed):
    """dllm's stochastic transfer: each row commits the ancestral law's counts (the same draws as
    unmask="ancestral" with the same seed), and the positions are the most confident masked ones."""
    n, steps, rows = 24, 6, 3
    table = _random_table(n, 5)
    kwargs = dict(steps=steps, return_history=True, seed=fresh_seed)
    binomial = Sampler(OracleModel(table), MASK_ID, transfer_counts="binomial", **kwargs).generate(
        torch.zeros(rows, 0, dtype=torch.long), gen_length=n)
    ancestral = Sampler(OracleModel(table), MASK_ID, unmask="ancestral", **kwargs).generate(
        torch.zeros(rows, 0, dtype=torch.long), gen_length=n)
    masked = lambda out: [[int((h[r] == MASK_ID).sum()) for h in out.history] for r in range(rows)]  # noqa: E731
    assert masked(binomial) == masked(ancestral) and len(set(map(tuple, masked(binomial)))) > 1  # rows differ
    # greedy confidence: each committed position outranks every position still masked after it
    confidence = torch.softmax(table.masked_fill(torch.arange(V) == MASK_ID, float("-inf")), dim=-1).amax(dim=-1)
    for r in range(rows):
        for canvas in binomial.history:
            filled, left = canvas[r] != MASK_ID, canvas[r] == MASK_ID
            if filled.any() and left.any():
                assert confidence[filled].min() >= confidence[left].max()
    with pytest.raises(ValueError, match="transfer_counts"):
        Sampler(OracleModel(table), MASK_ID, transfer_counts="poisson")
    with pytest.raises(ValueError, match="threshold"):
        Sampler(OracleModel(table), MASK_ID, transfer_counts="binomial", threshold=0.9)


def test_ancestral_follows_the_cosine_time_grid(fresh_seed):
    steps, n, rows = 4, 500, 4
    out = Sampler(OracleModel(_random_table(1, 3)[0]), MASK_ID, steps=steps, unmask="ancestral",
                  schedule="cosine", return_history=True, seed=fresh_seed).generate(
        torch.zeros(rows, 0, dtype=torch.long), gen_length=n)
    total = rows * n
    for i, canvas in enumerate(out.history):
        expected = math.cos(math.pi / 2 * (i + 1) / steps)
        assert abs(int((canvas == MASK_ID).sum()) / total - expected) < 5 * math.sqrt(0.25 / total) + 1e-9


def test_ancestral_time_grid_is_not_clamped_and_skips_empty_steps(fresh_seed):
    # MDLM-style: 1000 time steps over 12 tokens. Most steps reveal nothing and run no forward pass.
    model = OracleModel(_random_table(12, 4))
    out = Sampler(model, MASK_ID, steps=1000, unmask="ancestral", temperature=1.0, return_history=True,
                  seed=fresh_seed).generate(torch.zeros(2, 0, dtype=torch.long), gen_length=12)
    assert out.nfe == model.calls <= 24 and not (out.sequences == MASK_ID).any()
    revealed = [int((a != b).sum()) for a, b in zip([torch.full((2, 12), MASK_ID)] + out.history, out.history)]
    assert min(revealed) >= 1  # every forward pass revealed something
    again = Sampler(OracleModel(_random_table(12, 4)), MASK_ID, steps=1000, unmask="ancestral", temperature=1.0,
                    seed=fresh_seed).generate(torch.zeros(2, 0, dtype=torch.long), gen_length=12)
    assert torch.equal(out.sequences, again.sequences)


# ------------------------------------------------------------------------------------------------
# blocks, threshold, remask
# ------------------------------------------------------------------------------------------------
def test_blocks_fill_left_to_right():
    P, G, block = 3, 12, 4
    out = Sampler(OracleModel(_random_table(P + G, 5)), MASK_ID, steps=6, block_length=block,
                  return_history=True).generate(torch.tensor([[5, 6, 7]]), gen_length=G)
    assert out.nfe == 6
    previous = torch.full((G,), MASK_ID)
    for i, h in enumerate(out.history):
        changed = (h[0, P:] != previous).nonzero()[:, 0]
        current_block = i // 2  # 6 steps over 3 blocks: 2 each
        assert ((changed // block) == current_block).all()
        # earlier blocks are complete
        assert not (h[0, P:P + current_block * block] == MASK_ID).any()
        previous = h[0, P:].clone()


def test_short_last_block_is_allowed():
    out = Sampler(OracleModel(_random_table(13, 6)), MASK_ID, steps=3, block_length=4).generate(
        torch.tensor([[5, 6, 7]]), gen_length=10)
    assert out.nfe == 3 and not (out.sequences == MASK_ID).any()


def test_threshold_commits_every_confident_position_and_at_least_one():
    L = 6
    table = torch.full((L, V), -5.0)
    confident = [1, 4]
    for pos in range(L):
        table[pos, 10 + pos] = 8.0 if pos in confident else 0.0
    out = Sampler(OracleModel(table), MASK_ID, steps=6, threshold=0.9, return_history=True).generate(
        torch.zeros(1, 0, dtype=torch.long), gen_length=L)
    first = (out.history[0][0] != MASK_ID).nonzero()[:, 0].tolist()
    assert first == confident
    # afterwards nothing clears 0.9: one per step, the rest committed by the end of the budget
    assert [int((h != MASK_ID).sum()) for h in out.history] == [2, 3, 4, 5, 6]
    assert out.nfe == 5  # the block finished early: no wasted forward


def test_threshold_rows_commit_different_counts_and_budget_ends_blocks():
    table = torch.full((8, V), -5.0)
    table[:, 20] = 8.0  # every position is confident
    out = Sampler(OracleModel(table), MASK_ID, steps=4, threshold=0.9, block_length=4).generate(
        torch.zeros(2, 0, dtype=torch.long), gen_length=8)
    assert out.nfe == 2  # one step per block suffices
    table[:, 20] = 0.0  # nobody is confident: one per step, then the last step of each block commits the rest
    out = Sampler(OracleModel(table), MASK_ID, steps=4, threshold=0.9, block_length=4, return_history=True
                  ).generate(torch.zeros(1, 0, dtype=torch.long), gen_length=8)
    assert out.nfe == 4
    assert [int((h != MASK_ID).sum()) for h in out.history] == [1, 4, 5, 8]


def test_remask_never_touches_prompt_and_ends_unmasked(tiny_roberta):
    prompt = torch.tensor([[0, 10, 11, 12, 13]])
    out = Sampler(tiny_roberta, 4, steps=8, remask="low_confidence", remask_ratio=0.5, block_length=8,
                  temperature=1.0, seed=3, return_history=True).generate(prompt, gen_length=16)
    for canvas in out.history:
        assert torch.equal(canvas[:, :5], prompt)
    masked = [int((h == 4).sum()) for h in out.history]
    # linear targets per block of 8 over 4 steps: 6, 4, 2, 0; each step commits 2 then re-masks 1,
    # except at a block's last step
    assert masked == [6 + 1 + 8, 4 + 1 + 8, 2 + 1 + 8, 8, 6 + 1, 4 + 1, 2 + 1, 0]
    assert not (out.sequences == 4).any()
    assert out.nfe == 8


def test_remask_keeps_the_schedule_targets():
    table = _random_table(12, 8)
    out = Sampler(OracleModel(table), MASK_ID, steps=4, remask="low_confidence", remask_ratio=0.5,
                  return_history=True).generate(torch.zeros(1, 0, dtype=torch.long), gen_length=12)
    masked = [int((h == MASK_ID).sum()) for h in out.history]
    # linear targets after each step: 9, 6, 3, 0. Each step commits down to its target (3, then
    # 10 - 6 = 4, then 8 - 3 = 5) and re-masks floor(0.5 * committed) = 1, 2, 2; the last step none.
    assert masked == [9 + 1, 6 + 2, 3 + 2, 0]


# ------------------------------------------------------------------------------------------------
# CFG, logits shift, EOS
# ------------------------------------------------------------------------------------------------
class PromptSensitiveModel:
    """Logits depend on whether the prompt is visible: the conditional and unconditional predictions."""

    def __init__(self, cond, uncond):
        self.cond, self.uncond, self.batches = cond, uncond, []

    def __call__(self, input_ids, attention_mask=None):
        self.batches.append(input_ids.shape[0])
        visible = (input_ids[:, :2] != MASK_ID).all(dim=-1)
        L = input_ids.shape[1]
        return torch.where(visible[:, None, None], self.cond[:L], self.uncond[:L])


def test_cfg_formula_and_single_batched_forward():
    cond, uncond = _random_table(8, 10), _random_table(8, 11)
    model = PromptSensitiveModel(cond, uncond)
    seen = []
    out = Sampler(model, MASK_ID, steps=6, cfg_scale=1.5).generate(
        torch.tensor([[5, 6], [7, 8]]), gen_length=6, on_step=lambda step, canvas, logits: seen.append(logits.clone()))
    assert model.batches == [4] * 6  # both inputs in one forward per step
    expected = uncond + 2.5 * (cond - uncond)
    assert torch.allclose(seen[0], expected.expand(2, -1, -1))
    probs = expected.clone()
    probs[:, MASK_ID] = -math.inf
    assert torch.equal(out.sequences[:, 2:], probs[2:].argmax(-1).expand(2, -1))


def test_logits_shift_reads_the_previous_position():
    L = 7
    table = torch.zeros(L, V)
    for pos in range(L):
        table[pos, 10 + pos] = 5.0
    out = Sampler(OracleModel(table), MASK_ID, steps=5, logits_shift=True).generate(
        torch.tensor([[5, 6]]), gen_length=5)
    assert out.sequences[0, 2:].tolist() == [11, 12, 13, 14, 15]
    # position 0 keeps its own logits
    out = Sampler(OracleModel(table), MASK_ID, steps=7, logits_shift=True).infill(torch.full((1, L), MASK_ID))
    assert out.sequences[0].tolist() == [10, 10, 11, 12, 13, 14, 15]


def test_eos_stops_rows_and_fills_after():
    L, eos = 10, 20
    table = torch.full((L, V), 0.0)
    for pos in range(L):
        table[pos, 10] = 2.0
    table[4, eos] = 9.0  # the most confident commit is EOS at position 4
    model = OracleModel(table)
    out = Sampler(model, MASK_ID, steps=10, eos_token_id=eos, return_history=True).generate(
        torch.tensor([[5, 6]]), gen_length=8)
    seq = out.sequences[0].tolist()
    assert seq[4] == eos and seq[5:] == [eos] * 5
    assert seq[2:4] == [10, 10]
    assert out.stopped_at_eos.tolist() == [True] and out.finished.tolist() == [True]
    assert out.nfe == 3 == model.calls  # EOS, then the two positions before it; the rest is filled
    out = Sampler(OracleModel(table), MASK_ID, steps=10, eos_token_id=eos, stop_at_eos=False).generate(
        torch.tensor([[5, 6]]), gen_length=8)
    assert out.nfe == 8 and out.stopped_at_eos.tolist() == [False] and out.finished.tolist() == [True]


def test_finished_rows_stop_while_others_continue():
    eos = 20

    class TwoRows:
        def __call__(self, input_ids, attention_mask=None):
            B, L = input_ids.shape
            logits = torch.zeros(B, L, V)
            logits[:, :, 10] = 2.0
            logits[0, 3, eos] = 9.0
            return logits

    out = Sampler(TwoRows(), MASK_ID, steps=6, eos_token_id=[eos, 21]).generate(
        torch.tensor([[5], [6]]), gen_length=6)
    assert out.sequences[0].tolist() == [5, 10, 10, eos, eos, eos, eos]
    assert out.sequences[1].tolist() == [6] + [10] * 6
    assert out.stopped_at_eos.tolist() == [True, False] and out.finished.tolist() == [True, True]
    assert out.nfe == 6


# ------------------------------------------------------------------------------------------------
# padding and infill
# ------------------------------------------------------------------------------------------------
def test_padded_batch_equals_each_row_alone(tiny_roberta):
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=5, block_length=5)
    rows = [torch.tensor([0, 11, 12, 13, 14, 15]), torch.tensor([0, 21, 22]), torch.tensor([0, 31, 32, 33, 34])]
    P = max(len(r) for r in rows)
    batch = torch.full((3, P), 1)
    attention = torch.zeros(3, P, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, P - len(r):] = r
        attention[i, P - len(r):] = 1
    out = sampler.generate(batch, gen_length=10, attention_mask=attention)
    for i, r in enumerate(rows):
        alone = sampler.generate(r[None], gen_length=10).sequences[0]
        assert torch.equal(out.sequences[i, P:], alone[len(r):])
        assert torch.equal(out.sequences[i, :P], batch[i])  # pad and prompt untouched


def test_padded_batch_equals_rows_for_position_id_models():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=64)).eval()
    sampler = Sampler(model, mask_token_id=103, steps=4)
    batch = torch.tensor([[0, 0, 101, 7, 8], [101, 9, 10, 11, 12]])
    attention = (torch.arange(5)[None] >= torch.tensor([[2], [0]])).long()
    out = sampler.generate(batch, gen_length=8, attention_mask=attention)
    alone = sampler.generate(torch.tensor([[101, 7, 8]]), gen_length=8).sequences[0]
    assert torch.equal(out.sequences[0, 5:], alone[3:])


def test_infill_keeps_fixed_positions_and_fills_every_hole(tiny_roberta):
    canvas = torch.randint(5, 1000, (2, 20), generator=torch.Generator().manual_seed(2))
    holes = torch.zeros(2, 20, dtype=torch.bool)
    holes[0, [2, 3, 4, 11]] = True
    holes[1, 6:16] = True
    canvas[holes] = 4
    original = canvas.clone()
    out = Sampler(tiny_roberta, 4, steps=5, block_length=4, temperature=1.0, seed=0).infill(canvas)
    assert torch.equal(canvas, original)  # the caller's tensor is untouched
    assert torch.equal(out.sequences[~holes], original[~holes])
    assert not (out.sequences == 4).any()
    assert out.nfe <= 5
    assert torch.isnan(out.confidences[~holes]).all() and not torch.isnan(out.confidences[holes]).any()


def test_infill_respects_padding(tiny_roberta):
    canvas = torch.tensor([[1, 1, 0, 50, 4, 4, 60]])
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    out = Sampler(tiny_roberta, 4, steps=2).infill(canvas, attention_mask=attention)
    assert out.sequences[0, :4].tolist() == [1, 1, 0, 50] and out.sequences[0, 6] == 60
    assert not (out.sequences == 4).any()


def test_history_and_hooks():
    table = _random_table(8, 12)
    calls = []

    def on_step(step, canvas, logits):
        calls.append(step)
        if step == 0:
            forced = canvas.clone()
            forced[0, 7] = 25  # a tokens hook may fix a position
            return forced
        return None

    def logits_hook(step, canvas, logits):
        logits = logits.clone()
        logits[..., 26] = 50.0
        return logits

    out = Sampler(OracleModel(table), MASK_ID, steps=4, return_history=True).generate(
        torch.tensor([[5, 6]]), gen_length=6, on_step=on_step, logits_hook=logits_hook)
    assert calls == [0, 1, 2, 3] and len(out.history) == 4
    assert out.sequences[0, 7] == 25
    assert (out.sequences[0, 2:7] == 26).all()


def test_config_object_and_overrides_compose():
    config = SamplerConfig(steps=3, temperature=0.0)
    sampler = Sampler(OracleModel(_random_table(8, 13)), MASK_ID, config, block_length=3)
    assert sampler.config.block_length == 3 and sampler.config.steps == 3
    assert config.block_length is None  # the caller's config is not modified
    out = sampler.generate(torch.tensor([[5, 6]]), gen_length=6, steps=6)
    assert out.nfe == 6


def test_deferred_tokens_are_committed_last():
    eos = 20
    table = torch.zeros(6, V)
    table[:, 10] = 1.0
    table[1, eos] = 9.0  # by far the most confident: would be committed first
    out = Sampler(OracleModel(table), MASK_ID, steps=6, defer_token_ids=[eos], return_history=True).generate(
        torch.zeros(1, 0, dtype=torch.long), gen_length=6)
    assert out.history[-2][0, 1] == MASK_ID and out.sequences[0, 1] == eos
    out = Sampler(OracleModel(table), MASK_ID, steps=6, return_history=True).generate(
        torch.zeros(1, 0, dtype=torch.long), gen_length=6)
    assert out.history[0][0, 1] == eos


@pytest.mark.parametrize("shift", [False, True])
def test_begin_suppress_tokens_hold_only_at_the_first_generated_position(shift):
    table = torch.zeros(12, V)
    table[:, 20] = 5.0  # the argmax everywhere
    table[:, 21] = 4.0  # the runner-up
    model = OracleModel(table)
    out = Sampler(model, MASK_ID, steps=4, logits_shift=shift, begin_suppress_token_ids=[20]).generate(
        torch.tensor([[5, 6]]), gen_length=6)
    assert out.sequences[0].tolist() == [5, 6, 21] + [20] * 5
    hooked = Sampler(OracleModel(table), MASK_ID, steps=4, logits_shift=shift, begin_suppress_token_ids=[20]).generate(
        torch.tensor([[5, 6]]), gen_length=6, logits_hook=lambda step, canvas, logits: logits)
    assert torch.equal(hooked.sequences, out.sequences)  # the hook path suppresses the same column
    filled = Sampler(OracleModel(table), MASK_ID, begin_suppress_token_ids=[20]).infill(
        torch.tensor([[5, MASK_ID, MASK_ID]]))
    assert filled.sequences[0].tolist() == [5, 20, 20]  # infill: not a generation, nothing suppressed


def test_begin_suppress_tokens_on_the_masked_row_head(tiny_roberta):
    """The masked-row head (RoBERTa) suppresses the same position as the full head."""
    prompt = torch.tensor([[0, 11, 12]])
    runs = []
    for head in (True, False):
        sampler = Sampler(tiny_roberta, mask_token_id=4, steps=5, masked_head=head, seed=2)
        plain = sampler.generate(prompt, gen_length=6)
        first = int(plain.sequences[0, 3])
        suppressed = sampler.generate(prompt, gen_length=6, begin_suppress_token_ids=[first])
        assert int(suppressed.sequences[0, 3]) != first
        runs.append(suppressed.sequences)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("rule", [dict(threshold=0.02), dict(threshold=0.999), dict(factor=0.5), dict(factor=4.0)])
def test_schedule_cap_bounds_each_step_and_steps_on(rule, fresh_seed):
    """schedule_cap: after planned step i at most the linear schedule's first i + 1 counts are committed
    (a step may use what earlier ones left), at least one a step, and past the budget the block steps on
    until nothing is masked; without the cap the same rule commits beyond the schedule."""
    table = _random_table(26, fresh_seed)
    n, steps = 24, 4
    capped = Sampler(OracleModel(table), MASK_ID, steps=steps, schedule_cap=True, return_history=True, **rule
                     ).generate(torch.tensor([[0, 1]] * 2), gen_length=n)
    committed = [(h[:, 2:] != MASK_ID).sum(dim=1) for h in capped.history]
    assert bool((committed[-1] == n).all())
    previous = torch.zeros(2, dtype=torch.int64)
    for i, now in enumerate(committed):
        assert bool((now > previous).all() | (now == n).all())
        if i < steps:
            assert bool((now <= n * (i + 1) // steps).all())
        previous = now
    free = Sampler(OracleModel(table), MASK_ID, steps=steps, return_history=True, **rule).generate(
        torch.tensor([[0, 1]] * 2), gen_length=n)
    if rule.get("threshold") == 0.02 or rule.get("factor") == 4.0:  # most positions pass: more than the cap
        assert int((free.history[0][:, 2:] != MASK_ID).sum(dim=1).max()) > n // steps
    if rule.get("threshold") == 0.999:  # one a step: the cap steps on past the budget
        assert capped.nfe == n > steps


# ------------------------------------------------------------------------------------------------
# the configs and plans kept across calls
# ------------------------------------------------------------------------------------------------
def test_repeated_calls_reuse_the_plan_and_give_the_same_tokens():
    model = OracleModel(_random_table(14, 2))
    sampler = Sampler(model, MASK_ID, seed=3)
    prompt = torch.tensor([[5, 6, 7, 8]])
    first = sampler.generate(prompt, gen_length=10, steps=4, block_length=5)
    kept = dict(sampler._prepared)
    second = sampler.generate(prompt, gen_length=10, steps=4, block_length=5)
    assert torch.equal(first.sequences, second.sequences) and first.nfe == second.nfe == 4
    assert dict(sampler._prepared) == kept  # a config and a plan, reused: nothing new kept
    assert sum(type(value).__name__ == "Plan" for value in kept.values()) == 1
    first.sequences[:] = 0  # each call's outputs are its own
    assert torch.equal(second.sequences, sampler.generate(prompt, gen_length=10, steps=4, block_length=5).sequences)


def test_kept_configs_follow_the_values_and_still_check_types():
    model = OracleModel(_random_table(14, 2))
    sampler = Sampler(model, MASK_ID)
    prompt = torch.tensor([[5, 6, 7, 8]])
    assert sampler.generate(prompt, gen_length=10, steps=2).nfe == 2
    with pytest.raises(TypeError, match="steps"):  # equal to 2 in Python, but not an int
        sampler.generate(prompt, gen_length=10, steps=2.0)
    sampler.config.steps = 5  # a config changed in place plans anew
    assert sampler.generate(prompt, gen_length=10).nfe == 5
    assert sampler.config.values_key({"steps": 1}) != sampler.config.values_key({"steps": True})
    assert sampler.config.values_key({"seed": [1]}) is None  # a list can change behind the key


def test_seeded_plans_are_not_kept():
    """The ancestral counts are drawn from each row's seed: such plans are made for every call."""
    model = OracleModel(_random_table(30, 4))
    sampler = Sampler(model, MASK_ID, unmask="ancestral", steps=8)
    prompt = torch.tensor([[5, 6]])
    nfes = {sampler.generate(prompt, gen_length=8, seed=seed).nfe for seed in range(8)}
    assert not any(type(value).__name__ == "Plan" for value in sampler._prepared.values())
    assert len(nfes) > 1  # steps that reveal nothing are skipped, and which they are follows the seed


def test_kept_entries_are_bounded():
    from fastdiff.sampler import PREPARED_CALLS
    model = OracleModel(_random_table(40, 5))
    sampler = Sampler(model, MASK_ID)
    for length in range(1, 3 * PREPARED_CALLS):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=length % 30 + 1, steps=1)
    assert len(sampler._prepared) <= 2 * PREPARED_CALLS
