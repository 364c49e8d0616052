"""The diffusion training recipe (fastdiff.training) and its corpus helper (fastdiff.training.corpus), on
tiny models and a small synthetic corpus: masking rules, loss going down, bit-exact resume, export."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiff.training import corpus, loop
from fastdiff.training.cli import main
from fastdiff.training.collator import IGNORE_INDEX, DiffusionCollator
from fastdiff.training.config import TrainConfig, learning_rate_at
from fastdiff.training.data import PreparedData, batch_window_indices, prepare, window_starts, windows
from fastdiff.training.export import export
from fastdiff.training.losses import diffusion_loss
from fastdiff.training.models import build_model
from fastdiff.training.records import LOG

MASK, SPECIALS = 4, (0, 1, 2, 3)


# ------------------------------------------------------------------------------------------------
# the collator
# ------------------------------------------------------------------------------------------------
def _random_batch(g, B=64, L=40, vocab=50):
    ids = torch.randint(5, vocab, (B, L), generator=g)
    ids[:, 0] = 0
    sprinkled = torch.rand(B, L, generator=g) < 0.1
    ids[sprinkled] = torch.randint(0, 4, (int(sprinkled.sum()),), generator=g)
    return ids


def test_collator_never_masks_prefix_specials_or_padding(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    ids = _random_batch(g)
    attention = torch.ones_like(ids)
    attention[:5, -7:] = 0
    original = ids.clone()
    collator = DiffusionCollator(MASK, SPECIALS, mask_ratio=(0.5, 1.0), prefix_length=6)
    for _ in range(20):
        batch = collator(ids, generator=g, attention_mask=attention)
        masked = batch["input_ids"] == MASK
        assert torch.equal(ids, original)  # the caller's tensor is untouched
        assert not masked[:, :6].any()
        assert not (masked & torch.isin(ids, torch.tensor(SPECIALS))).any()
        assert not (masked & (attention == 0)).any()
        assert torch.equal(batch["input_ids"][~masked], ids[~masked])
        assert torch.equal(batch["labels"][masked], ids[masked])
        assert (batch["labels"][~masked] == IGNORE_INDEX).all()


def test_collator_masks_round_ratio_times_maskable_per_row(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    ids = _random_batch(g)
    collator = DiffusionCollator(MASK, SPECIALS, mask_ratio=(0.1, 1.0), prefix_length=3)
    for _ in range(20):
        batch = collator(ids, generator=g)
        maskable = ~torch.isin(ids, torch.tensor(SPECIALS))
        maskable[:, :3] = False
        n = maskable.sum(dim=1).double()
        expected = torch.round(batch["mask_ratio"] * n).clamp(min=1)
        assert torch.equal((batch["input_ids"] == MASK).sum(dim=1).double(), expected)


def test_collator_ratio_is_uniform_over_the_requested_range(fresh_seed):
    """Kolmogorov-Smirnov against U(0.3, 0.7) on the realised fraction of masked positions."""
    g = torch.Generator().manual_seed(fresh_seed)
    ids = torch.randint(5, 50, (1, 1000), generator=g)
    collator = DiffusionCollator(MASK, SPECIALS, mask_ratio=(0.3, 0.7))
    fractions = sorted(float((collator(ids, generator=g)["input_ids"] == MASK).float().mean()) for _ in range(500))
    assert 0.3 - 1e-3 <= fractions[0] and fractions[-1] <= 0.7 + 1e-3
    n = len(fractions)
    cdf = [min(max((f - 0.3) / 0.4, 0.0), 1.0) for f in fractions]
    distance = max(max((i + 1) / n - c, c - i / n) for i, c in enumerate(cdf))
    assert distance < 1.95 / math.sqrt(n), distance  # alpha = 0.001


def test_collator_ratio_schedule_is_used_in_turn(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    ids = torch.randint(5, 50, (2, 100), generator=g)
    collator = DiffusionCollator(MASK, SPECIALS, ratio_schedule=(1.0, 0.5, 0.2))
    counts = [int((collator(ids, generator=g, step=s)["input_ids"] == MASK).sum()) for s in range(6)]
    assert counts == [200, 100, 40] * 2


def test_collator_random_prefix_lengths_cover_their_range(fresh_seed):
    """At ratio 1 every maskable position past the row's prefix is masked, so the first masked
    position of a row is its drawn prefix length: always in range, and every value drawn."""
    g = torch.Generator().manual_seed(fresh_seed)
    ids = torch.randint(5, 50, (400, 30), generator=g)
    collator = DiffusionCollator(MASK, SPECIALS, ratio_schedule=(1.0,), prefix_length=(4, 9))
    masked = collator(ids, generator=g)["input_ids"] == MASK
    first = masked.int().argmax(dim=1)
    assert all(bool(masked[r, first[r]:].all()) for r in range(len(ids)))
    assert set(first.tolist()) == set(range(4, 10))


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(mask_ratio=(0.0, 1.0)), ValueError, "mask_ratio"),
    (dict(mask_ratio=(0.9, 0.2)), ValueError, "mask_ratio"),
    (dict(mask_ratio=0.5), TypeError, "mask_ratio"),
    (dict(ratio_schedule=(0.5, 1.5)), ValueError, "ratio_schedule"),
    (dict(ratio_schedule=()), ValueError, "ratio_schedule"),
    (dict(prefix_length=-1), ValueError, "prefix_length"),
    (dict(prefix_length=(5, 2)), ValueError, "prefix_length"),
    (dict(prefix_length=2.5), TypeError, "prefix_length"),
])
def test_collator_rejects_bad_options(kwargs, error, name):
    with pytest.raises(error, match=name):
        DiffusionCollator(MASK, SPECIALS, **kwargs)


# ------------------------------------------------------------------------------------------------
# corpus helper
# ------------------------------------------------------------------------------------------------
def test_split_depends_on_each_path_only(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    names = [f"pkg{int(i)}/mod{j}.py" for j, i in enumerate(torch.randint(0, 50, (400,), generator=g))]
    train, heldout = corpus.split_files(names, heldout_percent=10)
    assert sorted(train + heldout) == sorted(names) and not set(train) & set(heldout)
    assert 10 <= len(heldout) <= 80  # 10 % of 400 in expectation
    shuffled = [names[i] for i in torch.randperm(len(names), generator=g)]
    subset_train, subset_heldout = corpus.split_files(shuffled[:200], heldout_percent=10)
    assert set(subset_heldout) == set(heldout) & set(shuffled[:200])
    assert set(subset_train) == set(train) & set(shuffled[:200])


def test_stdlib_files_leave_out_tests_and_generated_tables():
    files = corpus.source_files()
    assert "os.py" in files and "json/decoder.py" in files
    assert not any(part in corpus.EXCLUDED_PARTS for f in files for part in f.split("/"))
    assert files == sorted(files)


# ------------------------------------------------------------------------------------------------
# training runs on a tiny synthetic corpus
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A small .py corpus with learnable structure, prepared (tokenizer trained, streams written)."""
    source = tmp_path_factory.mktemp("source")
    for f in range(40):
        lines = [f"class Shape{f}:"]
        for k in range(12):
            lines += [f"    def area_{k}(self, width, height):", f"        return width * height + {k}", ""]
        (source / f"shape_{f}.py").write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("data")
    prepare(out, source=source, heldout_percent=20, vocab_size=300)
    return out


def _tiny_config(data, out, **kwargs):
    options = dict(data=str(data), output_dir=str(out), hidden_size=32, num_layers=1, num_heads=2,
                   intermediate_size=64, seq_length=32, batch_size=8, steps=30, learning_rate=3e-3,
                   warmup_steps=5, log_every=5, eval_every=30, eval_windows=8, save_every=100, threads=1,
                   progress=False, prefix_length=(0, 8))
    options.update(kwargs)
    return TrainConfig(**options)


def _log(run):
    return [json.loads(line) for line in (run / LOG).read_text().splitlines()]


def test_prepare_writes_split_tokenizer_and_streams(tiny_data):
    data = PreparedData.load(tiny_data)
    manifest = data.manifest
    assert manifest["train_files"] and manifest["heldout_files"]
    assert not set(manifest["train_files"]) & set(manifest["heldout_files"])
    assert data.tokenizer.mask_token_id == 4 and data.tokenizer.pad_token_id == 1
    assert int((data.train.ids == data.tokenizer.eos_token_id).sum()) == len(manifest["train_files"])
    text = data.tokenizer.decode(data.train.ids[:40].tolist())
    assert text.startswith("class Shape")
    # every recorded line start is the first token of a line
    starts = data.train.line_starts[1:50]
    before = [data.tokenizer.decode([int(data.train.ids[s - 1])]) for s in starts]
    assert all(piece.endswith("\n") or piece == "</s>" for piece in before)


@pytest.mark.parametrize("objective,architecture", [("diffusion", "modernbert"), ("diffusion", "roberta"),
                                                     ("causal", "gpt2")])
def test_training_a_tiny_model_lowers_the_loss(tiny_data, tmp_path, fresh_seed, objective, architecture):
    config = _tiny_config(tiny_data, tmp_path / "run", seed=fresh_seed % 1000, objective=objective,
                          architecture=architecture)
    data = PreparedData.load(tiny_data)
    torch.manual_seed(0)
    initial = loop.evaluate(build_model(config, data.tokenizer), config, data)
    result = loop.train(config)
    assert result["finished"] and result["step"] == 30
    log = _log(tmp_path / "run")
    losses = [r["loss"] for r in log if "loss" in r]
    final_eval = [r["eval_loss"] for r in log if "eval_loss" in r][-1]
    assert losses[-1] < 0.7 * losses[0], losses
    assert final_eval < 0.7 * initial, (initial, final_eval)


@pytest.mark.parametrize("architecture", ["modernbert", "roberta"])
def test_diffusion_loss_is_the_cross_entropy_of_the_whole_model(tiny_data, fresh_seed, architecture):
    """The loss runs the LM head on the masked rows only; it must equal the full model's."""
    data = PreparedData.load(tiny_data)
    config = _tiny_config(tiny_data, "unused", architecture=architecture, seed=fresh_seed % 1000)
    model = build_model(config, data.tokenizer).eval()
    g = torch.Generator().manual_seed(fresh_seed)
    starts = window_starts(data.train, 32)[:4]
    batch = DiffusionCollator.from_tokenizer(data.tokenizer)(
        windows(data.train, starts, data.tokenizer.bos_token_id, 32), generator=g)
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"]).logits
        expected = torch.nn.functional.cross_entropy(full.flatten(0, 1), batch["labels"].flatten())
        assert torch.allclose(diffusion_loss(model, batch["input_ids"], batch["labels"]), expected,
                              rtol=1e-5, atol=1e-5)


def _weights(run):
    from safetensors.torch import load_file

    return (load_file(str(run / "checkpoint" / "model.safetensors")),
            load_file(str(run / "checkpoint" / "optimizer.safetensors")))


def test_resume_continues_bit_exactly(tiny_data, tmp_path, fresh_seed):
    seed = fresh_seed % 1000
    whole = _tiny_config(tiny_data, tmp_path / "whole", steps=12, seed=seed, log_every=1, dropout=0.1)
    assert loop.train(whole)["finished"]
    pieces = _tiny_config(tiny_data, tmp_path / "pieces", steps=12, seed=seed, log_every=1, dropout=0.1)
    first = loop.train(dataclass_replace(pieces, stop_at_step=5))
    assert first == {"step": 5, "finished": False, "loss": first["loss"]}
    assert loop.train(pieces)["finished"]
    for a, b in zip(_weights(tmp_path / "whole"), _weights(tmp_path / "pieces")):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda run: [r["loss"] for r in _log(run) if "loss" in r]  # noqa: E731
    assert losses(tmp_path / "whole") == losses(tmp_path / "pieces")
    starts = [r for r in _log(tmp_path / "pieces") if r.get("event") == "piece_start"]
    assert [(r["piece"], r["step"]) for r in starts] == [(1, 0), (2, 5)]


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_a_run_refuses_other_settings(tiny_data, tmp_path):
    loop.train(_tiny_config(tiny_data, tmp_path / "run", steps=2))
    with pytest.raises(ValueError, match="learning_rate"):
        loop.train(_tiny_config(tiny_data, tmp_path / "run", steps=2, learning_rate=1e-2))


def test_export_writes_a_standard_offline_model_directory(tiny_data, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from fastdiff.pretrained import load_pretrained

    loop.train(_tiny_config(tiny_data, tmp_path / "run", steps=3))
    info = export(tmp_path / "run", tmp_path / "model")
    assert [p.name for p in (tmp_path / "model").glob("*.safetensors")] == ["model.safetensors"]
    assert info["steps_done"] == 3
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "model", local_files_only=True)
    assert next(model.parameters()).dtype == torch.float16
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model", local_files_only=True)
    assert tokenizer.model_max_length == 32
    loaded, _ = load_pretrained(tmp_path / "model", device="cpu")
    assert next(loaded.parameters()).dtype == torch.float32


def test_architecture_must_fit_the_objective(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        _tiny_config(tiny_data, tmp_path, objective="causal", architecture="roberta").validate()


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(data="", output_dir="", steps=100, warmup_steps=10, learning_rate=1.0,
                                min_lr_ratio=0.1)
    rates = [learning_rate_at(config, s) for s in range(100)]
    assert rates[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_batches_visit_every_window_once_per_epoch(fresh_seed):
    n, batch = 37, 5
    steps = [batch_window_indices(s, batch, n, fresh_seed) for s in range(2 * n)]
    flat = torch.cat(steps).tolist()
    assert sorted(flat[:n]) == list(range(n)) and sorted(flat[n:2 * n]) == list(range(n))
    assert torch.equal(batch_window_indices(3, batch, n, fresh_seed), steps[3])


def test_help_documents_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("prepare", "fit", "export", "mask ratio", "--max-minutes"):
        assert word in text
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--prefix-length" in capsys.readouterr().out


def test_resume_survives_crashes_and_a_moved_run(tiny_data, tmp_path, fresh_seed):
    seed = fresh_seed % 1000
    whole = _tiny_config(tiny_data, tmp_path / "whole", steps=9, seed=seed, log_every=1)
    loop.train(whole)
    run = tmp_path / "pieces"
    pieces = _tiny_config(tiny_data, run, steps=9, seed=seed, log_every=1)
    loop.train(dataclass_replace(pieces, stop_at_step=3))
    with open(run / LOG, "a") as log:  # a crash in the middle of a log line
        log.write('{"step": 4, "lo')
    loop.train(dataclass_replace(pieces, stop_at_step=6))
    # a crash after the new checkpoint's rename, before the link moved: the link is gone
    assert (run / "checkpoint").is_symlink() and (run / "checkpoint-6" / "state.json").is_file()
    (run / "checkpoint").unlink()
    (run / "checkpoint-6.tmp").mkdir()  # and a save that never finished
    moved = tmp_path / "moved"
    run.rename(moved)
    assert loop.train(dataclass_replace(pieces, output_dir=str(moved)))["finished"]
    for a, b in zip(_weights(tmp_path / "whole"), _weights(moved)):
        assert all(torch.equal(a[k], b[k]) for k in a)
    starts = [(r["piece"], r["step"]) for r in _log(moved) if r.get("event") == "piece_start"]
    assert starts == [(1, 0), (2, 3), (3, 6)]
    assert sorted(p.name for p in moved.glob("checkpoint*")) == ["checkpoint", "checkpoint-9"]


def test_bad_settings_write_nothing_and_bad_files_name_themselves(tiny_data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="learning_rate"):
        loop.train(_tiny_config(tiny_data, run, learning_rate=float("nan")))
    assert not run.exists()
    loop.train(_tiny_config(tiny_data, run, steps=2))  # the corrected command, same output_dir
    with pytest.raises(ValueError, match="lacks"):
        loop.train(_tiny_config(tmp_path / "no-data", tmp_path / "other"))
    (run / "checkpoint" / "state.json").write_text("{step")
    with pytest.raises(ValueError, match="checkpoint .* is unreadable"):
        loop.train(_tiny_config(tiny_data, run, steps=2))
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ValueError, match="not writable"):
        loop.train(_tiny_config(tiny_data, blocked / "run"))


def test_python_m_fastdiff_training_runs_the_command_line():
    result = subprocess.run([sys.executable, "-m", "fastdiff.training", "--help"], check=True, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.startswith("usage: python -m fastdiff.training") and "prepare" in result.stdout


def test_cli_reports_bad_settings_in_one_line(tiny_data, tmp_path, capsys):
    code = main(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--learning-rate", "nan",
                        "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "learning_rate" in err[0]
