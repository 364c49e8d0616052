"""The torch backend's fast row sampler against the reference: the same tokens, the same scores up to
the order of fp32 sums, on random rows and on the edge cases the fast path hands to the reference."""
import math
import warnings

import pytest
import torch

from fastdiff import ops
from fastdiff.kernels import reference, torch_fast

MODES = [
    dict(temperature=0.0, score="confidence"),  # greedy without filters: numpy on these small blocks
    dict(temperature=0.0, score="margin"),
    dict(temperature=0.0, score="entropy"),
    dict(temperature=0.0, score="margin", top_k=7),
    dict(temperature=0.0, score="confidence", score_temperature=0.8),  # greedy, scored at another temperature
    dict(temperature=0.0, score="margin", score_temperature=1.7),
    dict(temperature=0.0, score="entropy", score_temperature=0.5),
    dict(temperature=0.0, score="confidence", score_temperature=1e-38),  # scores leave fp32: NaN in both
    dict(temperature=0.8, score="confidence"),
    dict(temperature=1.3, score="entropy", top_k=5),
    dict(temperature=0.7, score="margin", top_k=20, top_p=0.9),
    dict(temperature=1.0, score="confidence", top_k=3, top_p=0.5, score_temperature=1.0),
    dict(temperature=1.0, score="entropy", top_p=0.8),  # top-p alone: the reference's own path
    dict(temperature=2.0, score="margin", top_k=1),
    dict(temperature=1e-30, score="confidence"),  # z / T overflows fp32
    dict(temperature=0.5, score="confidence", top_k=10_000),  # k above the vocabulary
]


def _both(z, seed, **mode):
    M = z.shape[0]
    state = ops.make_rng_state(seed, M, "cpu", counter=3, origin=torch.randint(0, 9, (M,)))
    address = torch.stack([torch.arange(M), torch.arange(M) * 5 - 2], dim=1)
    options = [mode.get(name) for name in ("temperature", "top_k", "top_p", "score", "suppress_ids",
                                           "score_temperature")]
    options[0] = options[0] or 0.0
    expected = reference._sample_rows(z.clone(), address, state, *options)
    got = torch_fast.sample_rows(z.clone(), address, state, *options)
    return got, expected


def _assert_same(got, expected):
    assert torch.equal(got[0], expected[0])
    assert torch.equal(torch.isnan(got[1]), torch.isnan(expected[1]))
    torch.testing.assert_close(got[1].nan_to_num(), expected[1].nan_to_num(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
@pytest.mark.parametrize("V", [1, 2, 97, 1000])
def test_fast_rows_match_the_reference(mode, V, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randn(33, V, generator=g) * 3
    _assert_same(*_both(z, fresh_seed, **mode))


@pytest.mark.parametrize("suppress_ids", [[0, 63], [0], None])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_edge_rows_match_the_reference(mode, suppress_ids, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randint(-3, 4, (12, 64), generator=g).float()  # integer logits: ties at every threshold
    z[1, 5] = float("nan")
    z[2, :] = float("-inf")  # nothing drawable
    z[3, 7] = float("inf")
    z[4, 0] = float("nan")  # NaN in a suppressed column still marks the row bad
    z[5, :] = 0.0  # all tied
    z[6, 10] = 1e38  # overflows at small temperatures
    z[7, 1:] = float("-inf")  # one drawable token
    z[8, 63] = 50.0  # a suppressed id above every drawable logit
    z[9, 0] = float("inf")  # +inf in a suppressed column marks the row bad too
    z[10, 1:63] = float("-inf")  # only suppressed ids left: nothing drawable
    _assert_same(*_both(z, fresh_seed, suppress_ids=suppress_ids, **mode))


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_torch_selections_match_the_reference_too(mode, monkeypatch, fresh_seed):
    """The selections and sorts other devices run in torch (numpy's on the CPU), on the CPU: the same
    tokens, on random and tied rows."""
    monkeypatch.setattr(torch_fast, "_in_numpy", lambda x: False)
    g = torch.Generator().manual_seed(fresh_seed)
    for z in (torch.randn(33, 1000, generator=g) * 3, torch.randint(-3, 4, (12, 64), generator=g).float()):
        _assert_same(*_both(z, fresh_seed, **mode))


def test_the_torch_backend_runs_the_fast_path(monkeypatch, fresh_seed):
    calls = []
    fast = torch_fast.sample_rows
    monkeypatch.setattr(torch_fast, "sample_rows", lambda *args: calls.append(1) or fast(*args))
    logits = torch.randn(2, 6, 50, generator=torch.Generator().manual_seed(fresh_seed))
    mask = torch.ones(2, 6, dtype=torch.bool)
    tokens, scores = ops.sample_masked(logits, mask, temperature=0.9, top_k=5, seed=fresh_seed, backend="torch")
    expected = reference.sample_masked_reference(logits, mask, ops.make_rng_state(fresh_seed, 2, "cpu"),
                                                 temperature=0.9, top_k=5)
    assert calls and torch.equal(tokens, expected[0])
    assert math.isclose(float(scores.sum()), float(expected[1].sum()), rel_tol=1e-5)


def _reference_rows(monkeypatch):
    """Counts the rows the fast path hands to the reference."""
    handed = []
    slow = reference._sample_rows
    monkeypatch.setattr(reference, "_sample_rows", lambda z, *args: handed.append(len(z)) or slow(z, *args))
    return handed


@pytest.mark.parametrize("mode", [
    dict(temperature=0.8, score="confidence", top_k=50),
    dict(temperature=0.8, score="margin", top_k=50, top_p=0.95),
    dict(temperature=0.0, score="entropy", top_k=3),
    dict(temperature=0.0, score="margin"),  # greedy above the numpy block size: torch
    dict(temperature=0.7, score="confidence", top_p=0.9),
    dict(temperature=0.2, score="entropy", top_p=0.95),
], ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_large_vocabularies_stay_on_the_fast_path(mode, precision, monkeypatch, fresh_seed):
    """Chunked selection on a 4,099-token vocabulary (not a multiple of the chunk): bf16-rounded logits
    tie at every threshold, and still no row needs the reference."""
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randn(24, 4099, generator=g) * 3
    if precision == "bf16":
        z = z.bfloat16().float()
    expected = _both(z, fresh_seed, **mode)[1]
    handed = _reference_rows(monkeypatch)
    got = _both(z, fresh_seed, **mode)[0]
    handed = handed[1:]  # the first call is _both's own reference
    _assert_same(got, expected)
    assert sum(handed) == 0


@pytest.mark.parametrize("V", [2048, 20_000])
def test_a_flat_nucleus_stays_on_the_fast_path(V, monkeypatch, fresh_seed):
    """Near-uniform rows: the nucleus is most of the vocabulary and its bin nearly all of it (on 20,000
    tokens the chunk maxima hold too little mass to bound it, so the rows are histogrammed whole), and
    peaked rows beside them: the reference's tokens, no row handed to it."""
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randn(6, V, generator=g) * 0.01
    z[:3] *= 1000
    z[5] = 0.0  # every logit tied
    expected = _both(z, fresh_seed, temperature=1.0, top_p=0.9, score="confidence")[1]
    handed = _reference_rows(monkeypatch)
    got = _both(z, fresh_seed, temperature=1.0, top_p=0.9, score="confidence")[0]
    _assert_same(got, expected)
    assert handed[1:] == []


def test_ties_across_the_whole_row_stay_exact_on_the_fast_path(monkeypatch):
    """Every logit equal: the k-th ties with the whole row, so the ranking widens to all of it."""
    z = torch.zeros(4, 4096)
    z[:2] = torch.arange(4096.0)  # distinct logits
    for mode in (dict(top_k=10, score="margin"), dict(top_k=10, top_p=0.5, score="entropy")):
        expected = _both(z, 0, temperature=1.0, **mode)[1]
        handed = _reference_rows(monkeypatch)
        got = _both(z, 0, temperature=1.0, **mode)[0]
        _assert_same(got, expected)
        assert handed[1:] == []
        monkeypatch.undo()


def test_tied_rows_and_long_nuclei_stay_on_the_fast_path(monkeypatch):
    """Row 0: 70 tied logits, its nucleus a whole tie group; row 1: a nucleus of about 90 close logits
    spread over several quarter-octave bins. Both are ranked without the reference."""
    z = torch.zeros(2, 4096)
    z[0, :70] = 10.0
    z[1, 100:200] = 10.0 + 0.001 * torch.arange(100.0)
    expected = _both(z, 0, temperature=1.0, top_p=0.9, score="confidence")[1]
    handed = _reference_rows(monkeypatch)
    got = _both(z, 0, temperature=1.0, top_p=0.9, score="confidence")[0]
    _assert_same(got, expected)
    assert handed[1:] == []


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.999])
def test_nucleus_boundaries_inside_tie_groups_and_bins(top_p, monkeypatch, fresh_seed):
    """Nuclei ending inside a group of tied logits (kept whole), inside a quarter-octave bin of distinct
    logits (only that bin is sorted), at a single token, and on a vocabulary of 16-wide chunks whose
    maxima only bound the mass: the reference's tokens, none of these rows handed to it."""
    g = torch.Generator().manual_seed(fresh_seed)
    V = 40_000  # 2,500 chunks of 16
    z = torch.randn(6, V, generator=g) - 12.0  # a background far below the tokens that matter
    z[0, 1000:1040] = 3.0  # one tie group holds most of the mass
    z[1, :300] = torch.linspace(2.0, 2.2, 300)  # 300 close logits: a few bins
    z[2, 17] = 30.0  # a one-token nucleus
    z[3] = torch.randn(V, generator=g) * 4  # spread: the nucleus spans many bins
    z[4, ::97] = 1.0  # ties strided across the chunks
    z[5, 5:9] = 4.0
    z[5, 500:520] = 3.5
    expected = _both(z, fresh_seed, temperature=1.0, top_p=top_p, score="margin")[1]
    handed = _reference_rows(monkeypatch)
    got = _both(z, fresh_seed, temperature=1.0, top_p=top_p, score="margin")[0]
    _assert_same(got, expected)
    assert handed[1:] == []


def test_nucleus_sums_short_of_p_go_to_the_reference(monkeypatch, fresh_seed):
    """Where the tokens' own histogram falls short of p in the bin the bound proved (forced here by
    halving its masses), the rows go to the reference, which still gives its tokens."""
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randn(6, 3000, generator=g) * 3
    expected = _both(z, fresh_seed, temperature=0.9, top_p=0.9, score="confidence")[1]
    running, calls = torch_fast._running_mass, []

    def exact_sums_short(mass, p):  # the bound's histogram first, then the tokens' own
        calls.append(1)
        return running(mass if len(calls) % 2 else mass * 0.5, p)

    monkeypatch.setattr(torch_fast, "_running_mass", exact_sums_short)
    handed = _reference_rows(monkeypatch)
    got = _both(z, fresh_seed, temperature=0.9, top_p=0.9, score="confidence")[0]
    _assert_same(got, expected)
    assert len(calls) == 2 and handed[1:] == [6]


@pytest.mark.parametrize("mode", [dict(temperature=1.0, score="confidence"), dict(temperature=0.7, score="entropy"),
                                  dict(temperature=1.5, score="margin")],
                         ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_peaked_rows_draw_noise_only_where_it_can_win(mode, monkeypatch, fresh_seed):
    """Logits spread wider than the noise's range (-2.8 to 16.6): a column more than that below the
    row's best cannot win the Gumbel-max draw, so it gets no noise, and the draw is still the reference's."""
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randn(16, 1000, generator=g) * 30
    z[3, :] = 0.0
    z[3, 17] = z[3, 400] = 19.0  # a tie within the range: both contend
    expected = _both(z, fresh_seed, **mode)[1]
    drawn = []
    noise = reference.gumbel_noise
    monkeypatch.setattr(reference, "gumbel_noise", lambda *args: drawn.append(noise(*args)) or drawn[-1])
    got = _both(z, fresh_seed, **mode)[0]
    _assert_same(got, expected)
    fast_draws = sum(d.numel() for d in drawn) - z.numel()  # the reference's own draws are dense
    assert 0 < fast_draws < z.numel() // 4


def test_greedy_blocks_of_huge_finite_logits_draw_without_warnings(fresh_seed):
    """Greedy blocks are proven usable block-wide; finite logits near the fp32 limit still draw, scored
    1, with no numpy warning on the way (a NaN row is told apart without one too)."""
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randn(8, 50, generator=g)
    z[:, 3] = 3e38
    z[5, 9] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, expected = _both(z, fresh_seed, temperature=0.0, score="confidence", suppress_ids=[7])
    usable = torch.arange(8) != 5
    assert (got[0][usable] == 3).all() and got[0][5] == -1 and torch.equal(got[1][usable], torch.ones(7))
    _assert_same(got, expected)
