"""The benchmark suite's command line: ``fastdiff bench`` and ``python benchmarks/suite.py``."""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch

from fastdiff.bench.environment import device_info
from fastdiff.bench.scenarios import SIZES, Scenario, SuiteSize, pending_document, resolve_size, scenarios_for
from fastdiff.bench.suite import Suite

RESULTS_DIR = Path("fastdiff-bench-results")
PENDING_GPU_FILE = "gpu-pending.json"


def build_parser(prog: Optional[str] = None, parser_class: Type[argparse.ArgumentParser] = argparse.ArgumentParser,
                 results_dir: Path = RESULTS_DIR) -> argparse.ArgumentParser:
    """The command-line options of :func:`main`.

    Args:
        prog: the program name in the usage line (``None``: argparse's, from ``sys.argv[0]``).
        parser_class: the parser to build (the ``fastdiff`` command line's reports errors in one line).
        results_dir: the default of ``--out``.
    """
    parser = parser_class(prog=prog,
                          description="fastdiff against GPT-2 and naive diffusion loops, side by side in one run.")
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="model sizes: 'cpu' (small, minutes on 2 cores) or 'gpu' (RoBERTa-base / GPT-2 "
                             "small, bf16). Default: gpu with CUDA, else cpu")
    parser.add_argument("--device", default=None, help="torch device; default: cuda for --size gpu, else cpu")
    parser.add_argument("--out", type=Path, default=results_dir, help=f"results folder (default {results_dir})")
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


def _dry_run(size: SuiteSize, out: Path) -> int:
    """List the scenarios of ``size`` and write its pending results file into ``out``."""
    scenarios = scenarios_for(size)
    document = pending_document(size, command=f"fastdiff bench --size {size.name}")
    out.mkdir(parents=True, exist_ok=True)
    target = out / (PENDING_GPU_FILE if size.name == "gpu" else f"{size.name}-pending.json")
    target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print("\n".join(s.name for s in scenarios))
    print(f"{len(scenarios)} scenarios; wrote {target}")
    return 0


def _run_scenarios(suite: Suite, scenarios: Sequence[Scenario], out: Path, plot: bool) -> Tuple[int, Dict]:
    """Measure every scenario, a line each, and write the results into ``out``; a failing scenario is
    recorded with its traceback printed, and the others still run. Returns (failures, results document)."""
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
        document = suite.finish(out, plot=plot)
    finally:
        suite.restore_threads()
    return failures, document


def main(argv: Optional[List[str]] = None, parser: Optional[argparse.ArgumentParser] = None) -> int:
    """Run the suite from the command line (``fastdiff bench``); returns the exit status.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``), e.g. ``["--size", "cpu", "--out", "results"]``.
        parser: the parser of the options (``None``: :func:`build_parser`'s default).

    Returns:
        ``0`` when every scenario ran (or was reported not available / out of memory), ``1`` when a
        scenario failed (its row says why; the others still ran and were written), ``2`` on bad arguments.

    Example:
        >>> main(["--size", "cpu", "--out", "/tmp/fastdiff-bench"])   # doctest: +SKIP
        0
    """
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        size = resolve_size(args.size, batch_sizes=args.batch_sizes, steps=args.steps, gen_length=args.gen_length,
                            prompt_length=args.prompt_length, repeats=args.repeats, warmup=args.warmup,
                            threads=args.threads)
        _validate_size(size)
    except ValueError as error:
        parser.error(str(error))
    if args.dry_run:
        return _dry_run(size, args.out)
    device = torch.device(args.device or ("cuda" if size.name == "gpu" else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--size {size.name} runs on CUDA, and no CUDA device is available here "
                     f"(use --size cpu, or --dry-run to list the scenarios)")
    suite = Suite(size, device)
    scenarios = scenarios_for(size)
    print(f"fastdiff benchmark suite: size {size.name} on {device_info(device)['name']}, "
          f"{len(scenarios)} scenarios, {torch.get_num_threads()} CPU thread(s)", flush=True)
    failures, document = _run_scenarios(suite, scenarios, args.out, plot=not args.no_plot)
    if device.type == "cuda" and size.name == "gpu":  # the GPU figures are no longer pending
        (args.out / PENDING_GPU_FILE).unlink(missing_ok=True)
    print()
    print(document["table"])
    print("\n".join(f"wrote {path}" for path in document["written"]))
    if failures:
        print(f"{failures} scenario(s) failed: see their tracebacks above and their 'failed' rows", file=sys.stderr)
        return 1
    return 0
