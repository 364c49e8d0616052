"""What a sampling mode costs, measured without a GPU: passes over the vocabulary and SASS per element.

* :func:`count_passes` runs ``sample_masked`` through the Triton interpreter and counts every logit
  element the kernel loads: passes = elements loaded / (masked rows x vocabulary). It needs
  ``TRITON_INTERPRET=1`` before the kernel modules are imported.
* :func:`sass_per_element` compiles the kernel for a GPU target (see :mod:`.compile_check`) and reads
  its SASS: the instructions in the bodies of the loops that pass over the logits, each divided by
  the logits one thread handles per iteration, summed. It needs the compiler, so it must run without
  the interpreter.

    python -m fastdiff.kernels.cost_model passes|sass [--json FILE]

Both are proxies of GPU time, not timings; the kernel benchmarks print them beside the modes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from typing import Dict, Iterator, List, Optional

import torch

# mode -> sampling options, in the order the benchmarks print them
MODES: Dict[str, dict] = {
    "greedy": dict(),
    "temperature": dict(temperature=0.8),
    "top-k 50": dict(temperature=0.8, top_k=50),
    "top-p 0.95": dict(temperature=0.8, top_p=0.95),
    "top-k 50 + top-p 0.95": dict(temperature=0.8, top_k=50, top_p=0.95),
}
PROFILES = ("peaked", "random", "near-uniform")
PASS_DTYPES = ("bfloat16", "float32")  # 16-bit keys (two digits) and 32-bit keys (four)


def profile_logits(profile: str, rows: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """``[1, rows, vocab]`` fp32 logits: ``peaked`` (one token near all the mass), ``random``
    (N(0, 3²)) or ``near-uniform`` (N(0, 0.01²): top-p 0.95 keeps about 95% of the vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    if profile == "peaked":
        logits = torch.randn(1, rows, vocab, generator=g)
        logits[..., 7] += 30.0
    elif profile == "random":
        logits = torch.randn(1, rows, vocab, generator=g) * 3
    elif profile == "near-uniform":
        logits = torch.randn(1, rows, vocab, generator=g) * 0.01
    else:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return logits


@contextlib.contextmanager
def recording_loads(tensor: torch.Tensor) -> Iterator[List[int]]:
    """Inside: every element of ``tensor`` that an interpreted kernel loads (mask on) is appended to
    the yielded list, as its flat index (one entry per load, so a row read twice appears twice)."""
    from triton.runtime import interpreter

    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    loaded: List[int] = []
    original = interpreter.InterpreterBuilder.create_masked_load

    def recording_load(builder, ptrs, mask, *args, **kwargs):
        addresses = ptrs.data.astype("uint64")
        inside = (addresses >= start) & (addresses < end) & mask.data.astype(bool)
        loaded.extend(((addresses[inside] - start) // tensor.element_size()).tolist())
        return original(builder, ptrs, mask, *args, **kwargs)

    interpreter.InterpreterBuilder.create_masked_load = recording_load
    try:
        yield loaded
    finally:
        interpreter.InterpreterBuilder.create_masked_load = original


def count_passes(options: dict, logits: torch.Tensor, block_v: Optional[int] = None) -> float:
    """Passes the kernel makes over each masked row: logit elements loaded / (rows x vocabulary)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("count_passes runs the kernel in the Triton interpreter: set TRITON_INTERPRET=1 first")
    from fastdiff.kernels.sample_masked import sample_masked_triton

    B, L, V = logits.shape
    with recording_loads(logits) as loaded:
        sample_masked_triton(logits, torch.ones(B, L, dtype=torch.bool), torch.zeros(B, 3, dtype=torch.int64),
                             block_v=block_v, **options)
    return len(loaded) / (B * L * V)


# ------------------------------------------------------------------------------------------------
# SASS
# ------------------------------------------------------------------------------------------------
_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")
_BRANCH_TARGET = re.compile(r"\bBRA\b[^`]*`\(\.L_x_(\d+)\)")
_LABEL = re.compile(r"^\.L_x_(\d+):")


def sass_loops(sass: str) -> List[dict]:
    """Loops of a SASS listing: backward branches, each with its body's instruction count, whether
    the body makes 128-bit global loads (the logits' chunks; other loads are scalars) and whether it
    issues tensor-core products (``HMMA``, or ``HGMMA`` on sm_90: the weighted digit histograms).
    ``depth`` counts the loops that enclose it."""
    labels: Dict[str, int] = {}
    instructions: List[tuple] = []  # (index, opcode, line)
    for line in sass.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            labels[label.group(1)] = len(instructions)
            continue
        match = _INSTRUCTION.search(line)
        if match:
            instructions.append((len(instructions), match.group(3), line))
    loops = []
    for index, opcode, line in instructions:
        target = _BRANCH_TARGET.search(line)
        if opcode.startswith("BRA") and target and labels.get(target.group(1), index + 1) <= index:
            begin = labels[target.group(1)]
            body = [op for _, op, _ in instructions[begin:index + 1]]
            loops.append(dict(begin=begin, end=index, instructions=len(body),
                              loads_vectors=any(op.startswith("LDG.E.128") for op in body),
                              multiplies=any("MMA" in op for op in body)))
    for loop in loops:
        loop["depth"] = sum(1 for other in loops if other is not loop and other["begin"] <= loop["begin"]
                            and loop["end"] <= other["end"])
    return loops


def sass_per_element(options: dict, vocab: int = 50265, dtype: str = "bfloat16", arch: int = 90) -> dict:
    """SASS instructions per logit element of one sampling mode (see the module docstring).

    The vocabulary passes are the innermost loops that load 128-bit chunks of ``BLOCK_V`` logits
    (counts and the draw) or multiply on tensor cores over ``MASS_BLOCK`` logits (masses). Each loop
    body's instructions are divided by the logits one thread handles per iteration and summed over
    the loops. That is an upper bound twice over: the masked first and last chunks sit in the same
    loop bodies, and a pass that runs only on one branch of the search (the nucleus parting from the
    top-k threshold) is counted as if it always ran. Greedy and temperature share one compiled
    kernel (the temperature is a runtime value), so they get the same figure.
    """
    from fastdiff.kernels import compile_check
    from fastdiff.kernels.sample_masked import launch_shape

    filters = "+".join(name for name in ("top_k", "top_p") if name in options) or "none"
    config = compile_check._sample_config(dtype, vocab, filters, "confidence", False, "canvas")
    kernel = compile_check.compiled_kernel(config, arch)
    loops = [loop for loop in sass_loops(compile_check.sass(kernel.asm["cubin"]))
             if loop["loads_vectors"] or loop["multiplies"]]
    innermost = [loop for loop in loops
                 if not any(o is not loop and loop["begin"] <= o["begin"] and o["end"] <= loop["end"] for o in loops)]
    shape = launch_shape(vocab, filtering="top_p" in options or "top_k" in options)
    threads = 32 * shape["num_warps"]
    total = sum(loop["instructions"] / (shape["MASS_BLOCK" if loop["multiplies"] else "BLOCK_V"] / threads)
                for loop in innermost)
    return dict(instructions_per_element=total, vocabulary_loops=len(innermost),
                loop_instructions=[loop["instructions"] for loop in innermost],
                registers=compile_check._resource_usage(kernel.asm["cubin"]).get("REG"))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("passes", "sass"))
    parser.add_argument("--vocab", type=int, default=None, help="passes: 1000; sass: 50265")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    results: Dict[str, dict] = {}
    for mode, options in MODES.items():
        if args.what == "passes":
            os.environ["TRITON_INTERPRET"] = "1"  # before the kernel modules are imported (lazily, below)
            vocab = args.vocab or 1000
            results[mode] = {}
            for dtype in PASS_DTYPES:
                rows = {profile: profile_logits(profile, 2, vocab).to(getattr(torch, dtype)) for profile in PROFILES}
                results[mode][dtype] = {profile: count_passes(options, logits, block_v=256)
                                        for profile, logits in rows.items()}
            print(f"{mode}: " + "; ".join(f"{dtype} " + ", ".join(f"{p} {n:g}" for p, n in counts.items())
                                          for dtype, counts in results[mode].items()) + " passes", flush=True)
        else:
            results[mode] = sass_per_element(options, vocab=args.vocab or 50265)
            print(f"{mode}: {results[mode]['instructions_per_element']:.0f} SASS instructions per element "
                  f"({results[mode]['vocabulary_loops']} vocabulary loops)", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
