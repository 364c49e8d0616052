"""Eager steps on the CPU with the step's decisions taken on the host.

:class:`fastdiff.step.Denoiser` is written for CUDA graphs: every decision (which step runs next, which
positions are masked, how many each row commits) is a device tensor of a static shape, about a hundred
small tensor ops a step. On the CPU the host *is* the device, so :func:`run_on_host` takes those
decisions in numpy on views of the same state tensors (no copies) and runs torch only where the work
is: the forward and the sampling of the masked rows of the step's block.

It computes the Denoiser's function (same forwards, same counter-based random stream at the same
addresses, same ranking rules), so a seed gives the same tokens, scores and forward count on both; the
rules that change the canvas in other ways (redrawing, token editing, remasking, the factor rule) and
the per-step hooks stay on the Denoiser (:func:`runs_on_host`).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, List, Optional

import numpy as np
import torch

from fastdiff.config import SamplerConfig
from fastdiff.kernels import reference, torch_fast
from fastdiff.kernels.utils import STREAM_REVEAL, STREAM_SELECT
from fastdiff.plan import HostSteps, Plan
from fastdiff.step import Denoiser, StepState, finish_rows_at_eos, raise_if_bad, sedd_move_probability


def runs_on_host(config: SamplerConfig, backend: str, device: torch.device, hooked: bool) -> bool:
    """Whether a call's eager steps run on the host: the torch backend on the CPU, without hooks, and
    none of the rules that put masks back or rewrite committed tokens (or count by the factor rule)."""
    return (backend == "torch" and device.type == "cpu" and not hooked and not config.resamples
            and not config.edits and config.remask is None and config.factor is None)


def _next_work(plan: Plan, step: int, work: np.ndarray):
    """The step to run from plan step ``step`` on and the masked positions it fills: ``step``, while
    its block has a position to fill (``work``: bool ``[B, L]``), else the first step of the next
    block that has one (the padded capacity counts, as the Denoiser clamps to it). Returns ``(step,
    rows, columns)`` (int64 numpy ``[N]``, rows ascending), or ``(None, None, None)`` when no block has
    work."""
    host = plan.host
    step = min(step, len(host.step_block) - 1)
    block = host.step_block[step]
    for later in range(block, len(plan.block_spans)):
        start, end = plan.block_spans[later]
        rows, columns = work[:, start:end].nonzero()
        if len(rows):
            columns += start
            return (step if later == block else host.block_first_step[later]), rows, columns
    return None, None, None


def run_on_host(denoise: Denoiser, st: StepState, plan: Plan, buckets: List[Optional[int]], *, keep_history: bool,
                progress: Optional[Callable[[int, int], None]]) -> Optional[List[torch.Tensor]]:
    """:func:`fastdiff.step.run_eagerly` for a call :func:`runs_on_host` accepts, on CPU state tensors;
    returns the canvas history (``None`` unless ``keep_history``)."""
    host = plan.host  # the plan's steps as host lists
    canvas, confidence, editable, done = st.canvas.numpy(), st.confidence.numpy(), st.editable.numpy(), st.done.numpy()
    L = canvas.shape[1]
    flat_canvas, flat_confidence = canvas.reshape(-1), confidence.reshape(-1)  # views: the state tensors are contiguous
    rng = st.rng.numpy()
    history = [] if keep_history else None
    choose_first = _chooses_first(denoise.config)
    options = _host_scalars(denoise.sample_options(st))  # read once: the step's tensors stay as they are
    temperature = options["temperature"]
    # plain greedy steps of small fp32 blocks go straight to numpy; the suppressed ids checked once per vocabulary
    plain_greedy = options["top_k"] is None and options["top_p"] is None
    suppressed = functools.lru_cache(maxsize=None)(lambda V: torch_fast.suppressed_columns(options["suppress_ids"], V))
    ranking = _Ranking(denoise, st)
    open_slots = editable & (canvas == denoise.mask_token_id)  # updated as tokens are committed
    flat_open = open_slots.reshape(-1)
    # the forward and the draw make tensors no caller sees; the history and the progress callback run
    # outside inference mode (the history's tensors are the caller's)
    step, nfe = 0, 0
    with torch.inference_mode():
        for call in range(plan.num_steps):
            work = open_slots & ~done[:, None] if st.eos_ids is not None else open_slots
            step, rows, columns = _next_work(plan, step, work)
            if step is None:
                break
            positions = rows * L + columns  # flat positions of the [B, L] canvas
            nfe += 1
            rng[:, 1] = host.step_counter[step]
            if st.time is not None:
                st.time.copy_(plan.step_time[step])
            if host.step_greedy is not None:
                options["temperature"] = 0.0 if host.step_greedy[step] else temperature
            if choose_first and buckets[call] is None:
                selected, tokens, scores = _choose_then_draw(denoise, st, host, ranking, plan, step, rows, columns,
                                                             call, options)
            else:
                greedy = suppressed if plain_greedy and options["temperature"] == 0 else None
                tokens, scores = _sample(denoise, st, rows, columns, positions, buckets[call], call, options, greedy)
                selected = None
            if st.defer_ids is not None:
                scores = np.where(np.isin(tokens, st.defer_ids.numpy()), np.float32("-inf"), scores)
            if math.isnan(scores.sum()):  # a NaN anywhere (the scores are never +inf, so -inf + inf cannot make one)
                st.bad_step.fill_(nfe - 1)
                raise_if_bad(st)
            if selected is None:
                selected = ranking.select(host.target_after[:, step], host.step_last[step], rows, columns, scores)
            if buckets[call] is not None:  # positions past the bucket drew nothing (-1)
                selected = selected[tokens[selected] >= 0]
            committed = positions[selected]
            flat_canvas[committed] = tokens[selected]
            flat_confidence[committed] = scores[selected]
            flat_open[committed] = False  # never the mask token: it is always suppressed
            if st.eos_ids is not None:
                finish_rows_at_eos(st, denoise.mask_token_id)
                open_slots = editable & (canvas == denoise.mask_token_id)  # EOS fills the rest of a finished row
                flat_open = open_slots.reshape(-1)
            step += 1
            if history is not None or progress is not None:
                with torch.inference_mode(False):
                    if history is not None:
                        history.append(st.canvas.clone())
                    if progress is not None:
                        progress(call + 1, plan.num_steps)
    st.step.fill_(step if step is not None else plan.num_steps)
    st.nfe.fill_(nfe)
    st.work_left.fill_(bool((editable & (canvas == denoise.mask_token_id) & ~done[:, None]).any()))
    return history


def _choose_then_draw(denoise: Denoiser, st: StepState, host: HostSteps, ranking: "_Ranking", plan: Plan, step: int,
                      rows: np.ndarray, columns: np.ndarray, call: int, options: dict):
    """For the rules whose choice of positions ignores the tokens (:func:`_chooses_first`): the whole
    model at the positions ``(rows, columns)`` (int64 numpy ``[N]``, rows ascending), the indices of the
    positions to commit (int64 ascending), then tokens and scores (numpy ``[N]``). With every
    temperature 0 or at least 1, ``logits / T`` stays in the fp32 range, so a row fails to give a token
    only through its logits (NaN, +inf, or nothing outside the suppressed ids): every masked row is
    checked for that, and tokens are drawn at the chosen positions only (``-1`` / ``-inf`` elsewhere);
    otherwise at every position, as the Denoiser draws them."""
    logits, shift = denoise.full_logits(st, call)
    B, L, V = logits.shape
    b_idx, l_idx = torch.from_numpy(rows), torch.from_numpy(columns)
    rows_logits = logits.reshape(B * L, V).index_select(0, torch.from_numpy(reference.source_rows(rows, columns, L,
                                                                                                  shift)))
    if denoise.config.sedd:
        moves = sedd_move_probability(plan.step_rate[step], rows_logits, denoise.mask_token_id)
        selected = np.flatnonzero((reference.uniform_at(st.rng, STREAM_REVEAL, b_idx, l_idx) < moves).numpy())
    else:
        selected = np.sort(ranking.select(host.target_after[:, step], host.step_last[step], rows, columns, None))
    if not all(t is None or t == 0 or t >= 1 for t in (options["temperature"], options["score_temperature"])):
        tokens, scores = reference.sample_positions(logits, b_idx, l_idx, st.rng, logits_shift=shift,
                                                    row_sampler=torch_fast.sample_rows, **options)
        return selected, tokens.numpy(), scores.numpy()
    tokens = np.full(len(rows), -1, dtype=np.int64)
    scores = np.full(len(rows), -np.inf, dtype=np.float32)
    if not bool(torch_fast.drawable_rows(rows_logits.float(), options["suppress_ids"]).all()):
        scores.fill(np.nan)  # the caller's check raises
        return selected, tokens, scores
    if len(selected):
        drawn, drawn_scores = reference.sample_positions(
            logits, torch.from_numpy(rows[selected]), torch.from_numpy(columns[selected]), st.rng,
            logits_shift=shift, row_sampler=torch_fast.sample_rows, **options)
        tokens[selected], scores[selected] = drawn.numpy(), drawn_scores.numpy()
    return selected, tokens, scores


def _chooses_first(config: SamplerConfig) -> bool:
    """Whether a step's choice of positions ignores the tokens drawn: SEDD's reveals, and uniform
    positions without a threshold."""
    return config.sedd or (config.unmask in ("random", "ancestral") and config.threshold is None)


def _sample(denoise: Denoiser, st: StepState, rows: np.ndarray, columns: np.ndarray, positions: np.ndarray,
            bucket: Optional[int], call: int, options: dict, greedy: Optional[Callable[[int], Optional[np.ndarray]]]):
    """Tokens and scores (numpy ``[N]``) at the positions ``(rows, columns)`` (int64 numpy ``[N]``; flat
    ``positions = rows * L + columns``): the
    whole model (``bucket`` None), else the LM head on ``bucket`` rows, the positions first (as the
    Denoiser pads them). ``greedy``: for plain greedy options, ``greedy(V)`` gives the suppressed ids as
    :func:`torch_fast.greedy_on_host` takes them, which samples small blocks of fp32 logits in numpy."""
    N, L = len(rows), st.canvas.shape[1]
    if bucket is None:
        logits, shift = denoise.full_logits(st, call)
        if greedy is not None:  # the rows gathered: a copy
            sources = reference.source_rows(rows, columns, L, shift) if shift else positions
            drawn = _greedy_rows(greedy, logits, sources, N, options)
            if drawn is not None:
                return drawn
        tokens, scores = reference.sample_positions(logits, torch.from_numpy(rows), torch.from_numpy(columns), st.rng,
                                                    logits_shift=shift, row_sampler=torch_fast.sample_rows, **options)
        return tokens.numpy(), scores.numpy()
    n = min(N, bucket)
    row_ids = torch.full((bucket,), -1, dtype=torch.int64)
    row_ids[:n] = torch.from_numpy(positions[:n])
    head_rows = denoise.row_logits(st, row_ids)
    # the head's rows are this step's own: greedy samples them in place
    drawn = _greedy_rows(greedy, head_rows, slice(0, n), n, options) if greedy is not None else None
    if drawn is None:
        drawn = tuple(x[:n].numpy() for x in reference.sample_rows_reference(
            head_rows, row_ids, st.rng, L, row_sampler=torch_fast.sample_rows, **options))
    tokens = np.full(N, -1, dtype=np.int64)  # positions past the bucket draw nothing this step (the dump slot)
    scores = np.full(N, -np.inf, dtype=np.float32)
    tokens[:n], scores[:n] = drawn
    return tokens, scores


def _greedy_rows(greedy: Callable[[int], Optional[np.ndarray]], logits: torch.Tensor, rows, n: int,
                 options: dict):
    """Greedy tokens and scores (numpy ``[n]``) of the rows ``rows`` (an index array, or a slice: then
    sampled in place) of the logits ``[..., V]`` read as ``[R, V]``, by :func:`torch_fast.greedy_on_host`
    (``greedy``: as :func:`_sample` has it); ``None`` where it does not take them: logits not contiguous
    fp32 on the CPU, or too many."""
    V = logits.shape[-1]
    if not logits.is_contiguous() or not torch_fast.greedy_on_host_fits(logits, n, V):
        return None
    return torch_fast.greedy_on_host(logits.numpy().reshape(-1, V)[rows], greedy(V), options["score"],
                                     options["score_temperature"])


def _host_scalars(options: dict) -> dict:
    """The sampling keywords with their one-element tensors read as Python numbers (the host step reads
    each once per call, not at every step)."""
    return {name: value.item() if isinstance(value, torch.Tensor) and value.dim() == 0 else value
            for name, value in options.items()}


class _Ranking:
    """The choice of the positions a step commits, by ``select_topk_reference``'s rules (the ``k`` best of
    each row, ties to the lowest index, Gumbel-perturbed with a position temperature; threshold: those at
    or above it, at least one and at most ``k``), in numpy's fp32, with the call's numbers read once."""

    def __init__(self, denoise: Denoiser, st: StepState):
        config, params = denoise.config, st.params
        self.st, self.batch = st, st.canvas.shape[0]
        self.uniform = config.unmask in ("random", "ancestral")  # Gumbel-top-k of equal scores
        self.tau = 1.0 if self.uniform else reference._as_float(params["position_temperature"], "position_temperature")
        self.threshold = None if config.threshold is None else reference._as_float(params["threshold"], "threshold")
        self.cap = config.schedule_cap

    def select(self, target_after: np.ndarray, last: bool, rows: np.ndarray, columns: np.ndarray,
               scores: Optional[np.ndarray]) -> np.ndarray:
        """int64 ``[C]``: the indices, in no particular order, of the positions ``(rows, columns)`` (int64
        ``[N]``, rows ascending) to commit, each
        row keeping ``target_after`` (int ``[B]``) of its masked positions for later steps; ``scores``:
        fp32 ``[N]`` without NaN, or ``None`` for the uniform rules, which do not read them; ``last``: the
        block's last step."""
        n_masked = np.bincount(rows, minlength=self.batch)
        k = np.maximum(n_masked - target_after, 0)
        keys = np.zeros(len(rows), dtype=np.float32) if self.uniform else scores
        if self.tau > 0:
            u = reference.uniform_at(self.st.rng, STREAM_SELECT, torch.from_numpy(rows), torch.from_numpy(columns))
            keys = keys / np.float32(self.tau) + reference._gumbel(u).numpy()
        if self.threshold is None:
            order = np.lexsort((np.negative(keys), rows))  # by row, larger key, lower index
            tier = None
        else:
            if not self.cap:
                k = n_masked
            above = scores >= np.float32(float("-inf") if last else self.threshold)
            n_above = np.bincount(rows[above], minlength=self.batch)
            use_above = n_above > 0
            tier = np.where(use_above[rows], above, True)
            k = np.minimum(k, np.where(use_above, n_above, 1))
            order = np.lexsort((np.negative(keys), ~tier, rows))  # the tier first
        # the rows are ascending, so the ranked order keeps them where they were: the i-th ranked entry
        # is chosen while i is below its row's start plus its row's k
        ranked = np.arange(len(rows)) < (n_masked.cumsum() - n_masked + k)[rows]
        return order[ranked if tier is None else ranked & tier[order]]
