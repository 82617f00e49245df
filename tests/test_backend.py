"""Backend selection: explicit choices, errors naming backend/op/reason, auto's fallbacks."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import bigkern
from bigkern import backend


def test_default_is_auto_and_cpu_tensors_use_cpu_kernels():
    assert bigkern.current_backend() == "auto"
    assert backend.select("max_pool2d", torch.randn(1)) == "cpu"


def test_use_backend_nests_and_restores():
    with bigkern.use_backend("torch"):
        assert bigkern.current_backend() == "torch"
        with bigkern.use_backend("cpu"):
            assert bigkern.current_backend() == "cpu"
        assert bigkern.current_backend() == "torch"
    assert bigkern.current_backend() == "auto"


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="'cudnn' is not a bigkern backend"):
        with bigkern.use_backend("cudnn"):
            pass


def test_explicit_backend_that_cannot_serve_raises_naming_backend_op_and_reason():
    x = torch.randn(1, 2, 8, 8)
    with bigkern.use_backend("cuda"), pytest.raises(bigkern.BackendUnavailableError) as err:
        bigkern.ops.max_pool2d(x, 2)
    message = str(err.value)
    assert "'cuda'" in message and "max_pool2d" in message and "cuda backend serves CUDA tensors" in message


def test_torch_backend_runs_the_reference():
    x = torch.randn(2, 3, 9, 9)
    with bigkern.use_backend("torch"):
        torch.testing.assert_close(bigkern.ops.avg_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1))


def test_auto_falls_back_and_records_why(monkeypatch):
    backend.clear_fallbacks()
    monkeypatch.setattr(backend, "auto_candidates", lambda op, x: ["cuda", "cpu", "torch"])
    x = torch.randn(1, 2, 8, 8)
    torch.testing.assert_close(bigkern.ops.max_pool2d(x, 2), F.max_pool2d(x, 2))
    ((op, skipped, reason), count), = backend.fallbacks().items()
    assert (op, skipped, count) == ("max_pool2d", "cuda", 1) and "CUDA tensors" in reason


def test_env_var_selects_backend_and_rejects_nonsense():
    code = "import bigkern; print(bigkern.current_backend())"
    env = dict(os.environ, BIGKERN_BACKEND="torch")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "torch"
    env["BIGKERN_BACKEND"] = "fast"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "BIGKERN_BACKEND='fast' is not a bigkern backend" in out.stderr
