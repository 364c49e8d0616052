"""Render the trajectory of one generation: an animated GIF, a self-contained HTML page with a step
slider, or an in-place ANSI animation in the terminal.

A :class:`Trace` is built once from a :class:`fastdiff.GenerationOutput` produced with
``return_history=True``; every renderer reads the same per-step cells (:func:`frame_cells`) laid out on
the same fixed grid (:func:`layout`), so a token never moves between frames: each position gets a slot
as wide as the widest token ever shown there, and a masked position is drawn as an empty slot of that
width.

Colours: generated tokens are coloured by the score they were committed with
(``GenerationOutput.confidences``: red = low, amber = middle, green = high), tokens committed at the
current step are highlighted (drawn on a block of their colour), the prompt / template text is white,
special tokens of the prompt are dim, and a token that is later re-masked or replaced (ReMDM-style
re-masking) is grey: its commit-time score is not kept by the sampler.

Example:
    >>> out = sampler.generate(prompt_ids, gen_length=64, return_history=True)   # doctest: +SKIP
    >>> trace = build_trace(out, initial_ids=canvas, mask_token_id=mask_id,
    ...                     token_text=lambda i: tokenizer.decode([i]))          # doctest: +SKIP
    >>> save_gif(trace, "trace.gif"); save_html(trace, "trace.html")            # doctest: +SKIP
"""
from __future__ import annotations

import html
import importlib.util
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, TextIO, Tuple, Union

import torch

from fastdiff.sampler import GenerationOutput

RGB = Tuple[int, int, int]

# Three-stop colour scale for scores (low, middle, high); readable on the dark background.
SCALE_LOW: RGB = (255, 107, 107)
SCALE_MID: RGB = (255, 209, 102)
SCALE_HIGH: RGB = (6, 214, 160)
BACKGROUND: RGB = (13, 17, 23)
FIXED_TEXT: RGB = (230, 237, 243)
SPECIAL_TEXT: RGB = (110, 118, 129)
UNKNOWN_TEXT: RGB = (139, 148, 158)
MASK_FILL: RGB = (33, 38, 45)
MASK_OUTLINE: RGB = (55, 62, 71)
NEW_TEXT: RGB = (13, 17, 23)
MUTED_TEXT: RGB = (139, 148, 158)

# What a cell shows at a step.
FIXED, SPECIAL, MASKED, NEW, KEPT = "fixed", "special", "masked", "new", "kept"

MASK_GLYPH = "\u2591"  # light shade, the terminal's masked slot
NEWLINE_GLYPH = "\u21b5"  # a newline inside a token, drawn; the line then breaks
UNSCORED_LABEL = "changed later"  # the legend of grey tokens
_MONOSPACE_FONTS = ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf", "Menlo.ttc", "consola.ttf",
                    "Courier New.ttf", "cour.ttf")


@dataclass(frozen=True)
class Trace:
    """One row's denoising trajectory, ready to render.

    Attributes:
        token_ids: int64 ``[S, L]``: the canvas after each of the ``S`` steps.
        initial_ids: int64 ``[L]``: the canvas before the first step.
        mask_token_id: the mask token.
        scores: fp32 ``[S, L]``: the commit-time score of the token shown at each step and position;
            NaN where it is unknown (masked, fixed, a token later re-masked or replaced, EOS fill).
        texts: display text of every token id that appears (newlines and tabs made visible).
        special_ids: ids drawn dim when they are part of the prompt (BOS, EOS, pad...).
        score_name: what the scores measure (``"confidence"``, ``"margin"``, ``"entropy"``).
        score_range: ``(low, high)`` mapped to the two ends of the colour scale.
        title: shown in the header of every frame.
    """

    token_ids: torch.Tensor
    initial_ids: torch.Tensor
    mask_token_id: int
    scores: torch.Tensor
    texts: Dict[int, str]
    special_ids: frozenset
    score_name: str
    score_range: Tuple[float, float]
    title: str

    @property
    def num_steps(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def length(self) -> int:
        return int(self.token_ids.shape[1])

    @property
    def fixed(self) -> torch.Tensor:
        """bool ``[L]``: positions the sampler did not fill."""
        return self.initial_ids != self.mask_token_id

    @property
    def has_unscored(self) -> bool:
        """Whether some generated token is shown without a score (changed later, or EOS fill): the
        legends then explain the grey."""
        shown = (self.token_ids != self.mask_token_id) & ~self.fixed
        return bool((shown & torch.isnan(self.scores)).any())


@dataclass(frozen=True)
class Slot:
    """Where a position is drawn: ``line``, starting ``column`` and width in character ``cells``;
    ``line_start`` slots (the first of a wrapped line) drop their tokens' leading spaces."""

    line: int
    column: int
    cells: int
    line_start: bool


@dataclass(frozen=True)
class Cell:
    """What one position shows at one step: its ``slot``, ``text`` (already fitted to the slot),
    ``kind`` (``"fixed"``, ``"special"``, ``"masked"``, ``"new"``, ``"kept"``), ``colour`` (the
    text colour, or the highlight colour of a ``"new"`` cell) and ``score`` (NaN when unknown)."""

    slot: Slot
    text: str
    kind: str
    colour: RGB
    score: float


def build_trace(output: GenerationOutput, initial_ids: torch.Tensor, mask_token_id: int,
                token_text: Callable[[int], str], *, row: int = 0, special_ids: Collection[int] = (),
                score_name: str = "confidence", title: str = "fastdiff") -> Trace:
    """Collect one row's trajectory from a generation run with ``return_history=True``.

    Args:
        output: what ``Sampler.generate`` / ``Sampler.infill`` returned, with ``history``.
        initial_ids: int ``[B, L]`` or ``[L]``: the canvas before the first step (the prompt followed by
            mask tokens for ``generate``, the template for ``infill``).
        mask_token_id: the mask token id.
        token_text: the display text of one token id (e.g. ``lambda i: tokenizer.decode([i])``).
        row: which row of the batch to trace.
        special_ids: token ids drawn dim in the prompt.
        score_name: what ``output.confidences`` measures, for the legend.
        title: the header of every frame.

    Returns:
        a :class:`Trace` with ``S = len(output.history)`` steps.

    Raises:
        ValueError: no history, an empty history, a row out of range, or a canvas whose length does not
            match the history.
    """
    if not output.history:
        raise ValueError("output has no history: run the sampler with return_history=True")
    history = torch.stack([canvas.detach().to("cpu", torch.int64) for canvas in output.history])  # [S, B, L]
    if not 0 <= row < history.shape[1]:
        raise ValueError(f"row must be in [0, {history.shape[1]}), got {row}")
    steps = history[:, row]
    initial = initial_ids.detach().to("cpu", torch.int64)
    initial = initial[row] if initial.dim() == 2 else initial
    if initial.shape != steps.shape[1:]:
        raise ValueError(f"initial_ids has length {initial.shape[-1]}, the history {steps.shape[1]}")
    before = torch.cat([initial[None], steps[:-1]])
    changed = steps != before
    num_steps = steps.shape[0]
    # a token keeps its commit-time score only if it is never changed again: from its last change on
    last_change = torch.where(changed.any(0), num_steps - 1 - changed.flip(0).int().argmax(0),
                              torch.full_like(initial, num_steps))
    confidences = output.confidences.detach().to("cpu", torch.float32)[row]
    known = (torch.arange(num_steps)[:, None] >= last_change[None, :]) & (steps != mask_token_id)
    scores = torch.where(known, confidences.expand_as(known), torch.tensor(float("nan")))
    finite = scores[torch.isfinite(scores)]
    if finite.numel() == 0 or (float(finite.min()) >= 0.0 and float(finite.max()) <= 1.0):
        score_range = (0.0, 1.0)
    else:
        score_range = (float(finite.min()), float(finite.max()))
    ids = sorted(set(steps.unique().tolist()) | set(initial.tolist()))
    texts = {i: _visible(token_text(i)) for i in ids if i != mask_token_id}
    return Trace(token_ids=steps, initial_ids=initial, mask_token_id=mask_token_id, scores=scores, texts=texts,
                 special_ids=frozenset(int(i) for i in special_ids), score_name=score_name,
                 score_range=score_range, title=title)


def _visible(text: str) -> str:
    """Newlines, tabs and other control characters drawn as glyphs, so that a token stays on its line
    and never sends a control code to a terminal."""
    text = text.replace("\r\n", "\n").replace("\n", NEWLINE_GLYPH).replace("\t", "\u2192")
    return "".join(chr(0x2400 + ord(c)) if ord(c) < 0x20 else "\u2421" if ord(c) == 0x7F
                   else "\ufffd" if 0x80 <= ord(c) < 0xA0 else c for c in text)


def layout(trace: Trace, width: int) -> List[Slot]:
    """Place every position on a fixed grid of ``width`` character cells per line.

    A slot is as wide as the widest token ever shown at its position (at least one cell). A line ends
    where it is full, and after every position whose final token ends with a newline, so that code
    keeps its lines. A slot that starts a wrapped line drops the leading spaces of its tokens; one
    after a newline keeps them (indentation). A slot wider than a line gets a line of its own.

    Args:
        trace: the trajectory.
        width: characters per line, ``>= 1``.

    Returns:
        one :class:`Slot` per position, in order.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    shown = torch.cat([trace.initial_ids[None], trace.token_ids]).T.tolist()  # [L, S + 1]
    slots, line, column, after_newline = [], 0, 0, False
    for ids in shown:
        texts = [trace.texts[i] for i in set(ids) if i != trace.mask_token_id]
        full = max([len(t) for t in texts] + [1])
        stripped = max([len(t.lstrip(" ")) for t in texts] + [1])
        if column > 0 and column + full > width:
            line, column = line + 1, 0
        wrapped_start = column == 0 and not after_newline
        cells = stripped if wrapped_start else full
        slots.append(Slot(line=line, column=column, cells=cells, line_start=wrapped_start))
        column += cells
        after_newline = trace.texts.get(ids[-1], "").endswith(NEWLINE_GLYPH)
        if after_newline:
            line, column = line + 1, 0
    return slots


def score_colour(score: float, score_range: Tuple[float, float]) -> RGB:
    """The colour of a score on the low (red) - middle (amber) - high (green) scale; NaN is grey.

    Args:
        score: the score.
        score_range: ``(low, high)``: the ends of the scale; scores outside are clamped.

    Returns:
        an ``(r, g, b)`` tuple of ints in ``[0, 255]``.
    """
    if math.isnan(score):
        return UNKNOWN_TEXT
    low, high = score_range
    x = 0.5 if high <= low else min(max((score - low) / (high - low), 0.0), 1.0)
    start, end, f = (SCALE_LOW, SCALE_MID, x * 2) if x < 0.5 else (SCALE_MID, SCALE_HIGH, x * 2 - 1)
    return tuple(round(a + (b - a) * f) for a, b in zip(start, end))


def frame_cells(trace: Trace, step: int, slots: List[Slot]) -> List[Cell]:
    """What every position shows after ``step`` (0-based), in position order.

    Args:
        trace: the trajectory.
        step: in ``[0, trace.num_steps)``.
        slots: ``layout(trace, width)``.

    Returns:
        one :class:`Cell` per position.
    """
    if not 0 <= step < trace.num_steps:
        raise ValueError(f"step must be in [0, {trace.num_steps}), got {step}")
    ids = trace.token_ids[step].tolist()
    previous = (trace.token_ids[step - 1] if step > 0 else trace.initial_ids).tolist()
    fixed = trace.fixed.tolist()
    scores = trace.scores[step].tolist()
    cells = []
    for slot, token, before, is_fixed, score in zip(slots, ids, previous, fixed, scores):
        if token == trace.mask_token_id:
            cells.append(Cell(slot, "", MASKED, MASK_FILL, score))
            continue
        text = trace.texts[token]
        text = (text.lstrip(" ") if slot.line_start else text)[: slot.cells]
        if is_fixed:
            kind = SPECIAL if token in trace.special_ids else FIXED
            colour = SPECIAL_TEXT if kind == SPECIAL else FIXED_TEXT
        else:
            kind = NEW if token != before else KEPT
            colour = score_colour(score, trace.score_range)
        cells.append(Cell(slot, text, kind, colour, score))
    return cells


def _step_summary(trace: Trace, step: int) -> Tuple[int, int, int]:
    """(committed at this step, still masked, positions to fill)."""
    to_fill = int((~trace.fixed).sum())
    previous = trace.token_ids[step - 1] if step > 0 else trace.initial_ids
    now = trace.token_ids[step]
    masked = int((now == trace.mask_token_id).sum())
    new = int(((now != previous) & (now != trace.mask_token_id)).sum())
    return new, masked, to_fill


# ----------------------------------------------------------------------------------------------
# GIF (Pillow)
# ----------------------------------------------------------------------------------------------
def load_monospace_font(size: int):
    """A monospace TrueType font at ``size`` pixels: DejaVu Sans Mono or another common one from the
    system, else the one matplotlib ships if it is installed, else Pillow's default font (proportional;
    the grid still holds because every slot is measured in the widest character)."""
    from PIL import ImageFont

    for name in _MONOSPACE_FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSansMono.ttf"
        if bundled.is_file():
            return ImageFont.truetype(str(bundled), size)
    return ImageFont.load_default(size)


class _GifPainter:
    """Geometry shared by all frames of one trace: font, cell size, layout, image size."""

    def __init__(self, trace: Trace, width: int, font_size: int):
        from PIL import Image, ImageDraw

        self.trace = trace
        self.slots = layout(trace, width)
        self.font = load_monospace_font(font_size)
        self.small = load_monospace_font(max(font_size - 3, 8))
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        self.cell_w = max(probe.textlength(c, font=self.font) for c in "MW@_")
        ascent, descent = self.font.getmetrics()
        self.text_h = ascent + descent
        self.line_h = round(self.text_h * 1.6)
        self.pad = round(font_size * 1.5)
        self.header_h = round(self.text_h * 3.0)
        self.legend_h = round(self.text_h * 2.8)
        lines = (self.slots[-1].line + 1) if self.slots else 1
        body_w = math.ceil(width * self.cell_w)
        self.size = (2 * self.pad + max(body_w, self._legend_width(probe)),
                     2 * self.pad + self.header_h + lines * self.line_h + self.legend_h)

    def _legend_items(self) -> List[Tuple[str, str]]:
        low, high = self.trace.score_range
        items = [("bar", f"{low:.2f}"), ("label", f"{high:.2f} {self.trace.score_name}"), ("new", "new"),
                 ("masked", "masked"), ("fixed", "prompt")]
        return items + [("unscored", UNSCORED_LABEL)] if self.trace.has_unscored else items

    def _legend_width(self, draw) -> int:
        return round(sum(self._legend_item_width(draw, kind, label) for kind, label in self._legend_items()))

    def _legend_item_width(self, draw, kind: str, label: str) -> float:
        gap = self.cell_w * 2
        text = draw.textlength(label, font=self.small)
        if kind == "bar":
            return text + self.cell_w * 0.6 + self._bar_width() + self.cell_w * 0.6
        if kind == "new":
            return text + self.cell_w + gap
        if kind == "masked":
            return self.cell_w * 3.1 + text + gap
        return text + gap

    def _bar_width(self) -> int:
        return round(self.cell_w * 14)

    def paint(self, step: int):
        from PIL import Image, ImageDraw

        image = Image.new("RGB", self.size, BACKGROUND)
        draw = ImageDraw.Draw(image)
        self._header(draw, step)
        top = self.pad + self.header_h
        for cell in frame_cells(self.trace, step, self.slots):
            x = self.pad + cell.slot.column * self.cell_w
            y = top + cell.slot.line * self.line_h
            self._cell(draw, cell, x, y)
        self._legend(image, draw, self.size[1] - self.pad - self.legend_h + self.text_h)
        return image

    def _box(self, x: float, y: float, cells: int) -> Tuple[float, float, float, float]:
        inset = (self.line_h - self.text_h) / 2
        return (x + 1, y - inset * 0.6, x + cells * self.cell_w - 1, y + self.text_h + inset * 0.6)

    def _cell(self, draw, cell: Cell, x: float, y: float) -> None:
        if cell.kind == MASKED:
            draw.rounded_rectangle(self._box(x, y, cell.slot.cells), radius=3, fill=MASK_FILL, outline=MASK_OUTLINE)
            return
        fill = cell.colour
        if cell.kind == NEW:
            draw.rounded_rectangle(self._box(x, y, cell.slot.cells), radius=3, fill=cell.colour)
            fill = NEW_TEXT
        draw.text((x, y), cell.text, font=self.font, fill=fill)

    def _header(self, draw, step: int) -> None:
        trace = self.trace
        width = self.size[0]
        draw.text((self.pad, self.pad), trace.title, font=self.font, fill=FIXED_TEXT)
        counter = f"step {step + 1}/{trace.num_steps}"
        draw.text((width - self.pad - draw.textlength(counter, font=self.font), self.pad), counter,
                  font=self.font, fill=SCALE_MID)
        new, masked, to_fill = _step_summary(trace, step)
        done = to_fill - masked
        stats = f"{new} new \u00b7 {done}/{to_fill} decoded \u00b7 {masked} masked"
        draw.text((self.pad, self.pad + self.text_h * 1.15), stats, font=self.small, fill=MUTED_TEXT)
        bar_y = self.pad + self.header_h - self.text_h * 0.7
        draw.rectangle((self.pad, bar_y, width - self.pad, bar_y + 2), fill=MASK_FILL)
        if to_fill:
            draw.rectangle((self.pad, bar_y, self.pad + (width - 2 * self.pad) * done / to_fill, bar_y + 2),
                           fill=SCALE_HIGH)

    def _legend(self, image, draw, y: float) -> None:
        from PIL import Image, ImageOps

        x = float(self.pad)
        for kind, label in self._legend_items():
            text_w = draw.textlength(label, font=self.small)
            if kind == "bar":
                draw.text((x, y), label, font=self.small, fill=MUTED_TEXT)
                ramp = Image.linear_gradient("L").transpose(Image.Transpose.TRANSPOSE)  # black left, white right
                ramp = ramp.resize((self._bar_width(), max(self.text_h // 2, 4)))
                bar = ImageOps.colorize(ramp, black=SCALE_LOW, mid=SCALE_MID, white=SCALE_HIGH)
                image.paste(bar, (round(x + text_w + self.cell_w * 0.6), round(y + self.text_h / 4)))
            elif kind == "new":  # drawn like a token committed at this step
                draw.rounded_rectangle((x, y - 2, x + text_w + self.cell_w, y + self.text_h), radius=3, fill=SCALE_MID)
                draw.text((x + self.cell_w / 2, y), label, font=self.small, fill=NEW_TEXT)
            elif kind == "masked":
                draw.rounded_rectangle((x, y - 2, x + self.cell_w * 2.5, y + self.text_h), radius=3, fill=MASK_FILL,
                                       outline=MASK_OUTLINE)
                draw.text((x + self.cell_w * 3.1, y), label, font=self.small, fill=MUTED_TEXT)
            else:
                colour = {"label": MUTED_TEXT, "fixed": FIXED_TEXT}.get(kind, UNKNOWN_TEXT)
                draw.text((x, y), label, font=self.small, fill=colour)
            x += self._legend_item_width(draw, kind, label)

def render_frame(trace: Trace, step: int, *, width: int = 64, font_size: int = 16):
    """Draw the canvas after ``step`` (0-based) as an image.

    Args:
        trace: the trajectory.
        step: in ``[0, trace.num_steps)``.
        width: characters per line.
        font_size: font size in pixels.

    Returns:
        an RGB ``PIL.Image.Image``.
    """
    return _GifPainter(trace, width, font_size).paint(step)


def save_gif(trace: Trace, path: Union[str, Path], *, width: int = 64, font_size: int = 16,
             frame_ms: int = 150, hold_ms: int = 2500) -> int:
    """Write an animated GIF of the trajectory: one frame per step, looping.

    Args:
        trace: the trajectory.
        path: the file to write.
        width: characters per line.
        font_size: font size in pixels.
        frame_ms: how long each frame shows, in milliseconds.
        hold_ms: how long the last frame shows before the loop restarts.

    Returns:
        the number of frames written (``trace.num_steps``).
    """
    for name, value in (("frame_ms", frame_ms), ("hold_ms", hold_ms), ("font_size", font_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    painter = _GifPainter(trace, width, font_size)
    frames = [painter.paint(step) for step in range(trace.num_steps)]
    durations = [frame_ms] * (len(frames) - 1) + [hold_ms]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return len(frames)


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------
def _hex(colour: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def trace_data(trace: Trace, width: int = 64) -> dict:
    """The trajectory as plain JSON-able data (what the HTML page embeds).

    Returns:
        a dict with ``title``, ``scoreName``, ``scoreRange``, ``steps`` (the number of steps), ``slots``
        (``[line, cells, line_start]`` per position), ``texts`` (token texts, indexed below),
        ``initial`` (``[text index or -1 for a mask, kind]`` per position) and ``changes``: for each step,
        ``[position, text index or -1, colour, score or null]`` for every position that changed at it.
    """
    slots = layout(trace, width)
    index: Dict[int, int] = {}
    texts: List[str] = []

    def text_index(token: int) -> int:
        if token == trace.mask_token_id:
            return -1
        if token not in index:
            index[token] = len(texts)
            texts.append(trace.texts[token])
        return index[token]

    initial = []
    for token in trace.initial_ids.tolist():
        kind = MASKED if token == trace.mask_token_id else SPECIAL if token in trace.special_ids else FIXED
        initial.append([text_index(token), kind])
    changes = []
    previous = trace.initial_ids
    for step in range(trace.num_steps):
        now = trace.token_ids[step]
        positions = (now != previous).nonzero().flatten().tolist()
        step_changes = []
        for p in positions:
            score = float(trace.scores[step, p])
            known = math.isfinite(score)
            step_changes.append([p, text_index(int(now[p])), _hex(score_colour(score, trace.score_range)),
                                 round(score, 4) if known else None])
        changes.append(step_changes)
        previous = now
    return {
        "title": trace.title, "scoreName": trace.score_name, "scoreRange": list(trace.score_range),
        "steps": trace.num_steps, "slots": [[s.line, s.cells, s.line_start] for s in slots], "texts": texts,
        "initial": initial, "changes": changes, "hasUnscored": trace.has_unscored, "unscoredLabel": UNSCORED_LABEL,
        "colours": {"low": _hex(SCALE_LOW), "mid": _hex(SCALE_MID), "high": _hex(SCALE_HIGH),
                    "fixed": _hex(FIXED_TEXT), "special": _hex(SPECIAL_TEXT), "unknown": _hex(UNKNOWN_TEXT),
                    "maskFill": _hex(MASK_FILL), "maskOutline": _hex(MASK_OUTLINE), "newText": _hex(NEW_TEXT),
                    "background": _hex(BACKGROUND), "muted": _hex(MUTED_TEXT)},
    }


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  :root { --bg: __BG__; --muted: __MUTED__; --fixed: __FIXED__; --special: __SPECIAL__;
          --mask-fill: __MASKFILL__; --mask-outline: __MASKOUTLINE__; --new-text: __NEWTEXT__; }
  body { background: var(--bg); color: var(--fixed); margin: 0; padding: 24px;
         font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 15px; }
  header { display: flex; justify-content: space-between; align-items: baseline; max-width: max-content; gap: 3em; }
  h1 { font-size: 1.1em; font-weight: 600; margin: 0; }
  #counter { color: __MID__; }
  #stats { color: var(--muted); font-size: 0.9em; margin: 4px 0 8px; }
  #progress { height: 3px; background: var(--mask-fill); margin-bottom: 16px; }
  #progress div { height: 3px; background: __HIGH__; width: 0; }
  .controls { display: flex; align-items: center; gap: 10px; margin-bottom: 18px; }
  .controls input[type=range] { width: min(60ch, 70vw); accent-color: __HIGH__; }
  button { background: var(--mask-fill); color: var(--fixed); border: 1px solid var(--mask-outline);
           border-radius: 4px; font: inherit; padding: 2px 10px; cursor: pointer; }
  #canvas { line-height: 1.7; overflow-x: auto; }
  .line { white-space: pre; height: 1.7em; }
  .tok { display: inline-block; white-space: pre; overflow: hidden; vertical-align: top;
         border-radius: 3px; box-sizing: border-box; height: 1.5em; line-height: 1.5em; margin-top: 0.1em; }
  .masked { background: var(--mask-fill); outline: 1px solid var(--mask-outline); outline-offset: -1px; }
  .special { color: var(--special); }
  .new { color: var(--new-text); }
  .legend { display: flex; align-items: center; gap: 2ch; color: var(--muted); font-size: 0.9em; margin-top: 18px; }
  .ramp { display: inline-block; width: 14ch; height: 0.6em;
          background: linear-gradient(to right, __LOW__, __MID__, __HIGH__); vertical-align: middle; }
  .swatch { display: inline-block; width: 2.5ch; height: 1.2em; border-radius: 3px; vertical-align: middle; }
</style>
</head>
<body>
<header><h1 id="title"></h1><span id="counter"></span></header>
<div id="stats"></div>
<div id="progress"><div></div></div>
<div class="controls">
  <button id="play" title="play / pause (space)">&#9654;</button>
  <button id="prev" title="previous step (&#8592;)">&#8249;</button>
  <input id="slider" type="range" min="1" value="1" step="1" aria-label="step">
  <button id="next" title="next step (&#8594;)">&#8250;</button>
</div>
<div id="canvas"></div>
<div class="legend">
  <span><span id="low"></span> <span class="ramp"></span> <span id="high"></span></span>
  <span><span class="swatch" style="background: __HIGH__"></span> new</span>
  <span><span class="swatch masked"></span> masked</span>
  <span style="color: var(--fixed)">prompt</span>
  <span id="unscored" style="color: __UNKNOWN__"></span>
</div>
<script id="trace-data" type="application/json">__DATA__</script>
<script>
(function () {
  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const n = data.initial.length;
  // state after each step: text index, colour, score, step of the last change
  const frames = [];
  let text = data.initial.map(c => c[0]), colour = new Array(n).fill(null), score = new Array(n).fill(null);
  let changedAt = new Array(n).fill(-1);
  for (let s = 0; s < data.steps; s++) {
    text = text.slice(); colour = colour.slice(); score = score.slice(); changedAt = changedAt.slice();
    for (const [p, t, c, v] of data.changes[s]) { text[p] = t; colour[p] = c; score[p] = v; changedAt[p] = s; }
    frames.push({text, colour, score, changedAt});
  }
  const toFill = data.initial.filter(c => c[1] === "masked").length;
  document.getElementById("title").textContent = data.title;
  document.title = data.title + " \\u00b7 denoising trace";
  document.getElementById("low").textContent = data.scoreRange[0].toFixed(2);
  document.getElementById("high").textContent = data.scoreRange[1].toFixed(2) + " " + data.scoreName;
  if (data.hasUnscored) document.getElementById("unscored").textContent = data.unscoredLabel;
  const canvas = document.getElementById("canvas");
  const spans = [];
  let line = null;
  data.slots.forEach(([ln, cells], p) => {
    if (!line || Number(line.dataset.line) !== ln) {
      line = document.createElement("div"); line.className = "line"; line.dataset.line = ln; canvas.appendChild(line);
    }
    const span = document.createElement("span");
    span.className = "tok"; span.style.width = cells + "ch";
    line.appendChild(span); spans.push(span);
  });
  const slider = document.getElementById("slider");
  slider.max = data.steps;
  function show(step) {
    const f = frames[step - 1];
    let masked = 0, fresh = 0;
    for (let p = 0; p < n; p++) {
      const span = spans[p], t = f.text[p], kind = data.initial[p][1];
      span.className = "tok"; span.style.background = ""; span.style.color = ""; span.title = "";
      if (t < 0) { span.classList.add("masked"); span.textContent = ""; masked++; continue; }
      let shown = data.texts[t];
      if (data.slots[p][2]) shown = shown.replace(/^ +/, "");
      span.textContent = shown;
      if (kind !== "masked") { if (kind === "special") span.classList.add("special"); continue; }
      const scoreText = f.score[p] === null ? "unknown" : f.score[p].toFixed(3);
      span.title = JSON.stringify(data.texts[t]) + "  " + data.scoreName + " " + scoreText +
                   "  committed at step " + (f.changedAt[p] + 1);
      if (f.changedAt[p] === step - 1) { span.classList.add("new"); span.style.background = f.colour[p]; fresh++; }
      else span.style.color = f.colour[p];
    }
    const done = toFill - masked;
    document.getElementById("counter").textContent = "step " + step + "/" + data.steps;
    document.getElementById("stats").textContent =
      fresh + " new \\u00b7 " + done + "/" + toFill + " decoded \\u00b7 " + masked + " masked";
    document.querySelector("#progress div").style.width = (toFill ? 100 * done / toFill : 100) + "%";
    slider.value = step;
  }
  let timer = null;
  const play = document.getElementById("play");
  function stop() { clearInterval(timer); timer = null; play.innerHTML = "&#9654;"; }
  function toggle() {
    if (timer) { stop(); return; }
    if (Number(slider.value) >= data.steps) show(1);
    play.innerHTML = "&#10074;&#10074;";
    timer = setInterval(() => { const s = Number(slider.value); if (s >= data.steps) stop(); else show(s + 1); }, 180);
  }
  const step = d => { stop(); show(Math.min(Math.max(Number(slider.value) + d, 1), data.steps)); };
  slider.addEventListener("input", () => { stop(); show(Number(slider.value)); });
  play.addEventListener("click", toggle);
  document.getElementById("prev").addEventListener("click", () => step(-1));
  document.getElementById("next").addEventListener("click", () => step(1));
  document.addEventListener("keydown", e => {
    if (e.key === "ArrowLeft") step(-1); else if (e.key === "ArrowRight") step(1);
    else if (e.key === " ") { e.preventDefault(); toggle(); }
  });
  show(data.steps);
})();
</script>
</body>
</html>
"""


def render_html(trace: Trace, *, width: int = 64) -> str:
    """A self-contained HTML page (inline CSS and JavaScript, no network) with a step slider, play /
    pause, arrow keys, and per-token tooltips (text, score, step of commit).

    Args:
        trace: the trajectory.
        width: characters per line.

    Returns:
        the page as a string; the trajectory is embedded as JSON (:func:`trace_data`) in
        ``<script id="trace-data" type="application/json">``.
    """
    data = json.dumps(trace_data(trace, width), ensure_ascii=False, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # a token text cannot close the script element
    replacements = {
        "__TITLE__": html.escape(trace.title), "__BG__": _hex(BACKGROUND), "__MUTED__": _hex(MUTED_TEXT),
        "__FIXED__": _hex(FIXED_TEXT), "__SPECIAL__": _hex(SPECIAL_TEXT), "__MASKFILL__": _hex(MASK_FILL),
        "__MASKOUTLINE__": _hex(MASK_OUTLINE), "__NEWTEXT__": _hex(NEW_TEXT), "__LOW__": _hex(SCALE_LOW),
        "__MID__": _hex(SCALE_MID), "__HIGH__": _hex(SCALE_HIGH), "__UNKNOWN__": _hex(UNKNOWN_TEXT),
        "__DATA__": data,
    }
    page = _HTML_TEMPLATE
    for key, value in replacements.items():
        page = page.replace(key, value)
    return page


def save_html(trace: Trace, path: Union[str, Path], *, width: int = 64) -> None:
    """Write :func:`render_html` to ``path`` (UTF-8)."""
    Path(path).write_text(render_html(trace, width=width), encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# terminal
# ----------------------------------------------------------------------------------------------
def _fg(colour: RGB) -> str:
    return "\x1b[38;2;{};{};{}m".format(*colour)


def _bg(colour: RGB) -> str:
    return "\x1b[48;2;{};{};{}m".format(*colour)


_RESET = "\x1b[0m"


def terminal_frame(trace: Trace, step: int, slots: List[Slot]) -> List[str]:
    """The canvas after ``step`` as lines of text with ANSI 24-bit colours: a header with the step
    counter and counts, the wrapped canvas, and a legend.

    Args:
        trace: the trajectory.
        step: in ``[0, trace.num_steps)``.
        slots: ``layout(trace, width)``.

    Returns:
        the lines, without newlines; every frame of a trace has the same number of lines.
    """
    new, masked, to_fill = _step_summary(trace, step)
    lines = [f"{_fg(SCALE_MID)}step {step + 1}/{trace.num_steps}{_RESET}  "
             f"{_fg(MUTED_TEXT)}{new} new \u00b7 {to_fill - masked}/{to_fill} decoded \u00b7 {masked} masked{_RESET}"]
    body: List[List[str]] = [[] for _ in range((slots[-1].line + 1) if slots else 1)]
    for cell in frame_cells(trace, step, slots):
        padded = cell.text.ljust(cell.slot.cells)
        if cell.kind == MASKED:
            piece = _fg(MASK_OUTLINE) + MASK_GLYPH * cell.slot.cells
        elif cell.kind == NEW:
            piece = _bg(cell.colour) + _fg(NEW_TEXT) + padded
        else:
            piece = _fg(cell.colour) + padded
        body[cell.slot.line].append(piece + _RESET)
    lines += ["".join(pieces) for pieces in body]
    low, high = trace.score_range
    ramp = "".join(_fg(score_colour(low + (high - low) * i / 11, trace.score_range)) + "\u2588" for i in range(12))
    lines.append(f"{_fg(MUTED_TEXT)}{low:.2f} {ramp}{_RESET}{_fg(MUTED_TEXT)} {high:.2f} {trace.score_name}   "
                 f"{_bg(SCALE_MID)}{_fg(NEW_TEXT)}new{_RESET}   {_fg(MASK_OUTLINE)}{MASK_GLYPH * 2}"
                 f"{_fg(MUTED_TEXT)} masked   {_fg(FIXED_TEXT)}prompt{_RESET}"
                 + (f"   {_fg(UNKNOWN_TEXT)}{UNSCORED_LABEL}{_RESET}" if trace.has_unscored else ""))
    return lines


def play_terminal(trace: Trace, stream: Optional[TextIO] = None, *, width: int = 64, delay: float = 0.12,
                  rows: Optional[int] = None) -> int:
    """Animate the trajectory in place in a terminal with ANSI escape codes: each frame redraws over
    the previous one; the last frame stays on screen. The cursor is hidden and line wrapping turned off
    while playing; both are restored even on Ctrl-C.

    Args:
        trace: the trajectory.
        stream: where to write (default ``sys.stdout``).
        width: characters per line.
        delay: seconds between frames.
        rows: the terminal's height; a frame taller than it cannot be redrawn in place, so only the last
            frame is shown. ``None``: no limit.

    Returns:
        the number of frames drawn.
    """
    stream = stream if stream is not None else sys.stdout
    slots = layout(trace, width)
    frame_height = (slots[-1].line + 1 if slots else 1) + 2  # header + canvas + legend
    first = trace.num_steps - 1 if rows is not None and frame_height >= rows else 0
    height = 0
    stream.write("\x1b[?25l\x1b[?7l")  # hide the cursor; no auto-wrap, so a long line cannot add a row
    try:
        for step in range(first, trace.num_steps):
            lines = terminal_frame(trace, step, slots)
            up = f"\x1b[{height}F" if height else ""
            stream.write(up + "".join(line + "\x1b[K\n" for line in lines))
            stream.flush()
            height = len(lines)
            if step + 1 < trace.num_steps:
                time.sleep(delay)
    finally:
        stream.write(_RESET + "\x1b[?7h\x1b[?25h")
        stream.flush()
    return trace.num_steps - first
