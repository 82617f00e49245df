"""bigkern: hand-written CUDA C++ and Triton kernels for PyTorch, as torch ops and drop-in torch.nn modules.

    import bigkern
    y = bigkern.ops.max_pool2d(x, 3, 2, 1)
    report = bigkern.swap(model)      # replace supported torch.nn modules in place
    with bigkern.use_backend("triton"):
        ...
"""

__version__ = "0.1.0"

import torch  # noqa: F401  (the extension links against torch: load it first)

from bigkern import _library  # noqa: E402,F401  (loads bigkern._C: the C++ ops)
from bigkern import ops  # noqa: E402  (registers fake kernels, autograd, Triton twins)
from bigkern import nn  # noqa: E402  (registers the drop-in modules with swap)
from bigkern import models  # noqa: E402
from bigkern.backend import BackendUnavailableError, current_backend, use_backend  # noqa: E402
from bigkern.swap import SwapReport, swap, unswap  # noqa: E402

__all__ = [
    "__version__", "ops", "nn", "models", "swap", "unswap", "SwapReport",
    "use_backend", "current_backend", "BackendUnavailableError",
]  # fmt: skip
