"""The plan of a call: its steps laid over the blocks, each row's commit targets and each step's
random-stream counter, as device tensors so that a step needs no host decision."""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from fastdiff.config import SamplerConfig
from fastdiff.noise import NoiseGrid, noise_at
from fastdiff.schedule import allocate_steps, masked_fractions, resolve_schedule, reveal_steps, schedule_counts

# Smallest row bucket of the masked-row head under CUDA graphs (buckets are powers of two).
MIN_ROW_BUCKET = 16


@dataclass(frozen=True)
class HostSteps:
    """The plan's step tensors as host lists, padded alike, for a loop that decides on the host."""

    block_first_step: List[int]
    step_block: List[int]
    step_last: List[bool]
    target_after: np.ndarray  # int64 [B, capacity]
    step_counter: List[int]
    step_greedy: Optional[List[bool]]


@dataclass
class Plan:
    """Steps laid out over blocks. The step tensors are padded to a power of two past ``num_steps``, so
    that captured graphs depend on the shapes, not on the count."""

    num_steps: int  # G, the steps planned
    block_masks: torch.Tensor  # bool [nb, L]: the positions of each block
    block_first_step: torch.Tensor  # int64 [nb]
    step_block: torch.Tensor  # int64 [capacity]
    step_last: torch.Tensor  # bool [capacity]: last fill step of its block (its editing steps follow)
    target_after: torch.Tensor  # int64 [B, capacity]: masked positions the block should have left after the step
    step_counter: torch.Tensor  # int64 [capacity]: the random-stream counter of each step, its index in the
    # full plan (steps dropped from the ancestral plan keep their numbers, so a row's noise does not
    # depend on which steps the other rows of the batch need)
    row_bound: List[int]  # host, [G]: most positions a step can commit (all rows), for the masked-row head
    block_spans: List[Tuple[int, int]]  # host, [nb]: each block's columns, [start, end)
    host: HostSteps  # the step tensors as host lists, for the CPU host step
    step_time: Optional[torch.Tensor] = None  # fp32 [capacity]: the model's time input (time_conditioning)
    step_rate: Optional[torch.Tensor] = None  # fp32 [capacity]: SEDD's a_i (reveal with min(1, a_i S)); inf: all
    step_greedy: Optional[torch.Tensor] = None  # bool [capacity]: tokens by argmax (denoise="argmax")


def make_plan(config: SamplerConfig, region: Tuple[int, int], row_counts, B: int, L: int, device: torch.device,
              rng: torch.Tensor) -> Plan:
    """Plan a call over the editable ``region = (lo, hi)`` of a ``[B, L]`` canvas.

    ``row_counts``: a bool ``[B, L]`` tensor of the holes (infill), or anything else when every row
    fills every position of the region (generation). ``rng``: the ``[B, 3]`` random state, whose
    per-row seeds draw the ancestral reveal counts.
    """
    lo, hi = region
    width = config.block_length or (hi - lo)
    blocks = [(start, min(start + width, hi)) for start in range(lo, hi, width)]
    if isinstance(row_counts, torch.Tensor):  # infill: count the holes of each row in each block
        per_row = [[int(row_counts[r, s:e].sum()) for (s, e) in blocks] for r in range(B)]
    else:
        per_row = [[e - s for (s, e) in blocks] for _ in range(B)]
    block_tokens = [max(per_row[r][b] for r in range(B)) for b in range(len(blocks))]
    binomial = _binomial_counts(config)
    budget = config.steps if config.steps is not None else sum(block_tokens)
    alloc = allocate_steps(budget, block_tokens, clamp=not (binomial or config.resamples or config.sedd))
    seeds = rng[:, 0].tolist()
    generator = functools.lru_cache(maxsize=None)(lambda row: torch.Generator().manual_seed(seeds[row]))
    commit_counts = _commit_counter(config, generator)
    redraw_targets = _redraw_targets(config, generator)
    # schedule_cap: a block not done when its budget ends steps on, at least one commit a step; token
    # editing: a row's full block gets up to max_edit_steps more steps, after every fill step; the
    # denoising step (SEDD, or an ancestral grid ending above 0) is a block's last fill step
    tails = [int(a > 0 and _denoises(config)) for a in alloc]
    fill = [a + (max(n - a, 0) if config.schedule_cap and a else 0) + tail
            for a, n, tail in zip(alloc, block_tokens, tails)]
    edit_steps = config.max_edit_steps if config.edits else 0
    span = [f + (edit_steps if f else 0) for f in fill]

    block_spans = []
    first_step, step_block, step_last, step_counter, row_bound, step_t, step_greedy = [], [], [], [], [], [], []
    targets = [[] for _ in range(B)]
    for j, b in enumerate(b for b in range(len(blocks)) if alloc[b] > 0):
        block_spans.append(blocks[b])
        if config.sedd:  # the model's scores decide the reveals: every step runs, no targets
            kept = list(range(span[b]))
            afters = [[0] * span[b] for _ in range(B)]
        elif config.resamples:  # every step redraws the block, so every step runs
            kept = list(range(alloc[b]))
            afters = [redraw_targets(per_row[r][b], alloc[b], r) for r in range(B)]
        else:
            counts = [commit_counts(per_row[r][b], alloc[b], r) for r in range(B)]
            # a step of the binomial law that reveals nothing in any row needs no forward pass
            if binomial:  # what a grid ending above 0 leaves (step alloc[b]) stays masked without denoising
                kept = [i for i in sorted(set().union(*counts)) if i < alloc[b] + tails[b]]
            else:
                kept = list(range(fill[b]))
            kept += list(range(fill[b], span[b]))  # the editing steps: nothing left to commit
            afters = [_left_after(per_row[r][b], counts[r], kept) for r in range(B)]
        step_counter += [sum(span[:b]) + i for i in kept]
        if config.time_conditioning is not None and not config.sedd:  # ancestral: the block's time grid
            grid = _grid_times(config.schedule, block_tokens[b], alloc[b])
            step_t += [grid[i] for i in kept]
        step_greedy += [config.denoise == "argmax" and tails[b] and i == alloc[b] for i in kept]
        first_step.append(len(step_block))
        step_block += [j] * len(kept)
        # the last fill step commits whatever is left
        step_last += [False] * (len(kept) - 1 - (span[b] - fill[b])) + [True] + [False] * (span[b] - fill[b])
        bound = [0] * len(kept)
        for r, after in enumerate(afters):
            targets[r] += after
            bound = [x + y for x, y in zip(bound, _bound_before(config, per_row[r][b], after))]
        row_bound += bound
    num_steps = len(step_block)
    padding = (1 << max(num_steps - 1, 0).bit_length()) - num_steps

    host = HostSteps(
        block_first_step=first_step,
        step_block=step_block + [len(first_step) - 1] * padding,
        step_last=step_last + [True] * padding,
        target_after=np.array([t + [0] * padding for t in targets], dtype=np.int64).reshape(B, -1),
        step_counter=step_counter + [sum(span) + i for i in range(padding)],
        step_greedy=step_greedy + [False] * padding if any(step_greedy) else None,
    )

    def steps_tensor(values, dtype=torch.int64):
        return torch.tensor(values, dtype=dtype, device=device)

    block_masks = np.zeros((len(block_spans), L), dtype=bool)
    for j, (s, e) in enumerate(block_spans):
        block_masks[j, s:e] = True
    return Plan(
        num_steps=num_steps,
        block_masks=torch.from_numpy(block_masks).to(device),
        block_first_step=steps_tensor(host.block_first_step),
        step_block=steps_tensor(host.step_block),
        step_last=steps_tensor(host.step_last, torch.bool),
        target_after=torch.from_numpy(host.target_after.copy()).to(device),
        step_counter=steps_tensor(host.step_counter),
        row_bound=row_bound,
        block_spans=block_spans,
        step_greedy=steps_tensor(host.step_greedy, torch.bool) if host.step_greedy is not None else None,
        host=host,
        **_step_times(config, num_steps, step_t, padding, device),
    )


def depends_on_seeds(config: SamplerConfig) -> bool:
    """Whether :func:`make_plan` reads the rows' seeds (the binomial counts); every other plan follows
    from the config and the shapes alone."""
    return _binomial_counts(config)


def _denoises(config: SamplerConfig) -> bool:
    """Whether a block ends with a denoising step: the SEDD rules, and ancestral counts on a grid that
    leaves positions masked after its last step (:class:`fastdiff.noise.NoiseGrid`); not with
    ``denoise="none"``."""
    if config.denoise == "none":
        return False
    final_fraction = getattr(config.schedule, "final_fraction", None)  # built-in and count grids end at 0
    return config.sedd or (_binomial_counts(config) and final_fraction is not None and final_fraction() > 0)


def _grid_times(schedule, n_tokens: int, n_steps: int) -> List[float]:
    """The time before each step (and of the denoising step after them): a grid object's own times,
    else the masked fraction."""
    if hasattr(schedule, "times"):
        return list(schedule.times(n_steps))
    return masked_fractions(schedule, n_tokens, n_steps)


def _step_times(config: SamplerConfig, num_steps: int, step_t: List[float], padding: int,
                device: torch.device) -> Dict[str, torch.Tensor]:
    """``step_time`` / ``step_rate`` of a time-conditioned or SEDD plan (none for the others).

    Ancestral: ``t`` is the masked fraction before the step (``step_t``). SEDD: ``t_i = linspace(1, eps, steps + 1)[i]``
    and ``dt = (1 - eps) / steps`` in fp32, as SEDD's sampler computes them; the rate is ``dt sigma'(t_i)``
    (Euler) or ``expm1(sigma(t_i) - sigma(t_i - dt))`` (analytic), and the denoising step (``t = eps``)
    reveals everything left.
    """
    if config.time_conditioning is None and not config.sedd:
        return {}
    if config.sedd:
        steps = num_steps - int(config.denoise != "none")
        grid = torch.tensor(NoiseGrid(config.noise, config.eps).times(steps), dtype=torch.float32)
        t = grid[:steps]
        dt = torch.tensor((1 - config.eps) / steps, dtype=torch.float32)
        sigma, rate = noise_at(config.noise, t)
        if config.unmask == "sedd_euler":
            a = dt * rate
        else:
            a = torch.expm1(sigma - noise_at(config.noise, t - dt)[0])
        if config.denoise != "none":
            t = grid
            sigma = torch.cat([sigma, noise_at(config.noise, grid[-1:])[0]])
            a = torch.cat([a, torch.full((1,), float("inf"))])
    else:
        t = torch.tensor(step_t, dtype=torch.float32)
        sigma = noise_at(config.noise, t)[0] if config.time_conditioning == "sigma" else None
        a = None
    time = sigma if config.time_conditioning == "sigma" else t
    pad = torch.zeros(padding)
    return dict(step_time=torch.cat([time, pad]).to(device) if config.time_conditioning else None,
                step_rate=torch.cat([a, pad]).to(device) if config.sedd else None)


def _binomial_counts(config: SamplerConfig) -> bool:
    """Whether the counts follow the ancestral (binomial) law: ``unmask="ancestral"``, or dllm's
    stochastic transfer with another rule choosing the positions."""
    return config.unmask == "ancestral" or config.transfer_counts == "binomial"


def _redraw_targets(config: SamplerConfig, generator: Callable[[int], torch.Generator]
                    ) -> Callable[[int, int, int], List[int]]:
    """``targets(n, s, row)``: for the redrawing rules, the positions of a row's ``n`` that are masked
    after each of a block's ``s`` steps: the schedule's counts, or with ``transfer_counts="binomial"``
    a fresh ``Binomial(n, t)`` draw at each step (each position masked again independently with the
    probability ``t`` of the time grid, as in the RoBERTa-diffusion blog); 0 after the last step."""
    schedule = resolve_schedule(config.schedule)

    def targets(n: int, s: int, row: int) -> List[int]:
        if n == 0:
            return [0] * s
        if config.transfer_counts == "schedule":
            return _left_after(n, dict(enumerate(schedule_counts(schedule, n, s))), list(range(s)))
        t = torch.tensor(masked_fractions(config.schedule, n, s)[1:-1], dtype=torch.float64)
        drawn = torch.binomial(torch.full_like(t, float(n)), t, generator=generator(row))
        return [int(m) for m in drawn.tolist()] + [0]

    return targets


def _commit_counter(config: SamplerConfig, generator: Callable[[int], torch.Generator]
                    ) -> Callable[[int, int, int], Dict[int, int]]:
    """``counts(n, s, row)``: tokens a row with ``n`` masked positions commits at each of a block's ``s``
    steps, by step (steps that commit nothing may be left out); ``generator(row)``: each row's, seeded
    by its own seed (made on first use)."""
    schedule = resolve_schedule(config.schedule)
    if not _binomial_counts(config):
        cache: Dict[Tuple[int, int], Dict[int, int]] = {}

        def scheduled_counts(n: int, s: int, row: int) -> Dict[int, int]:
            if (n, s) not in cache:  # rows with the same count share the schedule's counts
                cache[n, s] = dict(enumerate(schedule_counts(schedule, n, s))) if n else {}
            return cache[n, s]

        return scheduled_counts
    def ancestral_counts(n: int, s: int, row: int) -> Dict[int, int]:
        # MDLM / SEDD ancestral law: with t_i the masked fraction before step i, each position is
        # revealed at step i with probability t_i - t_{i+1}, independently; which ones is uniform.
        # Drawn as n reveal times (v uniform in (0, 1]: the step with t_{i+1} < v <= t_i), so the
        # cost follows n, not the number of steps
        if n == 0:
            return {}
        v = 1.0 - torch.rand(n, generator=generator(row), dtype=torch.float64)
        return dict(Counter(reveal_steps(config.schedule, v, n, s).tolist()))

    return ancestral_counts


def _left_after(n: int, counts: Dict[int, int], kept: List[int]) -> List[int]:
    """Masked positions a row with ``n`` in the block has left after each kept step."""
    after = []
    for i in kept:
        n -= counts.get(i, 0)
        after.append(n)
    return after


def _bound_before(config: SamplerConfig, n: int, targets: List[int]) -> List[int]:
    """Masked positions a row can still have in the block before each step: the plan's target, unless
    commits can fall short of it (threshold / factor: at least one per step), masks come back (remasking,
    redrawing, editing) or the model decides the reveals (SEDD)."""
    if config.remask is not None or config.resamples or config.edits or config.sedd:
        return [n] * len(targets)
    if config.adaptive_counts:
        return [max(n - i, 0) for i in range(len(targets))]
    return [n] + targets[:-1]


def can_stop_early(config: SamplerConfig) -> bool:
    """Whether a call may end before its last planned step (the plan step and the host step count can
    then part ways)."""
    return config.adaptive_counts or config.edits or config.sedd or bool(config.eos_ids and config.stop_at_eos)


def row_buckets(plan: Plan, config: SamplerConfig, uses_head: bool, graphed: bool, B: int,
                L: int) -> List[Optional[int]]:
    """Rows the masked-row head gathers at each step (None: the full head). Graphs round them up to
    powers of two so that a few captures cover all steps; if the call can end early, the device may
    skip steps, so every step takes the largest."""
    if not uses_head:
        return [None] * plan.num_steps
    bounds = plan.row_bound
    if can_stop_early(config):
        bounds = [max(bounds)] * plan.num_steps
    if graphed:
        bounds = [min(max(MIN_ROW_BUCKET, 1 << (max(b, 1) - 1).bit_length()), B * L) for b in bounds]
    return bounds
