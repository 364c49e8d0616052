"""fastdiff against GPT-2 and against naive diffusion loops, side by side in one run.

    fastdiff bench --size cpu|gpu [--out DIR]                 (an installed package)
    python benchmarks/suite.py --size cpu|gpu [--out DIR]     (a source checkout: results in benchmarks/results)
    pytest benchmarks/ --benchmark-only [--bench-size cpu|gpu] [--bench-out DIR]

Every command runs the same scenarios (:mod:`fastdiff.bench.scenarios` defines them; ``benchmarks/conftest.py``
hands them to pytest-benchmark) and writes the same three files into the output folder, named after the
device (``cpu-<processor>`` or ``cuda-<gpu>``): a JSON results file, a markdown table (also printed at the
end) and a PNG plot (with matplotlib, the ``bench`` extra) of generated tokens/s against tokens committed
per step, with the GPT-2 peers as horizontal lines.

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

Modules: :mod:`~fastdiff.bench.scenarios` (sizes, scenarios), :mod:`~fastdiff.bench.suite` (the runner),
:mod:`~fastdiff.bench.peers` (the loops compared against), :mod:`~fastdiff.bench.report` (table and plot),
:mod:`~fastdiff.bench.environment` (device and versions), :mod:`~fastdiff.bench.command` (the command line).
Only the core dependencies are imported; matplotlib when the plot is drawn.
"""
from fastdiff.bench.command import PENDING_GPU_FILE, RESULTS_DIR, build_parser, main
from fastdiff.bench.environment import cpu_name, device_info, slug, versions
from fastdiff.bench.scenarios import (LABELS, PEER_METHODS, SEED_STEPS, SEED_TEMPERATURE, SEED_TOP_K, SEED_TOP_P,
                                      SIZES, Scenario, SuiteSize, resolve_size, scenarios_for)
from fastdiff.bench.suite import NotAvailable, Suite, add_speedups, seed_reproduction

__all__ = ["LABELS", "PEER_METHODS", "PENDING_GPU_FILE", "RESULTS_DIR", "SEED_STEPS", "SEED_TEMPERATURE",
           "SEED_TOP_K", "SEED_TOP_P", "SIZES", "NotAvailable", "Scenario", "Suite", "SuiteSize", "add_speedups",
           "build_parser", "cpu_name", "device_info", "main", "resolve_size", "scenarios_for", "seed_reproduction",
           "slug", "versions"]
