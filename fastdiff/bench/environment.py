"""What a results file says of the machine and the software a benchmark ran on."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Dict, Optional

import torch

import fastdiff
from fastdiff.backend import triton_version


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_info(device: torch.device) -> Dict[str, object]:
    """Name, results-file stem and load of ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        info = dict(type="cuda", name=name, stem=f"cuda-{slug(name)}",
                    memory_gib=torch.cuda.get_device_properties(device).total_memory / 2**30)
    else:
        name = cpu_name()
        info = dict(type=device.type, name=name, stem=f"{device.type}-{slug(name)}")
    info.update(cpu=cpu_name(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads())
    if hasattr(os, "getloadavg"):  # 1, 5 and 15 minute load: other work on the machine skews CPU timings
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return info


def git_commit() -> Optional[str]:
    """The short commit of the source checkout this package is imported from, with ``+uncommitted
    changes`` when tracked files (results excluded) differ from it; ``None`` for an installed package."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)

    try:
        if git("ls-files", "--error-unmatch", Path(__file__).name).returncode != 0:
            return None  # not in a checkout of this project (an installed wheel, perhaps inside another repo)
        commit = git("rev-parse", "--short", "HEAD").stdout.strip() or None
        changes = git("status", "--porcelain", "--untracked-files=no", "--", ":/",
                      ":(exclude,top)benchmarks/results").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + "+uncommitted changes" if commit and changes else commit


def versions() -> Dict[str, Optional[str]]:
    """Python, torch, CUDA, transformers, Triton and fastdiff versions, and :func:`git_commit`."""
    import transformers

    triton = triton_version()
    return dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                transformers=transformers.__version__, triton=".".join(map(str, triton)) if triton else None,
                fastdiff=fastdiff.__version__, git_commit=git_commit())
