"""The training losses: masked-token cross-entropy (diffusion) and next-token cross-entropy (causal)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from fastdiff.model import ModelRunner
from fastdiff.training.collator import IGNORE_INDEX


def diffusion_loss(model, input_ids: torch.Tensor, labels: torch.Tensor,
                   attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (``labels != -100``).

    For the masked-LM classes :class:`fastdiff.model.ModelRunner` knows, the LM head runs only on the
    masked rows (the same logits as the full head, at a fraction of its cost); other models run whole.

    Args:
        model: a Hugging Face masked LM (or anything :class:`~fastdiff.model.ModelRunner` accepts).
        input_ids: int ``[B, L]`` with mask tokens.
        labels: int ``[B, L]``: targets at masked positions, -100 elsewhere.
        attention_mask: optional ``[B, L]``.

    Returns:
        A scalar fp32 tensor.
    """
    runner = ModelRunner(model)
    selected = labels != IGNORE_INDEX
    if runner.has_head:
        hidden = runner.encode(input_ids, attention_mask)
        logits = runner.head(hidden[selected])
        return F.cross_entropy(logits.float(), labels[selected])
    logits = runner(input_ids, attention_mask)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


def causal_loss(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM over every position after the first."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())
