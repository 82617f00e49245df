"""Philox4x32-10 in plain PyTorch: the dropout generator of the attention kernels, vectorised.

The same function as csrc/common/philox.h (see there for the counter layout). It works on int64
tensors holding unsigned 32-bit values; a 32x32-bit product is split in 16-bit halves so that
no intermediate leaves int64.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85


def _mulhilo(a: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    low_part = a * (c & 0xFFFF)  # < 2**48
    high_part = a * (c >> 16)  # < 2**48
    hi = (high_part + (low_part >> 16)) >> 16
    lo = ((high_part << 16) + low_part) & _MASK32  # wraps in int64; the low 32 bits are exact
    return hi, lo


def philox4x32_10(c0, c1, c2, c3, seed: int) -> tuple[torch.Tensor, ...]:
    """The four 32-bit outputs (as int64 tensors) for counters (c0, c1, c2, c3) and a 64-bit seed."""
    c0, c1, c2, c3 = torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64) for c in (c0, c1, c2, c3)))
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def dropout_threshold(dropout_p: float) -> int:
    """Weights whose random number is below this are dropped: floor(p * 2**32), at most 2**32 - 1."""
    return min(int(dropout_p * 4294967296.0), _MASK32)


def attention_keep_mask(batch: int, heads: int, lq: int, lk: int, dropout_p: float, seed: int, offset: int,
                        device=None) -> torch.Tensor:
    """Bool (batch, heads, lq, lk): which attention weights dropout keeps."""
    j = torch.arange(lk, dtype=torch.int64, device=device)
    i = torch.arange(lq, dtype=torch.int64, device=device).view(lq, 1)
    bh = torch.arange(batch * heads, dtype=torch.int64, device=device).view(batch * heads, 1, 1)
    words = philox4x32_10(j >> 2, i, bh, offset & _MASK32, seed)
    lane = (j & 3).expand(batch * heads, lq, lk)
    r = torch.where(lane == 0, words[0], torch.where(lane == 1, words[1], torch.where(lane == 2, words[2], words[3])))
    return (r >= dropout_threshold(dropout_p)).view(batch, heads, lq, lk)
