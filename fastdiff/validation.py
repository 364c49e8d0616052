"""Argument checks shared by every entry point (the Sampler, its config, the bare ops, the drop-ins and
the command line): each raises ``TypeError`` or ``ValueError`` naming the argument."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch


INT64_RANGE = (-2**63, 2**63 - 1)


def check_seed(seed, name: str = "seed") -> None:
    """An int seed must be an int that fits int64 (the random stream's state is an int64 tensor)."""
    check_int(seed, name)
    if not INT64_RANGE[0] <= seed <= INT64_RANGE[1]:
        raise ValueError(f"{name} must fit in int64 [-2**63, 2**63 - 1], got {seed}")


def check_seeds(seeds, name: str = "seed") -> None:
    """An int seed, or one per row: a non-empty sequence of int seeds or an int64 tensor ``[B]``."""
    if isinstance(seeds, torch.Tensor):
        if seeds.dtype != torch.int64 or seeds.dim() != 1 or seeds.numel() == 0 or seeds.is_meta:
            raise TypeError(f"{name} as a tensor must be a non-empty int64 [B] tensor of per-row seeds, got "
                            f"{seeds.dtype} {tuple(seeds.shape)}{' on meta' if seeds.is_meta else ''}")
        return
    if isinstance(seeds, (list, tuple)):
        if not seeds:
            raise ValueError(f"{name} must hold at least one seed")
        for value in seeds:
            check_seed(value, name)
        return
    check_seed(seeds, name)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value, name: str) -> None:
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")


def check_number(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")


def check_flag(value, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def check_token_id(value, name: str, vocab: Optional[int] = None) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming ``name`` unless ``value`` is an int >= 0 (and below
    ``vocab`` when the vocabulary size is known)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative token id, got {value}")
    if vocab is not None and value >= vocab:
        raise ValueError(f"{name}={value} is outside the vocabulary [0, {vocab})")


def check_choice(value, name: str, choices: Sequence) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# longest canvas a row may have: beyond any bidirectional model's context, and the per-step [B, L]
# tensors and plan stay small enough to allocate
MAX_CANVAS = 1 << 20


def check_canvas_length(length: int, what: str, model_limit: Optional[int]) -> None:
    """A canvas of ``length`` positions must fit the model (``model_limit``, None when unknown) and
    :data:`MAX_CANVAS`; ``what`` names the inputs that made it."""
    if model_limit is not None and length > model_limit:
        raise ValueError(f"{what} = {length} exceeds the model's {model_limit} positions (max_position_embeddings)")
    if length > MAX_CANVAS:  # a model that does not say its length (a callable)
        raise ValueError(f"{what} = {length} exceeds fastdiff's canvas limit of {MAX_CANVAS} positions")


def check_eos(eos_ids: Sequence[int], mask_token_id: int) -> None:
    """The EOS ids must not hold the mask token: every masked position would read as finished."""
    if mask_token_id in eos_ids:
        raise ValueError(f"eos_token_id holds mask_token_id={mask_token_id}: every masked position would read "
                         "as finished")


def check_positive_int(value, name: str) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming ``name`` unless ``value`` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")


def capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def check_scalar(value, name: str, *, low: float, high: float, low_open: bool, integer: bool = False):
    """Validate a scalar sampling parameter: a Python number, or a one-element tensor, whose value is
    read and checked the same way except during a CUDA graph capture (where reading it would sync)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if integer and (value.is_floating_point() or value.dtype == torch.bool):
            raise TypeError(f"{name} must be an integer, got a {value.dtype} tensor")
        if value.is_complex():
            raise TypeError(f"{name} must be real, got a {value.dtype} tensor")
        if value.is_meta:
            raise ValueError(f"{name} is on the meta device: it holds no value")
        if capturing():
            return
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if integer and not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    bad_low = value <= low if low_open else value < low
    if bad_low or value > high:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be in {interval}, got {value}")


def check_holds_values(tensor: torch.Tensor, name: str) -> None:
    if tensor.is_meta:
        raise ValueError(f"{name} is on the meta device: it holds no values")


def check_bool_mask(mask: torch.Tensor, name: str, shape: Tuple[int, ...], device: torch.device):
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device}, expected {device}")


def check_suppress_ids(suppress_ids, vocab: int, device: torch.device) -> Optional[torch.Tensor]:
    if suppress_ids is None:
        return None
    ids = torch.as_tensor(suppress_ids, device=device)
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise TypeError(f"suppress_ids must hold integer token ids, got {ids.dtype}")
    ids = ids.to(torch.int64).reshape(-1)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"suppress_ids must lie in [0, {vocab}), got ids from {int(ids.min())} to {int(ids.max())}")
    return ids


def check_counts(k: torch.Tensor, name: str, rows: int, device: torch.device) -> torch.Tensor:
    if isinstance(k, bool):
        raise TypeError(f"{name} must be an int or an integer tensor [B], got bool")
    if isinstance(k, int):
        if k < 0:
            raise ValueError(f"{name} must be >= 0, got {k}")
        return torch.full((rows,), k, dtype=torch.int64, device=device)
    if not isinstance(k, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer tensor [B], got {type(k).__name__}")
    if k.is_floating_point() or k.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {k.dtype}")
    if k.numel() == 1 and k.dim() <= 1:
        k = k.reshape(1).expand(rows)
    if tuple(k.shape) != (rows,):
        raise ValueError(f"{name} must have shape [{rows}], got {tuple(k.shape)}")
    if k.device != device:
        raise ValueError(f"{name} is on {k.device}, expected {device}")
    return k


def check_ids(ids, name: str, vocab: Optional[int]) -> torch.Tensor:
    """``ids`` as int64 ``[B, L]``; ``vocab``: the model's vocabulary size where known."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.is_meta:
        raise ValueError(f"{name} is on the meta device: it holds no ids")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got {ids.dtype}")
    if ids.dim() == 1:
        ids = ids[None, :]
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape [B, L] or [L], got {tuple(ids.shape)}")
    if ids.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one row")
    ids = ids.to(torch.int64)  # first: torch has no min / max for uint16, uint32, uint64
    if ids.numel():
        lowest, highest = (int(bound) for bound in torch.aminmax(ids))
        if lowest < 0:
            raise ValueError(f"{name} must not hold negative ids")
        if vocab is not None and highest >= vocab:
            raise ValueError(f"{name} hold id {highest}, outside the model's vocabulary [0, {vocab})")
    return ids


def check_attention(mask, shape: Tuple[int, int], name: str) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() == 1:
        mask = mask[None, :]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must hold 0 and 1 only")
    return mask.bool()


def check_replacement(replaced, canvas: torch.Tensor) -> None:
    if not isinstance(replaced, torch.Tensor) or replaced.shape != canvas.shape or replaced.is_floating_point():
        raise TypeError(f"on_step must return None or an integer tensor of shape {tuple(canvas.shape)}")
    if replaced.numel() and int(replaced.min()) < 0:
        raise ValueError(f"on_step returned a negative token id ({int(replaced.min())})")


def check_hook_logits(hooked, logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(hooked, torch.Tensor) or hooked.shape != logits.shape or not hooked.is_floating_point():
        got = tuple(hooked.shape) if isinstance(hooked, torch.Tensor) else type(hooked).__name__
        raise TypeError(f"logits_hook must return float logits of shape {tuple(logits.shape)}, got {got}")
    return hooked


def right_padded_rows(attention: torch.Tensor) -> torch.Tensor:
    """bool ``[B]``: the right-padded rows (ones then zeros) of a 0/1 mask ``[B, L]``; raises unless each
    row is left padding (zeros then ones) or right padding."""
    rises = (attention[:, 1:].int() > attention[:, :-1].int()).any(dim=1)
    falls = (attention[:, 1:].int() < attention[:, :-1].int()).any(dim=1)
    if bool((rises & falls).any()):
        raise ValueError("attention_mask must be left or right padding: each row zeros then ones, or ones "
                         "then zeros")
    return falls


def check_prompt(prompt_ids, gen_length, attention_mask, mask_token_id: int,
                 vocab: Optional[int]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The inputs of a generation: ``(prompt int64 [B, P], attention bool [B, P] or None)``, left-padded.
    Each row of the attention mask is left padding (zeros then ones) or right padding (ones then zeros,
    as dllm and many tokenizers pad; such a row is moved to the right, its pads first), and the prompt
    must not hold the mask token."""
    prompt = check_ids(prompt_ids, "prompt_ids", vocab)
    if isinstance(gen_length, bool) or not isinstance(gen_length, int):
        raise TypeError(f"gen_length must be an int, got {type(gen_length).__name__}")
    if gen_length <= 0:
        raise ValueError(f"gen_length must be positive, got {gen_length}")
    attention = check_attention(attention_mask, tuple(prompt.shape), "attention_mask")
    if attention is not None:
        falls = right_padded_rows(attention)
        if bool(falls.any()):  # right-padded rows: roll each so that its real tokens end the row
            P = prompt.shape[1]
            lead = torch.where(falls, attention.sum(dim=1), P).to(prompt.device)  # real tokens of a right-padded row
            source = (torch.arange(P, device=prompt.device)[None, :] - (P - lead)[:, None]) % P
            prompt = prompt.gather(1, source)
            attention = attention.to(prompt.device).gather(1, source)
    held = prompt == mask_token_id
    if attention is not None:
        held &= attention.to(prompt.device)
    if bool(held.any()):
        raise ValueError(f"prompt_ids contain mask_token_id={mask_token_id}; use infill() to fill holes")
    return prompt, attention


def check_callable(value, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``value`` is None or callable."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
