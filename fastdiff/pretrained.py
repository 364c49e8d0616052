"""Loading a masked diffusion LM and its tokenizer from a local directory, offline; by default the
demo model shipped inside the package (``fastdiff/demo_model``).

The demo model is all-MiniLM-L6-v2 (a 6-layer uncased BERT, Apache-2.0) fine-tuned into a
text-diffusion model with :mod:`fastdiff.training` on the English prose of Debian's documentation
packages, its vocabulary pruned to 12,000 tokens (see ``demo_model/training.json`` and ``training/``
in the repository). It writes English in the register of technical documentation; it is small and
trained for an hour on a CPU, so expect fluent-looking sentences more than sense.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import torch

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"


def load_pretrained(path: Optional[Union[str, Path]] = None, device: Optional[Union[str, torch.device]] = None,
                    dtype: Optional[torch.dtype] = None) -> Tuple[torch.nn.Module, object]:
    """Load a masked LM and its tokenizer from a local Hugging Face model directory, offline.

    Nothing is downloaded: both are read with ``local_files_only=True``.

    Args:
        path: a directory holding ``config.json``, the weights and the tokenizer files; ``None`` for the
            bundled demo model (:data:`DEMO_MODEL_DIR`).
        device: where the model goes; ``None``: ``"cuda"`` when available, else ``"cpu"``.
        dtype: the model's dtype; ``None``: ``torch.float32`` on the CPU (where half precision is
            slow), the dtype stored in the directory elsewhere.

    Returns:
        ``(model, tokenizer)``: an ``AutoModelForMaskedLM`` in eval mode on ``device``, and an
        ``AutoTokenizer`` that has a mask token (``tokenizer.mask_token_id`` is what
        :class:`fastdiff.Sampler` needs).

    Raises:
        ValueError: ``path`` is not a model directory; its weights are missing, unreadable, a pickle
            (``.bin``) or do not match its ``config.json``; its tokenizer has no mask token or more tokens
            than the model's vocabulary; ``device`` is not on this machine.
        TypeError: ``dtype`` is not a ``torch.dtype``.

    Example:
        >>> from fastdiff import Sampler
        >>> from fastdiff.pretrained import load_pretrained
        >>> model, tokenizer = load_pretrained(device="cpu")
        >>> sampler = Sampler(model, mask_token_id=tokenizer.mask_token_id, steps=16, seed=0)
        >>> prompt = tokenizer("The package manager", return_tensors="pt").input_ids
        >>> out = sampler.generate(prompt, gen_length=32)
        >>> text = tokenizer.decode(out.sequences[0], skip_special_tokens=True)
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory = DEMO_MODEL_DIR if path is None else Path(path)
    where = repr(str(directory))
    if not (directory / "config.json").is_file():
        raise ValueError(f"path must be a local model directory with a config.json, got {where}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    device = _checked_device(device)
    if not any(directory.glob("*.safetensors")):
        pickles = sorted(p.name for p in directory.glob("*.bin"))
        raise ValueError(f"{where} holds no .safetensors weights" + (
            f" ({', '.join(pickles)} is a pickle, which fastdiff does not load: it can run code; convert it to "
            "safetensors)" if pickles else ""))
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else "auto"
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for a local directory
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        model, info = AutoModelForMaskedLM.from_pretrained(str(directory), local_files_only=True, dtype=dtype,
                                                           output_loading_info=True, use_safetensors=True)
    except Exception as error:  # noqa: BLE001 - safetensors, config validation, OS: each is a bad directory
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = " ".join(lines[:2]) or type(error).__name__
        raise ValueError(f"cannot load the model in {where}: {reason}") from error
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if tokenizer.mask_token_id is None:
        raise ValueError(f"the tokenizer in {where} has no mask token")
    problems = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        detail = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(map(str, keys[:4]))}"
                           + (f" and {len(keys) - 4} more" if len(keys) > 4 else "") for kind, keys in problems.items())
        raise ValueError(f"the weights in {where} do not match its config.json ({detail})")
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(f"the tokenizer in {where} has {len(tokenizer)} tokens, the model's vocabulary {vocab}")
    return model.to(device).eval(), tokenizer


def _checked_device(device) -> torch.device:
    """``device`` as a ``torch.device`` that this machine has (``None``: CUDA when available)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda', got {device!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}, but this machine has no CUDA device (torch "
                         f"{torch.__version__})")
    return device
