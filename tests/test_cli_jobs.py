"""``fastdiff generate --input FILE --output FILE``: text and JSONL inputs, results in input order with
their ids, per-line errors that do not stop the job, and results that do not depend on batching."""
import io
import json

from fastdiff import Sampler, cli

ARGS = ["--steps", "4", "--seed", "7", "--temperature", "0.5", "-q"]


def _main(capsys, argv):
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _lines(text):
    return [json.loads(line) for line in text.splitlines()]


def test_a_text_file_gives_one_result_per_prompt_in_order(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("import os\n\ndef area(w, h):\nclass Stack:\n")
    code, out, err = _main(capsys, ["generate", "--input", prompts, "--gen-length", 6, *ARGS])
    assert code == 0, err
    results = _lines(out)
    assert [r["id"] for r in results] == [1, 3, 4] and [r["prompt"] for r in results][1] == "def area(w, h):"
    # each result is the prompt generated alone, with the seed of its line
    sampler = Sampler.from_pretrained(device="cpu", steps=4, temperature=0.5)
    for result in results:
        ids = cli.encode_input(result["prompt"], sampler.tokenizer, sampler.mask_token_id).ids
        alone = sampler.generate([ids], max_new_tokens=6, seed=7 + result["id"] - 1)
        assert result["text"] == alone.texts[0] and result["seed"] == 7 + result["id"] - 1


def test_results_do_not_depend_on_the_batch_size_and_stdin_works(tmp_path, capsys, monkeypatch):
    prompts = "".join(f"x{i} = {i}\n" for i in range(5))
    path = tmp_path / "p.txt"
    path.write_text(prompts)
    outputs = []
    for size in (1, 2, 8):
        code, _, err = _main(capsys, ["generate", "--input", path, "--output", tmp_path / f"{size}.jsonl",
                                      "--batch-size", size, "--gen-length", 5, *ARGS])
        assert code == 0, err
        outputs.append((tmp_path / f"{size}.jsonl").read_text())
    assert outputs[0] == outputs[1] == outputs[2] and len(_lines(outputs[0])) == 5
    monkeypatch.setattr("sys.stdin", io.StringIO(prompts))
    code, out, _ = _main(capsys, ["generate", "--input", "-", "--gen-length", 5, *ARGS])
    assert code == 0 and out == outputs[0]


def test_jsonl_lines_carry_ids_and_options_and_bad_lines_get_an_error(tmp_path, capsys):
    lines = [
        {"id": "short", "prompt": "import os\n", "max_new_tokens": 3},
        {"id": "hole", "prompt": "def f(x):\n    return [MASK*2]\n", "temperature": 0},
        "{not json",
        {"id": "bad", "prompt": "x = 1\n", "temperature": -1},
        {"id": "unknown", "prompt": "x = 1\n", "colour": "red"},
        {"prompt": ""},
        {"id": 9, "prompt": "y = 2\n", "seed": 123},
        {"id": "long", "prompt": "x = 1\n" * 400},  # too long for the model: fails alone, not its batch
        {"id": "after", "prompt": "z = 3\n", "seed": [1, 2]},
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    code, out, err = _main(capsys, ["generate", "--input", path, "--gen-length", 4, "--steps", 4, "--seed", 0])
    assert code == 1 and "3 of 9 prompts" in err and "6 with an error" in err
    results = _lines(out)
    assert [r["id"] for r in results] == ["short", "hole", 3, "bad", "unknown", 6, 9, "long", "after"]
    assert [("error" in r) for r in results] == [False, False, True, True, True, True, False, True, True]
    assert "prompt" in results[7]["error"] and "seed" in results[8]["error"]
    assert "not JSON" in results[2]["error"] and "temperature" in results[3]["error"]
    assert "colour" in results[4]["error"] and "prompt" in results[5]["error"]
    assert len(results[1]["fills"]) == 1 and results[6]["seed"] == 123
    # the line's max_new_tokens (3, not --gen-length 4): three WordPiece tokens make at most three words
    # (re-encoding the text is no count: a leading "##s" decodes to the literal "##s")
    assert 1 <= len(results[0]["text"].split()) <= 3


def test_flags_that_need_one_text_are_refused_with_input(tmp_path, capsys):
    path = tmp_path / "p.txt"
    path.write_text("a\n")
    for extra in (["--json"], ["--batch", "2"], ["some text"], ["--seed", "1,2"]):
        code, _, err = _main(capsys, ["generate", "--input", path, *extra])
        assert code == 2 and err.count("\n") == 1 and "error" in err
    code, _, err = _main(capsys, ["generate", "--input", tmp_path / "missing.txt"])
    assert code == 2 and "No such file" in err
