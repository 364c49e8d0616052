"""The animated GIF of a trace, drawn with Pillow: one frame per step (:func:`save_gif`), or one frame
as an image (:func:`render_frame`)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import List, Tuple, Union

from fastdiff.trace.build import (BACKGROUND, FIXED_TEXT, MASK_FILL, MASK_OUTLINE, MASKED, MUTED_TEXT, NEW,
                                  NEW_TEXT, SCALE_HIGH, SCALE_LOW, SCALE_MID, UNKNOWN_TEXT, UNSCORED_LABEL, Cell,
                                  Trace, frame_cells, layout, step_summary)

_MONOSPACE_FONTS = ("DejaVuSansMono.ttf", "LiberationMono-Regular.ttf", "Menlo.ttc", "consola.ttf",
                    "Courier New.ttf", "cour.ttf")


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
        new, masked, to_fill = step_summary(trace, step)
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


