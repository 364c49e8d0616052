"""The benchmark suite's runner: :class:`Suite` builds the models, times each scenario and writes the
results; :func:`add_speedups` and :func:`seed_reproduction` compare the records of one run."""
from __future__ import annotations

import datetime
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from fastdiff import Sampler
from fastdiff.bench import peers, report
from fastdiff.bench.environment import device_info, versions
from fastdiff.bench.scenarios import (FASTDIFF_BACKENDS, PEER_METHODS, SEED_TEMPERATURE, SEED_TOP_K, SEED_TOP_P,
                                      Scenario, SuiteSize, run_config)


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
        if method in ("seed-naive", "seed-batched"):
            def run_seed():
                generator.manual_seed(0)
                return peers.seed_diffusion_generate(model, prompt, gen_length, mask_id, steps=steps,
                                                     top_k=SEED_TOP_K, top_p=SEED_TOP_P, generator=generator,
                                                     batched=method == "seed-batched")
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
    # the spread over the repeats: the slowest naive run against the fastest GPT-2 run, and the reverse
    ratio_range = (min(naive["wall_s_runs"]) / max(gpt2["wall_s_runs"]),
                   max(naive["wall_s_runs"]) / min(gpt2["wall_s_runs"]))
    return dict(batch=batches[0], naive_diffusion_s=naive["wall_s"], gpt2_generate_s=gpt2["wall_s"],
                ratio=naive["wall_s"] / gpt2["wall_s"], ratio_range=ratio_range, repeats=len(naive["wall_s_runs"]),
                blog=dict(naive_diffusion_s=13.0, gpt2_generate_s=9.0, ratio=13.0 / 9.0))
