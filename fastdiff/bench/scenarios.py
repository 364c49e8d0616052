"""The benchmark suite's sizes and scenarios: which models, shapes and methods one run times, and what
its results file records of them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

# The seed blog's sampling settings, used by GPT-2 sampling, the naive loop's filters and fastdiff.
SEED_TOP_K = 50
SEED_TOP_P = 0.95
SEED_TEMPERATURE = 0.8
SEED_STEPS = 10

FASTDIFF_BACKENDS = {  # method -> (backend, cuda_graphs)
    "fastdiff-torch": ("torch", False),
    "fastdiff-triton": ("triton", False),
    "fastdiff-triton-graphs": ("triton", True),
}

# Peers every result is compared with, at the same batch size. "llada-eager" is compared at the same
# step count as the result (rows without a step count have no LLaDA speedup).
PEER_METHODS = ("gpt2-hf-greedy", "gpt2-hf-sample", "gpt2-hf-static", "gpt2-static-graph", "seed-naive",
                "seed-batched", "llada-eager")

LABELS = {
    "fastdiff-torch": "fastdiff, torch ops",
    "fastdiff-triton": "fastdiff, Triton kernels",
    "fastdiff-triton-graphs": "fastdiff, Triton + CUDA graphs",
    "gpt2-hf-greedy": "GPT-2 HF generate, greedy",
    "gpt2-hf-sample": "GPT-2 HF generate, sampling",
    "gpt2-hf-static": "GPT-2 HF generate, static cache (eager), greedy",
    "gpt2-static-graph": "GPT-2 static KV cache + CUDA graph (own loop), greedy",
    "seed-naive": "seed blog's naive diffusion loop",
    "seed-batched": "seed blog's loop, every position drawn in one batched call",
    "llada-eager": "LLaDA-style eager loop",
}


# --------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SuiteSize:
    """Models and shapes of one benchmark size.

    Attributes:
        name: ``"cpu"``, ``"gpu"`` or a custom name.
        roberta: ``RobertaConfig`` keyword arguments of the masked LM (random init).
        gpt2: ``GPT2Config`` keyword arguments of the autoregressive peer (random init).
        dtype: model dtype name (``"float32"``, ``"bfloat16"``).
        prompt_length: prompt tokens per row.
        gen_length: generated tokens per row.
        batch_sizes: batch sizes to run.
        steps: fastdiff / LLaDA step counts.
        repeats: timed runs per scenario (the median is reported).
        warmup: untimed runs before them.
        threads: ``torch.set_num_threads`` for the run; ``None`` leaves torch's default. The CPU size runs
            on one thread: on a shared 2-core machine two threads per op make tiny ops wait on each other
            (ten times slower addmm measured here under load), which would turn the timings into noise.
    """

    name: str
    roberta: Dict[str, int]
    gpt2: Dict[str, int]
    dtype: str
    prompt_length: int
    gen_length: int
    batch_sizes: Sequence[int]
    steps: Sequence[int]
    repeats: int
    warmup: int
    threads: Optional[int] = None

    @property
    def mask_token_id(self) -> int:
        """The last id of the masked LM's vocabulary, as in RoBERTa (50264 of 50265)."""
        return self.roberta["vocab_size"] - 1

    @property
    def eos_token_id(self) -> int:
        return self.gpt2["eos_token_id"]


SIZES = {
    # Small random-init models (2 layers, width 128, vocabulary 1024) on a short canvas, single-threaded, so
    # that the whole suite takes a few minutes on 2 shared cores: 16 prompt + 48 generated tokens, 2 / 5 / 12 /
    # 48 steps (24, 9.6, 4 and 1 tokens per step, as 10 / 24 / 60 / 240 steps are for 240 tokens), batches
    # 1 and 4.
    "cpu": SuiteSize(
        name="cpu",
        roberta=dict(vocab_size=1024, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=512, max_position_embeddings=514),
        gpt2=dict(vocab_size=1024, n_embd=128, n_layer=2, n_head=4, n_positions=1024, bos_token_id=1023,
                  eos_token_id=1023),
        dtype="float32", prompt_length=16, gen_length=48, batch_sizes=(1, 4), steps=(2, 5, 12, 48),
        repeats=3, warmup=1, threads=1,
    ),
    # RoBERTa-base-sized masked LM and GPT-2 small (124M), bf16.
    "gpu": SuiteSize(
        name="gpu",
        roberta=dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=514),
        gpt2=dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024, bos_token_id=50256,
                  eos_token_id=50256),
        dtype="bfloat16", prompt_length=16, gen_length=240, batch_sizes=(1, 8, 64), steps=(10, 24, 60, 240),
        repeats=3, warmup=1, threads=None,
    ),
}


# --------------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """One timed configuration: a method at one batch size (and step count)."""

    method: str
    batch: int
    steps: Optional[int] = None

    @property
    def name(self) -> str:
        steps = f"-s{self.steps}" if self.steps is not None else ""
        return f"{self.method}{steps}-b{self.batch}"

    @property
    def label(self) -> str:
        return LABELS[self.method]


def scenarios_for(size: SuiteSize) -> List[Scenario]:
    """Every scenario of ``size``, batch by batch: the GPT-2 peers, the naive loops, then fastdiff."""
    out = []
    for batch in size.batch_sizes:
        out += [Scenario(m, batch) for m in ("gpt2-hf-greedy", "gpt2-hf-sample", "gpt2-hf-static",
                                             "gpt2-static-graph")]
        out += [Scenario(m, batch, SEED_STEPS) for m in ("seed-naive", "seed-batched")]
        out += [Scenario("llada-eager", batch, s) for s in size.steps]
        out += [Scenario(m, batch, s) for m in FASTDIFF_BACKENDS for s in size.steps]
    return out


def resolve_size(name: Optional[str], **overrides) -> SuiteSize:
    """The :data:`SIZES` entry ``name`` (``None``: ``"gpu"`` with CUDA, else ``"cpu"``), with the
    non-``None`` ``overrides`` (``batch_sizes``, ``steps``, ``gen_length``, ...) applied."""
    if name is None:
        name = "gpu" if torch.cuda.is_available() else "cpu"
    if name not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {name!r}")
    changes = {key: (tuple(value) if isinstance(value, list) else value)
               for key, value in overrides.items() if value is not None}
    return dataclasses.replace(SIZES[name], **changes)


# --------------------------------------------------------------------------------------------------
# What a results file records of the run
# --------------------------------------------------------------------------------------------------
def run_config(size: SuiteSize) -> Dict[str, object]:
    """What a results file records of its run: the size's fields, every peer's and fastdiff's sampling
    settings, and notes on how the figures are measured."""
    config = dataclasses.asdict(size)
    config.update(
        mask_token_id=size.mask_token_id,
        fastdiff_options=dict(temperature=SEED_TEMPERATURE, top_k=SEED_TOP_K, top_p=SEED_TOP_P,
                              unmask="confidence", schedule="linear", seed=0),
        gpt2_sampling=dict(top_k=SEED_TOP_K, top_p=SEED_TOP_P, temperature=SEED_TEMPERATURE,
                           min_new_tokens=size.gen_length, max_new_tokens=size.gen_length),
        seed_loop=dict(steps=SEED_STEPS, top_k=SEED_TOP_K, top_p=SEED_TOP_P, temperature=1.0),
        llada_loop=dict(temperature=SEED_TEMPERATURE, remasking="low_confidence"),
        notes=["wall_s is the median of the timed runs; every run is synchronised with the device",
               "setup_s (building, graph capture) and warmup_s (untimed runs, lazy compilation) are excluded",
               "speedup_vs[peer] = peer wall_s / this wall_s, peers at the same batch size measured in this run "
               "(llada-eager at the same step count)",
               "peak_gpu_mib: torch.cuda.max_memory_allocated during the timed runs, both models' weights included",
               "ms_per_step = wall_s / nfe (forward passes)"],
    )
    return config


def pending_document(size: SuiteSize, command: str) -> Dict[str, object]:
    """A results file for a size that has not been run on its device yet: its scenarios, no figures."""
    return dict(status="pending: no GPU run yet" if size.name == "gpu" else "pending: not run yet",
                size=size.name, command=command,
                note="no figures yet: the scenarios below are ready to run. A run on CUDA writes "
                     "cuda-<gpu name>.json / .md / .png next to this file and removes it.",
                config=run_config(size),
                scenarios=[dict(name=s.name, method=s.method, label=s.label, batch=s.batch, steps=s.steps)
                           for s in scenarios_for(size)])
