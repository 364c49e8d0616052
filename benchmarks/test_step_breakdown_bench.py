"""The step breakdown (``step_breakdown.py``) as pytest-benchmark cases, one per batch and mode."""
from pathlib import Path

import pytest
import torch

import step_breakdown

from fastdiff.bench import resolve_size


def _size(config):
    return resolve_size(config.getoption("--bench-size"))


@pytest.fixture(scope="module")
def breakdown(request):
    size = _size(request.config)
    device = torch.device(request.config.getoption("--bench-device") or ("cuda" if size.name == "gpu" else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("the gpu size needs CUDA")
    bench = step_breakdown.StepBreakdown(size, device)
    yield bench
    if bench.results:
        out = request.config.getoption("--bench-out")
        print("\n" + bench.finish(step_breakdown.RESULTS_DIR if out is None else Path(out))["table"])


def pytest_generate_tests(metafunc):
    if "batch_mode" in metafunc.fixturenames:
        cases = [(b, m) for b in _size(metafunc.config).batch_sizes for m in step_breakdown.MODES]
        metafunc.parametrize("batch_mode", cases, ids=[f"{m}-b{b}" for b, m in cases])


def test_step_breakdown(benchmark, breakdown, batch_mode):
    batch, mode = batch_mode
    benchmark.group = "step breakdown"
    record = benchmark.pedantic(breakdown.measure, args=(batch, mode), rounds=1, iterations=1)
    benchmark.extra_info.update(record)
    if record["status"] != "ok":
        pytest.skip(f"{record['name']}: {record['status']}: {record['reason']}")


def test_demo_step_breakdown(benchmark):
    benchmark.group = "step breakdown"
    record = benchmark.pedantic(step_breakdown.demo_breakdown, rounds=1, iterations=1)
    benchmark.extra_info.update(record)
    print("\n" + step_breakdown.format_demo(record))
