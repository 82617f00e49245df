"""``bigkern bench --shapes FILE``: cases at the user's shapes, and clear errors for bad files."""

import json

import pytest
import torch

from bigkern.bench import shapes
from bigkern.cli import main


def write(tmp_path, spec) -> str:
    path = tmp_path / "shapes.json"
    path.write_text(json.dumps(spec) if not isinstance(spec, str) else spec)
    return str(path)


def test_every_suite_builds_cases_at_the_given_shapes(tmp_path):
    path = write(tmp_path, {
        "conv": [{"shape": [2, 16, 20, 20, 24], "kernel": 5, "stride": 2, "op": "conv2d+relu", "layout": "nchw"}],
        "attention": [{"batch": 1, "heads": 4, "kv_heads": 2, "length": 100, "head_dim": 32, "causal": True}],
        "pool": [{"shape": [2, 8, 33, 33], "op": "avg_pool2d", "args": [3, 2, 1], "directions": ["forward"]}],
        "lstm": [{"kind": "gru", "steps": 10, "batch": 4, "input_size": 16, "hidden": 24}],
        "models": [{"model": "lenet5"}],
    })  # fmt: skip
    cases = shapes.load(path, "cpu", [torch.float32, torch.bfloat16])
    assert sorted(cases) == ["attention", "conv", "lstm", "models", "pool"]
    conv = cases["conv"]
    assert len(conv) == 4  # 2 directions x 2 dtypes
    assert conv[0].shape == (2, 16, 20, 20, 24) and conv[0].params["kernel"] == 5 and conv[0].params["stride"] == 2
    assert conv[0].op == "conv2d+relu" and conv[0].layout == "nchw"
    assert {c.dtype for c in conv} == {torch.float32, torch.bfloat16}
    att = cases["attention"][0]
    assert att.shape == (1, 4, 100, 32) and att.params == {"heads_kv": 2, "length_kv": 100, "causal": True}
    assert [c.direction for c in cases["pool"]] == ["forward", "forward"] and cases["pool"][0].label == "avg_pool2d(3,2,1)"
    assert cases["lstm"][0].op == "gru" and cases["models"][0].op == "lenet5"
    x = conv[0].make_inputs("cpu").args[0]
    assert x.shape == (2, 16, 20, 20)


def test_quick_keeps_forward_only(tmp_path):
    path = write(tmp_path, {"lstm": [{}]})
    assert [c.direction for c in shapes.load(path, "cpu", quick=True)["lstm"]] == ["forward"]


@pytest.mark.parametrize("spec, message", [
    ("not json", "Expecting value"),
    ([], "an object keyed by suite"),
    ({"matmul": []}, "unknown suite 'matmul'"),
    ({"conv": [{}]}, "conv[0]: missing 'shape'"),
    ({"conv": [{"shape": [1, 2, 3, 4, 5], "kernal": 3}]}, "unknown key 'kernal'"),
    ({"pool": [{"shape": [1, 2, 8, 8], "op": "median_pool2d"}]}, "op one of"),
    ({"models": [{"model": "resnet"}]}, "model must be one of"),
    ({"lstm": [{"directions": ["sideways"]}]}, "direction 'sideways'"),
])  # fmt: skip
def test_bad_files_name_the_problem(tmp_path, spec, message):
    with pytest.raises(shapes.ShapesError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        shapes.load(write(tmp_path, spec), "cpu")


def test_cli_runs_the_suites_the_file_names(tmp_path, capsys):
    path = write(tmp_path, {"pool": [{"shape": [1, 4, 9, 9], "op": "max_pool2d", "args": [2, 2], "directions": ["forward"]}]})
    out = tmp_path / "run.json"
    assert main(["bench", "--shapes", path, "--device", "cpu", "--quick", "--no-progress", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["op"] for r in rows} == {"max_pool2d"} and {tuple(r["shape"]) for r in rows} == {(1, 4, 9, 9)}
    assert "bigkern bench pool" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--shapes", write(tmp_path, {"conv": [{}]}), "--no-save"])
    assert exc.value.code == 2
