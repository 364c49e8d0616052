"""The demo model's data: Python source files (by default the standard library of the Python that
runs this), a deterministic train / held-out split by file, a byte-level BPE tokenizer trained with
Hugging Face ``tokenizers``, and the token streams the trainer cuts into windows.

The corpus is whatever ``.py`` files the machine has: the standard library differs between Python
versions (the shipped demo model was trained on CPython 3.11.7's), so :func:`corpus_fingerprint`
records exactly which bytes went in.

>>> from fastdiff.training import corpus
>>> files = corpus.source_files()                     # doctest: +SKIP
>>> train, heldout = corpus.split_files(files)        # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

# RoBERTa's special tokens and ids: <pad> = 1 is also the padding index of its position embeddings.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# Directories of the standard library left out of the corpus: tests (very repetitive fixtures),
# generated codec tables, third-party packages, and build-specific files.
EXCLUDED_PARTS = frozenset({"site-packages", "test", "tests", "idle_test", "encodings", "__pycache__",
                            "pydoc_data"})
EXCLUDED_PREFIXES = ("_sysconfigdata_", "config-")


def stdlib_root() -> Path:
    """The directory of the running Python's standard library (``sysconfig``'s ``stdlib`` path)."""
    return Path(sysconfig.get_paths()["stdlib"])


def _excluded(relative: Path) -> bool:
    return any(part in EXCLUDED_PARTS or part.startswith(EXCLUDED_PREFIXES) for part in relative.parts)


def source_files(root: Optional[Path] = None, suffixes: Sequence[str] = (".py",)) -> List[str]:
    """The corpus files under ``root``, as sorted POSIX paths relative to it.

    Args:
        root: a directory; ``None`` for the standard library (:func:`stdlib_root`), whose test suites,
            ``encodings`` tables, ``pydoc_data``, ``site-packages`` and build-specific
            ``_sysconfigdata_*`` / ``config-*`` files are left out (:data:`EXCLUDED_PARTS`).
        suffixes: file name endings to take.

    Returns:
        Relative paths (``str``), sorted, so the order does not depend on the file system.
    """
    base = stdlib_root() if root is None else Path(root)
    if not base.is_dir():
        raise ValueError(f"root must be a directory, got {str(base)!r}")
    found = []
    for path in base.rglob("*"):
        relative = path.relative_to(base)
        if path.suffix in suffixes and path.is_file() and not _excluded(relative):
            found.append(relative.as_posix())
    return sorted(found)


def split_files(files: Iterable[str], heldout_percent: float = 5.0) -> Tuple[List[str], List[str]]:
    """Split relative paths into train and held-out sets by a hash of each path.

    A file's side depends only on its own path (SHA-256), never on which other files exist or on
    their order, so the split is the same on every machine that has the file.

    Args:
        files: relative paths.
        heldout_percent: share of files (in expectation) that go to the held-out set, in ``[0, 100]``.

    Returns:
        ``(train, heldout)``: sorted lists of paths.

    Example:
        >>> train, heldout = split_files(["a.py", "b.py", "c.py"], heldout_percent=0)
        >>> train, heldout
        (['a.py', 'b.py', 'c.py'], [])
    """
    if isinstance(heldout_percent, bool) or not isinstance(heldout_percent, (int, float)):
        raise TypeError(f"heldout_percent must be a number, got {type(heldout_percent).__name__}")
    if not 0 <= heldout_percent <= 100:
        raise ValueError(f"heldout_percent must be in [0, 100], got {heldout_percent}")
    train, heldout = [], []
    for name in sorted(files):
        bucket = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % 10_000
        (heldout if bucket < heldout_percent * 100 else train).append(name)
    return train, heldout


def read_sources(root: Path, files: Iterable[str]) -> List[Tuple[str, str]]:
    """``(path, text)`` for each file that decodes as UTF-8 (others are skipped), in the given order.
    Line endings are normalised to ``\\n``."""
    texts = []
    for name in files:
        try:
            text = (Path(root) / name).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        texts.append((name, text.replace("\r\n", "\n").replace("\r", "\n")))
    return texts


def corpus_fingerprint(texts: Iterable[Tuple[str, str]]) -> str:
    """SHA-256 (hex) over every ``(path, text)`` pair: equal fingerprints mean identical corpora."""
    digest = hashlib.sha256()
    for name, text in texts:
        for part in (name, text):
            data = part.encode("utf-8")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.hexdigest()


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer and wrap it as a Hugging Face fast tokenizer.

    Newlines are split off before byte-level pre-tokenisation, so every line of code starts on a
    token boundary (indentation and text never merge with the newline before them). Special
    tokens are RoBERTa's (:data:`SPECIAL_TOKENS`: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3,
    ``<mask>`` 4). Encoding a text adds ``<s>`` in front only, so ``tokenizer(prompt)`` is ready to be
    continued by a sampler; a ``<mask>`` written in the text becomes the mask token.

    Args:
        texts: training texts (e.g. one per source file).
        vocab_size: size of the vocabulary, special tokens and the 256 byte symbols included.
        min_frequency: a pair needs this many occurrences to be merged.

    Returns:
        A ``transformers`` fast tokenizer (``save_pretrained`` writes ``tokenizer.json``).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be an int > {256 + len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    # like RoBERTa's, the mask token swallows the space before it: "return <mask>" leaves the space
    # to the token the model predicts ("Ġx"), as in training
    specials = [AddedToken(token, special=True, lstrip=token == "<mask>") for token in SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A </s> $B", special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>", mask_token="<mask>")


@dataclass
class TokenStream:
    """Files tokenised and concatenated, each followed by the EOS token.

    Attributes:
        ids: int64 ``[N]``: the tokens.
        line_starts: int64 ``[M]``: offsets in ``ids`` where a line of code (or a file) begins.
    """

    ids: torch.Tensor
    line_starts: torch.Tensor

    def save(self, path: Path) -> None:
        """Write both tensors to one safetensors file."""
        from safetensors.torch import save_file

        save_file({"ids": self.ids.contiguous(), "line_starts": self.line_starts.contiguous()}, str(path))

    @classmethod
    def load(cls, path: Path) -> "TokenStream":
        """Read a stream written by :meth:`save`."""
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return cls(ids=tensors["ids"], line_starts=tensors["line_starts"])


def tokenize_texts(tokenizer, texts: Iterable[str]) -> TokenStream:
    """Tokenise ``texts`` (without special tokens) into one :class:`TokenStream`, each text followed
    by ``tokenizer.eos_token_id``.

    Args:
        tokenizer: a Hugging Face tokenizer with an EOS token.
        texts: the texts, e.g. one per file.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer must have an eos_token")
    texts = list(texts)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    newline_ids = {i for token, i in tokenizer.get_vocab().items()
                   if "\n" in tokenizer.convert_tokens_to_string([token])}
    ids, starts = [], []
    for tokens in encoded:
        offset = len(ids)
        starts.append(offset)
        starts.extend(offset + k + 1 for k, token in enumerate(tokens[:-1]) if token in newline_ids)
        ids.extend(tokens)
        ids.append(tokenizer.eos_token_id)
    return TokenStream(ids=torch.tensor(ids, dtype=torch.int64), line_starts=torch.tensor(starts, dtype=torch.int64))
