"""The benchmark harness on tiny cases with fake providers: timing, skipping, speedups, rates,
results files. Timings here are sanity checks with wide tolerances, not performance tests."""

import csv
import datetime
import json
import re
import sys
import time
import types

import pytest
import torch

from bigkern import bench
from bigkern.bench import environment, harness
from bigkern.bench import pool as pool_suite
from bigkern.bench.harness import Case, Inputs, Provider, Timing

FAST = Timing(target_s=0.02, warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=50, rotate_bytes=0)


def tiny_case(direction="forward", bytes_moved=None, label="tiny", shape=(2, 3, 8, 8)):
    def make_inputs(device):
        x = torch.randn(shape, device=device, requires_grad=direction == "forward+backward")
        return Inputs((x,), torch.randn(shape, device=device) if direction == "forward+backward" else None)

    return Case("tiny_op", shape, torch.float32, "nchw", direction, {"k": 1}, make_inputs, bytes_moved, label=label)


def sleeper(seconds):
    return lambda x: time.sleep(seconds)


def run(cases, providers, timing=FAST, ceiling=None):
    return harness.run_cases(cases, lambda case: providers, "cpu", timing, ceiling)


def test_sleeping_provider_median_is_its_sleep():
    (row,) = run([tiny_case()], [Provider.of("sleepy", sleeper(0.01))])
    assert row["skipped_reason"] is None
    assert 9.5 <= row["median_ms"] < 30.0  # sleep never returns early; a loaded machine may be late
    assert row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
    assert row["peak_mem_bytes"] is None  # CPU: not measured
    assert row["speedup_vs_best_baseline"] is None  # not a bigkern provider


def test_rows_follow_the_schema():
    (row,) = run([tiny_case()], [Provider.of("torch", lambda x: x + 1)])
    assert tuple(row) == harness.ROW_KEYS
    assert row["op"] == "tiny_op" and row["shape"] == [2, 3, 8, 8] and row["dtype"] == "float32"
    assert row["layout"] == "nchw" and row["direction"] == "forward" and row["params"] == {"k": 1}
    assert row["tflops"] is None and row["gbps"] is None  # no bytes model given


def test_provider_that_cannot_run_is_skipped_with_its_reason():
    rows = run(
        [tiny_case()],
        [Provider.skipped("bigkern-cuda", "no GPU here"), Provider.of("bigkern-broken", _raise), Provider.of("torch", torch.neg)],
    )  # fmt: skip
    by_name = {r["provider"]: r for r in rows}
    assert by_name["bigkern-cuda"]["skipped_reason"] == "no GPU here"
    assert by_name["bigkern-cuda"]["median_ms"] is None
    assert by_name["bigkern-broken"]["skipped_reason"].startswith("failed: RuntimeError: kernel exploded")
    assert by_name["bigkern-broken"]["speedup_vs_best_baseline"] is None
    assert by_name["torch"]["skipped_reason"] is None and by_name["torch"]["median_ms"] > 0


def _raise(x):
    raise RuntimeError("kernel exploded\nsecond line")


def test_speedup_is_best_baseline_over_own_median():
    rows = [
        dict(harness._blank_row(tiny_case(), name), median_ms=ms)
        for name, ms in [("bigkern-cpu", 2.0), ("bigkern-triton", 8.0), ("torch", 6.0), ("torch.compile", 4.0), ("other", None)]
    ]  # fmt: skip
    harness.add_speedups(rows)
    speedups = {r["provider"]: r["speedup_vs_best_baseline"] for r in rows}
    assert speedups == {"bigkern-cpu": 2.0, "bigkern-triton": 0.5, "torch": None, "torch.compile": None, "other": None}


def test_speedup_end_to_end_and_per_case():
    cases = [tiny_case(label="a"), tiny_case(label="b")]
    providers = [Provider.of("bigkern-fake", sleeper(0.002)), Provider.of("torch", sleeper(0.006))]
    rows = run(cases, providers)
    assert len(rows) == 4
    for label in ("a", "b"):
        ours, theirs = (next(r for r in rows if r["case"] == label and r["provider"] == p) for p in ("bigkern-fake", "torch"))
        assert ours["speedup_vs_best_baseline"] == pytest.approx(theirs["median_ms"] / ours["median_ms"])
        assert ours["speedup_vs_best_baseline"] > 1.2


def test_no_baseline_means_no_speedup():
    (row,) = run([tiny_case()], [Provider.of("bigkern-cpu", torch.neg)])
    assert row["speedup_vs_best_baseline"] is None


def test_gbps_and_percent_of_ceiling_from_the_bytes_model():
    case = tiny_case(bytes_moved=lambda provider: 10_000_000)
    (row,) = run([case], [Provider.of("sleepy", sleeper(0.005))], ceiling={"copy_gbps": 4.0})
    expected = 10_000_000 / (row["median_ms"] / 1e3) / 1e9
    assert row["gbps"] == pytest.approx(expected)
    assert row["pct_of_ceiling"] == pytest.approx(100 * expected / 4.0)


def test_pool_bytes_formula():
    mp = pool_suite.PoolOp("max_pool2d", (3, 2, 1), window=True, max=True)
    shape = (2, 3, 8, 8)  # output 4x4
    inp, out, idx = 2 * 3 * 64 * 4, 2 * 3 * 16 * 4, 2 * 3 * 16 * 8
    assert pool_suite.pool_bytes(mp, shape, torch.float32, "forward", False) == inp + out
    assert pool_suite.pool_bytes(mp, shape, torch.float32, "forward", True) == inp + out + idx
    assert pool_suite.pool_bytes(mp, shape, torch.float32, "forward+backward", True) == 2 * (inp + out + idx)
    ap = pool_suite.PoolOp("adaptive_avg_pool2d", (1,), window=False, max=False)
    assert pool_suite.pool_bytes(ap, shape, torch.float16, "forward", False) == 2 * 3 * 64 * 2 + 2 * 3 * 1 * 2


def test_pool_cases_count_indices_per_provider():
    fwd = pool_suite.make_case(pool_suite.POOL_OPS[0], (2, 3, 8, 8), torch.float32, "nchw", "forward")
    assert fwd.params["indices_written_by"] == ["torch"]
    assert fwd.bytes_moved("torch") - fwd.bytes_moved("bigkern-cpu") == 2 * 3 * 16 * 8
    avg = pool_suite.make_case(pool_suite.POOL_OPS[2], (2, 3, 8, 8), torch.float32, "nchw", "forward+backward")
    assert avg.params["indices_written_by"] == []


def test_forward_runs_without_grad_and_backward_computes_grads():
    seen = []

    def probe(x):
        seen.append(torch.is_grad_enabled())
        return x * 2

    (fwd,) = run([tiny_case("forward")], [Provider.of("p", probe)])
    assert fwd["skipped_reason"] is None and not any(seen)
    seen.clear()
    (bwd,) = run([tiny_case("forward+backward")], [Provider.of("p", probe)])
    assert bwd["skipped_reason"] is None and all(seen)


def test_inputs_are_rotated():
    seen = set()

    def probe(x):
        seen.add(x.data_ptr())

    case = tiny_case()
    per_set = case.make_inputs("cpu").nbytes()
    timing = Timing(target_s=0.0, warmup_calls=1, warmup_s=0.0, min_samples=6, rotate_bytes=3 * per_set)
    run([case], [Provider.of("p", probe)], timing)
    assert len(seen) == 3


def test_providers_take_turns_over_rounds():
    order = []
    timing = Timing(target_s=0.0, warmup_calls=1, warmup_s=0.0, min_samples=3, rotate_bytes=0, rounds=3)
    providers = [Provider.of("a", lambda x: order.append("a")), Provider.of("b", lambda x: order.append("b"))]
    rows = run([tiny_case()], providers, timing)
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    assert switches == 5  # a b a b a b
    assert all(r["median_ms"] is not None for r in rows)


def test_percentiles():
    stats = harness.summarize([0.005, 0.001, 0.003, 0.002, 0.004])
    assert stats == pytest.approx({"median_ms": 3.0, "p20_ms": 1.8, "p80_ms": 4.2})


def test_pool_suite_on_a_small_case_runs_bigkern_cpu_and_torch():
    case = pool_suite.make_case(pool_suite.POOL_OPS[0], (2, 8, 16, 16), torch.float32, "channels_last", "forward+backward")
    x = case.make_inputs("cpu").args[0]
    assert x.is_contiguous(memory_format=torch.channels_last) and x.requires_grad
    rows = harness.run_cases([case], lambda c: pool_suite.providers(c, "cpu", compile=False), "cpu", FAST)
    by_name = {r["provider"]: r for r in rows}
    assert set(by_name) == {"bigkern-cpu", "bigkern-triton", "torch"}
    assert by_name["bigkern-cpu"]["skipped_reason"] is None and by_name["torch"]["skipped_reason"] is None
    assert by_name["bigkern-triton"]["skipped_reason"]  # no GPU: Triton only under the interpreter, not timed
    assert by_name["bigkern-cpu"]["gbps"] > 0
    assert by_name["bigkern-cpu"]["speedup_vs_best_baseline"] == pytest.approx(
        by_name["torch"]["median_ms"] / by_name["bigkern-cpu"]["median_ms"]
    )


def test_pool_suite_cases_and_selection():
    cpu = pool_suite.cases("cpu", None, quick=False)
    forward = [c for c in cpu if c.direction == "forward"]
    assert {c.shape for c in forward} == {(16, 64, 112, 112)}  # the acceptance benchmark
    assert {c.layout for c in forward} == {"nchw", "channels_last"}
    assert {c.label for c in cpu} == {
        "max_pool2d(3,2,1)", "max_pool2d(2,2)", "avg_pool2d(3,2,1)",
        "adaptive_avg_pool2d(7)", "adaptive_avg_pool2d(1)", "adaptive_max_pool2d(7)",
    }  # fmt: skip
    assert len({c.id for c in cpu}) == len(cpu)
    picked = harness.select_cases(cpu, ["max_pool2d(2"], directions=["forward"], layouts=["nchw"])
    assert [c.id for c in picked] == ["max_pool2d(2,2) 16x64x112x112 float32 nchw forward"]
    quick = pool_suite.cases("cpu", [torch.bfloat16], quick=True)
    assert {c.dtype for c in quick} == {torch.bfloat16} and all(c.shape == (8, 64, 56, 56) for c in quick)


def test_results_files_have_the_schema(tmp_path, monkeypatch):
    suite = types.ModuleType("fake_bench_suite")
    suite.cases = lambda device, dtypes, quick: [tiny_case(bytes_moved=lambda p: 1000)]
    suite.providers = lambda case, device, compile: [Provider.of("bigkern-cpu", torch.neg), Provider.of("torch", torch.neg)]
    monkeypatch.setitem(sys.modules, "fake_bench_suite", suite)
    monkeypatch.setitem(bench.SUITES, "fake", "fake_bench_suite")
    timing = Timing(target_s=0.01, warmup_calls=1, warmup_s=0.0, min_samples=3, ceiling_bytes=1 << 20)
    doc = harness.run_benchmark(["fake"], "cpu", quick=True, timing=timing, command="bigkern bench fake")
    json_path, csv_path = harness.save_results(doc, tmp_path / "out" / "results.json")
    assert csv_path == tmp_path / "out" / "results.csv"

    loaded = json.loads(json_path.read_text())
    assert loaded["schema_version"] == 1 and loaded["command"] == "bigkern bench fake"
    for key in ("environment", "ceiling", "rows"):
        assert key in loaded
    env = loaded["environment"]
    for key in ("bigkern", "bigkern_git_commit", "torch", "cuda", "triton", "python", "cpu_model", "cpu_count",
                "torch_num_threads", "gpu_name", "nvidia_driver", "bigkern_C"):  # fmt: skip
        assert key in env
    assert loaded["ceiling"]["copy_gbps"] > 0
    assert [r["provider"] for r in loaded["rows"]] == ["bigkern-cpu", "torch"]
    for row in loaded["rows"]:
        assert set(row) == set(harness.ROW_KEYS)
        assert row["pct_of_ceiling"] > 0

    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == harness.ROW_KEYS
        csv_rows = list(reader)
    assert [r["provider"] for r in csv_rows] == ["bigkern-cpu", "torch"]
    assert csv_rows[0]["shape"] == "2x3x8x8" and json.loads(csv_rows[0]["params"]) == {"k": 1}

    table = harness.format_table(loaded["rows"])
    assert "bigkern-cpu" in table and "GB/s" in table and "speedup" in table


def test_unknown_suite_is_an_error():
    with pytest.raises(ValueError, match="unknown benchmark suite"):
        bench.load_suite("nope")


def test_device_slug_and_default_path():
    assert environment.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert environment.slug("  AMD EPYC 7B13 64-Core Processor ") == "amd-epyc-7b13-64-core-processor"
    assert re.fullmatch(r"cpu(-[a-z0-9]+)*", environment.device_slug("cpu"))
    path = harness.default_results_path("cpu", datetime.date(2026, 1, 2))
    assert path.parent.parts[-2:] == ("benchmarks", "results")
    assert path.name == f"{environment.device_slug('cpu')}-2026-01-02.json"
    one_suite = harness.default_results_path("cpu", datetime.date(2026, 1, 2), suites=["attention"])
    assert one_suite.name == f"{environment.device_slug('cpu')}-2026-01-02-attention.json"


def test_environment_record():
    env = environment.collect("cpu")
    assert env["torch"] == torch.__version__
    assert env["cpu_count"] >= 1 and env["torch_num_threads"] >= 1
    assert {"with_cuda_kernels", "cuda_archs", "cpu_isa", "cpu_amx", "sha256_16"} <= set(env["bigkern_C"])
    assert env["bigkern_git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["bigkern_git_commit"])


def test_compile_providers_add_max_autotune_on_gpus_only():
    assert [p.name for p in harness.compile_providers(torch.neg, "cpu")] == ["torch.compile"]
    names = [p.name for p in harness.compile_providers(torch.neg, "cuda")]  # built lazily: no GPU needed here
    assert names == ["torch.compile", "torch.compile-max-autotune"]
