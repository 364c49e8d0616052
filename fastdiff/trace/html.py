"""The trace as a self-contained HTML page with a step slider (:func:`save_html`): the page is the
template ``page.html`` of this package, with the colours and the trajectory (:func:`trace_data`) filled
in."""
from __future__ import annotations

import html
import importlib.resources
import json
import math
from pathlib import Path
from typing import Dict, List, Union

from fastdiff.trace.build import (BACKGROUND, FIXED, FIXED_TEXT, MASK_FILL, MASK_OUTLINE, MASKED, MUTED_TEXT,
                                  NEW_TEXT, RGB, SCALE_HIGH, SCALE_LOW, SCALE_MID, SPECIAL, SPECIAL_TEXT,
                                  UNKNOWN_TEXT, UNSCORED_LABEL, Trace, layout, score_colour)

PAGE_TEMPLATE = "page.html"


def hex_colour(colour: RGB) -> str:
    """``(r, g, b)`` as a CSS colour, ``"#rrggbb"``."""
    return "#{:02x}{:02x}{:02x}".format(*colour)


def trace_data(trace: Trace, width: int = 64) -> dict:
    """The trajectory as plain JSON-able data (what the HTML page embeds).

    Returns:
        a dict with ``title``, ``scoreName``, ``scoreRange``, ``steps`` (the number of steps), ``slots``
        (``[line, cells, line_start]`` per position), ``texts`` (token texts, indexed below),
        ``initial`` (``[text index or -1 for a mask, kind]`` per position), ``changes`` (for each step,
        ``[position, text index or -1, colour, score or null]`` for every position that changed at it),
        ``hasUnscored`` (:attr:`Trace.has_unscored`) and ``unscoredLabel`` (its legend).
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
            step_changes.append([p, text_index(int(now[p])), hex_colour(score_colour(score, trace.score_range)),
                                 round(score, 4) if known else None])
        changes.append(step_changes)
        previous = now
    return {
        "title": trace.title, "scoreName": trace.score_name, "scoreRange": list(trace.score_range),
        "steps": trace.num_steps, "slots": [[s.line, s.cells, s.line_start] for s in slots], "texts": texts,
        "initial": initial, "changes": changes, "hasUnscored": trace.has_unscored, "unscoredLabel": UNSCORED_LABEL,
    }


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
        "__TITLE__": html.escape(trace.title), "__BG__": hex_colour(BACKGROUND), "__MUTED__": hex_colour(MUTED_TEXT),
        "__FIXED__": hex_colour(FIXED_TEXT), "__SPECIAL__": hex_colour(SPECIAL_TEXT),
        "__MASKFILL__": hex_colour(MASK_FILL), "__MASKOUTLINE__": hex_colour(MASK_OUTLINE),
        "__NEWTEXT__": hex_colour(NEW_TEXT), "__LOW__": hex_colour(SCALE_LOW), "__MID__": hex_colour(SCALE_MID),
        "__HIGH__": hex_colour(SCALE_HIGH), "__UNKNOWN__": hex_colour(UNKNOWN_TEXT),
        "__DATA__": data,
    }
    page = importlib.resources.files("fastdiff.trace").joinpath(PAGE_TEMPLATE).read_text(encoding="utf-8")
    for key, value in replacements.items():
        page = page.replace(key, value)
    return page


def save_html(trace: Trace, path: Union[str, Path], *, width: int = 64) -> None:
    """Write :func:`render_html` to ``path`` (UTF-8)."""
    Path(path).write_text(render_html(trace, width=width), encoding="utf-8")
