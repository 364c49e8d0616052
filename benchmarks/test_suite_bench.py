"""One pytest-benchmark benchmark per scenario of the suite (see ``conftest.py`` and :mod:`fastdiff.bench`)."""
import pytest


def test_scenario(benchmark, suite_scenario, suite_run):
    suite = suite_run.get_suite()
    benchmark.group = f"batch {suite_scenario.batch}"

    def pedantic_rounds(function, rounds):
        benchmark.pedantic(function, rounds=rounds, iterations=1, warmup_rounds=0)

    record = suite.measure(suite_scenario, run_rounds=pedantic_rounds)
    benchmark.extra_info.update(record)
    suite_run.extra_infos.append((benchmark.extra_info, record))
    if record["status"] != "ok":
        pytest.skip(f"{suite_scenario.name}: {record['status']}: {record['reason']}")
