"""pytest-benchmark for whole bigkern.models networks against their torch.nn twins.

    python -m pytest benchmarks/bench_models.py --benchmark-only

One test per (case, provider): the models suite's --quick cases for the device (CUDA when
available, else CPU). For every model and the training step, use ``bigkern bench models``.
"""

import pytest
import torch

from bigkern.bench import models as suite

from _run_case import run_case  # benchmarks/_run_case.py (this directory is on sys.path under pytest)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PARAMS = [
    pytest.param(case, provider, id=f"{case.label}-{case.direction}-{provider.name}")
    for case in suite.cases(DEVICE, quick=True)
    for provider in suite.providers(case, DEVICE, compile=False)
]


@pytest.mark.parametrize("case, provider", PARAMS)
def test_model(benchmark, case, provider):
    run_case(benchmark, case, provider, DEVICE)
