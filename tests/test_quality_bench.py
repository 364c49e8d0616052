"""The quality benchmark (``benchmarks/quality.py``): its held-out tasks, the AR reference's sampling
and scoring, and one end-to-end run on a minuscule configuration with a random-init GPT-2 in place of
the trained one."""
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))

import quality  # noqa: E402

from fastdiff.pretrained import load_pretrained  # noqa: E402

SOURCE = '''\
import os


def first(items, default=None):
    """The first item, or default."""
    for item in items:
        return item
    return default


class Box:
    def __init__(self, width, height):
        self.width = width
        self.height = height

    def area(self):
        # the surface
        return self.width * self.height

    def grow(self, by):
        self.width += by
        self.height += by
        return self
'''


@pytest.fixture(scope="module")
def tokenizer():
    return load_pretrained(device="cpu")[1]


@pytest.fixture(scope="module")
def tiny_gpt2(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(int.from_bytes(__import__("os").urandom(4), "little"))
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("span_lines", [1, 2])
def test_infill_tasks_hide_real_body_lines(tokenizer, span_lines):
    tasks = quality.infill_tasks(tokenizer, [("box.py", SOURCE)], count=10, span_lines=span_lines, max_length=64)
    assert tasks and tasks == quality.infill_tasks(tokenizer, [("box.py", SOURCE)], 10, span_lines, 64)
    lines = SOURCE.split("\n")
    for task in tasks:
        start, end = task["hole"]
        assert task["canvas"][0] == tokenizer.bos_token_id and len(task["canvas"]) <= 64
        assert task["canvas"][start:end] == task["answer"]
        hidden = tokenizer.decode(task["answer"])
        assert hidden == "\n".join(lines[task["line"] - 1:task["line"] - 1 + span_lines])
        assert hidden.strip() and not hidden.strip().startswith(("#", '"""', "def ", "class "))


def test_generation_prompts_are_stream_windows(tokenizer):
    texts = [("a.py", SOURCE), ("b.py", SOURCE.replace("Box", "Crate"))]
    prompts, continuations = quality.generation_prompts(tokenizer, texts, prompt_length=8, gen_length=6, count=3)
    assert prompts.shape == (3, 9) and continuations.shape == (3, 6)
    assert (prompts[:, 0] == tokenizer.bos_token_id).all()
    stream = "".join(text for _, text in texts)
    for row in torch.cat([prompts[:, 1:], continuations], dim=1):
        assert tokenizer.decode(row) in stream


def test_ar_generate_with_the_cache_matches_recomputing(tiny_gpt2, tokenizer):
    prompt = torch.tensor(tokenizer(["def f(x):\n", "class A:\n"], add_special_tokens=False)["input_ids"][0])[None]
    suppress = list(tokenizer.all_special_ids)
    greedy = quality.ar_generate(tiny_gpt2, prompt, 6, 0.0, suppress, seed=0)
    ids = prompt
    for _ in range(6):
        with torch.no_grad():
            logits = tiny_gpt2(input_ids=ids).logits[:, -1].float()
        logits[:, suppress] = float("-inf")
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, ids[:, prompt.shape[1]:])
    sampled = quality.ar_generate(tiny_gpt2, prompt.repeat(4, 1), 12, 1.0, suppress, seed=5)
    assert torch.equal(sampled, quality.ar_generate(tiny_gpt2, prompt.repeat(4, 1), 12, 1.0, suppress, seed=5))
    assert not torch.isin(sampled, torch.tensor(suppress)).any()


def test_ar_nll_is_the_next_token_cross_entropy(tiny_gpt2):
    prompt, continuation = torch.randint(5, 100, (2, 4)), torch.randint(5, 100, (2, 3))
    nll = quality.ar_nll(tiny_gpt2, prompt, continuation)
    with torch.no_grad():
        log_probs = tiny_gpt2(input_ids=torch.cat([prompt, continuation], 1)).logits.float().log_softmax(-1)
    expected = -log_probs[:, 3:6].gather(-1, continuation[..., None])[..., 0]
    torch.testing.assert_close(nll, expected)


def test_unigram_entropy():
    assert quality.unigram_entropy(torch.tensor([[7, 7, 7, 7]])) == 0.0
    assert quality.unigram_entropy(torch.tensor([[1, 2, 3, 4], [5, 5, 6, 6]])) == pytest.approx(
        (2 * torch.log(torch.tensor(2.0)).item() + torch.log(torch.tensor(2.0)).item()) / 2)


@pytest.mark.slow
def test_quality_benchmark_end_to_end(tiny_gpt2, tmp_path):
    ar_dir = tmp_path / "ar"
    tiny_gpt2.save_pretrained(ar_dir)
    out = tmp_path / "results"
    try:
        import matplotlib  # noqa: F401
        plot = []
    except ImportError:
        plot = ["--no-plot"]
    quality.main(["--ar-model", str(ar_dir), "--prompts", "2", "--prompt-length", "8", "--gen-length", "8",
                  "--infill-tasks", "4", "--infill-context", "48", "--repeats", "1", "--threads", "1",
                  "--out", str(out), *plot])
    result = json.loads((out / "quality.json").read_text())
    generation = result["generation"]
    diffusion = [r for r in generation if r["model"] == "fastdiff demo"]
    assert {r["rule"] for r in diffusion} == set(quality.RULES)
    assert len(diffusion) == len(quality.RULES) * len(quality.TOKENS_PER_STEP)
    for row in diffusion:
        assert row["gen_ppl"] > 1 and row["seconds"] > 0
        if row["rule"] not in ("ancestral", "threshold"):
            assert row["nfe"] == -(-8 // row["target_tokens_per_step"])
    assert {r["kind"] for r in result["infill"]} == {"line", "span"}
    for row in result["infill"]:
        assert 0 <= row["exact_match"] <= 1 and 0 <= row["token_accuracy"] <= 1 and row["tasks"] > 0
    assert "| fastdiff demo: margin |" in (out / "quality.md").read_text()
    assert plot or (out / "quality_frontier.png").read_bytes()[:4] == b"\x89PNG"
