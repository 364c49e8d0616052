"""Calling the model: Hugging Face masked LMs and plain callables behind one interface, with the
encoder / LM-head split that lets the sampler run the head on the rows it can commit."""
from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Callable, Dict, Optional

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


# The LM head of each known *ForMaskedLM class: hidden states [..., H] -> logits [..., V], exactly the
# computation its forward applies to the encoder output.
_MASKED_LM_HEADS: Dict[str, Callable[[nn.Module], Callable]] = {
    "RobertaForMaskedLM": lambda m: m.lm_head,
    "XLMRobertaForMaskedLM": lambda m: m.lm_head,
    "CamembertForMaskedLM": lambda m: m.lm_head,
    "BertForMaskedLM": lambda m: m.cls,
    "DistilBertForMaskedLM": lambda m: (
        lambda h: m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h))))
    ),
    "ModernBertForMaskedLM": lambda m: (lambda h: m.decoder(m.head(h))),
    "ElectraForMaskedLM": lambda m: (lambda h: m.generator_lm_head(m.generator_predictions(h))),
}


def _refuse_tensor_parallel(model) -> None:
    """Tensor-parallel models (``tp_plan="auto"``: DTensor weights) need every rank in each forward,
    which the sampler's per-rank calls do not give: refuse them with what to do instead."""
    dtensors = sys.modules.get("torch.distributed.tensor")  # never imported: no DTensor can exist (and the
    if not isinstance(model, nn.Module) or dtensors is None:  # import would cost the demo half a second)
        return
    if any(isinstance(p, dtensors.DTensor) for p in model.parameters()):
        raise ValueError("model: tensor-parallel models (tp_plan, DTensor weights) are not supported; load one copy "
                         "per rank (data parallel, fastdiff.distributed) or split it over this process's GPUs "
                         "with device_map='auto'")


def _first_tensor(out):
    value = getattr(out, "logits", None)
    if value is None:
        value = getattr(out, "last_hidden_state", out)
    if isinstance(value, (tuple, list)):
        value = value[0]
    return value


class ModelRunner:
    """Runs ``model`` on a canvas and returns logits ``[B, L, V]``.

    * A Hugging Face model (an ``nn.Module`` with a ``config``) is called as
      ``model(input_ids=..., attention_mask=..., position_ids=...)`` and its ``.logits`` read. With
      left padding the real tokens get the positions they would have alone (RoBERTa's offset
      included), so a padded row computes what the row computes on its own.
    * Any other callable is called as ``model(input_ids, attention_mask)`` and may return the logits
      or an object with ``.logits``.
    * With a ``time`` (``SamplerConfig.time_conditioning``) any model is called as
      ``model(input_ids, time)``, ``time`` float32 ``[B]``: SEDD's and MDLM's convention.

    For the known ``*ForMaskedLM`` classes (RoBERTa, XLM-R, CamemBERT, BERT, DistilBERT, ModernBERT,
    ELECTRA) :meth:`encode` and :meth:`head` split the forward so that the head can run on chosen rows.

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
        _refuse_tensor_parallel(model)
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
        head = _MASKED_LM_HEADS.get(type(model).__name__)
        self._head: Optional[Callable] = head(model) if head is not None and self.is_hf else None
        self._encoder: Optional[nn.Module] = getattr(model, "base_model", None) if self._head is not None else None
        if self._encoder is not None:
            encoder_params = inspect.signature(self._encoder.forward).parameters
            self._encoder_takes_positions = self.accepts_position_ids and "position_ids" in encoder_params

    @property
    def device(self) -> Optional[torch.device]:
        """Where the canvas lives: the input embedding's device (a model split over devices with
        ``device_map`` takes its inputs there), else the first parameter's or buffer's; ``None`` for
        plain callables."""
        if isinstance(self.model, nn.Module):
            embeddings = getattr(self.model, "get_input_embeddings", None)
            table = embeddings() if callable(embeddings) else None
            if isinstance(getattr(table, "weight", None), torch.Tensor):
                return table.weight.device
            for tensor in self.model.parameters():
                return tensor.device
            for tensor in self.model.buffers():
                return tensor.device
        return None

    @property
    def has_head(self) -> bool:
        """Whether :meth:`encode` and :meth:`head` are available (a known masked-LM class)."""
        return self._head is not None and type(self).__call__ is ModelRunner.__call__

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Positions of the real tokens counted from the first one; pads get the padding position."""
        attention = attention_mask.to(torch.int64)
        positions = attention.cumsum(dim=-1) - 1 + self.position_offset
        pad_position = max(self.position_offset - 1, 0)
        return torch.where(attention.bool(), positions, torch.full_like(positions, pad_position))

    def _kwargs(self, input_ids, attention_mask, position_ids, takes_positions: bool):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if position_ids is not None and takes_positions:
            kwargs["position_ids"] = position_ids
        return kwargs

    def __call__(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                 position_ids: Optional[torch.Tensor] = None, time: Optional[torch.Tensor] = None) -> torch.Tensor:
        if time is not None:  # a time-conditioned model (SEDD, MDLM): model(x, sigma or t), no attention mask
            out = self.model(input_ids, time)
        elif self.is_hf:
            out = self.model(**self._kwargs(input_ids, attention_mask, position_ids, self.accepts_position_ids))
        else:
            out = self.model(input_ids, attention_mask)
        logits = _first_tensor(out)
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

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
               position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The encoder's last hidden states ``[B, L, H]`` (only when :attr:`has_head`)."""
        out = self._encoder(**self._kwargs(input_ids, attention_mask, position_ids, self._encoder_takes_positions))
        return _first_tensor(out)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on hidden states ``[..., H]`` -> logits ``[..., V]`` (only when :attr:`has_head`)."""
        return self._head(hidden)

    def compile(self, mode: str) -> None:
        """``torch.compile`` the forward (and the encoder / head) in ``mode``."""
        self.model = torch.compile(self.model, mode=mode)
        if self._head is not None:
            self._encoder = torch.compile(self._encoder, mode=mode)
            self._head = torch.compile(self._head, mode=mode)


@contextlib.contextmanager
def keep_flash_attention_under_capture():
    """Keep Hugging Face SDPA models on the mask-free (flash) attention path inside CUDA-graph capture.

    Some transformers versions decide whether a bidirectional mask can be skipped with an
    ``is_tracing`` test that is true during stream capture, so a captured forward builds a full mask
    and falls off the flash kernel (reported for transformers 5.17: 40 ms instead of 23 ms per
    RoBERTa-base step at batch 64 on an H100; not yet re-measured with this fix on a GPU). The
    sampler passes ``attention_mask=None`` when there is no padding; inside this context such a
    missing mask is skipped as it is in eager mode. Padded batches are unaffected.
    """
    try:
        from transformers import masking_utils
    except ImportError:
        yield
        return
    original = getattr(masking_utils, "_ignore_bidirectional_mask_sdpa", None)
    if original is None:
        yield
        return

    def ignore_missing_mask(padding_mask, *args, **kwargs):
        local_size = kwargs.get("local_attention_size", args[1] if len(args) > 1 else None)
        if padding_mask is None and local_size is None:
            return True
        return original(padding_mask, *args, **kwargs)

    masking_utils._ignore_bidirectional_mask_sdpa = ignore_missing_mask
    try:
        yield
    finally:
        masking_utils._ignore_bidirectional_mask_sdpa = original
