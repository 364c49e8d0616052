"""LLaDA's ``generate`` on fastdiff.

:func:`generate` has the signature, defaults and return value of ``generate`` in LLaDA's
``generate.py`` (ML-GSAI/LLaDA): replace ``from generate import generate`` with
``from fastdiff.compat.llada import generate``.

Ties go to the lowest index: the lowest token id among equal logits, the leftmost position among equal
scores. LLaDA's ``torch.topk`` / ``argmax`` leave the order among equal values unspecified, so where
scores tie (saturated models, CFG-amplified logits, one-token nuclei) the tokens can differ from
LLaDA's; without ties the greedy tokens are the same.

The algorithm, as LLaDA runs it: the canvas is the prompt followed by ``gen_length`` mask tokens, cut
into blocks of ``block_length`` filled left to right, with ``steps / num_blocks`` steps per block. At
each step the model runs on the whole canvas; every masked position of the current block draws a
token (argmax at ``temperature=0``, else a sample from ``softmax(logits / temperature)``), and the
positions with the highest confidence (``low_confidence``: the untempered probability of the drawn
token; ``random``: uniform) are committed: ``n // k`` per step for a block of ``n`` masked tokens and
``k`` steps, the remainder ``n % k`` one each on the first steps. With ``cfg_scale > 0`` the logits are
``u + (s + 1)(c - u)``, the unconditional input being the canvas with the prompt masked, both in one
batched forward.

Where fastdiff differs from the reference code:

* ``confidence_eos_eot_inf=True``: the reference writes ``-inf`` into the logits rather than into the
  confidence of the positions that drew EOS / EoT. At ``temperature > 0`` it writes EOS's ``-inf`` into
  the noisy logits, after the token was drawn, so the confidence of EOS is not suppressed at all (only
  EoT's is); at ``temperature=0`` the noisy logits are the logits, so both get probability 0, but by
  removing them from the softmax, which also changes every other position's confidence. fastdiff does
  what the flag means (LLaDA paper, appendix B.4): positions that drew EOS (126081) or EoT (126348) get
  the lowest confidence and are committed after every other position of the block, and nothing else
  changes. Greedy runs with this flag may therefore differ from the reference.
* ``cfg_scale > 0`` with ``attention_mask=None`` raises in the reference (``attention_mask_`` is never
  set); fastdiff runs it (no padding).
* The reference asserts ``gen_length % block_length == 0`` and ``steps % num_blocks == 0``; fastdiff
  raises ``ValueError`` naming ``block_length`` / ``steps``. Mask tokens inside the prompt, or padding
  that is not left padding, raise ``ValueError`` too.
* Steps beyond the block's tokens (``steps / num_blocks > block_length``) commit nothing in the
  reference, which still runs the model for them; fastdiff does not run them. Same tokens, fewer
  forward passes.
* The reference can draw the mask token itself and measures confidence on a softmax that includes it;
  fastdiff never draws the mask token and measures confidence over the other tokens. Models trained as
  LLaDA give the mask token (near) zero probability; on a model that gives it exactly zero (in fp32)
  the two agree.
* With ``cfg_scale > 0`` and left padding, the reference masks the pad positions of the unconditional
  input as well; fastdiff keeps them as they are. The model masks pad positions out of attention
  either way, so this only matters for models that number positions from the token ids.
* The reference computes the softmax (and the guidance) in the logits' dtype: bf16 for the released
  models, which makes coarse confidences with many ties; fastdiff always works in fp32, so greedy runs
  of a bf16 model can differ. (Older versions of the reference used float64.)
* At ``temperature > 0`` the random streams differ (fastdiff draws with its counter-based Gumbel
  noise): same distribution, not the same samples. ``torch.manual_seed`` still makes runs repeat.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from fastdiff.compat import WeakModelRunner, cached_sampler
from fastdiff.validation import check_flag, check_positive_int, check_token_id

LLADA_MASK_ID = 126336
LLADA_EOS_ID = 126081
LLADA_EOT_ID = 126348
REMASKING = ("low_confidence", "random")


@torch.no_grad()
def _check_blocks(steps, gen_length, block_length) -> None:
    """LLaDA's asserts, as ValueErrors naming the arguments."""
    for value, name in ((steps, "steps"), (gen_length, "gen_length"), (block_length, "block_length")):
        check_positive_int(value, name)
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({num_blocks} = "
                         f"gen_length / block_length)")


def generate(model, prompt: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, steps: int = 128,
             gen_length: int = 128, block_length: int = 128, temperature: float = 0., cfg_scale: float = 0.,
             remasking: str = "low_confidence", mask_id: int = LLADA_MASK_ID, logits_eos_inf: bool = False,
             confidence_eos_eot_inf: bool = False, threshold: Optional[float] = None,
             factor: Optional[float] = None) -> torch.Tensor:
    """LLaDA's masked-diffusion generation, on fastdiff's sampler.

    Args:
        model: the mask predictor: a Hugging Face model called as ``model(input_ids, attention_mask=...)``
            whose output has ``.logits`` (LLaDA's), or any callable ``(input_ids, attention_mask) -> logits``.
            It numbers positions itself: no ``position_ids`` are passed, as in LLaDA.
        prompt: int ``[B, P]``, left-padded when the prompts differ in length.
        attention_mask: ``[B, P]`` of 0/1 (0: padding, left or right; a right-padded row comes back
            left-padded), or ``None``.
        steps: forward passes in all, split evenly across blocks; a multiple of the number of blocks.
        gen_length: tokens to generate; a multiple of ``block_length``.
        block_length: semi-autoregressive block length (``gen_length``: one block).
        temperature: ``0`` takes the argmax; ``T > 0`` samples from ``softmax(logits / T)``.
        cfg_scale: classifier-free guidance scale ``s >= 0`` (``0``: off).
        remasking: ``"low_confidence"`` or ``"random"``: which masked positions are committed.
        mask_id: the mask token id.
        logits_eos_inf: never draw EOS (token 126081).
        confidence_eos_eot_inf: commit positions that drew EOS (126081) or EoT (126348) last in their
            block (see the module docstring for how this differs from the reference code).
        threshold: Fast-dLLM's confidence-aware parallel decoding: each step commits the most confident
            masked position of the block and every other one whose confidence is ``>= threshold``, until
            the block is full (``steps`` then only has to divide into the blocks).
        factor: Fast-dLLM's factor-based parallel decoding (see ``SamplerConfig.factor``), in place of
            ``threshold``.

    Returns:
        int64 ``[B, P + gen_length]``: the prompt (padding included) and the generated tokens, on the
        model's device.

    Raises:
        ValueError: ``gen_length`` not a multiple of ``block_length``, ``steps`` not a multiple of the
            number of blocks, an unknown ``remasking``, a bad prompt or mask (naming the argument).
        TypeError: arguments of the wrong type.

    Example:
        >>> from fastdiff.compat.llada import generate
        >>> out = generate(model, input_ids, attention_mask, steps=128, gen_length=128,  # doctest: +SKIP
        ...                block_length=32, temperature=0., cfg_scale=0., remasking="low_confidence")
        >>> tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)  # doctest: +SKIP
    """
    _check_blocks(steps, gen_length, block_length)
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    check_flag(logits_eos_inf, "logits_eos_inf")
    check_flag(confidence_eos_eot_inf, "confidence_eos_eot_inf")
    check_token_id(mask_id, "mask_id")

    settings = dict(
        temperature=temperature,
        score_temperature=1.0,  # LLaDA's confidence is the untempered probability of the drawn token
        unmask="confidence" if remasking == "low_confidence" else "random",
        cfg_scale=cfg_scale,
        suppress_token_ids=(LLADA_EOS_ID,) if logits_eos_inf else (),
        defer_token_ids=(LLADA_EOS_ID, LLADA_EOT_ID) if confidence_eos_eot_inf and remasking == "low_confidence"
        else (),
    )
    out = _run(model, prompt, attention_mask, steps, gen_length, block_length, mask_id, settings, threshold, factor)
    return out.sequences


def fast_dllm_generate(model, prompt: torch.Tensor, steps: int = 128, gen_length: int = 128, block_length: int = 128,
                       temperature: float = 0., remasking: str = "low_confidence", mask_id: int = LLADA_MASK_ID,
                       threshold: Optional[float] = None, factor: Optional[float] = None,
                       step_callback: Optional[Callable[[int], None]] = None) -> Tuple[torch.Tensor, int]:
    """Fast-dLLM's LLaDA ``generate`` (NVlabs/Fast-dLLM, ``llada/generate.py``): its signature, defaults and
    return value ``(x, nfe)``; also what its ``generate_with_prefix_cache`` / ``generate_with_dual_cache``
    approximate with KV caches (fastdiff runs the whole canvas every step, the uncached computation).

    Args:
        model, prompt, steps, gen_length, block_length, temperature, remasking, mask_id, threshold, factor:
            as in :func:`generate` (no attention mask: Fast-dLLM's prompts are not padded).
        step_callback: ``step_callback(i)`` after each step that runs, ``i`` counting from 0.

    Returns:
        ``(x, nfe)``: int64 ``[B, P + gen_length]`` and the forward passes run.

    Example:
        >>> from fastdiff.compat.llada import fast_dllm_generate
        >>> out, nfe = fast_dllm_generate(model, input_ids, steps=128, gen_length=256,  # doctest: +SKIP
        ...                               block_length=32, threshold=0.9)
    """
    if step_callback is not None and not callable(step_callback):
        raise TypeError(f"step_callback must be callable, got {type(step_callback).__name__}")
    _check_blocks(steps, gen_length, block_length)
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    check_token_id(mask_id, "mask_id")
    settings = dict(temperature=temperature, score_temperature=1.0,
                    unmask="confidence" if remasking == "low_confidence" else "random")
    progress = (lambda step, planned: step_callback(step - 1)) if step_callback is not None else None
    out = _run(model, prompt, None, steps, gen_length, block_length, mask_id, settings, threshold, factor,
               progress=progress)
    return out.sequences, out.nfe


def _run(model, prompt, attention_mask, steps, gen_length, block_length, mask_id, settings, threshold, factor,
         progress=None):
    """The cached sampler's generation; with ``threshold`` or ``factor`` the budget is a step per token
    (each step commits at least one, so no block is ever forced, as in Fast-dLLM's loop until full)."""
    adaptive = threshold is not None or factor is not None
    sampler = cached_sampler(model, "llada", lambda: WeakModelRunner(model, position_ids=False), mask_id, settings)
    return sampler.generate(prompt, gen_length=gen_length, attention_mask=attention_mask,
                            steps=gen_length if adaptive else steps, block_length=block_length,
                            threshold=threshold, factor=factor, progress=progress)
