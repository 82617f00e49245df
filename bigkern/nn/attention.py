"""Drop-in ``torch.nn.MultiheadAttention`` whose attention runs ``bigkern.ops.attention``."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from bigkern import ops
from bigkern.swap import register_swappable


def _check_mask_dtype(mask: torch.Tensor | None, name: str) -> None:
    if mask is not None and mask.dtype != torch.bool and not torch.is_floating_point(mask):
        raise AssertionError(f"only bool and floating types of {name} are supported")


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask (True = masked) as an additive float mask of ``dtype``; a float mask as is."""
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))


def unify_mask_types(key_padding_mask, padding_name: str, attn_mask, attn_name: str, dtype: torch.dtype):
    """torch's type rules for a (key padding mask, attention mask) pair.

    Each must be bool or floating (else AssertionError, as torch). Masks of different dtypes
    are deprecated: warn as torch does, then make both additive in ``dtype`` (torch's
    canonical form). Masks of one dtype are returned unchanged, so two bool masks stay bool.
    """
    _check_mask_dtype(key_padding_mask, padding_name)
    mismatched = key_padding_mask is not None and attn_mask is not None and key_padding_mask.dtype != attn_mask.dtype
    if mismatched:
        warnings.warn(
            f"Support for mismatched {padding_name} and {attn_name} is deprecated. Use same type for both instead.",
            stacklevel=2,
        )
    _check_mask_dtype(attn_mask, attn_name)
    if mismatched:
        return _additive(key_padding_mask, dtype), _additive(attn_mask, dtype)
    return key_padding_mask, attn_mask


def _check_shapes(query, key, value, key_padding_mask, attn_mask, num_heads) -> bool:
    """torch's checks of the ranks of the inputs and masks; True when the input is batched."""
    if query.dim() not in (2, 3):
        raise AssertionError(
            f"query should be unbatched 2D or batched 3D tensor but received {query.dim()}-D query tensor"
        )
    batched = query.dim() == 3
    kind, rank = ("batched (3-D)", 3) if batched else ("unbatched (2-D)", 2)
    if key.dim() != rank or value.dim() != rank:
        raise AssertionError(
            f"For {kind} `query`, expected `key` and `value` to be {rank}-D"
            f" but found {key.dim()}-D and {value.dim()}-D tensors respectively"
        )
    if key_padding_mask is not None and key_padding_mask.dim() != rank - 1:
        raise AssertionError(
            f"For {kind} `query`, expected `key_padding_mask` to be `None` or {rank - 1}-D"
            f" but found {key_padding_mask.dim()}-D tensor instead"
        )
    if attn_mask is not None:
        if attn_mask.dim() not in (2, 3):
            raise AssertionError(
                f"For {kind} `query`, expected `attn_mask` to be `None`, 2-D or 3-D"
                f" but found {attn_mask.dim()}-D tensor instead"
            )
        if not batched and attn_mask.dim() == 3:
            expected = (num_heads, query.shape[0], key.shape[0])
            if attn_mask.shape != expected:
                raise AssertionError(f"Expected `attn_mask` shape to be {expected} but got {attn_mask.shape}")
    return batched


def _pad_keys(mask: torch.Tensor, extra: int) -> torch.Tensor:
    """Append ``extra`` always-visible key columns (False / 0.0), as torch does for bias_k and add_zero_attn."""
    return F.pad(mask, (0, extra)) if extra else mask


class MultiheadAttention(torch.nn.MultiheadAttention):
    """torch.nn.MultiheadAttention whose attention runs ``bigkern.ops.attention``.

    Same constructor, parameters, state_dict keys and repr as torch's class (a subclass that
    adds nothing). Its forward maps torch's arguments onto the op:

    - projections: one matmul for self-attention (``query is key is value``), two when key is
      value, three otherwise or with separate ``kdim``/``vdim`` weights; heads are strided views of
      the projection (no copies before the kernel);
    - masks, with torch's rules (bool True = masked, float = added; a mix of a bool and a float
      mask, or of two float dtypes, is deprecated and warns, then both are made additive):
      ``key_padding_mask`` reaches the op as an (N, 1, 1, S) broadcast view, a 2-D ``attn_mask`` as
      an (L, S) one; only when both are given is one merged (N, 1, L, S) mask built (bool when both
      are bool, else additive), never (N, H, L, S) unless the 3-D ``attn_mask`` already is;
    - ``is_causal`` is torch's hint: with no key padding mask, ``attn_mask`` is trusted to be the
      causal mask and the kernel's causal mode runs instead of reading it;
    - dropout ``self.dropout`` on the attention weights in training mode, by the op's generator.

    ``need_weights=True`` (torch's default!) needs the L x S weight matrix, which a fused kernel
    never forms: such calls run torch's own forward (``super().forward``), as do nested-tensor
    inputs, which only torch's fast path takes. Pass ``need_weights=False`` to run bigkern's
    kernel; torch.nn's Transformer layers always do. Torch's fused "fast path"
    (``torch._native_multi_head_attention``) is otherwise never taken: it would skip the kernel.

    A query row that may attend to no key gets zero attention (the output is the projection
    bias), as in torch's SDPA path; torch's fast path and need_weights=True path give NaN there.
    """

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):  # fmt: skip
        if need_weights or query.is_nested or key.is_nested or value.is_nested:
            # The weight matrix (and nested tensors) exist only in torch's implementation.
            return super().forward(
                query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
                average_attn_weights=average_attn_weights, is_causal=is_causal,
            )  # fmt: skip
        return self._fused_forward(query, key, value, key_padding_mask, attn_mask, is_causal), None

    def _project(self, query, key, value):
        """q, k, v projections, each shaped like its input with embed_dim features."""
        e = self.embed_dim
        bias = self.in_proj_bias
        if not self._qkv_same_embed_dim:
            bq, bk, bv = bias.chunk(3) if bias is not None else (None, None, None)
            return (F.linear(query, self.q_proj_weight, bq), F.linear(key, self.k_proj_weight, bk),
                    F.linear(value, self.v_proj_weight, bv))  # fmt: skip
        weight = self.in_proj_weight
        if query is key and key is value:
            return F.linear(query, weight, bias).chunk(3, dim=-1)
        wq, wkv = weight.split([e, 2 * e])
        bq, bkv = bias.split([e, 2 * e]) if bias is not None else (None, None)
        if key is value:
            return (F.linear(query, wq, bq), *F.linear(key, wkv, bkv).chunk(2, dim=-1))
        wk, wv = wkv.chunk(2)
        bk, bv = bkv.chunk(2) if bkv is not None else (None, None)
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def _fused_forward(self, query, key, value, key_padding_mask, attn_mask, is_causal):
        key_padding_mask, attn_mask = unify_mask_types(
            key_padding_mask, "key_padding_mask", attn_mask, "attn_mask", query.dtype
        )
        batched = _check_shapes(query, key, value, key_padding_mask, attn_mask, self.num_heads)
        if is_causal and attn_mask is None:
            raise RuntimeError(
                "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
                "`generate_square_subsequent_mask` to create this mask."
            )
        if query.shape[-1] != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {query.shape[-1]}")
        if self._qkv_same_embed_dim and key.shape != value.shape:
            raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")
        if key.shape[:-1] != value.shape[:-1]:
            raise AssertionError(f"key's sequence and batch dims {key.shape[:-1]} do not match value's {value.shape[:-1]}")

        q, k, v = self._project(query, key, value)
        if not batched:  # one sequence: a batch of one, batch dim first
            q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        batch_first = self.batch_first or not batched
        seq_dim = 1 if batch_first else 0
        batch, tgt_len, src_len = q.shape[1 - seq_dim], q.shape[seq_dim], k.shape[seq_dim]
        k, v, extra = self._append_extra_keys(k, v, seq_dim)

        if is_causal and key_padding_mask is None:
            # torch's contract for the hint: attn_mask is the causal mask, so the kernel's causal
            # mode replaces reading it (the mask is then not even shape-checked, as in torch).
            mask, causal = None, True
        else:
            mask = self._kernel_mask(key_padding_mask, attn_mask, batch, tgt_len, src_len, extra, q.dtype)
            causal = False

        heads = self.num_heads, self.head_dim
        if batch_first:  # (N, L, E) -> (N, H, L, D), a strided view
            q, k, v = (t.unflatten(-1, heads).transpose(1, 2) for t in (q, k, v))
        else:  # (L, N, E) -> (N, H, L, D)
            q, k, v = (t.unflatten(-1, heads).permute(1, 2, 0, 3) for t in (q, k, v))
        out = ops.attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                            is_causal=causal)  # fmt: skip
        if batch_first:
            out = out.transpose(1, 2).reshape(batch, tgt_len, self.embed_dim)
        else:
            out = out.permute(2, 0, 1, 3).reshape(tgt_len, batch, self.embed_dim)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        return out if batched else out.squeeze(0)

    def _append_extra_keys(self, k, v, seq_dim):
        """Append bias_k/bias_v and the zero key/value (add_zero_attn) along the sequence; returns (k, v, how many)."""
        if self.bias_k is None and not self.add_zero_attn:
            return k, v, 0
        shape = list(k.shape)
        shape[seq_dim] = 1
        keys, values = [k], [v]
        if self.bias_k is not None:
            keys.append(self.bias_k.expand(shape))
            values.append(self.bias_v.expand(shape))
        if self.add_zero_attn:
            keys.append(k.new_zeros(shape))
            values.append(v.new_zeros(shape))
        return torch.cat(keys, dim=seq_dim), torch.cat(values, dim=seq_dim), len(keys) - 1

    def _kernel_mask(self, key_padding_mask, attn_mask, batch, tgt_len, src_len, extra, dtype):
        """The op's mask (bool True = attend, or additive), broadcastable to (N, H, L, S + extra)."""
        keys = src_len + extra
        if attn_mask is not None:
            if attn_mask.dim() == 2:
                if attn_mask.shape != (tgt_len, src_len):
                    raise RuntimeError(
                        f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be {(tgt_len, src_len)}."
                    )
            else:
                expected = (batch * self.num_heads, tgt_len, src_len)
                if attn_mask.shape != expected:
                    raise RuntimeError(f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be {expected}.")
                attn_mask = attn_mask.reshape(batch, self.num_heads, tgt_len, src_len)
            attn_mask = _pad_keys(attn_mask, extra)
        if key_padding_mask is not None:
            if key_padding_mask.shape != (batch, src_len):
                raise AssertionError(
                    f"Expected key_padding_mask of shape {(batch, src_len)} (batch, source length), "
                    f"but got {tuple(key_padding_mask.shape)}"
                )
            key_padding_mask = _pad_keys(key_padding_mask, extra).reshape(batch, 1, 1, keys)

        if key_padding_mask is None or attn_mask is None:
            mask = attn_mask if key_padding_mask is None else key_padding_mask
            if mask is None or mask.dtype != torch.bool:
                return mask
            return mask.logical_not()  # torch's True = masked; the op's True = attend
        # Both masks: the one merged tensor the op needs, (N, 1, L, S) for a 2-D attn_mask.
        if attn_mask.dtype == torch.bool and key_padding_mask.dtype == torch.bool:
            return torch.logical_or(attn_mask, key_padding_mask).logical_not_()
        return _additive(attn_mask, dtype) + _additive(key_padding_mask, dtype)


register_swappable(
    torch.nn.MultiheadAttention, MultiheadAttention, "attention",
    note="calls with need_weights=True (torch's default) run torch's implementation; pass need_weights=False",
)  # fmt: skip
