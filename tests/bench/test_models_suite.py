"""The models benchmark suite: cases, and bigkern's model against its torch.nn twin on one case."""

import torch

from bigkern.bench import harness
from bigkern.bench import models as suite
from bigkern.bench.harness import Timing

FAST = Timing(target_s=0.02, warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=10, rotate_bytes=0)


def test_cases_cover_every_model_in_both_directions():
    cases = suite.cases("cpu")
    assert {c.op for c in cases} == set(suite.MODELS)
    assert {c.direction for c in cases} == {"forward", "forward+backward"}
    assert all(c.dtype == torch.float32 for c in cases) and len({c.id for c in cases}) == len(cases)
    assert {c.op for c in suite.cases("cpu", quick=True)} == {"mnist_convnet", "transformer_lm"}
    assert all(c.dtype == torch.bfloat16 for c in suite.cases("cuda"))


def test_providers_run_the_same_network():
    for name in ("lenet5", "lstm_lm", "seq2seq"):
        case = suite.make_case(name, torch.float32, "forward")
        inputs = case.make_inputs("cpu")
        by_name = {p.name: p for p in suite.providers(case, "cpu")}
        with by_name["bigkern-cpu"].context():
            ours = by_name["bigkern-cpu"].make()(*inputs.args)
        theirs = by_name["torch"].make()(*inputs.args)
        assert ours.shape == suite.MODELS[name][4](case.shape[0])
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_a_training_step_case_is_timed_for_bigkern_and_torch():
    case = suite.make_case("lenet5", torch.float32, "forward+backward")
    rows = harness.run_cases([case], lambda c: suite.providers(c, "cpu"), "cpu", FAST)
    by_name = {r["provider"]: r for r in rows}
    assert by_name["bigkern-cpu"]["median_ms"] > 0 and by_name["torch"]["median_ms"] > 0
    expected = by_name["torch"]["median_ms"] / by_name["bigkern-cpu"]["median_ms"]
    assert abs(by_name["bigkern-cpu"]["speedup_vs_best_baseline"] - expected) < 1e-9
