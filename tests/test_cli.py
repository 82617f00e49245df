"""The ``bigkern`` command line: info, bench, usage errors, ``python -m bigkern``."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bigkern
from bigkern.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_info_prints_versions_and_each_op_with_its_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for text in (bigkern.__version__, torch.__version__, "Triton", "CUDA kernels", "ISA", "backend"):
        assert text in out
    for op in bigkern.ops.__all__:
        assert op in out
    assert out.count("backends: cpu, ") == len(bigkern.ops.__all__)  # every op runs on the CPU's C++ kernels
    if not torch.cuda.is_available():
        assert "no cuda: the input is on cpu" in out  # the reason a backend cannot serve, printed


def test_info_json():
    from bigkern.cli import collect_info, format_info

    info = collect_info()
    assert set(info["ops"]) == set(bigkern.ops.__all__)
    assert format_info(info)


def test_info_json_flag(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bigkern"] == bigkern.__version__ and info["torch"] == torch.__version__
    assert info["extension"]["with_cuda_kernels"] == bigkern._library.WITH_CUDA_KERNELS
    assert info["devices"][0]["device"] == "cpu"
    cpu = info["ops"]["max_pool2d"]["cpu"]
    assert cpu["backends"]["cpu"] == {"available": True, "reason": None}
    assert cpu["backends"]["torch"]["available"] and cpu["auto"] == "cpu"
    assert cpu["backends"]["cuda"]["available"] is False and cpu["backends"]["cuda"]["reason"]


def test_bench_pool_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "results" / "run.json"
    argv = ["bench", "pool", "--quick", "--device", "cpu", "--out", str(out), "--no-progress",
            "--filter", "adaptive_avg_pool2d(1)", "--direction", "forward", "--layout", "nchw"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "bigkern-cpu" in printed and "torch" in printed and str(out) in printed
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 1 and doc["command"].startswith("bigkern bench pool --quick")
    rows = {r["provider"]: r for r in doc["rows"]}
    assert {"bigkern-cpu", "torch"} <= set(rows)
    for name in ("bigkern-cpu", "torch"):
        assert rows[name]["skipped_reason"] is None and rows[name]["median_ms"] > 0
        assert rows[name]["op"] == "adaptive_avg_pool2d" and rows[name]["layout"] == "nchw"
    assert rows["bigkern-cpu"]["speedup_vs_best_baseline"] > 0
    assert out.with_suffix(".csv").is_file()


def test_bench_out_directory_gets_the_default_file_name(tmp_path, capsys):
    argv = ["bench", "pool", "--quick", "--device", "cpu", "--out", str(tmp_path), "--no-progress", "--provider",
            "torch", "--filter", "max_pool2d(2,2)", "--direction", "forward", "--layout", "nchw"]  # fmt: skip
    assert main(argv) == 0
    (json_file,) = tmp_path.glob("*.json")
    assert json_file.name.startswith("cpu-") and json_file.with_suffix(".csv").is_file()
    assert json.loads(json_file.read_text())["rows"]


def test_bench_no_save_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--quick", "--device", "cpu", "--no-save", "--no-progress", "--provider", "torch",
            "--filter", "max_pool2d(2,2)", "--direction", "forward", "--layout", "channels_last"]  # fmt: skip
    assert main(argv) == 0
    assert "max_pool2d(2,2)" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [["frobnicate"], ["tune"], ["profile"], ["train"], ["bench", "--bogus"], ["bench", "nosuchsuite"], [],
     ["bench", "--device", "tpu"], ["bench", "--dtype", "float7", "--no-save"]],
)  # fmt: skip
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: bigkern" in capsys.readouterr().err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "bench", "train", "profile", "tune"):
        assert command in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_bench_on_cuda_without_a_gpu_fails_cleanly(capsys):
    assert main(["bench", "--device", "cuda", "--no-save"]) == 1
    assert "no CUDA device" in capsys.readouterr().err


def test_python_dash_m_bigkern():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "bigkern", "info", "--json"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bigkern"] == bigkern.__version__


def stored_run(tmp_path, scale: float) -> Path:
    """Run a tiny pool benchmark, then store it with every median multiplied by ``scale``."""
    out = tmp_path / "stored.json"
    argv = ["bench", "pool", "--quick", "--device", "cpu", "--out", str(out), "--no-progress", "--filter",
            "adaptive_avg_pool2d(1)", "--direction", "forward", "--layout", "nchw"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    for row in doc["rows"]:
        if row["median_ms"]:
            row["median_ms"] *= scale
    out.write_text(json.dumps(doc))
    return out


COMPARED = ["bench", "pool", "--quick", "--device", "cpu", "--no-save", "--no-progress", "--filter",
            "adaptive_avg_pool2d(1)", "--direction", "forward", "--layout", "nchw"]  # fmt: skip


def test_compare_prints_changes_and_passes_when_faster(tmp_path, capsys):
    stored = stored_run(tmp_path, scale=100.0)  # the stored run was 100x slower: now every row is faster
    capsys.readouterr()
    assert main([*COMPARED, "--compare", str(stored), "--fail-on-regression", "10"]) == 0
    out = capsys.readouterr().out
    assert f"compared with {stored}" in out and "bigkern-cpu" in out
    assert re.search(r" -9[0-9]\.[0-9]%", out), out  # about -99%, whatever this run's own noise
    assert "no bigkern row is slower by more than 10%" in out


def test_fail_on_regression_exits_1_when_bigkern_is_slower(tmp_path, capsys):
    stored = stored_run(tmp_path, scale=0.01)  # the stored run was 100x faster: a regression
    capsys.readouterr()
    assert main([*COMPARED, "--compare", str(stored), "--fail-on-regression", "10"]) == 1
    captured = capsys.readouterr()
    assert "REGRESSION" in captured.out and "slower by more than 10%: failing" in captured.err
    assert main([*COMPARED, "--compare", str(stored)]) == 0  # without a threshold it only reports


def test_regressions_count_bigkern_rows_only():
    from bigkern.bench.compare import Change, regressions

    def row(provider):
        return {"provider": provider}

    changes = [Change(row("torch"), 1.0, 3.0), Change(row("bigkern-cpu"), 1.0, 1.05), Change(row("bigkern-cuda"), 1.0, 1.2)]
    assert [c.row["provider"] for c in regressions(changes, 10)] == ["bigkern-cuda"]


@pytest.mark.parametrize("content", [None, "not json", '{"no": "rows"}'])
def test_compare_with_a_bad_file_is_a_usage_error(tmp_path, capsys, content):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        main([*COMPARED, "--compare", str(path)])
    assert exc.value.code == 2 and "--compare" in capsys.readouterr().err


def test_fail_on_regression_needs_compare(capsys):
    with pytest.raises(SystemExit) as exc:
        main([*COMPARED, "--fail-on-regression", "5"])
    assert exc.value.code == 2 and "needs --compare" in capsys.readouterr().err
