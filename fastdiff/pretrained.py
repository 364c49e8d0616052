"""Loading a masked diffusion LM and its tokenizer from a local directory, offline; by default the
demo model shipped inside the package (``fastdiff/demo_model``).

The demo model is a 4-layer BERT-style masked LM (ModernBERT architecture) trained from scratch with
:mod:`fastdiff.train` on the Python standard library (see ``demo_model/training.json`` and
``training/`` in the repository). It writes Python-looking code; it is small and trained briefly, so
expect plausible syntax more than working programs.
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
        ValueError: ``path`` is not a model directory, or its tokenizer has no mask token.
        TypeError: ``dtype`` is not a ``torch.dtype``.

    Example:
        >>> from fastdiff import Sampler
        >>> from fastdiff.pretrained import load_pretrained
        >>> model, tokenizer = load_pretrained(device="cpu")
        >>> sampler = Sampler(model, mask_token_id=tokenizer.mask_token_id, steps=16, seed=0)
        >>> prompt = tokenizer("def add(a, b):\\n", return_tensors="pt").input_ids
        >>> out = sampler.generate(prompt, gen_length=32)
        >>> text = tokenizer.decode(out.sequences[0], skip_special_tokens=True)
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    directory = DEMO_MODEL_DIR if path is None else Path(path)
    if not (directory / "config.json").is_file():
        raise ValueError(f"path must be a local model directory with a config.json, got {str(directory)!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else "auto"
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"the tokenizer in {str(directory)!r} has no mask token")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for a local directory
    try:
        model = AutoModelForMaskedLM.from_pretrained(str(directory), local_files_only=True, dtype=dtype)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.to(device).eval(), tokenizer
