"""The torch backend's fast row sampler against the reference: the same tokens, the same scores up to
the order of fp32 sums, on random rows and on the edge cases the fast path hands to the reference."""
import math

import pytest
import torch

from fastdiff import ops
from fastdiff.kernels import reference, torch_fast

MODES = [
    dict(temperature=0.0, score="confidence"),
    dict(temperature=0.0, score="margin", top_k=7),
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


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}={v}" for k, v in m.items()))
def test_edge_rows_match_the_reference(mode, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    z = torch.randint(-3, 4, (12, 64), generator=g).float()  # integer logits: ties at every threshold
    z[1, 5] = float("nan")
    z[2, :] = float("-inf")  # nothing drawable
    z[3, 7] = float("inf")
    z[4, 0] = float("nan")  # NaN in a suppressed column still marks the row bad
    z[5, :] = 0.0  # all tied
    z[6, 10] = 1e38  # overflows at small temperatures
    z[7, 1:] = float("-inf")  # one drawable token
    _assert_same(*_both(z, fresh_seed, suppress_ids=[0, 63], **mode))


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
