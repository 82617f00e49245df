"""Recurrent models: sequence classifiers (LSTMClassifier, GRUClassifier, RNNClassifier) and a
character- or token-level language model (RecurrentLM), built on bigkern.nn.LSTM / GRU / RNN."""

from __future__ import annotations

import torch
from torch import nn

import bigkern.nn as bnn

CELLS = {"lstm": bnn.LSTM, "gru": bnn.GRU, "rnn": bnn.RNN}


def _recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float,
                     bidirectional: bool = False) -> nn.Module:  # fmt: skip
    if cell not in CELLS:
        raise ValueError(f"cell={cell!r}: expected one of {sorted(CELLS)}")
    return CELLS[cell](input_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0,
                       bidirectional=bidirectional)  # fmt: skip


class _RecurrentClassifier(nn.Module):
    """A stacked recurrent layer over a (N, T, input_size) sequence, or over token ids (N, T) when
    vocab_size is given (an embedding first); a linear classifier on the last step's output
    (both directions' final states when bidirectional)."""

    cell: str

    def __init__(self, input_size: int, hidden_size: int = 128, num_classes: int = 10, num_layers: int = 2,
                 dropout: float = 0.0, bidirectional: bool = False, vocab_size: int | None = None) -> None:  # fmt: skip
        super().__init__()
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, input_size)
        self.rnn = _recurrent_layer(self.cell, input_size, hidden_size, num_layers, dropout, bidirectional)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            x = self.embedding(x)
        out, _ = self.rnn(x)
        hidden = self.rnn.hidden_size
        if self.rnn.bidirectional:  # forward direction's last step, backward direction's first
            last = torch.cat([out[:, -1, :hidden], out[:, 0, hidden:]], dim=-1)
        else:
            last = out[:, -1]
        return self.head(last)


class LSTMClassifier(_RecurrentClassifier):
    __doc__ = _RecurrentClassifier.__doc__
    cell = "lstm"


class GRUClassifier(_RecurrentClassifier):
    __doc__ = _RecurrentClassifier.__doc__
    cell = "gru"


class RNNClassifier(_RecurrentClassifier):
    __doc__ = _RecurrentClassifier.__doc__
    cell = "rnn"


class RecurrentLM(nn.Module):
    """Embedding -> stacked LSTM/GRU/RNN -> linear head to the vocabulary (a char-RNN).

    forward(tokens (N, T), state=None) -> (logits (N, T, vocab), state): pass the state back in to
    continue a sequence (truncated backpropagation through time); ``generate`` samples from it.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 64, hidden_size: int = 256, num_layers: int = 2,
                 cell: str = "lstm", dropout: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = _recurrent_layer(cell, embedding_dim, hidden_size, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):
        out, state = self.rnn(self.embedding(tokens), state)
        return self.head(self.dropout(out)), state

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, length: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """Continue ``prompt`` (N, T0) by ``length`` sampled tokens (argmax when temperature == 0)."""
        logits, state = self(prompt)
        tokens = [prompt]
        for _ in range(length):
            step = logits[:, -1]
            if temperature == 0:
                nxt = step.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(step.float() / temperature, -1), 1, generator=generator)
            tokens.append(nxt)
            logits, state = self(nxt, state)
        return torch.cat(tokens, dim=1)
