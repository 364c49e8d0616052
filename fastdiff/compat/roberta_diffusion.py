"""The RoBERTa-diffusion samplers of Nathan Barry's RoBERTaDiffusion, on fastdiff.

For a RoBERTa (any ``*ForMaskedLM``) fine-tuned to unmask text at every mask ratio. The canvas holds
``PREFIX_LEN`` fixed tokens (the prompt's first tokens, or the whole prompt left-padded with the pad
token; pads are ordinary tokens of the canvas, attended to) and mask tokens up to ``MAX_LEN``.

**Drop-ins.** :func:`prepare_prompt` and :func:`generate` have the signatures, defaults and return
values of the repository's ``inference.prepare_prompt`` and ``inference.generate`` (``generate(model,
tokenizer, initial_ids, attention_mask, config, device, collect_snapshots=False) -> (final_ids,
snapshots, elapsed)``), and :class:`Config` holds the settings of its ``config.Config`` that they read.
The ``config`` chooses the sampler:

* the repository's ``Config`` (``CONFIDENCE_THRESHOLD``, ``TEMPERATURE``): its confidence-aware
  parallel decoding. Each step commits the argmax token at every masked position whose confidence
  (probability of that token under ``softmax(logits / TEMPERATURE)``) is at least the threshold, and at
  least the most confident position of each row, until nothing is masked. Token-exact with the
  original on models that give the mask token zero probability (its softmax includes the mask token,
  fastdiff's does not);
* a config with ``N_STEPS``, such as :class:`BlogConfig` (prefix 16, 10 steps, top-k 50, top-p 0.95):
  the blog post's sampler ("BERT is just a Single Text Diffusion Step", a script there). Step ``j`` of
  ``N`` draws a token at every generated position from the top-k / top-p filtered softmax at
  temperature 1, visible or not, then masks each position again, independently, with probability
  ``(N - 1 - j) / N``; the last step keeps every drawn token. This is fastdiff's
  ``unmask="resample"`` with ``transfer_counts="binomial"``: the same law (a binomial count of
  positions chosen uniformly is an independent coin per position). It differs from the blog only
  where the top-p cut meets an exact tie (fastdiff keeps a token when the tokens above it hold less
  than ``top_p``, the blog when they hold at most ``top_p``) and in never drawing the mask token,
  which the blog's softmax can.

Random draws come from fastdiff's counter-based generator seeded from torch's default generator, so
``torch.manual_seed`` makes a call reproducible, but the tokens differ from the original's draws.
Ties go to the lowest index: the lowest token id among equal logits, the leftmost position among
equal scores. The originals' ``torch.max`` / ``argmax`` leave the order among equal values
unspecified, so where scores tie (saturated models, one-token nuclei) the tokens can differ; without
ties the greedy tokens are the same.

**fastdiff-style functions**, taking prompt ids and returning a :class:`fastdiff.GenerationOutput`:
:func:`generate_confident` (the confidence sampler, prefix 32) and :func:`generate_ancestral`,
fastdiff's reveal-once variant of the blog's sampler (``unmask="ancestral"``): each masked position
is revealed at step ``j`` with probability ``1 - r_j / r_{j-1}``, so after step ``j`` each generated
position is still masked with probability ``r_j``, as in the blog, but a revealed token is never
drawn again and the masked sets shrink (MDLM / SEDD ancestral sampling); only the masked-count law
is shared with the blog.
"""
from __future__ import annotations

import time
from typing import List, Optional, Sequence, Tuple, Union

import torch

from fastdiff.compat import WeakModelRunner, cached_sampler
from fastdiff.validation import check_attention, check_flag, check_positive_int, check_token_id
from fastdiff.sampler import GenerationOutput

BLOG_CANVAS_LENGTH = 256
BLOG_PREFIX_LENGTH = 16
BLOG_STEPS = 10
BLOG_TOP_K = 50
BLOG_TOP_P = 0.95
CONFIDENT_PREFIX_LENGTH = 32
CONFIDENT_THRESHOLD = 0.9
CONFIDENT_TEMPERATURE = 0.8


class Config:
    """The settings of the repository's ``config.Config`` that :func:`generate` and
    :func:`prepare_prompt` read, with its values: the confidence sampler. Any object with these
    attributes will do, the repository's own ``Config()`` among them."""

    PREFIX_LEN: int = CONFIDENT_PREFIX_LENGTH
    MAX_LEN: int = BLOG_CANVAS_LENGTH
    CONFIDENCE_THRESHOLD: float = CONFIDENT_THRESHOLD
    TEMPERATURE: float = CONFIDENT_TEMPERATURE


class BlogConfig:
    """The blog post's settings (module-level constants of its script): with ``N_STEPS`` set,
    :func:`generate` runs the blog's resample and re-mask sampler."""

    PREFIX_LEN: int = BLOG_PREFIX_LENGTH
    MAX_LEN: int = BLOG_CANVAS_LENGTH
    N_STEPS: int = BLOG_STEPS
    TOP_K: int = BLOG_TOP_K
    TOP_P: float = BLOG_TOP_P
    TEMPERATURE: float = 1.0


Prompt = Union[torch.Tensor, Sequence[int], Sequence[Sequence[int]], Sequence[torch.Tensor]]


def prepare_prefix(prompt_ids: Prompt, pad_token_id: int, prefix_length: int = BLOG_PREFIX_LENGTH) -> torch.Tensor:
    """The fixed prefix of each canvas: a prompt's first ``prefix_length`` tokens, or the whole prompt
    left-padded with ``pad_token_id``.

    Args:
        prompt_ids: one prompt (a 1-D tensor or a list of ids), or several (a list of them, of any
            lengths, or a 2-D tensor whose rows are whole prompts).
        pad_token_id: the pad token.
        prefix_length: tokens in each prefix.

    Returns:
        int64 ``[B, prefix_length]``.

    Example:
        >>> prepare_prefix([0, 11, 12, 2], pad_token_id=1, prefix_length=6).tolist()
        [[1, 1, 0, 11, 12, 2]]
    """
    check_token_id(pad_token_id, "pad_token_id")
    check_positive_int(prefix_length, "prefix_length")
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.is_floating_point() or prompt_ids.is_complex() or prompt_ids.dtype == torch.bool:
            raise TypeError(f"prompt_ids must hold integer token ids, got {prompt_ids.dtype}")
        if prompt_ids.dim() not in (1, 2):
            raise ValueError(f"prompt_ids must have shape [P] or [B, P], got {tuple(prompt_ids.shape)}")
        rows = list(prompt_ids) if prompt_ids.dim() == 2 else [prompt_ids]
    elif isinstance(prompt_ids, (list, tuple)) and prompt_ids and all(isinstance(i, int) for i in prompt_ids):
        rows = [prompt_ids]
    elif isinstance(prompt_ids, (list, tuple)) and prompt_ids:
        rows = list(prompt_ids)
    else:
        raise TypeError("prompt_ids must be a tensor of ids, a list of ids, or a non-empty list of those")
    prefixes = []
    for row in rows:
        row = torch.as_tensor(row, dtype=torch.int64).reshape(-1)
        if row.numel() and int(row.min()) < 0:
            raise ValueError("prompt_ids must not hold negative ids")
        row = row[:prefix_length]
        pad = torch.full((prefix_length - row.numel(),), pad_token_id, dtype=torch.int64)
        prefixes.append(torch.cat([pad, row.cpu()]))
    return torch.stack(prefixes)


def prepare_prompt(prompt_text: str, tokenizer, prefix_len: int, max_len: int,
                   device: Union[str, torch.device]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The repository's ``inference.prepare_prompt``: the canvas of one prompt and its attention mask.

    The prompt is tokenized with the tokenizer's special tokens, cut to its first ``prefix_len`` tokens
    or left-padded to them with the pad token (the EOS token if there is none); the other ``max_len -
    prefix_len`` positions hold the mask token.

    Args:
        prompt_text: the prompt.
        tokenizer: a Hugging Face tokenizer with a mask token.
        prefix_len: tokens of the fixed prefix.
        max_len: tokens of the canvas.
        device: where the tensors go.

    Returns:
        ``(input_ids, attention_mask)``, int64 ``[1, max_len]`` each; the attention mask is all ones.

    Example:
        >>> ids, attention = prepare_prompt("The sky is", tokenizer, 32, 256, "cpu")  # doctest: +SKIP
    """
    if not isinstance(prompt_text, str):
        raise TypeError(f"prompt_text must be a str, got {type(prompt_text).__name__}")
    check_positive_int(prefix_len, "prefix_len")
    check_positive_int(max_len, "max_len")
    if prefix_len >= max_len:
        raise ValueError(f"prefix_len ({prefix_len}) must be smaller than max_len ({max_len})")
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if not callable(tokenizer) or mask_id is None:
        raise TypeError("tokenizer must be a Hugging Face tokenizer with a mask token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad the prompt with")
    prompt = list(tokenizer(prompt_text, truncation=False, padding=False)["input_ids"])
    canvas = torch.full((1, max_len), mask_id, dtype=torch.int64)
    canvas[0, :prefix_len] = prepare_prefix(prompt, pad_id, prefix_len)[0] if prompt else pad_id
    return canvas.to(device), torch.ones((1, max_len), dtype=torch.int64, device=device)


@torch.no_grad()
def generate(model, tokenizer, initial_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], config,
             device: Union[str, torch.device, None], collect_snapshots: bool = False
             ) -> Tuple[torch.Tensor, List[str], float]:
    """The repository's ``inference.generate``: the sampler ``config`` names (module docstring), on fastdiff.

    Args:
        model: a ``*ForMaskedLM`` (or a callable ``(input_ids, attention_mask) -> logits``).
        tokenizer: its tokenizer (the mask token, and the snapshots' text).
        initial_ids: int64 ``[B, L]``, as :func:`prepare_prompt` makes them: ``config.PREFIX_LEN``
            fixed tokens (no mask token among them), then mask tokens.
        attention_mask: ``[B, L]``, ones (zeros allowed only as left padding of the prefix), or None.
        config: :class:`Config` or the repository's ``Config()`` (confidence decoding: reads
            ``PREFIX_LEN``, ``CONFIDENCE_THRESHOLD``, ``TEMPERATURE``), or :class:`BlogConfig` or any config
            with ``N_STEPS`` (the blog's resample and re-mask: also reads ``TOP_K``, ``TOP_P`` and
            ``TEMPERATURE``, defaults 50, 0.95 and 1).
        device: accepted for the signature; everything stays on ``initial_ids``' device.
        collect_snapshots: also return the text of the first row before the first step and after each
            step, decoded with special tokens and the leading ``<s>`` cut (``[3:]``), as the original.

    Returns:
        ``(final_ids, snapshots, elapsed)``: int64 ``[B, L]`` on ``initial_ids``' device, a list of str
        (empty without ``collect_snapshots``), and the sampling time in seconds (snapshot decoding
        excluded).

    Example:
        >>> ids, attention = prepare_prompt("The sky is", tokenizer, 32, 256, "cpu")    # doctest: +SKIP
        >>> final, snapshots, seconds = generate(model, tokenizer, ids, attention, Config(), "cpu")  # doctest: +SKIP
    """
    check_flag(collect_snapshots, "collect_snapshots")
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise TypeError("tokenizer must be a Hugging Face tokenizer with a mask token")
    settings, prefix_len = _settings_of(config)
    if (not isinstance(initial_ids, torch.Tensor) or initial_ids.dim() != 2 or initial_ids.is_floating_point()
            or initial_ids.dtype == torch.bool):
        raise TypeError("initial_ids must be an int64 tensor [B, L], as prepare_prompt makes it")
    if prefix_len >= initial_ids.shape[1]:
        raise ValueError(f"config.PREFIX_LEN ({prefix_len}) must be smaller than initial_ids' length "
                         f"({initial_ids.shape[1]})")
    prefix, generated = initial_ids[:, :prefix_len], initial_ids[:, prefix_len:]
    if bool((generated != mask_id).any()):
        raise ValueError(f"initial_ids must hold the mask token ({mask_id}) at every position from "
                         f"config.PREFIX_LEN={prefix_len} on, as prepare_prompt makes it")
    if bool((prefix == mask_id).any()):
        raise ValueError(f"initial_ids' first config.PREFIX_LEN={prefix_len} positions must not hold the mask token")
    prefix_attention = None
    if attention_mask is not None:
        attention_mask = check_attention(attention_mask, tuple(initial_ids.shape), "attention_mask")
        if not bool((attention_mask[:, prefix_len:] == 1).all()):
            raise ValueError("attention_mask must be 1 at the generated positions (zeros: left padding of the prefix)")
        if not bool((attention_mask == 1).all()):
            prefix_attention = attention_mask[:, :prefix_len].to(torch.int64)
    sampler = cached_sampler(model, "roberta_diffusion", lambda: WeakModelRunner(model), mask_id, settings)
    if initial_ids.is_cuda:
        torch.cuda.synchronize(initial_ids.device)
    start = time.perf_counter()
    out = sampler.generate(prefix, gen_length=initial_ids.shape[1] - prefix_len, attention_mask=prefix_attention,
                           return_history=collect_snapshots)
    if initial_ids.is_cuda:
        torch.cuda.synchronize(initial_ids.device)
    elapsed = time.perf_counter() - start
    snapshots = []
    if collect_snapshots:
        snapshots = [tokenizer.decode(canvas[0], skip_special_tokens=False, clean_up_tokenization_spaces=True)[3:]
                     for canvas in [initial_ids] + list(out.history)]
    return out.sequences, snapshots, elapsed


def _settings_of(config) -> Tuple[dict, int]:
    """The Sampler settings and the prefix length a drop-in ``config`` names."""
    def read(name, default=None):
        value = getattr(config, name, default)
        if value is None:
            raise TypeError(f"config must have {name} (see fastdiff.compat.roberta_diffusion.Config / BlogConfig)")
        return value

    prefix_len = read("PREFIX_LEN")
    check_positive_int(prefix_len, "config.PREFIX_LEN")
    if getattr(config, "N_STEPS", None) is not None:
        steps = read("N_STEPS")
        check_positive_int(steps, "config.N_STEPS")
        return dict(unmask="resample", transfer_counts="binomial", schedule="linear", steps=steps,
                    temperature=read("TEMPERATURE", 1.0), top_k=getattr(config, "TOP_K", BLOG_TOP_K),
                    top_p=getattr(config, "TOP_P", BLOG_TOP_P)), prefix_len
    return dict(unmask="confidence", threshold=read("CONFIDENCE_THRESHOLD"), temperature=0.0,
                score_temperature=read("TEMPERATURE")), prefix_len


@torch.no_grad()
def generate_ancestral(model, prompt_ids: Prompt, *, mask_token_id: int, pad_token_id: int,
             canvas_length: int = BLOG_CANVAS_LENGTH, prefix_length: int = BLOG_PREFIX_LENGTH,
             steps: int = BLOG_STEPS, top_k: Optional[int] = BLOG_TOP_K, top_p: Optional[float] = BLOG_TOP_P,
             temperature: float = 1.0, seed: Optional[int] = None, return_history: bool = False) -> GenerationOutput:
    """fastdiff's reveal-once variant of the blog post's sampler (module docstring: how it differs).

    Args:
        model: a ``*ForMaskedLM`` (or a callable ``(input_ids, attention_mask) -> logits``).
        prompt_ids: the prompt(s) (see :func:`prepare_prefix`), with the tokenizer's special tokens.
        mask_token_id, pad_token_id: the tokenizer's mask and pad ids.
        canvas_length: total tokens (prefix + generated).
        prefix_length: the fixed prefix.
        steps: denoising steps; step ``j`` (1-based) leaves a fraction ``1 - j / steps`` masked.
        top_k, top_p: token filters, top-k first (``None``: off).
        temperature: token temperature (``0``: argmax).
        seed: the same seed gives the same output; ``None`` draws one from torch's generator.
        return_history: keep the canvas after every step.

    Returns:
        :class:`fastdiff.GenerationOutput`; ``sequences`` is int64 ``[B, canvas_length]``.

    Example:
        >>> ids = tokenizer("The meaning of life is")["input_ids"]                    # doctest: +SKIP
        >>> out = generate_ancestral(model, ids, mask_token_id=tokenizer.mask_token_id,  # doctest: +SKIP
        ...                          pad_token_id=tokenizer.pad_token_id)
        >>> tokenizer.decode(out.sequences[0], skip_special_tokens=True)             # doctest: +SKIP
    """
    settings = dict(unmask="ancestral", schedule="linear", steps=steps, temperature=temperature, top_k=top_k,
                    top_p=top_p)
    return _run(model, prompt_ids, mask_token_id, pad_token_id, canvas_length, prefix_length, settings,
                seed=seed, return_history=return_history)


@torch.no_grad()
def generate_confident(model, prompt_ids: Prompt, *, mask_token_id: int, pad_token_id: int,
                       canvas_length: int = BLOG_CANVAS_LENGTH, prefix_length: int = CONFIDENT_PREFIX_LENGTH,
                       threshold: float = CONFIDENT_THRESHOLD, temperature: float = CONFIDENT_TEMPERATURE,
                       return_history: bool = False) -> GenerationOutput:
    """The later confidence-threshold RoBERTa-diffusion sampler (see the module docstring).

    Args:
        model: a ``*ForMaskedLM`` (or a callable ``(input_ids, attention_mask) -> logits``).
        prompt_ids: the prompt(s) (see :func:`prepare_prefix`), with the tokenizer's special tokens.
        mask_token_id, pad_token_id: the tokenizer's mask and pad ids.
        canvas_length: total tokens (prefix + generated).
        prefix_length: the fixed prefix.
        threshold: commit every masked position whose confidence is at least this (at least one per row).
        temperature: the temperature the confidence is measured at; tokens are always the argmax.
        return_history: keep the canvas after every step.

    Returns:
        :class:`fastdiff.GenerationOutput`; ``sequences`` is int64 ``[B, canvas_length]``; ``nfe`` is the
        number of steps the loop took.
    """
    settings = dict(unmask="confidence", threshold=threshold, temperature=0.0, score_temperature=temperature)
    return _run(model, prompt_ids, mask_token_id, pad_token_id, canvas_length, prefix_length, settings,
                seed=None, return_history=return_history)


def _run(model, prompt_ids, mask_token_id: int, pad_token_id: int, canvas_length: int, prefix_length: int,
         settings: dict, *, seed, return_history: bool) -> GenerationOutput:
    check_token_id(mask_token_id, "mask_token_id")
    check_positive_int(canvas_length, "canvas_length")
    prefix = prepare_prefix(prompt_ids, pad_token_id, prefix_length)
    if canvas_length <= prefix_length:
        raise ValueError(f"canvas_length ({canvas_length}) must exceed prefix_length ({prefix_length})")
    sampler = cached_sampler(model, "roberta_diffusion", lambda: WeakModelRunner(model), mask_token_id, settings)
    return sampler.generate(prefix, gen_length=canvas_length - prefix_length, seed=seed,
                            return_history=return_history)


__all__ = ["BlogConfig", "Config", "generate", "generate_ancestral", "generate_confident", "prepare_prefix",
           "prepare_prompt"]
