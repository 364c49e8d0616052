"""Compile every kernel configuration for a GPU target on a machine without a GPU.

Triton's compiler needs no device to produce a cubin (``ptxas`` ships in the wheel); only the JIT's
driver asks one for its target. :class:`StandInDriver` answers for a chosen target instead, and each
kernel's launcher is called as it is in the sampler, on CPU tensors of the real dtypes and shapes,
with the kernels' ``run`` switched to ``warmup=True``: arguments are specialised exactly as at a real
launch (integer divisibility, pointer alignment, constexprs, ``num_warps``) and nothing is launched.

Each compiled kernel is read back with the wheel's ``cuobjdump`` (registers, spill and stack bytes)
and ``nvdisasm`` (SASS, for the instruction counts of :func:`sass_loops`).

    python -m fastdiff.kernels.compile_check [--arch 90] [--all] [--json FILE]

runs the representative configurations (or, with ``--all``, every one), prints one line per
configuration and exits 1 if any failed to compile or a main configuration spilled registers. It
must run without ``TRITON_INTERPRET``: the interpreter replaces the kernels by Python functions.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import torch
import triton
from triton.backends.compiler import GPUTarget

VOCABULARIES = (1000, 4096, 32000, 50265, 126464, 151936)
CANVASES = (1, 7, 256, 1000, 4096, 8192)
DTYPES = ("bfloat16", "float16", "float32")
FILTERS = ("none", "top_k", "top_p", "top_k+top_p")
SCORES = ("confidence", "margin", "entropy")
LAYOUTS = ("canvas", "canvas+shift", "gathered rows")


class StandInDriver:
    """The part of Triton's CUDA driver that compiling needs, for a fixed target and no device."""

    def __init__(self, arch: int):
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")


@dataclass
class Config:
    """One launch to compile: which kernel, a description, and the launcher call that makes it."""

    kernel: str
    name: str
    launch: Callable[[], object] = field(repr=False)
    main: bool  # spills are an error here (the configurations users run most)


@dataclass
class Result:
    kernel: str
    name: str
    main: bool
    ok: bool
    seconds: float
    registers: Optional[int] = None
    spill_bytes: Optional[int] = None
    stack_bytes: Optional[int] = None
    shared_bytes: Optional[int] = None
    error: Optional[str] = None

    @property
    def failed(self) -> bool:
        return not self.ok or (self.main and bool(self.spill_bytes))


# ------------------------------------------------------------------------------------------------
# configurations: the launchers' own calls on CPU tensors
# ------------------------------------------------------------------------------------------------
def _sample_config(dtype: str, vocab: int, filters: str, score: str, score_temperature: bool, layout: str,
                   canvas: int = 4) -> Config:
    from fastdiff.kernels.sample_masked import sample_masked_triton, sample_rows_triton

    options = dict(temperature=torch.tensor(0.8), score=score, suppress_ids=torch.tensor([3, 5]))
    if "top_k" in filters:
        options["top_k"] = torch.tensor(50)
    if "top_p" in filters:
        options["top_p"] = torch.tensor(0.95)
    if score_temperature:
        options["score_temperature"] = torch.tensor(1.0)
    rng = torch.zeros(1, 3, dtype=torch.int64)
    torch_dtype = getattr(torch, dtype)

    def launch():
        if layout == "gathered rows":
            rows = torch.empty(canvas, vocab, dtype=torch_dtype)
            return sample_rows_triton(rows, torch.arange(canvas), rng, canvas, **options)
        logits = torch.empty(1, canvas, vocab, dtype=torch_dtype)
        mask = torch.ones(1, canvas, dtype=torch.bool)
        return sample_masked_triton(logits, mask, rng, logits_shift=layout == "canvas+shift", **options)

    name = f"{dtype} V={vocab} {filters} {score}{' score_t' if score_temperature else ''} {layout}"
    main = dtype == "bfloat16" and vocab in (50265, 151936) and not score_temperature and layout != "canvas+shift"
    return Config("sample_masked", name, launch, main)


def _select_config(length: int, threshold: bool) -> Config:
    from fastdiff.kernels.select_topk import select_topk_triton

    def launch():
        scores = torch.empty(2, length)
        eligible = torch.ones(2, length, dtype=torch.bool)
        rng = torch.zeros(2, 3, dtype=torch.int64)
        return select_topk_triton(scores, eligible, torch.ones(2, dtype=torch.int64), rng,
                                  position_temperature=torch.tensor(0.5),
                                  threshold=torch.tensor(0.9) if threshold else None)

    return Config("select_topk", f"L={length}{' threshold' if threshold else ''}", launch, length <= 4096)


def _commit_config(length: int) -> Config:
    from fastdiff.kernels.commit_remask import commit_remask_triton

    def launch():
        canvas = torch.zeros(2, length, dtype=torch.int64)
        confidence = torch.zeros(2, length)
        flags = torch.ones(2, length, dtype=torch.bool)
        return commit_remask_triton(canvas, confidence, canvas.clone(), confidence.clone(), flags, flags,
                                    torch.ones(2, dtype=torch.int64), 0, torch.zeros(2, 3, dtype=torch.int64),
                                    remask_temperature=torch.tensor(0.5))

    return Config("commit_remask", f"L={length}", launch, length <= 4096)


def all_configs() -> List[Config]:
    """Every configuration the launchers produce, up to what changes the compiled code: the dtype,
    the vocabulary's chunk and divisibility, every flag and score kind, the row layout, the canvas."""
    configs = [_sample_config(*combo) for combo in itertools.product(
        DTYPES, VOCABULARIES, FILTERS, SCORES, (False, True), LAYOUTS)]
    configs += [_select_config(length, threshold) for length in CANVASES for threshold in (False, True)]
    configs += [_commit_config(length) for length in CANVASES]
    return configs


def representative_configs() -> List[Config]:
    """A subset for CI: every dtype, filter, score kind, layout and flag at least once, odd and
    aligned vocabularies, the shortest and longest canvases; the main configurations included."""
    configs = []
    for filters, dtype, vocab in zip(FILTERS, ("bfloat16", "float16", "float32", "bfloat16"),
                                     (50265, 151936, 1000, 50265)):
        configs.append(_sample_config(dtype, vocab, filters, "confidence", False, "canvas"))
    configs.append(_sample_config("bfloat16", 151936, "top_k+top_p", "margin", False, "gathered rows"))
    configs.append(_sample_config("bfloat16", 126464, "none", "entropy", True, "canvas+shift"))
    configs.append(_sample_config("float32", 4096, "top_p", "entropy", False, "gathered rows"))
    configs += [_select_config(1, False), _select_config(8192, True), _commit_config(1), _commit_config(8192)]
    return configs


# ------------------------------------------------------------------------------------------------
# compiling
# ------------------------------------------------------------------------------------------------
def _kernels():
    from fastdiff.kernels import commit_remask, sample_masked, select_topk

    return {"sample_masked": sample_masked._sample_masked_kernel, "select_topk": select_topk._select_topk_kernel,
            "commit_remask": commit_remask._commit_remask_kernel}


@contextlib.contextmanager
def compiling_for(arch: int) -> Iterator[List[object]]:
    """Inside: Triton targets ``sm_<arch>`` and every kernel launch compiles instead of running; the
    yielded list collects the compiled kernels in launch order."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("the compile check needs the Triton compiler: unset TRITON_INTERPRET")
    from triton.runtime import driver

    compiled: List[object] = []
    kernels = list(_kernels().values())
    originals = [kernel.run for kernel in kernels]

    def compile_only(original):
        def run(*args, grid, warmup, **kwargs):
            compiled.append(original(*args, grid=grid, warmup=True, **kwargs))
        return run

    previous = driver._active  # None until something asked for the real driver (which needs a GPU)
    driver.set_active(StandInDriver(arch))
    for kernel, original in zip(kernels, originals):
        kernel.run = compile_only(original)
        kernel.device_caches.clear()  # the JIT keeps its compiled kernels per device, not per target
    try:
        yield compiled
    finally:
        for kernel, original in zip(kernels, originals):
            kernel.run = original
            kernel.device_caches.clear()
        driver._active = previous


def _tool(name: str) -> str:
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _run_on_cubin(tool: str, flag: str, cubin: bytes) -> str:
    """What one of the wheel's CUDA binary tools prints for a cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        return subprocess.run([_tool(tool), flag, handle.name], capture_output=True, text=True, check=True).stdout


def _resource_usage(cubin: bytes) -> Dict[str, int]:
    """Registers, stack and spill-related bytes of a cubin, from ``cuobjdump -res-usage``."""
    text = _run_on_cubin("cuobjdump", "-res-usage", cubin)
    return {key: int(value) for key, value in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def sass(cubin: bytes) -> str:
    """The SASS of a cubin (``nvdisasm``, one instruction a line)."""
    return _run_on_cubin("nvdisasm", "-c", cubin)


def compiled_kernel(config: Config, arch: int):
    """The compiled kernel object of one configuration (for its metadata and SASS)."""
    with compiling_for(arch) as compiled:
        config.launch()
    if not compiled:
        raise RuntimeError("the launcher launched nothing")
    return compiled[-1]


def compile_config(config: Config, arch: int) -> Result:
    """Compile one configuration for ``sm_<arch>``; a compile error becomes ``Result.error``."""
    start = time.perf_counter()
    try:
        kernel = compiled_kernel(config, arch)
        usage = _resource_usage(kernel.asm["cubin"])
        return Result(config.kernel, config.name, config.main, True, time.perf_counter() - start,
                      registers=usage.get("REG"), spill_bytes=usage.get("LOCAL", 0), stack_bytes=usage.get("STACK", 0),
                      shared_bytes=kernel.metadata.shared)
    except Exception as error:  # noqa: BLE001 - every compile failure is a finding, reported per configuration
        lines = [line.strip() for line in f"{type(error).__name__}: {error}".splitlines() if line.strip()]
        # a CompilationError quotes the kernel source first: keep where it stopped and why
        message = " | ".join(lines[:1] + lines[-2:]) if len(lines) > 3 else " | ".join(lines)
        return Result(config.kernel, config.name, config.main, False, time.perf_counter() - start,
                      error=message[:600])



def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 80 or 90 (repeatable)")
    parser.add_argument("--all", action="store_true", help="every configuration, not the representative subset")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    arches = args.arch or [90]
    configs = all_configs() if args.all else representative_configs()
    results = []
    for arch in arches:
        for config in configs:
            result = compile_config(config, arch)
            results.append(dict(asdict(result), arch=arch, failed=result.failed))
            status = "FAIL" if result.failed else "ok"
            detail = result.error or (f"{result.registers} registers, {result.spill_bytes} B spilled, "
                                      f"{result.stack_bytes} B stack")
            print(f"sm_{arch} {status:4} {config.kernel}[{config.name}] {result.seconds:.1f}s: {detail}", flush=True)
    failed = [r for r in results if r["failed"]]
    print(f"{len(results) - len(failed)} of {len(results)} configurations compiled cleanly "
          f"(triton {triton.__version__})")
    if args.json:
        args.json.write_text(json.dumps(dict(triton=triton.__version__, results=results), indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
