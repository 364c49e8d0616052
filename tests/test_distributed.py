"""Data-parallel batch generation (``fastdiff.distributed``) on the CPU with gloo, 2 ranks spawned by
torch.multiprocessing and bound to 127.0.0.1: the same results as one process, resuming a killed job,
fewer prompts than ranks, and a rank that fails."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from fastdiff import Sampler, SamplerConfig, cli, distributed

SETTINGS = dict(steps=4, temperature=0.7, seed=11)
PROMPTS = ["import os\n", "def area(w, h):\n", "class Stack:\n", "x = [MASK*2] + 1\n", "for i in range(3):\n",
           "print('hi')\n", "def f(a, b, c, d, e):\n    return a + b\n", "y = 2\n", "while True:\n"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, input_path, output_path, result_dir, fail_rank):
    torch.set_num_threads(1)
    if os.path.exists("/sys/class/net/lo"):  # gloo's sockets on the loopback interface only
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    try:
        sampler = Sampler.from_pretrained(device="cpu", **SETTINGS)
        if rank == fail_rank:
            def broken(*args, **kwargs):
                raise RuntimeError("the device fell over")
            sampler.generate = broken
        result = distributed.generate_dataset(sampler, sampler.tokenizer, input_path, output_path,
                                              config=SamplerConfig(**SETTINGS), gen_length=5, batch_size=2,
                                              progress=False)
        with open(os.path.join(result_dir, f"result{rank}.json.tmp"), "w") as out:
            json.dump(result, out)
        os.replace(os.path.join(result_dir, f"result{rank}.json.tmp"), os.path.join(result_dir, f"result{rank}.json"))
    finally:
        torch.distributed.barrier()  # no rank tears gloo down while another still receives
        torch.distributed.destroy_process_group()


def _run_ranks(tmp_path, input_path, output_path, world=2, fail_rank=-1):
    for r in range(world):
        (tmp_path / f"result{r}.json").unlink(missing_ok=True)
    try:
        mp.spawn(_rank, args=(world, _free_port(), str(input_path), str(output_path), str(tmp_path), fail_rank),
                 nprocs=world, join=True)
    except mp.ProcessExitedException as error:
        # now and then (about one spawned pair in 30 here) a rank aborts ("terminate called without an
        # active exception") after it wrote its result, in gloo's teardown or at exit; the results are
        # what is checked. An abort before a rank's result is written still fails the test.
        written = all((tmp_path / f"result{r}.json").exists() for r in range(world))
        if error.signal_name != "SIGABRT" or not written:
            raise
    return [json.loads((tmp_path / f"result{r}.json").read_text()) for r in range(world)]


def _one_process(tmp_path, input_path, name="single.jsonl"):
    sampler = Sampler.from_pretrained(device="cpu", **SETTINGS)
    output = tmp_path / name
    result = distributed.generate_dataset(sampler, sampler.tokenizer, input_path, output,
                                          config=SamplerConfig(**SETTINGS), gen_length=5, batch_size=3, progress=False)
    assert result["ok"], result
    return output.read_text()


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return path


def test_two_ranks_give_the_one_process_results_in_input_order(tmp_path, prompts):
    expected = _one_process(tmp_path, prompts)
    results = _run_ranks(tmp_path, prompts, tmp_path / "out.jsonl")
    assert all(r["ok"] for r in results) and results[0]["ranks"] == results[1]["ranks"]
    assert (tmp_path / "out.jsonl").read_text() == expected
    assert [json.loads(line)["id"] for line in expected.splitlines()] == [f"p{i}" for i in range(len(PROMPTS))]
    shares = [r["prompts"] for r in results[0]["ranks"]]
    assert sum(shares) == len(PROMPTS) and min(shares) >= 3  # both ranks worked, balanced by length
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_a_killed_job_resumes_where_it_stopped(tmp_path, prompts):
    """Parts as killed ranks leave them (a result, a torn line): the next run keeps what was written
    (the planted result carries a marker), redoes the torn line, and loses nothing."""
    expected = [json.loads(line) for line in _one_process(tmp_path, prompts).splitlines()]
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    kept = dict(expected[2], marker="written before the kill")
    (parts / "rank0.jsonl").write_text(json.dumps({"line": 3, **kept}) + "\n")
    (parts / "rank1.jsonl").write_text(json.dumps({"line": 5, **expected[4]}) + "\n" + '{"line": 7, "id": "p6", "te')
    results = _run_ranks(tmp_path, prompts, tmp_path / "out.jsonl")
    assert all(r["ok"] for r in results)
    merged = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert merged[2] == kept and [r["id"] for r in merged] == [r["id"] for r in expected]
    assert [r for i, r in enumerate(merged) if i != 2] == [r for i, r in enumerate(expected) if i != 2]
    assert sum(r["prompts"] for r in results[0]["ranks"]) == len(PROMPTS) - 2  # only what was missing ran


def test_fewer_prompts_than_ranks(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("import os\n")
    results = _run_ranks(tmp_path, path, tmp_path / "out.jsonl")
    assert all(r["ok"] for r in results)
    assert [r["prompts"] for r in results[0]["ranks"]] == [1, 0]
    assert (tmp_path / "out.jsonl").read_text() == _one_process(tmp_path, path)


def test_a_failing_rank_fails_the_job_and_leaves_valid_parts(tmp_path, prompts):
    results = _run_ranks(tmp_path, prompts, tmp_path / "out.jsonl", fail_rank=1)
    assert not any(r["ok"] for r in results)
    assert any("rank 1: RuntimeError: the device fell over" in e for e in results[0]["errors"])
    assert not (tmp_path / "out.jsonl").exists()
    written = distributed.read_parts(tmp_path / "out.jsonl.parts")
    assert written and all("text" in r or "error" in r for r in written.values())
    # the next run (the rank works again) completes the job from the parts
    results = _run_ranks(tmp_path, prompts, tmp_path / "out.jsonl")
    assert all(r["ok"] for r in results)
    assert (tmp_path / "out.jsonl").read_text() == _one_process(tmp_path, prompts, name="again.jsonl")


def test_the_cli_killed_with_sigkill_resumes(tmp_path, prompts):
    """A real kill: ``fastdiff generate --input --output`` killed after its first results, then the same
    command again: the output is the uninterrupted run's."""
    lines = "".join(json.dumps({"id": i, "prompt": f"x{i} = {i}\n"}) + "\n" for i in range(40))
    path = tmp_path / "many.jsonl"
    path.write_text(lines)
    command = [sys.executable, "-m", "fastdiff", "generate", "--input", str(path), "--output",
               str(tmp_path / "out.jsonl"), "--batch-size", "1", "--gen-length", "5", "--steps", "4", "--seed", "3",
               "--temperature", "0.7", "-q"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=env)
    part = tmp_path / "out.jsonl.parts" / "rank0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not part.exists() or part.read_text().count("\n") < 3):
        if process.poll() is not None:
            break
        time.sleep(0.05)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed, "the job finished before it could be killed"
    assert not (tmp_path / "out.jsonl").exists()
    assert subprocess.run(command, env=env).returncode == 0
    clean = [*command]
    clean[clean.index(str(tmp_path / "out.jsonl"))] = str(tmp_path / "clean.jsonl")
    assert subprocess.run(clean, env=env).returncode == 0
    assert (tmp_path / "out.jsonl").read_text() == (tmp_path / "clean.jsonl").read_text()
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 40


def test_the_cli_refuses_standard_output_under_torchrun(tmp_path, capsys, monkeypatch, prompts):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["generate", "--input", str(prompts), "-q"]) == 2
    assert "--output" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE")
    assert cli.main(["generate", "--input", str(prompts), "--output", str(tmp_path / "no" / "x.jsonl"), "-q"]) == 2
    assert "writable directory" in capsys.readouterr().err


def _tensor_parallel_rank(rank, port, result_dir):
    if os.path.exists("/sys/class/net/lo"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=1)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Replicate, distribute_tensor

        mesh = init_device_mesh("cpu", (1,))
        model = torch.nn.Linear(4, 4)
        model.weight = torch.nn.Parameter(distribute_tensor(model.weight.data, mesh, [Replicate()]))
        try:
            Sampler(model, 3)
            message = "accepted"
        except ValueError as error:
            message = str(error)
        with open(os.path.join(result_dir, "tp.txt"), "w") as out:
            out.write(message)
    finally:
        torch.distributed.destroy_process_group()


def test_tensor_parallel_models_are_refused_with_what_to_do(tmp_path):
    mp.spawn(_tensor_parallel_rank, args=(_free_port(), str(tmp_path)), nprocs=1, join=True)
    message = (tmp_path / "tp.txt").read_text()
    assert "tensor-parallel" in message and "device_map" in message
