"""Backend choice and every torch / Triton / transformers version check of fastdiff.

Backends:

* ``"torch"``: the pure-PyTorch reference ops (:mod:`fastdiff.kernels.reference`). Any device.
* ``"triton"``: the fused kernels. CUDA tensors, or CPU tensors under the Triton interpreter
  (``TRITON_INTERPRET=1`` set before the kernel modules are imported; slow, for tests).
* ``"auto"``: ``"triton"`` for CUDA tensors when Triton is importable, else ``"torch"``.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
from typing import Optional, Tuple

import torch

BACKENDS = ("auto", "torch", "triton")

MIN_TRITON = (3, 0)


def _version_tuple(text: str) -> Tuple[int, ...]:
    """The leading release numbers: ``"2.11.0a0+git1"`` -> ``(2, 11, 0)``."""
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() < len(piece):
            break
    return tuple(parts)


TORCH_VERSION = _version_tuple(torch.__version__)


@functools.lru_cache(maxsize=None)
def triton_version() -> Optional[Tuple[int, ...]]:
    """Installed Triton version, or ``None`` when Triton is absent or older than :data:`MIN_TRITON`."""
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        import triton
    except Exception:  # a broken install counts as absent
        return None
    version = _version_tuple(triton.__version__)
    return version if version >= MIN_TRITON else None


def triton_available() -> bool:
    return triton_version() is not None


def interpreter_enabled() -> bool:
    """True when the Triton interpreter runs kernels on the CPU (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Return ``"torch"`` or ``"triton"`` for tensors on ``device``.

    Raises:
        ValueError: unknown ``backend``, or ``"triton"`` where no kernel can run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "torch":
        return "torch"
    kernels_can_run = triton_available() and (
        device.type == "cuda" or (device.type == "cpu" and interpreter_enabled())
    )
    if backend == "triton":
        if not kernels_can_run:
            raise ValueError(
                f"backend='triton' cannot run on {device.type} tensors here: it needs Triton >= "
                f"{'.'.join(map(str, MIN_TRITON))} and a CUDA device, or TRITON_INTERPRET=1 for CPU tensors"
            )
        return "triton"
    return "triton" if kernels_can_run and device.type == "cuda" else "torch"


def cuda_graphs_supported(device: torch.device) -> bool:
    """CUDA graphs need a CUDA device; capture of the fused step also needs the Triton kernels."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and triton_available()
