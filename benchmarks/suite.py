"""fastdiff against GPT-2 and against naive diffusion loops, side by side in one run.

    python benchmarks/suite.py --size cpu|gpu [--out DIR]
    pytest benchmarks/ --benchmark-only [--bench-size cpu|gpu] [--bench-out DIR]

Both commands run the same scenarios (this module defines them; ``benchmarks/conftest.py`` hands them to
pytest-benchmark) and write the same three files into the output folder, named after the device
(``cpu-<processor>`` or ``cuda-<gpu>``): a JSON results file, a markdown table (also printed at the end)
and a PNG plot of generated tokens/s against tokens committed per step, with the GPT-2 peers as
horizontal lines.

Scenarios, at each batch size (canvas: ``prompt_length`` prompt tokens + ``gen_length`` generated):

* fastdiff ``Sampler`` at each step count, once per backend: ``torch`` (reference ops), ``triton``
  (fused kernels, eager; CUDA only) and ``triton`` + CUDA graphs (``Sampler(..., cuda_graphs=True)``;
  CUDA only);
* GPT-2 with Hugging Face ``generate`` (dynamic cache, greedy and sampling; static cache, greedy),
  forced to exactly ``gen_length`` new tokens;
* GPT-2 with our own static-KV-cache decode loop, its step captured in one CUDA graph on CUDA
  (:class:`peers.StaticCacheGPT2`);
* the blog post's naive RoBERTa-diffusion loop (10 steps) and a LLaDA-style eager loop at the fastdiff
  step counts (:mod:`peers`).

Every result holds the median wall time over ``repeats`` timed runs (the device synchronised around
each), generated tokens/s, forward passes, ms per forward pass, the peak GPU memory (``null`` on the
CPU) and its speedup against every peer measured in the same run. Building, warm-up, compilation and
graph capture are timed separately (``setup_s``, ``warmup_s``) and excluded from the timed runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

import fastdiff
from fastdiff import Sampler
from fastdiff.backend import triton_version

if str(Path(__file__).resolve().parent) not in sys.path:  # sibling modules, however this file is loaded
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
import report  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PENDING_GPU_FILE = "gpu-pending.json"

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
                "llada-eager")

LABELS = {
    "fastdiff-torch": "fastdiff, torch ops",
    "fastdiff-triton": "fastdiff, Triton kernels",
    "fastdiff-triton-graphs": "fastdiff, Triton + CUDA graphs",
    "gpt2-hf-greedy": "GPT-2 HF generate, greedy",
    "gpt2-hf-sample": "GPT-2 HF generate, sampling",
    "gpt2-hf-static": "GPT-2 HF generate, static cache (eager), greedy",
    "gpt2-static-graph": "GPT-2 static KV cache + CUDA graph (own loop), greedy",
    "seed-naive": "seed blog's naive diffusion loop",
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
class NotAvailable(Exception):
    """A scenario that cannot run here (no CUDA, kernels or CUDA graphs not in this fastdiff)."""


@dataclass
class Prepared:
    """A scenario ready to time: ``run()`` generates once and returns an object with ``sequences``
    and ``nfe``. Exceptions of ``unavailable_on`` raised by the first warm-up run mean the scenario
    is not available here (not that it failed)."""

    run: Callable[[], object]
    unavailable_on: tuple = ()
    info: Dict[str, object] = field(default_factory=dict)
    diffusion: bool = False


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
        out.append(Scenario("seed-naive", batch, SEED_STEPS))
        out += [Scenario("llada-eager", batch, s) for s in size.steps]
        out += [Scenario(m, batch, s) for m in FASTDIFF_BACKENDS for s in size.steps]
    return out


class ForwardCounter:
    """Counts the top-level forward calls of a module (the forward passes of HF ``generate``)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        module.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.calls += 1


class Suite:
    """The models, prompts and measurements of one benchmark run.

    Args:
        size: the :class:`SuiteSize`.
        device: where the models run.

    Models are random-init from their configs (no download), built on first use. ``measure`` times a
    scenario and keeps its result; ``finish`` adds the speedups and writes the results.
    """

    def __init__(self, size: SuiteSize, device: torch.device):
        self.size = size
        self.device = torch.device(device)
        self.dtype = getattr(torch, size.dtype)
        self.results: List[Dict[str, object]] = []
        self.outputs: Dict[str, torch.Tensor] = {}
        self.started = time.time()
        self.load_at_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
        self._threads_before = torch.get_num_threads()
        if size.threads is not None:
            torch.set_num_threads(size.threads)
        self._roberta = None
        self._gpt2 = None
        self._gpt2_counter = None
        generator = torch.Generator().manual_seed(0)
        top = min(size.roberta["vocab_size"], size.gpt2["vocab_size"]) - 1
        # prompt ids avoid the special tokens of both models (0-3 and the last ids)
        self._prompts = torch.randint(4, top - 1, (max(size.batch_sizes), size.prompt_length), generator=generator)

    # ------------------------------------------------------------------------------------------------
    @property
    def roberta(self):
        """The random-init ``RobertaForMaskedLM`` of the size (built on first use, on the device)."""
        if self._roberta is None:
            from transformers import RobertaConfig, RobertaForMaskedLM

            torch.manual_seed(0)
            config = RobertaConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, **self.size.roberta)
            self._roberta = RobertaForMaskedLM(config).to(device=self.device, dtype=self.dtype).eval()
        return self._roberta

    @property
    def gpt2(self):
        """The random-init ``GPT2LMHeadModel`` of the size, its forward calls counted."""
        if self._gpt2 is None:
            from transformers import GPT2Config, GPT2LMHeadModel

            torch.manual_seed(0)
            model = GPT2LMHeadModel(GPT2Config(**self.size.gpt2)).to(device=self.device, dtype=self.dtype).eval()
            self._gpt2_counter = ForwardCounter(model)
            self._gpt2 = model
        return self._gpt2

    def prompt(self, batch: int) -> torch.Tensor:
        """The same ``[batch, prompt_length]`` prompt ids for every scenario, on the device."""
        return self._prompts[:batch].to(self.device)

    def sync(self) -> None:
        """Wait for the device (every timing starts and ends with this)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------------------------------------
    def prepare(self, scenario: Scenario) -> Prepared:
        """Build what ``scenario`` runs (excluded from the timings); raises :class:`NotAvailable`."""
        method, batch, steps = scenario.method, scenario.batch, scenario.steps
        gen_length = self.size.gen_length
        prompt = self.prompt(batch)
        if method in FASTDIFF_BACKENDS:
            return self._prepare_fastdiff(method, prompt, steps)
        if method.startswith("gpt2-hf-"):
            return self._prepare_hf_generate(method, prompt)
        if method == "gpt2-static-graph":
            loop = peers.StaticCacheGPT2(self.gpt2, batch, self.size.prompt_length, gen_length)
            info = {"cuda_graph": loop.graph is not None}
            if loop.graph is None:
                info["label"] = "GPT-2 static KV cache, eager step (own loop; CUDA graph on CUDA), greedy"
            return Prepared(lambda: loop.generate(prompt), info=info)
        generator = torch.Generator(self.device)
        mask_id = self.size.mask_token_id
        model = self.roberta
        if method == "seed-naive":
            def run_seed():
                generator.manual_seed(0)
                return peers.seed_diffusion_generate(model, prompt, gen_length, mask_id, steps=steps,
                                                     top_k=SEED_TOP_K, top_p=SEED_TOP_P, generator=generator)
            return Prepared(run_seed, diffusion=True)
        if method == "llada-eager":
            def run_llada():
                generator.manual_seed(0)
                return peers.llada_style_generate(model, prompt, gen_length, mask_id, steps=steps,
                                                  temperature=SEED_TEMPERATURE, generator=generator)
            return Prepared(run_llada, diffusion=True)
        raise ValueError(f"unknown scenario method {method!r}")

    def _prepare_fastdiff(self, method: str, prompt: torch.Tensor, steps: int) -> Prepared:
        backend, graphs = FASTDIFF_BACKENDS[method]
        if backend == "triton" and self.device.type != "cuda":
            raise NotAvailable("needs CUDA")
        sampler = Sampler(self.roberta, mask_token_id=self.size.mask_token_id, backend=backend, cuda_graphs=graphs,
                          steps=steps, temperature=SEED_TEMPERATURE, top_k=SEED_TOP_K, top_p=SEED_TOP_P, seed=0)
        gen_length = self.size.gen_length
        # a missing kernel module (ImportError) or a backend that cannot run here (ValueError) shows on
        # the first call
        unavailable = (ImportError, ValueError) if backend == "triton" else ()
        return Prepared(lambda: sampler.generate(prompt, gen_length=gen_length), unavailable_on=unavailable,
                        diffusion=True)

    def _prepare_hf_generate(self, method: str, prompt: torch.Tensor) -> Prepared:
        model = self.gpt2
        counter = self._gpt2_counter
        gen_length = self.size.gen_length
        options = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=gen_length,
                       min_new_tokens=gen_length, pad_token_id=self.size.eos_token_id)
        if method == "gpt2-hf-sample":
            options.update(do_sample=True, top_k=SEED_TOP_K, top_p=SEED_TOP_P, temperature=SEED_TEMPERATURE)
        else:
            options.update(do_sample=False)
        if method == "gpt2-hf-static":  # eager: no automatic torch.compile of the static-cache forward
            options.update(cache_implementation="static", disable_compile=True)

        def run():
            torch.manual_seed(0)
            counter.calls = 0
            sequences = model.generate(prompt, **options)
            return peers.LoopOutput(sequences=sequences, nfe=counter.calls)
        return Prepared(run)

    # ------------------------------------------------------------------------------------------------
    def measure(self, scenario: Scenario, run_rounds: Optional[Callable] = None) -> Dict[str, object]:
        """Time ``scenario`` and keep its result (also returned).

        Args:
            scenario: what to run.
            run_rounds: ``run_rounds(fn, rounds)`` calls ``fn`` ``rounds`` times (pytest-benchmark's
                ``pedantic`` in the pytest path); ``None`` calls it in a plain loop.

        Returns:
            the result record (see the module docstring). ``status`` is ``"ok"``, ``"not available"``
            (with the reason) or ``"out of memory"``; other errors propagate.
        """
        record = self._base_record(scenario)
        try:
            record.update(self._time(scenario, run_rounds))
        except NotAvailable as error:
            record.update(status="not available", reason=str(error))
        except torch.OutOfMemoryError as error:
            record.update(status="out of memory", reason=str(error).splitlines()[0])
            self._release_memory()
        self.results.append(record)
        return record

    def record_failure(self, scenario: Scenario, error: BaseException) -> Dict[str, object]:
        """Keep ``scenario`` in the results as ``"failed"`` with ``error`` as the reason (the command
        line goes on with the other scenarios and exits with status 1)."""
        record = self._base_record(scenario)
        record.update(status="failed", reason=f"{type(error).__name__}: {error}".splitlines()[0])
        self._release_memory()
        self.results.append(record)
        return record

    def _release_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _time(self, scenario: Scenario, run_rounds: Optional[Callable]) -> Dict[str, object]:
        started = time.perf_counter()
        prepared = self.prepare(scenario)
        self.sync()
        setup_s = time.perf_counter() - started
        started = time.perf_counter()
        for index in range(max(self.size.warmup, 1)):  # the first run also tells whether it can run here
            try:
                prepared.run()
            except prepared.unavailable_on as error:
                if index:
                    raise
                raise NotAvailable(f"{type(error).__name__}: {error}") from None
        self.sync()
        warmup_s = time.perf_counter() - started

        times, outputs = [], []

        def timed_run():
            self.sync()
            start = time.perf_counter()
            output = prepared.run()
            self.sync()
            times.append(time.perf_counter() - start)
            outputs.append(output)
            return output

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if run_rounds is None:
            for _ in range(self.size.repeats):
                timed_run()
        else:
            run_rounds(timed_run, self.size.repeats)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
        output = outputs[-1]
        self._check_output(scenario, prepared, output)
        wall = statistics.median(times)
        tokens = scenario.batch * self.size.gen_length
        nfe = int(output.nfe)
        self.outputs[scenario.name] = output.sequences.detach().cpu()
        info = prepared.info
        del prepared, outputs, output
        self._release_memory()
        return dict(status="ok", wall_s=wall, wall_s_runs=times, tokens_per_s=tokens / wall, nfe=nfe,
                    ms_per_step=wall / nfe * 1e3, peak_gpu_mib=peak, setup_s=setup_s, warmup_s=warmup_s, **info)

    def _base_record(self, scenario: Scenario) -> Dict[str, object]:
        steps = scenario.steps
        if scenario.method.startswith("gpt2-"):
            tokens_per_step = 1.0
        else:
            tokens_per_step = self.size.gen_length / min(steps, self.size.gen_length)
        return dict(name=scenario.name, method=scenario.method, label=scenario.label, batch=scenario.batch,
                    steps=steps, tokens_per_step=tokens_per_step, status=None, reason=None, wall_s=None,
                    wall_s_runs=None, tokens_per_s=None, nfe=None, ms_per_step=None, peak_gpu_mib=None,
                    setup_s=None, warmup_s=None, speedup_vs={})

    def _check_output(self, scenario: Scenario, prepared: Prepared, output) -> None:
        """A scenario that does not produce the full canvas is a bug, not a result."""
        expected = (scenario.batch, self.size.prompt_length + self.size.gen_length)
        if tuple(output.sequences.shape) != expected:
            raise RuntimeError(f"{scenario.name} returned sequences of shape {tuple(output.sequences.shape)}, "
                               f"expected {expected}")
        if prepared.diffusion and bool((output.sequences == self.size.mask_token_id).any()):
            raise RuntimeError(f"{scenario.name} left mask tokens in its output")

    # ------------------------------------------------------------------------------------------------
    def finish(self, out_dir: Path, plot: bool = True) -> Dict[str, object]:
        """Add the speedups and the seed reproduction, write JSON, markdown table and PNG into
        ``out_dir``; returns the results document with ``table`` (the markdown) and ``written`` (the paths)."""
        add_speedups(self.results)
        self._add_greedy_agreement()
        device = device_info(self.device)
        device["load_average_at_start"] = self.load_at_start
        self.restore_threads()
        failed = sum(r["status"] == "failed" for r in self.results)
        document = dict(
            status="complete" if not failed else f"partial: {failed} scenario(s) failed",
            size=self.size.name,
            device=device,
            versions=versions(),
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            duration_s=time.time() - self.started,
            config=run_config(self.size),
            seed_reproduction=seed_reproduction(self.results),
            results=self.results,
        )
        return report.write_all(document, Path(out_dir), plot_png=plot)

    def restore_threads(self) -> None:
        """Give torch back the CPU thread count it had before this suite (see ``SuiteSize.threads``)."""
        torch.set_num_threads(self._threads_before)

    def _add_greedy_agreement(self) -> None:
        """Share of the tokens of our static-cache loop equal to HF greedy ``generate``'s, per batch. HF
        forbids EOS before the last token (``min_new_tokens``) and our loop does not, and bf16 rounding
        differs between the two forwards, so a value below 1 is not by itself a bug (the CPU tests check
        equality in fp32 with no EOS)."""
        for record in self.results:
            if record["method"] != "gpt2-static-graph" or record["status"] != "ok":
                continue
            hf = self.outputs.get(f"gpt2-hf-greedy-b{record['batch']}")
            if hf is not None:
                ours = self.outputs[record["name"]]
                record["greedy_tokens_equal_hf"] = float((ours == hf).float().mean())


def add_speedups(results: List[Dict[str, object]]) -> None:
    """Fill each available result's ``speedup_vs``: ``peer wall time / this wall time`` for every peer
    of :data:`PEER_METHODS` measured at the same batch size (LLaDA at the same step count)."""
    by_key = {}
    for record in results:
        if record["status"] == "ok":
            by_key[(record["method"], record["batch"], record["steps"])] = record
    for record in results:
        if record["status"] != "ok":
            continue
        speedups = {}
        for peer in PEER_METHODS:
            if peer == "llada-eager":
                match = by_key.get((peer, record["batch"], record["steps"])) if record["steps"] else None
            else:
                match = next((r for (m, b, _), r in by_key.items() if m == peer and b == record["batch"]), None)
            if match is not None and match is not record:
                speedups[peer] = match["wall_s"] / record["wall_s"]
        record["speedup_vs"].clear()
        record["speedup_vs"].update(speedups)


def seed_reproduction(results: List[Dict[str, object]]) -> Optional[Dict[str, object]]:
    """The blog's comparison (naive diffusion loop against GPT-2 ``generate`` sampling) at the smallest
    batch measured, with both times and their ratio; ``None`` when either is missing."""
    ok = {(r["method"], r["batch"]): r for r in results if r["status"] == "ok"}
    batches = sorted(b for (m, b) in ok if m == "seed-naive" and ("gpt2-hf-sample", b) in ok)
    if not batches:
        return None
    naive, gpt2 = ok[("seed-naive", batches[0])], ok[("gpt2-hf-sample", batches[0])]
    return dict(batch=batches[0], naive_diffusion_s=naive["wall_s"], gpt2_generate_s=gpt2["wall_s"],
                ratio=naive["wall_s"] / gpt2["wall_s"], blog=dict(naive_diffusion_s=13.0, gpt2_generate_s=9.0,
                                                               ratio=13.0 / 9.0))


# --------------------------------------------------------------------------------------------------
# Run description
# --------------------------------------------------------------------------------------------------
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


def versions() -> Dict[str, Optional[str]]:
    """Python, torch, CUDA, transformers, Triton, fastdiff versions and the git commit of this tree."""
    import transformers

    triton = triton_version()
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        # uncommitted changes to tracked files (results excluded) mark the commit as not the whole story
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                  ":(exclude,top)benchmarks/results"], cwd=here, capture_output=True, text=True,
                                 timeout=10).stdout.strip()
        if commit and changes:
            commit += "+uncommitted changes"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                transformers=transformers.__version__, triton=".".join(map(str, triton)) if triton else None,
                fastdiff=fastdiff.__version__, git_commit=commit)


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


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
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


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    parser = argparse.ArgumentParser(
        description="fastdiff against GPT-2 and naive diffusion loops, side by side in one run.")
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="model sizes: 'cpu' (small, minutes on 2 cores) or 'gpu' (RoBERTa-base / GPT-2 "
                             "small, bf16). Default: gpu with CUDA, else cpu")
    parser.add_argument("--device", default=None, help="torch device; default: cuda for --size gpu, else cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="override the size's batch sizes")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="override the fastdiff / LLaDA steps")
    parser.add_argument("--gen-length", type=int, default=None, help="override the generated tokens per row")
    parser.add_argument("--prompt-length", type=int, default=None, help="override the prompt tokens per row")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per scenario (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs per scenario (at least 1 is run)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 for --size cpu, torch's default for gpu)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--dry-run", action="store_true",
                        help="run nothing: list the scenarios and write the pending results file")
    return parser


def _validate_size(size: SuiteSize) -> None:
    for name in ("gen_length", "prompt_length", "repeats"):
        if getattr(size, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(size, name)}")
    if size.threads is not None and size.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {size.threads}")
    if size.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {size.warmup}")
    for name in ("batch_sizes", "steps"):
        if not getattr(size, name) or min(getattr(size, name)) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive ints, got {list(getattr(size, name))}")
    if size.prompt_length + size.gen_length > size.roberta["max_position_embeddings"] - 2:
        raise ValueError("prompt length + generated length exceeds the masked LM's positions")


def main(argv: Optional[List[str]] = None) -> int:
    """Run the suite from the command line (also ``fastdiff bench``); returns the exit status.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``), e.g. ``["--size", "cpu", "--out", "results"]``.

    Returns:
        ``0`` when every scenario ran (or was reported not available / out of memory), ``1`` when a
        scenario failed (its row says why; the others still ran and were written), ``2`` on bad arguments.

    Example:
        >>> main(["--size", "cpu", "--out", "/tmp/fastdiff-bench"])   # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        size = resolve_size(args.size, batch_sizes=args.batch_sizes, steps=args.steps, gen_length=args.gen_length,
                            prompt_length=args.prompt_length, repeats=args.repeats, warmup=args.warmup,
                            threads=args.threads)
        _validate_size(size)
    except ValueError as error:
        parser.error(str(error))
    scenarios = scenarios_for(size)
    if args.dry_run:
        document = pending_document(size, command=f"python benchmarks/suite.py --size {size.name}")
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / (PENDING_GPU_FILE if size.name == "gpu" else f"{size.name}-pending.json")
        target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print("\n".join(s.name for s in scenarios))
        print(f"{len(scenarios)} scenarios; wrote {target}")
        return 0
    device = torch.device(args.device or ("cuda" if size.name == "gpu" else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--size {size.name} runs on CUDA, and no CUDA device is available here "
                     f"(use --size cpu, or --dry-run to list the scenarios)")
    suite = Suite(size, device)
    print(f"fastdiff benchmark suite: size {size.name} on {device_info(device)['name']}, "
          f"{len(scenarios)} scenarios, {torch.get_num_threads()} CPU thread(s)", flush=True)
    failures = 0
    try:
        for scenario in scenarios:
            try:
                record = suite.measure(scenario)
            except Exception as error:  # keep going: one broken scenario must not lose the others' results
                traceback.print_exc()
                record = suite.record_failure(scenario, error)
                failures += 1
            if record["status"] == "ok":
                print(f"  {scenario.name:32s} {record['wall_s']:9.4f} s  {record['tokens_per_s']:10.1f} tok/s  "
                      f"nfe {record['nfe']}", flush=True)
            else:
                print(f"  {scenario.name:32s} {record['status']}: {record['reason']}", flush=True)
        document = suite.finish(args.out, plot=not args.no_plot)
    finally:
        suite.restore_threads()
    if device.type == "cuda" and size.name == "gpu":  # the GPU figures are no longer pending
        (args.out / PENDING_GPU_FILE).unlink(missing_ok=True)
    print()
    print(document["table"])
    print("\n".join(f"wrote {path}" for path in document["written"]))
    if failures:
        print(f"{failures} scenario(s) failed: see their tracebacks above and their 'failed' rows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
