"""pytest-benchmark for bigkern.ops.attention: the harness's attention cases and providers, a small set.

    python -m pytest benchmarks/bench_attention.py --benchmark-only

One test per (case, provider): the attention suite's --quick cases for the device (CUDA when
available, else CPU). For the full sweep, with TFLOP/s, % of the matmul ceiling, peak memory and
speedups, use ``bigkern bench attention``.
"""

import contextlib

import pytest
import torch

from bigkern.bench import attention as suite
from bigkern.bench import harness

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = suite.cases(DEVICE, quick=True)
PARAMS = [
    pytest.param(case, provider, id=f"{case.label}-{case.shape_str}-{case.direction}-{provider.name}")
    for case in CASES
    for provider in suite.providers(case, DEVICE, compile=False)
]


@pytest.mark.parametrize("case, provider", PARAMS)
def test_attention(benchmark, case, provider):
    if provider.skipped_reason is not None:
        pytest.skip(provider.skipped_reason)
    inputs = case.make_inputs(DEVICE)
    step = harness.make_step(case, provider.make(), inputs)
    synchronize = torch.cuda.synchronize if DEVICE.type == "cuda" else (lambda: None)

    def call():
        step()
        synchronize()

    benchmark.group = case.id
    benchmark.extra_info.update(
        op=case.op, shape=list(case.shape), dtype=harness.dtype_name(case.dtype), direction=case.direction,
        provider=provider.name, flops=case.flops(provider.name),
    )  # fmt: skip
    grad_mode = torch.no_grad() if case.direction == "forward" else torch.enable_grad()
    with provider.context() if provider.context else contextlib.nullcontext(), grad_mode:
        benchmark(call)
