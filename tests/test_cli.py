"""The ``fastdiff`` command line: every command on a tiny random model saved to a temporary directory
(safetensors weights and a WordPiece tokenizer trained offline), its errors and exit codes, and once
through a real process for ``python -m fastdiff`` and the console script."""
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiff import SamplerConfig, cli

SENTENCES = [
    "the cat sat on the mat and looked at the moon",
    "once upon a time there was a little dog",
    "the quick brown fox jumps over the lazy dog",
    "a bird sang in the garden while the sun was shining",
    "running jumping singing walking talking",
]
PROMPT = "the cat sat on"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(SENTENCES * 3, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials,
                                                                      show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def _byte_bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES * 3, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", mask_token="<mask>")


@pytest.fixture(scope="module")
def byte_bpe():
    return _byte_bpe_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A RoBERTa masked LM (random weights) and a WordPiece tokenizer in a directory."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    path = tmp_path_factory.mktemp("tiny_model")
    tokenizer = _wordpiece_tokenizer()
    tokenizer.save_pretrained(path)
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"model seed={seed}")
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id)
    RobertaForMaskedLM(config).eval().save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return path


def _run(capsys, argv):
    capsys.readouterr()  # drop what the fixtures printed
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _generate_json(capsys, model_dir, *extra):
    code, out, err = _run(capsys, ["generate", "--model", model_dir, "--json", "-q", *extra])
    assert code == 0, err
    return json.loads(out)


def _tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


# ----------------------------------------------------------------------------------------------
# help and flags
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["demo"], ["generate"], ["trace"], ["bench"]])
def test_every_command_has_help(capsys, command):
    code, out, err = _run(capsys, command + ["--help"])
    assert code == 0 and err == ""
    assert out.startswith("usage: fastdiff")
    if command == ["bench"]:
        assert out.startswith("usage: fastdiff bench") and "--dry-run" in out  # the suite's own help


def test_every_sampler_option_is_a_flag_helped_by_its_field_metadata(capsys):
    fields = dataclasses.fields(SamplerConfig)
    assert {f.name for f in fields} <= set(vars(cli.build_parser().parse_args(["generate", "x"])))
    code, help_text, _ = _run(capsys, ["generate", "--help"])
    flat = " ".join(help_text.split())
    for f in fields:
        assert "--" + f.name.replace("_", "-") in help_text
        first_words = " ".join(f.metadata["help"].replace("``", "").split()[:6]).rstrip(".")
        assert first_words in flat, f.name
        assert f"{f.name}: " in SamplerConfig.__doc__  # the docstring's Attributes come from the same text
    assert "--on-step" not in help_text and "--logits-hook" not in help_text


# a valid, non-default command-line value for each SamplerConfig option
FLAG_VALUES = {
    "steps": (["--steps", "7"], 7), "schedule": (["--schedule", "cosine"], "cosine"),
    "unmask": (["--unmask", "margin"], "margin"), "threshold": (["--threshold", "0.5"], 0.5),
    "position_temperature": (["--position-temperature", "0.5"], 0.5),
    "temperature": (["--temperature", "0.7"], 0.7), "score_temperature": (["--score-temperature", "1.0"], 1.0),
    "top_k": (["--top-k", "5"], 5), "top_p": (["--top-p", "0.9"], 0.9), "block_length": (["--block-length", "4"], 4),
    "remask": (["--remask", "low_confidence"], "low_confidence"), "remask_ratio": (["--remask-ratio", "0.5"], 0.5),
    "remask_temperature": (["--remask-temperature", "0.1"], 0.1), "cfg_scale": (["--cfg-scale", "1.5"], 1.5),
    "logits_shift": (["--logits-shift"], True), "eos_token_id": (["--eos-token-id", "2,3"], (2, 3)),
    "stop_at_eos": (["--no-stop-at-eos"], False), "suppress_token_ids": (["--suppress-token-ids", "5,6"], (5, 6)),
    "defer_token_ids": (["--defer-token-ids", "7"], (7,)), "seed": (["--seed", "11"], 11),
    "return_history": (["--return-history"], True),
}


def test_flags_reach_the_sampler_config():
    argv = ["generate", "x"] + [token for flag, _ in FLAG_VALUES.values() for token in flag]
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    for name, (_, value) in FLAG_VALUES.items():
        assert getattr(config, name) == value, name
    untouched = cli.config_from_args(cli.build_parser().parse_args(["generate", "x"]))
    defaults = SamplerConfig()
    for f in cli.sampler_fields():
        if f.name != "seed":  # drawn by the CLI so that it can be reported
            assert getattr(untouched, f.name) == getattr(defaults, f.name), f.name
    assert isinstance(untouched.seed, int)


# ----------------------------------------------------------------------------------------------
# input encoding
# ----------------------------------------------------------------------------------------------
def test_encode_template_with_byte_level_bpe(byte_bpe):
    tokenizer = byte_bpe
    mask = tokenizer.mask_token_id
    encoded = cli.encode_input("the cat [MASK*3] on the [MASK].", tokenizer, mask)
    tokens = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    expected = ([tokenizer.bos_token_id] + tokens("the cat") + [mask] * 3 + tokens(" on the") + [mask]
                + tokens(".") + [tokenizer.eos_token_id])
    assert encoded.ids == expected and encoded.is_template
    first = 1 + len(tokens("the cat"))
    second = first + 3 + len(tokens(" on the"))
    assert encoded.holes == [(first, first + 3), (second, second + 1)]
    prompt = cli.encode_input("the cat", tokenizer, mask, special_tokens=False)
    assert prompt.ids == tokens("the cat") and not prompt.is_template and prompt.holes == []


def test_encode_template_holes(byte_bpe):
    tokenizer = byte_bpe
    mask = tokenizer.mask_token_id
    encoded = cli.encode_input("[MASK*2] sat [MASK]", tokenizer, mask, special_tokens=False)
    sat = tokenizer(" sat", add_special_tokens=False)["input_ids"]
    assert encoded.ids == [mask, mask] + sat + [mask]
    assert encoded.holes == [(0, 2), (2 + len(sat), 3 + len(sat))]
    with pytest.raises(cli.CLIError, match=r"\[MASK\*0\]"):
        cli.encode_input("a [MASK*0] b", tokenizer, mask)
    with pytest.raises(cli.CLIError, match="empty"):
        cli.encode_input("", tokenizer, mask, special_tokens=False)


@pytest.mark.parametrize("kind", ["byte-level BPE", "WordPiece"])
def test_token_texts_join_into_the_decoded_text(byte_bpe, kind):
    tokenizer = byte_bpe if kind == "byte-level BPE" else _wordpiece_tokenizer()
    text = "the cat was running over the lazy dog"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    token_text = cli.token_text_fn(tokenizer)
    pieces = [token_text(i) for i in ids]
    assert "".join(pieces).strip() == tokenizer.decode(ids).strip() == text
    assert any(p.startswith(" ") for p in pieces[1:])  # word-initial tokens keep their space


# ----------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------
def test_generate_prints_text(capsys, model_dir, fresh_seed):
    code, out, err = _run(capsys, ["generate", "--model", model_dir, PROMPT, "--gen-length", 8, "--steps", 4,
                                   "--seed", fresh_seed, "--temperature", 1])
    assert code == 0, err
    assert out.startswith(PROMPT) and out.count("\n") == 1
    summary = err.strip().splitlines()[-1]
    assert f"1 x 8 tokens in 4 steps" in summary and f"seed {fresh_seed}" in summary


def test_generate_json_is_replayable(capsys, model_dir, fresh_seed):
    tokenizer = _tokenizer(model_dir)
    args = [PROMPT, "--gen-length", 10, "--steps", 5, "--seed", fresh_seed, "--temperature", 1.0, "--batch", 2]
    result = _generate_json(capsys, model_dir, *args)
    prompt_ids = [tokenizer.cls_token_id] + tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert result["mode"] == "generate" and result["nfe"] == 5 and len(result["samples"]) == 2
    assert result["config"]["seed"] == fresh_seed and result["config"]["temperature"] == 1.0
    for sample in result["samples"]:
        ids = sample["token_ids"]
        assert ids[:len(prompt_ids)] == prompt_ids and len(ids) == len(prompt_ids) + 10
        assert tokenizer.mask_token_id not in ids
        assert sample["completion"] == tokenizer.decode(ids[len(prompt_ids):], skip_special_tokens=True)
        assert sample["text"] == tokenizer.decode(ids, skip_special_tokens=True)
    assert _generate_json(capsys, model_dir, *args)["samples"] == result["samples"]


def test_generate_infill_template(capsys, model_dir, fresh_seed):
    tokenizer = _tokenizer(model_dir)
    result = _generate_json(capsys, model_dir, "the [MASK*3] sat on the [MASK]", "--seed", fresh_seed,
                            "--return-history")
    tokens = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    template = ([tokenizer.cls_token_id] + tokens("the") + [None] * 3 + tokens("sat on the") + [None]
                + [tokenizer.sep_token_id])
    sample, = result["samples"]
    ids = sample["token_ids"]
    assert result["mode"] == "infill" and result["nfe"] == 4 and len(ids) == len(template)
    assert all(t is None or t == i for t, i in zip(template, ids))
    holes = [i for i, t in enumerate(template) if t is None]
    assert tokenizer.mask_token_id not in ids
    assert sample["fills"] == [tokenizer.decode(ids[holes[0]:holes[0] + 3], skip_special_tokens=True),
                               tokenizer.decode([ids[holes[-1]]], skip_special_tokens=True)]
    history = sample["history"]
    assert len(history) == 4 and history[-1] == ids
    assert [sum(t == tokenizer.mask_token_id for t in canvas) for canvas in history] == [3, 2, 1, 0]


def test_generate_batch_prints_every_sample(capsys, model_dir):
    code, out, err = _run(capsys, ["generate", "--model", model_dir, PROMPT, "--gen-length", 4, "--batch", 3, "-q"])
    assert code == 0, err
    assert err == ""
    assert [line for line in out.splitlines() if line.startswith("---")] == [
        f"--- sample {i}/3 ---" for i in (1, 2, 3)]


def test_generate_reads_standard_input(capsys, monkeypatch, model_dir):
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT + "\n"))
    code, out, err = _run(capsys, ["generate", "--model", model_dir, "-", "--gen-length", 4, "-q"])
    assert code == 0, err
    assert out.startswith(PROMPT)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_counts_the_steps(capsys, monkeypatch, model_dir):
    import tqdm

    bars = []

    class RecordedBar(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.shown = not self.disable  # close() disables the bar
            bars.append(self)

    monkeypatch.setattr(tqdm, "tqdm", RecordedBar)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code, out, _ = _run(capsys, ["generate", "--model", model_dir, PROMPT, "--gen-length", 12, "--steps", 6])
    assert code == 0
    bar, = [b for b in bars if b.desc == "denoising"]
    assert bar.total == 6 and bar.n == 6 and bar.shown
    assert "denoising" in terminal.getvalue()
    bars.clear()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    code, out, _ = _run(capsys, ["generate", "--model", model_dir, PROMPT, "--gen-length", 12, "--steps", 6, "-q"])
    assert code == 0 and quiet.getvalue() == ""
    assert bars and not any(b.shown for b in bars)


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
def _error_cases(model_dir, tmp_path):
    m = ["--model", str(model_dir)]
    return [
        (["generate", "--model", str(tmp_path / "missing"), "x"], f"--model {tmp_path / 'missing'}: no such directory", 2),
        (["generate", "--model", str(tmp_path), "x"], "no config.json", 2),
        (["generate", *m, "x", "--temperature", "-1"], "temperature must be >= 0", 2),
        (["generate", *m, "x", "--unmask", "best"], "unmask must be one of", 2),
        (["generate", *m, "x", "--temperature", "hot"], "argument --temperature: invalid float value: 'hot'", 2),
        (["generate", *m, "x", "--bogus"], "unrecognized arguments: --bogus", 2),
        (["generate", *m, "x", "--dtype", "float8"], "argument --dtype: invalid choice: 'float8'", 2),
        (["generate", *m, "x", "--eos-token-id", "2,x"], "expected comma-separated ints", 2),
        (["generate", *m, "a [MASK] b", "--gen-length", "3"], "--gen-length is for prompts", 2),
        (["generate", *m, "a [MASK*0] b"], "[MASK*0]: a hole needs at least one token", 2),
        (["generate", *m, "x", "--gen-length", "500"], "exceeds the model's", 2),
        (["generate", *m, "x", "--steps", "2", "--block-length", "2", "--gen-length", "8"], "cannot cover 4 blocks", 2),
        (["generate", *m, "x", "--batch", "0"], "--batch must be >= 1", 2),
        (["generate", *m, "x", "--device", "warp-drive"], "--device warp-drive: not a torch device", 2),
        (["trace", *m, "x", "-o", str(tmp_path / "trace.png")], "unknown format '.png'", 2),
        (["trace", *m, "x", "-o", str(tmp_path / "nowhere" / "t.gif")], "no such directory", 2),
        (["trace", *m, "x", "--width", "0"], "--width must be >= 1", 2),
        (["frobnicate"], "invalid choice: 'frobnicate'", 2),
    ]


def test_errors_are_one_line(capsys, model_dir, tmp_path):
    for argv, message, expected_code in _error_cases(model_dir, tmp_path):
        code, out, err = _run(capsys, argv)
        assert code == expected_code, (argv, err)
        assert message in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert err.startswith("fastdiff")


def test_unloadable_model_directory(capsys, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    code, out, err = _run(capsys, ["generate", "--model", tmp_path, "x"])
    assert code == 1
    assert err.startswith(f"fastdiff: error: cannot load a masked LM and tokenizer from {tmp_path}")
    assert err.count("\n") == 1


def test_ctrl_c_exits_cleanly(capsys, monkeypatch, model_dir):
    from fastdiff import Sampler

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Sampler, "generate", interrupted)
    code, out, err = _run(capsys, ["generate", "--model", model_dir, PROMPT, "-q"])
    assert code == 130
    assert err.strip() == "fastdiff: interrupted" and out == ""


# ----------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------
def test_demo_is_the_default_and_runs_the_bundled_model(capsys):
    threads = torch.get_num_threads()
    code, out, err = _run(capsys, ["--steps", 4, "--gen-length", 8, "--seed", 3])
    assert code == 0, err
    assert torch.get_num_threads() == threads
    lines = out.splitlines()
    assert lines[0].startswith("fastdiff demo: the bundled demo model")
    assert re.fullmatch(r"generate: 1 x 8 tokens in 4 steps: [\d.]+ ms \(\d+ tokens/s\)", lines[1])
    assert "\n".join(lines[2:]).startswith(cli.DEMO_PROMPT.lower())  # an uncased model
    infill_line = next(i for i, line in enumerate(lines) if line.startswith("infill:"))
    assert re.fullmatch(r"infill: 2 tokens in 2 steps: [\d.]+ ms \(greedy\)", lines[infill_line])
    filled = "\n".join(lines[infill_line + 1:])
    before, middle, after = re.split(r"\[MASK\]", cli.DEMO_TEMPLATE)
    assert filled.startswith(before.rstrip(" ").lower()) and "[MASK]" not in filled.upper()
    assert after.strip().lower() in filled and middle.strip().lower() in filled
    code, again, _ = _run(capsys, ["--steps", 4, "--gen-length", 8, "--seed", 3])
    assert again.splitlines()[2:infill_line] == lines[2:infill_line]  # same seed, same code


def test_demo_rejects_bad_sizes(capsys):
    code, out, err = _run(capsys, ["demo", "--gen-length", 0])
    assert code == 2 and "--gen-length must be >= 1" in err


def test_generate_without_model_uses_the_bundled_demo_model(capsys):
    code, out, err = _run(capsys, ["generate", "The kernel reads the [MASK*3] file at boot.", "--json", "-q",
                                   "--temperature", "0"])
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == "demo model" and result["mode"] == "infill"
    sample, = result["samples"]
    assert sample["text"].startswith("the kernel reads the") and len(sample["fills"]) == 1
    assert sample["text"].endswith("file at boot.")
    assert 4 not in sample["token_ids"]  # the demo tokenizer's [MASK]


# ----------------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------------
def test_bench_runs_the_suite_with_the_remaining_arguments(capsys, monkeypatch):
    from fastdiff import bench

    def fake_main(argv, parser):
        parser.add_argument("--repeat", type=int, default=1)
        args = parser.parse_args(argv)
        print("| scenario | size | repeat |")
        print("|---|---|---|")
        print(f"| fake | {args.size} | {args.repeat} |")
        return 3 if args.repeat == 3 else 0

    path_before = list(sys.path)
    monkeypatch.setattr(bench, "main", fake_main)
    code, out, err = _run(capsys, ["bench", "--size", "gpu", "--repeat", 3])
    assert code == 3
    assert out.splitlines()[-1] == "| fake | gpu | 3 |"
    code, out, err = _run(capsys, ["bench", "--help"])  # the suite's own help
    assert code == 0 and "usage: fastdiff bench" in out and "--repeat" in out
    code, out, err = _run(capsys, ["bench", "--size", "tpu"])
    assert code == 2 and "invalid choice: 'tpu'" in err
    assert sys.path == path_before


def test_bench_loads_the_real_suite(capsys, tmp_path):
    # fastdiff.bench, imported as a package: --help, a bad flag and a dry run, no timing
    code, out, err = _run(capsys, ["bench", "--help"])
    assert code == 0 and "--dry-run" in out, err
    code, out, err = _run(capsys, ["bench", "--size", "tpu"])
    assert code == 2 and out == ""
    assert err.startswith("fastdiff bench: error: argument --size: invalid choice: 'tpu'") and err.count("\n") == 1
    code, out, err = _run(capsys, ["bench", "--size", "cpu", "--dry-run", "--out", tmp_path])
    assert code == 0 and (tmp_path / "cpu-pending.json").is_file()
    assert out.splitlines()[-1] == f"44 scenarios; wrote {tmp_path / 'cpu-pending.json'}"


def test_bench_needs_no_checkout(capsys, monkeypatch, tmp_path):
    # the suite is part of the package, and its results go to the working directory by default
    from fastdiff import bench

    assert Path(bench.__file__).parent == Path(cli.__file__).parent.parent / "bench"
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["bench", "--size", "gpu", "--dry-run"])
    assert code == 0, err
    assert (tmp_path / "fastdiff-bench-results" / "gpu-pending.json").is_file()


# ----------------------------------------------------------------------------------------------
# trace
# ----------------------------------------------------------------------------------------------
def _html_data(path):
    page = Path(path).read_text(encoding="utf-8")
    match = re.search(r'<script id="trace-data" type="application/json">(.*?)</script>', page, re.S)
    return page, json.loads(match.group(1))


def test_trace_writes_gif_and_html(capsys, model_dir, tmp_path, fresh_seed):
    from PIL import Image

    gif, html = tmp_path / "t.gif", tmp_path / "t.html"
    args = [PROMPT, "--gen-length", 12, "--steps", 5, "--seed", fresh_seed, "--temperature", 1]
    code, out, err = _run(capsys, ["trace", "--model", model_dir, *args, "-o", gif, "-o", html, "-q"])
    assert code == 0, err
    assert out.splitlines() == [f"wrote {gif} (5 frames)", f"wrote {html} (5 steps)"]
    with Image.open(gif) as image:
        assert image.n_frames == 5
    page, data = _html_data(html)
    assert data["steps"] == 5 and len(data["changes"]) == 5
    assert [len(step) for step in data["changes"]] == [3, 3, 2, 2, 2]  # the linear schedule's commits
    assert "http://" not in page and "https://" not in page and " src=" not in page
    # the page's final canvas is what `generate` gives with the same seed
    tokenizer = _tokenizer(model_dir)
    ids = _generate_json(capsys, model_dir, *args)["samples"][0]["token_ids"]
    texts = [data["texts"][index] if index >= 0 else None for index, _ in data["initial"]]
    for step in data["changes"]:
        for position, index, _, _ in step:
            texts[position] = data["texts"][index] if index >= 0 else None
    token_text = cli.token_text_fn(tokenizer)
    assert texts == [token_text(i) for i in ids]


def test_trace_default_outputs(capsys, monkeypatch, model_dir, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["trace", "--model", model_dir, PROMPT, "--gen-length", 4, "--steps", 2, "-q"])
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastdiff-trace.gif", "fastdiff-trace.html"]


def test_trace_in_the_terminal(capsys, monkeypatch, model_dir, tmp_path):
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("LINES", "40")
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["trace", "--model", model_dir, PROMPT, "--gen-length", 6, "--steps", 3,
                                   "--terminal", "--frame-ms", 1, "-q"])
    assert code == 0, err
    assert [int(s) for s in re.findall(r"step (\d+)/3", out)] == [1, 2, 3]
    moves = re.findall(r"\x1b\[(\d+)F", out)  # each later frame redraws over the lines of the one before
    frames = re.split(r"\x1b\[\d+F", out)
    assert len(frames) == 3 and moves == [str(frames[0].count("\n"))] * 2
    assert out.endswith("\x1b[?25h")
    assert list(tmp_path.iterdir()) == []  # --terminal alone writes no file


# ----------------------------------------------------------------------------------------------
# real processes
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_python_dash_m_fastdiff_runs_the_demo():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "fastdiff"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fastdiff demo: the bundled demo model")
    assert re.fullmatch(r"generate: 1 x 48 tokens in 24 steps: [\d.]+ ms \(\d+ tokens/s\)", lines[1])


@pytest.mark.slow
def test_console_script(model_dir, fresh_seed):
    script = Path(sys.executable).parent / "fastdiff"
    if not script.exists():
        pytest.skip("the fastdiff console script is not installed next to this Python (pip install -e .)")
    result = subprocess.run([str(script), "generate", "--model", str(model_dir), PROMPT, "--gen-length", "6",
                             "--json", "--seed", str(fresh_seed)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    sample, = json.loads(result.stdout)["samples"]
    assert sample["text"].startswith(PROMPT)


@pytest.mark.parametrize("argv,message", [
    (["generate", "abc\udcff\udcfe", "-q"], "not valid UTF-8"),  # bytes argv could not decode
    (["generate", "x [MASK*100000000000] y", "-q"], "exceeds the canvas limit"),
    (["generate", "hello", "--eos-token-id", "4", "-q"], "eos_token_id holds mask_token_id=4"),
    (["generate", "hello", "--seed", str(2**64), "-q"], "seed must fit in int64"),
    (["generate", "hello", "--temperature", "inf", "-q"], "temperature must be a finite number"),
])
def test_bad_cli_input_is_one_line(capsys, argv, message):
    code, out, err = _run(capsys, argv)
    assert code != 0 and err.strip().count("\n") == 0 and message in err, err


def test_undecodable_stdin_is_one_line(capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"abc\xff\xfe"), errors="surrogateescape"))
    code, out, err = _run(capsys, ["generate", "-", "-q"])
    assert code != 0 and "not valid UTF-8" in err and err.strip().count("\n") == 0


def test_a_broken_model_directory_is_one_line(capsys, tmp_path):
    import shutil

    from fastdiff.pretrained import DEMO_MODEL_DIR

    broken = tmp_path / "model"
    shutil.copytree(DEMO_MODEL_DIR, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    code, out, err = _run(capsys, ["generate", "hello", "--model", broken, "-q"])
    assert code == 1 and str(broken) in err and err.strip().count("\n") == 0


def test_threads_follow_the_flag_then_the_environment_then_the_physical_cores(monkeypatch):
    from fastdiff.cli.inputs import choose_threads, physical_cores

    before = torch.get_num_threads()
    try:
        assert choose_threads(3) == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(5)
        assert choose_threads(None) == 5  # the user's environment is left to torch
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        assert choose_threads(None) == physical_cores() <= (os.cpu_count() or 1)
        with pytest.raises(cli.CLIError, match="--threads"):
            choose_threads(0)
    finally:
        torch.set_num_threads(before)


def test_physical_cores_count_smt_siblings_once(monkeypatch, tmp_path):
    from fastdiff.cli import inputs

    siblings = {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}  # two cores with two hardware threads each
    monkeypatch.setattr(inputs.os, "sched_getaffinity", lambda pid: set(siblings))
    real_path = inputs.Path

    def fake_path(text):
        cpu = int(text.split("/cpu")[-1].split("/")[0])
        file = tmp_path / f"cpu{cpu}"
        file.write_text(siblings[cpu] + "\n")
        return real_path(file)

    monkeypatch.setattr(inputs, "Path", fake_path)
    assert inputs.physical_cores() == 2
