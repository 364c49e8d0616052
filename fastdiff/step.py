"""One denoising step: canvas -> forward (with CFG) -> sample the masked positions -> select the ones
to commit -> commit / remask -> EOS. Device tensors only, so the same code runs eagerly and inside a
captured CUDA graph."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from fastdiff import ops
from fastdiff.config import SamplerConfig
from fastdiff.kernels import reference
from fastdiff.model import ModelRunner
from fastdiff.plan import Plan
from fastdiff.validation import check_callable, check_hook_logits, check_replacement


@dataclass
class StepState:
    """Everything a step reads and writes, on the device."""

    canvas: torch.Tensor  # int64 [B, L]
    confidence: torch.Tensor  # fp32 [B, L]
    editable: torch.Tensor  # bool [B, L]: positions the sampler fills
    fixed: torch.Tensor  # bool [B, L]: prompt / fixed tokens (masked in the unconditional CFG input)
    attention_mask: Optional[torch.Tensor]  # int64 [B, L], None without padding
    position_ids: Optional[torch.Tensor]
    done: torch.Tensor  # bool [B]
    step: torch.Tensor  # int64 []: the plan step to run next
    nfe: torch.Tensor  # int64 []: steps run that had work
    work_left: torch.Tensor  # bool []: some editable position is still masked in an unfinished row
    rng: torch.Tensor  # int64 [B, 3]: each row's (seed, counter, origin), see fastdiff.ops
    bad_step: torch.Tensor  # int64 []: first step with NaN / inf logits, -1 if none
    params: Dict[str, torch.Tensor]  # the config's numbers as device scalars (graphs reuse across values)
    suppress_ids: torch.Tensor  # int64 [S]
    begin_suppress_ids: Optional[torch.Tensor]  # int64 [S']: also suppressed at column begin_position
    begin_position: Optional[int]  # the canvas column of the first generated token (generate only)
    defer_ids: Optional[torch.Tensor]  # int64 [D]
    eos_ids: Optional[torch.Tensor]  # int64 [E]
    time: Optional[torch.Tensor]  # fp32 [B]: the model's time input of the step (time_conditioning), else None
    token_temperature: torch.Tensor  # fp32 []: the step's token temperature (0 at an argmax denoising step)
    edit_budget: torch.Tensor  # int64 [B]: editing steps a row has left once its block is full
    edit_block: torch.Tensor  # int64 []: the plan block edit_budget belongs to (-1: none yet)


def new_state(config: SamplerConfig, runner: ModelRunner, mask_token_id: int, canvas: torch.Tensor,
              editable: torch.Tensor, real: torch.Tensor, padded: bool, rng: torch.Tensor,
              begin_position: Optional[int] = None) -> StepState:
    """The state before the first step of a call on ``canvas`` (int64 ``[B, L]``, holding the mask token
    at the ``editable`` positions; ``real``: bool ``[B, L]``, false at padding). ``begin_position``: the
    first generated column, where ``begin_suppress_token_ids`` apply (``None``: infill, they do not)."""
    device = canvas.device
    B, L = canvas.shape
    attention = real.to(torch.int64) if padded else None

    def scalar(value, dtype=torch.float32):
        return torch.tensor(value, dtype=dtype, device=device)

    def ids(values):
        return torch.tensor(list(values), dtype=torch.int64, device=device) if values else None

    fp32_params = {
        "temperature": config.temperature,
        "score_temperature": config.score_temperature or 1.0,
        "top_p": config.top_p or 1.0,
        "threshold": config.threshold or 0.0,
        "factor": config.factor or 1.0,
        "position_temperature": config.position_temperature,
        "remask_ratio": config.remask_ratio,
        "remask_temperature": config.remask_temperature,
        "cfg_scale": config.cfg_scale,
        "edit_threshold": config.edit_threshold or 1.0,
    }
    # one tensor made, its elements as the 0-d params and the state's token temperature (which the steps
    # write; graphs clone each into its own static buffer)
    *values, token_temperature = torch.tensor([*fp32_params.values(), config.temperature], dtype=torch.float32,
                                              device=device).unbind()
    params = dict(zip(fp32_params, values))
    params["top_k"] = scalar(config.top_k or 1, torch.int32)
    # the int64 counters, likewise the elements of one tensor
    step, nfe, bad_step, edit_block, max_edit_steps = torch.tensor(
        [0, 0, -1, -1, config.max_edit_steps], dtype=torch.int64, device=device).unbind()
    params["max_edit_steps"] = max_edit_steps
    return StepState(
        canvas=canvas.contiguous(),  # the host step writes it (and its open slots) through flat views
        confidence=torch.full((B, L), float("nan"), dtype=torch.float32, device=device),
        editable=editable.contiguous(),
        fixed=real & ~editable,
        attention_mask=attention,
        position_ids=runner.position_ids(attention) if padded else None,
        done=torch.zeros(B, dtype=torch.bool, device=device),
        step=step,
        nfe=nfe,
        work_left=(editable & (canvas == mask_token_id)).any(),
        rng=rng,
        bad_step=bad_step,
        params=params,
        suppress_ids=ids(sorted(set(config.suppress_token_ids) | {mask_token_id})),
        begin_suppress_ids=ids(sorted(set(config.begin_suppress_token_ids))) if begin_position is not None else None,
        begin_position=begin_position if config.begin_suppress_token_ids else None,
        defer_ids=ids(config.defer_token_ids),
        eos_ids=ids(config.eos_ids) if config.stop_at_eos else None,
        time=torch.zeros(B, dtype=torch.float32, device=device) if config.time_conditioning else None,
        token_temperature=token_temperature,
        edit_budget=torch.zeros(B, dtype=torch.int64, device=device),
        edit_block=edit_block,
    )


@dataclass(frozen=True)
class Hooks:
    """The per-step Python hooks of a call; with any of them, steps run eagerly with the whole model."""

    on_step: Optional[Callable] = None
    logits_hook: Optional[Callable] = None

    def __post_init__(self):
        check_callable(self.on_step, "on_step")
        check_callable(self.logits_hook, "logits_hook")

    def __bool__(self) -> bool:
        return self.on_step is not None or self.logits_hook is not None


class Denoiser:
    """The step function of one call's settings: ``denoiser(state, plan, bucket)`` advances ``state`` by
    one step.

    Args:
        runner: the model.
        mask_token_id: the mask token.
        config: the call's settings.
        backend: the resolved ops backend, ``"torch"`` or ``"triton"``.
        hooks: the call's hooks: ``logits_hook`` runs before sampling, and with any hook the returned
            logits are the ones each position is sampled from (shifted with ``logits_shift``).
    """

    def __init__(self, runner: ModelRunner, mask_token_id: int, config: SamplerConfig, backend: str,
                 hooks: Hooks = Hooks()):
        self.runner = runner
        self.mask_token_id = mask_token_id
        self.config = config
        self.backend = backend
        self.hooks = hooks
        self._checked_vocab = None  # the logits' vocabulary once checked against the ids (the same every step)

    def __call__(self, st: StepState, plan: Plan, bucket: Optional[int], step_index: int = 0):
        """Advance to a step with work, run it, update the flags. Returns the full logits (None with the
        masked-row head: ``bucket`` rows gathered; None bucket: the whole model)."""
        st.nfe.add_(self._advance_to_work(st, plan).to(torch.int64))
        logits = self._step(st, plan, bucket, step_index)
        work_left = self.work(st).any()
        if self.config.resamples or self.config.edits:  # blocks that run on without masks
            work_left = work_left | self._mid_block(st, plan) | self._edit_work(st, plan)
        st.work_left.copy_(work_left)
        return logits

    def work(self, st: StepState) -> torch.Tensor:
        """bool ``[B, L]``: editable positions still masked in unfinished rows."""
        return st.editable & (st.canvas == self.mask_token_id) & ~st.done[:, None]

    def _mid_block(self, st: StepState, plan: Plan) -> torch.Tensor:
        """bool ``[]``: with a redrawing rule, the next step continues a block already begun (it runs even
        when nothing is masked: it redraws); always false for the other rules."""
        if not self.config.resamples:
            return st.done.new_zeros(())
        previous = (st.step - 1).clamp(0, len(plan.step_last) - 1)
        return (st.step > 0) & ~plan.step_last[previous] & ~st.done.all()

    def _edit_work(self, st: StepState, plan: Plan) -> torch.Tensor:
        """bool ``[]``: with token editing, an unfinished row of the current block still has editing steps."""
        if not self.config.edits:
            return st.done.new_zeros(())
        current = plan.step_block[st.step.clamp(max=len(plan.step_block) - 1)]
        return (current == st.edit_block) & ((st.edit_budget > 0) & ~st.done).any()

    def _advance_to_work(self, st: StepState, plan: Plan) -> torch.Tensor:
        """Move ``st.step`` to the first step of the first block, from the current one on, that still
        has a masked position to fill (or stay in a redrawing or editing block that runs on); returns
        whether there is such a step (a device bool)."""
        work = self.work(st).any(dim=0)
        block_has_work = (plan.block_masks & work).any(dim=-1)
        step = st.step.clamp(max=len(plan.step_block) - 1)
        current = plan.step_block[step]
        later = block_has_work & (torch.arange(len(block_has_work), device=work.device) >= current)
        jump = plan.block_first_step[torch.argmax(later.to(torch.int32))]
        stay = block_has_work[current]
        any_left = later.any()
        if self.config.resamples or self.config.edits:  # blocks that run on without masks
            mid_block = self._mid_block(st, plan) | self._edit_work(st, plan)
            stay, any_left = stay | mid_block, any_left | mid_block
        st.step.copy_(torch.where(stay, step,
                                  torch.where(any_left, jump, torch.full_like(step, plan.num_steps))))
        return any_left

    def _step(self, st: StepState, plan: Plan, bucket: Optional[int], step_index: int) -> Optional[torch.Tensor]:
        g = st.step.clamp(max=len(plan.step_block) - 1)  # past the end (no work left) nothing is committed
        editable_now = st.editable & plan.block_masks[plan.step_block[g]] & ~st.done[:, None]
        masked = editable_now & (st.canvas == self.mask_token_id)
        # the redrawing rules choose among every editable position of the block, the others among the
        # masked ones; token editing draws every position but commits only masked ones
        eligible = editable_now if self.config.resamples else masked
        drawn = editable_now if self.config.resamples or self.config.edits else masked
        st.rng[:, 1].copy_(plan.step_counter[g])
        if st.time is not None:
            st.time.copy_(plan.step_time[g].expand_as(st.time))
        if plan.step_greedy is not None:
            st.token_temperature.copy_(torch.where(plan.step_greedy[g], 0.0, st.params["temperature"]))

        if bucket is None:
            tokens, scores, logits = self._sample_full(st, drawn, step_index)
        else:
            tokens, scores = self._sample_rows(st, drawn, bucket)
            logits = None
        probabilities = scores  # before deferral: what token editing compares with its threshold
        if st.defer_ids is not None:
            scores = torch.where(equals_any(tokens, st.defer_ids), float("-inf"), scores)
        bad = (torch.isnan(scores) & drawn).any()
        st.bad_step.copy_(torch.where((st.bad_step < 0) & bad, st.nfe - 1, st.bad_step))

        last = plan.step_last[g]
        if self.config.sedd:
            selected = self._sedd_reveals(st, plan.step_rate[g], logits, eligible)
        else:
            selected = self._select(st, scores, eligible, plan.target_after.index_select(1, g.reshape(1))[:, 0],
                                    last)
        ops.dispatch_commit_remask(self.backend, st.canvas, st.confidence, tokens, scores, selected, editable_now,
                                   self._remask_counts(st, selected, last), self.mask_token_id, st.rng,
                                   remask_temperature=st.params["remask_temperature"])
        if self.config.resamples:  # the drawn tokens not kept are masked again
            masked_again = eligible & ~selected
            st.canvas.masked_fill_(masked_again, self.mask_token_id)
            st.confidence.masked_fill_(masked_again, float("nan"))
        if self.config.edits:
            self._edit(st, plan.step_block[g], tokens, probabilities, editable_now, masked)
        if st.eos_ids is not None:  # redrawn tokens are final only at the block's end
            finish_rows_at_eos(st, self.mask_token_id, last if self.config.resamples else None)
        st.step.add_(1)
        return logits

    def _select(self, st: StepState, scores, eligible, target_after, last) -> torch.Tensor:
        """The positions to commit: ``n_masked - target_after`` per row by the unmasking rule, or as many
        as the scores call for (threshold, factor); everything left at a block's last step. For the
        redrawing rules ``eligible`` is the whole block and the positions chosen are the ones kept."""
        config, params = self.config, st.params
        n_masked = eligible.sum(dim=-1)
        k = (n_masked - target_after).clamp(min=0)
        if config.threshold is not None:
            threshold = torch.where(last, float("-inf"), params["threshold"])
            return ops.dispatch_select_topk(self.backend, scores, eligible, k if config.schedule_cap else n_masked,
                                            st.rng, position_temperature=params["position_temperature"],
                                            threshold=threshold)
        if config.factor is not None:
            wanted = factor_counts(scores, eligible, params["factor"])
            k = torch.where(last, n_masked, torch.minimum(wanted, k) if config.schedule_cap else wanted)
        if config.unmask in ("random", "ancestral", "resample"):  # uniform positions: Gumbel-top-k of equal scores
            return ops.dispatch_select_topk(self.backend, torch.zeros_like(scores), eligible, k, st.rng,
                                            position_temperature=1.0, threshold=None)
        return ops.dispatch_select_topk(self.backend, scores, eligible, k, st.rng,
                                        position_temperature=params["position_temperature"], threshold=None)

    def _edit(self, st: StepState, block, tokens, probabilities, editable_now, masked) -> None:
        """LLaDA 2.1 token editing: replace committed generated tokens of the block by the tokens drawn
        now where those differ and have probability above ``edit_threshold``. A row edits at every fill
        step, then at up to ``max_edit_steps`` steps once its block is full, until a step edits nothing."""
        params = st.params
        st.edit_budget.copy_(torch.where(block != st.edit_block, params["max_edit_steps"], st.edit_budget))
        st.edit_block.copy_(block)
        filling = masked.any(dim=-1)  # the row still had masks in the block when the step began
        after_fill = ~filling & (st.edit_budget > 0)
        edits = ((filling | after_fill)[:, None] & editable_now & ~masked & (tokens >= 0) & (tokens != st.canvas)
                 & (probabilities > params["edit_threshold"]))
        st.canvas.copy_(torch.where(edits, tokens, st.canvas))
        st.confidence.copy_(torch.where(edits, probabilities, st.confidence))
        spent = torch.where(edits.any(dim=-1), st.edit_budget - 1, torch.zeros_like(st.edit_budget))
        st.edit_budget.copy_(torch.where(after_fill, spent, st.edit_budget))

    def _sedd_reveals(self, st: StepState, rate, log_scores, eligible) -> torch.Tensor:
        """SEDD's absorbing predictors (:func:`sedd_move_probability`) at the eligible positions."""
        if self.backend == "torch":  # eager: the masked rows only
            moves = sedd_move_probability(rate, log_scores[eligible], self.mask_token_id)
            prob = torch.zeros(eligible.shape, device=moves.device).masked_scatter(eligible, moves)
        else:  # static shapes for CUDA graphs: every position
            prob = sedd_move_probability(rate, log_scores.reshape(-1, log_scores.shape[-1]),
                                         self.mask_token_id).reshape(eligible.shape)
        return reference.reveal_reference(eligible, prob, st.rng)

    def _remask_counts(self, st: StepState, selected, last) -> Optional[torch.Tensor]:
        """Tokens each row re-masks after committing: ``floor(ratio * committed)``, none at a block's end;
        ``None`` without remasking."""
        if self.config.remask is None:
            return None
        committed = selected.sum(dim=-1).to(torch.float32)
        n_remask = torch.floor(st.params["remask_ratio"] * committed).to(torch.int64)
        return torch.where(last, torch.zeros_like(n_remask), n_remask)

    # ------------------------------------------------------------------------------------------
    # forward and sampling
    # ------------------------------------------------------------------------------------------
    def _model_inputs(self, st: StepState):
        """The canvas batch (with the unconditional copy for CFG), its attention mask, positions and time."""
        ids, attention, positions, time = st.canvas, st.attention_mask, st.position_ids, st.time
        if self.config.cfg_scale > 0:
            ids = torch.cat([ids, st.canvas.masked_fill(st.fixed, self.mask_token_id)])
            attention = torch.cat([attention, attention]) if attention is not None else None
            positions = torch.cat([positions, positions]) if positions is not None else None
            time = torch.cat([time, time]) if time is not None else None
        return ids, attention, positions, time

    def _guide(self, logits: torch.Tensor, st: StepState) -> torch.Tensor:
        """CFG: ``u + (s + 1) (c - u)`` from the conditional and unconditional halves, in fp32."""
        if self.config.cfg_scale <= 0:
            return logits
        cond, uncond = logits.float().chunk(2)
        return uncond + (st.params["cfg_scale"] + 1.0) * (cond - uncond)

    def _check_vocab(self, vocab: int) -> None:
        if vocab == self._checked_vocab:
            return
        if self.mask_token_id >= vocab:
            raise ValueError(f"mask_token_id={self.mask_token_id} is outside the model's vocabulary [0, {vocab})")
        for name in ("suppress_token_ids", "begin_suppress_token_ids"):
            if any(i >= vocab for i in getattr(self.config, name)):
                raise ValueError(f"{name} must lie in [0, {vocab}), got {list(getattr(self.config, name))}")
        self._checked_vocab = vocab

    def sample_options(self, st: StepState) -> dict:
        """The sampling op's keywords for the step (temperature, filters, score, suppressed ids)."""
        config, params = self.config, st.params
        return dict(temperature=st.token_temperature,
                    top_k=params["top_k"] if config.top_k is not None else None,
                    top_p=params["top_p"] if config.top_p is not None else None,
                    score=config.score_kind, suppress_ids=st.suppress_ids,
                    score_temperature=params["score_temperature"] if config.score_temperature is not None else None)

    def _sample_full(self, st: StepState, eligible, step_index: int):
        """The whole model, then sampling at the eligible positions; returns tokens, scores, logits."""
        logits, shift = self.full_logits(st, step_index)
        tokens, scores = ops.dispatch_sample_masked(self.backend, logits, eligible, st.rng, logits_shift=shift,
                                                    **self.sample_options(st))
        return tokens, scores, logits

    def full_logits(self, st: StepState, step_index: int):
        """The whole model's logits ``[B, L, V]`` of the canvas (guided, hooked, begin-suppressed) and
        whether sampling still has to shift them (``logits_shift`` not yet applied)."""
        ids, attention, positions, time = self._model_inputs(st)
        raw = self.runner(ids, attention, positions) if time is None else self.runner(ids, attention, positions, time)
        if raw.device != st.canvas.device:  # a split model's logits come from its last device
            raw = raw.to(st.canvas.device)
        logits = self._guide(raw, st)
        self._check_vocab(logits.shape[-1])
        shift = self.config.logits_shift
        if shift and self.hooks:  # hooks see the logits each position is sampled from
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            shift = False
        if self.hooks.logits_hook is not None:
            logits = check_hook_logits(self.hooks.logits_hook(step_index, st.canvas, logits), logits)
        if st.begin_suppress_ids is not None:
            if self.hooks:  # the hooks' tensors may be the caller's: never written
                logits = logits.clone()
            # the first generated position reads the logits of the column before it when the op shifts them
            column = st.begin_position - 1 if shift and st.begin_position > 0 else st.begin_position
            logits[:, column].index_fill_(-1, st.begin_suppress_ids, float("-inf"))
        return logits, shift

    def _sample_rows(self, st: StepState, eligible, bucket: int):
        """The encoder, then the LM head on ``bucket`` gathered rows: the eligible positions in canvas
        order, padded with ``-1``; returns tokens and scores scattered back to ``[B, L]``."""
        B, L = eligible.shape
        flat = eligible.reshape(-1)
        slot = torch.cumsum(flat.to(torch.int64), 0) - 1
        slot = torch.where(flat & (slot < bucket), slot, bucket)  # slot `bucket` is a dump
        row_ids = torch.full((bucket + 1,), -1, dtype=torch.int64, device=flat.device)
        row_ids = row_ids.scatter(0, slot, torch.arange(B * L, device=flat.device))[:bucket]
        row_tokens, row_scores = ops.dispatch_sample_rows(self.backend, self.row_logits(st, row_ids), row_ids, st.rng,
                                                          L, **self.sample_options(st))
        target = torch.where(row_ids >= 0, row_ids, B * L)
        tokens = torch.full((B * L + 1,), -1, dtype=torch.int64, device=flat.device).scatter(0, target, row_tokens)
        scores = torch.full((B * L + 1,), float("-inf"), device=flat.device).scatter(0, target, row_scores)
        return tokens[:-1].reshape(B, L), scores[:-1].reshape(B, L)

    def row_logits(self, st: StepState, row_ids: torch.Tensor) -> torch.Tensor:
        """The encoder, then the LM head on the rows ``row_ids`` (int64 ``[R]``, canvas positions
        ``b * L + l``; ``-1``: padding, which reads position 0): logits ``[R, V]``, guided and
        begin-suppressed."""
        L = st.canvas.shape[1]
        source = row_ids.clamp(min=0)
        if self.config.logits_shift:  # position l reads the hidden state of l - 1 (position 0 its own)
            source = source - (source % L > 0).to(torch.int64)
        hidden = self.runner.encode(*self._model_inputs(st)[:3])  # (time-conditioned models run whole)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        source = source.to(hidden.device)  # the head's rows stay where the encoder left them (device_map)
        rows = (torch.cat([hidden[source], hidden[source + st.canvas.numel()]]) if self.config.cfg_scale > 0
                else hidden[source])
        logits = self._guide(self.runner.head(rows).to(row_ids.device), st)
        self._check_vocab(logits.shape[-1])
        if st.begin_suppress_ids is not None:  # the rows of the first generated position (static shapes)
            first = (row_ids >= 0) & (row_ids % L == st.begin_position)
            kept = logits.index_select(1, st.begin_suppress_ids).masked_fill(first[:, None], float("-inf"))
            logits.index_copy_(1, st.begin_suppress_ids, kept)
        return logits


def run_eagerly(denoise: Denoiser, st: StepState, plan: Plan, buckets: List[Optional[int]], *, keep_history: bool,
                progress: Optional[Callable[[int, int], None]]) -> Optional[List[torch.Tensor]]:
    """Run the planned steps one by one on the host until no work is left, with the hooks; returns the
    canvas history (``None`` unless ``keep_history``)."""
    on_step = denoise.hooks.on_step
    history = [] if keep_history else None
    step = 0
    while step < plan.num_steps and bool(st.work_left):
        logits = denoise(st, plan, buckets[step], step)
        raise_if_bad(st)
        if on_step is not None:
            replaced = on_step(step, st.canvas, logits)
            if replaced is not None:
                check_replacement(replaced, st.canvas)
                st.canvas.copy_(replaced)
                st.work_left.copy_(denoise.work(st).any())
        if history is not None:
            history.append(st.canvas.clone())
        step += 1
        if progress is not None:
            progress(step, plan.num_steps)
    return history


def raise_if_bad(st: StepState) -> None:
    """The step's NaN / +inf check, read on the host."""
    bad_step = int(st.bad_step)
    if bad_step >= 0:
        raise ValueError(f"the model returned NaN or +inf logits (or logits leaving no token to draw) at step {bad_step}")


def finish_rows_at_eos(st: StepState, mask_token_id: int, allowed: Optional[torch.Tensor] = None) -> None:
    """A row is finished once its first generated EOS has nothing masked before it; the positions after
    that EOS become the same EOS token. ``allowed``: a bool ``[]`` that must hold too (None: always)."""
    B, L = st.canvas.shape
    positions = torch.arange(L, device=st.canvas.device)
    is_eos = equals_any(st.canvas, st.eos_ids) & st.editable
    has_eos = is_eos.any(dim=-1)
    first = torch.where(has_eos, torch.argmax(is_eos.to(torch.int32), dim=-1),
                        torch.full_like(has_eos, L, dtype=torch.int64))
    before = positions[None, :] < first[:, None]
    pending = (st.editable & before & (st.canvas == mask_token_id)).any(dim=-1)
    newly_done = has_eos & ~pending & ~st.done
    if allowed is not None:
        newly_done &= allowed
    after = st.editable & (positions[None, :] > first[:, None]) & newly_done[:, None]
    eos_token = torch.gather(st.canvas, 1, first.clamp(max=L - 1)[:, None])
    st.canvas.copy_(torch.where(after, eos_token, st.canvas))
    st.confidence.masked_fill_(after, float("nan"))
    st.done.logical_or_(newly_done)


def sedd_move_probability(rate: torch.Tensor, log_scores: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """fp32 ``[N]``: the probability that each of ``N`` masked positions moves to a token under SEDD's
    absorbing predictors, ``min(1, rate * S)`` with ``S = sum_j exp(log_score_j)`` over the tokens (the
    mask's own score left out). ``rate``: fp32 ``[]``, ``inf`` at the denoising step (everything is
    revealed); ``log_scores``: ``[N, V]``, not modified."""
    # the Euler / analytic categorical: tokens a s_j, the mask 1 - a S (clipped at 0 as SEDD's sampling
    # of a negative weight never picks it); the token's law given a move is s_j / S, drawn already
    mask_index = torch.full((1,), mask_token_id, dtype=torch.int64, device=log_scores.device)
    scores = log_scores.float().index_fill(-1, mask_index, float("-inf"))  # a copy, worked on in place
    # log S = m + log sum_j exp(s_j - m), m the row's largest score (0 where it is infinite: a row of
    # -inf sums to 0); torch.logsumexp's steps, without its temporary
    top = scores.amax(dim=-1, keepdim=True)
    top.masked_fill_(top.abs() == float("inf"), 0.0)
    log_total = scores.sub_(top).exp_().sum(dim=-1).log_().add_(top[:, 0])
    return torch.exp((torch.log(rate) + log_total).clamp(max=0.0))


def factor_counts(scores: torch.Tensor, eligible: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """int64 ``[B]``: the positions Fast-dLLM's factor rule commits in each row. With the eligible scores
    sorted, largest first, ``s_0 >= s_1 >= ...`` over ``n`` positions: the first rank ``i >= 1`` with
    ``s_i < 1 - factor / (i + 2)``, or ``n`` when there is none or it is the last rank ``n - 1`` (as
    Fast-dLLM counts); 0 for a row with nothing eligible. Static shapes, no host synchronisation."""
    n = eligible.sum(dim=-1)
    ranked = torch.sort(torch.where(eligible, scores, float("-inf")), dim=-1, descending=True).values
    rank = torch.arange(scores.shape[-1], device=scores.device)
    below = (ranked < 1.0 - factor / (rank + 2)) & (rank >= 1) & (rank[None, :] < n[:, None])
    first = torch.where(below.any(dim=-1), torch.argmax(below.to(torch.int8), dim=-1), n)
    return torch.where(first < n - 1, first, n)


def equals_any(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``torch.isin(values, ids)`` as a broadcast compare over the few ``ids``: isin may sort and
    synchronise, which a captured step must not."""
    return (values[..., None] == ids).any(dim=-1)
