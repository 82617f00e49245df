"""The attention benchmark suite: its cases, FLOP model and providers on a tiny case."""

import pytest
import torch

from bigkern.bench import attention as suite
from bigkern.bench import harness
from bigkern.bench.harness import Timing

FAST = Timing(target_s=0.02, warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=20, rotate_bytes=0)


def test_flop_model():
    forward = 4 * 2 * 8 * 1024 * 1024 * 64
    assert suite.attention_flops(2, 8, 1024, 1024, 64, False, "forward") == forward
    assert suite.attention_flops(2, 8, 1024, 1024, 64, True, "forward") == forward / 2
    assert suite.attention_flops(2, 8, 1024, 1024, 64, False, "forward+backward") == 3.5 * forward


def test_cpu_cases_hold_the_acceptance_shape_and_the_memory_case():
    cases = suite.cases("cpu")
    shapes = {(c.shape, c.direction, c.params["causal"]) for c in cases}
    for direction in ("forward", "forward+backward"):
        for causal in (False, True):
            assert ((2, 8, 1024, 64), direction, causal) in shapes
    memory = [c for c in cases if c.params.get("measure_cpu_memory")]
    assert memory and all(c.shape[2] == 8192 for c in memory)
    assert len({c.id for c in cases}) == len(cases)


def test_cuda_cases_follow_the_sweep():
    cases = [c for c in suite.cases("cuda") if c.params["length_kv"] == c.shape[2]]
    for case in cases:
        b, h, length, d = case.shape
        assert b * length == suite.CUDA_TOKENS and h * d == suite.CUDA_WIDTH and case.dtype == torch.bfloat16
    assert {c.shape[2] for c in cases} == set(suite.CUDA_LENGTHS)
    assert any(c.shape[2] == 1 for c in suite.cases("cuda"))  # decoding steps (split-KV)


def test_tiny_case_runs_bigkern_cpu_sdpa_and_math():
    case = suite.make_case(1, 2, 1, 33, 47, 16, torch.float32, True, "forward+backward")
    rows = harness.run_cases([case], lambda c: suite.providers(c, "cpu", compile=False), "cpu", FAST)
    by_name = {r["provider"]: r for r in rows}
    for name in ("bigkern-cpu", "sdpa", "math"):
        assert by_name[name]["skipped_reason"] is None, by_name[name]["skipped_reason"]
        assert by_name[name]["tflops"] > 0
    assert by_name["bigkern-cpu"]["speedup_vs_best_baseline"] == pytest.approx(
        min(by_name["sdpa"]["median_ms"], by_name["math"]["median_ms"]) / by_name["bigkern-cpu"]["median_ms"]
    )


def test_flash_attn_provider_is_listed_with_why_it_cannot_run_here():
    case = suite.make_case(1, 2, 2, 64, 64, 32, torch.float32, False, "forward")
    (flash,) = [p for p in suite.providers(case, "cpu") if p.name == "flash-attn"]
    assert flash.skipped_reason and ("not installed" in flash.skipped_reason or "CUDA only" in flash.skipped_reason)
