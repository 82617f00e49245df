"""The attention suite: bigkern.ops.attention against every SDPA backend, explicit math and torch.compile.

Cases (``cases``), q/k/v (B, H, L, D) contiguous ("bhsd"), non-causal and causal, forward
(under torch.no_grad()) and forward+backward:
    CPU    the issue's acceptance shape B=2, H=8, L=1024, D=64 float32; and the memory case
           B=1, H=4, L=8192, D=64 forward, whose rows carry peak resident memory
           (``peak_mem_bytes``) next to the explicit softmax(QK^T)V's; --quick: L=512 only
    CUDA   float16/bfloat16 (bfloat16 only when not asked), D=64 and 128, L = 512 ... 16384
           with B*L = 16384 and H*D = 2048 (the FlashAttention paper's sweep); plus decoding
           steps (Lq=1, Lk 4096 and 16384, grouped-query 32/8 heads, D=128) that exercise the
           split-KV path; --quick: L = 1024 and 8192, D=128, one decode case

Providers (``providers``): bigkern-cpu / bigkern-cuda / bigkern-triton; "sdpa" (torch picks the
backend; on the CPU its flash kernel) and, on CUDA, "sdpa-flash", "sdpa-efficient",
"sdpa-cudnn", "sdpa-math" (each pinned with torch.nn.attention.sdpa_kernel; skipped with the
reason where that backend refuses the case); "math" (explicit softmax(scale QK^T)V in the
dtype: the memory baseline); "flash-attn" (the flash-attn package, float16/bfloat16 on CUDA, when
it is installed; skipped with the reason otherwise); "torch.compile" of the SDPA call when asked for.

FLOP model (TFLOP/s = FLOPs / median time):
    forward            4 * B * H * Lq * Lk * D       (QK^T and PV, 2 FLOPs per multiply-add)
                       halved when causal (about half the (i, j) pairs are visible)
    forward+backward   3.5x the forward (the backward does 2.5x the forward's matmul work:
                       QK^T recomputed, dV, dP, dQ, dK)
The exp/softmax work is not counted, as is customary. Backward-only time is
forward+backward minus forward of the same case (docs/attention.md reports it).
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F

import bigkern
from bigkern.bench.harness import Case, Inputs, Provider, bigkern_providers, compile_providers, input_generators

CPU_CASES = [  # (B, Hq, Hkv, Lq, Lk, D, directions, measure memory)
    (2, 8, 8, 1024, 1024, 64, ("forward", "forward+backward"), False),
    (1, 4, 4, 8192, 8192, 64, ("forward",), True),
]
CPU_QUICK_CASES = [(2, 8, 8, 512, 512, 64, ("forward", "forward+backward"), False)]
CUDA_TOKENS, CUDA_WIDTH = 16384, 2048  # B * L and H * D of the training sweep
CUDA_LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
CUDA_QUICK_LENGTHS = (1024, 8192)
DECODE_CASES = [(8, 32, 8, 1, 4096, 128), (4, 32, 8, 1, 16384, 128)]  # (B, Hq, Hkv, Lq, Lk, D)
SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
#: The explicit baseline materialises B*H*Lq*Lk scores (and their softmax): skip it beyond this.
MATH_MAX_SCORE_BYTES = 8 << 30


def attention_flops(b: int, h: int, lq: int, lk: int, d: int, causal: bool, direction: str) -> float:
    """FLOPs of one call by the model in the module docstring."""
    forward = 4.0 * b * h * lq * lk * d * (0.5 if causal else 1.0)
    return forward * (3.5 if direction == "forward+backward" else 1.0)


def attention_bytes(b: int, hq: int, hkv: int, lq: int, lk: int, d: int, dtype, direction: str) -> int:
    """Compulsory bytes of one call: forward reads q, k, v and writes o; the backward also reads
    q, k, v, o and dO and writes dq, dk, dv (the roofline's model; tiles re-read k and v more)."""
    elem = torch.empty(0, dtype=dtype).element_size()
    q, kv = b * hq * lq * d, b * hkv * lk * d
    total = 2 * q + 2 * kv
    if direction == "forward+backward":
        total += 4 * q + 4 * kv
    return total * elem


def make_case(b, hq, hkv, lq, lk, d, dtype, causal, direction, measure_memory=False, seed=0) -> Case:
    generators = input_generators(seed)
    params = {"heads_kv": hkv, "length_kv": lk, "causal": causal}
    if measure_memory:
        params["measure_cpu_memory"] = True

    def make_inputs(device) -> Inputs:
        device = torch.device(device)
        gen = generators(device)
        backward = direction == "forward+backward"

        def randn(*shape):
            return torch.randn(shape, device=device, dtype=dtype, generator=gen).requires_grad_(backward)

        q, k, v = randn(b, hq, lq, d), randn(b, hkv, lk, d), randn(b, hkv, lk, d)
        grad = torch.randn((b, hq, lq, d), device=device, dtype=dtype, generator=gen) if backward else None
        return Inputs((q, k, v), grad)

    label = f"attention(causal={causal},kv_heads={hkv},Lk={lk})"
    return Case(
        op="attention", shape=(b, hq, lq, d), dtype=dtype, layout="bhsd", direction=direction, params=params,
        make_inputs=make_inputs, flops=lambda provider: attention_flops(b, hq, lq, lk, d, causal, direction),
        bytes_moved=lambda provider: attention_bytes(b, hq, hkv, lq, lk, d, dtype, direction),
        label=label,
    )  # fmt: skip


def cases(device, dtypes=None, quick: bool = False) -> list[Case]:
    """Every attention case for ``device`` (see the module docstring)."""
    device = torch.device(device)
    result: list[Case] = []
    if device.type != "cuda":
        for dtype in dtypes or [torch.float32]:
            for b, hq, hkv, lq, lk, d, directions, memory in CPU_QUICK_CASES if quick else CPU_CASES:
                for direction in directions:
                    for causal in (False, True):
                        result.append(make_case(b, hq, hkv, lq, lk, d, dtype, causal, direction, memory, len(result)))
        return result
    for dtype in dtypes or [torch.bfloat16]:
        for direction in ("forward", "forward+backward"):
            for d in (128,) if quick else (64, 128):
                for length in CUDA_QUICK_LENGTHS if quick else CUDA_LENGTHS:
                    b, h = CUDA_TOKENS // length, CUDA_WIDTH // d
                    for causal in (False, True):
                        result.append(make_case(b, h, h, length, length, d, dtype, causal, direction, seed=len(result)))
        for b, hq, hkv, lq, lk, d in DECODE_CASES[:1] if quick else DECODE_CASES:
            result.append(make_case(b, hq, hkv, lq, lk, d, dtype, False, "forward", seed=len(result)))
    return result


def _problem(case: Case):
    b, hq, lq, d = case.shape
    return b, hq, case.params["heads_kv"], lq, case.params["length_kv"], d, case.params["causal"]


def _explicit_attention(q, k, v, causal: bool, gqa: bool):
    """softmax(scale * q k^T) v with the whole score matrix in memory (the memory baseline)."""
    if gqa:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        lq, lk = q.shape[-2], k.shape[-2]
        scores = scores.masked_fill(torch.ones(lq, lk, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return scores.softmax(dim=-1) @ v


def providers(case: Case, device, *, compile: bool = False) -> list[Provider]:
    """bigkern's backends, SDPA (each backend on CUDA), the explicit math, torch.compile when asked."""
    device = torch.device(device)
    b, hq, hkv, lq, lk, d, causal = _problem(case)
    gqa = hq != hkv

    def bigkern_fn(q, k, v):
        return bigkern.ops.attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    def sdpa_fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    result = bigkern_providers(case, device, bigkern_fn)
    result.append(Provider.of("sdpa", sdpa_fn))
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
        for name in SDPA_BACKENDS:
            member = getattr(SDPBackend, names[name], None)
            if member is None:
                result.append(Provider.skipped(f"sdpa-{name}", f"this torch has no SDPBackend.{names[name]}"))
            elif name == "math" and b * hq * lq * lk * 4 > MATH_MAX_SCORE_BYTES:
                result.append(Provider.skipped("sdpa-math", "the score matrix would exceed the memory cap"))
            else:
                result.append(Provider.of(f"sdpa-{name}", sdpa_fn, context=lambda m=member: sdpa_kernel([m])))
    itemsize = torch.empty(0, dtype=case.dtype).element_size()
    if b * hq * lq * lk * itemsize * 2 <= MATH_MAX_SCORE_BYTES:
        result.append(Provider.of("math", lambda q, k, v: _explicit_attention(q, k, v, causal, gqa)))
    else:
        result.append(Provider.skipped("math", "the score matrix would exceed the memory cap"))
    result.append(_flash_attn_provider(case, device, causal))
    if compile:
        result += compile_providers(sdpa_fn, device)
    return result


def _flash_attn_provider(case: Case, device: torch.device, causal: bool) -> Provider:
    """The flash-attn package's kernel (Dao et al.) when it is installed and can run the case."""
    if importlib.util.find_spec("flash_attn") is None:
        return Provider.skipped("flash-attn", "the flash-attn package is not installed (pip install flash-attn)")
    if device.type != "cuda" or case.dtype not in (torch.float16, torch.bfloat16):
        return Provider.skipped("flash-attn", "flash-attn runs float16/bfloat16 on CUDA only")

    def flash_fn(q, k, v):  # flash-attn takes (batch, length, heads, dim): transposed views, no copies
        from flash_attn import flash_attn_func

        return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal).transpose(1, 2)

    return Provider.of("flash-attn", flash_fn)


__all__ = ["cases", "providers", "attention_flops"]
