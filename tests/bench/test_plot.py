"""``bigkern bench plot``: the figures drawn from a results file, and its errors."""

import json

import pytest

from bigkern.cli import main

pytest.importorskip("matplotlib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(op, provider, median_ms, speedup=None, **extra):
    base = {"op": op, "case": f"{op}(x)", "shape": [2, 8, 1024, 64], "dtype": "float32", "layout": "bhsd",
            "direction": "forward", "params": {"length_kv": 1024, "causal": False}, "provider": provider,
            "median_ms": median_ms, "speedup_vs_best_baseline": speedup, "flops": None, "bytes": None, "tflops": None}  # fmt: skip
    base.update(extra)
    return base


def results(tmp_path, rows, ceiling=None):
    path = tmp_path / "run.json"
    document = {"command": "bigkern bench test", "environment": {"cpu_model": "Test CPU"}, "rows": rows,
                "ceiling": ceiling or {"copy_gbps": 20.0, "matmul_tflops": {"float32": 0.2}}}  # fmt: skip
    path.write_text(json.dumps(document))
    return path


def test_every_figure_is_drawn(tmp_path, capsys):
    rows = [
        row("attention", "bigkern-cpu", 2.0, speedup=1.5, tflops=0.15, flops=3e8, bytes=4e6),
        row("attention", "sdpa", 3.0, tflops=0.10, flops=3e8, bytes=4e6),
        row("attention", "bigkern-cpu", 16.0, speedup=1.1, tflops=0.16, flops=2.4e9, bytes=3e7,
            params={"length_kv": 8192, "causal": True}),
        row("max_pool2d", "bigkern-cpu", 1.0, speedup=0.8, flops=1e6, bytes=8e6),
    ]  # fmt: skip
    path = results(tmp_path, rows)
    assert main(["bench", "plot", str(path), "--out", str(tmp_path / "figs")]) == 0
    written = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert written == ["attention-run.png", "roofline-run.png", "speedup-run.png"]
    for name in written:
        data = (tmp_path / "figs" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert capsys.readouterr().out.count("wrote ") == 3


def test_only_the_figures_the_data_supports(tmp_path):
    path = results(tmp_path, [row("max_pool2d", "bigkern-cpu", 1.0, speedup=1.2), row("max_pool2d", "torch", 1.2)])
    assert main(["bench", "plot", str(path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["speedup-run.png"]


def test_nothing_to_plot_and_bad_files_exit_1(tmp_path, capsys):
    empty = results(tmp_path, [row("max_pool2d", "torch", 1.0)])
    assert main(["bench", "plot", str(empty)]) == 1
    assert "nothing to plot" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["bench", "plot", str(bad)]) == 1
    assert "not a bigkern bench results file" in capsys.readouterr().err


def test_plot_without_files_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "plot"])
    assert exc.value.code == 2 and "results JSON files" in capsys.readouterr().err
