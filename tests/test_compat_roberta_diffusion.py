"""fastdiff.compat.roberta_diffusion against independent implementations of RoBERTaDiffusion's samplers.

``blog_reference`` (the blog post's resample and re-mask loop) and ``confident_reference`` (the later
confidence-threshold loop) are written from the descriptions of the repository's ``inference.py``, not
from fastdiff. The threshold sampler must give exactly the reference's tokens; the blog sampler (random
draws) is checked structurally and against the laws of the blog's loop; ``generate_ancestral`` (fastdiff's
reveal-once variant) against the laws it shares with the blog.

This module does not import ``conftest``: ``benchmarks/test_compat_bench.py`` imports it.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import RobertaConfig, RobertaForMaskedLM

from fastdiff.compat.roberta_diffusion import (BlogConfig, Config, generate, generate_ancestral, generate_confident,
                                               prepare_prefix, prepare_prompt)
from test_compat_llada import TableModel

MASK_ID = 4
PAD_ID = 1


def tiny_diffusion_roberta(seed, vocab_size=300, max_positions=300):
    """A random RoBERTa whose logits are peaked enough to spread confidences; like a trained
    diffusion RoBERTa it never predicts the mask token (probability exactly 0 in fp32)."""
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=max_positions, pad_token_id=PAD_ID,
                           initializer_range=0.3)
    model = RobertaForMaskedLM(config).eval()
    model.lm_head.bias.data[MASK_ID] = -1e4
    return model


def _keep_top_k_top_p(logits, top_k, top_p):
    """The blog's filter: top-k, then the nucleus of the renormalised top-k (up to and including the
    token whose cumulative probability crosses top_p); removed logits become -inf."""
    kth = torch.topk(logits, top_k).values[..., -1:]
    logits = logits.masked_fill(logits < kth, -math.inf)
    ordered, order = torch.sort(logits, descending=True)
    mass_through = torch.cumsum(F.softmax(ordered, dim=-1), dim=-1)
    drop = torch.zeros_like(mass_through, dtype=torch.bool)
    drop[..., 1:] = mass_through[..., :-1] > top_p
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -math.inf)


@torch.no_grad()
def blog_reference(model, prefix, *, mask_token_id=MASK_ID, canvas_length=256, steps=10, top_k=50, top_p=0.95):
    """The blog's loop: at mask ratio r = (steps - 1 - j) / steps, j = 0..steps-1, draw a token at every
    position, then each generated position is masked with probability r or takes its drawn token.
    Returns (final canvas, canvas after each step)."""
    B, P = prefix.shape
    x = torch.full((B, canvas_length), mask_token_id, dtype=torch.long, device=prefix.device)
    x[:, :P] = prefix
    generated = torch.arange(canvas_length, device=prefix.device) >= P
    history = []
    for j in range(steps):
        ratio = (steps - 1 - j) / steps
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        probs = F.softmax(_keep_top_k_top_p(logits, top_k, top_p), dim=-1)
        drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(B, canvas_length)
        masked_again = torch.rand(B, canvas_length, device=prefix.device) < ratio
        x = torch.where(generated, torch.where(masked_again, mask_token_id, drawn), x)
        history.append(x.clone())
    return x, history


@torch.no_grad()
def confident_reference(model, prefix, *, mask_token_id=MASK_ID, canvas_length=256, threshold=0.9,
                        temperature=0.8):
    """The later loop: until nothing is masked, commit the argmax at every masked position whose
    probability under softmax(logits / temperature) is >= threshold, or else the most confident one
    of the row. Returns (final canvas, number of steps)."""
    B, P = prefix.shape
    x = torch.full((B, canvas_length), mask_token_id, dtype=torch.long, device=prefix.device)
    x[:, :P] = prefix
    masked = torch.arange(canvas_length, device=prefix.device).expand(B, canvas_length) >= P
    steps = 0
    while bool(masked.any()):
        steps += 1
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        confidence, token = F.softmax(logits / temperature, dim=-1).max(dim=-1)
        commit = (confidence >= threshold) & masked
        for row in range(B):
            if bool(masked[row].any()) and not bool(commit[row].any()):
                commit[row, torch.argmax(confidence[row].masked_fill(~masked[row], -math.inf))] = True
        x = torch.where(commit, token, x)
        masked &= ~commit
    return x, steps


# ------------------------------------------------------------------------------------------------
# the prefix
# ------------------------------------------------------------------------------------------------
def test_prefix_is_truncated_or_left_padded():
    assert prepare_prefix([0, 11, 12, 2], PAD_ID, 6).tolist() == [[1, 1, 0, 11, 12, 2]]
    assert prepare_prefix(torch.arange(10, 30), PAD_ID, 4).tolist() == [[10, 11, 12, 13]]
    batch = prepare_prefix([[0, 5, 2], torch.tensor([0, 6, 7, 8, 9, 2])], PAD_ID, 5)
    assert batch.tolist() == [[1, 1, 0, 5, 2], [0, 6, 7, 8, 9]]
    assert prepare_prefix(torch.tensor([[0, 5], [0, 6]]), PAD_ID, 3).tolist() == [[1, 0, 5], [1, 0, 6]]
    with pytest.raises(TypeError, match="prompt_ids"):
        prepare_prefix([], PAD_ID)
    with pytest.raises(TypeError, match="prompt_ids"):
        prepare_prefix(torch.tensor([0.5, 1.0]), PAD_ID)
    with pytest.raises(ValueError, match="prefix_length"):
        prepare_prefix([0, 5], PAD_ID, 0)
    with pytest.raises(TypeError, match="pad_token_id"):
        prepare_prefix([0, 5], None)


# ------------------------------------------------------------------------------------------------
# the threshold sampler: exact
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold,temperature", [(0.9, 0.8), (0.5, 0.3)])
def test_confident_matches_reference_exactly(threshold, temperature, fresh_seed):
    model = tiny_diffusion_roberta(fresh_seed)
    prompts = [[0, 17, 23, 2], [0, 40, 41, 42, 43, 44, 45, 46, 47, 48, 2], [0, 99, 2]]  # padded, cut, padded
    prefix = prepare_prefix(prompts, PAD_ID, 8)
    expected, steps = confident_reference(model, prefix, canvas_length=48, threshold=threshold,
                                          temperature=temperature)
    out = generate_confident(model, prompts, mask_token_id=MASK_ID, pad_token_id=PAD_ID, canvas_length=48,
                             prefix_length=8, threshold=threshold, temperature=temperature)
    assert torch.equal(out.sequences, expected)
    assert out.nfe == steps


def test_confident_defaults_are_the_later_code():
    """Canvas 256, prefix 32, threshold 0.9 at temperature 0.8, on a context-free model (vocab 50)
    whose positions are sure (p ~ 1) except: A (p 0.85 untempered, 0.96 at 0.8: first step only at
    temperature 0.8), B (0.88 at 0.8: not at threshold 0.9), C and D (unsure). Steps: 1 + B, C, D = 4."""
    table = torch.zeros(256, 50)
    table[:, 7] = 12.0
    table[100, 7] = math.log(0.85 * 49 / 0.15)        # A
    table[150, 7] = 0.8 * math.log(0.88 * 49 / 0.12)  # B
    table[200, 7] = table[220, 7] = 1.0               # C, D
    table[:, MASK_ID] = -1e4
    prompt = [0, 17, 23, 2]
    out = generate_confident(TableModel(table), prompt, mask_token_id=MASK_ID, pad_token_id=PAD_ID)
    expected, steps = confident_reference(TableModel(table), prepare_prefix(prompt, PAD_ID, 32))
    assert out.sequences.shape == (1, 256) and torch.equal(out.sequences, expected)
    assert out.nfe == steps == 4


# ------------------------------------------------------------------------------------------------
# the blog sampler: structure and laws
# ------------------------------------------------------------------------------------------------
def test_blog_sampler_structure_and_token_filters(fresh_seed):
    """Defaults (canvas 256, prefix 16, 10 steps): the prefix stays, 10 forwards, nothing left masked,
    and every token lies in the top-50 / 0.95-nucleus of the logits of the step that committed it."""
    model = tiny_diffusion_roberta(fresh_seed)
    prompt = [0, 30, 31, 32, 2]
    out = generate_ancestral(model, prompt, mask_token_id=MASK_ID, pad_token_id=PAD_ID, seed=fresh_seed, return_history=True)
    prefix = prepare_prefix(prompt, PAD_ID, 16)
    assert out.sequences.shape == (1, 256) and out.nfe == 10 and len(out.history) == 10
    assert torch.equal(out.sequences[:, :16], prefix)
    assert not bool((out.sequences == MASK_ID).any())
    before = torch.cat([prefix, torch.full((1, 240), MASK_ID)], dim=1)
    with torch.no_grad():
        for after in out.history:
            kept = _keep_top_k_top_p(model(input_ids=before).logits, 50, 0.95) > -math.inf
            committed = (before == MASK_ID) & (after != MASK_ID)
            assert bool(kept[0, committed[0], after[0, committed[0]]].all())
            before = after


def test_blog_sampler_laws_match_the_blogs(fresh_seed):
    """A context-free model (every position has the same logits). After step j each generated position
    is masked with probability (9 - j) / 10 in both samplers, and the final tokens follow the
    filtered softmax in both."""
    torch.manual_seed(fresh_seed)
    vocab, positions, rows, runs = 80, 20, 40, 3
    row = torch.randn(vocab) * 2
    row[MASK_ID] = -1e4
    table = row.expand(26, vocab)
    prefix = torch.tensor([[0, 11, 12, 13, 14, 2]]).expand(rows, 6)
    filtered = F.softmax(_keep_top_k_top_p(row, 50, 0.95), dim=-1)
    masked_mine, masked_blog = torch.zeros(10), torch.zeros(10)
    tokens_mine, tokens_blog = torch.zeros(vocab), torch.zeros(vocab)
    for _ in range(runs):
        out = generate_ancestral(TableModel(table), prefix, mask_token_id=MASK_ID, pad_token_id=PAD_ID, canvas_length=26,
                       prefix_length=6, return_history=True)
        left = [float((h[:, 6:] == MASK_ID).sum()) for h in out.history]
        masked_mine += torch.tensor(left + [0.0] * (10 - len(left)))  # it stops once nothing is masked
        tokens_mine += torch.bincount(out.sequences[:, 6:].reshape(-1), minlength=vocab)
        final, history = blog_reference(TableModel(table), prefix, canvas_length=26)
        masked_blog += torch.tensor([float((h[:, 6:] == MASK_ID).sum()) for h in history])
        tokens_blog += torch.bincount(final[:, 6:].reshape(-1), minlength=vocab)
    samples = rows * runs
    ratio = torch.arange(9, -1, -1) / 10
    mean, sd = positions * ratio, torch.sqrt(positions * ratio * (1 - ratio) / samples)
    for masked in (masked_mine, masked_blog):
        assert float(((masked / samples - mean).abs() / sd.clamp(min=1e-9)).max()) < 4.5
    expected = filtered * samples * positions
    for tokens in (tokens_mine, tokens_blog):
        assert not bool(tokens[filtered == 0].any())
        present = filtered > 0
        z = (tokens[present] - expected[present]).abs() / torch.sqrt(expected[present] * (1 - filtered[present]))
        assert float(z.max()) < 4.5


def test_bad_arguments_raise_naming_them(fresh_seed):
    model = tiny_diffusion_roberta(fresh_seed)
    with pytest.raises(ValueError, match="canvas_length"):
        generate_ancestral(model, [0, 5, 2], mask_token_id=MASK_ID, pad_token_id=PAD_ID, canvas_length=16)
    with pytest.raises(ValueError, match="threshold"):
        generate_confident(model, [0, 5, 2], mask_token_id=MASK_ID, pad_token_id=PAD_ID, threshold=1.5)
    with pytest.raises(TypeError, match="mask_token_id"):
        generate_ancestral(model, [0, 5, 2], mask_token_id="<mask>", pad_token_id=PAD_ID)
    with pytest.raises(ValueError, match="top_p"):
        generate_ancestral(model, [0, 5, 2], mask_token_id=MASK_ID, pad_token_id=PAD_ID, top_p=0.0)


# ------------------------------------------------------------------------------------------------
# the drop-ins: prepare_prompt and generate with the originals' signatures and return values
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_tokenizer():
    """The bundled demo model's tokenizer (BERT's WordPiece: [PAD] 0, [CLS] 2, [SEP] 3, [MASK] 4)."""
    from transformers import AutoTokenizer
    from fastdiff.pretrained import DEMO_MODEL_DIR

    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def test_prepare_prompt_is_the_originals(demo_tokenizer):
    ids, attention = prepare_prompt("def area(w, h):", demo_tokenizer, 16, 40, "cpu")
    prompt = demo_tokenizer("def area(w, h):")["input_ids"]
    assert len(prompt) < 16 and ids.shape == attention.shape == (1, 40) and ids.dtype == torch.int64
    assert ids[0, :16].tolist() == [demo_tokenizer.pad_token_id] * (16 - len(prompt)) + prompt
    assert bool((ids[0, 16:] == demo_tokenizer.mask_token_id).all()) and bool((attention == 1).all())
    cut, _ = prepare_prompt("def area(w, h):", demo_tokenizer, 3, 8, "cpu")
    assert cut[0, :3].tolist() == prompt[:3]
    with pytest.raises(ValueError, match="prefix_len"):
        prepare_prompt("x", demo_tokenizer, 8, 8, "cpu")
    with pytest.raises(TypeError, match="prompt_text"):
        prepare_prompt(["x"], demo_tokenizer, 4, 8, "cpu")


def _drop_in_canvas(prompts, prefix_len, length):
    canvas = torch.full((len(prompts), length), MASK_ID)
    canvas[:, :prefix_len] = prepare_prefix(prompts, PAD_ID, prefix_len)
    return canvas


class _Tokenizer:
    """What generate() reads from a tokenizer: the mask id, and decode for the snapshots."""
    mask_token_id = MASK_ID

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=True):
        return "<s>" + " ".join(str(i) for i in ids.tolist()[1:])


def test_drop_in_generate_with_the_repository_config_is_token_exact(fresh_seed):
    """Config (prefix 32, threshold 0.9 at T 0.8): the original's tokens and step count, (ids,
    snapshots, elapsed) with one snapshot before the loop and one per step."""
    model = tiny_diffusion_roberta(fresh_seed)
    initial = _drop_in_canvas([[0, 17, 23, 2], [0, 99, 98, 2]], 32, 64)
    before = initial.clone()
    final, snapshots, elapsed = generate(model, _Tokenizer(), initial, torch.ones_like(initial), Config(), "cpu",
                                         collect_snapshots=True)
    expected, steps = confident_reference(model, initial[:, :32], canvas_length=64)
    assert torch.equal(initial, before)  # the caller's tensor is not written
    assert torch.equal(final, expected) and final.dtype == torch.int64
    assert len(snapshots) == steps + 1 and isinstance(elapsed, float) and elapsed > 0
    assert snapshots[0] == _Tokenizer().decode(initial[0])[3:]
    assert snapshots[-1] == _Tokenizer().decode(expected[0])[3:]
    assert generate(model, _Tokenizer(), initial, None, Config(), None)[1] == []


def test_drop_in_generate_with_the_blog_config_resamples_and_remasks(fresh_seed):
    """BlogConfig: 10 steps; after step j each generated position is masked with probability
    (9 - j) / 10, afresh at every step; visible tokens are drawn again (most change from one step to
    the next, as in the blog's loop), and the last step leaves nothing masked. The snapshots (ids
    here) show every step; the blog's own loop behaves the same on the same model."""
    model = tiny_diffusion_roberta(fresh_seed, max_positions=420)
    length = 400
    initial = _drop_in_canvas([[0, 30, 31, 32, 2]], 16, length)
    torch.manual_seed(fresh_seed)
    final, snapshots, _ = generate(model, _Tokenizer(), initial, torch.ones_like(initial), BlogConfig(), "cpu",
                                   collect_snapshots=True)
    assert len(snapshots) == 11 and not bool((final == MASK_ID).any())
    assert torch.equal(final[:, :16], initial[:, :16])
    ours = [torch.tensor([[int(initial[0, 0])] + [int(i) for i in text.split()]]) for text in snapshots[1:]]
    assert torch.equal(ours[-1], final)
    torch.manual_seed(fresh_seed)
    _, blogs = blog_reference(model, initial[:, :16], canvas_length=length)
    n = length - 16
    for name, run in (("fastdiff", ours), ("blog", blogs)):
        for j, canvas in enumerate(run):
            t = (9 - j) / 10
            masked = float((canvas[:, 16:] == MASK_ID).sum())
            assert abs(masked - n * t) <= 4.5 * math.sqrt(n * t * (1 - t)) + 1e-9, (name, j)
        changed = both = 0
        for a, b in zip(run, run[1:]):
            visible = (a[:, 16:] != MASK_ID) & (b[:, 16:] != MASK_ID)
            changed += int((visible & (a[:, 16:] != b[:, 16:])).sum())
            both += int(visible.sum())
        assert changed > 0.5 * both, name


def test_drop_in_blog_config_is_the_resample_rule(fresh_seed):
    """The drop-in runs Sampler(unmask="resample", transfer_counts="binomial") at the blog's settings,
    seeded from torch's generator: the same tokens as that Sampler after the same torch.manual_seed."""
    from fastdiff import Sampler

    model = tiny_diffusion_roberta(fresh_seed)
    initial = _drop_in_canvas([[0, 30, 31, 2], [0, 5, 2]], 16, 48)
    torch.manual_seed(fresh_seed)
    final, _, _ = generate(model, _Tokenizer(), initial, torch.ones_like(initial), BlogConfig(), "cpu")
    torch.manual_seed(fresh_seed)
    expected = Sampler(model, MASK_ID, unmask="resample", transfer_counts="binomial", steps=10, temperature=1.0,
                       top_k=50, top_p=0.95).generate(initial[:, :16], gen_length=32).sequences
    assert torch.equal(final, expected)


def test_drop_in_generate_rejects_what_the_original_cannot_mean(fresh_seed):
    model = tiny_diffusion_roberta(fresh_seed)
    initial = _drop_in_canvas([[0, 17, 2]], 32, 48)
    ones = torch.ones_like(initial)
    filled = initial.clone()
    filled[0, 40] = 7
    with pytest.raises(ValueError, match="initial_ids"):
        generate(model, _Tokenizer(), filled, ones, Config(), "cpu")
    with pytest.raises(ValueError, match="PREFIX_LEN"):
        generate(model, _Tokenizer(), initial[:, :32], ones[:, :32], Config(), "cpu")
    with pytest.raises(TypeError, match="CONFIDENCE_THRESHOLD"):
        generate(model, _Tokenizer(), initial, ones, type("C", (), {"PREFIX_LEN": 32})(), "cpu")
    with pytest.raises(ValueError, match="attention_mask"):
        generate(model, _Tokenizer(), initial, ones.masked_fill(torch.arange(48) == 40, 0), Config(), "cpu")
    with pytest.raises(TypeError, match="initial_ids"):
        generate(model, _Tokenizer(), initial.float(), ones, Config(), "cpu")
    with pytest.raises(TypeError, match="tokenizer"):
        generate(model, object(), initial, ones, Config(), "cpu")
