"""The recurrent benchmark suite: its cases, FLOP model and providers on a tiny case."""

import pytest
import torch

from bigkern.bench import harness
from bigkern.bench import lstm as suite
from bigkern.bench.harness import Timing

FAST = Timing(target_s=0.02, warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=20, rotate_bytes=0)


def test_flop_model():
    # LSTM, T=100, B=32, I=H=256, 2 layers: each layer does 2*T*B*4H*(I+H) FLOPs forward.
    forward = 2 * (2 * 100 * 32 * 1024 * 512)
    assert suite.rnn_flops("lstm", 100, 32, 256, 256, 2, "forward") == forward
    assert suite.rnn_flops("lstm", 100, 32, 256, 256, 2, "forward+backward") == 3 * forward
    assert suite.rnn_flops("gru", 10, 2, 3, 5, 1, "forward") == 2 * 10 * 2 * 15 * 8


def test_cpu_cases_hold_the_acceptance_shape():
    cases = suite.cases("cpu")
    shapes = {(c.op, c.shape, c.params["layers"], c.direction) for c in cases}
    for direction in ("forward", "forward+backward"):
        assert ("lstm", (100, 32, 256, 256), 2, direction) in shapes
    assert len({c.id for c in cases}) == len(cases)


def test_cuda_cases_follow_the_sweep():
    cases = suite.cases("cuda")
    assert {c.shape[1] for c in cases} == set(suite.CUDA_BATCHES)
    assert {c.shape[3] for c in cases} == set(suite.CUDA_HIDDEN)
    assert all(c.shape[0] == 512 and c.dtype == torch.bfloat16 for c in cases)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_tiny_case_runs_bigkern_torch_and_compile(kind):
    case = suite.make_case(kind, 5, 3, 4, 6, 2, torch.float32, "forward+backward")
    rows = harness.run_cases([case], lambda c: suite.providers(c, "cpu", compile=True), "cpu", FAST)
    by_name = {r["provider"]: r for r in rows}
    for name in ("bigkern-cpu", "torch", "torch.compile"):
        assert by_name[name]["skipped_reason"] is None, by_name[name]["skipped_reason"]
        assert by_name[name]["tflops"] > 0
    assert by_name["bigkern-cpu"]["speedup_vs_best_baseline"] == pytest.approx(
        min(by_name["torch"]["median_ms"], by_name["torch.compile"]["median_ms"]) / by_name["bigkern-cpu"]["median_ms"]
    )


def test_providers_compute_the_same_sequence():
    case = suite.make_case("lstm", 4, 2, 3, 5, 2, torch.float64, "forward")
    inputs = case.make_inputs("cpu")
    outs = {}
    for provider in suite.providers(case, "cpu", compile=False):
        if provider.skipped_reason is None:
            with provider.context() if provider.context else torch.no_grad():
                outs[provider.name] = provider.make()(*inputs.args)
    outs["unrolled"] = suite._unrolled("lstm", 2)(*inputs.args)
    assert len(outs) >= 3
    for name, out in outs.items():
        torch.testing.assert_close(out, outs["torch"], msg=lambda m: f"{name}: {m}")
