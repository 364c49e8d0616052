"""The benchmark suite (:mod:`fastdiff.bench`) end to end on a minuscule configuration: the results
file, the table, the plot, and speedups that are the ratios of the times measured in the run."""
import contextlib
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiff import bench

TINY = bench.SuiteSize(
    name="cpu",
    roberta=dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=40),
    gpt2=dict(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=40, bos_token_id=63, eos_token_id=63),
    dtype="float32", prompt_length=4, gen_length=6, batch_sizes=(1, 2), steps=(2, 6), repeats=3, warmup=1, threads=1,
)
RECORD_FIELDS = {"name", "method", "label", "batch", "steps", "tokens_per_step", "status", "reason", "wall_s",
                 "wall_s_runs", "tokens_per_s", "nfe", "ms_per_step", "peak_gpu_mib", "setup_s", "warmup_s",
                 "speedup_vs"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One CLI run of the suite with the cpu size swapped for :data:`TINY`: (exit code, stdout, folder)."""
    out = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setitem(bench.SIZES, "cpu", TINY)
        code = bench.main(["--size", "cpu", "--out", str(out)])
    return code, printed.getvalue(), out


def _document(out: Path):
    files = list(out.glob("cpu-*.json"))
    assert len(files) == 1, files
    assert files[0].stem == "cpu-" + bench.slug(bench.cpu_name())
    return files[0], json.loads(files[0].read_text())


def test_results_file_has_every_scenario_with_its_figures(smoke_run):
    code, _, out = smoke_run
    assert code == 0
    _, document = _document(out)
    assert document["status"] == "complete" and document["size"] == "cpu"
    assert document["device"]["type"] == "cpu"
    assert {"torch", "transformers", "fastdiff", "python"} <= set(document["versions"])
    results = document["results"]
    assert [r["name"] for r in results] == [s.name for s in bench.scenarios_for(TINY)]
    for r in results:
        assert RECORD_FIELDS <= set(r), r["name"]
        if r["method"] in ("fastdiff-triton", "fastdiff-triton-graphs"):
            assert r["status"] == "not available" and r["reason"] == "needs CUDA"
            continue
        assert r["status"] == "ok", r
        assert len(r["wall_s_runs"]) == TINY.repeats
        assert r["wall_s"] == pytest.approx(statistics.median(r["wall_s_runs"]))
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * TINY.gen_length / r["wall_s"])
        assert r["ms_per_step"] == pytest.approx(r["wall_s"] / r["nfe"] * 1e3)
        assert r["peak_gpu_mib"] is None
        assert r["setup_s"] >= 0 and r["warmup_s"] > 0
        if r["method"].startswith("gpt2-"):
            assert r["nfe"] == TINY.gen_length
        elif r["method"] in ("seed-naive", "seed-batched"):
            assert r["nfe"] == bench.SEED_STEPS
        else:
            assert r["nfe"] == min(r["steps"], TINY.gen_length)
    seed = document["seed_reproduction"]
    naive = next(r for r in results if r["name"] == "seed-naive-s10-b1")
    gpt2 = next(r for r in results if r["name"] == "gpt2-hf-sample-b1")
    assert seed["naive_diffusion_s"] == naive["wall_s"] and seed["gpt2_generate_s"] == gpt2["wall_s"]
    assert seed["ratio"] == pytest.approx(naive["wall_s"] / gpt2["wall_s"])
    low, high = seed["ratio_range"]
    assert low == pytest.approx(min(naive["wall_s_runs"]) / max(gpt2["wall_s_runs"])) and low <= seed["ratio"] <= high
    table = next(out.glob("cpu-*.md")).read_text()
    assert f"{low:.2f}-{high:.2f} over the {TINY.repeats} repeats" in table


def test_speedups_are_ratios_of_the_measured_times(smoke_run):
    _, _, out = smoke_run
    _, document = _document(out)
    ok = [r for r in document["results"] if r["status"] == "ok"]
    for r in ok:
        expected = {}
        for peer in bench.PEER_METHODS:
            same_steps = peer == "llada-eager"
            matches = [p for p in ok if p["method"] == peer and p["batch"] == r["batch"]
                       and (not same_steps or p["steps"] == r["steps"]) and p["name"] != r["name"]]
            if same_steps and r["steps"] is None:
                matches = []
            if matches:
                expected[peer] = matches[0]["wall_s"] / r["wall_s"]
        assert set(r["speedup_vs"]) == set(expected), r["name"]
        for peer, value in expected.items():
            assert r["speedup_vs"][peer] == pytest.approx(value), (r["name"], peer)
    fastdiff = next(r for r in ok if r["name"] == "fastdiff-torch-s2-b2")
    assert set(fastdiff["speedup_vs"]) == set(bench.PEER_METHODS)  # every peer, LLaDA at 2 steps


def test_table_has_one_row_per_scenario_and_is_printed(smoke_run):
    _, printed, out = smoke_run
    json_file, document = _document(out)
    table = (out / f"{json_file.stem}.md").read_text()
    assert table.strip() in printed
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # minus the header
    assert len(rows) == len(document["results"])
    for r in document["results"]:
        steps = "–" if r["steps"] is None else str(r["steps"])
        assert any(row.startswith(f"| {r['label']} | {r['batch']} | {steps} |") for row in rows), r["name"]
    assert "not available: needs CUDA" in table
    assert "Seed reproduction (batch 1)" in table


def test_plot_is_written(smoke_run):
    pytest.importorskip("matplotlib")
    _, _, out = smoke_run
    json_file, document = _document(out)
    png = out / f"{json_file.stem}.png"
    assert document["files"]["plot"] == png.name
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_static_cache_loop_is_compared_with_hf_greedy(smoke_run):
    _, _, out = smoke_run
    _, document = _document(out)
    for r in document["results"]:
        if r["method"] == "gpt2-static-graph":
            assert r["cuda_graph"] is False
            assert 0.0 <= r["greedy_tokens_equal_hf"] <= 1.0


def test_dry_run_writes_the_pending_gpu_file(tmp_path, capsys):
    assert bench.main(["--size", "gpu", "--dry-run", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / bench.PENDING_GPU_FILE).read_text())
    assert document["status"] == "pending: no GPU run yet"
    assert "results" not in document
    names = [s["name"] for s in document["scenarios"]]
    # per batch: 4 GPT-2 peers, the two seed loops, LLaDA and 3 fastdiff backends at 4 step counts
    assert len(names) == 3 * (4 + 2 + 4 + 3 * 4)
    assert {"fastdiff-triton-graphs-s240-b64", "gpt2-static-graph-b1", "seed-naive-s10-b8"} <= set(names)
    assert document["config"]["dtype"] == "bfloat16" and document["config"]["gen_length"] == 240
    assert "fastdiff-torch-s10-b1" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--size", "cpu", "--repeats", "0"], "--repeats"),
    (["--size", "cpu", "--steps", "0"], "--steps"),
    (["--size", "cpu", "--gen-length", "600"], "positions"),
    (["--size", "tpu"], "--size"),
])
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_gpu_size_without_cuda_says_so(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--size", "gpu"])
    assert "no CUDA device" in capsys.readouterr().err


def test_a_failing_scenario_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    prepare = bench.Suite.prepare

    def breaking_prepare(self, scenario):
        if scenario.method == "gpt2-static-graph":
            raise RuntimeError("broken on purpose")
        if scenario.method == "llada-eager":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB")
        return prepare(self, scenario)

    monkeypatch.setattr(bench.Suite, "prepare", breaking_prepare)
    monkeypatch.setitem(bench.SIZES, "cpu", TINY)
    code = bench.main(["--size", "cpu", "--batch-sizes", "1", "--steps", "2", "--out", str(tmp_path), "--no-plot"])
    assert code == 1
    assert "broken on purpose" in capsys.readouterr().err
    _, document = _document(tmp_path)
    assert document["status"] == "partial: 1 scenario(s) failed"
    status = {r["method"]: (r["status"], r["reason"]) for r in document["results"]}
    assert status["gpt2-static-graph"] == ("failed", "RuntimeError: broken on purpose")
    assert status["llada-eager"][0] == "out of memory"
    assert status["fastdiff-torch"] == ("ok", None) and status["gpt2-hf-greedy"] == ("ok", None)
    assert not list(tmp_path.glob("*.png"))


def test_add_speedups_matches_batch_and_llada_steps():
    def record(method, batch, steps, wall, status="ok"):
        return dict(name=f"{method}-{batch}-{steps}", method=method, batch=batch, steps=steps, wall_s=wall,
                    status=status, speedup_vs={})

    rows = [record("gpt2-hf-greedy", 1, None, 2.0), record("gpt2-hf-greedy", 4, None, 8.0),
            record("llada-eager", 1, 10, 3.0), record("llada-eager", 1, 24, 6.0),
            record("gpt2-static-graph", 1, None, None, status="not available"),
            record("fastdiff-torch", 1, 10, 0.5), record("fastdiff-torch", 1, 24, 1.5)]
    bench.add_speedups(rows)
    assert rows[5]["speedup_vs"] == {"gpt2-hf-greedy": 4.0, "llada-eager": 6.0}
    assert rows[6]["speedup_vs"] == {"gpt2-hf-greedy": 2.0 / 1.5, "llada-eager": 4.0}
    assert rows[0]["speedup_vs"] == {}  # no peer of its own batch but itself
    assert rows[2]["speedup_vs"] == {"gpt2-hf-greedy": 2.0 / 3.0}
    assert rows[4]["speedup_vs"] == {}


def test_imports_stay_light():
    # `import fastdiff` leaves the suite out, and the suite needs only the core dependencies
    code = ("import sys, fastdiff; assert 'fastdiff.bench' not in sys.modules; import fastdiff.bench; "
            "print(sorted({'matplotlib', 'pytest', 'pytest_benchmark'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
