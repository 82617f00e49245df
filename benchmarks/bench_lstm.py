"""pytest-benchmark for bigkern.ops.lstm: the harness's lstm cases and providers, a small set.

    python -m pytest benchmarks/bench_lstm.py --benchmark-only

One test per (case, provider): the recurrent suite's --quick cases for the device (CUDA when
available, else CPU). For the full sweep, with TFLOP/s, % of the matmul ceiling and
speedups, use ``bigkern bench lstm``.
"""

import pytest
import torch

from bigkern.bench import lstm as suite

from _run_case import run_case  # benchmarks/_run_case.py (this directory is on sys.path under pytest)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = suite.cases(DEVICE, quick=True)
PARAMS = [
    pytest.param(case, provider, id=f"{case.label}-{case.shape_str}-{case.direction}-{provider.name}")
    for case in CASES
    for provider in suite.providers(case, DEVICE, compile=False)
]


@pytest.mark.parametrize("case, provider", PARAMS)
def test_lstm(benchmark, case, provider):
    run_case(benchmark, case, provider, DEVICE)
