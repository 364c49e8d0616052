"""The RoBERTa-diffusion samplers of Nathan Barry's RoBERTaDiffusion (``inference.py``), on fastdiff.

For a RoBERTa (any ``*ForMaskedLM``) fine-tuned to unmask text at every mask ratio. Both samplers fill a
canvas of ``canvas_length`` tokens whose first ``prefix_length`` hold the prompt (its first tokens, or
the whole prompt left-padded with the pad token; pads are ordinary tokens of the canvas, attended to),
the rest mask tokens. The model runs on the whole canvas with no attention mask.

Ties go to the lowest index: the lowest token id among equal logits, the leftmost position among equal
scores. The blog's ``torch.topk`` / ``argmax`` leave the order among equal values unspecified, so where
scores tie (saturated models, CFG-amplified logits, one-token nuclei) the tokens can differ from the
blog's; without ties the greedy tokens are the same.

:func:`generate` is the blog post's sampler ("BERT is just a Single Text Diffusion Step"): canvas 256,
prefix 16, 10 steps whose mask ratio goes 0.9, 0.8, ..., 0.1, 0; tokens are sampled at temperature 1
from the top-50 tokens cut to the 0.95 nucleus. In the blog's loop every step draws a token at every
generated position, then masks each position again with probability equal to the step's mask ratio,
at random; the last step (ratio 0) keeps every drawn token. fastdiff expresses it as ancestral
unmasking (``unmask="ancestral"``, linear schedule): at each step every masked position is revealed
with probability ``1 - r_j / r_{j-1}``, so after step ``j`` each generated position is still masked with
probability ``r_j``, exactly as in the blog, and revealed positions keep their token. The differences:

* the blog draws every generated position again at every step (a token shown at one step can change
  at the next), and its masked positions are a fresh random set at each step; fastdiff commits each
  token once, and the masked sets shrink (MDLM / SEDD ancestral sampling). The number of positions
  masked after step ``j`` has the same law (binomial with ratio ``r_j``) in both;
* with ``canvas_length - prefix_length`` not a multiple of ``steps`` the masked fractions are the
  linear schedule's integer counts, within one token of ``r_j``;
* the top-p cut keeps a token when the tokens above it hold less than ``top_p`` (the blog: at most
  ``top_p``): they differ only on an exact tie;
* the blog can draw the mask token; fastdiff never does.

:func:`generate_confident` is the later sampler of the same repository (confidence-aware parallel
decoding): each step commits the argmax token at every masked position whose confidence (probability
of that token under ``softmax(logits / 0.8)``) is at least 0.9, and at least the most confident
position of each row, until nothing is masked. Its prefix defaults to that code's 32 tokens. It is
token-exact with the reference on models that give the mask token zero probability (the reference's
softmax includes the mask token, fastdiff's does not).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from fastdiff.compat import WeakModelRunner, cached_sampler
from fastdiff.validation import check_positive_int, check_token_id
from fastdiff.sampler import GenerationOutput

BLOG_CANVAS_LENGTH = 256
BLOG_PREFIX_LENGTH = 16
BLOG_STEPS = 10
BLOG_TOP_K = 50
BLOG_TOP_P = 0.95
CONFIDENT_PREFIX_LENGTH = 32
CONFIDENT_THRESHOLD = 0.9
CONFIDENT_TEMPERATURE = 0.8

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


@torch.no_grad()
def generate(model, prompt_ids: Prompt, *, mask_token_id: int, pad_token_id: int,
             canvas_length: int = BLOG_CANVAS_LENGTH, prefix_length: int = BLOG_PREFIX_LENGTH,
             steps: int = BLOG_STEPS, top_k: Optional[int] = BLOG_TOP_K, top_p: Optional[float] = BLOG_TOP_P,
             temperature: float = 1.0, seed: Optional[int] = None, return_history: bool = False) -> GenerationOutput:
    """The blog post's RoBERTa-diffusion sampler (module docstring: what it does, how fastdiff differs).

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
        >>> out = generate(model, ids, mask_token_id=tokenizer.mask_token_id,         # doctest: +SKIP
        ...                pad_token_id=tokenizer.pad_token_id)
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


__all__ = ["generate", "generate_confident", "prepare_prefix"]
