"""The benchmark suite of :mod:`fastdiff.bench` (what ``fastdiff bench`` runs), its results in
``benchmarks/results``.

    python benchmarks/suite.py --size cpu|gpu [--out DIR]
"""
import sys
from pathlib import Path

from fastdiff import bench

RESULTS_DIR = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    sys.exit(bench.main(parser=bench.build_parser(results_dir=RESULTS_DIR)))
