"""One pytest-benchmark benchmark per kernel case (see ``kernels.py``); the results file is written when
the module's cases have run. Size: ``--bench-size`` (conftest.py), default gpu with CUDA, else cpu."""
import pytest
import torch

import kernels


@pytest.fixture(scope="module")
def kernel_bench(request):
    name = request.config.getoption("--bench-size") or ("gpu" if torch.cuda.is_available() else "cpu")
    size = kernels.SIZES[name]
    device = torch.device(request.config.getoption("--bench-device") or ("cuda" if name == "gpu" else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("the gpu size needs CUDA")
    bench = kernels.KernelBench(size, device)
    yield bench
    if bench.results:
        document = bench.finish(kernels.RESULTS_DIR if request.config.getoption("--bench-out") is None
                                else kernels.Path(request.config.getoption("--bench-out")))
        print("\n" + document["table"])


@pytest.mark.parametrize("case", kernels.cases(), ids=lambda case: case.name)
def test_kernel(benchmark, kernel_bench, case):
    reason = kernel_bench.unavailable(case)
    if reason is not None:  # skipped before any timing, so that pytest-benchmark's tables never rank it
        kernel_bench.measure(case)  # recorded as not available in the results file
        pytest.skip(f"{case.name}: {reason}")
    benchmark.group = f"{case.op}: {case.setting}"
    record = benchmark.pedantic(kernel_bench.measure, args=(case,), rounds=1, iterations=1)
    benchmark.extra_info.update(record)
    if record["status"] != "ok":
        pytest.skip(f"{case.name}: {record['status']}: {record['reason']}")
