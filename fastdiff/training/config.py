"""The settings of a training run (:class:`TrainConfig`) and its learning-rate schedule."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from fastdiff.training.collator import DiffusionCollator

OBJECTIVES = ("diffusion", "causal")
# the from-scratch architectures and the objective each serves
ARCHITECTURES = {"modernbert": "diffusion", "roberta": "diffusion", "gpt2": "causal"}
RUNTIME_FIELDS = frozenset({"max_minutes", "stop_at_step", "threads", "device", "progress", "output_dir"})


@dataclass
class TrainConfig:
    """Everything that determines a training run (``max_minutes``, ``stop_at_step``, ``threads``,
    ``device`` and ``progress`` only say how this piece runs; see :data:`RUNTIME_FIELDS`).

    Attributes:
        data: a data directory written by :func:`fastdiff.training.data.prepare`.
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
        mask_ratio, mask_ratio_schedule, prefix_length: the
            :class:`~fastdiff.training.collator.DiffusionCollator` options.
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


def learning_rate_at(config: TrainConfig, step: int) -> float:
    """The learning rate of (0-based) ``step``: linear warm-up, then cosine decay to the floor."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    decay_steps = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / decay_steps, 1.0)
    floor = config.min_lr_ratio
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
