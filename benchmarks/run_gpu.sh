#!/usr/bin/env bash
# Every GPU check and timing of the project in one go, for a machine with CUDA (an H100 or H200):
# the CUDA tests, then the benchmark suite, the kernel benchmarks and the step breakdown at GPU size.
# Results land in benchmarks/results/ (cuda-<gpu>*.json / .md / .png) and the logs in $OUT or ./gpu-logs.
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${OUT:-gpu-logs}"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$logs/device.txt"
python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" \
    | tee -a "$logs/device.txt"
python -m pytest -q -x -m "not slow" tests/test_kernels.py tests/test_fast_path.py 2>&1 | tee "$logs/cuda-tests.log"
python benchmarks/kernels.py --size gpu 2>&1 | tee "$logs/kernels.log"
python benchmarks/step_breakdown.py --size gpu 2>&1 | tee "$logs/step-breakdown.log"
python benchmarks/suite.py --size gpu 2>&1 | tee "$logs/suite.log"
cp benchmarks/results/cuda-* "$logs/" 2>/dev/null || true
