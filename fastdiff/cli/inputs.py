"""What a command reads: the device and dtype, the model directory, and the prompt or infill template
(``[MASK]`` / ``[MASK*N]`` holes) as token ids."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import torch

from fastdiff.pretrained import DEMO_MODEL_DIR, load_pretrained
from fastdiff.cli.parser import CLIError
from fastdiff.text import EncodedText, encode_text


# ----------------------------------------------------------------------------------------------
# model, device, input
# ----------------------------------------------------------------------------------------------
def physical_cores() -> int:
    """The physical cores this process may run on: the logical CPUs of its affinity, SMT siblings counted
    once (Linux sysfs; elsewhere the logical count)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def choose_threads(requested: Optional[int]) -> int:
    """Set torch's CPU threads: ``requested`` (``--threads``) if given; else leave a count the user set in
    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (torch reads it); else the physical cores, since SMT siblings
    and oversubscription slow the small matrix products of a denoising step. Returns the count."""
    if requested is not None:
        if requested < 1:
            raise CLIError(f"--threads must be >= 1, got {requested}")
        torch.set_num_threads(requested)
    elif not (os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS")):
        torch.set_num_threads(physical_cores())
    return torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA if available, else CPU; otherwise a ``torch.device`` that exists here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name}: not a torch device (try cpu, cuda, cuda:0)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"``: float32 on the CPU; on CUDA bfloat16, or float16 without bf16 support."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def load_model(path: Optional[str], device, dtype):
    """Load a masked LM and its tokenizer from a local directory, offline
    (:func:`fastdiff.pretrained.load_pretrained`).

    Args:
        path: the ``--model`` argument; ``None``: the bundled demo model.
        device: ``torch.device``.
        dtype: ``torch.dtype`` of the weights.

    Returns:
        ``(model, tokenizer, label)``: the model in eval mode on ``device``, and a short name for it.

    Raises:
        CLIError: a missing path or a directory without ``config.json`` (status 2), or a directory that
            cannot be loaded (status 1).
    """
    if path is None:
        directory, label = DEMO_MODEL_DIR, "demo model"
    else:
        directory, label = Path(path).expanduser(), path
        if not directory.exists():
            raise CLIError(f"--model {path}: no such directory")
        if not directory.is_dir():
            raise CLIError(f"--model {path}: not a directory (expected a Hugging Face model directory with "
                           "config.json, weights and tokenizer files)")
        if not (directory / "config.json").is_file():
            raise CLIError(f"--model {path}: no config.json in it (expected a Hugging Face model directory "
                           "with config, weights and tokenizer files)")
    try:
        model, tokenizer = load_pretrained(directory, device=device, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CLIError(f"cannot load a masked LM and tokenizer from {directory}: {_first_line(error)}",
                       code=1) from None
    return model, tokenizer, label


def encode_input(text: str, tokenizer, mask_token_id: int, *, special_tokens: bool = True) -> EncodedText:
    """:func:`fastdiff.text.encode_text`, its errors as one-line :class:`CLIError`."""
    try:
        return encode_text(text, tokenizer, mask_token_id, special_tokens=special_tokens)
    except (ValueError, TypeError) as error:
        raise CLIError(str(error)) from None


def token_text_fn(tokenizer) -> Callable[[int], str]:
    """The display text of one token as it reads inside a text: a word-initial token keeps its leading
    space and a continuation piece (``##ing``, a BPE suffix) has none. Measured by decoding the token
    after a plain word and removing that word."""
    anchor = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    prefix = tokenizer.decode(anchor, clean_up_tokenization_spaces=False) if anchor else ""

    def text(token: int) -> str:
        if anchor:
            joined = tokenizer.decode(anchor + [token], clean_up_tokenization_spaces=False)
            if joined.startswith(prefix):
                return joined[len(prefix):]
        return tokenizer.decode([token], clean_up_tokenization_spaces=False)

    return text
