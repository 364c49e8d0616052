"""Masking a batch for the diffusion objective: one mask ratio per batch, the prompt prefix, special
tokens and padding never masked (:class:`DiffusionCollator`)."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch

# the label of a position that is not scored (PyTorch's cross-entropy default)
IGNORE_INDEX = -100


def _check_ratio(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


class DiffusionCollator:
    """Masks a batch for the diffusion objective.

    One mask ratio ``r`` is drawn per batch: uniformly from ``mask_ratio = (low, high)``, or taken
    from ``ratio_schedule`` (cycled by step). In each row, ``round(r * n)`` of its ``n`` maskable
    positions (at least one) are replaced by the mask token, chosen uniformly at random. A position is
    maskable unless it lies in the row's prompt prefix, holds a special token, or is padding.

    Args:
        mask_token_id: the mask token.
        special_token_ids: ids that are never masked (``<s>``, ``</s>``, ``<pad>``, ...).
        mask_ratio: ``(low, high)`` with ``0 < low <= high <= 1``: the range of the uniform draw.
        ratio_schedule: ratios in ``(0, 1]`` used in turn, batch ``step`` taking
            ``ratio_schedule[step % len]``; replaces the uniform draw.
        prefix_length: the first positions of each row that are never masked (the prompt): an int,
            or ``(low, high)`` to draw each row's length uniformly from ``low..high`` (inclusive).

    Example:
        >>> collator = DiffusionCollator(mask_token_id=4, special_token_ids=[0, 1, 2], prefix_length=2)
        >>> batch = collator(torch.tensor([[0, 10, 11, 12, 13, 2]]), generator=torch.Generator().manual_seed(0))
        >>> batch["input_ids"][0, :2].tolist(), batch["input_ids"][0, -1].item()
        ([0, 10], 2)
    """

    def __init__(self, mask_token_id: int, special_token_ids: Iterable[int] = (),
                 mask_ratio: Tuple[float, float] = (0.1, 1.0), ratio_schedule: Optional[Sequence[float]] = None,
                 prefix_length: Union[int, Tuple[int, int]] = 0):
        if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int) or mask_token_id < 0:
            raise TypeError(f"mask_token_id must be a non-negative int, got {mask_token_id!r}")
        special = list(special_token_ids)
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in special):
            raise TypeError(f"special_token_ids must be non-negative ints, got {special!r}")
        if not isinstance(mask_ratio, (tuple, list)) or len(mask_ratio) != 2:
            raise TypeError(f"mask_ratio must be a pair (low, high), got {mask_ratio!r}")
        low, high = (_check_ratio(v, "mask_ratio") for v in mask_ratio)
        if low > high:
            raise ValueError(f"mask_ratio must have low <= high, got {mask_ratio!r}")
        if ratio_schedule is not None:
            ratio_schedule = tuple(_check_ratio(v, "ratio_schedule") for v in ratio_schedule)
            if not ratio_schedule:
                raise ValueError("ratio_schedule must hold at least one ratio")
        if isinstance(prefix_length, int) and not isinstance(prefix_length, bool):
            prefix_length = (prefix_length, prefix_length)
        if (not isinstance(prefix_length, (tuple, list)) or len(prefix_length) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in prefix_length)):
            raise TypeError(f"prefix_length must be an int or a pair of ints, got {prefix_length!r}")
        if not 0 <= prefix_length[0] <= prefix_length[1]:
            raise ValueError(f"prefix_length must satisfy 0 <= low <= high, got {prefix_length!r}")
        self.mask_token_id = mask_token_id
        self.special_token_ids = torch.tensor(sorted(set(special) | {mask_token_id}), dtype=torch.int64)
        self.mask_ratio = (low, high)
        self.ratio_schedule = ratio_schedule
        self.prefix_length = tuple(prefix_length)

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> "DiffusionCollator":
        """A collator with the tokenizer's mask token and all its special tokens never masked.

        Args:
            tokenizer: a Hugging Face tokenizer with a ``mask_token``.
            **kwargs: the other arguments of :class:`DiffusionCollator`.
        """
        if tokenizer.mask_token_id is None:
            raise ValueError("tokenizer has no mask_token; add one before diffusion training")
        return cls(tokenizer.mask_token_id, tokenizer.all_special_ids, **kwargs)

    def draw_ratio(self, generator: Optional[torch.Generator] = None, step: int = 0) -> float:
        """The mask ratio of the batch at ``step``: from the schedule, else a uniform draw."""
        if self.ratio_schedule is not None:
            return self.ratio_schedule[step % len(self.ratio_schedule)]
        low, high = self.mask_ratio
        return low + (high - low) * float(torch.rand((), generator=generator))

    def maskable(self, input_ids: torch.Tensor, generator: Optional[torch.Generator] = None,
                 attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """bool ``[B, L]``: positions outside the (drawn) prefix that hold no special token or padding."""
        B, L = input_ids.shape
        low, high = self.prefix_length
        prefix = torch.randint(low, high + 1, (B,), generator=generator) if high > low else torch.full((B,), low)
        positions = torch.arange(L)
        allowed = (positions[None, :] >= prefix[:, None]).to(input_ids.device)
        allowed &= ~torch.isin(input_ids, self.special_token_ids.to(input_ids.device))
        if attention_mask is not None:
            allowed &= attention_mask.bool()
        return allowed

    def __call__(self, input_ids, *, generator: Optional[torch.Generator] = None, step: int = 0,
                 attention_mask: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Mask one batch.

        Args:
            input_ids: int ``[B, L]``, or a sequence of equal-length 1-D tensors. Not modified.
            generator: the source of randomness (``None``: torch's default generator).
            step: the training step, which picks the ratio from ``ratio_schedule``.
            attention_mask: ``[B, L]`` of 0/1; padding (0) is never masked.

        Returns:
            ``{"input_ids": int64 [B, L] with the mask token at the masked positions,
            "labels": int64 [B, L], the original token where masked and -100 elsewhere,
            "attention_mask": as given (or None), "mask_ratio": the batch's ratio (float)}``.
        """
        if isinstance(input_ids, (list, tuple)):
            input_ids = torch.stack(list(input_ids))
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise TypeError("input_ids must be an integer tensor [B, L] or a sequence of 1-D tensors")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask must have shape {tuple(input_ids.shape)}, "
                             f"got {tuple(attention_mask.shape)}")
        ids = input_ids.to(torch.int64)
        ratio = self.draw_ratio(generator, step)
        allowed = self.maskable(ids, generator, attention_mask)
        n_allowed = allowed.sum(dim=1)
        n_mask = torch.minimum(torch.round(ratio * n_allowed.double()).to(torch.int64).clamp(min=1), n_allowed)
        keys = torch.rand(ids.shape, generator=generator).to(ids.device).masked_fill(~allowed, 2.0)
        rank = torch.empty_like(ids).scatter_(1, keys.argsort(dim=1), torch.arange(ids.shape[1]).expand_as(ids).to(ids.device))
        masked = rank < n_mask[:, None]
        return {
            "input_ids": ids.masked_fill(masked, self.mask_token_id),
            "labels": torch.where(masked, ids, torch.full_like(ids, IGNORE_INDEX)),
            "attention_mask": attention_mask,
            "mask_ratio": ratio,
        }
