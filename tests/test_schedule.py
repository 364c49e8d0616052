import math

import pytest

from fastdiff.schedule import allocate_steps, cosine_schedule, linear_schedule, schedule_counts


@pytest.mark.parametrize("n,s,expected", [(10, 4, [3, 3, 2, 2]), (8, 8, [1] * 8), (5, 2, [3, 2]), (3, 5, [1, 1, 1, 0, 0])])
def test_linear_front_loads_remainder(n, s, expected):
    assert linear_schedule(n, s) == expected


@pytest.mark.parametrize("n,s", [(240, 10), (64, 8), (16, 16), (100, 7), (37, 36)])
def test_cosine_follows_maskgit_and_commits_every_step(n, s):
    counts = cosine_schedule(n, s)
    assert sum(counts) == n and len(counts) == s
    assert min(counts) >= 1
    # where no step had to borrow, the masked fraction after step i is floor(n cos(pi/2 i/s))
    raw = [math.floor(n * math.cos(math.pi / 2 * i / s) + 1e-9) for i in range(s + 1)]
    raw_counts = [raw[i] - raw[i + 1] for i in range(s)]
    if min(raw_counts) >= 1:
        assert counts == raw_counts
    # cosine commits few tokens early and many late
    assert counts[0] <= counts[-1]


def test_cosine_exact_values():
    # cos(pi/2 * i/4) * 10 = 10, 9.24, 7.07, 3.83, 0 -> floors 10, 9, 7, 3, 0
    assert cosine_schedule(10, 4) == [1, 2, 4, 3]


def test_schedule_counts_rejects_bad_callables():
    with pytest.raises(ValueError, match="schedule"):
        schedule_counts(lambda n, s: [n], 10, 2)
    with pytest.raises(ValueError, match="summing"):
        schedule_counts(lambda n, s: [1] * s, 10, 2)
    with pytest.raises(ValueError, match="non-negative"):
        schedule_counts(lambda n, s: [12, -2], 10, 2)


@pytest.mark.parametrize("steps,blocks,expected", [
    (8, [4, 4, 4, 4], [2, 2, 2, 2]),
    (10, [4, 4, 4, 4], [3, 3, 2, 2]),
    (6, [8, 8, 4], [3, 2, 1]),      # proportional: a short last block gets fewer steps
    (100, [4, 4], [4, 4]),          # clamped: no block gets more steps than tokens
    (5, [10, 0, 10], [3, 0, 2]),    # empty blocks get no step
    (3, [1, 30, 1], [1, 1, 1]),
])
def test_allocate_steps(steps, blocks, expected):
    assert allocate_steps(steps, blocks) == expected


def test_allocate_steps_needs_a_step_per_block():
    with pytest.raises(ValueError, match="steps=2 cannot cover 3 blocks"):
        allocate_steps(2, [4, 4, 4])


def test_allocate_steps_without_clamp_spreads_the_whole_time_grid():
    assert allocate_steps(1000, [4, 4], clamp=False) == [500, 500]
    assert allocate_steps(7, [3, 0, 1], clamp=False) == [5, 0, 2]


def test_masked_fractions():
    from fastdiff.schedule import masked_fractions

    assert masked_fractions("linear", 10, 4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    cosine = masked_fractions("cosine", 10, 4)
    assert cosine[0] == 1.0 and cosine[-1] == 0.0 and abs(cosine[2] - math.cos(math.pi / 4)) < 1e-12
    assert masked_fractions(lambda n, s: [n - s + 1] + [1] * (s - 1), 10, 4) == [1.0, 0.3, 0.2, 0.1, 0.0]
