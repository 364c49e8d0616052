"""The trajectory of one generation (:class:`Trace`), the fixed grid it is drawn on (:func:`layout`),
what each position shows at each step (:func:`frame_cells`), and the colours every renderer shares.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Collection, Dict, List, Tuple

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

NEWLINE_GLYPH = "\u21b5"  # a newline inside a token, drawn; the line then breaks
UNSCORED_LABEL = "changed later"  # the legend of grey tokens


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


def step_summary(trace: Trace, step: int) -> Tuple[int, int, int]:
    """``(committed at this step, still masked, positions to fill)`` after ``step`` (0-based)."""
    to_fill = int((~trace.fixed).sum())
    previous = trace.token_ids[step - 1] if step > 0 else trace.initial_ids
    now = trace.token_ids[step]
    masked = int((now == trace.mask_token_id).sum())
    new = int(((now != previous) & (now != trace.mask_token_id)).sum())
    return new, masked, to_fill
