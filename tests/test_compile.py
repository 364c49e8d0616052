"""The kernels compile for real GPU targets, checked on a machine without a GPU.

The interpreter tests run kernel bodies as Python and never meet the compiler's rules (which globals a
kernel may read, what a constexpr is, how many registers a configuration needs). Here every kernel is
compiled ahead of time for sm_80 and sm_90 by :mod:`fastdiff.kernels.compile_check`, in a subprocess
without ``TRITON_INTERPRET`` (this process has the kernels in interpreter form). A compile error fails
the test, and so do register spills in the main configurations.

The representative subset runs by default (about 20 s on 2 cores); every configuration (over 2,600
compiles) runs with ``FASTDIFF_COMPILE_ALL=1``.
"""
import json
import os
import subprocess
import sys

import pytest

from fastdiff.backend import triton_available

pytestmark = pytest.mark.skipif(not triton_available(), reason="needs Triton (its compiler ships ptxas)")


def _compile(tmp_path, *flags):
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compile for real, not from an earlier run's cache
    report = tmp_path / "compile.json"
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "fastdiff.kernels.compile_check", "--arch", "80",
                           "--arch", "90", "--json", str(report), *flags], capture_output=True, text=True, env=env,
                          timeout=3600)
    results = json.loads(report.read_text())["results"] if report.exists() else []
    return done, results


def _assert_clean(done, results):
    failures = [f"sm_{r['arch']} {r['kernel']}[{r['name']}]: {r['error'] or str(r['spill_bytes']) + ' B spilled'}"
                for r in results if r["failed"]]
    assert not failures, "\n".join(failures)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_representative_configurations_compile_for_sm80_and_sm90(tmp_path):
    done, results = _compile(tmp_path)
    _assert_clean(done, results)
    assert {r["arch"] for r in results} == {80, 90}
    assert {r["kernel"] for r in results} == {"sample_masked", "select_topk", "commit_remask"}
    names = " ".join(r["name"] for r in results)
    for needed in ("bfloat16", "float16", "float32", "top_k ", "top_p ", "top_k+top_p", "margin", "entropy",
                   "score_t", "canvas+shift", "gathered rows", "V=50265", "V=151936", "L=1", "L=8192"):
        assert needed in names, f"the subset misses {needed!r}"
    assert all(r["registers"] and r["registers"] <= 255 for r in results)


@pytest.mark.skipif(os.environ.get("FASTDIFF_COMPILE_ALL") != "1", reason="every configuration: FASTDIFF_COMPILE_ALL=1")
def test_every_configuration_compiles_for_sm80_and_sm90(tmp_path):
    done, results = _compile(tmp_path, "--all")
    _assert_clean(done, results)


def test_compile_check_reports_a_kernel_that_does_not_compile(tmp_path):
    # the check is only worth its green if a compile error turns it red: a kernel reading a plain global
    script = tmp_path / "broken.py"
    script.write_text(
        "import torch, triton, triton.language as tl\n"
        "from fastdiff.kernels import compile_check\n"
        "LIMIT = 3\n"
        "@triton.jit\n"
        "def broken(x_ptr):\n"
        "    tl.store(x_ptr, LIMIT)\n"
        "config = compile_check.Config('broken', 'plain global', lambda: broken.warmup(torch.zeros(1), grid=(1,)), True)\n"
        "result = compile_check.compile_config(config, 90)\n"
        "print(result.ok, result.failed, result.error)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-W", "ignore", str(script)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.stdout.startswith("False True "), done.stdout + done.stderr
    assert "Cannot access global variable LIMIT" in done.stdout
