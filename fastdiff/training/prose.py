"""English prose for the demo model: the sentences of HTML documentation, and a pretrained WordPiece
tokenizer cut down to the corpus.

The English demo model is fine-tuned on the prose of Debian's documentation packages
(:data:`DEBIAN_DOCS`: the Linux kernel's documentation, Python's, the Debian Administrator's Handbook
and the Debian Reference). Documentation mixes prose with code, so :func:`html_paragraphs` keeps the
sentences only: a paragraph's text without index terms or footnotes, split into sentences, and a
sentence is dropped when it touches a code element (``<code>``, ``<pre>``, DocBook's ``command``,
``filename``...), carries code punctuation (:data:`CODE_CHARACTERS`, dotted or called names), is
not terminated, or is shorter than four words.

>>> html_paragraphs('<p>Files are read in order. Run <code>ls -l</code> to list them. '
...                 'The list is sorted.</p>')
['Files are read in order. The list is sorted.']
"""
from __future__ import annotations

import html.parser
import json
import re
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

# The Debian packages of the corpus and the licence of each (from its copyright file).
DEBIAN_DOCS: Dict[str, str] = {
    "linux-doc-6.1": "GPL-2.0 (the Linux kernel's documentation)",
    "python3.11-doc": "PSF-2.0 (Python Software Foundation License)",
    "debian-handbook": "GPL-2.0+ or CC-BY-SA-3.0",
    "debian-reference-en": "GPL-2.0+",
}
# path parts of other languages and of generated pages, left out
EXCLUDED_PARTS = frozenset({"translations", "_static", "_sources", "_images", "Common_Content"})
EXCLUDED_PAGES = frozenset({"genindex", "py-modindex", "search", "index", "ix01"})
_LANGUAGE_DIR = re.compile(r"^[a-z]{2}-[A-Z]{2}$")

CODE_TAGS = frozenset({"code", "pre", "tt", "kbd", "samp", "var"})
CODE_CLASSES = frozenset({"pre", "command", "filename", "literal", "programlisting", "replaceable", "option",
                          "varname", "computeroutput", "userinput", "screen", "email", "url", "uri"})
HIDDEN_CLASSES = frozenset({"indexterm", "footnote"})
VOID_TAGS = frozenset({"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source"})
# characters that mark a sentence as code, markup or a path rather than prose
CODE_CHARACTERS = re.compile(r"[{}\[\]<>=_/\\|$#@`~^*]|\w\.\w|\w\(")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE_MARK = "\x00"


class _ParagraphParser(html.parser.HTMLParser):
    """Collects the text of ``<p>`` and ``<div class="para">`` elements; code elements become one
    :data:`_CODE_MARK` each, hidden elements nothing."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs: List[str] = []
        self._open: List[str] = []
        self._text = None
        self._code = self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            return
        classes = set((dict(attrs).get("class") or "").split())
        kind = ""
        if tag in ("script", "style") or classes & HIDDEN_CLASSES:
            kind, self._hidden = "hidden", self._hidden + 1
        elif (tag == "p" or (tag == "div" and "para" in classes)) and self._text is None:
            kind, self._text = "paragraph", []
        elif tag in CODE_TAGS or classes & CODE_CLASSES:
            kind, self._code = "code", self._code + 1
            if self._text is not None and self._code == 1:
                self._text.append(_CODE_MARK)
        self._open.append(kind)

    def handle_endtag(self, tag):
        if tag in VOID_TAGS or not self._open:
            return
        kind = self._open.pop()
        if kind == "hidden":
            self._hidden -= 1
        elif kind == "code":
            self._code -= 1
        elif kind == "paragraph":
            self.paragraphs.append(" ".join("".join(self._text).split()))
            self._text = None

    def handle_data(self, data):
        if self._text is not None and not self._hidden and not self._code:
            self._text.append(data)


def prose_sentences(paragraph: str) -> List[str]:
    """The sentences of one paragraph's text that are prose (see the module's docstring)."""
    return [sentence for sentence in _SENTENCE_END.split(paragraph)
            if _CODE_MARK not in sentence and sentence[-1:] in ".!?" and len(sentence.split()) >= 4
            and not CODE_CHARACTERS.search(sentence)]


def html_paragraphs(html_text: str) -> List[str]:
    """The prose of an HTML page: one string per paragraph that keeps at least one sentence."""
    parser = _ParagraphParser()
    parser.feed(html_text)
    parser.close()
    kept = (" ".join(prose_sentences(paragraph)) for paragraph in parser.paragraphs)
    return [paragraph for paragraph in kept if paragraph]


def _excluded(relative: Path) -> bool:
    parts = relative.parts
    return (any(part in EXCLUDED_PARTS for part in parts) or relative.stem in EXCLUDED_PAGES
            or any(_LANGUAGE_DIR.match(part) and part != "en-US" for part in parts))


def html_files(root: Path) -> List[str]:
    """The English documentation pages under ``root`` (one folder per package of :data:`DEBIAN_DOCS`,
    as ``dpkg-deb -x`` unpacks it), as sorted POSIX paths relative to ``root``."""
    root = Path(root)
    missing = [package for package in DEBIAN_DOCS if not (root / package).is_dir()]
    if missing:
        raise ValueError(f"source {str(root)!r} lacks the unpacked packages {', '.join(missing)} "
                         "(training/reproduce.sh english downloads and unpacks them)")
    found = []
    for package in DEBIAN_DOCS:
        for path in (root / package).rglob("*.html"):
            relative = path.relative_to(root)
            if path.is_file() and not _excluded(relative):
                found.append(relative.as_posix())
    return sorted(found)


def read_pages(root: Path, files: Iterable[str]) -> List[Tuple[str, List[str]]]:
    """``(path, paragraphs)`` for each page that has prose, in the given order."""
    pages = []
    for name in files:
        paragraphs = html_paragraphs((Path(root) / name).read_text(encoding="utf-8", errors="replace"))
        if paragraphs:
            pages.append((name, paragraphs))
    return pages


def prune_tokenizer(tokenizer_dir: Path, texts: Sequence[str], vocab_size: int, out_dir: Path):
    """A copy of a pretrained WordPiece tokenizer that keeps ``vocab_size`` of its tokens.

    Kept: the special tokens, every single character (and its ``##`` continuation) of the base
    vocabulary that is printable ASCII or occurs in ``texts``, so that any such word still splits into
    pieces rather than ``[UNK]``, then the most frequent tokens of ``texts`` under the base
    tokenizer. Ids are renumbered in the base order. Encoding adds ``[CLS]`` in front only (``[SEP]``
    ends a paragraph in training and is the EOS token), so ``tokenizer(prompt)`` is ready to continue.

    Args:
        tokenizer_dir: a Hugging Face directory with a WordPiece ``tokenizer.json`` (BERT's).
        texts: the training texts.
        vocab_size: tokens to keep, special tokens included.
        out_dir: where the pruned tokenizer is written.

    Returns:
        ``(tokenizer, base_ids)``: the pruned fast tokenizer and, for each of its ids, the base id
        (int list), for cutting the base model's embedding rows.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    base = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    spec = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text())
    if spec["model"]["type"] != "WordPiece":
        raise ValueError(f"tokenizer_dir must hold a WordPiece tokenizer, got {spec['model']['type']}")
    vocab: Dict[str, int] = spec["model"]["vocab"]
    special = {token["content"] for token in spec["added_tokens"]}
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not len(special) < vocab_size <= len(vocab):
        raise ValueError(f"vocab_size must be an int in ({len(special)}, {len(vocab)}], got {vocab_size!r}")
    counts: Counter = Counter()
    for encoded in base(list(texts), add_special_tokens=False)["input_ids"]:
        counts.update(encoded)
    seen_characters = {character for text in texts for character in text.lower()}
    keep = {vocab[token] for token in special}
    for token, index in vocab.items():
        character = token[2:] if token.startswith("##") else token
        if len(character) == 1 and ((" " < character <= "~") or character in seen_characters):
            keep.add(index)
    for index, _ in counts.most_common():
        if len(keep) >= vocab_size:
            break
        keep.add(index)
    base_ids = sorted(keep)[:vocab_size]
    renumber = {old: new for new, old in enumerate(base_ids)}
    by_id = {index: token for token, index in vocab.items()}
    spec["model"]["vocab"] = {by_id[old]: new for new, old in enumerate(base_ids)}
    # the base file pads and truncates every encoding to its sentence length (128): a tokenizer for
    # generation must not, whoever loads the file
    spec["truncation"] = spec["padding"] = None
    for token in spec["added_tokens"]:
        token["id"] = renumber[token["id"]]
    cls_token, sep_token = base.cls_token, base.sep_token
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": cls_token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": cls_token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": sep_token, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {token: {"id": token, "ids": [renumber[vocab[token]]], "tokens": [token]}
                           for token in (cls_token, sep_token)},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pruned_tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(out_dir / "pruned_tokenizer.json"), unk_token=base.unk_token, pad_token=base.pad_token,
        cls_token=cls_token, sep_token=sep_token, mask_token=base.mask_token, bos_token=cls_token,
        eos_token=sep_token, do_lower_case=True, clean_up_tokenization_spaces=True)
    (out_dir / "pruned_tokenizer.json").unlink()
    return tokenizer, base_ids
