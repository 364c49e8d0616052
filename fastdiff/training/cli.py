"""The diffusion training recipe: turn a masked LM into a text-diffusion model.

A masked LM trained with BERT's fixed 15 % masking only ever sees nearly complete text. Drawing the
mask ratio per batch from 0.1 to 1.0 instead teaches it every stage of the absorbing-state
denoising process, from a fully masked canvas to the last few holes, so that
:class:`fastdiff.Sampler` can generate with it. The prompt prefix and special tokens are never
masked. The same loop trains a causal (GPT-2) model with the next-token objective, the reference
for the quality benchmark.

Three subcommands, one pipeline (``python -m fastdiff.training <command> --help`` for each)::

    python -m fastdiff.training prepare DATA         # corpus split, byte-level BPE, token streams
    python -m fastdiff.training fit --data DATA --out RUN [--steps N ...] [--max-minutes 9]
    python -m fastdiff.training export --run RUN --out MODEL_DIR   # fp16 Hugging Face directory

``fit`` resumes from ``RUN/checkpoint`` when it exists, so a long training can run in pieces: with
``--max-minutes`` it saves and exits with status 75 once the time is up, and the same command goes
on from there. Every random draw of a step (data order, masks, dropout) is derived from
``(seed, step)``, so a resumed run is bit-identical to an uninterrupted one on the same machine and
thread count.

The Python API: :func:`fastdiff.training.data.prepare`, :class:`fastdiff.training.config.TrainConfig`,
:func:`fastdiff.training.loop.train`, :func:`fastdiff.training.export.export`, and the masking of
:class:`fastdiff.training.collator.DiffusionCollator`. Needs the ``train`` extra
(``pip install "fastdiff-sampler[train]"``).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence, Tuple

import torch

from fastdiff.training.config import ARCHITECTURES, OBJECTIVES, TrainConfig
from fastdiff.training.data import CORPUS_KINDS, prepare
from fastdiff.training.export import export
from fastdiff.training.loop import train

# `fit` stopped by --max-minutes before its last step (EX_TEMPFAIL): run the same command again.
RESUME_EXIT_CODE = 75


def _pair(kind):
    """An argument type for ``VALUE`` (both ends) or ``LOW:HIGH``, parsed with ``kind``."""
    def parse(text: str):
        parts = text.replace(",", ":").split(":")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected VALUE or LOW:HIGH, got {text!r}")
        return tuple(kind(p) for p in parts)
    return parse


def _ratios(text: str) -> Tuple[float, ...]:
    return tuple(float(p) for p in text.split(",") if p)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastdiff.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{prepare,fit,export}")

    prep = commands.add_parser("prepare", help="split the corpus, train the tokenizer, tokenise",
                               description=prepare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    prep.add_argument("out", help="data directory to write")
    prep.add_argument("--corpus", choices=CORPUS_KINDS, default="python",
                      help="python: .py files; english: the prose of Debian's documentation packages")
    prep.add_argument("--source", help="python: directory of .py files (default: this Python's standard library); "
                                       "english: the folder of the unpacked documentation packages")
    prep.add_argument("--heldout-percent", type=float, default=5.0, help="share of files held out (default 5)")
    prep.add_argument("--vocab-size", type=int, default=4096,
                      help="python: BPE vocabulary size; english: tokens kept of --tokenizer's (default 4096)")
    prep.add_argument("--tokenizer", help="python: an existing Hugging Face tokenizer directory to use instead of "
                                          "training one; english (required): the base model's WordPiece tokenizer")

    _add_fit_arguments(commands.add_parser("fit", help="train or fine-tune (resumes from RUN/checkpoint)",
                                           description=train.__doc__,
                                           formatter_class=argparse.ArgumentDefaultsHelpFormatter))

    exp = commands.add_parser("export", help="write a run's checkpoint as a Hugging Face model directory",
                              description=export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    exp.add_argument("--run", required=True, help="run directory")
    exp.add_argument("--out", required=True, help="model directory to write")
    exp.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    return parser


def _add_fit_arguments(fit: argparse.ArgumentParser) -> None:
    """The flags of ``fit``: one per :class:`~fastdiff.training.config.TrainConfig` field (``output_dir`` is
    ``--out``), with its default."""
    defaults = TrainConfig(data="", output_dir="")
    fit.add_argument("--data", required=True, help="data directory from `prepare`")
    fit.add_argument("--out", required=True, dest="output_dir", help="run directory (checkpoint, log.jsonl)")
    fit.add_argument("--objective", choices=OBJECTIVES, default=defaults.objective)
    fit.add_argument("--init-from", help="local HF model directory to fine-tune (default: train from scratch)")
    fit.add_argument("--architecture", choices=tuple(ARCHITECTURES),
                     help="from-scratch model (default: modernbert for diffusion, gpt2 for causal)")
    group = fit.add_argument_group("model built from scratch")
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
        group.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    group.add_argument("--dropout", type=float, default=defaults.dropout)
    group.add_argument("--initializer-range", type=float, default=defaults.initializer_range,
                       help="standard deviation of the initial weights")
    group = fit.add_argument_group("optimisation")
    for name in ("seq_length", "batch_size", "steps", "warmup_steps", "seed"):
        group.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "min_lr_ratio", "weight_decay", "adam_eps", "grad_clip"):
        group.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    group.add_argument("--adam-betas", type=_pair(float), default=defaults.adam_betas, help="BETA1:BETA2")
    group = fit.add_argument_group("diffusion masking")
    group.add_argument("--mask-ratio", type=_pair(float), default=defaults.mask_ratio,
                       help="LOW:HIGH range of the per-batch mask ratio (uniform)")
    group.add_argument("--mask-ratio-schedule", type=_ratios, default=None,
                       help="comma-separated ratios used in turn, one per batch (replaces the uniform draw)")
    group.add_argument("--prefix-length", type=_pair(int), default=defaults.prefix_length,
                       help="N or LOW:HIGH: leading positions never masked, drawn per row")
    group = fit.add_argument_group("running")
    for name in ("save_every", "log_every", "eval_every", "eval_windows", "threads"):
        group.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    group.add_argument("--max-minutes", type=float, default=None,
                       help=f"save and exit with status {RESUME_EXIT_CODE} after the step that passes this time")
    group.add_argument("--stop-at-step", type=int, default=None,
                       help=f"save and exit with status {RESUME_EXIT_CODE} once this many steps are done")
    group.add_argument("--device", default=defaults.device)
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = vars(_parser().parse_args(argv))
    try:
        return _run_command(args.pop("command"), args)
    except (ValueError, TypeError) as error:
        print(f"fastdiff.training: error: {error}", file=sys.stderr)
        return 1


def _run_command(command: str, args: dict) -> int:
    if command == "prepare":
        manifest = prepare(args["out"], source=args["source"], heldout_percent=args["heldout_percent"],
                           vocab_size=args["vocab_size"], tokenizer_dir=args["tokenizer"],
                           corpus_kind=args["corpus"])
        print(json.dumps({k: v for k, v in manifest.items() if not k.endswith("_files") and k != "base_token_ids"},
                         indent=1))
        return 0
    if command == "export":
        info = export(args["run"], args["out"], dtype=getattr(torch, args["dtype"]))
        print(json.dumps(info, indent=1))
        return 0
    result = train(TrainConfig(**args))
    print(json.dumps(result))
    if not result["finished"]:
        print(f"stopped at step {result['step']}: run the same command again to resume", file=sys.stderr)
        return RESUME_EXIT_CODE
    return 0
