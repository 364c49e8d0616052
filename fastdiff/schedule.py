"""How many tokens each denoising step commits, and how the step budget is spread over blocks.

A schedule is a function ``schedule(n_tokens, n_steps) -> list[int]`` of ``n_steps`` non-negative
counts that sum to ``n_tokens``. Built in:

* ``"linear"``: equal counts, the remainder front-loaded (``n=10, s=4 -> [3, 3, 2, 2]``), as in LLaDA.
* ``"cosine"``: MaskGIT's schedule: after step ``i`` a fraction ``cos(pi/2 * i/s)`` of the tokens is
  still masked, so early steps commit few tokens and late steps many. Every step commits at least one
  token when ``n_tokens >= n_steps``.

Any callable with the same signature can be passed instead.
"""
from __future__ import annotations

import math
from typing import Callable, List, Sequence, Union

import torch

ScheduleFn = Callable[[int, int], Sequence[int]]
SCHEDULES = ("linear", "cosine")


def linear_schedule(n_tokens: int, n_steps: int) -> List[int]:
    base, remainder = divmod(n_tokens, n_steps)
    return [base + 1 if i < remainder else base for i in range(n_steps)]


def cosine_schedule(n_tokens: int, n_steps: int) -> List[int]:
    still_masked = [math.floor(n_tokens * math.cos(math.pi / 2 * i / n_steps) + 1e-9) for i in range(n_steps + 1)]
    still_masked[0], still_masked[-1] = n_tokens, 0
    counts = [still_masked[i] - still_masked[i + 1] for i in range(n_steps)]
    if n_tokens >= n_steps:
        # cos is flat at 0, so the first steps may round to zero: borrow one token each from the
        # largest later steps, keeping the shape increasing.
        for i in range(n_steps):
            while counts[i] < 1:
                donor = max(range(n_steps), key=lambda j: (counts[j], j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def masked_fractions(schedule: Union[str, ScheduleFn], n_tokens: int, n_steps: int) -> List[float]:
    """The fraction of tokens still masked before each step and after the last, ``n_steps + 1``
    values from 1 to 0: the time grid ``t`` of ancestral unmasking. Continuous for the built-in
    schedules (``1 - i/s``, ``cos(pi/2 i/s)``); a callable's counts give ``remaining / n_tokens``; an
    object with ``fractions(n_steps)`` gives its own (which may end above 0)."""
    if schedule == "linear":
        return [1.0 - i / n_steps for i in range(n_steps + 1)]
    if schedule == "cosine":
        return [math.cos(math.pi / 2 * i / n_steps) for i in range(n_steps)] + [0.0]
    if hasattr(schedule, "fractions"):  # a continuous grid (fastdiff.noise.NoiseGrid); it may end above 0
        return list(schedule.fractions(n_steps))
    left, fractions = n_tokens, [1.0]
    for count in schedule_counts(resolve_schedule(schedule), n_tokens, n_steps):
        left -= count
        fractions.append(left / n_tokens)
    return fractions


def reveal_steps(schedule: Union[str, ScheduleFn], v: torch.Tensor, n_tokens: int, n_steps: int) -> torch.Tensor:
    """The step at which ancestral unmasking reveals each of ``n_tokens`` positions, from ``v``
    (float64 ``[n]``, uniform in ``(0, 1]``): the step ``i`` with ``t_{i+1} < v <= t_i`` on the time
    grid of :func:`masked_fractions`. The built-in schedules invert their grid in closed form (no
    per-step work, so a budget of 10**9 steps costs what 10 do); a callable's grid is searched.

    Returns int64 ``[n]`` in ``[0, n_steps)``, or ``n_steps`` for a position still masked after the last
    step (a grid ending above 0, such as :class:`fastdiff.noise.NoiseGrid`'s).
    """
    if schedule == "linear":  # t_i = 1 - i/s
        steps = torch.floor((1.0 - v) * n_steps)
    elif schedule == "cosine":  # t_i = cos(pi/2 i/s)
        steps = torch.floor(torch.acos(v) * (2.0 * n_steps / math.pi))
    else:
        grid = torch.tensor(masked_fractions(schedule, n_tokens, n_steps)[1:], dtype=torch.float64)
        return (grid[None, :] >= v[:, None]).sum(dim=1)  # n_steps: below the grid's end
    return steps.clamp(0, n_steps - 1).to(torch.int64)


def resolve_schedule(schedule: Union[str, ScheduleFn]) -> ScheduleFn:
    if callable(schedule):
        return schedule
    if schedule == "linear":
        return linear_schedule
    if schedule == "cosine":
        return cosine_schedule
    raise ValueError(f"schedule must be one of {SCHEDULES} or a callable, got {schedule!r}")


def schedule_counts(schedule: ScheduleFn, n_tokens: int, n_steps: int) -> List[int]:
    """Call ``schedule`` and check what it returns."""
    counts = list(schedule(n_tokens, n_steps))
    if len(counts) != n_steps or any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in counts):
        raise ValueError(
            f"schedule({n_tokens}, {n_steps}) must return {n_steps} non-negative ints, got {counts!r}"
        )
    if sum(counts) != n_tokens:
        raise ValueError(f"schedule({n_tokens}, {n_steps}) must return counts summing to {n_tokens}, got {sum(counts)}")
    return counts


def allocate_steps(steps: int, block_tokens: Sequence[int], clamp: bool = True) -> List[int]:
    """Spread a step budget over blocks in proportion to the tokens each block holds.

    ``block_tokens[b]`` is the largest number of masked positions any row has in block ``b``.
    Every non-empty block gets at least one step; empty blocks get none. Leftover steps go to the
    blocks furthest below their proportional share, earlier blocks first on ties, so equal blocks split
    the budget evenly with the remainder front-loaded.

    With ``clamp`` (count schedules) no block gets more steps than tokens and the budget is clamped to
    ``sum(block_tokens)``: a step that could commit nothing is never run. Without it (the time grid of
    ancestral unmasking, whose empty steps are skipped later) the whole budget is spread.

    Raises:
        ValueError: if ``steps`` is smaller than the number of non-empty blocks.
    """
    nonempty = sum(1 for n in block_tokens if n > 0)
    if steps < nonempty:
        raise ValueError(
            f"steps={steps} cannot cover {nonempty} blocks: every block needs at least one step "
            "(raise steps or block_length)"
        )
    total = sum(block_tokens)
    if clamp:
        steps = min(steps, total)
    if total == 0:
        return [0 for _ in block_tokens]
    cap = [n if clamp else steps for n in block_tokens]
    ideal = [steps * n / total for n in block_tokens]
    alloc = [min(c, max(1, math.floor(x))) if n > 0 else 0 for n, c, x in zip(block_tokens, cap, ideal)]
    while sum(alloc) < steps:
        open_blocks = [b for b, n in enumerate(block_tokens) if 0 < n and alloc[b] < cap[b]]
        alloc[max(open_blocks, key=lambda b: (ideal[b] - alloc[b], -b))] += 1
    while sum(alloc) > steps:
        shrinkable = [b for b in range(len(alloc)) if alloc[b] > 1]
        alloc[min(shrinkable, key=lambda b: (ideal[b] - alloc[b], -b))] -= 1
    return alloc
