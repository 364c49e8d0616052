"""The PyTorch reference ops, checked against formulas written out independently here.

These references are the oracle of the Triton kernels, so they are tested on their own first.
"""
import math
import re

import numpy as np
import pytest
import torch

from fastdiff import ops
from fastdiff.kernels import reference


def _chi2_statistic(counts: np.ndarray, probs: np.ndarray) -> float:
    n = counts.sum()
    expected = n * probs
    keep = expected > 0
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


def _chi2_bound(dof: int) -> float:
    """A loose upper bound on chi-square with ``dof`` degrees of freedom (p far below 1e-6)."""
    return dof + 10.0 * math.sqrt(2.0 * dof) + 20.0


# ------------------------------------------------------------------------------------------------
# random stream
# ------------------------------------------------------------------------------------------------
def test_uniform_noise_is_uniform_and_addressed_by_every_coordinate(fresh_seed):
    state = ops.make_rng_state(fresh_seed, 64, "cpu", counter=7)
    rows = torch.arange(64)[:, None]
    index = torch.full((64, 1), 5)
    cols = torch.arange(1024)[None, :]
    u = reference.uniform_noise(state, 1, rows, index, cols)
    assert u.dtype == torch.float32 and u.shape == (64, 1024)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    # the extremes of the 32-bit hash stay strictly inside (0, 1) and give finite Gumbel noise
    extremes = ((torch.tensor([0, 2**32 - 1]) >> 9).float() + 0.5) / 2**23
    assert 0.0 < float(extremes[0]) and float(extremes[1]) < 1.0
    assert torch.isfinite(-torch.log(-torch.log(extremes))).all()
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert abs(float(u.var()) - 1 / 12) < 0.005
    hist = torch.histc(u, bins=16, min=0, max=1).numpy()
    assert _chi2_statistic(hist, np.full(16, 1 / 16)) < _chi2_bound(15)
    # deterministic, and each of seed, counter, stream and index changes the draw
    assert torch.equal(u, reference.uniform_noise(state.clone(), 1, rows, index, cols))
    others = [
        reference.uniform_noise(ops.make_rng_state(fresh_seed + 64, 64, "cpu", counter=7), 1, rows, index, cols),
        reference.uniform_noise(ops.make_rng_state(fresh_seed, 64, "cpu", counter=8), 1, rows, index, cols),
        reference.uniform_noise(state, 2, rows, index, cols),
        reference.uniform_noise(state, 1, rows, index + 1, cols),
    ]
    for other in others:
        assert float((other == u).float().mean()) < 0.01
        assert abs(float(np.corrcoef(other.flatten().numpy(), u.flatten().numpy())[0, 1])) < 0.02
    # a row's noise is its seed's, wherever the row sits in the batch
    shuffled = ops.make_rng_state(state[:, 0].flip(0), 64, "cpu", counter=7)
    assert torch.equal(reference.uniform_noise(shuffled, 1, rows, index, cols), u.flip(0))


def test_origin_shifts_the_positions_of_a_row(fresh_seed):
    plain = ops.make_rng_state([fresh_seed], 1, "cpu")
    padded = ops.make_rng_state([fresh_seed], 1, "cpu", origin=[3])
    rows = torch.zeros(1, 1, dtype=torch.int64)
    positions = torch.arange(10)[None, :]
    assert torch.equal(reference.row_positions(padded, rows, positions), positions - 3)
    u = reference.position_uniform(plain, 4, 1, 7)
    assert torch.equal(reference.position_uniform(padded, 4, 1, 10)[:, 3:], u)


def test_rng_state_forms_and_their_errors():
    assert ops.make_rng_state(5, 3, "cpu").tolist() == [[5, 0, 0], [6, 0, 0], [7, 0, 0]]
    assert ops.make_rng_state(2**63 - 1, 2, "cpu")[:, 0].tolist() == [2**63 - 1, -2**63]  # wraps in int64
    assert ops.make_rng_state((4, 9), 2, "cpu", counter=3).tolist() == [[4, 3, 0], [9, 3, 0]]
    assert ops.make_rng_state(torch.tensor(5), 2, "cpu")[:, 0].tolist() == [5, 6]
    assert ops.make_rng_state(torch.tensor([8, 1]), 2, "cpu")[:, 0].tolist() == [8, 1]
    state = ops.make_rng_state(0, 2, "cpu")
    assert ops.make_rng_state(state, 2, "cpu") is state  # the graph-safe form is used in place
    for seed, error, words in [((1, 2, 3), ValueError, "one seed per row"), (torch.zeros(3, 3, dtype=torch.int64),
                               ValueError, "[2, 3]"), (torch.zeros(2), TypeError, "int64"), (1.5, TypeError, "seed"),
                               ([1, 2**64], ValueError, "int64"), (torch.zeros(4, dtype=torch.int64), ValueError, "2")]:
        with pytest.raises(error, match=re.escape(words)):
            ops.make_rng_state(seed, 2, "cpu")
    with pytest.raises(ValueError, match="origin"):
        ops.make_rng_state(0, 2, "cpu", origin=[1])


def test_hash32_matches_uint32_arithmetic():
    x = np.random.default_rng(0).integers(0, 2**32, size=1000, dtype=np.uint64).astype(np.uint32)
    expected = x.copy()
    with np.errstate(over="ignore"):
        expected ^= expected >> np.uint32(16)
        expected *= np.uint32(0x7FEB352D)
        expected ^= expected >> np.uint32(15)
        expected *= np.uint32(0x846CA68B)
        expected ^= expected >> np.uint32(16)
    got = reference.hash32(torch.from_numpy(x.astype(np.int64)))
    assert np.array_equal(got.numpy().astype(np.uint32), expected)


# ------------------------------------------------------------------------------------------------
# sample_masked
# ------------------------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("score", ["confidence", "margin", "entropy"])
def test_greedy_tokens_and_scores_follow_the_formulas(score, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    logits = torch.randn(3, 9, 37, generator=g) * 3
    mask = torch.rand(3, 9, generator=g) < 0.6
    tokens, scores = ops.sample_masked(logits, mask, score=score, backend="torch")
    p = _softmax(logits.double().numpy())
    for b in range(3):
        for l in range(9):
            if not mask[b, l]:
                assert tokens[b, l] == -1 and scores[b, l] == float("-inf")
                continue
            assert tokens[b, l] == int(np.argmax(p[b, l]))
            top = np.sort(p[b, l])[::-1]
            expected = {"confidence": top[0], "margin": top[0] - top[1],
                        "entropy": float((p[b, l] * np.log(p[b, l])).sum())}[score]
            assert scores[b, l].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_greedy_ties_go_to_the_lowest_id_and_suppressed_ids_are_skipped():
    logits = torch.zeros(1, 2, 6)
    logits[0, 0, [2, 4]] = 5.0
    logits[0, 1, [1, 2, 5]] = 5.0
    mask = torch.ones(1, 2, dtype=torch.bool)
    tokens, _ = ops.sample_masked(logits, mask, backend="torch")
    assert tokens.tolist() == [[2, 1]]
    tokens, _ = ops.sample_masked(logits, mask, suppress_ids=[1, 2], backend="torch")
    assert tokens.tolist() == [[4, 5]]


def _draws(logits_row, n_rows, seed, **kwargs):
    logits = logits_row.expand(1, n_rows, -1).contiguous()
    tokens, scores = ops.sample_masked(logits, torch.ones(1, n_rows, dtype=torch.bool), seed=seed,
                                       backend="torch", **kwargs)
    return tokens[0].numpy(), scores[0].numpy()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampled_frequencies_match_softmax(temperature, fresh_seed):
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])
    tokens, scores = _draws(row, 20000, fresh_seed, temperature=temperature)
    probs = _softmax(row.double().numpy() / temperature)
    counts = np.bincount(tokens, minlength=8)
    assert _chi2_statistic(counts, probs) < _chi2_bound(7)
    # the confidence is the probability of the drawn token under softmax(logits / T)
    assert np.allclose(scores, probs[tokens], rtol=1e-4)


def test_top_k_and_top_p_filter_then_renormalise(fresh_seed):
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])
    probs = _softmax(row.double().numpy())
    # top-k 3 keeps ids 0, 6, 1
    tokens, _ = _draws(row, 12000, fresh_seed, temperature=1.0, top_k=3)
    assert set(np.unique(tokens)) <= {0, 6, 1}
    kept = np.zeros(8)
    kept[[0, 6, 1]] = probs[[0, 6, 1]]
    assert _chi2_statistic(np.bincount(tokens, minlength=8), kept / kept.sum()) < _chi2_bound(2)
    # top-p 0.6: sorted probs 0.32, 0.19, 0.12, ... the nucleus is the smallest prefix reaching 0.6
    order = np.argsort(-probs)
    mass_before = np.cumsum(probs[order]) - probs[order]
    nucleus = order[mass_before < 0.6]
    tokens, scores = _draws(row, 12000, fresh_seed + 1, temperature=1.0, top_p=0.6)
    assert set(np.unique(tokens)) == set(nucleus.tolist())
    kept = np.zeros(8)
    kept[nucleus] = probs[nucleus]
    kept /= kept.sum()
    assert _chi2_statistic(np.bincount(tokens, minlength=8), kept) < _chi2_bound(len(nucleus) - 1)
    assert np.allclose(scores, kept[tokens], rtol=1e-4)


def test_suppressed_tokens_are_never_drawn(fresh_seed):
    row = torch.tensor([5.0, 4.0, 0.0, 0.0])
    tokens, _ = _draws(row, 5000, fresh_seed, temperature=3.0, suppress_ids=[0, 1])
    assert set(np.unique(tokens)) == {2, 3}


def test_bad_rows_get_nan_scores_and_no_token():
    logits = torch.randn(1, 4, 10)
    logits[0, 1, 3] = float("nan")
    logits[0, 2, 5] = float("inf")
    logits[0, 3, :] = float("-inf")
    tokens, scores = ops.sample_masked(logits, torch.ones(1, 4, dtype=torch.bool), backend="torch")
    assert tokens[0, 0] >= 0 and not math.isnan(scores[0, 0])
    assert tokens[0, 1:].tolist() == [-1, -1, -1]
    assert torch.isnan(scores[0, 1:]).all()


def test_same_seed_same_draw_different_seed_different_draw():
    logits = torch.randn(2, 16, 50)
    mask = torch.ones(2, 16, dtype=torch.bool)
    a = ops.sample_masked(logits, mask, temperature=1.0, seed=11, backend="torch")[0]
    b = ops.sample_masked(logits, mask, temperature=1.0, seed=11, backend="torch")[0]
    c = ops.sample_masked(logits, mask, temperature=1.0, seed=12, backend="torch")[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    state = ops.make_rng_state(11, 2, "cpu")
    assert torch.equal(a, ops.sample_masked(logits, mask, temperature=1.0, seed=state, backend="torch")[0])
    assert torch.equal(a, ops.sample_masked(logits, mask, temperature=1.0, seed=[11, 12], backend="torch")[0])
    # row 1 of seed 11 is row 0 of seed 12
    assert torch.equal(a[1], ops.sample_masked(logits[1:], mask[1:], temperature=1.0, seed=12, backend="torch")[0][0])
    state[:, 1] += 1
    assert not torch.equal(a, ops.sample_masked(logits, mask, temperature=1.0, seed=state, backend="torch")[0])


# ------------------------------------------------------------------------------------------------
# select_topk
# ------------------------------------------------------------------------------------------------
def _brute_force_topk(scores, eligible, k, threshold=None):
    out = torch.zeros_like(eligible)
    for b in range(scores.shape[0]):
        idx = [i for i in range(scores.shape[1]) if eligible[b, i]]
        key = lambda i: (-(scores[b, i].item() if not math.isnan(scores[b, i].item()) else -math.inf), i)  # noqa: E731
        if threshold is not None:
            above = [i for i in idx if scores[b, i].item() >= threshold]
            pool, count = (above, min(len(above), int(k[b]))) if above else (idx, min(1, int(k[b]), len(idx)))
        else:
            pool, count = idx, min(int(k[b]), len(idx))
        for i in sorted(pool, key=key)[:count]:
            out[b, i] = True
    return out


def test_row_ranking_orders_by_tier_then_key_then_index(fresh_seed):
    """The ranking under selection and remasking (one sorted 64-bit key per element on the CPU)
    against Python's sort, for every count: ties, signed zeros, infinities and tiny magnitudes."""
    g = torch.Generator().manual_seed(fresh_seed)
    values = torch.tensor([-float("inf"), -3e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 0.5, 3e38, float("inf")])
    for shape in [(1, 1), (3, 17), (2, 64)]:
        keys = values[torch.randint(0, len(values), shape, generator=g)]
        tier = torch.rand(shape, generator=g) < 0.6
        for count in range(shape[1] + 1):
            n = torch.randint(0, count + 1, (shape[0],), generator=g)
            chosen = reference._first_ranked(keys, tier, n)
            assert torch.equal(chosen, reference._first_ranked_by_sorts(keys, tier, n))  # the other devices'
            for b in range(shape[0]):
                order = sorted(range(shape[1]), key=lambda i: (not tier[b, i], -keys[b, i].item(), i))
                assert chosen[b].nonzero()[:, 0].tolist() == sorted(order[:int(n[b])])


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_select_topk_matches_brute_force_with_ties(threshold, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    for _ in range(20):
        scores = torch.randint(0, 5, (4, 17), generator=g).float() / 4  # many ties
        scores[0, 3] = float("nan")
        scores[1, :4] = float("-inf")
        eligible = torch.rand(4, 17, generator=g) < 0.7
        eligible[2] = False
        k = torch.randint(0, 8, (4,), generator=g)
        got = ops.select_topk(scores, eligible, k, threshold=threshold, backend="torch")
        assert torch.equal(got, _brute_force_topk(scores, eligible, k, threshold))


def test_gumbel_position_sampling_follows_softmax_of_scores(fresh_seed):
    n = 3000  # independent rows of one call: each row has its own noise
    scores = torch.tensor([[1.0, 0.0, 2.0, 0.5, -1.0]]).expand(n, -1).contiguous()
    eligible = torch.ones(n, 5, dtype=torch.bool)
    eligible[:, 3] = False
    tau = 0.7
    state = ops.make_rng_state(fresh_seed, n, "cpu")
    chosen = ops.select_topk(scores, eligible, 1, position_temperature=tau, seed=state, backend="torch")
    firsts = np.bincount(chosen.nonzero()[:, 1].numpy(), minlength=5)
    state[:, 1] += 1
    pair = ops.select_topk(scores, eligible, 2, position_temperature=tau, seed=state, backend="torch")
    pairs = int(pair[:, [0, 2]].all(dim=-1).sum())
    probs = np.exp(scores[0].numpy() / tau) * eligible[0].numpy()
    probs /= probs.sum()
    assert firsts.sum() == n and firsts[3] == 0
    assert _chi2_statistic(firsts, probs) < _chi2_bound(3)
    # without replacement: P({0, 2}) = p0 p2 / (1 - p0) + p2 p0 / (1 - p2)
    p0, p2 = probs[0], probs[2]
    expected = p0 * p2 / (1 - p0) + p2 * p0 / (1 - p2)
    assert abs(pairs / n - expected) < 5 * math.sqrt(expected * (1 - expected) / n)


# ------------------------------------------------------------------------------------------------
# commit + remask
# ------------------------------------------------------------------------------------------------
def test_commit_then_remask_lowest_confidence_never_touching_protected():
    mask_id = 0
    canvas = torch.tensor([[9, 0, 0, 0, 5, 6], [9, 9, 0, 0, 0, 0]])
    confidence = torch.tensor([[float("nan"), float("nan"), float("nan"), float("nan"), 0.9, 0.1],
                               [float("nan")] * 6])
    editable = torch.tensor([[False, True, True, True, True, True], [False, False, True, True, True, True]])
    tokens = torch.tensor([[-1, 7, 8, 9, -1, -1], [-1, -1, 4, 4, 4, 4]])
    scores = torch.tensor([[float("-inf"), 0.3, 0.8, 0.2, float("-inf"), float("-inf")],
                           [float("-inf"), float("-inf"), 0.5, 0.4, 0.6, 0.4]])
    selected = torch.tensor([[True, True, True, False, False, False], [False, True, True, True, True, False]])
    before = (canvas.clone(), confidence.clone())
    ops.commit_remask(canvas, confidence, tokens, scores, selected, editable, torch.tensor([2, 1]), mask_id,
                      backend="torch")
    # row 0: commits 7 (0.3) and 8 (0.8); committed now: 7@.3 8@.8 5@.9 6@.1 -> remask 6 and 7
    assert canvas[0].tolist() == [9, 0, 8, 0, 5, 0]
    assert confidence[0, 2].item() == pytest.approx(0.8) and confidence[0, 4].item() == pytest.approx(0.9)
    assert torch.isnan(confidence[0, [1, 5]]).all()
    # row 1: position 1 is protected; commits 4@.5 4@.4 4@.6 -> remask the 0.4 one
    assert canvas[1].tolist() == [9, 9, 4, 0, 4, 0]
    assert before[0][:, 0].tolist() == canvas[:, 0].tolist()


def test_remask_ties_go_to_lowest_index_and_counts_clamp():
    canvas = torch.tensor([[0, 0, 0, 0]])
    confidence = torch.full((1, 4), float("nan"))
    ops.commit_remask(canvas, confidence, torch.tensor([[5, 6, 7, 8]]), torch.tensor([[0.5, 0.2, 0.2, 0.9]]),
                      torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool), 1, 0,
                      backend="torch")
    assert canvas.tolist() == [[5, 0, 7, 8]]
    ops.commit_remask(canvas, confidence, torch.tensor([[5, 6, 7, 8]]), torch.zeros(1, 4),
                      torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool), 10, 0,
                      backend="torch")
    assert canvas.tolist() == [[0, 0, 0, 0]]


def test_score_temperature_measures_on_another_distribution(fresh_seed):
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.2])
    tokens, scores = _draws(row, 3000, fresh_seed, temperature=2.0, score_temperature=1.0)
    untempered = _softmax(row.double().numpy())
    assert np.allclose(scores, untempered[tokens], rtol=1e-4)
    # the draw itself still follows T = 2
    assert _chi2_statistic(np.bincount(tokens, minlength=8), _softmax(row.double().numpy() / 2)) < _chi2_bound(7)


def test_reveal_op_reveals_at_the_row_probability(fresh_seed):
    eligible = torch.ones(3, 4000, dtype=torch.bool)
    eligible[:, :100] = False
    prob = torch.tensor([0.1, 0.5, 1.0])
    revealed = ops.reveal(eligible, prob, seed=fresh_seed)
    assert not (revealed & ~eligible).any()
    rates = revealed[:, 100:].float().mean(dim=1)
    assert (rates - prob).abs().max() < 5 * math.sqrt(0.25 / 3900)
    assert torch.equal(revealed, ops.reveal(eligible, prob, seed=fresh_seed))
