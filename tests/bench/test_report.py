"""``bigkern bench report``: the newest results per device and suite, as the README's tables."""

import json

import pytest

from bigkern.bench import report
from bigkern.cli import main


def results_file(directory, name, created, suites, rows, gpu=None):
    document = {"created": created, "command": f"bigkern bench {' '.join(suites)}", "suites": suites, "device": "cpu",
                "quick": False, "environment": {"gpu_name": gpu, "cpu_model": "Test CPU", "cpu_count": 2}, "rows": rows}  # fmt: skip
    (directory / name).write_text(json.dumps(document))


def row(provider, median, op="lstm", case="lstm(layers=2)"):
    return {"op": op, "case": case, "shape": [100, 32, 256, 256], "dtype": "float32", "layout": "lnh",
            "direction": "forward", "params": {"layers": 2}, "provider": provider, "median_ms": median}  # fmt: skip


def test_newest_file_per_device_and_suite_wins(tmp_path):
    results_file(tmp_path, "old.json", "2026-01-01T00:00:00", ["lstm"], [row("bigkern-cpu", 10.0), row("torch", 20.0)])
    results_file(tmp_path, "new.json", "2026-02-01T00:00:00", ["lstm"], [row("bigkern-cpu", 30.0), row("torch", 15.0)])
    results_file(tmp_path, "gpu.json", "2025-12-01T00:00:00", ["lstm"], [row("bigkern-cuda", 1.0), row("torch", 2.0)], gpu="NVIDIA H100")
    text = report.render(tmp_path)
    assert "#### CPU: Test CPU (2 cores)" in text and "#### NVIDIA H100" in text
    assert "new.json" in text and "old.json" not in text
    assert "| 30.000 | torch (15.000) | 0.50x |" in text
    assert "| 1.000 | torch (2.000) | 2.00x |" in text


def test_a_multi_suite_file_is_split_by_suite(tmp_path):
    rows = [row("bigkern-cpu", 1.0), row("torch", 2.0),
            row("bigkern-cpu", 4.0, op="max_pool2d", case="max_pool2d(2,2)"), row("torch", 2.0, op="max_pool2d", case="max_pool2d(2,2)")]  # fmt: skip
    results_file(tmp_path, "both.json", "2026-02-01T00:00:00", ["pool", "lstm"], rows)
    text = report.render(tmp_path)
    pool_part = text.split("**pool**")[1]
    lstm_part = text.split("**lstm**")[1].split("**pool**")[0]
    assert "max_pool2d" in pool_part and "lstm(layers=2)" not in pool_part
    assert "lstm(layers=2)" in lstm_part and "max_pool2d" not in lstm_part


def test_write_replaces_only_the_generated_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{report.BEGIN}\nold tables\n{report.END}\nafter\n")
    report.write_into(readme, "new tables\n")
    assert readme.read_text() == f"before\n{report.BEGIN}\nnew tables\n{report.END}\nafter\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no generated block"):
        report.write_into(readme, "x")


def test_cli_prints_the_committed_results(capsys):
    assert main(["bench", "report"]) == 0
    out = capsys.readouterr().out
    assert "#### CPU:" in out and "bigkern bench" in out and "| speedup |" in out
