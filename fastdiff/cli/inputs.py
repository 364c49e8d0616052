"""What a command reads: the device and dtype, the model directory, and the prompt or infill template
(``[MASK]`` / ``[MASK*N]`` holes) as token ids."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from fastdiff.pretrained import DEMO_MODEL_DIR, load_pretrained
from fastdiff.cli.parser import CLIError

_PLACEHOLDER = re.compile(r"\[MASK(?:\*(\d+))?\]")


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


@dataclass
class EncodedInput:
    """A tokenised prompt or template.

    Attributes:
        ids: the token ids (a template's holes hold the mask token).
        is_template: ``True`` for an infill template, ``False`` for a prompt to continue.
        holes: ``(start, end)`` position ranges of a template's holes.
    """

    ids: List[int]
    is_template: bool
    holes: List[Tuple[int, int]]


def encode_input(text: str, tokenizer, mask_token_id: int, *, special_tokens: bool = True) -> EncodedInput:
    """Tokenise a prompt, or a template with ``[MASK]`` / ``[MASK*N]`` holes (N mask tokens).

    The text between holes is tokenised piece by piece without special tokens; spaces just before a
    hole are dropped (the filled tokens carry their own leading space in byte-level BPE vocabularies).
    With ``special_tokens`` the tokenizer's BOS (or CLS) token comes first, and a template ends with its
    EOS (or SEP) token.

    Args:
        text: the prompt or template.
        tokenizer: a Hugging Face tokenizer.
        mask_token_id: the id put at the holes.
        special_tokens: add BOS / EOS as described above.

    Returns:
        an :class:`EncodedInput`.

    Raises:
        CLIError: text that is not UTF-8, a ``[MASK*0]`` hole or one beyond the canvas limit, or an
            empty prompt.
    """
    from fastdiff.validation import MAX_CANVAS

    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # argv / stdin bytes that are not UTF-8 arrive as lone surrogates
        raise CLIError(f"the text is not valid UTF-8 (undecodable byte at character {error.start})") from None

    def tokens(piece: str) -> List[int]:
        return list(tokenizer(piece, add_special_tokens=False)["input_ids"]) if piece else []

    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    last = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids = [first] if special_tokens and first is not None else []
    holes, position = [], 0
    for match in _PLACEHOLDER.finditer(text):
        count = int(match.group(1)) if match.group(1) is not None else 1
        if count < 1:
            raise CLIError(f"{match.group(0)}: a hole needs at least one token")
        if count > MAX_CANVAS:
            raise CLIError(f"{match.group(0)}: a hole of {count} tokens exceeds the canvas limit of {MAX_CANVAS}")
        ids += tokens(text[position:match.start()].rstrip(" "))
        holes.append((len(ids), len(ids) + count))
        ids += [mask_token_id] * count
        position = match.end()
    ids += tokens(text[position:])
    if holes and special_tokens and last is not None:
        ids.append(last)
    if not ids:
        raise CLIError("the prompt is empty")
    return EncodedInput(ids=ids, is_template=bool(holes), holes=holes)


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
