"""Dream's ``diffusion_generate`` on fastdiff.

:func:`diffusion_generate` takes what Dream's ``model.diffusion_generate`` takes (the model comes
first): ``model.diffusion_generate(ids, **kw)`` becomes ``diffusion_generate(model, ids, **kw)``.
The options are those of Dream's ``DreamGenerationConfig`` (:class:`DreamGenerationConfig` here).

Ties go to the lowest index: the lowest token id among equal logits, the leftmost position among equal
scores. Dream's ``torch.topk`` / ``argmax`` leave the order among equal values unspecified, so where
scores tie (saturated models, CFG-amplified logits, one-token nuclei) the tokens can differ from
Dream's; without ties the greedy tokens are the same.

The algorithm, as Dream's ``DreamGenerationMixin._sample`` runs it: the prompt is followed by mask
tokens up to ``max_length``; the model runs on the whole canvas with Dream's calling convention
(``attention_mask="full"`` without padding, else a bool ``[B, 1, N, N]`` mask, and ``tok_idx`` position
ids); its logits move one position right (position ``i`` reads the logits of ``i - 1``: Dream is
initialised from an autoregressive model). With ``t, s`` the consecutive values of
``torch.linspace(1, eps, steps + 1)``:

* ``alg="origin"``: every masked position is revealed with probability ``1 - s / t`` (all of them at the
  last step), drawing its token.
* ``alg="maskgit_plus"`` / ``"topk_margin"`` / ``"entropy"``: every masked position draws a token and is
  scored (probability of the token / top-1 minus top-2 probability / negative entropy); the
  ``int(m * (1 - s / t))`` best are committed, ``m`` being the number of masked positions per row (all of
  them at the last step). With ``alg_temp > 0`` they are sampled without replacement from
  ``softmax(score / alg_temp)`` instead (fastdiff: Gumbel-top-k, the same distribution).

* ``alg="confidence_threshold"`` (Fast-dLLM's parallel decoding, its Dream ``generation_utils.py``):
  every masked position draws a token scored by its probability; a step commits the best one and every
  other whose score is ``>= threshold`` (keyword, default 0.9), at most ``m / steps`` plus what earlier
  steps fell short of; after the last planned step the loop steps on, committing at least one a step,
  until nothing is masked (fastdiff's ``threshold`` with ``schedule_cap=True``). ``factor=`` (Fast-dLLM's
  LLaDA rule) replaces the threshold. Fast-dLLM's code takes batch 1 and ``m`` divisible by ``steps``;
  here any batch runs (each row its own counts) and the linear schedule spreads a remainder over the
  first steps. ``block_length=`` (its cached ``generation_utils_block.py``) runs blocks left to right,
  each to the end with the threshold uncapped; that file's cache warm-up pass, which commits each
  block's first position whatever its confidence, is not reproduced (fastdiff recomputes the whole
  canvas each step, which ``use_cache`` / ``dual_cache`` approximate; both are accepted and change
  nothing).

Tokens: ``temperature=0`` takes the argmax, else a sample from ``softmax(logits / temperature)``
filtered by ``top_p`` and ``top_k``.

Steps that commit nothing are not run. Dream's per-step count ``int(m * (1 - s / t))`` is 0 on many
steps (``steps=512`` over 256 tokens: 257 of them; ``steps=128`` over 128 tokens: the first); Dream still
runs the model for them. fastdiff works the counts out in advance, with Dream's fp32 arithmetic, and
runs only the steps that commit something: the same tokens (greedy) with fewer forward passes.
For ``origin``, the number of positions each step reveals is drawn in advance from the law Dream's
independent reveals give (a multinomial over the steps), and the steps that reveal nothing are left
out; given those counts the revealed positions are uniform, as in Dream.

Hooks and history keep Dream's step numbers: ``generation_logits_hook_func(i, x, logits)`` and
``generation_tokens_hook_func(i, x, logits)`` get Dream's index ``i`` of each step that runs; they are
not called for steps that are not run. ``history`` has one entry per Dream step (``steps`` of them);
a step that was not run repeats the previous canvas (the same tensor), which is what Dream records
there when no hook changes the canvas.

Where fastdiff differs from Dream's code:

* Skipped steps (above): a tokens hook that edits the canvas on a step that commits nothing is not
  called for that step. The counts are planned from the masks present after the hook's first call
  (``step=None``); if a hook later adds or removes mask tokens, fastdiff keeps each step's planned
  number of masks left (Dream recomputes ``int(m * (1 - s / t))`` from the new ``m``).
* ``origin``: the rows of a batch share the per-step reveal counts (each row on its own has Dream's
  law; Dream draws every row independently). Not token-exact (positions are random).
* With both ``top_p`` and ``top_k``, Dream keeps the nucleus of the full distribution, then its top-k;
  fastdiff keeps the top-k, then the nucleus of the renormalised top-k (a subset of Dream's). The drawn
  token's law differs and greedy confidences can differ. With only one of them set, the two agree.
* Rows with different numbers of masks (masks inside the prompts): Dream commits the batch mean count
  in every row (and re-masks decoded tokens of rows that run out); fastdiff runs Dream's count rule on
  each row's own masks.
* Dream can draw the mask token and scores over a softmax that includes it; fastdiff never draws it
  and scores over the other tokens (equal when the model gives the mask token zero probability).
* Dream computes probabilities in the logits' dtype (bf16 for the released model: coarse scores with
  many ties); fastdiff always in fp32, so greedy runs of a bf16 model can differ. Dream's entropy is
  ``sum p log(p + 1e-10)``, fastdiff's ``sum p log p`` (at most ``1e-10`` per token apart).
* Pad positions are never filled (Dream fills pad positions that hold the mask token id).
* Unknown keyword arguments are ignored with a warning (Dream ignores them silently). A canvas
  without mask tokens returns at once, without calling the model or the hooks.
* The random streams differ from torch's: same laws, not the same samples (``torch.manual_seed``
  still makes runs repeat).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from transformers.utils import ModelOutput

from fastdiff.compat import WeakModelRunner, cached_sampler
from fastdiff.validation import check_flag, check_positive_int, check_token_id
from fastdiff.sampler import Sampler

ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy", "confidence_threshold")
_UNMASK = {"origin": "random", "maskgit_plus": "confidence", "topk_margin": "margin", "entropy": "entropy",
           "confidence_threshold": "confidence"}
# Fast-dLLM's Dream entry point reads these keywords besides Dream's config (``threshold`` and its default)
FAST_DLLM_THRESHOLD = 0.9
# accepted for Fast-dLLM's signature; fastdiff recomputes the whole canvas every step, which the caches approximate
_KV_CACHE_OPTIONS = ("dual_cache", "use_cache")
# Dream's default ``max_length``: when left at it, the canvas is the prompt plus this many tokens.
DEFAULT_MAX_LENGTH = 20


@dataclass
class DreamGenerationConfig:
    """The options of Dream's ``DreamGenerationConfig`` that its sampler reads, with Dream's defaults.

    Attributes:
        temperature: ``0`` takes the argmax; ``T > 0`` samples from ``softmax(logits / T)``.
        top_p: nucleus filter (``None`` or ``>= 1``: off).
        top_k: top-k filter (``None``: off).
        max_length: total canvas length (prompt included). Left at 20 with no ``max_new_tokens``, the
            canvas is the prompt plus 20 tokens (capped at the model's ``max_position_embeddings``).
        max_new_tokens: tokens after the prompt; overrides ``max_length``.
        eps: the last time of ``linspace(1, eps, steps + 1)``.
        steps: denoising steps (Dream's; fastdiff runs only those that commit something).
        alg: ``"origin"``, ``"maskgit_plus"``, ``"topk_margin"``, ``"entropy"`` or Fast-dLLM's
            ``"confidence_threshold"``.
        alg_temp: ``None`` or ``0``: commit the best-scored positions; ``> 0``: sample them from
            ``softmax(score / alg_temp)``. Not used by ``origin`` and ``confidence_threshold``.
        num_return_sequences: samples per prompt (rows are repeated).
        return_dict_in_generate: return a :class:`DreamModelOutput` instead of the tensor.
        output_history: with ``return_dict_in_generate``, keep the canvas after every step.
        mask_token_id: the mask token; ``None``: the model's ``generation_config`` / ``config`` one.
        pad_token_id, bos_token_id, eos_token_id: accepted for compatibility; unused by the sampler
            (as in Dream).
    """

    temperature: float = 0.0
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    max_length: int = DEFAULT_MAX_LENGTH
    max_new_tokens: Optional[int] = None
    eps: float = 1e-3
    steps: int = 512
    alg: str = "origin"
    alg_temp: Optional[float] = None
    num_return_sequences: int = 1
    return_dict_in_generate: bool = False
    output_history: bool = False
    mask_token_id: Optional[int] = None
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None


_FIELDS = tuple(f.name for f in dataclasses.fields(DreamGenerationConfig))


@dataclass
class DreamModelOutput(ModelOutput):
    """What :func:`diffusion_generate` returns with ``return_dict_in_generate=True`` (as Dream's).

    Attributes:
        sequences: int64 ``[B, max_length]``.
        history: with ``output_history=True``, the canvas after each of Dream's ``steps`` steps, else ``None``.
    """

    sequences: torch.LongTensor = None
    history: Optional[List[torch.Tensor]] = None


class DreamModelRunner(WeakModelRunner):
    """Calls a model the way Dream's sampler does: ``attention_mask="full"`` without padding; with left
    padding a bool ``[B, 1, N, N]`` mask (query and key both real) and ``position_ids`` counting the real
    tokens from 0, pads at 1. Hugging Face models get them as ``model(input_ids=..., attention_mask=...,
    position_ids=...)``; plain callables as ``model(input_ids, attention_mask)``.

    It can be passed to :class:`fastdiff.Sampler` in place of a Dream model.
    """

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        attention = attention_mask.to(torch.int64)
        return torch.where(attention.bool(), attention.cumsum(dim=-1) - 1, torch.ones_like(attention))

    def __call__(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                 position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if attention_mask is None:
            mask = "full"
        else:
            real = attention_mask.bool()
            mask = real[:, None, None, :] & real[:, None, :, None]
        return super().__call__(input_ids, mask, position_ids)


@torch.no_grad()
def diffusion_generate(model, inputs: Optional[torch.Tensor] = None, generation_config=None, **kwargs):
    """Dream's ``diffusion_generate``, on fastdiff's sampler.

    Args:
        model: a Dream model (called as described in :class:`DreamModelRunner`, output with ``.logits``).
        inputs: int ``[B, P]`` prompt ids, left-padded when they differ in length. Mask tokens inside
            the prompt are filled too. Optional in the signature, as in Dream, and required all the same.
        generation_config: a :class:`DreamGenerationConfig`, Dream's own config object, any object with
            those attributes, or a dict of them; ``None``: the defaults. Keyword arguments override it.
        **kwargs: any :class:`DreamGenerationConfig` field, and
            ``attention_mask`` (``[B, P]`` of 0/1, 0 marking left padding),
            ``generation_tokens_hook_func(step, x, logits) -> x`` (called with ``step=None`` before the
            first step, then after each step that runs, with Dream's step index; returning ``None``
            keeps the canvas) and
            ``generation_logits_hook_func(step, x, logits) -> logits`` (on the shifted logits, before
            sampling). The bookkeeping arguments of Dream's config (``generation_kwargs``,
            ``_from_model_config``, ``_commit_hash``, ``transformers_version``) are accepted and unused.
            Fast-dLLM's keywords: ``threshold`` (default 0.9) and ``factor``, read by
            ``alg="confidence_threshold"`` only, ``block_length`` (that alg only), ``dual_cache`` and
            ``use_cache`` (accepted, no effect). Other unknown keywords are ignored with a warning (Dream
            ignores them silently), so a misspelt option does not pass unnoticed.

    Returns:
        int64 ``[B * num_return_sequences, max_length]`` on the model's device, or with
        ``return_dict_in_generate=True`` a :class:`DreamModelOutput` (``.sequences``, ``.history``).

    Raises:
        ValueError: ``max_length`` not above the prompt length, an unknown ``alg``, bad option values.
        TypeError: arguments of the wrong type.

    Example:
        >>> from fastdiff.compat.dream import diffusion_generate
        >>> out = diffusion_generate(model, input_ids, attention_mask=attention_mask,   # doctest: +SKIP
        ...                          max_new_tokens=256, steps=256, temperature=0.2, top_p=0.95,
        ...                          alg="entropy", alg_temp=0., return_dict_in_generate=True)
        >>> out.sequences.shape                                                          # doctest: +SKIP
    """
    attention_mask = kwargs.pop("attention_mask", None)
    fast_dllm = _fast_dllm_options(kwargs)
    tokens_hook = kwargs.pop("generation_tokens_hook_func", None)
    logits_hook = kwargs.pop("generation_logits_hook_func", None)
    for hook, name in ((tokens_hook, "generation_tokens_hook_func"), (logits_hook, "generation_logits_hook_func")):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable, got {type(hook).__name__}")
    config = _resolve_config(model, generation_config, kwargs)
    if inputs is None:
        raise ValueError("inputs must be given: the prompt ids [B, P] (Dream's diffusion_generate needs them too)")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of token ids, got {type(inputs).__name__}")
    if inputs.is_floating_point() or inputs.is_complex() or inputs.dtype == torch.bool:
        raise TypeError(f"inputs must hold integer token ids, got {inputs.dtype}")
    if inputs.dim() != 2:
        raise ValueError(f"inputs must have shape [B, P], got {tuple(inputs.shape)}")
    prompt_length = inputs.shape[1]
    max_length = _canvas_length(model, config, prompt_length, "max_length" in kwargs)
    sampler = _sampler(model, config, fast_dllm)
    device = sampler.runner.device or inputs.device

    # the canvas, as Dream builds it: rows repeated, then mask tokens up to max_length
    ids = inputs.to(device=device, dtype=torch.int64).repeat_interleave(config.num_return_sequences, dim=0)
    canvas = torch.nn.functional.pad(ids, (0, max_length - prompt_length), value=config.mask_token_id)
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
        if tuple(attention_mask.shape) != tuple(inputs.shape):
            raise ValueError(f"attention_mask must have shape {tuple(inputs.shape)}, got {tuple(attention_mask.shape)}")
        attention_mask = attention_mask.to(device=device, dtype=torch.int64)
        attention_mask = attention_mask.repeat_interleave(config.num_return_sequences, dim=0)
        attention_mask = torch.nn.functional.pad(attention_mask, (0, max_length - prompt_length), value=1)
    if tokens_hook is not None:
        hooked = tokens_hook(None, canvas, None)
        canvas = canvas if hooked is None else hooked
    keep_history = config.return_dict_in_generate and config.output_history

    masked = canvas == config.mask_token_id
    if attention_mask is not None:
        masked &= attention_mask.bool()
    row_masks = sorted(set(masked.sum(dim=-1).tolist()) - {0})
    if not row_masks:
        return _output(config, canvas, [canvas] * config.steps if keep_history else None)
    if config.alg == "confidence_threshold":
        return _confidence_threshold(sampler, config, canvas, attention_mask, tokens_hook, logits_hook, keep_history)

    counts = _step_counts(config, row_masks, canvas.device)
    ran = sorted({i for per_row in counts.values() for i, c in enumerate(per_row) if c})  # Dream steps that run
    if len(ran) > row_masks[-1]:
        raise ValueError(f"steps={config.steps} commit tokens on {len(ran)} different steps across rows with "
                         f"{row_masks} masks; use fewer steps or rows with the same number of masks")

    schedule = _PlannedCounts(tuple((m, tuple(per_step[i] for i in ran)) for m, per_step in counts.items()))
    overrides = dict(steps=len(ran), schedule=schedule, return_history=keep_history)
    if logits_hook is not None:
        overrides["logits_hook"] = lambda step, x, logits: logits_hook(ran[step], x, logits)
    if tokens_hook is not None:
        overrides["on_step"] = lambda step, x, logits: tokens_hook(ran[step], x, logits)
    out = sampler.infill(canvas, attention_mask=attention_mask, **overrides)
    history = _dream_history(out.history, ran, config.steps, canvas) if keep_history else None
    return _output(config, out.sequences, history)


def _confidence_threshold(sampler, config, canvas, attention_mask, tokens_hook, logits_hook, keep_history):
    """Fast-dLLM's ``alg="confidence_threshold"``: a step per hook index, history entry per step run."""
    overrides = dict(steps=config.steps, return_history=keep_history)
    if logits_hook is not None:
        overrides["logits_hook"] = logits_hook
    if tokens_hook is not None:
        overrides["on_step"] = tokens_hook
    out = sampler.infill(canvas, attention_mask=attention_mask, **overrides)
    return _output(config, out.sequences, out.history)


def _fast_dllm_options(kwargs: Dict) -> Dict:
    """Pop Fast-dLLM's keywords: ``threshold`` (default 0.9), ``factor``, ``block_length``, and the KV-cache
    switches, which change nothing here."""
    options = dict(threshold=kwargs.pop("threshold", FAST_DLLM_THRESHOLD), factor=kwargs.pop("factor", None),
                   block_length=kwargs.pop("block_length", None))
    for name in _KV_CACHE_OPTIONS:
        check_flag(kwargs.pop(name, False), name)
    if options["factor"] is not None:
        options["threshold"] = None
    return options


# what Dream's DreamGenerationConfig pops from its keywords and keeps without reading
_CONFIG_BOOKKEEPING = ("generation_kwargs", "_from_model_config", "_commit_hash", "transformers_version")


def _resolve_config(model, generation_config, overrides: Dict) -> DreamGenerationConfig:
    """Dream's config handling: defaults, then ``generation_config``, then keyword arguments; the mask
    token falls back to the model's ``generation_config`` / ``config``."""
    for name in _CONFIG_BOOKKEEPING:
        overrides.pop(name, None)
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        warnings.warn(f"diffusion_generate ignores the unknown argument(s) {', '.join(unknown)} (as Dream does)",
                      UserWarning, stacklevel=3)
        for name in unknown:
            del overrides[name]
    values = {}
    if isinstance(generation_config, Mapping):
        values = {name: generation_config[name] for name in _FIELDS if name in generation_config}
    elif generation_config is not None:
        values = {name: getattr(generation_config, name) for name in _FIELDS if hasattr(generation_config, name)}
    values.update(overrides)
    config = DreamGenerationConfig(**values)
    if config.mask_token_id is None:
        for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
            if getattr(source, "mask_token_id", None) is not None:
                config.mask_token_id = source.mask_token_id
                break
        else:
            raise ValueError("mask_token_id is not set: pass mask_token_id=..., or give the model a "
                             "generation_config / config with one")
    check_token_id(config.mask_token_id, "mask_token_id")
    check_positive_int(config.steps, "steps")
    check_positive_int(config.num_return_sequences, "num_return_sequences")
    if config.alg not in ALGS:
        raise ValueError(f"alg must be one of {ALGS}, got {config.alg!r}")
    if not _is_number(config.eps) or not 0 <= config.eps < 1:
        raise ValueError(f"eps must be a number in [0, 1), got {config.eps!r}")
    if config.alg_temp is not None and (not _is_number(config.alg_temp) or config.alg_temp < 0):
        raise ValueError(f"alg_temp must be None or a number >= 0, got {config.alg_temp!r}")
    check_flag(config.return_dict_in_generate, "return_dict_in_generate")
    check_flag(config.output_history, "output_history")
    return config


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _canvas_length(model, config: DreamGenerationConfig, prompt_length: int, max_length_given: bool) -> int:
    """The canvas length Dream's ``_prepare_generated_length`` gives."""
    if config.max_new_tokens is not None:
        check_positive_int(config.max_new_tokens, "max_new_tokens")
        return config.max_new_tokens + prompt_length
    check_positive_int(config.max_length, "max_length")
    length = config.max_length
    if not max_length_given and length == DEFAULT_MAX_LENGTH:
        length += prompt_length
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if isinstance(limit, int):
            length = min(length, limit)
    if prompt_length >= length:
        raise ValueError(f"the prompt has {prompt_length} tokens but max_length is {length}: raise max_length "
                         "or set max_new_tokens")
    return length


def _step_counts(config: DreamGenerationConfig, row_masks: Sequence[int], device) -> Dict[int, List[int]]:
    """Tokens committed at each of Dream's steps, for each number of masks a row starts with.

    Greedy algs: Dream's rule ``int(m * (1 - s / t))`` on the masks ``m`` left, all at the last step, with
    ``t, s`` from ``torch.linspace(1, eps, steps + 1)`` on the model's device and fp32 products, as Dream.
    ``origin``: each position's reveal step is independent with probability ``t_i - t_{i+1}`` (the last
    step takes ``t_last``), so the counts are multinomial; one draw of reveal steps serves every row (a
    row with ``m`` masks takes the first ``m`` draws), so the steps a row uses are among those of the
    largest row.
    """
    times = torch.linspace(1, config.eps, config.steps + 1, device=device)
    if config.alg == "origin":
        t = times[:-1].double().cpu()
        law = torch.cat([t[:-1] - t[1:], t[-1:]]).clamp(min=0)
        draws = torch.multinomial(law, row_masks[-1], replacement=True)
        return {m: torch.bincount(draws[:m], minlength=config.steps).tolist() for m in row_masks}
    ratios = (1 - times[1:] / times[:-1]).cpu().numpy()  # fp32, as Dream computes 1 - s / t
    counts = {}
    for m in row_masks:
        left, per_step = m, []
        for i, ratio in enumerate(ratios):
            k = left if i == config.steps - 1 else int(np.float32(left) * ratio)
            per_step.append(k)
            left -= k
        counts[m] = per_step
    return counts


@dataclass(frozen=True)
class _PlannedCounts:
    """A :class:`~fastdiff.SamplerConfig` ``schedule``: the planned counts of the steps that run, for each
    number of masks a row starts with. Equal plans compare equal, so repeated calls give equal configs."""

    counts: Tuple[Tuple[int, Tuple[int, ...]], ...]

    def __call__(self, n_tokens: int, n_steps: int) -> List[int]:
        return list(dict(self.counts)[n_tokens])


def _sampler(model, config: DreamGenerationConfig, fast_dllm: Dict) -> Sampler:
    alg_temp = config.alg_temp or 0.0
    settings = dict(
        unmask=_UNMASK[config.alg],
        position_temperature=alg_temp if config.alg not in ("origin", "confidence_threshold") else 0.0,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p if config.top_p is None or config.top_p < 1 else None,  # Dream: top_p >= 1 is off
        logits_shift=True,
    )
    if config.alg == "confidence_threshold":  # the commit cap and step-on of Fast-dLLM's loop without blocks
        settings.update(threshold=fast_dllm["threshold"], factor=fast_dllm["factor"],
                        block_length=fast_dllm["block_length"], schedule_cap=fast_dllm["block_length"] is None)
    else:
        for name in ("factor", "block_length"):
            if fast_dllm[name] is not None:
                raise ValueError(f"{name} works with alg='confidence_threshold' (Fast-dLLM's parallel decoding), "
                                 f"not alg={config.alg!r}")
    return cached_sampler(model, "dream", lambda: DreamModelRunner(model), config.mask_token_id, settings)


def _dream_history(history: List[torch.Tensor], ran: Sequence[int], steps: int,
                   start: torch.Tensor) -> List[torch.Tensor]:
    """One canvas per Dream step: a step that was not run repeats the canvas before it."""
    after = dict(zip(ran, history))
    expanded, current = [], start
    for i in range(steps):
        current = after.get(i, current)
        expanded.append(current)
    return expanded


def _output(config: DreamGenerationConfig, sequences: torch.Tensor, history: Optional[List[torch.Tensor]]):
    if config.return_dict_in_generate:
        return DreamModelOutput(sequences=sequences, history=history)
    return sequences


__all__ = ["diffusion_generate", "DreamGenerationConfig", "DreamModelOutput", "DreamModelRunner", "ALGS"]
