"""pytest-benchmark for the pooling ops: the harness's pool cases and providers, a small set.

    python -m pytest benchmarks/bench_pool.py --benchmark-only

One test per (case, provider): the pool suite's --quick cases for the device (CUDA when
available, else CPU), one configuration per op, float32, forward and forward+backward, both
layouts; grouped by case. A provider that cannot run here is skipped with the harness's reason.
For the full suite, with GB/s, % of the copy ceiling and speedups, use ``bigkern bench pool``.
"""

import contextlib

import pytest
import torch

from bigkern.bench import harness
from bigkern.bench import pool as suite

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
    if provider.skipped_reason is not None:
        pytest.skip(provider.skipped_reason)
    inputs = case.make_inputs(DEVICE)
    fn = provider.make()
    step = harness.make_step(case, fn, inputs)
    synchronize = torch.cuda.synchronize if DEVICE.type == "cuda" else (lambda: None)

    def call():
        step()
        synchronize()

    benchmark.group = case.id
    benchmark.extra_info.update(
        op=case.op, shape=list(case.shape), dtype=harness.dtype_name(case.dtype), layout=case.layout,
        direction=case.direction, provider=provider.name, bytes=case.bytes_moved(provider.name),
    )  # fmt: skip
    with provider.context() if provider.context else contextlib.nullcontext(), _grad_mode(case):
        benchmark(call)


def _grad_mode(case):
    return torch.no_grad() if case.direction == "forward" else torch.enable_grad()
