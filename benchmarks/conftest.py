"""pytest-benchmark wiring of the suite: ``pytest benchmarks/ --benchmark-only``.

Each scenario of :func:`fastdiff.bench.scenarios_for` becomes one benchmark (``test_suite_bench.py``),
timed through ``benchmark.pedantic`` by the same :meth:`fastdiff.bench.Suite.measure` that ``fastdiff bench``
uses, with its figures in ``benchmark.extra_info``. At the end of the session the speedups are added (to
the extra info too) and the JSON / markdown / PNG results are written, and the table is printed.

Options: ``--bench-size cpu|gpu`` (default: gpu with CUDA, else cpu), ``--bench-out DIR`` (default
``benchmarks/results``), ``--bench-device DEVICE``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastdiff import bench

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def pytest_addoption(parser):
    group = parser.getgroup("fastdiff benchmark suite")
    group.addoption("--bench-size", choices=sorted(bench.SIZES), default=None,
                    help="suite size: cpu or gpu (default: gpu with CUDA, else cpu)")
    group.addoption("--bench-out", default=None, help=f"results folder (default {RESULTS_DIR})")
    group.addoption("--bench-device", default=None, help="torch device (default: cuda for gpu, else cpu)")


class _SuiteRun:
    """The suite of this pytest session and the ``extra_info`` dicts its records were copied into."""

    def __init__(self, config):
        self.size = bench.resolve_size(config.getoption("--bench-size"))
        device = config.getoption("--bench-device") or ("cuda" if self.size.name == "gpu" else "cpu")
        self.device = torch.device(device)
        self.out = Path(config.getoption("--bench-out") or RESULTS_DIR)
        self.suite = None
        self.extra_infos = []
        self.document = None

    def get_suite(self) -> bench.Suite:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            pytest.skip(f"--bench-size {self.size.name} runs on CUDA, and no CUDA device is available")
        if self.suite is None:
            self.suite = bench.Suite(self.size, self.device)
        return self.suite


_RUN_KEY = pytest.StashKey[_SuiteRun]()


def pytest_configure(config):
    config.stash[_RUN_KEY] = _SuiteRun(config)


def pytest_generate_tests(metafunc):
    if "suite_scenario" in metafunc.fixturenames:
        scenarios = bench.scenarios_for(metafunc.config.stash[_RUN_KEY].size)
        metafunc.parametrize("suite_scenario", scenarios, ids=[s.name for s in scenarios])


@pytest.fixture(scope="session")
def suite_run(request) -> _SuiteRun:
    return request.config.stash[_RUN_KEY]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    """Write the results before pytest-benchmark saves its own (so that its JSON has the speedups)."""
    run = session.config.stash.get(_RUN_KEY, None)
    if run is not None and run.suite is not None and run.suite.results:
        run.document = run.suite.finish(run.out)
        for extra_info, record in run.extra_infos:
            extra_info.update(record)
    yield


def pytest_terminal_summary(terminalreporter, config):
    run = config.stash.get(_RUN_KEY, None)
    document = run.document if run is not None else None
    if document is None:
        return
    terminalreporter.section("fastdiff benchmark suite")
    for line in document["table"].splitlines():
        terminalreporter.write_line(line)
    for path in document["written"]:
        terminalreporter.write_line(f"wrote {path}")
