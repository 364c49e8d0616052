"""Where a denoising step's time goes: the model forward against the sampler's own work.

    python benchmarks/step_breakdown.py --size cpu|gpu [--out DIR]
    pytest benchmarks/ --benchmark-only            (test_step_breakdown_bench.py)

For each batch size and execution mode (``torch`` eager, ``triton`` eager, ``triton`` + CUDA graphs;
CUDA modes only on CUDA), a 10-step greedy generation on the suite's masked LM (16 prompt + 240
generated tokens at the ``gpu`` size) is timed with the full LM head (``masked_head=False``, so that the
model work is exactly one full forward per step) and with the masked-row head. The model forward
alone is timed the same way: eagerly, or replayed from a CUDA graph in the graph mode. The sampler's
overhead is ``step - forward`` and its share of the step; the naive loop's share is measured on the
seed blog's loop (``peers.seed_diffusion_generate``: full forward, fp32 softmax, per-position filters).

``demo_breakdown`` measures the same on the bundled demo model (the CPU, the demo command's sampler
settings, steps and length): the sampler's share of a step of the model users meet first.

Targets (H100, RoBERTa-base size, bf16): sampler overhead at most 3% of the step at batch 1 and 64; 10
greedy steps at batch 1 in at most 6 ms end to end; batch 64, 10 steps in at most 0.14 s.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from fastdiff import Sampler, bench
from fastdiff.bench import peers

RESULTS_DIR = Path(__file__).resolve().parent / "results"

STEPS = 10
MODES = {"torch eager": ("torch", False), "triton eager": ("triton", False), "triton + CUDA graphs": ("triton", True)}


class StepBreakdown:
    """Timings of one run: ``measure(batch, mode)`` per row, ``finish(out)`` writes them."""

    def __init__(self, size: bench.SuiteSize, device: torch.device):
        self.suite = bench.Suite(size, device)
        self.device = torch.device(device)
        self.results: List[Dict[str, object]] = []

    def _median_s(self, fn: Callable[[], object], repeats: int = 5) -> float:
        fn()
        times = []
        for _ in range(repeats):
            self.suite.sync()
            start = time.perf_counter()
            fn()
            self.suite.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def _forward_s(self, ids: torch.Tensor, graphed: bool) -> float:
        """One full forward of the masked LM on the canvas, eager or replayed from a CUDA graph."""
        model = self.suite.roberta
        if not graphed:
            return self._median_s(lambda: model(input_ids=ids))
        static = ids.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            model(input_ids=static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        from fastdiff.model import keep_flash_attention_under_capture

        with keep_flash_attention_under_capture(), torch.cuda.graph(graph):
            model(input_ids=static)
        return self._median_s(graph.replay)

    @torch.no_grad()
    def measure(self, batch: int, mode: str) -> Dict[str, object]:
        record = dict(name=f"{mode}-b{batch}", mode=mode, batch=batch, steps=STEPS, status="ok", reason=None)
        backend, graphed = MODES[mode]
        if backend == "triton" and self.device.type != "cuda":
            record.update(status="not available", reason="needs CUDA")
            self.results.append(record)
            return record
        prompt = self.suite.prompt(batch)
        gen_length = self.suite.size.gen_length
        mask_id = self.suite.size.mask_token_id
        model = self.suite.roberta
        for head, key in ((False, "full_head"), (True, "masked_head")):
            sampler = Sampler(model, mask_token_id=mask_id, backend=backend, cuda_graphs=graphed, masked_head=head,
                              steps=STEPS, seed=0)
            record[f"generate_s_{key}"] = self._median_s(lambda: sampler.generate(prompt, gen_length=gen_length))
        canvas = torch.cat([prompt, torch.full((batch, gen_length), mask_id, device=self.device)], dim=1)
        forward = self._forward_s(canvas, graphed)
        step = record["generate_s_full_head"] / STEPS
        record.update(forward_ms=forward * 1e3, step_ms_full_head=step * 1e3,
                      step_ms_masked_head=record["generate_s_masked_head"] / STEPS * 1e3,
                      sampler_overhead_ms=(step - forward) * 1e3, sampler_overhead_pct=100 * (step - forward) / step)
        if mode == "torch eager":  # the naive loop's overhead, measured the same way
            naive = self._median_s(lambda: peers.seed_diffusion_generate(model, prompt, gen_length, mask_id,
                                                                         steps=STEPS, top_k=50, top_p=0.95),
                                   repeats=3)
            naive_step = naive / STEPS
            record.update(naive_step_ms=naive_step * 1e3, naive_overhead_pct=100 * (naive_step - forward) / naive_step)
        self.results.append(record)
        return record

    def finish(self, out_dir: Path) -> Dict[str, object]:
        device = bench.device_info(self.device)
        self.suite.restore_threads()
        document = dict(status="complete", size=self.suite.size.name, device=device, versions=bench.versions(),
                        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        steps=STEPS, results=self.results)
        lines = [f"Device: {device['name']}; {STEPS} greedy steps, {self.suite.size.prompt_length} + "
                 f"{self.suite.size.gen_length} tokens, {self.suite.size.dtype}.", "",
                 "| mode | B | forward ms | step ms (full head) | sampler overhead | step ms (masked-row head) | "
                 "10 steps, masked head | naive loop overhead |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
        for r in self.results:
            if r["status"] != "ok":
                lines.append(f"| {r['mode']} | {r['batch']} | {r['status']}: {r['reason']} | | | | | |")
                continue
            naive = f"{r['naive_overhead_pct']:.0f}%" if "naive_overhead_pct" in r else ""
            lines.append(f"| {r['mode']} | {r['batch']} | {r['forward_ms']:.3f} | {r['step_ms_full_head']:.3f} | "
                         f"{r['sampler_overhead_pct']:.1f}% | {r['step_ms_masked_head']:.3f} | "
                         f"{r['generate_s_masked_head'] * 1e3:.2f} ms | {naive} |")
        document["table"] = "\n".join(lines)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"step-breakdown-{device['stem']}"
        (out_dir / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
        (out_dir / f"{stem}.md").write_text(document["table"] + "\n")
        document["written"] = [str(out_dir / f"{stem}.json"), str(out_dir / f"{stem}.md")]
        return document


@torch.no_grad()
def demo_breakdown(repeats: int = 7) -> Dict[str, object]:
    """The bundled demo model on the CPU at the demo command's settings (``fastdiff demo``: its prompt,
    sampler settings, default steps and length, batch 1, the current torch threads): the full forward of
    the canvas, a step with the full LM head and with the masked-row head (the demo's), and the
    sampler's share of the full-head step. A generation and as many plain forwards as it has steps are
    timed in turn, ``repeats`` times, and the fastest of each is kept (a shared machine's noise only
    adds time)."""
    from fastdiff.cli import DEMO_PROMPT, DEMO_SAMPLER, build_parser, encode_input
    from fastdiff.pretrained import load_pretrained

    model, tokenizer = load_pretrained(None, device="cpu")
    demo = build_parser().parse_args(["demo"])  # the command's default steps and length
    steps, gen_length = demo.steps, demo.gen_length
    prompt = torch.tensor([encode_input(DEMO_PROMPT, tokenizer, tokenizer.mask_token_id).ids])
    canvas = torch.cat([prompt, torch.full((1, gen_length), tokenizer.mask_token_id)], dim=1)
    samplers = {key: Sampler(model, mask_token_id=tokenizer.mask_token_id, steps=steps, seed=0, masked_head=head,
                             **DEMO_SAMPLER) for head, key in ((False, "full_head"), (True, "masked_head"))}
    calls = {f"step_ms_{key}": (lambda s=sampler: s.generate(prompt, gen_length=gen_length))
             for key, sampler in samplers.items()}
    calls["forward_ms"] = lambda: [model(input_ids=canvas) for _ in range(steps)]
    fastest = {name: float("inf") for name in calls}
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_ > 0:  # round 0 warms up
                fastest[name] = min(fastest[name], time.perf_counter() - start)
    record = dict(name="demo model", steps=steps, gen_length=gen_length, threads=torch.get_num_threads(),
                  settings=dict(DEMO_SAMPLER), **{name: seconds / steps * 1e3 for name, seconds in fastest.items()})
    overhead = record["step_ms_full_head"] - record["forward_ms"]
    record.update(sampler_overhead_ms=overhead, sampler_overhead_pct=100 * overhead / record["step_ms_full_head"])
    return record


def format_demo(record: Dict[str, object]) -> str:
    """One line of :func:`demo_breakdown`'s record."""
    return (f"demo model ({record['threads']} thread(s), {record['settings']}, {record['steps']} steps, "
            f"{record['gen_length']} tokens): forward {record['forward_ms']:.2f} ms, "
            f"step {record['step_ms_full_head']:.2f} ms (full head; sampler {record['sampler_overhead_pct']:.1f}%), "
            f"{record['step_ms_masked_head']:.2f} ms (masked-row head)")


def main(argv: Optional[List[str]] = None) -> int:
    """Run the breakdown for every batch size of the size and every mode; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(bench.SIZES), default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-demo", action="store_true", help="skip the bundled demo model's row")
    args = parser.parse_args(argv)
    size = bench.resolve_size(args.size)
    breakdown = StepBreakdown(size, torch.device("cuda" if size.name == "gpu" else "cpu"))
    for batch in size.batch_sizes:
        for mode in MODES:
            record = breakdown.measure(batch, mode)
            print(record["name"], record["status"], flush=True)
    print(breakdown.finish(args.out)["table"])
    if not args.no_demo:
        print(format_demo(demo_breakdown()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
