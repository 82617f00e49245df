"""``bigkern profile``: a Chrome trace with bigkern's operators in it and the top-operator table."""

import json

import pytest
import torch

from bigkern import profiling
from bigkern.cli import main


@pytest.mark.parametrize("target, op", [("lenet", "bigkern::conv2d"), ("conv2d", "bigkern::conv2d_backward"),
                                        ("attention", "bigkern::attention_backward"), ("lstm", "bigkern::rnn_layer_backward")])  # fmt: skip
def test_profile_writes_a_trace_naming_bigkern_ops(target, op, tmp_path, capsys):
    trace = tmp_path / "trace.json"
    argv = ["profile", target, "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch-size", "1", "--trace", str(trace)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"bigkern profile {target} on cpu: 2 training steps" in out
    assert op in out and "bigkern operators:" in out and str(trace) in out
    names = {event.get("name") for event in json.loads(trace.read_text())["traceEvents"]}
    assert op in names and "bigkern profile step 1" in names


def test_inference_profiles_no_backward(tmp_path, capsys):
    assert main(["profile", "cnn", "--inference", "--steps", "1", "--batch-size", "2", "--trace", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "inference steps" in out and "bigkern::conv2d" in out and "conv2d_backward" not in out


def test_bigkern_share_counts_only_bigkern_operators():
    with torch.profiler.profile() as prof:
        torch.randn(64, 64) @ torch.randn(64, 64)
    assert "bigkern operators: 0.0%" in profiling.format_top(prof, torch.device("cpu"), 5)


def test_unknown_target_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profile", "resnet1000"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_profile_on_cuda_without_a_gpu_fails_cleanly(capsys):
    assert main(["profile", "lenet", "--device", "cuda"]) == 1
    assert "no CUDA device" in capsys.readouterr().err
