"""The redrawing rules ``unmask="resample"`` (the RoBERTa-diffusion blog) and ``"mask_predict"``: every
step draws every editable position of the block again and masks some of them again.

The laws are checked against exact distributions computed here by enumerating every intermediate canvas
of a two-position generation under a model whose logits depend on the canvas, written from the rules'
definitions and not from fastdiff's code; structure (counts, blocks, EOS, filters) on larger canvases.
"""
import itertools
import math

import pytest
import torch

from conftest import MASK_ID, OracleModel, requires_kernels
from fastdiff import Sampler

VOCAB = 6  # ids 0..5, MASK_ID (3) never drawn


class PairModel:
    """Logits of position ``l``: ``base[l] + sum of coupling[x_m]`` over the other canvas positions
    ``m`` (``coupling[MASK_ID]`` is zero): a model whose predictions depend on what is visible."""

    def __init__(self, seed, length):
        g = torch.Generator().manual_seed(seed)
        self.base = torch.randn(length, VOCAB, generator=g) * 1.5
        self.coupling = torch.randn(VOCAB, VOCAB, generator=g) * 1.5
        self.coupling[MASK_ID] = 0.0

    def __call__(self, input_ids, attention_mask=None):
        B, L = input_ids.shape
        context = self.coupling[input_ids]  # [B, L, V]
        others = context.sum(dim=1, keepdim=True) - context
        logits = self.base[:L] + others
        logits[..., MASK_ID] = -math.inf
        return logits

    def probs(self, canvas):
        """The model's per-position probabilities for one canvas (a tuple of ids), float64."""
        return torch.softmax(self(torch.tensor([canvas])).double()[0], dim=-1)


def _exact_final_law(model, prompt, keep_law):
    """P(final generated pair) for a 2-step, 2-position redraw: step 0 draws both positions from the
    all-masked canvas, ``keep_law(drawn, probs)`` gives each intermediate pair (a token or MASK_ID per
    position) its probability; step 1 draws both again from the intermediate canvas and keeps both."""
    start = tuple(prompt) + (MASK_ID, MASK_ID)
    p0 = model.probs(start)[len(prompt):]
    law = {}
    for a, b in itertools.product(range(VOCAB), repeat=2):
        p_drawn = float(p0[0, a] * p0[1, b])
        if p_drawn == 0.0:
            continue
        for middle, p_middle in keep_law((a, b), p0).items():
            p1 = model.probs(tuple(prompt) + middle)[len(prompt):]
            for c, d in itertools.product(range(VOCAB), repeat=2):
                law[c, d] = law.get((c, d), 0.0) + p_drawn * p_middle * float(p1[0, c] * p1[1, d])
    return law


def _blog_keep(drawn, probs):
    """The blog: each position masked again independently with probability t = 1/2."""
    a, b = drawn
    return {(a, b): 0.25, (MASK_ID, b): 0.25, (a, MASK_ID): 0.25, (MASK_ID, MASK_ID): 0.25}


def _mask_predict_keep(drawn, probs):
    """Mask-Predict with the linear schedule: keep the more confident of the two drawn tokens."""
    a, b = drawn
    return {(a, MASK_ID) if float(probs[0, a]) >= float(probs[1, b]) else (MASK_ID, b): 1.0}


def _chi_square_p(counts, law, n):
    """Upper-tail p-value of Pearson's statistic (Wilson-Hilferty normal approximation)."""
    cells = [k for k, p in law.items() if p * n >= 5]
    rest = 1.0 - sum(law[k] for k in cells)
    observed = [counts.get(k, 0) for k in cells] + [n - sum(counts.get(k, 0) for k in cells)]
    expected = [law[k] * n for k in cells] + [rest * n]
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected) if e > 0)
    dof = len(cells)
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize("rule,transfer_counts,keep_law", [
    ("resample", "binomial", _blog_keep),
    ("mask_predict", "schedule", _mask_predict_keep),
])
def test_final_law_matches_the_exact_distribution(rule, transfer_counts, keep_law, fresh_seed):
    prompt = (0, 1)
    model = PairModel(fresh_seed, 4)
    rows = 4000
    out = Sampler(model, MASK_ID, unmask=rule, transfer_counts=transfer_counts, steps=2, temperature=1.0,
                  ).generate(torch.tensor([prompt] * rows), gen_length=2, seed=fresh_seed)
    law = _exact_final_law(model, prompt, keep_law)
    assert abs(sum(law.values()) - 1.0) < 1e-9
    counts = {}
    for pair in out.sequences[:, 2:].tolist():
        counts[tuple(pair)] = counts.get(tuple(pair), 0) + 1
    assert all(law.get(pair, 0.0) > 0 for pair in counts), "a pair of probability zero was drawn"
    assert _chi_square_p(counts, law, rows) > 1e-4
    assert out.nfe == 2


@requires_kernels
@pytest.mark.parametrize("rule", ["resample", "mask_predict"])
def test_triton_backend_gives_the_torch_tokens(rule, fresh_seed):
    """The kernels draw the same tokens and positions as the reference ops, step by step."""
    model = PairModel(fresh_seed, 12)
    prompt = torch.tensor([[0, 1], [2, 4], [5, 0]])
    settings = dict(unmask=rule, transfer_counts="binomial", steps=4, temperature=0.9, top_k=4,
                    block_length=5, return_history=True)
    outs = [Sampler(model, MASK_ID, backend=backend, **settings).generate(prompt, gen_length=10, seed=fresh_seed)
            for backend in ("torch", "triton")]
    assert outs[0].nfe == outs[1].nfe == 4
    assert all(torch.equal(a, b) for a, b in zip(outs[0].history, outs[1].history))


def test_resample_masked_counts_follow_the_blog_binomial(fresh_seed):
    """Context-free model, 30 positions, 10 steps: after step j the masked count of a row is
    Binomial(30, (9 - j) / 10), fresh at every step (mean and variance); with the schedule's counts it is
    exactly 30 (9 - j) / 10."""
    table = torch.randn(20)
    table[MASK_ID] = -1e4
    rows, n = 400, 30
    prompt = torch.tensor([[0, 1]] * rows)
    out = Sampler(OracleModel(table), MASK_ID, unmask="resample", transfer_counts="binomial", steps=10,
                  temperature=1.0, return_history=True).generate(prompt, gen_length=n, seed=fresh_seed)
    assert out.nfe == 10 and len(out.history) == 10
    for j, canvas in enumerate(out.history):
        masked = (canvas[:, 2:] == MASK_ID).sum(dim=1).double()
        t = (9 - j) / 10
        assert abs(float(masked.mean()) - n * t) < 4.5 * math.sqrt(n * t * (1 - t) / rows) + 1e-9
        if 0 < t < 1:
            assert abs(float(masked.var()) / (n * t * (1 - t)) - 1) < 0.35
    exact = Sampler(OracleModel(table), MASK_ID, unmask="resample", steps=10, temperature=1.0,
                    return_history=True).generate(prompt[:3], gen_length=n, seed=fresh_seed)
    assert [(h[:, 2:] == MASK_ID).sum(dim=1).tolist() for h in exact.history] == [
        [n * (9 - j) // 10] * 3 for j in range(10)]


def test_resample_redraws_visible_tokens(fresh_seed):
    """Visible generated tokens change between steps (the blog's process, not reveal-once), and every
    step's visible tokens lie in the top-k set of the logits."""
    torch.manual_seed(fresh_seed)
    table = torch.randn(40, 50)
    table[:, MASK_ID] = -1e4
    out = Sampler(OracleModel(table), MASK_ID, unmask="resample", steps=8, temperature=1.0, top_k=10,
                  return_history=True).generate(torch.tensor([[0, 1]] * 4), gen_length=38, seed=fresh_seed)
    top = torch.topk(table[2:], 10).indices
    changed = both_visible = 0
    for before, after in zip(out.history, out.history[1:]):
        visible = (before[:, 2:] != MASK_ID) & (after[:, 2:] != MASK_ID)
        changed += int((visible & (before[:, 2:] != after[:, 2:])).sum())
        both_visible += int(visible.sum())
        shown = after[:, 2:]
        ok = (shown[..., None] == top).any(dim=-1) | (shown == MASK_ID)
        assert bool(ok.all())
    assert changed > 0.5 * both_visible  # ten kept tokens: a redraw keeps the token about 1 time in 10


def test_mask_predict_keeps_the_most_confident(fresh_seed):
    """At each step the kept positions are the most confident drawn tokens; greedy on a context-free
    model keeps the argmax everywhere, so the canvas is the argmax once the block is done."""
    torch.manual_seed(fresh_seed)
    table = torch.randn(14, 30) * 3
    table[:, MASK_ID] = -1e4
    out = Sampler(OracleModel(table), MASK_ID, unmask="mask_predict", steps=4,
                  return_history=True).generate(torch.tensor([[0, 1]]), gen_length=12)
    confidence = torch.softmax(table[2:], dim=-1).max(dim=-1).values
    order = torch.argsort(confidence, descending=True, stable=True)
    for j, canvas in enumerate(out.history):
        kept = (canvas[0, 2:] != MASK_ID).nonzero().flatten()
        assert sorted(kept.tolist()) == sorted(order[:12 - 12 * (3 - j) // 4].tolist())
    assert torch.equal(out.sequences[0, 2:], table[2:].argmax(dim=-1))


def test_blocks_run_every_step_and_eos_waits_for_the_block_end(fresh_seed):
    """With blocks, a block's steps all run even when the redraw leaves nothing masked, later blocks are
    untouched until theirs, and a row stops at EOS only once the block holding it is done."""
    table = torch.full((14, 12), -5.0)
    table[:, 7] = 5.0  # EOS is almost sure everywhere
    table[:, MASK_ID] = -1e4
    out = Sampler(OracleModel(table), MASK_ID, unmask="resample", transfer_counts="binomial", steps=6,
                  block_length=4, temperature=1.0, eos_token_id=7, return_history=True).generate(
        torch.tensor([[0, 1]] * 3), gen_length=12, seed=fresh_seed)
    assert out.nfe == 2  # the first block's two steps: then every row has stopped at EOS
    assert bool((out.history[0][:, 6:] == MASK_ID).all())
    assert bool(out.stopped_at_eos.all()) and bool((out.sequences[:, 2:] == 7).all())


def test_redraw_rules_reject_remasking():
    with pytest.raises(ValueError, match="remask"):
        Sampler(OracleModel(torch.zeros(8)), MASK_ID, unmask="resample", remask="low_confidence")
