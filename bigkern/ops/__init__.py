"""bigkern's functional ops (torch.nn.functional semantics unless stated)."""

from bigkern.ops.attention import attention
from bigkern.ops.pool import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d

__all__ = ["attention", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"]
