"""Text in, text out: strings, lists of strings, BatchEncodings and id lists as inputs; ``max_new_tokens``;
decoded ``texts``; infill templates; output indexing; streaming to transformers' streamers."""
import threading

import pytest
import torch
from transformers import TextIteratorStreamer

from fastdiff import Sampler
from fastdiff.text import as_id_batch, encode_text


@pytest.fixture(scope="module")
def demo():
    return Sampler.from_pretrained(device="cpu", steps=4, seed=3, temperature=0.0)


def _ids(demo, text):
    return encode_text(text, demo.tokenizer, demo.mask_token_id).ids


def test_a_string_prompt_is_the_tensor_of_its_encoding(demo):
    text = "def add(a, b):\n"
    from_text = demo.generate(text, max_new_tokens=8)
    from_ids = demo.generate(torch.tensor([_ids(demo, text)]), gen_length=8)
    assert torch.equal(from_text.sequences, from_ids.sequences)
    assert from_text.texts == demo.tokenizer.batch_decode(from_ids.sequences[:, -8:], skip_special_tokens=True)
    assert from_ids.texts == from_text.texts  # the sampler holds a tokenizer: tensors get texts too


def test_a_list_of_strings_is_left_padded_and_each_row_matches_it_alone(demo):
    texts = ["import os\n", "def area(width, height):\n    return"]
    batch = demo.generate(texts, max_new_tokens=6, seed=[5, 6])
    assert batch.sequences.shape[0] == 2
    for row, (text, seed) in enumerate(zip(texts, [5, 6])):
        alone = demo.generate(text, max_new_tokens=6, seed=seed)
        assert batch.texts[row] == alone.texts[0]
        width = alone.sequences.shape[1]
        assert torch.equal(batch.sequences[row, -width:], alone.sequences[0])
    pad = demo.tokenizer.pad_token_id
    short = len(_ids(demo, texts[0]))
    assert (batch.sequences[0, : batch.sequences.shape[1] - short - 6] == pad).all()


def test_batch_encodings_lists_of_ids_and_of_tensors(demo):
    texts = ["x = 1\n", "for item in items:\n"]
    rows = [_ids(demo, t) for t in texts]
    expected = demo.generate(texts, max_new_tokens=5, seed=[1, 2]).sequences
    tok = demo.tokenizer
    right = tok.padding_side
    try:
        tok.padding_side = "right"  # a right-padded encoding is moved to the left
        encoding = tok(texts, padding=True, add_special_tokens=False)
        encoding["input_ids"] = [[tok.bos_token_id] + ids for ids in encoding["input_ids"]]
        encoding["attention_mask"] = [[1] + mask for mask in encoding["attention_mask"]]
    finally:
        tok.padding_side = right
    assert torch.equal(demo.generate(encoding, max_new_tokens=5, seed=[1, 2]).sequences, expected)
    assert torch.equal(demo.generate(rows, max_new_tokens=5, seed=[1, 2]).sequences, expected)
    assert torch.equal(demo.generate([torch.tensor(r) for r in rows], max_new_tokens=5, seed=[1, 2]).sequences,
                       expected)
    one = demo.generate(rows[0], max_new_tokens=5, seed=1).sequences  # a flat list is one row
    assert torch.equal(one, demo.generate(texts[0], max_new_tokens=5, seed=1).sequences)


def test_infill_takes_a_template_string(demo):
    out = demo.infill("def is_empty(items):\n    return len(items) == [MASK]\n")
    template = encode_text("def is_empty(items):\n    return len(items) == [MASK]\n", demo.tokenizer,
                           demo.mask_token_id)
    assert torch.equal(out.sequences, demo.infill(torch.tensor([template.ids])).sequences)
    assert out.texts == [demo.tokenizer.decode(out.sequences[0], skip_special_tokens=True)]
    own_mask = demo.infill(f"x = {demo.tokenizer.mask_token}\n")  # the tokenizer's mask token works too
    assert not (own_mask.sequences == demo.mask_token_id).any()
    with pytest.raises(ValueError, match="no mask_token_id"):
        demo.infill("no holes here")


def test_the_output_indexes_like_a_model_output(demo):
    out = demo.generate("import os\n", max_new_tokens=4)
    assert out["sequences"] is out.sequences and out[0] is out.sequences and out[1] == out.nfe
    assert "history" not in out.keys() and "texts" in out.keys()
    assert out.to_tuple()[-1] == out.texts
    with pytest.raises(KeyError):
        out["history"]
    assert out.finished.tolist() == [True] and out.stopped_at_eos.tolist() == [False]


class Recorder:
    """A streamer that records what it gets, and how many steps had run by then (``steps()``)."""

    def __init__(self, steps=lambda: None):
        self.calls = []
        self.steps = steps

    def put(self, value):
        self.calls.append(("put", torch.as_tensor(value).reshape(-1).tolist(), self.steps()))

    def end(self):
        self.calls.append(("end", self.steps()))


def test_blocks_stream_as_they_complete(demo):
    seen = []
    recorder = Recorder(steps=lambda: len(seen))
    out = demo.generate("import os\n", max_new_tokens=12, block_length=4, steps=6, streamer=recorder,
                        on_step=lambda step, canvas, logits: seen.append(canvas.clone()))
    prompt = _ids(demo, "import os\n")
    P = len(prompt)
    blocks = [out.sequences[0, P + 4 * i: P + 4 * (i + 1)].tolist() for i in range(3)]
    # 6 steps over 3 blocks: a block completes every second step and is put right after it
    assert recorder.calls == [("put", prompt, 0), ("put", blocks[0], 2), ("put", blocks[1], 4),
                              ("put", blocks[2], 6), ("end", 6)]
    mask = demo.mask_token_id
    assert not (seen[1][0, P:P + 4] == mask).any() and (seen[1][0, P + 4:] == mask).any()


def test_text_iterator_streamer_yields_the_generation(demo):
    streamer = TextIteratorStreamer(demo.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=demo.generate("import os\n", max_new_tokens=8,
                                                                              block_length=4, streamer=streamer)))
    worker.start()
    streamed = "".join(streamer)
    worker.join()
    assert streamed.strip() == result["out"].texts[0].strip()


def test_streaming_needs_one_row_and_a_streamer(demo):
    with pytest.raises(ValueError, match="batch size 1"):
        demo.generate(["a\n", "b\n"], max_new_tokens=4, streamer=Recorder())
    with pytest.raises(TypeError, match="streamer"):
        demo.generate("a\n", max_new_tokens=4, streamer=object())


def test_bad_inputs_name_the_argument(demo):
    with pytest.raises(TypeError, match="prompt_ids"):
        demo.generate(3.5, max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt_ids has an empty row"):
        demo.generate([[5, 6], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="attention_mask"):
        demo.generate(["a\n"], max_new_tokens=4, attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="left or right padding"):
        as_id_batch({"input_ids": [[5, 6, 7]], "attention_mask": [[1, 0, 1]]}, "prompt_ids", None, 4, 1)
    with pytest.raises(ValueError, match="all zero"):
        as_id_batch({"input_ids": [[5, 6]], "attention_mask": [[0, 0]]}, "prompt_ids", None, 4, 1)
    with pytest.raises(ValueError, match=r"\[MASK\*0\]"):
        demo.infill("x = [MASK*0]")


def test_right_padded_tensor_batches_run_as_left_padded_ones(demo):
    rows = [_ids(demo, "import os\n"), _ids(demo, "def area(width, height):\n")]
    width, pad = max(map(len, rows)), demo.tokenizer.pad_token_id
    left = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    right = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    left_mask, right_mask = left != pad, right != pad
    expected = demo.generate(left, max_new_tokens=5, attention_mask=left_mask, seed=[3, 4])
    got = demo.generate(right, max_new_tokens=5, attention_mask=right_mask, seed=[3, 4])
    assert torch.equal(got.sequences, expected.sequences) and got.texts == expected.texts
    with pytest.raises(ValueError, match="left or right padding"):
        demo.generate(left, max_new_tokens=5, attention_mask=torch.tensor([[1, 0] + [1] * (width - 2)] * 2))
