"""Loading the compiled extension and defining the Triton twins of its ops.

Every op schema is defined once, in C++ (csrc/schema/). The C++ kernels register under the
CPU and CUDA dispatch keys of namespace ``bigkern``. The Triton kernels serve the same devices,
so they cannot share those keys; instead each op gets a twin in namespace ``bigkern_triton``
whose schema is copied from the C++ one at import time (never written twice). Fake kernels
and autograd formulas are registered once per op, for both namespaces, by the op modules.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from bigkern import _C  # noqa: F401  (importing runs the C++ op registrations)

NATIVE_NAMESPACE = "bigkern"
TRITON_NAMESPACE = "bigkern_triton"

#: Whether the extension was compiled with CUDA kernels, and for which architectures.
WITH_CUDA_KERNELS: bool = bool(_C.with_cuda)
CUDA_ARCHS: tuple[str, ...] = tuple(a for a in _C.cuda_archs.split(";") if a)

#: Triton is optional (the ``triton`` extra). Under TRITON_INTERPRET=1 its kernels run on the CPU.
HAS_TRITON: bool = importlib.util.find_spec("triton") is not None
TRITON_INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

_triton_library = torch.library.Library(TRITON_NAMESPACE, "DEF")


def native_op(name: str):
    """The C++ op ``torch.ops.bigkern.<name>`` (CPU and CUDA kernels)."""
    return getattr(torch.ops.bigkern, name)


def triton_op(name: str):
    """The Triton twin ``torch.ops.bigkern_triton.<name>``."""
    return getattr(torch.ops.bigkern_triton, name)


def define_triton_twin(name: str, kernel) -> None:
    """Define ``bigkern_triton::<name>`` with the schema of ``bigkern::<name>`` and ``kernel`` as its impl.

    The impl is registered for CUDA tensors, and for CPU tensors too because the Triton
    interpreter runs kernels on the CPU (the op layer only routes CPU tensors here when
    TRITON_INTERPRET=1).
    """
    native = native_op(name).default
    schema = str(native._schema)
    assert schema.startswith(NATIVE_NAMESPACE + "::"), schema
    _triton_library.define(schema[len(NATIVE_NAMESPACE) + 2 :], tags=tuple(native.tags))
    for device in ("CUDA", "CPU"):
        _triton_library.impl(name, kernel, device)


def lazy_triton_kernel(module: str, name: str):
    """A launcher that imports ``bigkern.triton.<module>`` on first call (triton stays optional)
    and runs its ``name``; the impl registered for the Triton twin of op ``name``."""

    def launch(*args):
        kernels = importlib.import_module(f"bigkern.triton.{module}")
        return getattr(kernels, name)(*args)

    launch.__name__ = f"triton_{name}"
    return launch
