"""A run's checkpoint (model config and fp32 weights, AdamW state, step), saved atomically under
``RUN/checkpoint`` and loaded to resume or export."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from fastdiff.training.models import auto_model_class

CHECKPOINT = "checkpoint"


def _fsync(path: Path) -> None:
    descriptor = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_checkpoint(run_dir: Union[str, Path], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int) -> Path:
    """Write ``run_dir/checkpoint`` (model config and fp32 weights, AdamW state, step) atomically.

    The files go to ``checkpoint-<step>.tmp/`` and are synced to disk; one rename makes it
    ``checkpoint-<step>/``, and one more swaps the ``checkpoint`` link to it. A crash at any point
    leaves ``checkpoint`` on a complete checkpoint (the previous or the new one); older ones are
    removed once the link has moved."""
    from safetensors.torch import save_file, save_model

    run = Path(run_dir)
    name = f"{CHECKPOINT}-{step}"
    staging, target, link = run / (name + ".tmp"), run / name, run / CHECKPOINT
    for leftover in (staging, target):
        if leftover.exists():
            shutil.rmtree(leftover)
    staging.mkdir()
    model.config.to_json_file(str(staging / "config.json"))
    save_model(model, str(staging / "model.safetensors"))
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value.contiguous() for index, entry in state["state"].items()
               for key, value in entry.items()}
    save_file(tensors, str(staging / "optimizer.safetensors"),
              metadata={"param_groups": json.dumps(state["param_groups"])})
    (staging / "state.json").write_text(json.dumps({"step": step}) + "\n")  # last: marks it complete
    for path in (*staging.iterdir(), staging):
        _fsync(path)
    staging.rename(target)
    if link.is_dir() and not link.is_symlink():  # a run from before checkpoints were linked
        shutil.rmtree(link)
    swap = run / (CHECKPOINT + ".link")
    if swap.is_symlink() or swap.exists():
        swap.unlink()
    swap.symlink_to(name)  # relative: the run directory can move
    os.replace(swap, link)
    _fsync(run)
    for other in run.glob(f"{CHECKPOINT}-*"):
        if other.name != name:
            shutil.rmtree(other)
    return target


def _checkpoint_dir(run: Path) -> Optional[Path]:
    """The checkpoint to resume from: ``checkpoint`` when it is complete, else the newest complete
    ``checkpoint-<step>`` (a save that stopped between its renames), else ``None``."""
    link = run / CHECKPOINT
    if (link / "state.json").is_file():
        return link
    complete = [p for p in run.glob(f"{CHECKPOINT}-*") if p.suffix != ".tmp" and (p / "state.json").is_file()]
    steps = {p: int(p.name.rsplit("-", 1)[1]) for p in complete if p.name.rsplit("-", 1)[1].isdigit()}
    return max(steps, key=steps.get) if steps else None


def load_checkpoint(run_dir: Union[str, Path], objective: str):
    """``(model, optimizer_state, step)`` from ``run_dir/checkpoint``, or ``None`` if there is none.

    Raises:
        ValueError: the checkpoint is there but unreadable (naming its directory).
    """
    from safetensors import safe_open
    from safetensors.torch import load_model
    from transformers import AutoConfig

    path = _checkpoint_dir(Path(run_dir))
    if path is None:
        return None
    try:
        step = json.loads((path / "state.json").read_text())["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state.json holds step {step!r}")
        model = auto_model_class(objective).from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
        load_model(model, str(path / "model.safetensors"))
        entries: Dict[int, dict] = {}
        with safe_open(str(path / "optimizer.safetensors"), framework="pt") as f:
            groups = json.loads(f.metadata()["param_groups"])
            for name in f.keys():
                index, key = name.split(".", 1)
                entries.setdefault(int(index), {})[key] = f.get_tensor(name)
        for group in groups:
            group["betas"] = tuple(group["betas"])
    except Exception as error:  # noqa: BLE001 - JSON, safetensors, config: each is a corrupted checkpoint
        raise ValueError(f"the checkpoint in {str(path)!r} is unreadable ({type(error).__name__}: {error}); "
                         "remove it to start over") from error
    return model, {"state": entries, "param_groups": groups}, step
