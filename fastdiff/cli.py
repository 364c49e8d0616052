"""The ``fastdiff`` command line (also ``python -m fastdiff``).

Commands:

* ``fastdiff demo`` (the default when no command is given): with the demo model bundled in the
  package, on the CPU and offline, continue a Python prompt and fill the holes of a function; prints
  the code and the timings.
* ``fastdiff generate TEXT``: generate after a prompt, or fill the ``[MASK]`` / ``[MASK*N]`` holes of an
  infill template. Every :class:`fastdiff.SamplerConfig` option is a flag.
* ``fastdiff trace TEXT``: one generation's trajectory as an animated GIF, a self-contained HTML page
  with a step slider, or an in-place animation in the terminal (``--terminal``).
* ``fastdiff bench``: the benchmark suite (:mod:`fastdiff.bench`): fastdiff against GPT-2 and naive
  diffusion loops.

Errors (bad flags, a missing model, an option value the sampler rejects) print one line and exit with
status 2 (1 when a model directory cannot be loaded); Ctrl-C exits with status 130.

Example:
    $ fastdiff generate $'def read_config(path):\n' --gen-length 48      # the bundled demo model
    $ fastdiff generate --model ./my-roberta-diffusion "The capital of France is" --gen-length 32 --steps 16
    $ fastdiff generate --model ./my-roberta-diffusion "A [MASK*12] jumped over the lazy dog." --json
    $ fastdiff trace --model ./my-roberta-diffusion "Once upon a time" -o trace.gif -o trace.html
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import json
import os
import re
import shutil
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

import fastdiff
from fastdiff import GenerationOutput
from fastdiff.config import SamplerConfig
from fastdiff.pretrained import DEMO_MODEL_DIR, load_pretrained

DEMO_PROMPT = "import os\n\n\ndef list_files(directory):\n"
DEMO_TEMPLATE = "def is_empty(items):\n    if len(items) == [MASK]:\n        return True\n    return [MASK]\n"
DEMO_DESCRIPTION = "4.1M-parameter masked LM trained on Python's standard library"
DEFAULT_GEN_LENGTH = 64
DEFAULT_TRACE_OUTPUTS = ("fastdiff-trace.gif", "fastdiff-trace.html")

_PLACEHOLDER = re.compile(r"\[MASK(?:\*(\d+))?\]")
_DTYPES = ("auto", "float32", "float16", "bfloat16")


class CLIError(Exception):
    """A problem reported as one line on stderr (see :meth:`line`), exiting with ``code``."""

    def __init__(self, message: str, code: int = 2, prog: str = "fastdiff"):
        super().__init__(message)
        self.code = code
        self.prog = prog

    def line(self) -> str:
        """The line printed: ``"PROG: error: MESSAGE"``, or the bare message without a ``prog``."""
        return f"{self.prog}: error: {self}" if self.prog else str(self)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (raised as :class:`CLIError`), not usage + exit."""

    def error(self, message: str):
        raise CLIError(f"{message} (see '{self.prog} --help')", prog=self.prog)


# ----------------------------------------------------------------------------------------------
# SamplerConfig fields as flags
# ----------------------------------------------------------------------------------------------
def _int_list(text: str) -> Tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    return values


def _int_or_list(text: str) -> Union[int, Tuple[int, ...]]:
    """``"5"`` -> 5 and ``"1,2"`` -> (1, 2), for the fields that take an int or a sequence (seed: one per row)."""
    values = _int_list(text)
    return values[0] if len(values) == 1 else values


def _flag_kwargs(name: str, hint) -> dict:
    """``add_argument`` keywords for a SamplerConfig field of type ``hint``."""
    if hint is bool:
        return dict(action=argparse.BooleanOptionalAction)
    members = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    members = [m for m in members if m is not type(None)]
    if any(typing.get_origin(m) is collections.abc.Sequence for m in members):
        return dict(type=_int_or_list if int in members else _int_list, metavar="N[,N...]")
    for kind, metavar in ((float, "X"), (int, "N"), (str, "NAME")):
        if kind in members:
            return dict(type=kind, metavar=metavar)
    raise TypeError(f"SamplerConfig.{name} has type {hint}, which has no command-line form")


def sampler_fields(exclude: Sequence[str] = ()) -> List[dataclasses.Field]:
    """The SamplerConfig fields that are command-line flags: all but ``exclude``."""
    return [f for f in dataclasses.fields(SamplerConfig) if f.name not in exclude]


def _add_sampler_flags(parser: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    group = parser.add_argument_group("sampler options (fastdiff.SamplerConfig; default: the library's)")
    hints = typing.get_type_hints(SamplerConfig)
    defaults = SamplerConfig()
    for f in sampler_fields(exclude):
        help_text = f.metadata["help"].replace("``", "").rstrip(".")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            help_text += f" (default: {'on' if default else 'off'})"
        elif default not in (None, ()):
            help_text += f" (default: {default})"
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                           help=help_text.replace("%", "%%"), **_flag_kwargs(f.name, hints[f.name]))


def _sampler_overrides(args: argparse.Namespace) -> Dict[str, object]:
    return {f.name: getattr(args, f.name) for f in sampler_fields() if getattr(args, f.name, None) is not None}


# ----------------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------------
def _add_input_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="a prompt to continue, or an infill template whose holes are [MASK] "
                                     "(one token) or [MASK*N] (N tokens); '-' reads standard input")
    parser.add_argument("--model", metavar="PATH",
                        help="a local Hugging Face model directory (config, weights, tokenizer) of a masked LM; "
                             "default: the demo model bundled with fastdiff")
    parser.add_argument("--gen-length", type=int, metavar="N",
                        help=f"tokens to generate after a prompt (default: {DEFAULT_GEN_LENGTH}); "
                             "a template sets its holes with [MASK*N] instead")
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda if available, else cpu), "
                                                         "cpu, cuda, cuda:1... (default: auto)")
    parser.add_argument("--dtype", default="auto", choices=_DTYPES,
                        help="model dtype; auto: float32 on CPU, bfloat16 (float16 without bf16 support) on CUDA")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"),
                        help="sampling ops: auto (Triton kernels on CUDA, else PyTorch), torch or triton")
    parser.add_argument("--cuda-graphs", default="auto", choices=("auto", "on", "off"),
                        help="capture each denoising step in a CUDA graph: auto (on CUDA with the triton "
                             "backend), on or off")
    parser.add_argument("--masked-head", default=True, action=argparse.BooleanOptionalAction,
                        help="run the LM head only on the rows that can be committed (default: on)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    parser.add_argument("--mask-token-id", type=int, metavar="ID",
                        help="the mask token (default: the tokenizer's mask token)")
    parser.add_argument("--no-special-tokens", action="store_true",
                        help="do not put the tokenizer's BOS/CLS token first (and EOS/SEP last in a template)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no timing line")


def build_parser() -> argparse.ArgumentParser:
    """The ``fastdiff`` argument parser with its four commands."""
    parser = _Parser(prog="fastdiff", description="Fast sampling for masked diffusion language models. "
                                                  "With no command, runs 'fastdiff demo'.")
    parser.add_argument("--version", action="version", version=f"fastdiff {fastdiff.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="continue Python code and fill a hole with the bundled demo model "
                                       "(the default)",
                               description="With the demo model bundled in fastdiff (no download), on the CPU: "
                                           "continue a Python prompt, then fill the holes of a small function "
                                           "greedily. Prints the code and the timings.")
    demo.add_argument("--steps", type=int, default=24, help="denoising steps of the generation (default: 24)")
    demo.add_argument("--gen-length", type=int, default=48, help="tokens to generate per row (default: 48)")
    demo.add_argument("--batch", type=int, default=1, help="samples generated together (default: 1)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default: 0)")

    generate = commands.add_parser("generate", help="generate after a prompt or fill an infill template",
                                   description="Generate after a prompt, or fill the [MASK] / [MASK*N] holes of "
                                               "an infill template, and print the text (or JSON).")
    _add_input_flags(generate)
    generate.add_argument("--batch", type=int, default=1, metavar="B",
                          help="samples of the same input, drawn together (default: 1)")
    generate.add_argument("--json", action="store_true",
                          help="print one JSON object: texts, token ids, steps, timing, options (and with "
                               "--return-history the canvas after every step)")
    _add_sampler_flags(generate)

    trace = commands.add_parser("trace", help="render one generation's denoising as GIF / HTML / terminal",
                                description="Run one generation and render its trajectory: an animated GIF "
                                            "(one frame per step), a self-contained HTML page with a step "
                                            "slider, and/or an in-place terminal animation. Tokens are coloured "
                                            "by their commit-time confidence; new tokens are highlighted.")
    _add_input_flags(trace)
    trace.add_argument("-o", "--output", action="append", metavar="FILE",
                       help="write FILE.gif or FILE.html (repeatable; default without --terminal: "
                            + " and ".join(DEFAULT_TRACE_OUTPUTS) + ")")
    trace.add_argument("--terminal", action="store_true", help="animate in place in this terminal")
    trace.add_argument("--width", type=int, default=64, metavar="N", help="characters per line (default: 64)")
    trace.add_argument("--frame-ms", type=int, default=150, metavar="MS",
                       help="GIF / terminal time per frame in milliseconds (default: 150)")
    trace.add_argument("--font-size", type=int, default=16, metavar="PX", help="GIF font size in pixels (default: 16)")
    _add_sampler_flags(trace, exclude=("return_history",))  # a trace always keeps the history

    commands.add_parser("bench", add_help=False, help="run the benchmark suite: fastdiff against GPT-2 and naive loops")
    return parser


# ----------------------------------------------------------------------------------------------
# model, device, input
# ----------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA if available, else CPU; otherwise a ``torch.device`` that exists here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name}: not a torch device (try cpu, cuda, cuda:0)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"``: float32 on the CPU; on CUDA bfloat16, or float16 without bf16 support."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def load_model(path: Optional[str], device, dtype):
    """Load a masked LM and its tokenizer from a local directory, offline
    (:func:`fastdiff.pretrained.load_pretrained`).

    Args:
        path: the ``--model`` argument; ``None``: the bundled demo model.
        device: ``torch.device``.
        dtype: ``torch.dtype`` of the weights.

    Returns:
        ``(model, tokenizer, label)``: the model in eval mode on ``device``, and a short name for it.

    Raises:
        CLIError: a missing path or a directory without ``config.json`` (status 2), or a directory that
            cannot be loaded (status 1).
    """
    if path is None:
        directory, label = DEMO_MODEL_DIR, "demo model"
    else:
        directory, label = Path(path).expanduser(), path
        if not directory.exists():
            raise CLIError(f"--model {path}: no such directory")
        if not directory.is_dir():
            raise CLIError(f"--model {path}: not a directory (expected a Hugging Face model directory with "
                           "config.json, weights and tokenizer files)")
        if not (directory / "config.json").is_file():
            raise CLIError(f"--model {path}: no config.json in it (expected a Hugging Face model directory "
                           "with config, weights and tokenizer files)")
    try:
        model, tokenizer = load_pretrained(directory, device=device, dtype=dtype)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CLIError(f"cannot load a masked LM and tokenizer from {directory}: {_first_line(error)}",
                       code=1) from None
    return model, tokenizer, label


@dataclass
class EncodedInput:
    """A tokenised prompt or template.

    Attributes:
        ids: the token ids (a template's holes hold the mask token).
        is_template: ``True`` for an infill template, ``False`` for a prompt to continue.
        holes: ``(start, end)`` position ranges of a template's holes.
    """

    ids: List[int]
    is_template: bool
    holes: List[Tuple[int, int]]


def encode_input(text: str, tokenizer, mask_token_id: int, *, special_tokens: bool = True) -> EncodedInput:
    """Tokenise a prompt, or a template with ``[MASK]`` / ``[MASK*N]`` holes (N mask tokens).

    The text between holes is tokenised piece by piece without special tokens; spaces just before a
    hole are dropped (the filled tokens carry their own leading space in byte-level BPE vocabularies).
    With ``special_tokens`` the tokenizer's BOS (or CLS) token comes first, and a template ends with its
    EOS (or SEP) token.

    Args:
        text: the prompt or template.
        tokenizer: a Hugging Face tokenizer.
        mask_token_id: the id put at the holes.
        special_tokens: add BOS / EOS as described above.

    Returns:
        an :class:`EncodedInput`.

    Raises:
        CLIError: text that is not UTF-8, a ``[MASK*0]`` hole or one beyond the canvas limit, or an
            empty prompt.
    """
    from fastdiff.validation import MAX_CANVAS

    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # argv / stdin bytes that are not UTF-8 arrive as lone surrogates
        raise CLIError(f"the text is not valid UTF-8 (undecodable byte at character {error.start})") from None

    def tokens(piece: str) -> List[int]:
        return list(tokenizer(piece, add_special_tokens=False)["input_ids"]) if piece else []

    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    last = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids = [first] if special_tokens and first is not None else []
    holes, position = [], 0
    for match in _PLACEHOLDER.finditer(text):
        count = int(match.group(1)) if match.group(1) is not None else 1
        if count < 1:
            raise CLIError(f"{match.group(0)}: a hole needs at least one token")
        if count > MAX_CANVAS:
            raise CLIError(f"{match.group(0)}: a hole of {count} tokens exceeds the canvas limit of {MAX_CANVAS}")
        ids += tokens(text[position:match.start()].rstrip(" "))
        holes.append((len(ids), len(ids) + count))
        ids += [mask_token_id] * count
        position = match.end()
    ids += tokens(text[position:])
    if holes and special_tokens and last is not None:
        ids.append(last)
    if not ids:
        raise CLIError("the prompt is empty")
    return EncodedInput(ids=ids, is_template=bool(holes), holes=holes)


def token_text_fn(tokenizer) -> Callable[[int], str]:
    """The display text of one token as it reads inside a text: a word-initial token keeps its leading
    space and a continuation piece (``##ing``, a BPE suffix) has none. Measured by decoding the token
    after a plain word and removing that word."""
    anchor = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    prefix = tokenizer.decode(anchor, clean_up_tokenization_spaces=False) if anchor else ""

    def text(token: int) -> str:
        if anchor:
            joined = tokenizer.decode(anchor + [token], clean_up_tokenization_spaces=False)
            if joined.startswith(prefix):
                return joined[len(prefix):]
        return tokenizer.decode([token], clean_up_tokenization_spaces=False)

    return text


# ----------------------------------------------------------------------------------------------
# running one generation
# ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One generation: the input, the output and how long it took."""

    encoded: EncodedInput
    initial: torch.Tensor  # int64 [B, L] on the CPU: the canvas before the first step
    output: GenerationOutput  # sequences moved to the CPU
    seconds: float
    config: SamplerConfig
    tokens_per_row: int  # tokens the sampler filled in each row
    mask_token_id: int


def _config_from_args(args: argparse.Namespace, **forced) -> SamplerConfig:
    overrides = {**_sampler_overrides(args), **forced}
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


def run_generation(args: argparse.Namespace, model, tokenizer, config: SamplerConfig, device, batch: int) -> Run:
    """Tokenise ``args.text``, run ``Sampler.generate`` or ``Sampler.infill`` with a progress bar on
    stderr (unless ``--quiet`` or stderr is not a terminal), and time it."""
    from tqdm import tqdm

    from fastdiff import Sampler

    mask_id = args.mask_token_id if args.mask_token_id is not None else tokenizer.mask_token_id
    if mask_id is None:
        raise CLIError("the tokenizer has no mask token: pass --mask-token-id ID")
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
        sampler = Sampler(model, mask_token_id=mask_id, config=config, backend=args.backend,
                          cuda_graphs={"auto": "auto", "on": True, "off": False}[args.cuda_graphs],
                          masked_head=args.masked_head, compile=args.compile)
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
    config = _config_from_args(args, **forced)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer, label = load_model(args.model, device, dtype)
    return config, device, dtype, model, tokenizer, label


def command_generate(args: argparse.Namespace) -> int:
    """``fastdiff generate``: print the texts, or one JSON object with ``--json``."""
    _require_positive(args, "batch")
    config, device, dtype, model, tokenizer, label = _prepare(args)
    run = run_generation(args, model, tokenizer, config, device, args.batch)
    out = run.output
    samples = []
    for row, ids in enumerate(out.sequences.tolist()):
        sample = {"text": tokenizer.decode(ids, skip_special_tokens=True), "token_ids": ids,
                  "finished": bool(out.finished[row])}
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
    """``fastdiff demo``: with the bundled demo model on the CPU, continue a Python prompt and fill
    the holes of a small function; print each result with its timing."""
    from fastdiff import Sampler

    _require_positive(args, "steps", "gen_length", "batch")
    model, tokenizer, _ = load_model(None, torch.device("cpu"), torch.float32)
    mask_id = tokenizer.mask_token_id
    try:
        sampler = Sampler(model, mask_token_id=mask_id, steps=args.steps, unmask="margin", temperature=0.3,
                          top_k=10, seed=args.seed)
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
    print(f"fastdiff demo: the bundled demo model ({DEMO_DESCRIPTION}), cpu float32")
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
        return bench.main(list(argv), parser=bench.build_parser(prog="fastdiff bench", parser_class=_Parser))
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

