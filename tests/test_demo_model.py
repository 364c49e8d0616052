"""The demo model shipped in fastdiff/demo_model: a standard Hugging Face directory (all-MiniLM-L6-v2
fine-tuned into an English text-diffusion model) that loads offline, has learned English, and
generates / infills with the sampler reproducibly."""
import json
import re
from pathlib import Path

import pytest
import torch

import fastdiff
from fastdiff import Sampler
from fastdiff.pretrained import DEMO_MODEL_DIR, load_pretrained

MIB = 1 << 20


@pytest.fixture(scope="module")
def demo():
    return load_pretrained(device="cpu")


def test_demo_directory_is_one_small_fp16_safetensors_file():
    from safetensors import safe_open

    assert DEMO_MODEL_DIR == Path(fastdiff.__file__).resolve().parent / "demo_model"
    weights = list(DEMO_MODEL_DIR.glob("*.safetensors"))
    assert [w.name for w in weights] == ["model.safetensors"]
    assert weights[0].stat().st_size <= 31 * MIB
    with safe_open(str(weights[0]), framework="pt") as f:
        dtypes = {f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes == {"F16"}
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "training.json"):
        assert (DEMO_MODEL_DIR / name).is_file(), name
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(DEMO_MODEL_DIR / "tokenizer.json"))  # the file alone, as any client reads it
    assert raw.padding is None and raw.truncation is None


def test_demo_loads_offline_with_the_auto_classes(monkeypatch):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForMaskedLM.from_pretrained(DEMO_MODEL_DIR, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR, local_files_only=True)
    assert type(model).__name__ == "BertForMaskedLM"
    assert sum(p.numel() for p in model.parameters()) <= 16_000_000
    assert tokenizer.mask_token_id is not None and tokenizer.mask_token_id < model.config.vocab_size
    assert len(tokenizer) == model.config.vocab_size
    assert fastdiff.model.ModelRunner(model).max_length >= 128


def test_load_pretrained_gives_an_eval_fp32_model_on_cpu(demo):
    model, tokenizer = demo
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    ids = tokenizer("The files are read in order.")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and tokenizer.sep_token_id not in ids  # ready to be continued
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the files are read in order."


def test_load_pretrained_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="path"):
        load_pretrained(tmp_path)
    with pytest.raises(TypeError, match="dtype"):
        load_pretrained(dtype="float16")


# English written for this test (not from the training corpus)
UNSEEN_TEXT = (
    "When the system starts, it reads the configuration file and checks that every service it needs is "
    "available. If a service is missing, the administrator is told which package provides it and how to "
    "install it. Most users never need to change these settings, because the default values work well on "
    "a typical machine. However, a server that handles many requests may need more memory for its cache, "
    "and the documentation explains how to measure the load before changing anything. It is a good idea to "
    "keep a copy of the original file, so that the old settings can be restored if something goes wrong. "
    "After each change, the service should be restarted and its log should be checked for errors.")


def test_demo_model_predicts_unseen_english_far_better_than_token_frequencies(demo):
    """Masked-token cross-entropy on English it never saw at a 15 % mask ratio, against the unigram
    entropy of its training tokens (6.54 nats, see training/README.md). The shipped model scores
    about 3.8 here."""
    from fastdiff.training.collator import DiffusionCollator
    from fastdiff.training.losses import diffusion_loss

    model, tokenizer = demo
    ids = torch.tensor(tokenizer(UNSEEN_TEXT, truncation=True, max_length=128)["input_ids"])[None]
    assert ids.shape[1] == 128
    collator = DiffusionCollator.from_tokenizer(tokenizer, ratio_schedule=(0.15,))
    losses = []
    for seed in range(4):
        batch = collator(ids, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            losses.append(float(diffusion_loss(model, batch["input_ids"], batch["labels"])))
    assert sum(losses) / len(losses) < 4.5, losses


def test_demo_model_writes_english_words(demo):
    """At 4 tokens per step and temperature 0.8 (the quality benchmark's words setting), what the model
    writes after an English prompt is words: no code punctuation, and most words are whole words of
    its vocabulary (not pieces glued together)."""
    model, tokenizer = demo
    prompt = tokenizer(["The package manager", "Before you install a new kernel,"], padding=True,
                       return_tensors="pt")
    out = Sampler(model, tokenizer.mask_token_id, steps=12, temperature=0.8, seed=0,
                  suppress_token_ids=[i for i in tokenizer.all_special_ids if i != tokenizer.mask_token_id]
                  ).generate(prompt["input_ids"], attention_mask=prompt["attention_mask"], gen_length=48)
    vocabulary = tokenizer.get_vocab()
    for row in out.sequences[:, prompt["input_ids"].shape[1]:]:
        text = tokenizer.decode(row, skip_special_tokens=True)
        assert not set(text) & set("{}[]<>=_/\\|$#@`~^*;"), text
        words = [w for w in text.replace("'", " ").split() if w.isalpha()]
        assert len(words) >= 20, text
        assert sum(w in vocabulary for w in words) / len(words) >= 0.8, text


def _prompt(tokenizer):
    return tokenizer("The configuration file", return_tensors="pt")["input_ids"]


def test_generation_fills_every_mask_and_keeps_the_prompt(demo, fresh_seed):
    model, tokenizer = demo
    prompt = _prompt(tokenizer)
    out = Sampler(model, tokenizer.mask_token_id, steps=12, temperature=1.0, seed=fresh_seed).generate(
        prompt, gen_length=48)
    assert out.sequences.shape == (1, prompt.shape[1] + 48)
    assert not (out.sequences == tokenizer.mask_token_id).any()
    assert torch.equal(out.sequences[:, :prompt.shape[1]], prompt)
    assert isinstance(tokenizer.decode(out.sequences[0], skip_special_tokens=True), str)


def test_generation_from_a_fixed_seed_is_stable(demo, fresh_seed):
    model, tokenizer = demo
    prompt = _prompt(tokenizer).repeat(2, 1)
    runs = [Sampler(model, tokenizer.mask_token_id, steps=16, temperature=1.0, unmask="margin", seed=fresh_seed)
            .generate(prompt, gen_length=48).sequences for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    other = Sampler(model, tokenizer.mask_token_id, steps=16, temperature=1.0, unmask="margin",
                    seed=fresh_seed + 1).generate(prompt, gen_length=48).sequences
    assert not torch.equal(runs[0], other)  # 96 tokens drawn at temperature 1: a repeat is vanishingly unlikely


def test_infill_fills_the_holes_and_keeps_the_rest(demo, fresh_seed):
    model, tokenizer = demo
    canvas = tokenizer("the file is [MASK] [MASK] [MASK] [MASK] when the system starts.", return_tensors="pt")["input_ids"]
    holes = canvas == tokenizer.mask_token_id
    assert int(holes.sum()) == 4
    out = Sampler(model, tokenizer.mask_token_id, seed=fresh_seed, temperature=1.0).infill(canvas)
    assert torch.equal(out.sequences[~holes], canvas[~holes])
    assert not (out.sequences == tokenizer.mask_token_id).any()
    assert out.nfe == 4


def test_training_record_matches_the_shipped_weights():
    import hashlib

    info = json.loads((DEMO_MODEL_DIR / "training.json").read_text())
    assert info["weights_sha256"] == hashlib.sha256((DEMO_MODEL_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert info["steps_done"] == info["settings"]["steps"]


def test_sampler_from_pretrained_defaults_to_the_demo_model(fresh_seed):
    sampler = Sampler.from_pretrained(device="cpu", steps=6, unmask="entropy", seed=fresh_seed)
    tokenizer = sampler.tokenizer
    assert sampler.mask_token_id == tokenizer.mask_token_id
    assert sampler.config.steps == 6 and sampler.config.unmask == "entropy"
    prompt = _prompt(tokenizer)
    out = sampler.generate(prompt, gen_length=12)
    assert out.nfe == 6 and not (out.sequences == tokenizer.mask_token_id).any()
    assert tokenizer.decode(out.sequences[0], skip_special_tokens=True).startswith("the configuration file")


def test_sampler_from_pretrained_passes_sampler_arguments_and_rejects_bad_paths(tmp_path):
    sampler = Sampler.from_pretrained(DEMO_MODEL_DIR, device="cpu", backend="torch", masked_head=False)
    assert sampler.backend == "torch" and not sampler.masked_head
    with pytest.raises(ValueError, match="path"):
        Sampler.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="backend"):
        Sampler.from_pretrained(device="cpu", backend="cuda")


def test_greedy_infill_of_the_demo_template_is_the_known_answer():
    """The command-line demo's hole, filled greedily: the same tokens on every machine (a check that
    the shipped weights, tokenizer and greedy path stay what the README shows)."""
    from fastdiff import cli

    sampler = Sampler.from_pretrained(device="cpu")
    tokenizer = sampler.tokenizer
    template = cli.encode_input(cli.DEMO_TEMPLATE, tokenizer, tokenizer.mask_token_id)
    out = sampler.infill(torch.tensor([template.ids]), temperature=0.0)
    fills = [tokenizer.decode(out.sequences[0, start:end]) for start, end in template.holes]
    assert fills == ["copy", "kernel"]


def test_demo_command_settings_write_varied_text(demo):
    """The demo command's sampler settings (``margin``) against ``confidence``, which makes this model
    repeat itself: over a few prompts, most of the demo's word pairs are distinct and "the" is not a
    fifth of its words, and confidence repeats more."""
    from fastdiff import cli

    model, tokenizer = demo
    prompts = ["The package manager", "The kernel", "To install the package,", "The file system"]

    def words(**settings):
        sampler = Sampler(model, tokenizer.mask_token_id, tokenizer=tokenizer, steps=24, seed=0, **settings)
        return [re.findall(r"[a-z]+", text) for text in sampler.generate(prompts, max_new_tokens=48).texts]

    def distinct_pairs(rows):
        pairs = [pair for row in rows for pair in zip(row, row[1:])]
        return len(set(pairs)) / len(pairs)

    demo_rows = words(**cli.DEMO_SAMPLER)
    confident = words(**{**cli.DEMO_SAMPLER, "unmask": "confidence", "block_length": None})
    flat = [w for row in demo_rows for w in row]
    assert distinct_pairs(demo_rows) >= 0.6 and flat.count("the") / len(flat) < 0.2, demo_rows
    assert distinct_pairs(demo_rows) > distinct_pairs(confident) + 0.1, (demo_rows, confident)
