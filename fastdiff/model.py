"""Calling the model: Hugging Face masked LMs and plain callables behind one interface."""
from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch
from torch import nn


def _position_embedding_offset(model: nn.Module) -> int:
    """RoBERTa-style embeddings number positions from ``padding_idx + 1``; others from 0."""
    base = getattr(model, "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if isinstance(table, nn.Embedding) and table.padding_idx is not None:
        return int(table.padding_idx) + 1
    return 0


class ModelRunner:
    """Runs ``model`` on a canvas and returns logits ``[B, L, V]``.

    * A Hugging Face model (an ``nn.Module`` with a ``config``) is called as
      ``model(input_ids=..., attention_mask=..., position_ids=...)`` and its ``.logits`` read. With
      left padding the real tokens get the positions they would have alone (RoBERTa's offset
      included), so a padded row computes what the row computes on its own.
    * Any other callable is called as ``model(input_ids, attention_mask)`` and may return the logits
      or an object with ``.logits``.

    Args:
        model: the model.
        position_ids: pass explicit ``position_ids`` to Hugging Face models with left padding
            (``False`` reproduces samplers that let the model number padded positions itself).

    Subclasses may override ``__call__`` for models with other calling conventions; a runner can be
    given to :class:`fastdiff.Sampler` in place of the model.
    """

    def __init__(self, model: Callable, position_ids: bool = True):
        if not callable(model):
            raise TypeError(f"model must be a Hugging Face model or a callable, got {type(model).__name__}")
        self.model = model
        config = getattr(model, "config", None)
        self.is_hf = isinstance(model, nn.Module) and config is not None
        self.vocab_size: Optional[int] = getattr(config, "vocab_size", None) if self.is_hf else None
        self.position_offset = _position_embedding_offset(model) if self.is_hf else 0
        max_positions = getattr(config, "max_position_embeddings", None) if self.is_hf else None
        self.max_length: Optional[int] = (
            int(max_positions) - self.position_offset if isinstance(max_positions, int) else None
        )
        forward = model.forward if isinstance(model, nn.Module) else model
        try:
            params = inspect.signature(forward).parameters
        except (TypeError, ValueError):
            params = {}
        self.accepts_position_ids = position_ids and self.is_hf and "position_ids" in params

    @property
    def device(self) -> Optional[torch.device]:
        if isinstance(self.model, nn.Module):
            for tensor in self.model.parameters():
                return tensor.device
            for tensor in self.model.buffers():
                return tensor.device
        return None

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Positions of the real tokens counted from the first one; pads get the padding position."""
        attention = attention_mask.to(torch.int64)
        positions = attention.cumsum(dim=-1) - 1 + self.position_offset
        pad_position = max(self.position_offset - 1, 0)
        return torch.where(attention.bool(), positions, torch.full_like(positions, pad_position))

    def __call__(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                 position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.is_hf:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if position_ids is not None and self.accepts_position_ids:
                kwargs["position_ids"] = position_ids
            out = self.model(**kwargs)
        else:
            out = self.model(input_ids, attention_mask)
        logits = getattr(out, "logits", out)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"model must return logits [B, L, V] or an object with .logits, got {type(out).__name__}")
        if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
            raise ValueError(
                f"model returned logits of shape {tuple(logits.shape)} for input_ids {tuple(input_ids.shape)}; "
                "expected [B, L, V]"
            )
        if not logits.is_floating_point():
            raise TypeError(f"model returned {logits.dtype} logits; expected a floating dtype")
        return logits
