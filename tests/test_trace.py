"""fastdiff.trace: building a trajectory from a generation, its layout, and the GIF / HTML / terminal
renderings."""
import io
import json
import math
import random
import re

import pytest
import torch

from conftest import MASK_ID
from fastdiff import Sampler
from fastdiff import trace as tracing

PROMPT_LENGTH = 5
WORDS = [" the", " cat", " sat", " on", " a", " mat", "s", "ing", " quickly", ",", "."]


def _token_text(token: int) -> str:
    return "<s>" if token == 0 else WORDS[token % len(WORDS)]


def _run(model, seed, gen_length=20, steps=5, **overrides):
    sampler = Sampler(model, mask_token_id=MASK_ID, steps=steps, temperature=1.0, seed=seed, return_history=True,
                      **overrides)
    prompt = torch.tensor([[0, 10, 11, 12, 13]])
    out = sampler.generate(prompt, gen_length=gen_length)
    initial = torch.cat([prompt, torch.full((1, gen_length), MASK_ID)], dim=1)
    return out, initial


@pytest.fixture
def generation(tiny_roberta, fresh_seed):
    return _run(tiny_roberta, fresh_seed)


@pytest.fixture
def trace(generation):
    out, initial = generation
    return tracing.build_trace(out, initial, MASK_ID, _token_text, special_ids=[0], title="test")


def test_build_trace_follows_the_history(generation, trace):
    out, initial = generation
    assert trace.num_steps == out.nfe == 5 and trace.length == PROMPT_LENGTH + 20
    assert torch.equal(trace.token_ids, torch.stack(out.history)[:, 0])
    assert torch.equal(trace.fixed, torch.arange(trace.length) < PROMPT_LENGTH)
    # without re-masking every committed token keeps its commit-time confidence from its commit on
    committed = trace.token_ids != MASK_ID
    generated = committed & ~trace.fixed
    expected = out.confidences[0].expand_as(trace.scores)
    assert torch.equal(trace.scores[generated], expected[generated])
    assert torch.isnan(trace.scores[~generated]).all()
    assert trace.score_range == (0.0, 1.0) and not trace.has_unscored
    assert set(trace.texts) == (set(trace.token_ids.unique().tolist()) | set(initial[0].tolist())) - {MASK_ID}


def test_scores_of_tokens_changed_later_are_unknown(tiny_roberta, fresh_seed):
    # a re-mask shows in the history only when it hits a token committed in an earlier step (about
    # seven runs in eight here): the first of a few seeds where one does is traced
    for seed in range(fresh_seed, fresh_seed + 6):
        out, initial = _run(tiny_roberta, seed, gen_length=24, steps=8, remask="low_confidence", remask_ratio=0.5)
        trace = tracing.build_trace(out, initial, MASK_ID, _token_text)
        unchanged_after = torch.ones_like(trace.token_ids, dtype=torch.bool)
        for step in range(trace.num_steps - 2, -1, -1):
            unchanged_after[step] = unchanged_after[step + 1] & (trace.token_ids[step + 1] == trace.token_ids[step])
        shown = (trace.token_ids != MASK_ID) & ~trace.fixed
        if (shown & ~unchanged_after).any():
            break
    else:
        pytest.fail(f"re-masking at ratio 0.5 re-masked no earlier committed token in six runs from seed {fresh_seed}")
    known = torch.isfinite(trace.scores)
    assert torch.equal(known, shown & unchanged_after & (trace.token_ids == trace.token_ids[-1]))
    assert trace.has_unscored and tracing.trace_data(trace)["hasUnscored"]
    assert tracing.UNSCORED_LABEL in tracing.terminal_frame(trace, 0, tracing.layout(trace, 40))[-1]


def test_build_trace_errors(tiny_roberta, generation):
    out, initial = generation
    without_history = Sampler(tiny_roberta, mask_token_id=MASK_ID, steps=2).generate(initial[:, :PROMPT_LENGTH],
                                                                                      gen_length=4)
    with pytest.raises(ValueError, match="return_history=True"):
        tracing.build_trace(without_history, initial, MASK_ID, _token_text)
    with pytest.raises(ValueError, match="row"):
        tracing.build_trace(out, initial, MASK_ID, _token_text, row=1)
    with pytest.raises(ValueError, match="initial_ids"):
        tracing.build_trace(out, initial[:, 1:], MASK_ID, _token_text)


def test_layout_fits_every_token_without_overlap(trace, fresh_seed):
    rng = random.Random(fresh_seed)
    texts = {token: " " * rng.randint(0, 1) + "x" * rng.randint(0, 9) + tracing.NEWLINE_GLYPH * (rng.random() < 0.2)
             for token in trace.texts}
    varied = tracing.Trace(**{**trace.__dict__, "texts": texts})
    width = rng.randint(6, 30)
    slots = tracing.layout(varied, width)
    assert len(slots) == trace.length
    shown = torch.cat([trace.initial_ids[None], trace.token_ids]).T.tolist()
    for position, (slot, ids) in enumerate(zip(slots, shown)):
        after_newline = position > 0 and texts.get(shown[position - 1][-1], "").endswith(tracing.NEWLINE_GLYPH)
        assert slot.line_start == (slot.column == 0 and not after_newline)
        for token in set(ids) - {MASK_ID}:
            text = texts[token].lstrip(" ") if slot.line_start else texts[token]
            assert len(text) <= slot.cells
        assert slot.column + slot.cells <= width or slot.column == 0  # only an over-wide slot overflows
        if position:
            before = slots[position - 1]
            if after_newline:  # a token ending with a newline ends its line
                assert (slot.line, slot.column) == (before.line + 1, 0)
            else:
                assert (slot.line, slot.column) == (before.line, before.column + before.cells) or (
                    slot.line == before.line + 1 and slot.column == 0)
    with pytest.raises(ValueError, match="width"):
        tracing.layout(trace, 0)


def test_score_colours():
    assert tracing.score_colour(0.0, (0.0, 1.0)) == tracing.SCALE_LOW
    assert tracing.score_colour(0.5, (0.0, 1.0)) == tracing.SCALE_MID
    assert tracing.score_colour(1.0, (0.0, 1.0)) == tracing.SCALE_HIGH
    assert tracing.score_colour(7.0, (0.0, 1.0)) == tracing.SCALE_HIGH
    assert tracing.score_colour(-3.0, (-4.0, -2.0)) == tracing.SCALE_MID
    assert tracing.score_colour(float("nan"), (0.0, 1.0)) == tracing.UNKNOWN_TEXT


def test_frame_cells_mark_new_and_masked_positions(trace):
    slots = tracing.layout(trace, 40)
    for step in range(trace.num_steps):
        cells = tracing.frame_cells(trace, step, slots)
        before = trace.token_ids[step - 1] if step else trace.initial_ids
        now = trace.token_ids[step]
        kinds = [cell.kind for cell in cells]
        assert [k == tracing.MASKED for k in kinds] == (now == MASK_ID).tolist()
        assert [k == tracing.NEW for k in kinds] == ((now != before) & (now != MASK_ID)).tolist()
        assert kinds[0] == tracing.SPECIAL and set(kinds[1:PROMPT_LENGTH]) == {tracing.FIXED}
    assert sum(c.kind == tracing.NEW for c in tracing.frame_cells(trace, 0, slots)) == 4  # 20 tokens / 5 steps


def test_gif_has_one_frame_per_step(trace, tmp_path):
    from PIL import Image

    path = tmp_path / "trace.gif"
    assert tracing.save_gif(trace, path, frame_ms=90, hold_ms=1500) == trace.num_steps
    with Image.open(path) as image:
        assert image.n_frames == trace.num_steps
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
    assert durations == [90] * (trace.num_steps - 1) + [1500]


def _pixels(image, colour) -> int:
    return sum(count for count, rgb in image.convert("RGB").getcolors(1 << 20) if rgb == colour)


def test_frames_highlight_new_tokens_and_draw_masks(trace):
    first = tracing.render_frame(trace, 0)
    last = tracing.render_frame(trace, trace.num_steps - 1)
    assert first.size == last.size and first.mode == "RGB"
    # every token committed at a step is drawn on a block of its score colour
    slots = tracing.layout(trace, 64)
    for step, image in ((0, first), (trace.num_steps - 1, last)):
        for cell in tracing.frame_cells(trace, step, slots):
            if cell.kind == tracing.NEW:
                assert _pixels(image, cell.colour) > 20
    # masked slots are filled boxes: many in the first frame, none left in the last (only the legend's)
    assert _pixels(first, tracing.MASK_FILL) > 5 * _pixels(last, tracing.MASK_FILL)


def _page_data(page: str) -> dict:
    match = re.search(r'<script id="trace-data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def test_html_holds_every_step(trace):
    page = tracing.render_html(trace, width=40)
    assert page.startswith("<!DOCTYPE html>") and "<title>test</title>" in page
    assert not re.search(r"https?://|\ssrc=|<link", page)  # self-contained: no network
    data = _page_data(page)
    assert data["steps"] == trace.num_steps == len(data["changes"])
    state = [index for index, _ in data["initial"]]
    for step, changes in enumerate(data["changes"]):
        for position, index, colour, score in changes:
            state[position] = index
            expected = float(trace.scores[step, position])
            assert (score is None) == math.isnan(expected)
            assert score is None or abs(score - expected) < 1e-4
            assert colour == tracing.hex_colour(tracing.score_colour(expected, trace.score_range))
        shown = [data["texts"][i] if i >= 0 else None for i in state]
        assert shown == [None if t == MASK_ID else trace.texts[t] for t in trace.token_ids[step].tolist()]


def test_the_page_reads_every_field_of_its_data(trace):
    page = tracing.render_html(trace)
    script = page[page.index("JSON.parse"):]
    assert {field for field in tracing.trace_data(trace) if f"data.{field}" not in script} == set()


def test_html_escapes_token_text(generation):
    out, initial = generation
    nasty = "</script><b>&"
    trace = tracing.build_trace(out, initial, MASK_ID, lambda token: nasty if token == 0 else _token_text(token),
                                title="<i>title</i>")
    page = tracing.render_html(trace)
    assert "</script><b>" not in page and "<i>title</i>" not in page
    assert nasty in _page_data(page)["texts"]


def test_terminal_animation(trace):
    stream = io.StringIO()
    assert tracing.play_terminal(trace, stream, width=30, delay=0) == trace.num_steps
    text = stream.getvalue()
    frames = re.split(r"\x1b\[\d+F", text)
    assert len(frames) == trace.num_steps
    heights = {frame.count("\n") for frame in frames}
    assert len(heights) == 1 and re.findall(r"\x1b\[(\d+)F", text) == [str(heights.pop())] * (trace.num_steps - 1)
    assert text.startswith("\x1b[?25l") and text.endswith("\x1b[?7h\x1b[?25h")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frames[-1])
    final = "".join(_token_text(t) for t in trace.token_ids[-1].tolist())
    assert "".join(plain.splitlines()[1:-1]).replace(" ", "") == final.replace(" ", "")
    short = io.StringIO()
    assert tracing.play_terminal(trace, short, width=30, delay=0, rows=3) == 1  # too tall to redraw in place
    assert "\x1b[" in short.getvalue() and not re.search(r"\x1b\[\d+F", short.getvalue())


def test_control_characters_are_made_visible(generation):
    out, initial = generation
    trace = tracing.build_trace(out, initial, MASK_ID, lambda token: "a\nb\tc\x07" if token == 0 else "x")
    assert trace.texts[0] == "a\u21b5b\u2192c\u2407"
    stream = io.StringIO()
    tracing.play_terminal(trace, stream, delay=0)
    assert "\x07" not in stream.getvalue() and "\t" not in stream.getvalue()
