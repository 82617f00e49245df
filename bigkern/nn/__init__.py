"""Drop-in torch.nn modules backed by bigkern's kernels."""

from bigkern.nn.attention import MultiheadAttention
from bigkern.nn.conv import Conv2d
from bigkern.nn.pool import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d
from bigkern.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from bigkern.nn.transformer import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ = [
    "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
    "MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "TransformerEncoder", "TransformerDecoder", "Transformer",
    "LSTM", "LSTMCell", "GRU", "GRUCell", "RNN", "RNNCell",
]  # fmt: skip
