"""pytest-benchmark for the pooling ops: the harness's pool cases and providers, a small set.

    python -m pytest benchmarks/bench_pool.py --benchmark-only

One test per (case, provider): the pool suite's --quick cases for the device (CUDA when
available, else CPU), one configuration per op, float32, forward and forward+backward, both
layouts; grouped by case. A provider that cannot run here is skipped with the harness's reason.
For the full suite, with GB/s, % of the copy ceiling and speedups, use ``bigkern bench pool``.
"""

import pytest
import torch

from bigkern.bench import pool as suite

from _run_case import run_case  # benchmarks/_run_case.py (this directory is on sys.path under pytest)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
#: One configuration per public op (the suite has two of max_pool2d and adaptive_avg_pool2d).
LABELS = {"max_pool2d(3,2,1)", "avg_pool2d(3,2,1)", "adaptive_avg_pool2d(7)", "adaptive_max_pool2d(7)"}
CASES = [c for c in suite.cases(DEVICE, [torch.float32], quick=True) if c.label in LABELS]
PARAMS = [
    pytest.param(case, provider, id=f"{case.label}-{case.layout}-{case.direction}-{provider.name}")
    for case in CASES
    for provider in suite.providers(case, DEVICE, compile=False)
]


@pytest.mark.parametrize("case, provider", PARAMS)
def test_pool(benchmark, case, provider):
    run_case(benchmark, case, provider, DEVICE)
