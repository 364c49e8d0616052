"""The trace as an in-place ANSI animation in a terminal (:func:`play_terminal`), one frame at a time
(:func:`terminal_frame`), in 24-bit colour."""
from __future__ import annotations

import sys
import time
from typing import List, Optional, TextIO

from fastdiff.trace.build import (FIXED_TEXT, MASK_OUTLINE, MASKED, MUTED_TEXT, NEW, NEW_TEXT, RGB, SCALE_MID,
                                  UNKNOWN_TEXT, UNSCORED_LABEL, Slot, Trace, frame_cells, layout, score_colour,
                                  step_summary)

MASK_GLYPH = "\u2591"  # light shade, the terminal's masked slot


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
    new, masked, to_fill = step_summary(trace, step)
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
