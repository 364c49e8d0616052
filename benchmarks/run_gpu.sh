#!/usr/bin/env bash
# Every GPU check and timing of the project in one command, for a fresh machine with CUDA (H100/H200):
#
#   bash benchmarks/run_gpu.sh            (OUT=DIR to choose where the packed results go)
#
# Stages, each under its own timeout (570 s in all): device and versions, install the project, the
# CUDA tests, the kernel benchmarks, the per-step breakdown, a trimmed benchmark suite, SEDD / MDLM. A failing
# stage does not stop the later ones. What needs pytest-benchmark, hypothesis or matplotlib is
# skipped, and said so, where they are missing. Everything is packed into three files under $OUT
# (default ./gpu-run): summary.txt, logs.tar.gz and results.tar.gz (JSON / markdown of every
# benchmark). Exits 1 if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-run}"
work="$(mktemp -d)"
mkdir -p "$out" "$work/logs" "$work/results"
export PYTHONUNBUFFERED=1
summary="$work/summary.txt"
failed=0

has() { python -c "import $1" 2>/dev/null; }

stage() {  # stage NAME SECONDS COMMAND...: run with a timeout, log, record the outcome
    local name="$1" seconds="$2"
    shift 2
    local started=$SECONDS
    timeout --kill-after=10 "$seconds" "$@" >"$work/logs/$name.log" 2>&1
    local rc=$?
    local outcome="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        outcome="TIMED OUT after ${seconds} s"
        failed=1
    elif [ "$rc" -ne 0 ]; then
        outcome="FAILED (exit $rc)"
        failed=1
    fi
    printf '%-16s %-28s %4d s\n' "$name" "$outcome" "$((SECONDS - started))" | tee -a "$summary"
    tail -n 3 "$work/logs/$name.log" | sed 's/^/    /'
}

skip() {  # skip NAME REASON
    printf '%-16s %-28s\n' "$1" "skipped: $2" | tee -a "$summary"
}

stage device 20 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv &&
    python -c "import sys, torch, triton, transformers; print(sys.version.split()[0], torch.__version__,
    torch.version.cuda, triton.__version__, transformers.__version__, torch.cuda.get_device_name())"'
stage install 60 python -m pip install --no-build-isolation --no-deps -e .

if has pytest; then
    ignore=()
    if ! has hypothesis; then
        ignore=(--ignore tests/test_kernels_fuzz.py)
        skip fuzz-tests "hypothesis is not installed"
    fi
    stage cuda-tests 150 python -m pytest -q -m "not slow" -p no:cacheprovider "${ignore[@]}" \
        tests/test_kernels.py tests/test_kernels_fuzz.py tests/test_fast_path.py tests/test_graph_safety.py
else
    skip cuda-tests "pytest is not installed"
fi

stage kernels 90 python benchmarks/kernels.py --size gpu --out "$work/results"
stage step-breakdown 60 python benchmarks/step_breakdown.py --size gpu --out "$work/results"
plot=()
if ! has matplotlib; then
    plot=(--no-plot)
    skip suite-plot "matplotlib is not installed"
fi
stage suite 130 python benchmarks/suite.py --size gpu --batch-sizes 1 64 --steps 10 240 --repeats 2 \
    --out "$work/results" "${plot[@]}"
if has pytest_benchmark; then
    # SEDD's and MDLM's sampler loops against their drop-ins (the compat benchmark's time-conditioned cases)
    stage sedd-mdlm 60 python -m pytest -q -s -p no:cacheprovider benchmarks/test_compat_bench.py \
        --benchmark-only -k "sedd or mdlm" --benchmark-json "$work/results/sedd-mdlm.json"
else
    skip pytest-benchmark "pytest-benchmark is not installed (python benchmarks/*.py ran the same cases;" \
        "the SEDD / MDLM comparison needs it)"
fi

cp "$summary" "$out/summary.txt"
tar -czf "$out/logs.tar.gz" -C "$work" logs
tar -czf "$out/results.tar.gz" -C "$work" results
echo "packed into $out: summary.txt logs.tar.gz results.tar.gz"
exit "$failed"
