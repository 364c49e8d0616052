"""SamplerConfig: every decoding option of :class:`fastdiff.Sampler`, with its checks."""
from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple, Union

import torch

from fastdiff.noise import Noise, resolve_noise
from fastdiff.schedule import SCHEDULES, ScheduleFn
from fastdiff.validation import check_flag, check_int, check_number, check_seeds, is_int

UNMASK_RULES = ("confidence", "margin", "entropy", "random", "ancestral", "resample", "mask_predict", "sedd_euler",
                "sedd_analytic")
RESAMPLE_RULES = ("resample", "mask_predict")  # every step redraws the block's positions
SEDD_RULES = ("sedd_euler", "sedd_analytic")  # the model returns SEDD log-scores
TIME_CONDITIONING = ("sigma", "t")
DENOISE = ("sample", "argmax", "none")
MAX_LISTED_STEPS = 1_000_000
TRANSFER_COUNTS = ("schedule", "binomial")
REMASK_RULES = ("low_confidence",)


def option(default=dataclasses.MISSING, *, help: str, factory=dataclasses.MISSING):
    """A SamplerConfig field whose ``metadata["help"]`` documents it."""
    return field(default=default, default_factory=factory, metadata={"help": help})


def _with_attribute_docs(cls):
    """Append an ``Attributes:`` section built from the fields' ``help`` metadata to the docstring."""
    entries = [textwrap.fill(f"{f.name}: {f.metadata['help']}", 100, initial_indent=" " * 8,
                             subsequent_indent=" " * 12, break_on_hyphens=False) for f in dataclasses.fields(cls)]
    cls.__doc__ = cls.__doc__.rstrip() + "\n\n    Attributes:\n" + "\n".join(entries) + "\n"
    return cls


@_with_attribute_docs
@dataclass
class SamplerConfig:
    """Decoding options. Every field can also be passed as a keyword to ``Sampler(...)``,
    ``generate(...)`` and ``infill(...)``. Each field's ``help`` metadata documents it, and is the help
    of its ``fastdiff`` command-line flag. The per-step hooks ``on_step`` and ``logits_hook`` are
    arguments of :meth:`Sampler.generate` / :meth:`Sampler.infill`, not settings.
    """

    steps: Optional[int] = option(None, help=(
        "budget of denoising steps (model forward passes) for the whole generation. ``None``: one step per token "
        "to generate. It is spread over blocks in proportion to their tokens (equal blocks: evenly, remainder to "
        "the first blocks), and clamped to the number of tokens to generate, so no forward pass is ever wasted on "
        'a step that could commit nothing. With ``unmask="ancestral"`` it is the time grid instead (MDLM often '
        "uses 1000 steps): not clamped, and the steps that reveal nothing in any row run no forward pass."))
    schedule: Union[str, ScheduleFn] = option("linear", help=(
        'tokens committed per step inside a block: ``"linear"`` (equal, remainder front-loaded), ``"cosine"`` '
        "(MaskGIT) or a callable ``(n_tokens, n_steps) -> counts``."))
    transfer_counts: str = option("schedule", help=(
        'how many positions a row commits at each step: ``"schedule"`` (the schedule\'s counts, the same for '
        'every row with as many masked positions) or ``"binomial"`` (dllm\'s stochastic transfer: the counts of '
        '``unmask="ancestral"``, drawn per row from its seed, each position revealed with probability '
        "``(t - s) / t``, while ``unmask`` still chooses which positions). With ``\"binomial\"`` the steps are the "
        "time grid, as for ancestral: a step that commits nothing in any row runs no forward pass. With the "
        'redrawing rules (``"resample"``, ``"mask_predict"``) ``"binomial"`` draws the count masked after each '
        "step afresh, ``Binomial(n, t)``."))
    unmask: str = option("confidence", help=(
        'which masked positions are committed: ``"confidence"`` (probability of the drawn token), '
        '``"margin"`` (top-1 minus top-2 probability), ``"entropy"`` (negative entropy), ``"random"`` '
        '(uniformly at random), or ``"ancestral"`` (each masked position revealed independently with '
        "probability ``(t - s) / t``, MDLM / SEDD-absorbing / Dream's ``origin``; ``t`` and ``s`` are the "
        "schedule's masked fractions before and after the step: ``1 - i/steps`` for linear, ``cos(pi/2 i/steps)`` "
        "for cosine. The per-row reveal counts are drawn from that binomial law when the call is planned and the "
        "positions chosen uniformly, which is the same law; a block's last step reveals all that is left). "
        'Two rules redraw instead of revealing once (Mask-Predict style): every step draws a token at every '
        "editable position of the block, masked or not, keeps some and masks the others again, so that after "
        "step ``i`` of ``s`` the schedule's fraction ``t`` is masked (linear: ``1 - i/s``): "
        '``"resample"`` masks positions chosen uniformly (the RoBERTa-diffusion blog; with '
        '``transfer_counts="binomial"`` each position is masked independently with probability ``t``, the '
        'blog\'s exact law), ``"mask_predict"`` the least confident ones (Mask-Predict). A block runs every '
        "step of its budget; its last step keeps every drawn token. "
        '``"sedd_euler"`` / ``"sedd_analytic"``: SEDD\'s absorbing-state predictors; the model returns SEDD '
        "log-scores (``log s_j``, the mask token's own ignored), called with the noise level "
        "(``time_conditioning``). On SEDD's time grid ``t_i = 1 - i (1 - eps) / steps`` each masked position is "
        "revealed with probability ``min(1, a_i S)``, ``S = sum_j s_j`` over the tokens, drawing its token from "
        "``softmax(log s)`` (at ``temperature`` 1 this is SEDD's update): ``a_i = dt sigma'(t_i)`` (Euler) or "
        "``expm1(sigma(t_i) - sigma(t_i - dt))`` (analytic, Tweedie tau-leaping); ``denoise`` adds SEDD's last "
        "step at ``t = eps``."))
    threshold: Optional[float] = option(None, help=(
        'with ``"confidence"`` or ``"margin"``: commit every masked position of the block whose score is ``>= '
        "threshold``, at least one per row, so counts differ per row and a block may finish early. The last step "
        "of a block's budget commits whatever is left."))
    factor: Optional[float] = option(None, help=(
        "Fast-dLLM's factor-based parallel decoding, with ``\"confidence\"`` or ``\"margin\"``: with the "
        "block's masked scores sorted, largest first, commit the ``n`` best where ``n`` is the first rank "
        "``i >= 1`` whose score is below ``1 - factor / (i + 2)`` (all of them when that is the last rank or "
        "none is below), at least one per row; counts differ per row and a block may finish early. The last "
        "step of a block's budget commits whatever is left."))
    schedule_cap: bool = option(False, help=(
        "with ``threshold`` or ``factor``: a step commits at most the schedule's count plus what earlier steps "
        "of the block fell short of, and a block still masked when its budget ends steps on, at least one commit "
        "a step, instead of committing the rest at once (Fast-dLLM's Dream ``confidence_threshold``)."))
    edit_threshold: Optional[float] = option(None, help=(
        "LLaDA 2.1's token editing, with ``unmask=\"confidence\"``: at every step of a block, a committed "
        "generated token of the block is replaced by the token drawn there now when that token differs and its "
        "probability is above ``edit_threshold`` (strictly, as LLaDA 2.1); once a row's block is full, up to "
        "``max_edit_steps`` more steps edit it, ending early at a step that edits nothing in the row. ``None``: "
        "off."))
    max_edit_steps: int = option(16, help=(
        "with ``edit_threshold``: the most editing steps a row's block gets after it is full (LLaDA 2.1's "
        "``max_post_steps``)."))
    time_conditioning: Optional[str] = option(None, help=(
        'call the model as ``model(input_ids, time)`` with each row\'s time of the step, float32 ``[B]``: '
        '``"sigma"`` (the total noise ``sigma(t)`` of ``noise``, as SEDD and MDLM models take it) or ``"t"``. For '
        '``unmask="ancestral"`` (``t``: the masked fraction before the step) and the SEDD rules. ``None``: '
        "time-free ``model(input_ids, attention_mask)``. Time-conditioned models get no attention mask, so "
        "prompts cannot be padded."))
    noise: Noise = option("loglinear", help=(
        'the noise schedule of ``time_conditioning="sigma"`` and of the SEDD rules: ``"loglinear"`` '
        "(``sigma(t) = -log(1 - (1 - 1e-3) t)``), or an object with ``total_noise(t)`` and ``rate_noise(t)`` "
        "(``fastdiff.noise.GeometricNoise``, SEDD's or MDLM's noise objects)."))
    eps: float = option(1e-5, help="the SEDD rules' last time: their grid runs from 1 to ``eps``.")
    denoise: str = option("sample", help=(
        'the last step at ``t = eps`` of the SEDD rules, and of ``unmask="ancestral"`` on a grid that ends above 0 '
        "(``fastdiff.noise.NoiseGrid``, MDLM): it reveals every masked position left, drawing its token "
        '(``"sample"``, SEDD\'s ``denoise``) or taking the argmax (``"argmax"``, MDLM\'s ``noise_removal``); '
        '``"none"`` leaves them masked, as SEDD and MDLM do without it.'))
    position_temperature: float = option(0.0, help=(
        "``tau > 0`` chooses positions by Gumbel-top-k on ``score / tau`` (sampling without replacement) instead "
        "of plain top-k."))
    temperature: float = option(0.0, help=(
        "token sampling temperature; ``0`` is argmax. Scores are measured on ``softmax(logits / T)`` after top-k "
        "/ top-p / suppression (``T = 1`` for argmax)."))
    score_temperature: Optional[float] = option(None, help=(
        "measure the scores at this temperature instead (over the same kept tokens); LLaDA measures confidence "
        "untempered, ``1.0``. ``None``: the sampling one."))
    top_k: Optional[int] = option(None, help="keep only the ``top_k`` most likely tokens (ties kept).")
    top_p: Optional[float] = option(None, help="nucleus sampling in ``(0, 1]``, applied after ``top_k``.")
    block_length: Optional[int] = option(None, help=(
        "semi-autoregressive blocks over the generated span, left to right; nothing outside the current block is "
        "committed. The last block may be shorter."))
    remask: Optional[str] = option(None, help=(
        "``None`` or ``\"low_confidence\"`` (ReMDM-style): after each commit except a block's last step, re-mask "
        "the ``floor(remask_ratio * committed)`` committed generated tokens of the block with the lowest "
        "confidence recorded at commit time. Prompt and fixed positions are never re-masked and the sampler still "
        "ends with no mask left."))
    remask_ratio: float = option(0.25, help="in ``[0, 1)``, see ``remask``.")
    remask_temperature: float = option(0.0, help="``> 0`` makes the re-mask choice Gumbel-perturbed.")
    cfg_scale: float = option(0.0, help=(
        "classifier-free guidance ``s``: ``logits = u + (s + 1) (c - u)``, where the unconditional input is the "
        "canvas with prompt (fixed) positions set to the mask token. Both inputs run in one batched forward."))
    logits_shift: bool = option(False, help=(
        "for AR-initialised models (Dream): position ``i`` takes the logits of ``i - 1``."))
    eos_token_id: Union[int, Sequence[int], None] = option(None, help="end-of-sequence id (or ids).")
    stop_at_eos: bool = option(True, help=(
        "with ``eos_token_id``: a row is finished once it has committed EOS and everything before it is decoded; "
        "the positions after it become that EOS, and the call ends early once every row is finished."))
    suppress_token_ids: Sequence[int] = option(factory=tuple, help=(
        "ids that are never sampled. The mask token is always suppressed."))
    begin_suppress_token_ids: Sequence[int] = option(factory=tuple, help=(
        "ids never sampled at the first generated position (transformers' / dllm's ``begin_suppress_tokens``, "
        "e.g. EOS so that a generation does not end before it starts); :meth:`Sampler.generate` only."))
    defer_token_ids: Sequence[int] = option(factory=tuple, help=(
        "positions whose drawn token is one of these get the lowest score, so they are committed after every "
        "other position of the block (LLaDA's low-confidence EOS / EoT)."))
    seed: Union[int, Sequence[int], torch.Tensor, None] = option(None, help=(
        "an int, or one seed per row (a sequence of ints or an int64 tensor ``[B]``); the same seeds give the "
        "same output. An int ``s`` gives row ``b`` the seed ``s + b``. A row's draws depend only on its own seed "
        "and prompt, not on the other rows or on its left padding. ``None`` draws an int from torch's default "
        "generator."))
    return_history: bool = option(False, help=(
        "keep a copy of the canvas after every step in ``GenerationOutput.history``."))

    def replace(self, **overrides) -> "SamplerConfig":
        """A validated copy with ``overrides`` applied; unknown names raise ``TypeError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        hooks = [name for name in unknown if name in ("on_step", "logits_hook")]
        if hooks:
            raise TypeError(f"{hooks[0]} is an argument of Sampler.generate() / infill(), not a SamplerConfig option")
        if unknown:
            raise TypeError(f"unknown SamplerConfig option(s): {', '.join(unknown)}")
        config = dataclasses.replace(self, **overrides)
        config.validate()
        return config

    def values_key(self, overrides: dict) -> Optional[tuple]:
        """A hashable key of this config's values with ``overrides`` applied (for caching what a call
        derives from them), or ``None`` unless every value is plain: ``None``, a bool, int, float or
        str, or a tuple of them (a tensor, list or callable may change behind an identity key). Values
        key with their types, so ``1``, ``1.0`` and ``True`` (equal in Python) key apart."""
        try:
            return (tuple(_typed(getattr(self, f.name)) for f in dataclasses.fields(self)),
                    tuple((name, _typed(value)) for name, value in sorted(overrides.items())))
        except _NotPlain:
            return None

    @property
    def score_kind(self) -> str:
        """The score :func:`fastdiff.ops.sample_masked` computes for this ``unmask`` rule (and records as
        commit confidence): ``"margin"``, ``"entropy"``, or ``"confidence"`` for the others."""
        return self.unmask if self.unmask in ("margin", "entropy") else "confidence"

    @property
    def eos_ids(self) -> Tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    @property
    def sedd(self) -> bool:
        """Whether the model returns SEDD log-scores updated by a SEDD predictor."""
        return self.unmask in SEDD_RULES

    @property
    def edits(self) -> bool:
        """Whether committed tokens may be replaced (``edit_threshold``)."""
        return self.edit_threshold is not None

    @property
    def resamples(self) -> bool:
        """Whether every step redraws all editable positions of its block (``"resample"``,
        ``"mask_predict"``) instead of committing masked ones for good."""
        return self.unmask in RESAMPLE_RULES

    @property
    def adaptive_counts(self) -> bool:
        """Whether each step's commit count depends on the scores (``threshold`` or ``factor``): rows
        then differ and a block may finish before its budget."""
        return self.threshold is not None or self.factor is not None

    def validate(self) -> None:
        """Raise ``ValueError`` / ``TypeError`` naming the first bad field."""
        self._validate_rules()
        self._validate_numbers()
        self._validate_ids_and_flags()

    def _validate_rules(self) -> None:
        if self.steps is not None:
            check_int(self.steps, "steps")
            if self.steps <= 0:
                raise ValueError(f"steps must be a positive int, got {self.steps}")
            # rules whose planning is linear in the steps (every step runs, or a grid is listed)
            listed = self.sedd or self.resamples or hasattr(self.schedule, "fractions")
            if listed and self.steps > MAX_LISTED_STEPS:
                raise ValueError(f"steps must be at most {MAX_LISTED_STEPS:,} with unmask={self.unmask!r} and this "
                                 f"schedule (each step is planned one by one), got {self.steps:,}")
        if not callable(self.schedule) and self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} or a callable, got {self.schedule!r}")
        if self.unmask not in UNMASK_RULES:
            raise ValueError(f"unmask must be one of {UNMASK_RULES}, got {self.unmask!r}")
        if self.transfer_counts not in TRANSFER_COUNTS:
            raise ValueError(f"transfer_counts must be one of {TRANSFER_COUNTS}, got {self.transfer_counts!r}")
        if self.threshold is not None:
            check_number(self.threshold, "threshold")
            if not 0.0 < self.threshold <= 1.0:
                raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.factor is not None:
            check_number(self.factor, "factor")
            if self.factor <= 0:
                raise ValueError(f"factor must be > 0, got {self.factor}")
            if self.threshold is not None:
                raise ValueError("give threshold or factor, not both")
        check_flag(self.schedule_cap, "schedule_cap")
        if self.schedule_cap and not self.adaptive_counts:
            raise ValueError("schedule_cap caps the counts of threshold or factor: set one of them")
        for name in ("threshold", "factor"):  # the rules whose counts follow the scores
            if getattr(self, name) is None:
                continue
            if self.unmask not in ("confidence", "margin"):
                raise ValueError(f"{name} works with unmask='confidence' or 'margin', not {self.unmask!r}")
            if self.transfer_counts != "schedule":
                raise ValueError(f"{name} sets the counts itself: it works with transfer_counts='schedule'")
        if self.edit_threshold is not None:
            check_number(self.edit_threshold, "edit_threshold")
            if not 0.0 < self.edit_threshold <= 1.0:
                raise ValueError(f"edit_threshold must be in (0, 1], got {self.edit_threshold}")
            if self.unmask != "confidence":
                raise ValueError(f"edit_threshold compares token probabilities: it works with unmask='confidence', "
                                 f"not {self.unmask!r}")
            if self.remask is not None:
                raise ValueError("edit_threshold and remask both rewrite committed tokens: choose one")
        self._validate_time()
        check_int(self.max_edit_steps, "max_edit_steps")
        if self.max_edit_steps < 0:
            raise ValueError(f"max_edit_steps must be >= 0, got {self.max_edit_steps}")
        if self.block_length is not None:
            check_int(self.block_length, "block_length")
            if self.block_length <= 0:
                raise ValueError(f"block_length must be a positive int, got {self.block_length}")
        if self.remask is not None and self.remask not in REMASK_RULES:
            raise ValueError(f"remask must be None or one of {REMASK_RULES}, got {self.remask!r}")
        if self.remask is not None and self.resamples:
            raise ValueError(f"remask works with rules that commit tokens for good, not unmask={self.unmask!r} "
                             "(which masks tokens again at every step itself)")

    def _validate_time(self) -> None:
        if self.time_conditioning is not None and self.time_conditioning not in TIME_CONDITIONING:
            raise ValueError(f"time_conditioning must be None or one of {TIME_CONDITIONING}, "
                             f"got {self.time_conditioning!r}")
        if self.time_conditioning is not None and not (self.sedd or self.unmask == "ancestral"):
            raise ValueError("time_conditioning needs a time grid: unmask='ancestral' or a SEDD rule, "
                             f"not {self.unmask!r}")
        resolve_noise(self.noise)
        check_number(self.eps, "eps")
        if not 0 < self.eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        if self.denoise not in DENOISE:
            raise ValueError(f"denoise must be one of {DENOISE}, got {self.denoise!r}")
        if not self.sedd:
            return
        for name, default in (("block_length", self.block_length is None), ("cfg_scale", self.cfg_scale == 0),
                              ("logits_shift", not self.logits_shift), ("remask", self.remask is None),
                              ("transfer_counts", self.transfer_counts == "schedule")):
            if not default:
                raise ValueError(f"{name} is not part of SEDD's predictors (unmask={self.unmask!r}): leave it at "
                                 "its default")

    def _validate_numbers(self) -> None:
        check_number(self.position_temperature, "position_temperature")
        if self.position_temperature < 0:
            raise ValueError(f"position_temperature must be >= 0, got {self.position_temperature}")
        check_number(self.temperature, "temperature")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.score_temperature is not None:
            check_number(self.score_temperature, "score_temperature")
            if self.score_temperature <= 0:
                raise ValueError(f"score_temperature must be > 0, got {self.score_temperature}")
        if self.top_k is not None:
            check_int(self.top_k, "top_k")
            if self.top_k < 1:
                raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None:
            check_number(self.top_p, "top_p")
            if not 0.0 < self.top_p <= 1.0:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        check_number(self.remask_ratio, "remask_ratio")
        if not 0.0 <= self.remask_ratio < 1.0:
            raise ValueError(f"remask_ratio must be in [0, 1), got {self.remask_ratio}")
        check_number(self.remask_temperature, "remask_temperature")
        if self.remask_temperature < 0:
            raise ValueError(f"remask_temperature must be >= 0, got {self.remask_temperature}")
        check_number(self.cfg_scale, "cfg_scale")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")

    def _validate_ids_and_flags(self) -> None:
        for name in ("logits_shift", "stop_at_eos", "return_history"):
            check_flag(getattr(self, name), name)
        if self.eos_token_id is not None:
            ids = [self.eos_token_id] if isinstance(self.eos_token_id, int) else self.eos_token_id
            if isinstance(ids, (str, bytes)) or not all(is_int(i) and i >= 0 for i in ids) or not len(ids):
                raise TypeError(f"eos_token_id must be a non-negative int or a sequence of them, got {self.eos_token_id!r}")
        for name in ("suppress_token_ids", "begin_suppress_token_ids", "defer_token_ids"):
            ids = getattr(self, name)
            if isinstance(ids, (str, bytes)) or not all(is_int(i) and i >= 0 for i in ids):
                raise TypeError(f"{name} must be non-negative ints, got {ids!r}")
        if self.seed is not None:
            check_seeds(self.seed)


class _NotPlain(Exception):
    """A value :meth:`SamplerConfig.values_key` does not key."""


def _typed(value):
    """A plain ``value`` paired with its type (a tuple's items too); raises :class:`_NotPlain` otherwise."""
    if value is None or type(value) in (bool, int, float, str):
        return type(value), value
    if type(value) is tuple:
        return tuple, tuple(map(_typed, value))
    raise _NotPlain
