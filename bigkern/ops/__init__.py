"""bigkern's functional ops (torch.nn.functional semantics unless stated)."""

from bigkern.ops.attention import attention
from bigkern.ops.conv import conv2d
from bigkern.ops.pool import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d
from bigkern.ops.rnn import gru, gru_cell, lstm, lstm_cell, rnn, rnn_cell

__all__ = [
    "attention", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "lstm_cell", "gru_cell", "rnn_cell", "lstm", "gru", "rnn",
]  # fmt: skip
