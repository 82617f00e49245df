"""The Triton kernels' autotuners keep their winners on disk (bigkern/triton/autotune.py)."""

import subprocess
import sys

import pytest

pytest.importorskip("triton")


def test_compiled_kernels_autotune_with_cached_results():
    """Imported for a GPU (not the interpreter), every autotuned kernel caches its results where
    this Triton can; checked in a fresh process, since the tests run under TRITON_INTERPRET=1."""
    code = (
        "import bigkern.triton.autotune as t, bigkern.triton.conv2d as c, bigkern.triton.rnn as r, "
        "bigkern.triton.attention as a\n"
        "kernels = [c._forward, c._dgrad, c._wgrad, r._forward, a._forward_kernel]\n"
        "assert all(type(k).__name__ == 'Autotuner' for k in kernels), kernels\n"
        "assert all(getattr(k, 'cache_results', False) == t.CACHES_RESULTS for k in kernels)\n"
        "print(t.CACHES_RESULTS)\n"
    )
    env = {"TRITON_INTERPRET": "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in ("True", "False")


def test_helper_passes_cache_results_only_where_supported(monkeypatch):
    import triton

    from bigkern.triton import autotune as helper

    seen = {}
    monkeypatch.setattr(triton, "autotune", lambda configs, key, **kwargs: seen.update(kwargs) or "decorator")
    monkeypatch.setattr(helper, "CACHES_RESULTS", True)
    assert helper.autotune([], key=["N"], warmup=5) == "decorator" and seen == {"warmup": 5, "cache_results": True}
    seen.clear()
    monkeypatch.setattr(helper, "CACHES_RESULTS", False)
    helper.autotune([], key=["N"])
    assert "cache_results" not in seen
