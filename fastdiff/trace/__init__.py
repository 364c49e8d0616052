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

Modules: :mod:`~fastdiff.trace.build` (the trace, its layout and cells, the colours),
:mod:`~fastdiff.trace.gif` (Pillow), :mod:`~fastdiff.trace.html` (the page template ``page.html``) and
:mod:`~fastdiff.trace.terminal`; this package re-exports their public names.

Example:
    >>> out = sampler.generate(prompt_ids, gen_length=64, return_history=True)   # doctest: +SKIP
    >>> trace = build_trace(out, initial_ids=canvas, mask_token_id=mask_id,
    ...                     token_text=lambda i: tokenizer.decode([i]))          # doctest: +SKIP
    >>> save_gif(trace, "trace.gif"); save_html(trace, "trace.html")            # doctest: +SKIP
"""
from fastdiff.trace.build import (BACKGROUND, FIXED, FIXED_TEXT, KEPT, MASK_FILL, MASK_OUTLINE, MASKED, MUTED_TEXT,
                                  NEW, NEW_TEXT, NEWLINE_GLYPH, RGB, SCALE_HIGH, SCALE_LOW, SCALE_MID, SPECIAL,
                                  SPECIAL_TEXT, UNKNOWN_TEXT, UNSCORED_LABEL, Cell, Slot, Trace, build_trace,
                                  frame_cells, layout, score_colour, step_summary)
from fastdiff.trace.gif import load_monospace_font, render_frame, save_gif
from fastdiff.trace.html import hex_colour, render_html, save_html, trace_data
from fastdiff.trace.terminal import MASK_GLYPH, play_terminal, terminal_frame

__all__ = [
    "Trace", "Slot", "Cell", "build_trace", "layout", "frame_cells", "score_colour", "step_summary",
    "render_frame", "save_gif", "load_monospace_font", "render_html", "save_html", "trace_data", "hex_colour",
    "terminal_frame", "play_terminal",
    "RGB", "SCALE_LOW", "SCALE_MID", "SCALE_HIGH", "BACKGROUND", "FIXED_TEXT", "SPECIAL_TEXT", "UNKNOWN_TEXT",
    "MASK_FILL", "MASK_OUTLINE", "NEW_TEXT", "MUTED_TEXT", "FIXED", "SPECIAL", "MASKED", "NEW", "KEPT",
    "MASK_GLYPH", "NEWLINE_GLYPH", "UNSCORED_LABEL",
]
