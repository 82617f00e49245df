"""What ``bigkern train`` can train: each task owns its data, its model, its loss and its metrics.

A task is built from the parsed options (``--data``, ``--seq-len``, ``--max-chars``) and offers
``build_model()``, ``train_batches(batch_size, generator)``, ``loss(model, batch) -> (loss,
samples)`` and ``evaluate(model, batch_size) -> {metric: value}``; DEFAULTS holds the
hyperparameters each task's figures in the README were measured with.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from bigkern import models
from bigkern.training import data

#: per task: epochs, batch size, learning rate, optimizer, gradient clipping (None: off)
DEFAULTS = {
    "cnn": dict(epochs=12, batch_size=32, lr=3e-3, optimizer="adam", clip=None),
    "lenet": dict(epochs=15, batch_size=32, lr=3e-3, optimizer="adam", clip=None),
    "lstm": dict(epochs=3, batch_size=32, lr=3e-3, optimizer="adam", clip=5.0),
    "gru": dict(epochs=3, batch_size=32, lr=3e-3, optimizer="adam", clip=5.0),
    "rnn": dict(epochs=3, batch_size=32, lr=1e-3, optimizer="adam", clip=1.0),
    "transformer-lm": dict(epochs=3, batch_size=32, lr=4e-3, optimizer="adam", clip=1.0),
    "seq2seq": dict(epochs=6, batch_size=64, lr=3e-3, optimizer="adam", clip=1.0),
    "autoencoder": dict(epochs=20, batch_size=64, lr=2e-3, optimizer="adam", clip=None),
}


def _batches(tensors: tuple[torch.Tensor, ...], batch_size: int, generator: torch.Generator | None):
    """Mini-batches of rows (shuffled by ``generator`` when given; the last one may be smaller)."""
    count = len(tensors[0])
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    for start in range(0, count, batch_size):
        rows = order[start : start + batch_size]
        yield tuple(t[rows] for t in tensors)


class DigitsClassification:
    """MNISTConvNet or LeNet5 on scikit-learn's digits, upsampled to 28x28; test accuracy."""

    metric = "test_accuracy"

    def __init__(self, name: str, options) -> None:
        self.name = name
        self.train_set, self.test_set = data.digits(28)

    def build_model(self) -> torch.nn.Module:
        return models.MNISTConvNet() if self.name == "cnn" else models.LeNet5()

    def train_batches(self, batch_size, generator):
        return _batches(self.train_set, batch_size, generator)

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y), len(y)

    def evaluate(self, model, batch_size):
        loss = correct = 0.0
        for x, y in _batches(self.test_set, batch_size, None):
            logits = model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(-1) == y).sum().item()
        n = len(self.test_set[1])
        return {"test_loss": loss / n, "test_accuracy": correct / n}

    def state(self) -> dict:
        return {}


class CharacterLM:
    """A character-level language model (RecurrentLM with an LSTM, GRU or RNN, or TransformerLM) on
    the Shakespeare plays or ``--data PATH``; the last 10% of the text is held out; bits per character."""

    metric = "test_bpc"

    def __init__(self, name: str, options, vocab: str | None = None) -> None:
        self.name = name
        self.seq_len = options.seq_len
        if options.data:
            text = Path(options.data).read_text(encoding="utf-8", errors="replace")
        else:
            text = data.shakespeare_text()
        if options.max_chars:
            text = text[: options.max_chars]
        self.corpus = data.CharCorpus.from_text(text, vocab=vocab)
        self.train_chunks = data.chunks(self.corpus.train, self.seq_len)
        self.test_chunks = data.chunks(self.corpus.test, self.seq_len)

    def build_model(self) -> torch.nn.Module:
        vocab = len(self.corpus.vocab)
        if self.name == "transformer-lm":
            return models.TransformerLM(vocab, d_model=128, nhead=4, num_layers=3, dim_feedforward=512, dropout=0.1,
                                        max_len=max(self.seq_len, 256))  # fmt: skip
        return models.RecurrentLM(vocab, embedding_dim=64, hidden_size=256, num_layers=2, cell=self.name, dropout=0.1)

    def _logits(self, model, tokens):
        out = model(tokens)
        return out[0] if isinstance(out, tuple) else out

    def train_batches(self, batch_size, generator):
        return _batches((self.train_chunks,), batch_size, generator)

    def loss(self, model, batch):
        (chunk,) = batch
        logits = self._logits(model, chunk[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1)), len(chunk)

    def evaluate(self, model, batch_size):
        nats = 0.0
        for (chunk,) in _batches((self.test_chunks,), batch_size, None):
            logits = self._logits(model, chunk[:, :-1]).float()
            nats += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum").item()
        return {"test_bpc": nats / self.test_chunks[:, 1:].numel() / math.log(2)}

    def state(self) -> dict:
        return {"vocab": self.corpus.vocab}


class SequenceReversal:
    """Seq2SeqTransformer learning to reverse sequences of 4-12 tokens over a 10-token alphabet;
    metric: token accuracy of greedy decoding (every target token, EOS included) on held-out data."""

    metric = "test_token_accuracy"
    alphabet, min_len, max_len = 10, 4, 12
    train_count, test_count = 20000, 1000

    def __init__(self, name: str, options) -> None:
        generator = torch.Generator().manual_seed(1234)  # the data is fixed; --seed drives training
        self.train_set = data.reversal_task(self.train_count, self.alphabet, self.min_len, self.max_len, generator)
        self.test_set = data.reversal_task(self.test_count, self.alphabet, self.min_len, self.max_len, generator)

    def build_model(self) -> torch.nn.Module:
        vocab = data.FIRST_TOKEN + self.alphabet
        return models.Seq2SeqTransformer(vocab, vocab, d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                         dim_feedforward=128, dropout=0.0, max_len=64, pad_idx=data.PAD,
                                         bos_idx=data.BOS, eos_idx=data.EOS)  # fmt: skip

    def train_batches(self, batch_size, generator):
        return _batches(self.train_set, batch_size, generator)

    def loss(self, model, batch):
        src, tgt = batch
        logits = model(src, tgt[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt[:, 1:].reshape(-1),
                               ignore_index=data.PAD), len(src)  # fmt: skip

    def evaluate(self, model, batch_size):
        correct = total = sequences = 0
        for src, tgt in _batches(self.test_set, batch_size, None):
            decoded = model.greedy_decode(src, max_len=tgt.shape[1] - 1)[:, 1:]
            target = tgt[:, 1:]
            width = min(decoded.shape[1], target.shape[1])
            hit = torch.zeros_like(target, dtype=torch.bool)
            hit[:, :width] = decoded[:, :width] == target[:, :width]
            counted = target != data.PAD
            correct += (hit & counted).sum().item()
            total += counted.sum().item()
            sequences += (hit | ~counted).all(dim=1).sum().item()
        return {"test_token_accuracy": correct / total, "test_sequence_accuracy": sequences / len(self.test_set[0])}

    def state(self) -> dict:
        return {}


class DigitsAutoencoder:
    """The ConvAutoencoder (bigkern convolutions and pooling; an 8 x 7 x 7 code) on the 28x28
    digits; test MSE."""

    metric = "test_mse"

    def __init__(self, name: str, options) -> None:
        (train_x, _), (test_x, _) = data.digits(28)  # the labels are not used
        self.train_set, self.test_set = (train_x,), (test_x,)

    def build_model(self) -> torch.nn.Module:
        return models.ConvAutoencoder(1, (16, 8))

    def train_batches(self, batch_size, generator):
        return _batches(self.train_set, batch_size, generator)

    def loss(self, model, batch):
        (x,) = batch
        return F.mse_loss(model(x).float(), x), len(x)

    def evaluate(self, model, batch_size):
        total = sum(F.mse_loss(model(x).float(), x, reduction="sum").item() for (x,) in _batches(self.test_set, batch_size, None))
        return {"test_mse": total / self.test_set[0].numel()}

    def state(self) -> dict:
        return {}


TASKS = {
    "cnn": DigitsClassification, "lenet": DigitsClassification, "lstm": CharacterLM, "gru": CharacterLM,
    "rnn": CharacterLM, "transformer-lm": CharacterLM, "seq2seq": SequenceReversal, "autoencoder": DigitsAutoencoder,
}  # fmt: skip
