"""``bigkern tune``: the per-GPU cache of measured backend order, read by backend 'auto'."""

from types import SimpleNamespace

import pytest
import torch

from bigkern import backend, tuning
from bigkern.cli import main


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BIGKERN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_device_name", lambda index: "Fake GPU 80GB")
    tuning._cache_for_process.cache_clear()
    yield tmp_path
    tuning._cache_for_process.cache_clear()


def rows(cuda_ms, triton_ms):
    shared = {"case": "conv2d(3x3,s1)", "dtype": "bfloat16", "layout": "channels_last", "direction": "forward"}
    out = []
    for i, (c, t) in enumerate(zip(cuda_ms, triton_ms)):
        out += [dict(shared, shape=[i], provider="bigkern-cuda", median_ms=c), dict(shared, shape=[i], provider="bigkern-triton", median_ms=t)]
    return out


def test_preference_is_the_geometric_mean_of_time_ratios():
    order, ratio = tuning.preference_from_rows(rows([1.0, 4.0], [2.0, 1.0]))  # ratios 0.5 and 4: geomean sqrt(2)
    assert order == ["triton", "cuda"] and ratio == pytest.approx(2**0.5)
    order, ratio = tuning.preference_from_rows(rows([1.0, 1.0], [2.0, 1.5]))
    assert order == ["cuda", "triton"] and ratio < 1
    assert tuning.preference_from_rows([]) == (["cuda", "triton"], None)


def test_auto_reads_the_tuned_order_for_this_gpu_only():
    cuda_tensor = SimpleNamespace(device=torch.device("cuda", 0))  # auto_candidates reads only .device
    default = backend.auto_candidates("conv2d", cuda_tensor)
    tuning.store("Fake GPU 80GB", "conv2d", ["triton", "cuda"], [])
    assert backend.auto_candidates("conv2d", cuda_tensor) == ["triton", "cuda", "torch"]
    assert backend.auto_candidates("attention", cuda_tensor) == [*backend._CUDA_PREFERENCE["attention"], "torch"]  # not tuned
    tuning.store("Another GPU", "attention", ["triton", "cuda"], [])
    assert backend.auto_candidates("attention", cuda_tensor)[0] == backend._CUDA_PREFERENCE["attention"][0]
    assert tuning.clear()
    assert backend.auto_candidates("conv2d", cuda_tensor) == default


def test_cache_is_keyed_by_versions():
    key = tuning.device_key("Fake GPU 80GB")
    assert key.startswith("Fake GPU 80GB | torch ") and "triton" in key and "bigkern" in key


def test_show_and_clear(cache_dir, capsys):
    assert main(["tune", "--show"]) == 0
    assert "(empty" in capsys.readouterr().out
    tuning.store("Fake GPU 80GB", "max_pool2d", ["triton", "cuda"], [{"median_ms": 1.0}])
    assert main(["tune", "--show"]) == 0
    out = capsys.readouterr().out
    assert "Fake GPU 80GB" in out and "max_pool2d: auto tries triton then cuda (1 measurements)" in out
    assert main(["tune", "--clear"]) == 0
    assert "deleted" in capsys.readouterr().out and not (cache_dir / "tune.json").exists()


def test_a_damaged_cache_is_ignored(cache_dir):
    (cache_dir / "tune.json").write_text("{not json")
    assert tuning.load() == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_a_gpu_it_says_so_and_stores_nothing(cache_dir, capsys):
    assert main(["tune", "conv2d"]) == 1
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not (cache_dir / "tune.json").exists()


@pytest.mark.parametrize("argv", [["tune"], ["tune", "matmul"], ["tune", "conv2d", "--show"]])
def test_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
