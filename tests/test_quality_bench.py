"""The quality benchmark (``benchmarks/quality.py``): its held-out tasks, the AR reference's sampling
and scoring, and one end-to-end run on a minuscule configuration with a random-init GPT-2 in place of
the trained one."""
import json
import re
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))

import quality  # noqa: E402

from fastdiff.pretrained import load_pretrained  # noqa: E402

PARAGRAPHS = [
    "The system reads its configuration when it starts. Every service is checked before it runs.",
    "A package can depend on other packages. The manager installs them in the right order.",
    "Backups should be tested regularly, because a copy that cannot be restored is worth nothing.",
]


def _stream(tokenizer, paragraphs=PARAGRAPHS):
    from fastdiff.training.corpus import tokenize_texts

    return tokenize_texts(tokenizer, paragraphs)


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


@pytest.mark.parametrize("span_words", [1, 3])
def test_infill_tasks_hide_whole_words_of_held_out_paragraphs(tokenizer, span_words):
    held = quality.paragraphs(_stream(tokenizer), tokenizer.eos_token_id)
    assert [tokenizer.decode(ids) for ids in held] == [p.lower() for p in PARAGRAPHS]
    tasks = quality.infill_tasks(tokenizer, held, count=10, span_words=span_words, max_length=64)
    assert len(tasks) == 3 and tasks == quality.infill_tasks(tokenizer, held, 10, span_words, 64)
    for task, text in zip(tasks, PARAGRAPHS):
        start, end = task["hole"]
        assert task["canvas"][0] == tokenizer.bos_token_id and len(task["canvas"]) <= 64
        assert task["canvas"][start:end] == task["answer"]
        hidden = tokenizer.decode(task["answer"])
        assert len(hidden.split()) == span_words and hidden.replace(" ", "").isalpha()
        assert re.search(rf"\b{hidden}\b", text.lower())
        # the hole neither starts nor ends inside a word
        tokens = tokenizer.convert_ids_to_tokens(task["canvas"])
        assert not tokens[start].startswith("##") and not tokens[end].startswith("##")


def test_generation_prompts_are_stream_windows(tokenizer):
    stream = _stream(tokenizer, PARAGRAPHS * 4)
    prompts, continuations = quality.generation_prompts(stream, tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                        prompt_length=8, gen_length=6, count=3)
    assert prompts.shape == (3, 9) and continuations.shape == (3, 6)
    assert (prompts[:, 0] == tokenizer.bos_token_id).all()
    assert not (prompts[:, 1:] == tokenizer.eos_token_id).any()
    ids = stream.ids.tolist()
    for row in torch.cat([prompts[:, 1:], continuations], dim=1).tolist():
        assert any(ids[i:i + len(row)] == row for i in range(len(ids)))


def test_word_statistics_count_dictionary_words_function_words_and_code():
    dictionary = frozenset({"the", "cat", "sat", "on", "mat", "it's"})
    stats = quality.word_statistics(["The cat sat on the mat.", "It's xyzzy;"], dictionary)
    assert stats["words"] == 8
    assert stats["dictionary_share"] == pytest.approx(7 / 8, abs=1e-4)
    assert stats["function_words_per_100"]["the"] == pytest.approx(25.0)
    assert stats["function_words_per_100"]["of"] == 0.0
    assert stats["code_punctuation_per_1000"] == pytest.approx(1000 / 34, abs=1e-3)
    assert quality.word_statistics(["x = f(y)"], None)["dictionary_share"] is None


def test_ar_generate_with_the_cache_matches_recomputing(tiny_gpt2, tokenizer):
    prompt = torch.tensor(tokenizer("the system reads", add_special_tokens=False)["input_ids"])[None]
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
def test_quality_benchmark_end_to_end(tiny_gpt2, tokenizer, tmp_path):
    from fastdiff.training.corpus import TokenStream

    ar_dir = tmp_path / "ar"
    tiny_gpt2.save_pretrained(ar_dir)
    data = tmp_path / "data"
    tokenizer.save_pretrained(data / "tokenizer")
    stream = _stream(tokenizer, PARAGRAPHS * 3)
    for name in ("train", "heldout"):
        TokenStream(ids=stream.ids, line_starts=stream.line_starts).save(data / f"{name}.safetensors")
    (data / "manifest.json").write_text("{}")
    dictionary = tmp_path / "words"
    dictionary.write_text("\n".join(" ".join(PARAGRAPHS).lower().replace(".", "").replace(",", "").split()))
    out = tmp_path / "results"
    try:
        import matplotlib  # noqa: F401
        plot = []
    except ImportError:
        plot = ["--no-plot"]
    quality.main(["--ar-model", str(ar_dir), "--data", str(data), "--dictionary", str(dictionary),
                  "--prompts", "2", "--prompt-length", "8", "--gen-length", "8", "--infill-tasks", "4",
                  "--infill-context", "48", "--repeats", "1", "--threads", "1", "--out", str(out), *plot])
    result = json.loads((out / "quality.json").read_text())
    generation = result["generation"]
    diffusion = [r for r in generation if r["model"] == "fastdiff demo"]
    assert {r["rule"] for r in diffusion} == set(quality.RULES)
    assert len(diffusion) == len(quality.RULES) * len(quality.TOKENS_PER_STEP)
    for row in diffusion:
        assert row["gen_ppl"] > 1 and row["seconds"] > 0
        if row["rule"] not in ("ancestral", "threshold"):
            assert row["nfe"] == -(-8 // row["target_tokens_per_step"])
    words = {row["source"]: row for row in result["words"]}
    assert set(words) == {"held-out text", "AR (GPT-2)"} | {f"fastdiff demo: {rule}" for rule in quality.RULES}
    assert words["held-out text"]["dictionary_share"] == 1.0
    assert {r["kind"] for r in result["infill"]} == {"word", "span"}
    for row in result["infill"]:
        assert 0 <= row["exact_match"] <= 1 and 0 <= row["token_accuracy"] <= 1 and row["tasks"] > 0
    markdown = (out / "quality.md").read_text()
    assert "| fastdiff demo: margin |" in markdown and "| held-out text | " in markdown
    assert plot or (out / "quality_frontier.png").read_bytes()[:4] == b"\x89PNG"
