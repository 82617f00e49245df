"""The CUDA attention forward kernels (csrc/cuda/attention/) against the float64 oracle.

Calls torch.ops.bigkern.attention_forward directly, so every kernel path is hit on purpose:
each head-dim bucket (and head dims below their bucket), the split-KV decode path (few query
tiles, many keys) and the plain one, GQA, causal modes 0/1/2, bool and additive masks read
through broadcast strides, dropout (the oracle draws the very same mask), strided q/k/v, and
rows that see no key. Low-precision outputs follow tests/_tolerance.py (the error of the
same math in the input dtype sets the bound); lse is compared in float32.
"""

from __future__ import annotations

import math

import pytest
import torch

from bigkern.reference.attention import attention_math
from tests._tolerance import assert_matches

pytestmark = pytest.mark.cuda

DTYPES = [torch.float16, torch.bfloat16]


def _inputs(batch, heads_q, heads_kv, len_q, len_k, head_dim, dtype, seed=0, strided=False):
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def draw(heads, length):
        if strided:  # (B, L, H, D) memory viewed as (B, H, L, D): rows strided by H * D
            return torch.randn(batch, length, heads, head_dim, device="cuda", generator=gen, dtype=dtype).transpose(1, 2)
        return torch.randn(batch, heads, length, head_dim, device="cuda", generator=gen, dtype=dtype)

    return draw(heads_q, len_q), draw(heads_kv, len_k), draw(heads_kv, len_k)


def _check(q, k, v, mask=None, dropout_p=0.0, causal=0, scale=None, seed=1234, offset=7):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out, lse = torch.ops.bigkern.attention_forward(q, k, v, mask, dropout_p, causal, scale, seed, offset)
    mask64 = mask if mask is None or mask.dtype == torch.bool else mask.double()
    ref, ref_lse = attention_math(q.double(), k.double(), v.double(), mask64, dropout_p, causal, scale, seed, offset,
                                  return_lse=True)
    low = attention_math(q, k, v, mask, dropout_p, causal, scale, seed, offset)
    assert_matches(out, low, ref, "out")
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isinf(lse) & (lse > 0), ~finite), "lse: rows without a visible key must be +inf"
    torch.testing.assert_close(lse[finite], ref_lse[finite].float(), rtol=1e-4, atol=2e-3)
    assert torch.all(out[~finite] == 0), "rows without a visible key must be zero"
    return out, lse


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [8, 32, 40, 64, 72, 96, 128, 136, 160, 192, 224, 256])
def test_every_bucket(dtype, head_dim):
    q, k, v = _inputs(2, 3, 3, 77, 131, head_dim, dtype)
    _check(q, k, v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [0, 1, 2])
@pytest.mark.parametrize("len_q,len_k", [(1, 1), (129, 65), (65, 129), (200, 200)])
def test_causal_and_lengths(dtype, causal, len_q, len_k):
    q, k, v = _inputs(2, 4, 4, len_q, len_k, 64, dtype, seed=len_q + len_k)
    _check(q, k, v, causal=causal)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("causal", [0, 2])
def test_split_kv_decode(dtype, head_dim, causal):
    # One query row, 4 heads sharing one K/V head, 5000 keys: far fewer CTAs than SMs, so the
    # keys are split into chunks and combined.
    q, k, v = _inputs(1, 4, 1, 1, 5000, head_dim, dtype, seed=head_dim)
    _check(q, k, v, causal=causal)
    q, k, v = _inputs(2, 2, 2, 9, 3001, head_dim, dtype, seed=head_dim + 1)
    _check(q, k, v, causal=causal, dropout_p=0.2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [32, 128, 192])
def test_gqa_strided(dtype, head_dim):
    q, k, v = _inputs(2, 8, 2, 100, 150, head_dim, dtype, strided=True)
    assert q.stride(-2) != head_dim
    _check(q, k, v, causal=1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masks(dtype):
    batch, heads, len_q, len_k = 2, 3, 70, 90
    q, k, v = _inputs(batch, heads, heads, len_q, len_k, 64, dtype)
    gen = torch.Generator(device="cuda").manual_seed(5)
    # Key padding: (B, 1, 1, Lk) broadcast with stride 0 over heads and rows; the second batch
    # hides every key, so all its rows are empty.
    padding = torch.rand(batch, 1, 1, len_k, device="cuda", generator=gen) > 0.3
    padding[1] = False
    _check(q, k, v, mask=padding.expand(batch, heads, len_q, len_k))
    additive = torch.randn(len_q, len_k, device="cuda", generator=gen, dtype=dtype)
    additive[:, ::7] = float("-inf")
    _check(q, k, v, mask=additive.expand(batch, heads, len_q, len_k), causal=2)
    # A non-contiguous (transposed) full mask.
    full = torch.rand(batch, heads, len_k, len_q, device="cuda", generator=gen) > 0.5
    _check(q, k, v, mask=full.transpose(-1, -2), causal=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 160])
def test_dropout_matches_oracle(dtype, head_dim):
    q, k, v = _inputs(2, 2, 1, 90, 120, head_dim, dtype)
    out, _ = _check(q, k, v, dropout_p=0.3, causal=1)
    again, _ = torch.ops.bigkern.attention_forward(q, k, v, None, 0.3, 1, 1.0 / math.sqrt(head_dim), 1234, 7)
    assert torch.equal(out, again), "dropout must be a pure function of (seed, offset)"


def test_bottom_right_rows_without_keys():
    q, k, v = _inputs(1, 2, 2, 50, 20, 64, torch.float16)
    out, lse = _check(q, k, v, causal=2)
    assert torch.all(torch.isinf(lse[:, :, :30])) and torch.all(out[:, :, :30] == 0)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda q, k, v: (q.float(), k.float(), v.float()), "float16 or bfloat16"),
        (lambda q, k, v: (q, k, v[..., :32]), "head dim"),
        (lambda q, k, v: (q[..., :12], k[..., :12], v[..., :12]), "multiples of 8"),
        (lambda q, k, v: (q, k[:, :3], v[:, :3]), "multiple of k/v's heads"),
        (lambda q, k, v: (q.cpu(), k, v), "CUDA tensor"),
    ],
)
def test_bad_input(change, message):
    q, k, v = _inputs(1, 4, 4, 8, 8, 64, torch.float16)
    q, k, v = change(q, k, v)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.bigkern.attention_forward(q, k, v, None, 0.0, 0, 0.125, 0, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    """Schema, fake kernel, autograd registration and dispatch of the CUDA implementations."""
    q, k, v = (t.requires_grad_() for t in _inputs(1, 4, 2, 37, 53, 64, dtype))
    mask = (torch.rand(1, 1, 1, 53, device="cuda") > 0.2).expand(1, 4, 37, 53)
    for args in ((q, k, v, None, 0.0, 1, 0.125, 0, 0), (q, k, v, mask, 0.2, 2, 0.125, 42, 3)):
        torch.library.opcheck(torch.ops.bigkern.attention_forward.default, args)
    out, lse = torch.ops.bigkern.attention_forward(q, k, v, None, 0.0, 0, 0.125, 0, 0)
    grad = torch.randn_like(out)
    for deterministic in (False, True):
        args = (grad, q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), None, 0.0, 0, 0.125, 0, 0,
                deterministic)  # fmt: skip
        torch.library.opcheck(torch.ops.bigkern.attention_backward.default, args)
