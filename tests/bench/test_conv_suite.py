"""The convolution benchmark suite: its cases, FLOP model and providers on a tiny case."""

import pytest
import torch

from bigkern.bench import conv as suite
from bigkern.bench import harness
from bigkern.bench.harness import Timing

FAST = Timing(target_s=0.02, warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=20, rotate_bytes=0)


def test_flop_model():
    # (8, 64, 56, 56) -> 64, 3x3, stride 1, padding 1: P = Q = 56.
    forward = 2 * 8 * 64 * 64 * 9 * 56 * 56
    assert suite.conv_flops(8, 64, 56, 56, 64, 3, 1, 1, "forward") == forward
    assert suite.conv_flops(8, 64, 56, 56, 64, 3, 1, 1, "forward+backward") == 3 * forward
    # depthwise: C / groups = 1 input channel per output channel; stride 2 halves P and Q.
    assert suite.conv_flops(2, 32, 16, 16, 32, 3, 2, 32, "forward") == 2 * 2 * 32 * 1 * 9 * 8 * 8


def test_cpu_cases_hold_the_acceptance_shape():
    cases = suite.cases("cpu")
    keys = {(c.op, c.shape, c.layout, c.direction) for c in cases}
    for layout in ("nchw", "channels_last"):
        assert ("conv2d", (8, 64, 56, 56, 64), layout, "forward") in keys
        assert ("conv2d+relu", (8, 64, 56, 56, 64), layout, "forward") in keys
    assert len({c.id for c in cases}) == len(cases)


def test_cuda_cases_cover_resnet50_depthwise_and_the_stem():
    cases = suite.cases("cuda")
    assert all(c.dtype == torch.bfloat16 and c.layout == "channels_last" and c.shape[0] == 64 for c in cases)
    assert any(c.params["groups"] == c.shape[1] for c in cases)  # depthwise
    assert any(c.shape[1] == 3 and c.params["kernel"] == 7 for c in cases)  # the stem
    assert any(c.op == "conv2d+residual+relu" for c in cases)


@pytest.mark.parametrize("op", list(suite.EPILOGUES))
def test_tiny_case_runs_bigkern_torch_and_compile(op):
    case = suite.make_case((2, 4, 9, 9, 4, 3, 1, 1), op, torch.float32, "channels_last", "forward+backward")
    rows = harness.run_cases([case], lambda c: suite.providers(c, "cpu", compile=True), "cpu", FAST)
    by_name = {r["provider"]: r for r in rows}
    for name in ("bigkern-cpu", "torch", "torch.compile"):
        assert by_name[name]["skipped_reason"] is None, by_name[name]["skipped_reason"]
        assert by_name[name]["tflops"] > 0
    assert by_name["bigkern-cpu"]["tflops"] == pytest.approx(case.flops("bigkern-cpu") / by_name["bigkern-cpu"]["median_ms"] / 1e9)
    assert by_name["bigkern-cpu"]["speedup_vs_best_baseline"] == pytest.approx(
        min(by_name["torch"]["median_ms"], by_name["torch.compile"]["median_ms"]) / by_name["bigkern-cpu"]["median_ms"]
    )


def test_bigkern_and_torch_providers_agree():
    case = suite.make_case((2, 5, 8, 7, 6, 3, 1, 1), "conv2d+residual+relu", torch.float32, "nchw", "forward")
    inputs = case.make_inputs("cpu")
    fns = {p.name: p for p in suite.providers(case, "cpu") if p.skipped_reason is None}
    with fns["bigkern-cpu"].context():
        ours = fns["bigkern-cpu"].make()(*inputs.args)
    theirs = fns["torch"].make()(*inputs.args)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
