"""Exporting a run's checkpoint as a standard Hugging Face model directory (:func:`export`)."""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Union

import torch

from fastdiff.training.checkpoint import load_checkpoint
from fastdiff.training.data import PreparedData, file_sha256
from fastdiff.training.records import RUN_CONFIG

# settings that shape only a model built from scratch: a fine-tuned run's model is its base's
FROM_SCRATCH_SETTINGS = ("architecture", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                         "initializer_range")


def export(run_dir: Union[str, Path], out_dir: Union[str, Path], dtype: torch.dtype = torch.float16) -> dict:
    """Write a run's checkpoint as a standard Hugging Face model directory.

    ``out_dir`` gets ``config.json``, one ``model.safetensors`` in ``dtype``, the run's tokenizer
    (``model_max_length`` set to the training window) and ``training.json``: the run's settings, the
    corpus manifest summary, the steps done, the base model of a fine-tuned run (whose ``config.json``
    then gives the architecture: the from-scratch size settings are left out) and the weights'
    SHA-256. It loads offline with ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM`` and
    ``AutoTokenizer``.

    Args:
        run_dir: a run directory of :func:`fastdiff.training.loop.train`.
        out_dir: the directory to write (created; existing files are overwritten).
        dtype: the weights' dtype.

    Returns:
        The content of ``training.json``.
    """
    run = Path(run_dir)
    if not (run / RUN_CONFIG).exists():
        raise ValueError(f"run_dir {str(run)!r} is not a training run (no {RUN_CONFIG})")
    settings = json.loads((run / RUN_CONFIG).read_text())
    checkpoint = load_checkpoint(run, settings["objective"])
    if checkpoint is None:
        raise ValueError(f"run_dir {str(run)!r} has no checkpoint yet")
    model, _, step = checkpoint
    base_model = _base_model(settings.get("init_from"))
    data = PreparedData.load(settings["data"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(str(out))
    (out / "model.safetensors").chmod(0o644)  # written 0600 through a temporary file
    tokenizer = data.tokenizer
    tokenizer.model_max_length = settings["seq_length"]
    tokenizer.save_pretrained(str(out))
    manifest = data.manifest
    left_out = ("data", "output_dir") + (FROM_SCRATCH_SETTINGS if base_model else ())
    info = {
        "steps_done": step,
        "settings": {k: v for k, v in settings.items() if k not in left_out},
        "corpus": {k: manifest[k] for k in ("corpus_kind", "python", "standard_library", "heldout_percent",
                                            "train_fingerprint", "heldout_fingerprint", "train_tokens",
                                            "heldout_tokens", "tokenizer_sha256", "packages") if k in manifest},
        "corpus_files": {"train": len(manifest["train_files"]), "heldout": len(manifest["heldout_files"])},
        "parameters": sum(p.numel() for p in model.parameters()),
        **({"base_model": base_model} if base_model else {}),
        "weights_sha256": file_sha256(out / "model.safetensors"),
        "versions": _versions(),
    }
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _base_model(init_from) -> dict:
    """What a fine-tuned run started from: its directory's name, the model id its config records and the
    ``provenance.json`` beside it (name, licence, where it came from), when there is one."""
    if not init_from:
        return {}
    directory = Path(init_from)
    record = {"directory": directory.name}
    config = directory / "config.json"
    if config.exists():
        record["name_or_path"] = json.loads(config.read_text()).get("_name_or_path")
    provenance = directory / "provenance.json"
    if provenance.exists():
        record.update(json.loads(provenance.read_text()))
    return record


def _versions() -> dict:
    """The versions and the CPU that made the weights (bit-identical results need the same)."""
    import tokenizers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "cpu": platform.processor() or platform.machine()}
