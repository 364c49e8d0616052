"""The command line's parser: its commands, its input flags, and every SamplerConfig field as a flag (from the
field's help metadata); errors are one line (:class:`CLIError`)."""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import typing
from typing import Dict, List, Sequence, Tuple, Union


import fastdiff
from fastdiff.backend import BACKENDS
from fastdiff.config import SamplerConfig

DEFAULT_GEN_LENGTH = 64
DEFAULT_TRACE_OUTPUTS = ("fastdiff-trace.gif", "fastdiff-trace.html")
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


class Parser(argparse.ArgumentParser):
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


def sampler_overrides(args: argparse.Namespace) -> Dict[str, object]:
    return {f.name: getattr(args, f.name) for f in sampler_fields() if getattr(args, f.name, None) is not None}


# ----------------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------------
def _add_input_flags(parser: argparse.ArgumentParser, optional_text: bool = False) -> None:
    parser.add_argument("text", nargs="?" if optional_text else None,
                        help="a prompt to continue, or an infill template whose holes are [MASK] "
                             "(one token) or [MASK*N] (N tokens); '-' reads standard input"
                             + (" (or give --input)" if optional_text else ""))
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
    _add_threads_flag(parser)
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
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


def _add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: OMP_NUM_THREADS if set, else the physical cores this "
                             "process may use)")


def build_parser() -> argparse.ArgumentParser:
    """The ``fastdiff`` argument parser with its four commands."""
    parser = Parser(prog="fastdiff", description="Fast sampling for masked diffusion language models. "
                                                  "With no command, runs 'fastdiff demo'.")
    parser.add_argument("--version", action="version", version=f"fastdiff {fastdiff.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="continue English text and fill blanks with the bundled demo model "
                                       "(the default)",
                               description="With the demo model bundled in fastdiff (no download), on the CPU: "
                                           "continue an English prompt, then fill the blanks of a sentence "
                                           "greedily. Prints the text and the timings.")
    demo.add_argument("--steps", type=int, default=24, help="denoising steps of the generation (default: 24)")
    demo.add_argument("--gen-length", type=int, default=48, help="tokens to generate per row (default: 48)")
    demo.add_argument("--batch", type=int, default=1, help="samples generated together (default: 1)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    _add_threads_flag(demo)

    generate = commands.add_parser("generate", help="generate after a prompt or fill an infill template",
                                   description="Generate after a prompt, or fill the [MASK] / [MASK*N] holes of "
                                               "an infill template, and print the text (or JSON).")
    _add_input_flags(generate, optional_text=True)
    generate.add_argument("--batch", type=int, default=1, metavar="B",
                          help="samples of the same input, drawn together (default: 1)")
    jobs = generate.add_argument_group("many prompts (instead of TEXT)")
    jobs.add_argument("--input", metavar="FILE",
                      help="prompts or templates, one per line, or JSONL lines {\"id\": ..., \"prompt\": ..., "
                           "<sampler options>}; '-' reads standard input")
    jobs.add_argument("--output", metavar="FILE", default="-",
                      help="JSONL results, one per input line in input order: id, prompt, text, seed (or error); "
                           "default: standard output")
    jobs.add_argument("--batch-size", type=int, default=8, metavar="N",
                      help="prompts run together (default: 8); results do not depend on it")
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
