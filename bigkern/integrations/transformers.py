"""bigkern's fused attention as a Hugging Face ``transformers`` attention implementation.

    import bigkern.integrations.transformers as bk_hf
    bk_hf.register()                      # once; imports transformers
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="bigkern")
    # or, on a loaded model: model.set_attn_implementation("bigkern")

``register()`` adds ``attention_forward`` to ``transformers.AttentionInterface`` under the name
"bigkern", and (where the library has ``AttentionMaskInterface``, transformers >= 4.53) gives
that name the masks SDPA gets: a 4-D bool mask (True = attend) or None when plain causal
attention suffices, so the kernel's causal mode runs without reading a mask. Releases without
that interface (4.48 to 4.52) pass masks of their own making, which the op reads as they are
(bool, or additive float); only transformers 5.x has been tested.
"""

from __future__ import annotations

import warnings

import torch

from bigkern import ops

NAME = "bigkern"


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:  # fmt: skip
    """The AttentionInterface function: q (B, H, L, D), k/v (B, Hkv, S, D) -> ((B, L, H, D), None).

    Grouped-query attention (Hkv < H) runs without repeating key/value heads. ``is_causal``
    (default: ``module.is_causal``) is honoured only when no mask is given and L > 1, as the
    SDPA implementation does: a given mask already carries the causal pattern.
    """
    if kwargs.get("softcap") is not None:
        raise ValueError(f"attn_implementation={NAME!r} does not support `softcap`; use 'eager' or 'flex_attention'")
    if kwargs.get("cache") is not None:
        raise NotImplementedError(f"attn_implementation={NAME!r} does not support paged caches (continuous batching)")
    if kwargs.get("output_attentions"):
        # As the "sdpa" implementation does: no weights (None), and a warning.
        warnings.warn(f"attn_implementation={NAME!r} returns no attention weights; use 'eager' for them", stacklevel=2)

    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal) and attention_mask is None and q_len > 1
    position_bias = kwargs.get("position_bias")
    if causal and kv_len > q_len:
        # Prefill into an empty static cache: top-left causal attention never sees keys past
        # q_len, so they are dropped (a view) rather than skipped by the kernel.
        key, value = key[:, :, :q_len], value[:, :, :q_len]
        position_bias = None if position_bias is None else position_bias[..., :q_len]
    if position_bias is not None:
        attention_mask = _with_position_bias(position_bias, attention_mask, causal, q_len, key)
        causal = False

    out = ops.attention(query, key, value, attn_mask=attention_mask, dropout_p=float(dropout), is_causal=causal,
                        scale=scaling, enable_gqa=query.shape[1] != key.shape[1])  # fmt: skip
    return out.transpose(1, 2).contiguous(), None


def _with_position_bias(position_bias, attention_mask, causal, q_len, key):
    """An additive float mask holding the position bias where attending is allowed (T5-style models)."""
    blocked = torch.finfo(key.dtype).min
    if attention_mask is None and causal:
        kv_len = key.shape[2]
        visible = torch.ones(q_len, kv_len, dtype=torch.bool, device=key.device).tril()
        return torch.where(visible, position_bias, blocked)
    if attention_mask is None:
        return position_bias
    if attention_mask.dtype == torch.bool:
        return torch.where(attention_mask, position_bias, blocked)
    return position_bias + attention_mask


def register(name: str = NAME) -> str:
    """Register bigkern's attention with transformers under ``name`` (idempotent); returns the name."""
    import transformers

    transformers.AttentionInterface.register(name, attention_forward)
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    except ImportError:  # transformers < 4.53 builds masks without a per-implementation interface
        return name
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return name


def use_bigkern_attention(model) -> str:
    """Switch a transformers model to bigkern's attention (``bigkern.swap`` calls this for every
    ``PreTrainedModel`` it finds); returns the implementation it had, which
    ``restore_attention`` puts back. Raises what transformers raises for a model whose attention
    cannot be chosen (an architecture without ``AttentionInterface`` support)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(register())
    model._bigkern_previous_attention = previous
    return previous


def restore_attention(model) -> bool:
    """Undo ``use_bigkern_attention``; True when there was something to undo."""
    previous = model.__dict__.pop("_bigkern_previous_attention", None)
    if previous is None:
        return False
    model.set_attn_implementation(previous)
    return True
