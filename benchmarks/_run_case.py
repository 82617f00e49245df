"""What every benchmarks/bench_*.py test does with one (case, provider) of a harness suite."""

import contextlib

import pytest
import torch

from bigkern.bench import harness


def run_case(benchmark, case, provider, device: torch.device) -> None:
    """Time ``provider`` on ``case`` with pytest-benchmark (skipped with the harness's reason if it
    cannot run here); the row's rate model (bytes or FLOPs) goes to ``extra_info``."""
    if provider.skipped_reason is not None:
        pytest.skip(provider.skipped_reason)
    inputs = case.make_inputs(device)
    step = harness.make_step(case, provider.make(), inputs)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call():
        step()
        synchronize()

    benchmark.group = case.id
    benchmark.extra_info.update(
        op=case.op, shape=list(case.shape), dtype=harness.dtype_name(case.dtype), layout=case.layout,
        direction=case.direction, provider=provider.name,
        bytes=case.bytes_moved(provider.name) if case.bytes_moved else None,
        flops=case.flops(provider.name) if case.flops else None,
    )  # fmt: skip
    grad_mode = torch.no_grad() if case.direction == "forward" else torch.enable_grad()
    with provider.context() if provider.context else contextlib.nullcontext(), grad_mode:
        benchmark(call)
