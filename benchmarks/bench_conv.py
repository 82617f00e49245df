"""pytest-benchmark for bigkern.ops.conv2d: the harness's conv cases and providers, a small set.

    python -m pytest benchmarks/bench_conv.py --benchmark-only

One test per (case, provider): the convolution suite's --quick cases for the device (CUDA when
available, else CPU). For the full sweep, with TFLOP/s, % of the matmul ceiling and
speedups, use ``bigkern bench conv``.
"""

import pytest
import torch

from bigkern.bench import conv as suite

from _run_case import run_case  # benchmarks/_run_case.py (this directory is on sys.path under pytest)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = suite.cases(DEVICE, quick=True)
PARAMS = [
    pytest.param(case, provider, id=f"{case.label}-{case.shape_str}-{case.direction}-{provider.name}")
    for case in CASES
    for provider in suite.providers(case, DEVICE, compile=False)
]


@pytest.mark.parametrize("case, provider", PARAMS)
def test_conv(benchmark, case, provider):
    run_case(benchmark, case, provider, DEVICE)
