"""Shared by the attention module tests: the backends to run under, and the gradient rule.

The module tests run on CPU tensors under every backend that serves them: "cpu" (the C++
kernel), "torch" (the reference) and "triton" (interpreted; tiny shapes only). A backend is
skipped, with the reason shown by ``pytest -ra``, only when it truly cannot run here.
"""

import importlib.util

import pytest
import torch

import bigkern
from bigkern import _library


def why_unavailable(backend: str) -> str | None:
    if backend == "cpu" and not torch._C._dispatch_has_kernel_for_dispatch_key("bigkern::attention_forward", "CPU"):
        return "bigkern::attention_forward has no CPU kernel registered (csrc/cpu/attention.cpp not built in)"
    if backend == "triton":
        if importlib.util.find_spec("bigkern.triton.attention") is None:
            return "bigkern/triton/attention.py (the Triton attention kernels) is not there"
        if not _library.HAS_TRITON:
            return "triton is not installed"
        if not _library.TRITON_INTERPRET:
            return "Triton runs CPU tensors only under TRITON_INTERPRET=1"
    return None


def _use(name):
    reason = why_unavailable(name)
    if reason is not None:
        pytest.skip(reason)
    return bigkern.use_backend(name)


@pytest.fixture(params=["cpu", "torch"])
def backend(request):
    """The parity grids: every backend that runs CPU tensors at full speed."""
    with _use(request.param):
        yield request.param


@pytest.fixture(params=["cpu", "torch", pytest.param("triton", marks=pytest.mark.triton)])
def any_backend(request):
    """Tiny cases only: adds "triton", which the interpreter runs slowly on the CPU."""
    with _use(request.param):
        yield request.param


def assert_grads_like_torch(names, ours, torch_grads, reference64, factor=3.0):
    """Each gradient at most ``factor`` x torch's own float32 error from the float64 reference.

    Gradients of attention differ from torch's by more than forward outputs do (the backward
    recomputes the softmax from the log-sum-exp), and torch's are no closer to the truth; so the
    rule of the op tests applies: max|ours - ref| <= factor * max|torch - ref| + 2e-6 * max|ref|.
    """
    for name, g, t, r in zip(names, ours, torch_grads, reference64, strict=True):
        assert g.shape == r.shape and g.dtype == t.dtype, f"gradient of {name}: shape or dtype differs"
        r = r.double()
        err = (g.double() - r).abs().max().item()
        torch_err = (t.double() - r).abs().max().item()
        slack = 2e-6 * max(r.abs().max().item(), 1.0)
        assert err <= factor * torch_err + slack, (
            f"gradient of {name}: max error {err:.3g} > {factor} x torch's {torch_err:.3g} + {slack:.2g}"
        )
