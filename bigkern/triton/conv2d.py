"""Triton kernels for conv2d with its fused epilogue: forward, dgrad, wgrad (csrc/schema/conv.cpp).

All three are implicit GEMMs that read their operands through (n, c, h, w) strides, so NCHW,
channels_last and strided views are served in place; nothing is unfolded into an im2col buffer.

    forward  out[m, k]   m = (n, p, q) output pixels, k = output channels of group g;
             reduction over taps (r, s) x input channels of g. Epilogue: + bias, + residual,
             the pre-activation stored if asked, the activation, the store.
    dgrad    dx[m, c]    m = (n, h, w) input pixels, c = input channels of g; reduction over
             taps x output channels, the source of tap (r, s) being output pixel
             ((h + top - r*dh) / sh, ...) when both divide exactly (masked otherwise).
    wgrad    dw[k, c]    per tap (r, s) and group: reduction over all output pixels, split over
             SPLIT programs that write float32 partial sums (added by torch afterwards; the
             split gives small weight gradients enough programs to fill a GPU).

A program owns a BLOCK_M x BLOCK_N tile and steps the reduction BLOCK_K at a time (tl.dot needs
all three >= 16). The activation gradient (grad_z = grad_out * act'(z)) is a pointwise kernel
over the contiguous gradient; the bias gradient is a per-channel sum over grad_z.

Kernel arguments shared below:
    N, C, H, W / K, P, Q       input and output shapes; G groups, CG = C / G, KG = K / G
    R, S                       kernel size; SH, SW stride; PT, PL padding top/left; DH, DW dilation
    x_s*, w_s*, o_s*, ...      element strides of each tensor in (n, c, h, w) order
    ACT                        0 none, 1 relu, 2 gelu (erf), 3 silu
    ACC_FP64                   accumulate in float64 (float64 inputs), else float32
    PRECISION                  tl.dot input precision: "tf32" only for float32 where torch allows
                               TF32 convolutions on a GPU, else "ieee"
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from bigkern.triton.autotune import autotune

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
#: The blocks used under the interpreter (the tests set each autotune config here in turn).
INTERPRETER_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}


def _configs(shapes):
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s) for m, n, k, w, s in shapes]


#: Autotune candidates on a GPU (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages). 8 warps only with
#: 128 x 128 tiles: with smaller tiles on a 3x3 kernel, the extra address arithmetic per warp
#: (one mask and offset per tap) spills registers. Every config runs under the interpreter in
#: tests/triton/test_conv.py.
FORWARD_CONFIGS = _configs([
    (128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4),
    (128, 32, 32, 4, 4), (32, 64, 32, 2, 4), (64, 32, 64, 4, 3), (16, 64, 32, 2, 3),
])  # fmt: skip
DGRAD_CONFIGS = FORWARD_CONFIGS
WGRAD_CONFIGS = _configs([(64, 64, 32, 4, 4), (64, 128, 32, 4, 3), (128, 64, 32, 8, 3), (32, 32, 64, 2, 4), (16, 32, 32, 2, 3)])


@triton.jit
def _activate(z, ACT: tl.constexpr):
    if ACT == 1:
        z = tl.where(z < 0.0, 0.0, z)  # NaN stays NaN
    elif ACT == 2:
        z = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif ACT == 3:
        z = z / (1.0 + tl.exp(-z))
    return z


@triton.jit
def _slope(a, ACT: tl.constexpr):
    """d act / dz from z (gelu, silu) or from the output (relu)."""
    if ACT == 1:
        d = tl.where(a > 0.0, 1.0, 0.0)
    elif ACT == 2:
        d = 0.5 * (1.0 + tl.math.erf(a * 0.7071067811865476)) + a * tl.exp(-0.5 * a * a) * 0.3989422804014327
    else:
        sig = 1.0 / (1.0 + tl.exp(-a))
        d = sig * (1.0 + a * (1.0 - sig))
    return d


@triton.jit
def _mma(a, b, acc, ACC_FP64: tl.constexpr, PRECISION: tl.constexpr):
    if ACC_FP64:
        return acc + tl.sum(a.to(tl.float64)[:, :, None] * b.to(tl.float64)[None, :, :], axis=1)
    if INTERPRETED_DOTS:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=PRECISION)


INTERPRETED_DOTS = tl.constexpr(INTERPRETED)  # the interpreter mishandles bfloat16 dot operands


@triton.jit
def _conv_forward_kernel(
    X, Wt, B, RES, OUT, PRE,
    N, H, W, P, Q, CG, KG, R, S, SH, SW, PT, PL, DH, DW,
    x_sn, x_sc, x_sh, x_sw, w_sk, w_sc, w_sr, w_ss,
    r_sn, r_sc, r_sh, r_sw, o_sn, o_sc, o_sh, o_sw, p_sn, p_sc, p_sh, p_sw,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, SAVE_PRE: tl.constexpr, ACT: tl.constexpr,
    ACC_FP64: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    live_m, live_n = offs_m < N * P * Q, offs_n < KG
    n, pq = offs_m // (P * Q), offs_m % (P * Q)
    p, q = pq // Q, pq % Q
    x_base = X + n.to(tl.int64) * x_sn + (g * CG).to(tl.int64) * x_sc
    w_base = Wt + (g * KG + offs_n).to(tl.int64) * w_sk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64 if ACC_FP64 else tl.float32)
    for r in range(0, R):
        ih = p * SH - PT + r * DH
        for s in range(0, S):
            iw = q * SW - PL + s * DW
            inside = live_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_pix = x_base + ih.to(tl.int64) * x_sh + iw.to(tl.int64) * x_sw
            for c0 in range(0, CG, BLOCK_K):
                c = c0 + offs_k
                a = tl.load(x_pix[:, None] + c[None, :].to(tl.int64) * x_sc, mask=inside[:, None] & (c < CG)[None, :], other=0.0)
                b = tl.load(w_base[None, :] + c[:, None].to(tl.int64) * w_sc + r * w_sr + s * w_ss,
                            mask=(c < CG)[:, None] & live_n[None, :], other=0.0)  # fmt: skip
                acc = _mma(a, b, acc, ACC_FP64, PRECISION)
    k = g * KG + offs_n
    live = live_m[:, None] & live_n[None, :]
    if HAS_BIAS:
        acc += tl.load(B + k, mask=live_n, other=0.0).to(acc.dtype)[None, :]
    n64, p64, q64, k64 = n.to(tl.int64)[:, None], p.to(tl.int64)[:, None], q.to(tl.int64)[:, None], k.to(tl.int64)[None, :]
    if HAS_RES:
        acc += tl.load(RES + n64 * r_sn + k64 * r_sc + p64 * r_sh + q64 * r_sw, mask=live, other=0.0).to(acc.dtype)
    if SAVE_PRE:
        tl.store(PRE + n64 * p_sn + k64 * p_sc + p64 * p_sh + q64 * p_sw, acc.to(PRE.dtype.element_ty), mask=live)
    out = _activate(acc, ACT)
    tl.store(OUT + n64 * o_sn + k64 * o_sc + p64 * o_sh + q64 * o_sw, out.to(OUT.dtype.element_ty), mask=live)


@triton.jit
def _conv_dgrad_kernel(
    GZ, Wt, DX,
    N, H, W, P, Q, CG, KG, R, S, SH, SW, PT, PL, DH, DW,
    g_sn, g_sc, g_sh, g_sw, w_sk, w_sc, w_sr, w_ss, d_sn, d_sc, d_sh, d_sw,
    ACC_FP64: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    live_m, live_n = offs_m < N * H * W, offs_n < CG
    n, hw = offs_m // (H * W), offs_m % (H * W)
    h, w = hw // W, hw % W
    g_base = GZ + n.to(tl.int64) * g_sn + (g * KG).to(tl.int64) * g_sc
    w_base = Wt + (g * KG).to(tl.int64) * w_sk + offs_n.to(tl.int64) * w_sc
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64 if ACC_FP64 else tl.float32)
    for r in range(0, R):
        th = h + PT - r * DH
        oh = tl.where(th >= 0, th, 0) // SH
        valid_h = (th >= 0) & (th % SH == 0) & (oh < P)
        for s in range(0, S):
            tw = w + PL - s * DW
            ow = tl.where(tw >= 0, tw, 0) // SW
            inside = live_m & valid_h & (tw >= 0) & (tw % SW == 0) & (ow < Q)
            g_pix = g_base + oh.to(tl.int64) * g_sh + ow.to(tl.int64) * g_sw
            for k0 in range(0, KG, BLOCK_K):
                kk = k0 + offs_k
                a = tl.load(g_pix[:, None] + kk[None, :].to(tl.int64) * g_sc, mask=inside[:, None] & (kk < KG)[None, :], other=0.0)
                b = tl.load(w_base[None, :] + kk[:, None].to(tl.int64) * w_sk + r * w_sr + s * w_ss,
                            mask=(kk < KG)[:, None] & live_n[None, :], other=0.0)  # fmt: skip
                acc = _mma(a, b, acc, ACC_FP64, PRECISION)
    c = (g * CG + offs_n).to(tl.int64)[None, :]
    ptrs = DX + n.to(tl.int64)[:, None] * d_sn + c * d_sc + h.to(tl.int64)[:, None] * d_sh + w.to(tl.int64)[:, None] * d_sw
    tl.store(ptrs, acc.to(DX.dtype.element_ty), mask=live_m[:, None] & live_n[None, :])


@triton.jit
def _conv_wgrad_kernel(
    GZ, X, PART,
    N, H, W, P, Q, CG, KG, R, S, SH, SW, PT, PL, DH, DW, SPLIT, PER_SPLIT,
    g_sn, g_sc, g_sh, g_sw, x_sn, x_sc, x_sh, x_sw,
    ACC_FP64: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """PART[split, g*KG + k, c, r, s] = sum over this split's output pixels of gz * x (float32/64)."""
    pid_m, pid_n, third = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    split = third % SPLIT
    tap = (third // SPLIT) % (R * S)
    g = third // (SPLIT * R * S)
    r, s = tap // S, tap % S
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output channels of the group
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels of the group
    offs_k = tl.arange(0, BLOCK_K)  # output pixels
    live_m, live_n = offs_m < KG, offs_n < CG
    gk = (g * KG + offs_m).to(tl.int64)
    xc = (g * CG + offs_n).to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64 if ACC_FP64 else tl.float32)
    begin = split * PER_SPLIT
    end = tl.minimum(begin + PER_SPLIT, N * P * Q)
    for m0 in range(begin, end, BLOCK_K):
        m = m0 + offs_k
        live_k = m < end
        n, pq = m // (P * Q), m % (P * Q)
        p, q = pq // Q, pq % Q
        ih, iw = p * SH - PT + r * DH, q * SW - PL + s * DW
        inside = live_k & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        n64 = n.to(tl.int64)
        a = tl.load(GZ + gk[:, None] * g_sc + (n64 * g_sn + p.to(tl.int64) * g_sh + q.to(tl.int64) * g_sw)[None, :],
                    mask=live_m[:, None] & live_k[None, :], other=0.0)  # fmt: skip
        b = tl.load(X + xc[None, :] * x_sc + (n64 * x_sn + ih.to(tl.int64) * x_sh + iw.to(tl.int64) * x_sw)[:, None],
                    mask=inside[:, None] & live_n[None, :], other=0.0)  # fmt: skip
        acc = _mma(a, b, acc, ACC_FP64, PRECISION)
    # PART is (SPLIT, K, CG, R, S) contiguous, K = G * KG.
    row = split.to(tl.int64) * (tl.num_programs(2) // SPLIT // (R * S)) * KG + gk
    ptrs = PART + ((row[:, None] * CG + offs_n.to(tl.int64)[None, :]) * (R * S) + tap)
    tl.store(ptrs, acc, mask=live_m[:, None] & live_n[None, :])


@triton.jit
def _preactivation_grad_kernel(GO, A, GZ, numel, ACT: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK: tl.constexpr):
    """grad_z = grad_out * act'(a) over flat storage (the three share one layout)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < numel
    acc = tl.float64 if ACC_FP64 else tl.float32
    go = tl.load(GO + offs, mask=live, other=0.0).to(acc)
    a = tl.load(A + offs, mask=live, other=0.0).to(acc)
    tl.store(GZ + offs, (go * _slope(a, ACT)).to(GZ.dtype.element_ty), mask=live)


@triton.jit
def _channel_sum_kernel(GZ, OUT, K, PIXELS, PQ, Q, g_sn, g_sc, g_sh, g_sw,
                        ACC_FP64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):  # fmt: skip
    """OUT[k] = sum over (n, p, q) of GZ[n, k, p, q]: the bias gradient."""
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    live_c = offs_c < K
    acc = tl.zeros((BLOCK_C,), dtype=tl.float64 if ACC_FP64 else tl.float32)
    for m0 in range(0, PIXELS, BLOCK_P):
        m = m0 + tl.arange(0, BLOCK_P)
        n, pq = m // PQ, m % PQ
        offset = n.to(tl.int64) * g_sn + (pq // Q).to(tl.int64) * g_sh + (pq % Q).to(tl.int64) * g_sw
        tile = tl.load(GZ + offs_c.to(tl.int64)[:, None] * g_sc + offset[None, :],
                       mask=live_c[:, None] & (m < PIXELS)[None, :], other=0.0)  # fmt: skip
        acc += tl.sum(tile.to(acc.dtype), axis=1)
    tl.store(OUT + offs_c, acc.to(OUT.dtype.element_ty), mask=live_c)


_GEOMETRY_KEY = ["CG", "KG", "R", "S", "SH", "SW"]
if INTERPRETED:
    _forward, _dgrad, _wgrad = _conv_forward_kernel, _conv_dgrad_kernel, _conv_wgrad_kernel
else:
    _forward = autotune(FORWARD_CONFIGS, key=_GEOMETRY_KEY + ["ACT", "ACC_FP64"])(_conv_forward_kernel)
    _dgrad = autotune(DGRAD_CONFIGS, key=_GEOMETRY_KEY + ["ACC_FP64"])(_conv_dgrad_kernel)
    _wgrad = autotune(WGRAD_CONFIGS, key=_GEOMETRY_KEY + ["SPLIT", "ACC_FP64"])(_conv_wgrad_kernel)


def _fixed() -> dict:
    return dict(INTERPRETER_CONFIG) if INTERPRETED else {}


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not INTERPRETED and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def _strides(t: torch.Tensor | None) -> tuple:
    return tuple(t.stride()) if t is not None else (0, 0, 0, 0)


def _geometry(x, weight, stride, padding, dilation, groups):
    n, c, h, w = x.shape
    k, cg, r, s = weight.shape
    top, left, bottom, right = padding
    p = (h + top + bottom - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + left + right - dilation[1] * (s - 1) - 1) // stride[1] + 1
    return n, c, h, w, k, cg, k // groups, r, s, p, q


def _check(x, weight, activation):
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"bigkern_triton::conv2d: the Triton kernels take float32, float16, bfloat16 or float64, got {x.dtype}")
    if weight.dtype != x.dtype:
        raise TypeError(f"bigkern_triton::conv2d: weight has dtype {weight.dtype} but input has {x.dtype}")
    if activation not in (0, 1, 2, 3):
        raise ValueError(f"bigkern_triton::conv2d: activation must be 0, 1, 2 or 3, got {activation}")


def conv2d(input, weight, bias, residual, stride, padding, dilation, groups, activation, save_preactivation):
    """The forward of the op contract (csrc/schema/conv.cpp) with the Triton kernel."""
    _check(input, weight, activation)
    n, c, h, w, k, cg, kg, r, s, p, q = _geometry(input, weight, stride, padding, dilation, groups)
    fmt = suggest_memory_format(input)
    out = torch.empty((n, k, p, q), dtype=input.dtype, device=input.device, memory_format=fmt)
    keep = bool(save_preactivation) and activation in (2, 3)
    pre = torch.empty_like(out) if keep else input.new_empty(0)
    if out.numel() == 0:
        return out, pre

    def grid(meta):
        return (triton.cdiv(n * p * q, meta["BLOCK_M"]), triton.cdiv(kg, meta["BLOCK_N"]), groups)

    _forward[grid](
        input, weight, bias if bias is not None else out, residual if residual is not None else out, out,
        pre if keep else out,
        n, h, w, p, q, cg, kg, r, s, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        *input.stride(), *weight.stride(), *_strides(residual), *out.stride(), *(pre.stride() if keep else (0, 0, 0, 0)),
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, SAVE_PRE=keep, ACT=int(activation),
        ACC_FP64=input.dtype == torch.float64, PRECISION=_precision(input.dtype), **_fixed(),
    )  # fmt: skip
    return out, pre


def _split_count(pixels: int, programs: int) -> int:
    """Programs per (group, tap, tile) in wgrad: enough to fill a GPU, each with >= 512 pixels."""
    if INTERPRETED:
        return 1 if pixels < 64 else 2  # two, so the split path is exercised by the tests too
    return max(1, min(pixels // 512, triton.cdiv(264, max(programs, 1))))


def conv2d_backward(grad_output, input, weight, activation_input, stride, padding, dilation, groups, activation, output_mask):
    """The backward of the op contract with the Triton kernels."""
    _check(input, weight, activation)
    n, c, h, w, k, cg, kg, r, s, p, q = _geometry(input, weight, stride, padding, dilation, groups)
    empty = input.new_empty(0)
    acc_fp64 = input.dtype == torch.float64
    fmt = suggest_memory_format(input)
    if activation != 0:
        go = grad_output.contiguous(memory_format=fmt)
        act = activation_input.contiguous(memory_format=fmt)
        if act.stride() != go.stride():  # the pointwise kernel walks both as flat storage
            act = torch.empty_like(go).copy_(act)
        grad_z = torch.empty_like(go)
        if go.numel():
            _preactivation_grad_kernel[(triton.cdiv(go.numel(), 1024),)](go, act, grad_z, go.numel(), ACT=int(activation), ACC_FP64=acc_fp64, BLOCK=1024)
    else:
        grad_z = grad_output
    grad_input = grad_weight = grad_bias = empty
    if output_mask[0]:
        grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device, memory_format=fmt)
        if grad_input.numel():

            def dgrid(meta):
                return (triton.cdiv(n * h * w, meta["BLOCK_M"]), triton.cdiv(cg, meta["BLOCK_N"]), groups)

            _dgrad[dgrid](
                grad_z, weight, grad_input, n, h, w, p, q, cg, kg, r, s, stride[0], stride[1], padding[0], padding[1],
                dilation[0], dilation[1], *grad_z.stride(), *weight.stride(), *grad_input.stride(),
                ACC_FP64=acc_fp64, PRECISION=_precision(input.dtype), **_fixed(),
            )  # fmt: skip
    if output_mask[1]:
        pixels = n * p * q
        split = _split_count(pixels, triton.cdiv(kg, 64) * triton.cdiv(cg, 64) * groups * r * s)
        acc_dtype = torch.float64 if acc_fp64 else torch.float32
        partial = torch.zeros((split, k, cg, r, s), dtype=acc_dtype, device=input.device)
        if pixels:

            def wgrid(meta):
                return (triton.cdiv(kg, meta["BLOCK_M"]), triton.cdiv(cg, meta["BLOCK_N"]), groups * r * s * split)

            _wgrad[wgrid](
                grad_z, input, partial, n, h, w, p, q, cg, kg, r, s, stride[0], stride[1], padding[0], padding[1],
                dilation[0], dilation[1], split, triton.cdiv(pixels, split), *grad_z.stride(), *input.stride(),
                ACC_FP64=acc_fp64, PRECISION=_precision(input.dtype), **_fixed(),
            )  # fmt: skip
        grad_weight = partial.sum(0).to(weight.dtype)
    if output_mask[2]:
        grad_bias = torch.empty(k, dtype=input.dtype, device=input.device)
        _channel_sum_kernel[(triton.cdiv(k, 16),)](
            grad_z, grad_bias, k, n * p * q, p * q, q, *grad_z.stride(), ACC_FP64=acc_fp64, BLOCK_C=16, BLOCK_P=64,
        )  # fmt: skip
    grad_pre = grad_z if (output_mask[3] and activation != 0) else empty
    return grad_input, grad_weight, grad_bias, grad_pre
