"""The training data: :func:`prepare` writes a data directory (corpus split, tokenizer, token streams),
:class:`PreparedData` loads it, and the windows of each step are drawn from ``(seed, step)`` alone."""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from fastdiff.training import corpus, prose

# the corpora `prepare` builds: Python source files, or English prose from HTML documentation
CORPUS_KINDS = ("python", "english")

# tags of the independent random streams derived from the run's seed
DATA_STREAM, MASK_STREAM, DROPOUT_STREAM, EVAL_STREAM, INIT_STREAM = range(5)


def derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer ``parts`` (NumPy's ``SeedSequence``)."""
    words = np.random.SeedSequence([seed, *parts]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def window_starts(stream: corpus.TokenStream, length: int) -> torch.Tensor:
    """Offsets of non-overlapping windows of ``length - 1`` stream tokens (a window gets ``<s>`` in
    front), each beginning at a line start, taken greedily from the start of the stream."""
    span = length - 1
    total = len(stream.ids)
    starts, free_from = [], 0
    for start in stream.line_starts.tolist():
        if start >= free_from and start + span <= total:
            starts.append(start)
            free_from = start + span
    return torch.tensor(starts, dtype=torch.int64)


def windows(stream: corpus.TokenStream, starts: torch.Tensor, bos_token_id: int, length: int) -> torch.Tensor:
    """int64 ``[len(starts), length]``: ``<s>`` followed by ``length - 1`` stream tokens from each start."""
    offsets = starts[:, None] + torch.arange(length - 1)[None, :]
    body = stream.ids[offsets]
    return torch.cat([torch.full((len(starts), 1), bos_token_id, dtype=torch.int64), body], dim=1)


@lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n_windows: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(derive_seed(seed, DATA_STREAM, epoch))
    return torch.randperm(n_windows, generator=generator)


def batch_window_indices(step: int, batch_size: int, n_windows: int, seed: int) -> torch.Tensor:
    """The windows of the batch at ``step``: epochs are seeded permutations of all windows, read in
    order, so the batch depends only on ``(seed, step)``."""
    position = step * batch_size + torch.arange(batch_size)
    epochs, within = position // n_windows, position % n_windows
    return torch.stack([_epoch_order(seed, int(e), n_windows)[int(i)] for e, i in zip(epochs, within)])


def prepare(out_dir: Union[str, Path], source: Optional[Union[str, Path]] = None, heldout_percent: float = 5.0,
            vocab_size: int = 4096, tokenizer_dir: Optional[Union[str, Path]] = None,
            corpus_kind: str = "python") -> dict:
    """Build a training data directory: split, tokenizer and token streams.

    Writes ``out_dir/tokenizer/`` (Hugging Face files), ``out_dir/train.safetensors`` and
    ``out_dir/heldout.safetensors`` (:class:`fastdiff.training.corpus.TokenStream`), and
    ``out_dir/manifest.json`` (the corpus kind, Python version, source root, the files of each side,
    files skipped, corpus fingerprints, token counts, the tokenizer's SHA-256, and for a pruned
    tokenizer the base id of each of its tokens, ``base_token_ids``).

    Args:
        out_dir: the directory to write (created).
        source: ``"python"``: a directory of ``.py`` files, ``None`` for this Python's standard library;
            ``"english"``: the folder holding the unpacked packages of
            :data:`fastdiff.training.prose.DEBIAN_DOCS`.
        heldout_percent: share of files held out (by a hash of their path).
        vocab_size: ``"python"``: size of the byte-level BPE vocabulary trained on the train files;
            ``"english"``: the tokens kept of ``tokenizer_dir``'s vocabulary
            (:func:`fastdiff.training.prose.prune_tokenizer`).
        tokenizer_dir: the tokenizer of the model to fine-tune. ``"python"``: used as it is instead of
            training one (it must have a mask and an EOS token); ``"english"``: required, a WordPiece
            tokenizer that is pruned to the corpus.
        corpus_kind: ``"python"`` (source files, one text per file) or ``"english"`` (the prose of HTML
            documentation, one text per paragraph, each followed by EOS).

    Returns:
        The manifest (a dict).
    """
    if corpus_kind not in CORPUS_KINDS:
        raise ValueError(f"corpus_kind must be one of {CORPUS_KINDS}, got {corpus_kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_ids = None
    if corpus_kind == "english":
        if source is None or tokenizer_dir is None:
            raise ValueError("corpus_kind='english' needs source (the unpacked documentation packages) "
                             "and tokenizer_dir (the base model's WordPiece tokenizer)")
        root = Path(source)
        files = prose.html_files(root)
        train_files, heldout_files = corpus.split_files(files, heldout_percent)
        train_pages, heldout_pages = prose.read_pages(root, train_files), prose.read_pages(root, heldout_files)
        if not train_pages:
            raise ValueError(f"source {str(root)!r} holds no page of prose for training")
        train_units = [paragraph for _, paragraphs in train_pages for paragraph in paragraphs]
        heldout_units = [paragraph for _, paragraphs in heldout_pages for paragraph in paragraphs]
        tokenizer, base_ids = prose.prune_tokenizer(Path(tokenizer_dir), train_units, vocab_size, out)
        train_texts = [(name, "\n".join(paragraphs)) for name, paragraphs in train_pages]
        heldout_texts = [(name, "\n".join(paragraphs)) for name, paragraphs in heldout_pages]
    else:
        root = corpus.stdlib_root() if source is None else Path(source)
        files = corpus.source_files(None if source is None else root)
        train_files, heldout_files = corpus.split_files(files, heldout_percent)
        train_texts = corpus.read_sources(root, train_files)
        heldout_texts = corpus.read_sources(root, heldout_files)
        if not train_texts:
            raise ValueError(f"source {str(root)!r} holds no readable .py file for training")
        train_units, heldout_units = [text for _, text in train_texts], [text for _, text in heldout_texts]
        if tokenizer_dir is None:
            tokenizer = corpus.train_tokenizer(train_units, vocab_size=vocab_size)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    if tokenizer.mask_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer_dir must hold a tokenizer with a mask token and an EOS token")
    kept = {name for name, _ in train_texts + heldout_texts}
    skipped = [name for name in files if name not in kept]
    tokenizer.save_pretrained(str(out / "tokenizer"))
    train_stream = corpus.tokenize_texts(tokenizer, train_units)
    heldout_stream = corpus.tokenize_texts(tokenizer, heldout_units)
    train_stream.save(out / "train.safetensors")
    heldout_stream.save(out / "heldout.safetensors")
    manifest = {
        "corpus_kind": corpus_kind,
        "python": sys.version,
        "source_root": str(root),
        "standard_library": corpus_kind == "python" and source is None,
        "heldout_percent": heldout_percent,
        "train_files": [name for name, _ in train_texts],
        "heldout_files": [name for name, _ in heldout_texts],
        "skipped_files": skipped,
        "train_fingerprint": corpus.corpus_fingerprint(train_texts),
        "heldout_fingerprint": corpus.corpus_fingerprint(heldout_texts),
        "train_tokens": len(train_stream.ids),
        "heldout_tokens": len(heldout_stream.ids),
        "vocab_size": len(tokenizer),
        "tokenizer_sha256": file_sha256(out / "tokenizer" / "tokenizer.json"),
    }
    if corpus_kind == "english":
        manifest["packages"] = dict(prose.DEBIAN_DOCS)
        manifest["base_token_ids"] = base_ids
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def file_sha256(path: Union[str, Path]) -> str:
    """The SHA-256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class PreparedData:
    """A data directory written by :func:`prepare`, loaded."""

    tokenizer: object
    train: corpus.TokenStream
    heldout: corpus.TokenStream
    manifest: dict

    @classmethod
    def load(cls, data_dir: Union[str, Path]) -> "PreparedData":
        from transformers import AutoTokenizer

        data = Path(data_dir)
        missing = [n for n in ("tokenizer", "train.safetensors", "heldout.safetensors", "manifest.json")
                   if not (data / n).exists()]
        if missing:
            raise ValueError(f"data directory {str(data)!r} lacks {', '.join(missing)}: "
                             "build it with `python -m fastdiff.training prepare`")
        tokenizer = AutoTokenizer.from_pretrained(str(data / "tokenizer"), local_files_only=True)
        return cls(tokenizer=tokenizer, train=corpus.TokenStream.load(data / "train.safetensors"),
                   heldout=corpus.TokenStream.load(data / "heldout.safetensors"),
                   manifest=json.loads((data / "manifest.json").read_text()))
