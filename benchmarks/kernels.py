"""The fused sampling ops against their PyTorch references and the naive code they replace.

    python benchmarks/kernels.py --size cpu|gpu [--out DIR]
    pytest benchmarks/ --benchmark-only            (test_kernels_bench.py: one benchmark per case)

Cases (``gpu`` size; ``cpu`` runs smaller shapes of the same kinds):

* ``sample_masked`` on bf16 logits ``64 x 256 x 50265`` (RoBERTa's vocabulary) with every row masked
  and a quarter of them, greedy, T 0.8, and T 0.8 with top-k 50, top-p 0.95 and both; and
  ``1 x 1024 x 126464`` (LLaDA's vocabulary). Implementations: the Triton kernel, the torch backend, a
  naive ``softmax(logits.float()) + torch.multinomial`` over the whole canvas, and LLaDA's sampling lines
  (fp64 Gumbel noise on the whole canvas, fp64 softmax for the confidence). Every setting is also
  reported as a multiple of ``softmax(logits[mask].float()).max(-1)`` on the same canvas, the least a
  confidence-greedy loop does (the CPU targets: greedy within 1.5x of it, top-k / top-p within 3x).
* ``select_topk`` on ``64 x 4096`` scores: the kernel, the reference, and LLaDA's per-row
  ``torch.topk`` in a Python loop.
* ``commit_remask`` on ``64 x 4096``: the kernel and the reference.
* the device-to-device copy bandwidth of this run (``clone`` of a large tensor, bytes read + written),
  against which ``sample_masked`` is reported as a percentage: the kernel reads each masked row once.

Kernel times come from ``triton.testing.do_bench`` on CUDA (median of its repeats, the device
synchronised by it) and from the median of ``repeats`` timed calls on the CPU. On the CPU each
``sample_masked`` case alternates its calls with the yardstick's on the same canvas and is reported
against that yardstick's median (a shared CPU's load moves both alike; the yardstick's own row keeps
its first timing). The results (JSON and a markdown table, named after the device) go to
``benchmarks/results/kernels-<device>.*``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from fastdiff import ops
from fastdiff.bench import device_info, versions

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PENDING_GPU_FILE = "kernels-gpu-pending.json"
SEED_TOP_K, SEED_TOP_P, TEMPERATURE = 50, 0.95, 0.8


@dataclass(frozen=True)
class KernelSize:
    """Shapes of one size of the kernel benchmarks."""

    name: str
    canvas: tuple  # (B, L, V) of sample_masked
    long_canvas: tuple  # (B, L, V) with LLaDA's vocabulary
    dtype: str
    positions: tuple  # (B, L) of select_topk / commit_remask
    copy_bytes: int
    repeats: int


SIZES = {
    "gpu": KernelSize("gpu", (64, 256, 50265), (1, 1024, 126464), "bfloat16", (64, 4096), 2**30, 10),
    "cpu": KernelSize("cpu", (4, 64, 8192), (1, 64, 32768), "float32", (8, 1024), 2**27, 9),
}


@dataclass(frozen=True)
class Case:
    """One timed call: an op, its inputs' description and an implementation."""

    op: str
    setting: str
    impl: str

    @property
    def name(self) -> str:
        return f"{self.op}[{self.setting}]-{self.impl}"


SAMPLE_SETTINGS = {  # setting -> (canvas attribute, masked fraction, sampling options)
    "all masked, greedy": ("canvas", 1.0, dict()),
    "all masked, T 0.8": ("canvas", 1.0, dict(temperature=TEMPERATURE)),
    "25% masked, T 0.8": ("canvas", 0.25, dict(temperature=TEMPERATURE)),
    "all masked, T 0.8, top-k 50": ("canvas", 1.0, dict(temperature=TEMPERATURE, top_k=SEED_TOP_K)),
    "all masked, T 0.8, top-p 0.95": ("canvas", 1.0, dict(temperature=TEMPERATURE, top_p=SEED_TOP_P)),
    "all masked, T 0.8, top-k 50, top-p 0.95": ("canvas", 1.0, dict(temperature=TEMPERATURE, top_k=SEED_TOP_K,
                                                                     top_p=SEED_TOP_P)),
    "LLaDA vocabulary, all masked, T 0.8": ("long_canvas", 1.0, dict(temperature=TEMPERATURE)),
}
SAMPLE_IMPLS = ("triton", "torch", "naive-softmax-multinomial", "llada-fp64")
# the yardstick of every sample_masked setting: the least a confidence-greedy sampler does, as users write it
YARDSTICK = "softmax().max()"
SELECT_IMPLS = ("triton", "torch", "python-loop-topk")


def cases() -> List[Case]:
    """Every case, in the order they run (the copy bandwidth first: it is the yardstick)."""
    out = [Case("copy", "device-to-device clone", "torch")]
    out += [Case("sample_masked", setting, YARDSTICK) for setting in SAMPLE_SETTINGS if "greedy" in setting]
    for setting, (_, _, options) in SAMPLE_SETTINGS.items():
        for impl in SAMPLE_IMPLS:
            # the naive code has no filters to compare with, LLaDA's lines no filters at all
            if impl != "triton" and impl != "torch" and ("top-" in setting or "greedy" in setting):
                continue
            out.append(Case("sample_masked", setting, impl))
    out += [Case("select_topk", "k = L/16 per row", impl) for impl in SELECT_IMPLS]
    out += [Case("commit_remask", "commit k, re-mask k/4", impl) for impl in ("triton", "torch")]
    return out


class NotAvailable(Exception):
    """The case cannot run here (the Triton kernels need CUDA for timing)."""


class KernelBench:
    """Inputs and timings of one run (see the module docstring)."""

    def __init__(self, size: KernelSize, device: torch.device):
        self.size = size
        self.device = torch.device(device)
        self.dtype = getattr(torch, size.dtype)
        self.results: List[Dict[str, object]] = []
        self.started = time.time()
        self._inputs: Dict[str, object] = {}

    def _time_ms(self, fn: Callable[[], object]) -> float:
        fn()  # compile / warm up outside the timing
        if self.device.type == "cuda":
            import triton.testing

            return float(triton.testing.do_bench(fn, return_mode="median"))
        times = []
        for _ in range(self.size.repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    def _canvas(self, attribute: str, fraction: float):
        key = (attribute, fraction)
        if key not in self._inputs:
            B, L, V = getattr(self.size, attribute)
            generator = torch.Generator(self.device).manual_seed(0)
            logits = (torch.randn(B, L, V, generator=generator, device=self.device) * 3).to(self.dtype)
            mask = torch.rand(B, L, generator=generator, device=self.device) < fraction
            self._inputs.clear()  # one canvas at a time: the GPU ones are gigabytes
            self._inputs[key] = (logits, mask)
        return self._inputs[key]

    def _positions(self):
        B, L = self.size.positions
        generator = torch.Generator(self.device).manual_seed(1)
        scores = torch.rand(B, L, generator=generator, device=self.device)
        eligible = torch.rand(B, L, generator=generator, device=self.device) < 0.5
        return scores, eligible, torch.full((B,), L // 16, dtype=torch.int64, device=self.device)

    def unavailable(self, case: Case) -> Optional[str]:
        """Why ``case`` cannot run here, or ``None``: known before anything is built or timed."""
        if case.impl == "triton" and self.device.type != "cuda":
            return "needs CUDA (the Triton interpreter runs kernels on the CPU, far too slowly to time)"
        return None

    def prepare(self, case: Case) -> tuple:
        """``(fn, bytes_read)`` of a case; raises :class:`NotAvailable`."""
        reason = self.unavailable(case)
        if reason is not None:
            raise NotAvailable(reason)
        if case.op == "copy":
            source = torch.empty(self.size.copy_bytes // 4, dtype=torch.float32, device=self.device)
            return (lambda: source.clone()), 2 * self.size.copy_bytes
        if case.op == "sample_masked":
            attribute, fraction, options = SAMPLE_SETTINGS[case.setting]
            logits, mask = self._canvas(attribute, fraction)
            read = int(mask.sum()) * logits.shape[-1] * logits.element_size()
            if case.impl in ("triton", "torch"):
                seed = ops.make_rng_state(0, logits.shape[0], self.device)  # built once, outside the timing
                return (lambda: ops.sample_masked(logits, mask, seed=seed, backend=case.impl, **options)), read
            if case.impl == YARDSTICK:
                return (lambda: torch.softmax(logits[mask].float(), dim=-1).max(dim=-1)), read
            if case.impl == "naive-softmax-multinomial":
                return (lambda: _naive_sample(logits, mask, options.get("temperature", 1.0))), read
            return (lambda: _llada_sample(logits, mask, options.get("temperature", 0.0))), read
        scores, eligible, k = self._positions()
        read = scores.numel() * (scores.element_size() + 1)
        seed = ops.make_rng_state(0, scores.shape[0], self.device)
        if case.op == "select_topk":
            if case.impl == "python-loop-topk":
                return (lambda: _python_loop_topk(scores, eligible, k)), read
            return (lambda: ops.select_topk(scores, eligible, k, seed=seed, backend=case.impl)), read
        canvas = torch.where(eligible, 0, 7)
        confidence = torch.where(eligible, float("nan"), scores)
        tokens = torch.randint(1, 100, canvas.shape, device=self.device)
        selected = eligible & (scores > 0.9)

        def commit():
            ops.commit_remask(canvas.clone(), confidence.clone(), tokens, scores, selected, eligible, k // 4, 0,
                              seed=seed, backend=case.impl)
        return commit, read * 4

    def _time_alongside_ms(self, fn: Callable[[], object], other: Callable[[], object]) -> Tuple[float, float]:
        """CPU: the medians of ``repeats`` calls of ``fn`` and of ``other``, the two alternating."""
        fn()  # warm up outside the timing
        other()
        times: Dict[Callable, List[float]] = {fn: [], other: []}
        for _ in range(self.size.repeats):
            for f in (fn, other):
                start = time.perf_counter()
                f()
                times[f].append((time.perf_counter() - start) * 1e3)
        return statistics.median(times[fn]), statistics.median(times[other])

    def measure(self, case: Case) -> Dict[str, object]:
        record = dict(name=case.name, op=case.op, setting=case.setting, impl=case.impl, status=None, reason=None,
                      ms=None, gb_per_s=None)
        try:
            fn, read = self.prepare(case)
            if case.op == "sample_masked" and case.impl != YARDSTICK and self.device.type != "cuda":
                yardstick, _ = self.prepare(Case(case.op, case.setting, YARDSTICK))
                ms, record["yardstick_ms"] = self._time_alongside_ms(fn, yardstick)
            else:
                ms = self._time_ms(fn)
            record.update(status="ok", ms=ms, gb_per_s=read / ms / 1e6, bytes=read)
        except NotAvailable as error:
            record.update(status="not available", reason=str(error))
        except torch.OutOfMemoryError as error:
            record.update(status="out of memory", reason=str(error).splitlines()[0])
            torch.cuda.empty_cache()
        self.results.append(record)
        return record

    def finish(self, out_dir: Path) -> Dict[str, object]:
        """Add the comparisons and write ``kernels-<device>.json`` / ``.md`` into ``out_dir``."""
        add_comparisons(self.results)
        device = device_info(self.device)
        document = dict(status="complete", size=self.size.name, device=device, versions=versions(),
                        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        duration_s=time.time() - self.started, results=self.results,
                        targets_h100=["sample_masked >= 80% of copy bandwidth with all rows masked",
                                      "sample_masked with 25% of rows masked: about a quarter of the time",
                                      ">= 20x faster than fp32 softmax + multinomial at 64x256x50265 bf16",
                                      "select_topk <= 20 us at 64x4096"],
                        targets_cpu=[f"torch greedy <= 1.5x {YARDSTICK}", f"torch top-k / top-p <= 3x {YARDSTICK}"])
        if self.device.type != "cuda":  # no GPU timings here: the proxies of what the GPU would do
            document["cost_model"] = cost_proxies()
        document["table"] = markdown(document)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"kernels-{device['stem']}"
        (out_dir / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
        (out_dir / f"{stem}.md").write_text(document["table"] + "\n")
        document["written"] = [str(out_dir / f"{stem}.json"), str(out_dir / f"{stem}.md")]
        if self.device.type == "cuda":
            (out_dir / PENDING_GPU_FILE).unlink(missing_ok=True)
        return document


def add_comparisons(results: List[Dict[str, object]]) -> None:
    """Per result: ``pct_of_copy`` (its GB/s over the copy's, same run) and ``x_yardstick`` (its time
    over ``softmax().max()``'s on the same canvas: the one timed alongside it, ``yardstick_ms``, where
    there is one) for ``sample_masked``, and ``speedup_vs[impl]`` against every other implementation
    of the same op and setting."""
    copy = next((r for r in results if r["op"] == "copy" and r["status"] == "ok"), None)
    yardsticks = {SAMPLE_SETTINGS[r["setting"]][:2]: r for r in results if r["impl"] == YARDSTICK and r["status"] == "ok"}
    for record in results:
        record["speedup_vs"] = {}
        if record["status"] != "ok":
            continue
        if record["op"] == "sample_masked" and copy is not None:
            record["pct_of_copy"] = 100.0 * record["gb_per_s"] / copy["gb_per_s"]
        yardstick = yardsticks.get(SAMPLE_SETTINGS[record["setting"]][:2]) if record["op"] == "sample_masked" else None
        if record.get("yardstick_ms") is not None:
            record["x_yardstick"] = record["ms"] / record["yardstick_ms"]
        elif yardstick is not None and record is not yardstick:
            record["x_yardstick"] = record["ms"] / yardstick["ms"]
        for other in results:
            if (other is not record and other["status"] == "ok" and other["op"] == record["op"]
                    and other["setting"] == record["setting"]):
                record["speedup_vs"][other["impl"]] = other["ms"] / record["ms"]


def cost_proxies() -> Dict[str, object]:
    """Per sampling mode, the passes ``sample_masked`` makes over a masked row (counted through the
    Triton interpreter on peaked, random and near-uniform rows) and the SASS instructions per logit
    element of the kernel compiled for sm_90 (bf16, V = 50,265); see ``fastdiff.kernels.cost_model``.
    Each runs in a subprocess: one needs the interpreter, the other the compiler. ``{}`` without Triton."""
    if importlib.util.find_spec("triton") is None:
        return {}
    proxies: Dict[str, object] = {}
    with tempfile.TemporaryDirectory() as folder:
        for what, interpret in (("passes", "1"), ("sass", None)):
            env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
            if interpret:
                env["TRITON_INTERPRET"] = interpret
            target = Path(folder) / f"{what}.json"
            done = subprocess.run([sys.executable, "-W", "ignore", "-m", "fastdiff.kernels.cost_model", what, "--json",
                                   str(target)], env=env, capture_output=True, text=True, timeout=900)
            proxies[what] = (json.loads(target.read_text()) if done.returncode == 0
                             else {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]})
    return proxies


def markdown(document: Dict[str, object]) -> str:
    device, v = document["device"], document["versions"]
    lines = [f"Device: {device['name']} ({device['type']}); torch {v['torch']}, triton {v['triton']}, "
             f"fastdiff {v['fastdiff']} @ {v['git_commit']}.", "",
             f"| op | setting | impl | ms | GB/s | % of copy | time / {YARDSTICK} | speedups |",
             "|---|---|---|--:|--:|--:|--:|---|"]
    for r in document["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['op']} | {r['setting']} | {r['impl']} | {r['status']}: {r['reason']} | | | | |")
            continue
        pct = f"{r['pct_of_copy']:.0f}%" if r.get("pct_of_copy") is not None else ""
        speedups = ", ".join(f"{x:.2f}x vs {name}" for name, x in sorted(r["speedup_vs"].items()) if name != YARDSTICK)
        yardstick = f"{r['x_yardstick']:.2f}" if r.get("x_yardstick") is not None else ""
        lines.append(f"| {r['op']} | {r['setting']} | {r['impl']} | {r['ms']:.4f} | {r['gb_per_s']:.3g} | {pct} | "
                     f"{yardstick} | {speedups} |")
    proxies = document.get("cost_model") or {}
    passes, sass = proxies.get("passes", {}), proxies.get("sass", {})
    if passes and "error" not in passes and sass and "error" not in sass:
        temperature = sass["temperature"]["instructions_per_element"]
        lines += ["", "Without a GPU, what `sample_masked` would cost there: passes over each masked row (Triton "
                  "interpreter, V = 1,000, the mean of two rows) and SASS instructions per logit element (sm_90, "
                  "bf16, V = 50,265; greedy and temperature share one compiled kernel).", "",
                  "| mode | passes, bf16: peaked / random / near-uniform | passes, fp32 | SASS per element | "
                  "vs temperature |",
                  "|---|---|---|--:|--:|"]
        for mode, by_dtype in passes.items():
            per_element = sass[mode]["instructions_per_element"]
            cells = [" / ".join(f"{n:g}" for n in by_dtype[dtype].values()) for dtype in ("bfloat16", "float32")]
            lines.append(f"| {mode} | {cells[0]} | {cells[1]} | {per_element:.0f} | {per_element / temperature:.1f}x |")
    elif proxies:
        lines += ["", f"Cost proxies failed: {proxies}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the code fastdiff replaces, as users write it
# ------------------------------------------------------------------------------------------------
def _naive_sample(logits: torch.Tensor, mask: torch.Tensor, temperature: float):
    """A full-vocabulary fp32 softmax over the whole canvas, then multinomial at the masked rows."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    rows = probs[mask]
    tokens = torch.multinomial(rows, 1)[:, 0]
    return tokens, rows.gather(-1, tokens[:, None])[:, 0]


def _llada_sample(logits: torch.Tensor, mask: torch.Tensor, temperature: float):
    """LLaDA's lines: fp64 Gumbel noise on every position, argmax, fp64 softmax for the confidence."""
    z = logits.to(torch.float64)
    noisy = z.exp() / (-torch.log(torch.rand_like(z))) ** temperature if temperature > 0 else z
    tokens = noisy.argmax(dim=-1)
    confidence = torch.softmax(z, dim=-1).gather(-1, tokens[..., None])[..., 0]
    return tokens, torch.where(mask, confidence, float("-inf"))


def _python_loop_topk(scores: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor):
    """LLaDA's selection: a ``torch.topk`` per row in a Python loop."""
    keyed = torch.where(eligible, scores, float("-inf"))
    chosen = torch.zeros_like(eligible)
    for row in range(keyed.shape[0]):
        chosen[row, torch.topk(keyed[row], int(k[row])).indices] = True
    return chosen


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def pending_document(size: KernelSize) -> Dict[str, object]:
    return dict(status="pending: no GPU run yet", size=size.name,
                command="python benchmarks/kernels.py --size gpu",
                cases=[c.name for c in cases()])


def main(argv: Optional[List[str]] = None) -> int:
    """Run the kernel benchmarks; returns the exit status (0; 2 on bad arguments)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="gpu (default with CUDA) or cpu (small shapes, no Triton timings)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--dry-run", action="store_true", help="write the pending GPU file and run nothing")
    args = parser.parse_args(argv)
    size = SIZES[args.size or ("gpu" if torch.cuda.is_available() else "cpu")]
    if args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / PENDING_GPU_FILE).write_text(json.dumps(pending_document(SIZES["gpu"]), indent=2) + "\n")
        return 0
    device = torch.device(args.device or ("cuda" if size.name == "gpu" else "cpu"))
    bench = KernelBench(size, device)
    for case in cases():
        record = bench.measure(case)
        print(f"{case.name}: {record['status']}" + (f" {record['ms']:.4f} ms" if record["ms"] else ""), flush=True)
    document = bench.finish(args.out)
    print(document["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
