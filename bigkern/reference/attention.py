"""Reference attention in plain PyTorch, on the normalised 4-D problem of the attention ops.

``attention_math`` is the explicit softmax(scale * q k^T + mask) v: it materialises the
Lq x Lk matrix, so it is the oracle for tests (run it in float64) and the "torch" backend's
path when dropout is on (it draws the very same dropout mask as the kernels, from
bigkern.reference.philox). Without dropout the "torch" backend calls
F.scaled_dot_product_attention, which torch serves with its fused kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bigkern.reference.philox import attention_keep_mask

CAUSAL_NONE, CAUSAL_TOP_LEFT, CAUSAL_BOTTOM_RIGHT = 0, 1, 2


def visible_keys(lq: int, lk: int, causal: int, device=None) -> torch.Tensor | None:
    """Bool (lq, lk): which keys each query may see under the causal mode (None: all)."""
    if causal == CAUSAL_NONE:
        return None
    i = torch.arange(lq, device=device).view(lq, 1)
    j = torch.arange(lk, device=device)
    shift = 0 if causal == CAUSAL_TOP_LEFT else lk - lq
    return j <= i + shift


def attention_math(q, k, v, attn_mask=None, dropout_p=0.0, causal=CAUSAL_NONE, scale=None, seed=0, offset=0,
                   return_lse=False):
    """Explicit attention on q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv), in their dtype.

    Returns out (B, Hq, Lq, Dv), and with ``return_lse`` also the log-sum-exp (B, Hq, Lq) in the
    kernels' convention (+inf for a row that sees no key; such a row's output is zero).
    """
    batch, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    if hkv != hq:
        k = k.repeat_interleave(hq // hkv, dim=1)
        v = v.repeat_interleave(hq // hkv, dim=1)
    scores = (q @ k.transpose(-2, -1)) * scale
    allowed = visible_keys(lq, lk, causal, q.device)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            allowed = attn_mask if allowed is None else attn_mask & allowed
        else:
            scores = scores + attn_mask
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True) if lk > 0 else scores.new_full((batch, hq, lq, 1), float("-inf"))
    empty_row = torch.isneginf(row_max)
    shifted = (scores - torch.where(empty_row, torch.zeros_like(row_max), row_max)).exp()
    total = shifted.sum(dim=-1, keepdim=True)
    probs = shifted / torch.where(empty_row, torch.ones_like(total), total)
    if dropout_p > 0:
        keep = attention_keep_mask(batch, hq, lq, lk, dropout_p, seed, offset, device=q.device)
        probs = probs * keep / (1.0 - dropout_p)
    out = probs @ v
    if not return_lse:
        return out
    lse = torch.where(empty_row, torch.full_like(row_max, float("inf")), row_max + total.log()).squeeze(-1)
    return out, lse.float()


def attention_sdpa(q, k, v, attn_mask, causal, scale):
    """The same problem (no dropout) through F.scaled_dot_product_attention."""
    from torch.nn.attention.bias import causal_lower_right

    lq, lk = q.shape[-2], k.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    if causal == CAUSAL_BOTTOM_RIGHT and attn_mask is None and not gqa and lq <= lk:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(lq, lk), scale=scale)
    if causal == CAUSAL_TOP_LEFT and attn_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    if causal != CAUSAL_NONE:
        allowed = visible_keys(lq, lk, causal, q.device)
        if attn_mask is None:
            attn_mask = allowed
        elif attn_mask.dtype == torch.bool:
            attn_mask = attn_mask & allowed
        else:
            attn_mask = attn_mask.masked_fill(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=gqa)
