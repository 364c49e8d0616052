"""Text in, text out: prompts and infill templates as strings, or token ids in any form users hold them
(a tensor, a list, a ``BatchEncoding``), turned into the left-padded id batches the sampler runs.

Templates mark their holes with ``[MASK]`` (one token) or ``[MASK*N]`` (``N`` tokens); the tokenizer's
own mask token (``<mask>``, ``[MASK]``) works as well, one token each.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from fastdiff.validation import MAX_CANVAS, right_padded_rows

HOLE = re.compile(r"\[MASK(?:\*(\d+))?\]")


@dataclass
class EncodedText:
    """A tokenised prompt or template.

    Attributes:
        ids: the token ids (a template's holes hold the mask token).
        holes: ``(start, end)`` position ranges of the ``[MASK]`` / ``[MASK*N]`` holes.
    """

    ids: List[int]
    holes: List[Tuple[int, int]]

    @property
    def is_template(self) -> bool:
        """Whether the text has ``[MASK]`` holes (an infill template) rather than being a prompt."""
        return bool(self.holes)


def encode_text(text: str, tokenizer, mask_token_id: int, *, special_tokens: bool = True) -> EncodedText:
    """Tokenise a prompt, or a template with ``[MASK]`` / ``[MASK*N]`` holes (``N`` mask tokens).

    The text between holes is tokenised piece by piece without special tokens; spaces just before a
    hole are dropped (the filled tokens carry their own leading space in byte-level BPE vocabularies).
    With ``special_tokens`` the tokenizer's BOS (or CLS) token comes first, and a template ends with its
    EOS (or SEP) token; a prompt does not, since the generation continues it.

    Args:
        text: the prompt or template.
        tokenizer: a Hugging Face tokenizer.
        mask_token_id: the id put at the holes.
        special_tokens: add BOS / EOS as described above.

    Returns:
        an :class:`EncodedText`.

    Raises:
        TypeError: ``text`` is not a str.
        ValueError: text that is not UTF-8, a ``[MASK*0]`` hole or one beyond the canvas limit, or an
            empty text.

    Example:
        >>> from fastdiff import Sampler
        >>> tok = Sampler.from_pretrained(device="cpu").tokenizer
        >>> encoded = encode_text("x = [MASK*3]", tok, tok.mask_token_id)
        >>> encoded.is_template, encoded.holes
        (True, [(3, 6)])
    """
    if not isinstance(text, str):
        raise TypeError(f"the text must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # argv / stdin bytes that are not UTF-8 arrive as lone surrogates
        raise ValueError(f"the text is not valid UTF-8 (undecodable byte at character {error.start})") from None

    def tokens(piece: str) -> List[int]:
        return list(tokenizer(piece, add_special_tokens=False)["input_ids"]) if piece else []

    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    last = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids = [first] if special_tokens and first is not None else []
    position = 0
    for match in HOLE.finditer(text):
        count = int(match.group(1)) if match.group(1) is not None else 1
        if count < 1:
            raise ValueError(f"{match.group(0)}: a hole needs at least one token")
        if count > MAX_CANVAS:
            raise ValueError(f"{match.group(0)}: a hole of {count} tokens exceeds the canvas limit of {MAX_CANVAS}")
        ids += tokens(text[position:match.start()].rstrip(" ")) + [mask_token_id] * count
        position = match.end()
    ids += tokens(text[position:])
    # the holes: every run of mask tokens, from [MASK] markers or the tokenizer's own mask token
    holes, start = [], None
    for index, token in enumerate(ids + [None]):
        if token == mask_token_id and start is None:
            start = index
        elif token != mask_token_id and start is not None:
            holes.append((start, index))
            start = None
    if holes and special_tokens and last is not None:
        ids.append(last)
    if not ids:
        raise ValueError("the text is empty")
    return EncodedText(ids=ids, holes=holes)


def as_id_batch(inputs, name: str, tokenizer, mask_token_id: int, pad_token_id: int,
                attention_mask: Optional[torch.Tensor] = None) -> Tuple[object, Optional[torch.Tensor]]:
    """``(ids, attention_mask)`` of what a user passed as ``name``: a tensor (returned as is, for the
    sampler's own checks), a str or a list of str (tokenised with :func:`encode_text`, which needs a
    tokenizer), a ``BatchEncoding`` / mapping with ``input_ids`` (and maybe ``attention_mask``), one
    list of ids, or a list of id lists / 1-D tensors. Rows of different lengths are left-padded with
    ``pad_token_id``, and a right-padded ``attention_mask`` is moved to the left, so the mask is 0
    only before each row's first real token.

    Raises:
        TypeError: text without a tokenizer, or an input of another kind.
        ValueError: an empty list, an empty row, or an ``attention_mask`` given twice.
    """
    if isinstance(inputs, torch.Tensor):
        return inputs, attention_mask
    if isinstance(inputs, Mapping):  # a BatchEncoding, or a dict like one
        if "input_ids" not in inputs:
            raise TypeError(f"{name} is a mapping without 'input_ids'")
        given = inputs.get("attention_mask")
        if given is not None and attention_mask is not None:
            raise ValueError(f"{name} carries an attention_mask: do not pass attention_mask as well")
        mask = given if given is not None else attention_mask
        rows = _rows(inputs["input_ids"], name)
        return _left_padded(rows, None if mask is None else _row_masks(mask, rows, name), pad_token_id)
    if attention_mask is not None:
        raise ValueError(f"attention_mask goes with a tensor {name}; the rows of a list are padded here")
    if isinstance(inputs, str) or (isinstance(inputs, Sequence) and inputs and all(isinstance(x, str) for x in inputs)):
        if tokenizer is None:
            raise TypeError(f"{name} is text: the sampler needs a tokenizer (Sampler(..., tokenizer=...) or "
                            "Sampler.from_pretrained) to encode it")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        ids = [encode_text(text, tokenizer, mask_token_id).ids for text in texts]
        return _left_padded(ids, None, pad_token_id)
    return _left_padded(_rows(inputs, name), None, pad_token_id)


def _rows(inputs, name: str) -> List[List[int]]:
    """The id rows of a list of ints (one row), a list of rows, or a 2-D tensor."""
    if isinstance(inputs, torch.Tensor):
        if inputs.is_floating_point() or inputs.dim() not in (1, 2):
            raise TypeError(f"{name} must hold integer ids of shape [L] or [B, L], got {inputs.dtype} "
                            f"{tuple(inputs.shape)}")
        rows = inputs.reshape(-1, inputs.shape[-1]).tolist()
    elif isinstance(inputs, Sequence) and not isinstance(inputs, str):
        if len(inputs) == 0:
            raise ValueError(f"{name} is empty")
        if all(_is_id(x) for x in inputs):
            rows = [[int(x) for x in inputs]]
        else:
            rows = [_one_row(row, name) for row in inputs]
    else:
        raise TypeError(f"{name} must be a tensor of ids, a str, a list of str, a BatchEncoding or a list of ids, "
                        f"got {type(inputs).__name__}")
    if any(len(row) == 0 for row in rows):
        raise ValueError(f"{name} has an empty row")
    return rows


def _is_id(x) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, torch.Tensor) and x.dim() == 0
                                                                and not x.is_floating_point())


def _one_row(row, name: str) -> List[int]:
    if isinstance(row, torch.Tensor):
        if row.dim() != 1 or row.is_floating_point():
            raise TypeError(f"each row of {name} must be a 1-D integer tensor, got {row.dtype} {tuple(row.shape)}")
        return row.tolist()
    if isinstance(row, Sequence) and not isinstance(row, str) and all(_is_id(x) for x in row):
        return [int(x) for x in row]
    raise TypeError(f"each row of {name} must be a list of int ids or a 1-D tensor, got {type(row).__name__}")


def _row_masks(mask, ids: List[List[int]], name: str) -> List[List[int]]:
    rows = mask.tolist() if isinstance(mask, torch.Tensor) else [list(r) for r in mask]
    if isinstance(rows[0], (int, bool)):
        rows = [rows]
    if [len(r) for r in rows] != [len(r) for r in ids]:
        raise ValueError(f"the attention_mask of {name} does not match its input_ids' shape")
    return [[int(bool(v)) for v in r] for r in rows]


def _left_padded(ids: List[List[int]], mask: Optional[List[List[int]]], pad_token_id: int):
    """A ``[B, L]`` int64 tensor with each row's real tokens (mask 1) at its end, and the bool mask
    (``None`` when nothing is padded)."""
    if mask is not None:
        right_padded_rows(torch.tensor(mask))  # the padding rule of every attention mask
        ids = [[t for t, m in zip(row, row_mask) if m] for row, row_mask in zip(ids, mask)]
        if any(len(row) == 0 for row in ids):
            raise ValueError("a row's attention_mask is all zero")
    width = max(len(row) for row in ids)
    padded = torch.tensor([[pad_token_id] * (width - len(row)) + row for row in ids], dtype=torch.int64)
    if all(len(row) == width for row in ids):
        return padded, None
    real = torch.tensor([[False] * (width - len(row)) + [True] * len(row) for row in ids])
    return padded, real
