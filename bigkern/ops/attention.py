"""Fused attention: ``bigkern.ops.attention``, with the semantics of F.scaled_dot_product_attention.

The public function maps SDPA's arguments onto the normalised problem of the kernels
(csrc/schema/attention.cpp states that contract): 4-D q (B, Hq, Lq, D), k (B, Hkv, Lk, D),
v (B, Hkv, Lk, Dv) with a contiguous last dim; the mask as a (B, Hq, Lq, Lk) broadcast view
(stride 0 where it broadcasts, so a key padding mask is never expanded in memory); causal
alignment as an int; the dropout seed drawn from torch's default generator.

It also registers, for both op namespaces, the fake kernels and the autograd formula (the
backward op recomputes attention tile by tile from the saved log-sum-exp).
"""

from __future__ import annotations

import math

import torch

from bigkern import _library, backend
from bigkern.ops._args import FLOAT_DTYPES
from bigkern.reference import attention as reference
from bigkern.reference.attention import CAUSAL_BOTTOM_RIGHT, CAUSAL_NONE, CAUSAL_TOP_LEFT

OP = "attention"

#: Accepted spellings of ``is_causal``. True is SDPA's top-left alignment (query i sees keys
#: j <= i); "bottom_right" aligns the last query with the last key (j <= i + Lk - Lq), the
#: convention for decoding with a KV cache.
CAUSAL_MODES = {False: CAUSAL_NONE, True: CAUSAL_TOP_LEFT, "none": CAUSAL_NONE,
                "top_left": CAUSAL_TOP_LEFT, "bottom_right": CAUSAL_BOTTOM_RIGHT}  # fmt: skip

#: Head dims the CUDA kernels are instantiated for (csrc/cuda/attention/generate_instances.py).
CUDA_MAX_HEAD_DIM = 256
TRITON_MAX_HEAD_DIM = 256

# ---------------------------------------------------------------------------------------------
# Fake kernels and autograd, registered for bigkern:: and bigkern_triton::
# ---------------------------------------------------------------------------------------------


def _register(ns: str) -> None:
    def fake_forward(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset):
        batch, heads, lq, _ = q.shape
        out = q.new_empty((batch, heads, lq, v.shape[-1]))
        return out, q.new_empty((batch, heads, lq), dtype=torch.float32)

    def fake_backward(grad_out, q, k, v, out, lse, attn_mask, dropout_p, causal, scale, seed, offset, deterministic):
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    def setup_context(ctx, inputs, output):
        q, k, v, attn_mask, dropout_p, causal, scale, seed, offset = inputs
        ctx.args = (dropout_p, causal, scale, seed, offset)
        ctx.save_for_backward(q, k, v, output[0], output[1], attn_mask)

    def backward(ctx, grad_out, _grad_lse):
        q, k, v, out, lse, attn_mask = ctx.saved_tensors
        dropout_p, causal, scale, seed, offset = ctx.args
        grad_q, grad_k, grad_v = getattr(torch.ops, ns).attention_backward(
            _last_dim_contiguous(grad_out), q, k, v, out, lse, attn_mask, dropout_p, causal, scale, seed, offset,
            torch.are_deterministic_algorithms_enabled(),
        )
        return grad_q, grad_k, grad_v, None, None, None, None, None, None

    torch.library.register_fake(f"{ns}::attention_forward", fake_forward)
    torch.library.register_fake(f"{ns}::attention_backward", fake_backward)
    torch.library.register_autograd(f"{ns}::attention_forward", backward, setup_context=setup_context)


for _name in ("attention_forward", "attention_backward"):
    _library.define_triton_twin(_name, _library.lazy_triton_kernel("attention", _name))
for _ns in (_library.NATIVE_NAMESPACE, _library.TRITON_NAMESPACE):
    _register(_ns)


# ---------------------------------------------------------------------------------------------
# Argument mapping
# ---------------------------------------------------------------------------------------------


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 or x.shape[-1] <= 1 else x.contiguous()


def _check_qkv(q, k, v, enable_gqa: bool) -> None:
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"bigkern.ops.{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 3:
            raise ValueError(
                f"bigkern.ops.{OP}: {name} must have at least 3 dims (..., L, E), got {t.dim()}-D of shape {tuple(t.shape)}"
            )
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"bigkern.ops.{OP}: {name} has dtype {t.dtype}; expected float32, float16, bfloat16 or float64")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"bigkern.ops.{OP}: query, key and value must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"bigkern.ops.{OP}: query, key and value must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (q.dim() == k.dim() == v.dim()):
        raise ValueError(f"bigkern.ops.{OP}: query, key and value must have the same rank, got {q.dim()}, {k.dim()}, {v.dim()}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"bigkern.ops.{OP}: query and key head dims differ: {q.shape[-1]} vs {k.shape[-1]}")
    if q.shape[-1] == 0:
        raise ValueError(f"bigkern.ops.{OP}: the head dim must be positive, got query of shape {tuple(q.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"bigkern.ops.{OP}: key and value lengths differ: {k.shape[-2]} vs {v.shape[-2]}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"bigkern.ops.{OP}: key {tuple(k.shape)} and value {tuple(v.shape)} must agree but for the last dim")
    if q.dim() == 3:
        if q.shape[0] != k.shape[0]:
            raise ValueError(f"bigkern.ops.{OP}: query batch {q.shape[0]} and key batch {k.shape[0]} differ")
        return
    if q.shape[:-3] != k.shape[:-3]:
        raise ValueError(f"bigkern.ops.{OP}: query batch dims {tuple(q.shape[:-3])} and key batch dims {tuple(k.shape[:-3])} differ")
    hq, hkv = q.shape[-3], k.shape[-3]
    if hq != hkv:
        if not enable_gqa:
            raise ValueError(
                f"bigkern.ops.{OP}: query has {hq} heads and key/value {hkv}; pass enable_gqa=True for grouped-query attention"
            )
        if hkv == 0 or hq % hkv != 0:
            raise ValueError(f"bigkern.ops.{OP}: query heads ({hq}) must be a multiple of key/value heads ({hkv}) with enable_gqa=True")


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    """(N, L, E) -> (N, 1, L, E); (*batch, H, L, E) -> (prod(batch), H, L, E)."""
    if t.dim() == 3:
        return t.unsqueeze(1)
    if t.dim() == 4:
        return t
    return t.reshape(-1, *t.shape[-3:])


def _causal_mode(is_causal, attn_mask) -> tuple[int, object]:
    """(causal int, the mask left over). A torch CausalBias mask becomes the matching causal mode."""
    try:
        from torch.nn.attention.bias import CausalBias, CausalVariant
    except ImportError:  # torch < 2.3 has no CausalBias
        CausalBias = None
    if CausalBias is not None and isinstance(attn_mask, CausalBias):
        if is_causal:
            raise ValueError(f"bigkern.ops.{OP}: pass either is_causal or a CausalBias attn_mask, not both")
        mode = CAUSAL_TOP_LEFT if attn_mask.variant == CausalVariant.UPPER_LEFT else CAUSAL_BOTTOM_RIGHT
        return mode, None
    key = is_causal.lower() if isinstance(is_causal, str) else is_causal
    if isinstance(key, (int, float)) and not isinstance(key, bool) and key in (0, 1):
        key = bool(key)
    if key not in CAUSAL_MODES:
        raise ValueError(
            f"bigkern.ops.{OP}: is_causal must be False, True, 'top_left' or 'bottom_right', got {is_causal!r}"
        )
    mode = CAUSAL_MODES[key]
    if mode != CAUSAL_NONE and attn_mask is not None:
        raise ValueError(f"bigkern.ops.{OP}: attn_mask must be None when is_causal is set (as in scaled_dot_product_attention)")
    return mode, attn_mask


def _mask_4d(attn_mask, q: torch.Tensor, lk: int, q4: torch.Tensor) -> torch.Tensor | None:
    """The mask as a (B, Hq, Lq, Lk) broadcast view of dtype bool or q.dtype (no full-size copy)."""
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"bigkern.ops.{OP}: attn_mask must be a tensor, a CausalBias or None, got {type(attn_mask).__name__}")
    if attn_mask.device != q.device:
        raise ValueError(f"bigkern.ops.{OP}: attn_mask is on {attn_mask.device} but query is on {q.device}")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(f"bigkern.ops.{OP}: attn_mask has dtype {attn_mask.dtype}; expected bool or a float dtype")
    full = (*q.shape[:-1], lk)
    try:
        expanded = attn_mask.expand(full)
    except RuntimeError:
        raise ValueError(
            f"bigkern.ops.{OP}: attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (..., Lq, Lk) = {full}"
        ) from None
    if attn_mask.is_floating_point() and attn_mask.dtype != q.dtype:
        expanded = attn_mask.to(q.dtype).expand(full)  # converts only the un-broadcast mask
    if q.dim() == 3:
        expanded = expanded.unsqueeze(1)
    elif q.dim() > 4:
        expanded = expanded.reshape(q4.shape[0], *expanded.shape[-3:])
    return expanded


def _dropout_seed(dropout_p: float) -> tuple[int, int]:
    """(seed, offset) for the dropout generator, drawn from torch's default CPU generator."""
    if dropout_p == 0.0:
        return 0, 0
    draw = torch.randint(0, 2**62, (2,), dtype=torch.int64)
    seed, offset = draw.tolist()
    return seed, offset & 0x7FFFFFFF


def _limits(q4, k4, v4, mask4, requires_mask_grad: bool):
    """Why a bigkern backend cannot serve this call (None when it can)."""

    def limits(name: str) -> str | None:
        if requires_mask_grad:
            return "attn_mask requires grad, and bigkern's kernels do not compute the mask's gradient"
        d, dv = q4.shape[-1], v4.shape[-1]
        if name == "cuda":
            if torch.cuda.get_device_capability(q4.device) < (8, 0):
                return "the CUDA attention kernels use sm_80 tensor-core instructions; this GPU is older (Triton serves it)"
            if q4.dtype not in (torch.float16, torch.bfloat16):
                return f"the CUDA attention kernels take float16/bfloat16, got {q4.dtype} (float32 runs on triton)"
            if d != dv:
                return f"the CUDA attention kernels need equal query and value head dims, got {d} and {dv}"
            if d % 8 != 0 or d > CUDA_MAX_HEAD_DIM:
                return f"the CUDA attention kernels take head dims that are multiples of 8 up to {CUDA_MAX_HEAD_DIM}, got {d}"
        if name == "triton":
            if q4.dtype == torch.float64:
                return "the Triton attention kernels take float32, float16 and bfloat16, not float64"
            if max(d, dv) > TRITON_MAX_HEAD_DIM:
                return f"the Triton attention kernels take head dims up to {TRITON_MAX_HEAD_DIM}, got {max(d, dv)}"
        return None

    return limits


def _aligned_for_cuda(t: torch.Tensor) -> torch.Tensor:
    """The CUDA kernels load rows as 16-byte vectors (8 half-precision elements): every stride but
    the last, and the storage offset, a multiple of 8 elements. The offset stands for the pointer
    (allocations are 16-byte aligned) so that fake tensors under torch.compile pass too."""
    if all(s % 8 == 0 for s in t.stride()[:-1]) and t.storage_offset() % 8 == 0:
        return t
    return t.contiguous()


def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Scaled dot-product attention with the semantics of F.scaled_dot_product_attention.

    q (..., Hq, Lq, D), k (..., Hkv, Lk, D), v (..., Hkv, Lk, Dv); 3-D (N, L, E) inputs are one
    head. ``is_causal``: False, True (SDPA's top-left alignment), ``"top_left"`` or
    ``"bottom_right"`` (the last query sees every key: decoding with a KV cache);
    torch.nn.attention.bias.causal_upper_left / causal_lower_right masks are accepted too.
    ``attn_mask``: bool (True = attend) or additive float, broadcastable to (..., Hq, Lq, Lk),
    read in place. A query row that sees no key at all gets zeros (and a zero gradient).
    ``dropout_p``: dropout on the attention weights from a counter-based generator seeded from
    torch's default generator, so ``torch.manual_seed`` makes output and gradients repeatable.
    ``enable_gqa``: key/value may have fewer heads than query (a divisor), shared without copies.
    Under torch.use_deterministic_algorithms(True) the backward is bitwise reproducible.
    """
    _check_qkv(q, k, v, enable_gqa)
    causal, attn_mask = _causal_mode(is_causal, attn_mask)
    if not isinstance(dropout_p, (int, float)) or isinstance(dropout_p, bool) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"bigkern.ops.{OP}: dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale)):
        raise ValueError(f"bigkern.ops.{OP}: scale must be a finite float or None, got {scale!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    dropout_p = float(dropout_p)

    if torch.is_autocast_enabled(q.device.type) and q.is_floating_point():
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)

    lead, lq, dv = q.shape[:-2], q.shape[-2], v.shape[-1]
    q4, k4, v4 = (_last_dim_contiguous(_as_4d(t)) for t in (q, k, v))
    mask4 = _mask_4d(attn_mask, q, k.shape[-2], q4)
    requires_mask_grad = mask4 is not None and mask4.requires_grad and torch.is_grad_enabled()
    chosen = backend.select(OP, q4, _limits(q4, k4, v4, mask4, requires_mask_grad))
    seed, offset = _dropout_seed(dropout_p)

    if chosen == "torch":
        if dropout_p > 0:
            out = reference.attention_math(q4, k4, v4, mask4, dropout_p, causal, scale, seed, offset)
        else:
            out = reference.attention_sdpa(q4, k4, v4, mask4, causal, scale)
    else:
        if chosen == "cuda":
            q4, k4, v4 = (_aligned_for_cuda(t) for t in (q4, k4, v4))
        ops = torch.ops.bigkern_triton if chosen == "triton" else torch.ops.bigkern
        out, _ = ops.attention_forward(q4, k4, v4, mask4, dropout_p, causal, scale, seed, offset)
    return out.reshape(*lead, lq, dv)
