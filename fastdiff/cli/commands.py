"""The commands (``demo``, ``generate``, ``trace``, ``bench``) and :func:`main`."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from fastdiff import GenerationOutput
from fastdiff.cli.inputs import (EncodedText, choose_threads, encode_input, load_model, resolve_device, resolve_dtype,
                                 token_text_fn)
from fastdiff.cli.parser import (DEFAULT_GEN_LENGTH, DEFAULT_TRACE_OUTPUTS, CLIError, Parser, build_parser, sampler_fields,
                                 sampler_overrides)
from fastdiff.config import SamplerConfig

DEMO_PROMPT = "The package manager"
DEMO_TEMPLATE = "Before you install a new kernel, make a [MASK] of the [MASK] that works."
DEMO_DESCRIPTION = "all-MiniLM-L6-v2 fine-tuned into a text-diffusion model on English documentation"
# the demo generation's sampler settings (its steps and length are the demo command's flags)
DEMO_SAMPLER = dict(unmask="margin", temperature=0.8, top_k=50, block_length=16)


# ----------------------------------------------------------------------------------------------
# running one generation
# ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One generation: the input, the output and how long it took."""

    encoded: EncodedText
    initial: torch.Tensor  # int64 [B, L] on the CPU: the canvas before the first step
    output: GenerationOutput  # sequences moved to the CPU
    seconds: float
    config: SamplerConfig
    tokens_per_row: int  # tokens the sampler filled in each row
    mask_token_id: int


def config_from_args(args: argparse.Namespace, **forced) -> SamplerConfig:
    overrides = {**sampler_overrides(args), **forced}
    if overrides.get("seed") is None:  # draw the seed here so that it can be reported and replayed
        overrides["seed"] = int.from_bytes(os.urandom(4), "little") >> 1
    try:
        return SamplerConfig().replace(**overrides)
    except (ValueError, TypeError) as error:
        raise CLIError(str(error)) from None


def _progress_callback(bar) -> Callable[[int, int], None]:
    def progress(step: int, planned: int) -> None:
        bar.update(step - bar.n)

    return progress


def mask_token_id(args: argparse.Namespace, tokenizer) -> int:
    mask_id = args.mask_token_id if args.mask_token_id is not None else tokenizer.mask_token_id
    if mask_id is None:
        raise CLIError("the tokenizer has no mask token: pass --mask-token-id ID")
    return mask_id


def make_sampler(args: argparse.Namespace, model, tokenizer, mask_id: int, config: SamplerConfig):
    """The :class:`fastdiff.Sampler` of the command's flags."""
    from fastdiff import Sampler

    return Sampler(model, mask_token_id=mask_id, config=config, backend=args.backend, tokenizer=tokenizer,
                   cuda_graphs={"auto": "auto", "on": True, "off": False}[args.cuda_graphs],
                   masked_head=args.masked_head, compile=args.compile)


def run_generation(args: argparse.Namespace, model, tokenizer, config: SamplerConfig, device, batch: int) -> Run:
    """Tokenise ``args.text``, run ``Sampler.generate`` or ``Sampler.infill`` with a progress bar on
    stderr (unless ``--quiet`` or stderr is not a terminal), and time it."""
    from tqdm import tqdm

    mask_id = mask_token_id(args, tokenizer)
    text = sys.stdin.read().rstrip("\n") if args.text == "-" else args.text
    encoded = encode_input(text, tokenizer, mask_id, special_tokens=not args.no_special_tokens)
    if encoded.is_template and args.gen_length is not None:
        raise CLIError("--gen-length is for prompts: a template sets the size of its holes with [MASK*N]")
    gen_length = args.gen_length if args.gen_length is not None else DEFAULT_GEN_LENGTH
    ids = torch.tensor([encoded.ids] * batch, dtype=torch.int64, device=device)
    to_fill = sum(end - start for start, end in encoded.holes) if encoded.is_template else gen_length
    total = min(config.steps, to_fill) if config.steps is not None and to_fill > 0 else to_fill
    bar = tqdm(total=total, desc="denoising", unit="step", leave=False, file=sys.stderr,
               disable=True if args.quiet else None)
    try:
        sampler = make_sampler(args, model, tokenizer, mask_id, config)
        start = time.perf_counter()
        with bar:
            hook = dict(progress=_progress_callback(bar)) if not bar.disable else {}
            if encoded.is_template:
                output = sampler.infill(ids, **hook)
                initial = ids
            else:
                output = sampler.generate(ids, gen_length=gen_length, **hook)
                initial = torch.cat([ids, torch.full((batch, gen_length), mask_id, dtype=torch.int64,
                                                     device=device)], dim=1)
            output.sequences = output.sequences.cpu()
        seconds = time.perf_counter() - start
    except (ValueError, TypeError) as error:
        raise CLIError(str(error)) from None
    return Run(encoded=encoded, initial=initial.cpu(), output=output, seconds=seconds, config=config,
               tokens_per_row=to_fill, mask_token_id=mask_id)


def _summary(run: Run, label: str, device, dtype) -> str:
    rows = run.output.sequences.shape[0]
    tokens = rows * run.tokens_per_row
    return (f"{label}: {rows} x {run.tokens_per_row} tokens in {run.output.nfe} steps, {run.seconds:.2f} s "
            f"({tokens / max(run.seconds, 1e-9):.0f} tokens/s) on {device} {_dtype_name(dtype)}, "
            f"seed {run.config.seed}")


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------
def _require_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def _prepare(args: argparse.Namespace, **forced):
    config = config_from_args(args, **forced)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer, label = load_model(args.model, device, dtype)
    return config, device, dtype, model, tokenizer, label


def command_generate(args: argparse.Namespace) -> int:
    """``fastdiff generate``: print the texts, or one JSON object with ``--json``; with ``--input``, a
    JSONL result per input line."""
    _require_positive(args, "batch", "batch_size")
    if args.input is not None:
        return command_generate_many(args)
    if args.text is None:
        raise CLIError("give a TEXT to generate from, or --input FILE (see 'fastdiff generate --help')")
    config, device, dtype, model, tokenizer, label = _prepare(args)
    run = run_generation(args, model, tokenizer, config, device, args.batch)
    out = run.output
    samples = []
    for row, ids in enumerate(out.sequences.tolist()):
        sample = {"text": tokenizer.decode(ids, skip_special_tokens=True), "token_ids": ids,
                  "stopped_at_eos": bool(out.stopped_at_eos[row])}
        if run.encoded.is_template:
            sample["fills"] = [tokenizer.decode(ids[start:end], skip_special_tokens=True)
                               for start, end in run.encoded.holes]
        else:
            sample["completion"] = tokenizer.decode(ids[len(run.encoded.ids):], skip_special_tokens=True)
        if out.history is not None:
            sample["history"] = [canvas[row].tolist() for canvas in out.history]
        samples.append(sample)
    if not args.quiet:
        print(_summary(run, label, device, dtype), file=sys.stderr)
    if args.json:
        options = {f.name: getattr(config, f.name) for f in sampler_fields()}
        print(json.dumps({"model": label, "device": str(device), "dtype": _dtype_name(dtype),
                          "mode": "infill" if run.encoded.is_template else "generate", "nfe": out.nfe,
                          "seconds": round(run.seconds, 6), "config": options, "samples": samples}))
        return 0
    for row, sample in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {row + 1}/{len(samples)} ---")
        print(sample["text"])
    return 0


def command_generate_many(args: argparse.Namespace) -> int:
    """``fastdiff generate --input FILE [--output FILE]``: see :mod:`fastdiff.cli.jobs`. With an output file
    the job is resumable and runs data-parallel under ``torchrun`` (:mod:`fastdiff.distributed`); with
    standard output it runs in one process and writes at the end. Exits 0 when every line ran, 1 when
    some got an ``error`` (their results say why) or a rank stopped."""
    from tqdm import tqdm

    from fastdiff import distributed
    from fastdiff.cli import jobs as job_files

    if args.text is not None:
        raise CLIError("give either TEXT or --input, not both")
    for flag, value in (("--json", args.json), ("--batch", args.batch != 1)):
        if value:
            raise CLIError(f"{flag} is for one TEXT; with --input every line gets a JSONL result")
    if isinstance(args.seed, tuple):
        raise CLIError("--seed takes one int with --input: each line's seed is it plus the line number minus one "
                       "(or the line's own \"seed\")")
    world = _start_process_group(args)
    try:
        config, device, dtype, model, tokenizer, label = _prepare(args)
        sampler = make_sampler(args, model, tokenizer, mask_token_id(args, tokenizer), config)
        gen_length = args.gen_length or DEFAULT_GEN_LENGTH
        if args.output != "-":
            with job_files.open_input(args.input):  # a missing or unreadable file: one line, exit 1
                pass
            folder = Path(args.output).resolve().parent
            if not folder.is_dir() or not os.access(folder, os.W_OK):
                raise CLIError(f"--output {args.output}: {folder} is not a writable directory")
            result = distributed.generate_dataset(sampler, tokenizer, args.input, args.output, config=config,
                                                  gen_length=gen_length, batch_size=args.batch_size,
                                                  special_tokens=not args.no_special_tokens, progress=not args.quiet)
            if distributed.rank_and_world()[0] == 0:
                for line in result["errors"]:
                    print(f"fastdiff: {line}", file=sys.stderr)
                if not args.quiet:
                    for line in distributed.summary_lines(result):
                        print(f"{label}: {line}", file=sys.stderr)
            return 0 if result["ok"] else 1
        if world > 1:
            raise CLIError("--output -: under torchrun every rank needs a file to write (give --output FILE)")
        with job_files.open_input(args.input) as source:
            jobs = job_files.read_jobs(source)
        start = time.perf_counter()
        with tqdm(total=len(jobs), desc="prompts", unit="prompt", leave=False, file=sys.stderr,
                  disable=True if args.quiet else None) as bar:
            ok, failed = job_files.run_jobs(jobs, sampler, tokenizer, config, batch_size=args.batch_size,
                                            gen_length=gen_length, special_tokens=not args.no_special_tokens,
                                            output=sys.stdout, bar=bar)
        if not args.quiet:
            print(f"{label}: {ok} of {len(jobs)} prompts in {time.perf_counter() - start:.2f} s on {device} "
                  f"{_dtype_name(dtype)}" + (f"; {failed} with an error" if failed else ""), file=sys.stderr)
        return 1 if failed else 0
    finally:
        if world > 1:
            torch.distributed.barrier()  # no rank tears the group down while another still receives
            torch.distributed.destroy_process_group()


def _start_process_group(args: argparse.Namespace) -> int:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group (NCCL with CUDA, else gloo) and put
    this rank on its own GPU (``LOCAL_RANK``) unless ``--device`` names one; returns the world size."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 1
    if not args.input or args.input == "-" or args.output == "-":
        raise CLIError("under torchrun, --input and --output must be files every rank can read and write")
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return world


def command_trace(args: argparse.Namespace) -> int:
    """``fastdiff trace``: one generation rendered as GIF / HTML / terminal animation."""
    from fastdiff import trace as tracing

    outputs = [Path(p) for p in (args.output or ([] if args.terminal else DEFAULT_TRACE_OUTPUTS))]
    for path in outputs:
        if path.suffix.lower() not in (".gif", ".html", ".htm"):
            raise CLIError(f"-o {path}: unknown format {path.suffix or '(no suffix)'!r}: use .gif or .html")
        if not path.parent.is_dir():
            raise CLIError(f"-o {path}: no such directory {str(path.parent)!r}")
    _require_positive(args, "width", "frame_ms", "font_size")
    config, device, dtype, model, tokenizer, label = _prepare(args, return_history=True)
    run = run_generation(args, model, tokenizer, config, device, 1)
    if not args.quiet:
        print(_summary(run, label, device, dtype), file=sys.stderr)
    trace = tracing.build_trace(run.output, run.initial, run.mask_token_id, token_text_fn(tokenizer),
                                special_ids=tokenizer.all_special_ids, score_name=config.score_kind,
                                title=f"fastdiff \u00b7 {label}")
    for path in outputs:
        if path.suffix.lower() == ".gif":
            frames = tracing.save_gif(trace, path, width=args.width, font_size=args.font_size, frame_ms=args.frame_ms)
            print(f"wrote {path} ({frames} frames)")
        else:
            tracing.save_html(trace, path, width=args.width)
            print(f"wrote {path} ({trace.num_steps} steps)")
    if args.terminal:
        columns, rows = shutil.get_terminal_size()
        tracing.play_terminal(trace, sys.stdout, width=max(min(args.width, columns - 1), 8),
                              delay=args.frame_ms / 1000, rows=rows)
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """``fastdiff demo``: with the bundled demo model on the CPU, continue an English prompt and fill
    the blanks of an English sentence; print each result with its timing."""
    from fastdiff import Sampler

    _require_positive(args, "steps", "gen_length", "batch")
    model, tokenizer, _ = load_model(None, torch.device("cpu"), torch.float32)
    mask_id = tokenizer.mask_token_id
    try:
        sampler = Sampler(model, mask_token_id=mask_id, steps=args.steps, seed=args.seed, **DEMO_SAMPLER)
        prompt = torch.tensor([encode_input(DEMO_PROMPT, tokenizer, mask_id).ids] * args.batch)
        sampler.generate(prompt, gen_length=args.gen_length)  # warm-up
        start = time.perf_counter()
        generated = sampler.generate(prompt, gen_length=args.gen_length)
        generate_seconds = time.perf_counter() - start
        template = encode_input(DEMO_TEMPLATE, tokenizer, mask_id)
        start = time.perf_counter()
        filled = sampler.infill(torch.tensor([template.ids]), temperature=0.0)
        infill_seconds = time.perf_counter() - start
    except (ValueError, TypeError) as error:
        raise CLIError(str(error)) from None
    print(f"fastdiff demo: the bundled demo model ({DEMO_DESCRIPTION}), cpu float32, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"generate: {args.batch} x {args.gen_length} tokens in {generated.nfe} steps: "
          f"{generate_seconds * 1000:.1f} ms ({args.batch * args.gen_length / generate_seconds:.0f} tokens/s)")
    for row, ids in enumerate(generated.sequences.tolist()):
        if args.batch > 1:
            print(f"--- sample {row + 1}/{args.batch} ---")
        print(tokenizer.decode(ids, skip_special_tokens=True))
    holes = sum(end - begin for begin, end in template.holes)
    print(f"infill: {holes} tokens in {filled.nfe} steps: {infill_seconds * 1000:.1f} ms (greedy)")
    print(tokenizer.decode(filled.sequences[0].tolist(), skip_special_tokens=True))
    return 0


def command_bench(argv: Sequence[str]) -> int:
    """``fastdiff bench ARGS...``: :func:`fastdiff.bench.main` with ``ARGS`` (its errors are one line)."""
    from fastdiff import bench

    try:
        return bench.main(list(argv), parser=bench.build_parser(prog="fastdiff bench", parser_class=Parser))
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name; ``None``: ``sys.argv[1:]``. With no command (no
            arguments, or only options), ``demo`` runs.

    Returns:
        the exit status: 0 on success, 2 for a usage error (bad flag or value, missing model), 1 when a
        model cannot be loaded, 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["demo"] + argv
    parser = build_parser()
    try:
        if argv[0] == "bench":
            return command_bench(argv[1:])
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:  # --help / --version
            return exit_.code if isinstance(exit_.code, int) else 0
        handlers = {"demo": command_demo, "generate": command_generate, "trace": command_trace}
        choose_threads(args.threads)
        return handlers[args.command](args)
    except CLIError as error:
        print(error.line(), file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("\nfastdiff: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fastdiff generate ... | head -1`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
