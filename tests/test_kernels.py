"""The Triton kernels against their PyTorch references.

Without CUDA these run through the Triton interpreter on the CPU (small shapes: it is slow); with CUDA
they compile for the GPU, and the marked tests add real sizes and CUDA-graph replays. Both backends
draw from the same counter-based stream, so sampled tokens are compared exactly, not only in law.
"""
import math

import numpy as np
import pytest
import torch

from conftest import KERNEL_DEVICE, requires_cuda, requires_kernels
from fastdiff import ops
from fastdiff.kernels import reference

pytestmark = requires_kernels
DEVICE = KERNEL_DEVICE


def _sample_pair(logits, mask, state, block_v=None, **kwargs):
    from fastdiff.kernels.sample_masked import sample_masked_triton

    B, L, _ = logits.shape
    poisoned = (torch.full((B, L), 12345, dtype=torch.int64, device=logits.device),
                torch.full((B, L), 777.0, device=logits.device))
    got = sample_masked_triton(logits, mask, state, block_v=block_v, out=poisoned, **kwargs)
    expected = reference.sample_masked_reference(logits, mask, state, **kwargs)
    return got, expected


def _assert_same_draw(got, expected, rtol=1e-4, atol=1e-6):
    tokens, scores = got
    ref_tokens, ref_scores = expected
    assert not (tokens == 12345).any() and not (scores == 777.0).any(), "an output element was not written"
    assert torch.equal(tokens, ref_tokens)
    assert torch.equal(torch.isnan(scores), torch.isnan(ref_scores))
    assert torch.equal(torch.isneginf(scores), torch.isneginf(ref_scores))
    finite = torch.isfinite(ref_scores)
    torch.testing.assert_close(scores[finite], ref_scores[finite], rtol=rtol, atol=atol)


def _rng(seed, B, counter=0, L=None):
    """The ``[B, 3]`` random state; with ``L``, random origins in ``[0, L)`` (each row's left padding)."""
    origin = None if L is None else torch.randint(0, L, (B,), generator=torch.Generator().manual_seed(seed))
    return ops.make_rng_state(seed, B, DEVICE, counter=counter, origin=origin)


def _logits(B, L, V, dtype, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(-3, 4, (B, L, V), generator=g).float() if ties else torch.randn(B, L, V, generator=g) * 3)
    return x.to(dtype).to(DEVICE)


# ------------------------------------------------------------------------------------------------
# sample_masked
# ------------------------------------------------------------------------------------------------
SHAPES = [
    # (B, L, V, block_v): V not a multiple of the block, several chunks, V = 1, L = 1
    (2, 5, 1000, 256),
    (2, 3, 130, 64),
    (1, 1, 1, 64),
    (3, 4, 64, None),
]
DTYPES = [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 1e-4, 1e-6), (torch.float16, 1e-4, 1e-6)]
MODES = [
    dict(score="confidence"),
    dict(score="margin", temperature=0.8),
    dict(score="entropy", temperature=1.3),
    dict(score="confidence", temperature=0.5, score_temperature=1.0),
]


@pytest.mark.parametrize("B,L,V,block_v", SHAPES)
@pytest.mark.parametrize("dtype,rtol,atol", DTYPES)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_sample_masked_matches_reference(B, L, V, block_v, dtype, rtol, atol, mode, fresh_seed):
    logits = _logits(B, L, V, dtype, fresh_seed)
    mask = (torch.rand(B, L, generator=torch.Generator().manual_seed(fresh_seed)) < 0.6).to(DEVICE)
    state = _rng(fresh_seed, B, 5, L=L)
    _assert_same_draw(*_sample_pair(logits, mask, state, block_v, **mode), rtol=rtol, atol=atol)


@pytest.mark.parametrize("filters,temperature,block_v", [
    (dict(top_k=5), 0.0, 64),
    (dict(top_p=0.7), 0.9, 64),
    (dict(top_k=9, top_p=0.5), 0.9, 32),  # thresholds found across two chunks
])
def test_sample_masked_filters_match_reference(filters, temperature, block_v, fresh_seed):
    logits = _logits(1, 3, 50, torch.float32, fresh_seed)
    mask = torch.ones(1, 3, dtype=torch.bool, device=DEVICE)
    state = _rng(fresh_seed, 1)
    _assert_same_draw(*_sample_pair(logits, mask, state, block_v, temperature=temperature, score="margin",
                                    **filters))


FILTER_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _near_equal_row(values, V, dtype):
    """A [1, 1, V] row holding ``values`` (the rest -inf), in ``dtype``."""
    row = torch.full((1, 1, V), float("-inf"))
    row[0, 0, :len(values)] = torch.tensor(values)
    return row.to(dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", FILTER_DTYPES, ids=str)
@pytest.mark.parametrize("filters,kept", [
    (dict(top_p=0.5), 4),  # masses 1/8 each: the fifth token's larger ones hold exactly 0.5, not less
    (dict(top_p=0.5000001), 5),
    (dict(top_p=1.0), 8),
    (dict(top_k=3), 3),
    (dict(top_k=8), 8),
    (dict(top_k=10_000), 8),  # k above the vocabulary
    (dict(top_k=4, top_p=0.5), 2),  # the nucleus of the top four (each 1/4)
])
def test_filter_boundaries_are_exact(dtype, filters, kept, fresh_seed):
    # eight distinct logits whose probabilities are all equal in fp32 at this temperature: the kept
    # set is read off the entropy score, -log(kept), exactly
    V = 300
    step = 2.0 ** -5  # representable in every dtype near 8
    logits = _near_equal_row([8.0 - i * step for i in range(8)], V, dtype)
    mask = torch.ones(1, 1, dtype=torch.bool, device=DEVICE)
    state = _rng(fresh_seed, 1, 3)
    options = dict(temperature=1e9, score="entropy", **filters)
    got, expected = _sample_pair(logits, mask, state, 128, **options)
    _assert_same_draw(got, expected)
    assert got[1].item() == pytest.approx(-math.log(kept), abs=1e-6)
    assert 0 <= got[0].item() < kept


@pytest.mark.parametrize("dtype", FILTER_DTYPES, ids=str)
def test_top_k_keeps_every_tie_at_the_kth_logit_and_zeros_tie(dtype, fresh_seed):
    V = 200
    logits = _near_equal_row([3.0, 2.0, 2.0, 2.0, 1.0, 0.0, -0.0], V, dtype)
    mask = torch.ones(1, 1, dtype=torch.bool, device=DEVICE)
    state = _rng(fresh_seed, 1, 4)
    for k, kept in ((2, 4), (4, 4), (5, 5), (6, 7)):  # -0 and +0 are one logit: both kept or neither
        got, expected = _sample_pair(logits, mask, state, 64, temperature=1e9, score="entropy", top_k=k)
        _assert_same_draw(got, expected)
        assert got[1].item() == pytest.approx(-math.log(kept), abs=1e-6)


@pytest.mark.parametrize("dtype", FILTER_DTYPES, ids=str)
@pytest.mark.parametrize("profile", ["peaked", "random", "near-uniform"])
@pytest.mark.parametrize("filters", [dict(top_k=50), dict(top_p=0.95), dict(top_p=0.3), dict(top_k=50, top_p=0.95),
                                     dict(top_k=700, top_p=0.4), dict(top_k=1, top_p=0.9)],
                         ids=lambda f: "+".join(f"{k}={v}" for k, v in f.items()))
def test_filters_match_reference_on_every_profile(dtype, profile, filters, fresh_seed):
    # the entropy score is measured on the whole kept set, so any difference in it shows
    from fastdiff.kernels import cost_model

    logits = cost_model.profile_logits(profile, rows=3, vocab=700, seed=fresh_seed).to(dtype).to(DEVICE)
    mask = torch.ones(1, 3, dtype=torch.bool, device=DEVICE)
    state = _rng(fresh_seed, 1, 6)
    for score in ("entropy", "confidence"):
        got, expected = _sample_pair(logits, mask, state, 256, temperature=0.8, score=score, **filters)
        _assert_same_draw(got, expected)
    if profile == "peaked" and "top_p" in filters:  # one token holds nearly all the mass: it alone is kept
        assert (got[0] == 7).all() and torch.allclose(got[1], torch.ones(3))


def test_sample_masked_ties_and_suppression(fresh_seed):
    logits = _logits(2, 4, 96, torch.float32, fresh_seed, ties=True)  # integer logits: many ties
    logits[0, 0, :] = float("-inf")
    logits[0, 0, 40] = 1.0  # the only drawable id of that row
    mask = torch.ones(2, 4, dtype=torch.bool, device=DEVICE)
    suppress = torch.tensor([0, 5, 95], device=DEVICE)
    state = _rng(fresh_seed, 2, 1, L=4)
    for temperature in (0.0, 1.0):
        got, expected = _sample_pair(logits, mask, state, 32, temperature=temperature, suppress_ids=suppress)
        _assert_same_draw(got, expected)
        assert not torch.isin(got[0], suppress).any()
        assert got[0][0, 0] == 40
    # greedy ties go to the lowest id
    got, _ = _sample_pair(logits, mask, state, 32)
    best = logits.float().max(dim=-1, keepdim=True).values
    first = (logits.float() == best).int().argmax(dim=-1)
    assert torch.equal(got[0][:, 1:], first[:, 1:])


def test_sample_masked_all_and_none_masked(fresh_seed):
    logits = _logits(2, 6, 70, torch.bfloat16, fresh_seed)
    state = _rng(fresh_seed, 2, 2)
    none = torch.zeros(2, 6, dtype=torch.bool, device=DEVICE)
    got, expected = _sample_pair(logits, none, state, 32, temperature=1.0)
    _assert_same_draw(got, expected)
    assert (got[0] == -1).all() and torch.isneginf(got[1]).all()
    every = torch.ones(2, 6, dtype=torch.bool, device=DEVICE)
    got, expected = _sample_pair(logits, every, state, 32, temperature=1.0)
    _assert_same_draw(got, expected)
    assert (got[0] >= 0).all()


def test_sample_masked_bad_rows(fresh_seed):
    logits = _logits(1, 4, 40, torch.float32, fresh_seed)
    logits[0, 1, 7] = float("nan")
    logits[0, 2, 30] = float("inf")
    logits[0, 3, :] = float("-inf")
    mask = torch.ones(1, 4, dtype=torch.bool, device=DEVICE)
    got, expected = _sample_pair(logits, mask, _rng(1, 1), 16)
    _assert_same_draw(got, expected)
    assert got[0][0, 1:].tolist() == [-1, -1, -1] and torch.isnan(got[1][0, 1:]).all()


def test_sample_masked_reads_strided_rows(fresh_seed):
    # a padded vocabulary (row stride > V) and a logits-shift view (logits[:, :-1], mask[:, 1:])
    base = _logits(2, 6, 80, torch.float32, fresh_seed)
    logits = base[:, :, :70]
    mask = (torch.rand(2, 6, generator=torch.Generator().manual_seed(fresh_seed)) < 0.7).to(DEVICE)
    state = _rng(fresh_seed, 2, 9, L=6)
    _assert_same_draw(*_sample_pair(logits, mask, state, 32, temperature=0.7))
    _assert_same_draw(*_sample_pair(base[:, :-1], mask[:, 1:], state, 32, temperature=0.7))


def test_sampled_frequencies_follow_softmax(fresh_seed):
    row = torch.tensor([1.5, 0.2, -0.5, 0.9, 0.0, -1.2, 0.4, 1.1])
    logits = row.expand(1, 64, -1).contiguous().to(DEVICE)
    mask = torch.ones(1, 64, dtype=torch.bool, device=DEVICE)
    counts = np.zeros(8)
    state = _rng(fresh_seed, 1)
    for _ in range(3):
        tokens, _ = ops.sample_masked(logits, mask, temperature=0.8, suppress_ids=[2], seed=state, backend="triton")
        counts += np.bincount(tokens[0].cpu().numpy(), minlength=8)
        state[:, 1] += 1
    assert counts[2] == 0
    z = row.double().numpy() / 0.8
    z[2] = -np.inf
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    keep = probs > 0
    chi2 = ((counts[keep] - counts.sum() * probs[keep]) ** 2 / (counts.sum() * probs[keep])).sum()
    assert chi2 < 6 + 10 * math.sqrt(12) + 20  # 192 draws over 7 ids: p far below 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("filters,kept", [(dict(top_k=3), [0, 3, 7]), (dict(top_p=0.5), [0, 7]),
                                          (dict(top_k=4, top_p=0.8), [0, 3, 7])])
def test_filtered_frequencies_follow_the_renormalised_kept_set(dtype, filters, kept, fresh_seed):
    # filtered tokens are never drawn; the kept ones in proportion to their renormalised probabilities
    row = torch.tensor([1.5, 0.2, -0.5, 0.9, 0.0, -1.2, 0.4, 1.125])
    logits = row.to(dtype).expand(1, 64, -1).contiguous().to(DEVICE)
    mask = torch.ones(1, 64, dtype=torch.bool, device=DEVICE)
    counts = np.zeros(8)
    state = _rng(fresh_seed, 1)
    for _ in range(3):
        tokens, _ = ops.sample_masked(logits, mask, temperature=1.0, seed=state, backend="triton", **filters)
        counts += np.bincount(tokens[0].cpu().numpy(), minlength=8)
        state[:, 1] += 1
    assert set(np.flatnonzero(counts)) <= set(kept)
    z = row.to(dtype).double().numpy()
    probs = np.exp(z[kept] - z[kept].max())
    probs /= probs.sum()
    expected = counts.sum() * probs
    chi2 = ((counts[kept] - expected) ** 2 / expected).sum()
    assert chi2 < 40  # 192 draws over at most 3 ids: p far below 1e-6


def test_same_seed_same_draw_and_counter_advances(fresh_seed):
    logits = _logits(2, 8, 64, torch.float32, fresh_seed)
    mask = torch.ones(2, 8, dtype=torch.bool, device=DEVICE)
    state = _rng(fresh_seed, 2)
    a = ops.sample_masked(logits, mask, temperature=1.0, seed=state, backend="triton")[0]
    b = ops.sample_masked(logits, mask, temperature=1.0, seed=state.clone(), backend="triton")[0]
    assert torch.equal(a, b)
    state[:, 1] += 1
    c = ops.sample_masked(logits, mask, temperature=1.0, seed=state, backend="triton")[0]
    d = ops.sample_masked(logits, mask, temperature=1.0, seed=fresh_seed + 1, backend="triton")[0]
    assert not torch.equal(a, c) and not torch.equal(a, d)


# ------------------------------------------------------------------------------------------------
# select_topk
# ------------------------------------------------------------------------------------------------
def _selection_case(B, L, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (B, L), generator=g).float() / 5  # ties
    scores[0, : min(3, L)] = float("-inf")
    if L > 4:
        scores[-1, 4] = float("nan")
    eligible = torch.rand(B, L, generator=g) < 0.7
    k = torch.randint(0, L + 2, (B,), generator=g)
    return scores.to(DEVICE), eligible.to(DEVICE), k.to(DEVICE)


@pytest.mark.parametrize("B,L", [(4, 37), (1, 1), (3, 64), (2, 200)])
@pytest.mark.parametrize("mode", [dict(), dict(threshold=0.5), dict(position_temperature=0.5),
                                  dict(threshold=0.9, position_temperature=2.0)],
                         ids=["topk", "threshold", "gumbel", "threshold+gumbel"])
def test_select_topk_matches_reference(B, L, mode, fresh_seed):
    from fastdiff.kernels.select_topk import select_topk_triton

    scores, eligible, k = _selection_case(B, L, fresh_seed)
    state = _rng(fresh_seed, B, 4, L=L)
    threshold = mode.get("threshold")
    tau = mode.get("position_temperature", 0.0)
    out = torch.ones(B, L, dtype=torch.bool, device=DEVICE)  # poisoned: every element must be written
    got = select_topk_triton(scores, eligible, k, state, position_temperature=tau, threshold=threshold, out=out)
    expected = reference.select_topk_reference(scores, eligible, k, state, position_temperature=tau,
                                               threshold=threshold)
    assert torch.equal(got, expected)
    assert not (got & ~eligible).any()


def test_select_topk_all_none_eligible_and_longest_row(fresh_seed):
    scores = torch.rand(2, 8192, generator=torch.Generator().manual_seed(fresh_seed)).to(DEVICE)
    eligible = torch.ones(2, 8192, dtype=torch.bool, device=DEVICE)
    eligible[1] = False
    k = torch.tensor([100, 5], device=DEVICE)
    got = ops.select_topk(scores, eligible, k, backend="triton")
    assert torch.equal(got, ops.select_topk(scores, eligible, k, backend="torch"))
    assert int(got[0].sum()) == 100 and not got[1].any()
    with pytest.raises(ValueError, match="8192"):
        ops.select_topk(torch.zeros(1, 8193, device=DEVICE), torch.ones(1, 8193, dtype=torch.bool, device=DEVICE), 1,
                        backend="triton")


# ------------------------------------------------------------------------------------------------
# commit + remask
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("B,L", [(3, 29), (1, 1), (2, 128)])
@pytest.mark.parametrize("tau", [0.0, 0.7])
def test_commit_remask_matches_reference(B, L, tau, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    canvas = torch.randint(0, 6, (B, L), generator=g)
    confidence = (torch.randint(0, 5, (B, L), generator=g) / 4.0).masked_fill(canvas == 0, float("nan"))
    confidence[0, 0] = float("-inf")
    tokens = torch.randint(1, 9, (B, L), generator=g)
    scores = torch.randint(0, 4, (B, L), generator=g) / 4.0
    selected = (torch.rand(B, L, generator=g) < 0.5) & (canvas == 0)
    editable = torch.rand(B, L, generator=g) < 0.8
    n = torch.randint(0, 6, (B,), generator=g)
    args = [t.to(DEVICE) for t in (canvas, confidence, tokens, scores, selected, editable, n)]
    got_canvas, got_conf = args[0].clone(), args[1].clone()
    ref_canvas, ref_conf = args[0].clone(), args[1].clone()
    state = _rng(fresh_seed, B, 3, L=L)
    ops.commit_remask(got_canvas, got_conf, *args[2:], 0, remask_temperature=tau, seed=state, backend="triton")
    reference.commit_remask_reference(ref_canvas, ref_conf, *args[2:], 0, state, remask_temperature=tau)
    assert torch.equal(got_canvas, ref_canvas)
    assert torch.equal(torch.isnan(got_conf), torch.isnan(ref_conf))
    assert torch.equal(got_conf.nan_to_num(), ref_conf.nan_to_num())
    protected = ~args[5]
    assert torch.equal(got_canvas[protected], args[0][protected])


# ------------------------------------------------------------------------------------------------
# the sampler on the triton backend
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    dict(),
    dict(temperature=1.0, unmask="margin", score_temperature=1.0),
    dict(remask="low_confidence", remask_ratio=0.5, temperature=0.7, block_length=4),
    dict(threshold=0.02, logits_shift=True),
    dict(unmask="random", cfg_scale=1.0, eos_token_id=7, temperature=1.0),
])
def test_sampler_triton_backend_equals_torch_backend(overrides):
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    model = RobertaForMaskedLM(RobertaConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=64)).eval().to(DEVICE)
    prompt = torch.randint(5, 200, (2, 4), device=DEVICE)
    triton_out = Sampler(model, 4, steps=4, backend="triton", seed=11, **overrides).generate(prompt, gen_length=8)
    torch_out = Sampler(model, 4, steps=4, backend="torch", seed=11, **overrides).generate(prompt, gen_length=8)
    assert torch.equal(triton_out.sequences, torch_out.sequences)
    assert triton_out.nfe == torch_out.nfe


from fastdiff import Sampler  # noqa: E402  (after the kernels' environment is set by conftest)


# ------------------------------------------------------------------------------------------------
# CUDA: real sizes and graph-safe RNG
# ------------------------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.parametrize("B,L,V", [(64, 256, 50265), (1, 1024, 126464)])
def test_real_sizes_match_reference(B, L, V, fresh_seed):
    logits = torch.randn(B, L, V, device="cuda", dtype=torch.bfloat16) * 4
    mask = torch.rand(B, L, device="cuda") < 0.5
    state = ops.make_rng_state(fresh_seed, B, "cuda")
    for kwargs in (dict(), dict(temperature=0.8)):
        got = ops.sample_masked(logits, mask, seed=state, backend="triton", **kwargs)
        expected = ops.sample_masked(logits, mask, seed=state, backend="torch", **kwargs)
        # tokens may only differ at near-ties of logit + noise, rounded differently
        assert (got[0] == expected[0]).float().mean() > 0.9999
        torch.testing.assert_close(got[1][mask], expected[1][mask], rtol=1e-3, atol=1e-5)


@requires_cuda
def test_graph_replays_draw_fresh_noise_and_seed_reproduces(fresh_seed):
    logits = torch.randn(4, 64, 1000, device="cuda")
    mask = torch.ones(4, 64, dtype=torch.bool, device="cuda")
    state = ops.make_rng_state(fresh_seed, 4, "cuda")
    ops.sample_masked(logits, mask, temperature=1.0, seed=state, backend="triton")  # compile outside the capture
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        tokens, _ = ops.sample_masked(logits, mask, temperature=1.0, seed=state, backend="triton")
        state[:, 1].add_(1)
    state.copy_(ops.make_rng_state(fresh_seed, 4, "cuda"))
    graph.replay()
    first = tokens.clone()
    graph.replay()
    second = tokens.clone()
    assert not torch.equal(first, second)
    eager = ops.sample_masked(logits, mask, temperature=1.0, seed=fresh_seed, backend="triton")[0]
    assert torch.equal(first, eager)


def test_logits_shift_and_gathered_rows_draw_like_the_canvas(fresh_seed):
    from fastdiff.kernels.sample_masked import sample_masked_triton, sample_rows_triton

    B, L, V = 2, 6, 90
    logits = _logits(B, L, V, torch.float32, fresh_seed)
    mask = (torch.rand(B, L, generator=torch.Generator().manual_seed(fresh_seed)) < 0.7).to(DEVICE)
    mask[0, 0] = True  # position 0 reads its own row
    state = _rng(fresh_seed, B, 6, L=L)
    options = dict(temperature=0.9, score="margin", block_v=32)
    shifted = sample_masked_triton(logits, mask, state, logits_shift=True, **options)
    expected = reference.sample_masked_reference(logits, mask, state, logits_shift=True, temperature=0.9,
                                                 score="margin")
    _assert_same_draw(shifted, expected)
    # gathering the masked rows (padded with -1) gives the same draw as the canvas path
    flat = mask.flatten().nonzero()[:, 0]
    row_ids = torch.cat([flat, torch.full((3,), -1, device=DEVICE)])
    source = flat // L * L + (flat % L - 1).clamp(min=0)
    rows = torch.cat([logits.reshape(B * L, V)[source], torch.zeros(3, V, device=DEVICE)])
    tokens, scores = sample_rows_triton(rows, row_ids, state, L, **options)
    assert torch.equal(tokens[: len(flat)], shifted[0].flatten()[flat])
    torch.testing.assert_close(scores[: len(flat)], shifted[1].flatten()[flat])
    assert (tokens[len(flat):] == -1).all() and torch.isneginf(scores[len(flat):]).all()
    ref_tokens, _ = reference.sample_rows_reference(rows, row_ids, state, L, temperature=0.9, score="margin")
    assert torch.equal(tokens, ref_tokens)
