"""Which implementation serves an op call: the backend model.

Backends:
    "cpu"     C++ kernels (bigkern._C) for CPU tensors
    "cuda"    hand-written CUDA kernels (bigkern._C) for CUDA tensors
    "triton"  Triton kernels for CUDA tensors (CPU tensors too under TRITON_INTERPRET=1)
    "torch"   the plain-PyTorch reference (bigkern.reference), which serves everything
    "auto"    CPU tensors -> "cpu"; CUDA tensors -> the faster of "cuda" and "triton" for that
              op, from `bigkern tune`'s cache for this GPU when there is one (bigkern/tuning.py),
              else from backend_table.json, then the other, then "torch".

Choose with ``bigkern.use_backend(name)`` (a context manager) or the BIGKERN_BACKEND
environment variable (read at import). An explicitly requested backend that cannot serve a
call raises BackendUnavailableError naming the backend, the op and the reason; "auto" moves on
to the next candidate and records why (see ``fallbacks()``).

The setting is process-wide (like torch.backends flags), not per thread, so that
torch.compile can trace the choice as a constant.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from importlib import resources

import torch

from bigkern import _library

BACKENDS = ("auto", "cpu", "cuda", "triton", "torch")


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot serve this call."""


def _validated(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source}={name!r} is not a bigkern backend; expected one of {', '.join(BACKENDS)}")
    return name


_requested = _validated(os.environ.get("BIGKERN_BACKEND", "auto").strip().lower() or "auto", "BIGKERN_BACKEND")
_fallbacks: Counter = Counter()


def _load_cuda_preferences() -> dict[str, list[str]]:
    text = resources.files("bigkern").joinpath("backend_table.json").read_text()
    return json.loads(text)["cuda_preference"]


_CUDA_PREFERENCE = _load_cuda_preferences()


def current_backend() -> str:
    """The backend requested now: the innermost ``use_backend``, else BIGKERN_BACKEND, else "auto"."""
    return _requested


@contextlib.contextmanager
def use_backend(name: str):
    """Route bigkern ops inside the block to backend ``name`` ("auto", "cpu", "cuda", "triton", "torch")."""
    global _requested
    previous, _requested = _requested, _validated(name, "use_backend(name)")
    try:
        yield
    finally:
        _requested = previous


def why_not(backend: str, op: str, x: torch.Tensor) -> str | None:
    """None when ``backend`` can serve ``op`` on tensors like ``x``, else the reason it cannot."""
    device = x.device.type
    if backend == "torch":
        return None
    if backend == "cpu":
        return None if device == "cpu" else f"the input is on {x.device}, and the cpu backend serves CPU tensors"
    if backend == "cuda":
        if device != "cuda":
            return f"the input is on {x.device}, and the cuda backend serves CUDA tensors"
        if not _library.WITH_CUDA_KERNELS:
            return "bigkern._C was built without CUDA kernels (rebuild with a CUDA toolkit, BIGKERN_BUILD_CUDA=1)"
        return None
    if backend == "triton":
        if not _library.HAS_TRITON:
            return "triton is not installed (pip install 'bigkern[triton]')"
        if device == "cuda" or (device == "cpu" and _library.TRITON_INTERPRET):
            return None
        return f"the input is on {x.device}; Triton runs CUDA tensors, or CPU tensors under TRITON_INTERPRET=1"
    raise ValueError(f"unknown backend {backend!r}")


def auto_candidates(op: str, x: torch.Tensor) -> list[str]:
    """The order in which "auto" tries backends for ``op`` on tensors like ``x``."""
    if x.device.type == "cpu":
        return ["cpu", "torch"]
    if x.device.type == "cuda":
        from bigkern import tuning

        tuned = tuning.tuned_preference(op, x.device)  # `bigkern tune` on this GPU, when it was run
        return (tuned or list(_CUDA_PREFERENCE.get(op, ["cuda", "triton"]))) + ["torch"]
    return ["torch"]


def select(op: str, x: torch.Tensor, limits=None) -> str:
    """The concrete backend that serves this call of ``op`` (never "auto").

    ``limits(backend)``, when given, returns why that backend cannot serve this particular
    call (dtype, head dim, ...) or None; it is asked after the device checks pass.
    """

    def reason_for(candidate: str) -> str | None:
        reason = why_not(candidate, op, x)
        if reason is None and limits is not None and candidate != "torch":
            reason = limits(candidate)
        return reason

    requested = _requested
    if requested != "auto":
        reason = reason_for(requested)
        if reason is not None:
            raise BackendUnavailableError(f"backend {requested!r} cannot run bigkern.ops.{op}: {reason}")
        return requested
    for candidate in auto_candidates(op, x):
        reason = reason_for(candidate)
        if reason is None:
            return candidate
        if not torch.compiler.is_compiling():
            _fallbacks[(op, candidate, reason)] += 1
    raise AssertionError("unreachable: the torch backend serves every call")


def fallbacks() -> dict[tuple[str, str, str], int]:
    """Calls "auto" could not give to a preferred backend: {(op, backend passed over, reason): count}."""
    return dict(_fallbacks)


def clear_fallbacks() -> None:
    _fallbacks.clear()
