"""The diffusion training recipe: turn a masked LM into a text-diffusion model.

A masked LM trained with BERT's fixed 15 % masking only ever sees nearly complete text. Drawing the
mask ratio per batch from 0.1 to 1.0 instead teaches it every stage of the absorbing-state
denoising process, from a fully masked canvas to the last few holes, so that
:class:`fastdiff.Sampler` can generate with it. The prompt prefix and special tokens are never
masked. The same loop trains a causal (GPT-2) model with the next-token objective, the reference
for the quality benchmark.

Three subcommands, one pipeline (``python -m fastdiff.train <command> --help`` for each)::

    python -m fastdiff.train prepare DATA            # corpus split, byte-level BPE, token streams
    python -m fastdiff.train fit --data DATA --out RUN [--steps N ...] [--max-minutes 9]
    python -m fastdiff.train export --run RUN --out MODEL_DIR      # fp16 Hugging Face directory

``fit`` resumes from ``RUN/checkpoint`` when it exists, so a long training can run in pieces: with
``--max-minutes`` it saves and exits with status 75 once the time is up, and the same command goes
on from there. Every random draw of a step (data order, masks, dropout) is derived from
``(seed, step)``, so a resumed run is bit-identical to an uninterrupted one on the same machine and
thread count.

The Python API: :class:`DiffusionCollator`, :class:`TrainConfig`, :func:`train`, :func:`prepare`,
:func:`export`.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from fastdiff import corpus
from fastdiff.model import ModelRunner

IGNORE_INDEX = -100
OBJECTIVES = ("diffusion", "causal")
# `fit` stopped by --max-minutes before its last step (EX_TEMPFAIL): run the same command again.
RESUME_EXIT_CODE = 75
# Held-out mask ratios of the diffusion evaluation loss (the mean over them is logged).
EVAL_MASK_RATIOS = (0.25, 0.5, 0.75, 1.0)

CHECKPOINT = "checkpoint"
RUN_CONFIG = "run.json"
LOG = "log.jsonl"


# ------------------------------------------------------------------------------------------------
# masking
# ------------------------------------------------------------------------------------------------
def _check_ratio(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


class DiffusionCollator:
    """Masks a batch for the diffusion objective.

    One mask ratio ``r`` is drawn per batch: uniformly from ``mask_ratio = (low, high)``, or taken
    from ``ratio_schedule`` (cycled by step). In each row, ``round(r * n)`` of its ``n`` maskable
    positions (at least one) are replaced by the mask token, chosen uniformly at random. A position is
    maskable unless it lies in the row's prompt prefix, holds a special token, or is padding.

    Args:
        mask_token_id: the mask token.
        special_token_ids: ids that are never masked (``<s>``, ``</s>``, ``<pad>``, ...).
        mask_ratio: ``(low, high)`` with ``0 < low <= high <= 1``: the range of the uniform draw.
        ratio_schedule: ratios in ``(0, 1]`` used in turn, batch ``step`` taking
            ``ratio_schedule[step % len]``; replaces the uniform draw.
        prefix_length: the first positions of each row that are never masked (the prompt): an int,
            or ``(low, high)`` to draw each row's length uniformly from ``low..high`` (inclusive).

    Example:
        >>> collator = DiffusionCollator(mask_token_id=4, special_token_ids=[0, 1, 2], prefix_length=2)
        >>> batch = collator(torch.tensor([[0, 10, 11, 12, 13, 2]]), generator=torch.Generator().manual_seed(0))
        >>> batch["input_ids"][0, :2].tolist(), batch["input_ids"][0, -1].item()
        ([0, 10], 2)
    """

    def __init__(self, mask_token_id: int, special_token_ids: Iterable[int] = (),
                 mask_ratio: Tuple[float, float] = (0.1, 1.0), ratio_schedule: Optional[Sequence[float]] = None,
                 prefix_length: Union[int, Tuple[int, int]] = 0):
        if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int) or mask_token_id < 0:
            raise TypeError(f"mask_token_id must be a non-negative int, got {mask_token_id!r}")
        special = list(special_token_ids)
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in special):
            raise TypeError(f"special_token_ids must be non-negative ints, got {special!r}")
        if not isinstance(mask_ratio, (tuple, list)) or len(mask_ratio) != 2:
            raise TypeError(f"mask_ratio must be a pair (low, high), got {mask_ratio!r}")
        low, high = (_check_ratio(v, "mask_ratio") for v in mask_ratio)
        if low > high:
            raise ValueError(f"mask_ratio must have low <= high, got {mask_ratio!r}")
        if ratio_schedule is not None:
            ratio_schedule = tuple(_check_ratio(v, "ratio_schedule") for v in ratio_schedule)
            if not ratio_schedule:
                raise ValueError("ratio_schedule must hold at least one ratio")
        if isinstance(prefix_length, int) and not isinstance(prefix_length, bool):
            prefix_length = (prefix_length, prefix_length)
        if (not isinstance(prefix_length, (tuple, list)) or len(prefix_length) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in prefix_length)):
            raise TypeError(f"prefix_length must be an int or a pair of ints, got {prefix_length!r}")
        if not 0 <= prefix_length[0] <= prefix_length[1]:
            raise ValueError(f"prefix_length must satisfy 0 <= low <= high, got {prefix_length!r}")
        self.mask_token_id = mask_token_id
        self.special_token_ids = torch.tensor(sorted(set(special) | {mask_token_id}), dtype=torch.int64)
        self.mask_ratio = (low, high)
        self.ratio_schedule = ratio_schedule
        self.prefix_length = tuple(prefix_length)

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> "DiffusionCollator":
        """A collator with the tokenizer's mask token and all its special tokens never masked.

        Args:
            tokenizer: a Hugging Face tokenizer with a ``mask_token``.
            **kwargs: the other arguments of :class:`DiffusionCollator`.
        """
        if tokenizer.mask_token_id is None:
            raise ValueError("tokenizer has no mask_token; add one before diffusion training")
        return cls(tokenizer.mask_token_id, tokenizer.all_special_ids, **kwargs)

    def draw_ratio(self, generator: Optional[torch.Generator] = None, step: int = 0) -> float:
        """The mask ratio of the batch at ``step``: from the schedule, else a uniform draw."""
        if self.ratio_schedule is not None:
            return self.ratio_schedule[step % len(self.ratio_schedule)]
        low, high = self.mask_ratio
        return low + (high - low) * float(torch.rand((), generator=generator))

    def maskable(self, input_ids: torch.Tensor, generator: Optional[torch.Generator] = None,
                 attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """bool ``[B, L]``: positions outside the (drawn) prefix that hold no special token or padding."""
        B, L = input_ids.shape
        low, high = self.prefix_length
        prefix = torch.randint(low, high + 1, (B,), generator=generator) if high > low else torch.full((B,), low)
        positions = torch.arange(L)
        allowed = (positions[None, :] >= prefix[:, None]).to(input_ids.device)
        allowed &= ~torch.isin(input_ids, self.special_token_ids.to(input_ids.device))
        if attention_mask is not None:
            allowed &= attention_mask.bool()
        return allowed

    def __call__(self, input_ids, *, generator: Optional[torch.Generator] = None, step: int = 0,
                 attention_mask: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Mask one batch.

        Args:
            input_ids: int ``[B, L]``, or a sequence of equal-length 1-D tensors. Not modified.
            generator: the source of randomness (``None``: torch's default generator).
            step: the training step, which picks the ratio from ``ratio_schedule``.
            attention_mask: ``[B, L]`` of 0/1; padding (0) is never masked.

        Returns:
            ``{"input_ids": int64 [B, L] with the mask token at the masked positions,
            "labels": int64 [B, L], the original token where masked and -100 elsewhere,
            "attention_mask": as given (or None), "mask_ratio": the batch's ratio (float)}``.
        """
        if isinstance(input_ids, (list, tuple)):
            input_ids = torch.stack(list(input_ids))
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise TypeError("input_ids must be an integer tensor [B, L] or a sequence of 1-D tensors")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask must have shape {tuple(input_ids.shape)}, "
                             f"got {tuple(attention_mask.shape)}")
        ids = input_ids.to(torch.int64)
        ratio = self.draw_ratio(generator, step)
        allowed = self.maskable(ids, generator, attention_mask)
        n_allowed = allowed.sum(dim=1)
        n_mask = torch.minimum(torch.round(ratio * n_allowed.double()).to(torch.int64).clamp(min=1), n_allowed)
        keys = torch.rand(ids.shape, generator=generator).to(ids.device).masked_fill(~allowed, 2.0)
        rank = torch.empty_like(ids).scatter_(1, keys.argsort(dim=1), torch.arange(ids.shape[1]).expand_as(ids).to(ids.device))
        masked = rank < n_mask[:, None]
        return {
            "input_ids": ids.masked_fill(masked, self.mask_token_id),
            "labels": torch.where(masked, ids, torch.full_like(ids, IGNORE_INDEX)),
            "attention_mask": attention_mask,
            "mask_ratio": ratio,
        }


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------
def diffusion_loss(model, input_ids: torch.Tensor, labels: torch.Tensor,
                   attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (``labels != -100``).

    For the masked-LM classes :class:`fastdiff.model.ModelRunner` knows, the LM head runs only on the
    masked rows (the same logits as the full head, at a fraction of its cost); other models run whole.

    Args:
        model: a Hugging Face masked LM (or anything :class:`~fastdiff.model.ModelRunner` accepts).
        input_ids: int ``[B, L]`` with mask tokens.
        labels: int ``[B, L]``: targets at masked positions, -100 elsewhere.
        attention_mask: optional ``[B, L]``.

    Returns:
        A scalar fp32 tensor.
    """
    runner = ModelRunner(model)
    selected = labels != IGNORE_INDEX
    if runner.has_head:
        hidden = runner.encode(input_ids, attention_mask)
        logits = runner.head(hidden[selected])
        return F.cross_entropy(logits.float(), labels[selected])
    logits = runner(input_ids, attention_mask)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


def causal_loss(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM over every position after the first."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten())


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer ``parts`` (NumPy's ``SeedSequence``)."""
    words = np.random.SeedSequence([seed, *parts]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


# tags of the independent random streams derived from the run's seed
_DATA, _MASK, _DROPOUT, _EVAL, _INIT = range(5)


def window_starts(stream: corpus.TokenStream, length: int) -> torch.Tensor:
    """Offsets of non-overlapping windows of ``length - 1`` stream tokens (a window gets ``<s>`` in
    front), each beginning at a line start, taken greedily from the start of the stream."""
    span = length - 1
    total = len(stream.ids)
    starts, free_from = [], 0
    for start in stream.line_starts.tolist():
        if start >= free_from and start + span <= total:
            starts.append(start)
            free_from = start + span
    return torch.tensor(starts, dtype=torch.int64)


def windows(stream: corpus.TokenStream, starts: torch.Tensor, bos_token_id: int, length: int) -> torch.Tensor:
    """int64 ``[len(starts), length]``: ``<s>`` followed by ``length - 1`` stream tokens from each start."""
    offsets = starts[:, None] + torch.arange(length - 1)[None, :]
    body = stream.ids[offsets]
    return torch.cat([torch.full((len(starts), 1), bos_token_id, dtype=torch.int64), body], dim=1)


@lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n_windows: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(derive_seed(seed, _DATA, epoch))
    return torch.randperm(n_windows, generator=generator)


def batch_window_indices(step: int, batch_size: int, n_windows: int, seed: int) -> torch.Tensor:
    """The windows of the batch at ``step``: epochs are seeded permutations of all windows, read in
    order, so the batch depends only on ``(seed, step)``."""
    position = step * batch_size + torch.arange(batch_size)
    epochs, within = position // n_windows, position % n_windows
    return torch.stack([_epoch_order(seed, int(e), n_windows)[int(i)] for e, i in zip(epochs, within)])


def prepare(out_dir: Union[str, Path], source: Optional[Union[str, Path]] = None, heldout_percent: float = 5.0,
            vocab_size: int = 4096, tokenizer_dir: Optional[Union[str, Path]] = None) -> dict:
    """Build a training data directory: split, tokenizer and token streams.

    Writes ``out_dir/tokenizer/`` (Hugging Face files), ``out_dir/train.safetensors`` and
    ``out_dir/heldout.safetensors`` (:class:`fastdiff.corpus.TokenStream`), and
    ``out_dir/manifest.json`` (Python version, source root, the files of each side, files skipped as
    non-UTF-8, corpus fingerprints, token counts, the tokenizer's SHA-256).

    Args:
        out_dir: the directory to write (created).
        source: a directory of ``.py`` files; ``None`` for this Python's standard library.
        heldout_percent: share of files held out (by a hash of their path).
        vocab_size: size of the byte-level BPE vocabulary trained on the train files.
        tokenizer_dir: use this existing Hugging Face tokenizer instead of training one (to fine-tune a
            model that has its own); it must have a mask and an EOS token.

    Returns:
        The manifest (a dict).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = corpus.stdlib_root() if source is None else Path(source)
    files = corpus.source_files(None if source is None else root)
    train_files, heldout_files = corpus.split_files(files, heldout_percent)
    train_texts = corpus.read_sources(root, train_files)
    heldout_texts = corpus.read_sources(root, heldout_files)
    if not train_texts:
        raise ValueError(f"source {str(root)!r} holds no readable .py file for training")
    if tokenizer_dir is None:
        tokenizer = corpus.train_tokenizer([text for _, text in train_texts], vocab_size=vocab_size)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        if tokenizer.mask_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("tokenizer_dir must hold a tokenizer with a mask token and an EOS token")
    tokenizer.save_pretrained(str(out / "tokenizer"))
    train_stream = corpus.tokenize_texts(tokenizer, [text for _, text in train_texts])
    heldout_stream = corpus.tokenize_texts(tokenizer, [text for _, text in heldout_texts])
    train_stream.save(out / "train.safetensors")
    heldout_stream.save(out / "heldout.safetensors")
    kept = {name for name, _ in train_texts + heldout_texts}
    manifest = {
        "python": sys.version,
        "source_root": str(root),
        "standard_library": source is None,
        "heldout_percent": heldout_percent,
        "train_files": [name for name, _ in train_texts],
        "heldout_files": [name for name, _ in heldout_texts],
        "skipped_non_utf8": [name for name in files if name not in kept],
        "train_fingerprint": corpus.corpus_fingerprint(train_texts),
        "heldout_fingerprint": corpus.corpus_fingerprint(heldout_texts),
        "train_tokens": len(train_stream.ids),
        "heldout_tokens": len(heldout_stream.ids),
        "vocab_size": len(tokenizer),
        "tokenizer_sha256": _sha256(out / "tokenizer" / "tokenizer.json"),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _versions() -> dict:
    import platform

    import tokenizers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "cpu": platform.processor() or platform.machine()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class PreparedData:
    """A data directory written by :func:`prepare`, loaded."""

    tokenizer: object
    train: corpus.TokenStream
    heldout: corpus.TokenStream
    manifest: dict

    @classmethod
    def load(cls, data_dir: Union[str, Path]) -> "PreparedData":
        from transformers import AutoTokenizer

        data = Path(data_dir)
        missing = [n for n in ("tokenizer", "train.safetensors", "heldout.safetensors", "manifest.json")
                   if not (data / n).exists()]
        if missing:
            raise ValueError(f"data directory {str(data)!r} lacks {', '.join(missing)}: "
                             "build it with `python -m fastdiff.train prepare`")
        tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"), local_files_only=True)
        return cls(tokenizer=tokenizer, train=corpus.TokenStream.load(data / "train.safetensors"),
                   heldout=corpus.TokenStream.load(data / "heldout.safetensors"),
                   manifest=json.loads((data / "manifest.json").read_text()))


# ------------------------------------------------------------------------------------------------
# the training run
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything that determines a training run (``max_minutes``, ``stop_at_step``, ``threads``,
    ``device`` and ``progress`` only say how this piece runs; see :data:`RUNTIME_FIELDS`).

    Attributes:
        data: a data directory written by :func:`prepare`.
        output_dir: the run directory: ``run.json``, ``log.jsonl``, ``checkpoint/``.
        objective: ``"diffusion"`` (masked LM, variable mask ratio) or ``"causal"`` (next token).
        init_from: a local Hugging Face model directory to fine-tune; ``None`` trains from scratch a
            model of ``architecture`` and the size below.
        architecture: the from-scratch model (:data:`ARCHITECTURES`): ``"modernbert"``
            (``ModernBertForMaskedLM``: rotary positions, pre-norm, GeGLU; every layer global) or
            ``"roberta"`` (``RobertaForMaskedLM``) for ``"diffusion"``; ``"gpt2"`` (``GPT2LMHeadModel``)
            for ``"causal"``. ``None``: ``"modernbert"`` or ``"gpt2"``. (On a CPU budget, RoBERTa's
            learned absolute positions kept it at the unigram loss for hundreds of steps where
            ModernBERT's rotary positions started using the context: see ``training/README.md``.)
        hidden_size, num_layers, num_heads, intermediate_size, dropout: the from-scratch model
            (``intermediate_size`` is the GeGLU width for ModernBERT).
        initializer_range: standard deviation of its initial weights (embeddings included).
        seq_length: tokens per training window (``<s>`` included); the model gets exactly this many
            positions when built from scratch.
        batch_size, steps: windows per step and optimizer steps in all.
        learning_rate, warmup_steps, min_lr_ratio: linear warm-up to ``learning_rate``, then cosine
            decay to ``min_lr_ratio * learning_rate`` at the last step.
        weight_decay, adam_betas, adam_eps, grad_clip: AdamW and gradient-norm clipping.
        mask_ratio, mask_ratio_schedule, prefix_length: the :class:`DiffusionCollator` options.
        seed: every random draw derives from it and the step.
        save_every, log_every, eval_every, eval_windows: checkpoint, log and held-out-loss intervals
            (in steps) and the number of held-out windows evaluated.
        max_minutes: stop (saving a checkpoint) after the first step that ends past this many minutes.
        stop_at_step: stop (saving a checkpoint) once this many steps are done.
        threads: torch CPU threads (results are bit-exact only for the same count).
        device: ``"cpu"``, ``"cuda"``...
        progress: show a tqdm progress bar.
    """

    data: str
    output_dir: str
    objective: str = "diffusion"
    init_from: Optional[str] = None
    architecture: Optional[str] = None
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    dropout: float = 0.0
    initializer_range: float = 0.02
    seq_length: int = 256
    batch_size: int = 16
    steps: int = 600
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    adam_betas: Tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    mask_ratio: Tuple[float, float] = (0.1, 1.0)
    mask_ratio_schedule: Optional[Tuple[float, ...]] = None
    prefix_length: Tuple[int, int] = (0, 0)
    seed: int = 0
    save_every: int = 50
    log_every: int = 10
    eval_every: int = 100
    eval_windows: int = 32
    max_minutes: Optional[float] = None
    stop_at_step: Optional[int] = None
    threads: int = 2
    device: str = "cpu"
    progress: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` / ``TypeError`` naming the first bad field."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.architecture is not None and ARCHITECTURES.get(self.architecture) != self.objective:
            fitting = [name for name, objective in ARCHITECTURES.items() if objective == self.objective]
            raise ValueError(f"architecture must be one of {fitting} for objective={self.objective!r}, "
                             f"got {self.architecture!r}")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "seq_length", "batch_size",
                     "steps", "save_every", "log_every", "eval_every", "eval_windows", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("warmup_steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.seq_length < 2:
            raise ValueError(f"seq_length must be >= 2, got {self.seq_length}")
        for name in ("learning_rate", "min_lr_ratio", "weight_decay", "grad_clip", "initializer_range", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.learning_rate <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("learning_rate must be > 0 and min_lr_ratio in [0, 1]")
        if not self.initializer_range > 0:
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.stop_at_step is not None and (isinstance(self.stop_at_step, bool) or not isinstance(
                self.stop_at_step, int) or self.stop_at_step <= 0):
            raise ValueError(f"stop_at_step must be a positive int, got {self.stop_at_step!r}")
        if self.init_from is None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})")
        DiffusionCollator(0, mask_ratio=tuple(self.mask_ratio), ratio_schedule=self.mask_ratio_schedule,
                          prefix_length=tuple(self.prefix_length))  # checks the masking options

    def identity(self) -> dict:
        """The fields that determine the result (everything but :data:`RUNTIME_FIELDS`), JSON-ready."""
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k not in RUNTIME_FIELDS}


# the from-scratch architectures and the objective each serves
ARCHITECTURES = {"modernbert": "diffusion", "roberta": "diffusion", "gpt2": "causal"}
RUNTIME_FIELDS = frozenset({"max_minutes", "stop_at_step", "threads", "device", "progress", "output_dir"})


def learning_rate_at(config: TrainConfig, step: int) -> float:
    """The learning rate of (0-based) ``step``: linear warm-up, then cosine decay to the floor."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    decay_steps = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / decay_steps, 1.0)
    floor = config.min_lr_ratio
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _model_classes(objective: str):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForMaskedLM if objective == "diffusion" else AutoModelForCausalLM


def build_model(config: TrainConfig, tokenizer):
    """The model a run starts from: ``init_from`` loaded offline, or a fresh one seeded from ``seed``.

    From scratch: the config's ``architecture`` with ``seq_length`` positions (after RoBERTa's padding
    offset) and the tokenizer's vocabulary and special-token ids.
    """
    if config.init_from is not None:
        model = _model_classes(config.objective).from_pretrained(config.init_from, local_files_only=True,
                                                                 dtype=torch.float32)
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(f"init_from's vocabulary ({model.config.vocab_size}) is smaller than the "
                             f"tokenizer's ({len(tokenizer)}); prepare the data with its tokenizer")
    else:
        from transformers import (GPT2Config, GPT2LMHeadModel, ModernBertConfig, ModernBertForMaskedLM,
                                  RobertaConfig, RobertaForMaskedLM)

        torch.manual_seed(derive_seed(config.seed, _INIT))
        ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
        architecture = config.architecture or ("modernbert" if config.objective == "diffusion" else "gpt2")
        if architecture == "modernbert":
            rope = {"rope_type": "default", "rope_theta": 10000.0}
            model = ModernBertForMaskedLM(ModernBertConfig(
                vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
                max_position_embeddings=config.seq_length, layer_types=["full_attention"] * config.num_layers,
                rope_parameters={"full_attention": rope, "sliding_attention": rope},
                attention_dropout=config.dropout, embedding_dropout=config.dropout, mlp_dropout=config.dropout,
                initializer_range=config.initializer_range, cls_token_id=tokenizer.bos_token_id,
                sep_token_id=tokenizer.eos_token_id, **ids))
        elif architecture == "roberta":
            model = RobertaForMaskedLM(RobertaConfig(
                vocab_size=len(tokenizer), hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
                max_position_embeddings=config.seq_length + tokenizer.pad_token_id + 1, type_vocab_size=1,
                hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
                initializer_range=config.initializer_range, **ids))
        else:
            model = GPT2LMHeadModel(GPT2Config(
                vocab_size=len(tokenizer), n_embd=config.hidden_size, n_layer=config.num_layers,
                n_head=config.num_heads, n_inner=config.intermediate_size, n_positions=config.seq_length,
                resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                initializer_range=config.initializer_range, **ids))
    limit = ModelRunner(model).max_length
    if limit is not None and config.seq_length > limit:
        raise ValueError(f"seq_length ({config.seq_length}) exceeds the model's {limit} positions")
    return model


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.dim() < 2 or "norm" in name.lower() else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.adam_betas), eps=config.adam_eps,
                             foreach=False)


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
        model = _model_classes(objective).from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
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


def _check_run(run_dir: Path, config: TrainConfig) -> None:
    """Record the run's identity on its first piece; later pieces must match it."""
    path = run_dir / RUN_CONFIG
    identity = config.identity()
    if path.exists():
        try:
            recorded = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{str(path)!r} is not JSON ({error}): the run's record is corrupted") from None
        recorded = {k: v for k, v in recorded.items() if k not in RUNTIME_FIELDS}  # older runs recorded output_dir
        differing = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
        if differing:
            raise ValueError(f"output_dir {str(run_dir)!r} holds a run with other settings ({', '.join(differing)}); "
                             "use a new output_dir or the same settings to resume")
    else:
        path.write_text(json.dumps(identity, indent=1) + "\n")


def _log(run_dir: Path, record: dict) -> None:
    with open(run_dir / LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def _read_log(run_dir: Path) -> List[dict]:
    """The records of ``log.jsonl``, after cutting off a last line that a crash left unfinished."""
    path = run_dir / LOG
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) - 1 and any(rest.strip() for rest in lines[number + 1:]):
                raise ValueError(f"{str(path)!r} line {number + 1} is not JSON: the log is corrupted") from None
            path.write_text("".join(kept + "\n" for kept in lines[:number] if kept.strip()))  # torn last line
    return records


def _eval_batches(config: TrainConfig, data: PreparedData) -> List[torch.Tensor]:
    starts = window_starts(data.heldout, config.seq_length)
    if len(starts) == 0:
        return []
    picked = starts[torch.linspace(0, len(starts) - 1, min(config.eval_windows, len(starts))).long()]
    batch = windows(data.heldout, picked, data.tokenizer.bos_token_id, config.seq_length)
    return list(batch.split(config.batch_size))


@torch.no_grad()
def evaluate(model: torch.nn.Module, config: TrainConfig, data: PreparedData,
             batches: Optional[List[torch.Tensor]] = None) -> Optional[float]:
    """Held-out loss: for ``"diffusion"`` the mean over :data:`EVAL_MASK_RATIOS` of the masked-token
    cross-entropy (masks from a fixed seed), for ``"causal"`` the next-token cross-entropy."""
    batches = _eval_batches(config, data) if batches is None else batches
    if not batches:
        return None
    device = torch.device(config.device)
    was_training = model.training
    model.eval()
    losses = []
    tokenizer = data.tokenizer
    for index, batch in enumerate(batches):
        batch = batch.to(device)
        if config.objective == "causal":
            losses.append(float(causal_loss(model, batch)))
            continue
        for ratio in EVAL_MASK_RATIOS:
            collator = DiffusionCollator.from_tokenizer(tokenizer, ratio_schedule=(ratio,))
            generator = torch.Generator().manual_seed(derive_seed(config.seed, _EVAL, index))
            masked = collator(batch.cpu(), generator=generator)
            losses.append(float(diffusion_loss(model, masked["input_ids"].to(device), masked["labels"].to(device))))
    model.train(was_training)
    return sum(losses) / len(losses)


def train(config: TrainConfig) -> dict:
    """Train (or go on training) the run of ``config``.

    Starts from ``output_dir/checkpoint`` when there is one. Each step's randomness is derived from
    ``(seed, step)``: the windows (a seeded permutation per epoch), the mask ratio and positions, and
    dropout. With the same thread count the result is bit-identical however the run is cut into
    pieces. Deterministic algorithms are switched on for the call (and restored after).

    Args:
        config: a :class:`TrainConfig`.

    Returns:
        ``{"step": steps done, "finished": bool, "loss": the last logged training loss or None}``.
    """
    from tqdm.auto import tqdm

    config.validate()
    run_dir = Path(config.output_dir)
    data = PreparedData.load(config.data)
    starts = window_starts(data.train, config.seq_length)
    if len(starts) == 0:
        raise ValueError(f"the training stream is shorter than seq_length={config.seq_length}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"output_dir {str(run_dir)!r} is not writable: {error.strerror or error}") from None
    _check_run(run_dir, config)
    tokenizer = data.tokenizer
    device = torch.device(config.device)
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    try:
        checkpoint = load_checkpoint(run_dir, config.objective)
        if checkpoint is None:
            model, optimizer_state, start = build_model(config, tokenizer), None, 0
        else:
            model, optimizer_state, start = checkpoint
        model.to(device).train()
        optimizer = _optimizer(model, config)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        collator = DiffusionCollator.from_tokenizer(
            tokenizer, mask_ratio=tuple(config.mask_ratio), ratio_schedule=config.mask_ratio_schedule,
            prefix_length=tuple(config.prefix_length)) if config.objective == "diffusion" else None
        eval_batches = _eval_batches(config, data)
        piece = 1 + sum(1 for record in _read_log(run_dir) if record.get("event") == "piece_start")
        began = time.perf_counter()
        _log(run_dir, {"event": "piece_start", "piece": piece, "step": start, "threads": config.threads,
                       "device": config.device, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       "parameters": sum(p.numel() for p in model.parameters())})
        window_losses, window_ratios, last_loss, step = [], [], None, start
        bar = tqdm(total=config.steps, initial=start, disable=not config.progress, desc=f"{config.objective} fit",
                   dynamic_ncols=True)
        for step in range(start, config.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(config, step)
            torch.manual_seed(derive_seed(config.seed, _DROPOUT, step))
            batch = windows(data.train, starts[batch_window_indices(step, config.batch_size, len(starts), config.seed)],
                            tokenizer.bos_token_id, config.seq_length)
            if collator is None:
                loss = causal_loss(model, batch.to(device))
            else:
                generator = torch.Generator().manual_seed(derive_seed(config.seed, _MASK, step))
                masked = collator(batch, generator=generator, step=step)
                window_ratios.append(masked["mask_ratio"])
                loss = diffusion_loss(model, masked["input_ids"].to(device), masked["labels"].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            window_losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{window_losses[-1]:.3f}")
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                last_loss = sum(window_losses) / len(window_losses)
                record = {"step": done, "loss": round(last_loss, 5), "lr": learning_rate_at(config, step),
                          "grad_norm": round(float(grad_norm), 4), "piece": piece,
                          "elapsed_s": round(time.perf_counter() - began, 1)}
                if window_ratios:
                    record["mask_ratio"] = round(sum(window_ratios) / len(window_ratios), 4)
                _log(run_dir, record)
                window_losses, window_ratios = [], []
            if done % config.eval_every == 0 or done == config.steps:
                eval_loss = evaluate(model, config, data, eval_batches)
                if eval_loss is not None:
                    _log(run_dir, {"step": done, "eval_loss": round(eval_loss, 5), "piece": piece})
            stop = ((config.max_minutes is not None and time.perf_counter() - began > 60 * config.max_minutes)
                    or done == config.stop_at_step)
            if done % config.save_every == 0 or done == config.steps or stop:
                save_checkpoint(run_dir, model, optimizer, done)
            if stop and done < config.steps:
                step = done
                break
        else:
            step = config.steps
        bar.close()
        _log(run_dir, {"event": "piece_end", "piece": piece, "step": step,
                       "elapsed_s": round(time.perf_counter() - began, 1)})
        return {"step": step, "finished": step >= config.steps, "loss": last_loss}
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def export(run_dir: Union[str, Path], out_dir: Union[str, Path], dtype: torch.dtype = torch.float16) -> dict:
    """Write a run's checkpoint as a standard Hugging Face model directory.

    ``out_dir`` gets ``config.json``, one ``model.safetensors`` in ``dtype``, the run's tokenizer
    (``model_max_length`` set to the training window) and ``training.json`` (the run's settings, the
    corpus manifest summary, the steps done and the weights' SHA-256). It loads offline with
    ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM`` and ``AutoTokenizer``.

    Args:
        run_dir: a run directory of :func:`train`.
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
    data = PreparedData.load(settings["data"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(str(out))
    (out / "model.safetensors").chmod(0o644)  # written 0600 through a temporary file
    tokenizer = data.tokenizer
    tokenizer.model_max_length = settings["seq_length"]
    tokenizer.save_pretrained(str(out))
    manifest = data.manifest
    info = {
        "steps_done": step,
        "settings": {k: v for k, v in settings.items() if k not in ("data", "output_dir")},
        "corpus": {k: manifest[k] for k in ("python", "standard_library", "heldout_percent", "train_fingerprint",
                                            "heldout_fingerprint", "train_tokens", "heldout_tokens",
                                            "tokenizer_sha256")},
        "corpus_files": {"train": len(manifest["train_files"]), "heldout": len(manifest["heldout_files"])},
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": _sha256(out / "model.safetensors"),
        "versions": _versions(),
    }
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def _pair(kind):
    def parse(text: str):
        parts = text.replace(",", ":").split(":")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected VALUE or LOW:HIGH, got {text!r}")
        return tuple(kind(p) for p in parts)
    return parse


def _ratios(text: str) -> Tuple[float, ...]:
    return tuple(float(p) for p in text.split(",") if p)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastdiff.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{prepare,fit,export}")

    prep = commands.add_parser("prepare", help="split the corpus, train the tokenizer, tokenise",
                               description=prepare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    prep.add_argument("out", help="data directory to write")
    prep.add_argument("--source", help="directory of .py files (default: this Python's standard library)")
    prep.add_argument("--heldout-percent", type=float, default=5.0, help="share of files held out (default 5)")
    prep.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (default 4096)")
    prep.add_argument("--tokenizer", help="an existing Hugging Face tokenizer directory to use instead of training one")

    defaults = TrainConfig(data="", output_dir="")
    fit = commands.add_parser("fit", help="train or fine-tune (resumes from RUN/checkpoint)",
                              description=train.__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fit.add_argument("--data", required=True, help="data directory from `prepare`")
    fit.add_argument("--out", required=True, dest="output_dir", help="run directory (checkpoint, log.jsonl)")
    fit.add_argument("--objective", choices=OBJECTIVES, default=defaults.objective)
    fit.add_argument("--init-from", help="local HF model directory to fine-tune (default: train from scratch)")
    fit.add_argument("--architecture", choices=tuple(ARCHITECTURES),
                     help="from-scratch model (default: modernbert for diffusion, gpt2 for causal)")
    group = fit.add_argument_group("model built from scratch")
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
        group.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    group.add_argument("--dropout", type=float, default=defaults.dropout)
    group.add_argument("--initializer-range", type=float, default=defaults.initializer_range,
                       help="standard deviation of the initial weights")
    group = fit.add_argument_group("optimisation")
    for name in ("seq_length", "batch_size", "steps", "warmup_steps", "seed"):
        group.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "min_lr_ratio", "weight_decay", "adam_eps", "grad_clip"):
        group.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    group.add_argument("--adam-betas", type=_pair(float), default=defaults.adam_betas, help="BETA1:BETA2")
    group = fit.add_argument_group("diffusion masking")
    group.add_argument("--mask-ratio", type=_pair(float), default=defaults.mask_ratio,
                       help="LOW:HIGH range of the per-batch mask ratio (uniform)")
    group.add_argument("--mask-ratio-schedule", type=_ratios, default=None,
                       help="comma-separated ratios used in turn, one per batch (replaces the uniform draw)")
    group.add_argument("--prefix-length", type=_pair(int), default=defaults.prefix_length,
                       help="N or LOW:HIGH: leading positions never masked, drawn per row")
    group = fit.add_argument_group("running")
    for name in ("save_every", "log_every", "eval_every", "eval_windows", "threads"):
        group.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    group.add_argument("--max-minutes", type=float, default=None,
                       help=f"save and exit with status {RESUME_EXIT_CODE} after the step that passes this time")
    group.add_argument("--stop-at-step", type=int, default=None,
                       help=f"save and exit with status {RESUME_EXIT_CODE} once this many steps are done")
    group.add_argument("--device", default=defaults.device)
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    exp = commands.add_parser("export", help="write a run's checkpoint as a Hugging Face model directory",
                              description=export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    exp.add_argument("--run", required=True, help="run directory")
    exp.add_argument("--out", required=True, help="model directory to write")
    exp.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = vars(_parser().parse_args(argv))
    try:
        return _run_command(args.pop("command"), args)
    except (ValueError, TypeError) as error:
        print(f"fastdiff.train: error: {error}", file=sys.stderr)
        return 1


def _run_command(command: str, args: dict) -> int:
    if command == "prepare":
        manifest = prepare(args["out"], source=args["source"], heldout_percent=args["heldout_percent"],
                           vocab_size=args["vocab_size"], tokenizer_dir=args["tokenizer"])
        print(json.dumps({k: v for k, v in manifest.items() if not k.endswith("_files") and k != "skipped_non_utf8"},
                         indent=1))
        return 0
    if command == "export":
        info = export(args["run"], args["out"], dtype=getattr(torch, args["dtype"]))
        print(json.dumps(info, indent=1))
        return 0
    result = train(TrainConfig(**args))
    print(json.dumps(result))
    if not result["finished"]:
        print(f"stopped at step {result['step']}: run the same command again to resume", file=sys.stderr)
        return RESUME_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
