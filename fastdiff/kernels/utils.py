"""What the kernels and their references share: random-stream constants, score kinds, launch settings
and the device scalars a launch reads. Needs only torch (the references import it without triton)."""
from __future__ import annotations

from typing import Tuple

import torch

# random streams: one per op of a step, folded into the seed so that the ops draw independent noise
STREAM_SAMPLE = 1
STREAM_SELECT = 2
STREAM_REMASK = 3
STREAM_REVEAL = 4

# lowbias32 multipliers, the per-stream multiplier and the salt of a row's second key
HASH_MUL1 = 0x7FEB352D
HASH_MUL2 = 0x846CA68B
STREAM_MUL = 0x9E3779B9
KEY_B_SALT = 0x632BE5AB

SCORE_KINDS = ("confidence", "margin", "entropy")

# the row-per-program kernels (selection, commit/remask) keep a whole canvas row in registers
MAX_LENGTH = 8192


def stream_salt(stream: int) -> int:
    """The per-stream constant folded into the seed (a kernel ``constexpr``)."""
    return (stream * STREAM_MUL) & 0xFFFFFFFF


def row_launch(L: int, op: str) -> Tuple[int, int]:
    """``(BLOCK_L, num_warps)`` of a kernel that holds one canvas row of length ``L`` per program."""
    if L > MAX_LENGTH:
        raise ValueError(f"{op} keeps a row in registers: L must be <= {MAX_LENGTH}, got {L}")
    block = 1 << max(L - 1, 0).bit_length()
    return block, max(1, min(16, block // 256))


def as_device_scalar(value, dtype, device, name: str) -> torch.Tensor:
    """A one-element tensor on ``device`` that the kernel reads (no host copy under a graph capture).

    A Python number is filled on the device. A tensor on another device is moved there, except during
    a CUDA-graph capture, where a cross-device copy cannot be captured: then it is refused.
    """
    if not isinstance(value, torch.Tensor):
        return torch.full((1,), value, dtype=dtype, device=device)
    if value.device != torch.device(device):
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise ValueError(f"{name} is a tensor on {value.device} and the data is on {device}: inside a "
                             f"captured CUDA graph it must be on {device}")
        value = value.to(device)
    return value.reshape(1).to(dtype)
