"""Triton flash attention (FlashAttention-2), forward and backward, with the contract of
csrc/schema/attention.cpp: strided q/k/v (unit last-dim stride), grouped-query attention without
copying K/V, a strided (B, Hq, Lq, Lk) mask view (bool or additive, stride 0 where broadcast),
causal modes 0/1/2 combinable with the mask, Philox dropout bit-exact with csrc/common/philox.h,
lse in natural log with +inf for rows that see no key.

Forward: one program per (query block, batch * query head). It streams key/value blocks with an
online softmax in float32, in log2 units (scores are multiplied by scale * log2(e) so exp2 serves
as exp). Key blocks are visited in two phases: blocks every query row of the program may see in
full (no per-element structure mask, no bounds checks on K/V loads), then the blocks that cross
the causal diagonal or the end of the keys (masked per element). Blocks past the diagonal are
never visited. A row that sees no key keeps a running maximum of -inf; the maximum used for
shifting is then 0 so no inf - inf appears, its sum stays 0, and the epilogue writes zeros and
lse = +inf.

Backward: a preprocess kernel computes Delta = rowsum(dO * O); a dK/dV kernel (one program per
key block and batch * key/value head) loops over the query heads of its GQA group and over the
query blocks, recomputing P = exp(s - lse) tile by tile; a dQ kernel (one program per query block
and batch * query head) loops over the key blocks. Every gradient element is written by exactly one
program with a fixed summation order and no atomics, so the Triton backward is always
deterministic (the ``deterministic`` argument needs no special path).

Dropout: with Z the keep mask and r = 1 / (1 - p), O = (P * Z * r) V. Then dV = (P * Z * r)^T dO,
dP = (dO V^T) * Z * r and dS = P * (dP - Delta) with Delta = rowsum(dO * O), as without dropout.

Loads use plain pointers rather than tensor descriptors (TMA): q/k/v/mask arrive as arbitrary
strided views (strides and base addresses need not meet the 16-byte rules of a descriptor), head
dims are padded to a power of two and masked, and the same code must run on Triton 3.6 and 3.8 and
under the interpreter. On Hopper, Triton still pipelines these loads (num_stages).

Autotuning (skipped under TRITON_INTERPRET=1, where one small fixed configuration runs): each
kernel is tuned per shape class, keyed on the head dims, causal, mask kind, dropout, dot precision,
the tensors' dtypes and the query/key lengths rounded up to a power of two (16 .. 1024). The
candidate configurations are pruned per class by ``_prune_configs`` (see there).

Offsets into whole tensors are int64 (batch and head strides times indices can pass 2**31);
lengths themselves are assumed below 2**31.
"""

import functools
import math
import os

import torch
import triton
import triton.language as tl

from bigkern.reference.philox import dropout_threshold
from bigkern.triton.autotune import autotune
from bigkern.triton.philox import as_int32, dropout_keep

LOG2E = 1.4426950408889634  # log2(e): exp(x) = exp2(x * LOG2E)
_LOG2E = tl.constexpr(LOG2E)  # the same, for kernels
_LN2 = tl.constexpr(0.6931471805599453)  # ln(2): ln(x) = log2(x) * ln(2)

MASK_NONE, MASK_BOOL, MASK_ADDITIVE = 0, 1, 2
MAX_HEAD_DIM = 256

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
#: BIGKERN_TRITON_AUTOTUNE=0 runs one preferred configuration per shape class instead of timing
#: the candidates (first calls cost a compile, not tens of seconds of tuning; tests on a GPU use it).
AUTOTUNE = os.environ.get("BIGKERN_TRITON_AUTOTUNE", "1") != "0"
#: The single configuration used under the interpreter (the tests may swap the blocks to exercise
#: other phase boundaries). BLOCK_M: query rows per tile, BLOCK_N: keys per tile.
INTERPRETER_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 32}

# Triton 3.8's interpreter multiplies the raw uint16 bit patterns of bfloat16 dot operands; under
# it the operands go through float32 (exact for bfloat16, so the products are those of the MMA).
_UPCAST_BFLOAT16_DOTS = tl.constexpr(INTERPRETED)

# Scalars whose value changes from call to call and must not compile a new kernel when it happens
# to be 1 or a multiple of 16 (Triton specialises integer arguments on both).
_UNSPECIALISED = ["causal_shift", "seed_lo", "seed_hi", "dropout_offset", "dropout_threshold"]


# --------------------------------------------------------------------------------------------------
# Helpers shared by the kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _load_rows(base, idx, idx_stride, length, DIM: tl.constexpr, BLOCK_DIM: tl.constexpr, CHECK_LENGTH: tl.constexpr):
    """(len(idx), BLOCK_DIM) tile of rows ``idx`` of a (length, DIM) matrix with row stride
    ``idx_stride`` and unit column stride; zeros past DIM and, when CHECK_LENGTH, past ``length``."""
    dims = tl.arange(0, BLOCK_DIM)
    ptrs = base + idx.to(tl.int64)[:, None] * idx_stride + dims[None, :]
    if CHECK_LENGTH:
        if DIM == BLOCK_DIM:
            tile = tl.load(ptrs, mask=(idx < length)[:, None], other=0.0)
        else:
            tile = tl.load(ptrs, mask=(idx < length)[:, None] & (dims < DIM)[None, :], other=0.0)
    else:
        if DIM == BLOCK_DIM:
            tile = tl.load(ptrs)
        else:
            tile = tl.load(ptrs, mask=(dims < DIM)[None, :], other=0.0)
    return tile


@triton.jit
def _dot(a, b, acc, DOT_PRECISION: tl.constexpr):
    """acc + a @ b in float32 (see _UPCAST_BFLOAT16_DOTS)."""
    if _UPCAST_BFLOAT16_DOTS and a.dtype == tl.bfloat16:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _store_rows(base, idx, length, value, DIM: tl.constexpr, BLOCK_DIM: tl.constexpr):
    """Stores ``value`` (len(idx), BLOCK_DIM) into rows ``idx`` < length of a contiguous (length, DIM)
    matrix, converted to its dtype."""
    dims = tl.arange(0, BLOCK_DIM)
    ptrs = base + idx.to(tl.int64)[:, None] * DIM + dims[None, :]
    tl.store(ptrs, value.to(base.dtype.element_ty), mask=(idx < length)[:, None] & (dims < DIM)[None, :])


@triton.jit
def _masked_scores(
    s, r, c, Lq, Lk, causal_shift, mask_base, mask_stride_m, mask_stride_n,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, CHECK_KEYS: tl.constexpr,
):
    """Scores ``s`` (log2 units) of queries ``r`` and keys ``c`` (index tiles that broadcast to s's
    shape, so the same code serves (query, key) and transposed (key, query) tiles) with the
    attention mask applied, and -inf where a key is invisible. CHECK_KEYS applies the causal
    structure and the end of the keys; callers skip it for tiles wholly inside both."""
    if MASK_KIND != 0:
        offsets = r.to(tl.int64) * mask_stride_m + c.to(tl.int64) * mask_stride_n
        mask = tl.load(mask_base + offsets, mask=(r < Lq) & (c < Lk), other=0)
        if MASK_KIND == 1:
            s = tl.where(mask != 0, s, float("-inf"))
        else:
            s += mask.to(tl.float32) * _LOG2E
    if CHECK_KEYS:
        visible = c < Lk
        if CAUSAL:
            visible = visible & (c <= r + causal_shift)
        s = tl.where(visible, s, float("-inf"))
    return s


@triton.jit
def _query_block(Lq, Hq, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr):
    """Decodes the flat program id into (batch, query head, first query row). Query blocks vary
    fastest so the programs of one head run together and share its K/V in L2; with causal
    attention the last (longest) blocks start first, which evens out the tail."""
    pid = tl.program_id(0)
    num_m_blocks = tl.cdiv(Lq, BLOCK_M)
    bh = pid // num_m_blocks
    m_block = pid % num_m_blocks
    if CAUSAL:
        m_block = num_m_blocks - 1 - m_block
    return bh // Hq, bh % Hq, m_block * BLOCK_M


@triton.jit
def _key_range(start_m, Lk, causal_shift, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(free_end, end): the keys [0, end) some row of query block start_m may see, of which the
    whole BLOCK_N blocks in [0, free_end) every row sees in full (no per-element masking)."""
    if CAUSAL:
        # Key j is visible to row i iff j <= i + causal_shift.
        end = tl.minimum(Lk, tl.maximum(start_m + BLOCK_M + causal_shift, 0))
        free_end = tl.minimum(Lk, tl.maximum(start_m + causal_shift + 1, 0))
    else:
        end = Lk
        free_end = Lk
    return free_end // BLOCK_N * BLOCK_N, end


# --------------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _fwd_step(
    acc, m_i, l_i, q, k_base, v_base, mask_base, rows, start_n, bh,
    k_stride_n, v_stride_n, mask_stride_m, mask_stride_n,
    Lq, Lk, causal_shift, qk_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, CHECK_KEYS: tl.constexpr,
):
    """Folds key block start_n into the running (acc, max m_i, sum l_i) of the online softmax."""
    cols = start_n + tl.arange(0, BLOCK_N)
    k = _load_rows(k_base, cols, k_stride_n, Lk, HEAD_DIM, BLOCK_D, CHECK_KEYS)
    s = _dot(q, tl.trans(k), None, DOT_PRECISION) * qk_scale
    s = _masked_scores(
        s, rows[:, None], cols[None, :], Lq, Lk, causal_shift, mask_base, mask_stride_m, mask_stride_n,
        CAUSAL, MASK_KIND, CHECK_KEYS,
    )
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row with no visible key so far shifts by 0 instead of -inf: exp2(-inf - 0) = 0, no NaN.
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_shift)
    p = tl.exp2(s - m_shift[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if DROPOUT:
        keep = dropout_keep(rows, start_n, bh, seed_lo, seed_hi, dropout_offset, dropout_threshold, BLOCK_N)
        p = tl.where(keep, p, 0.0)
    v = _load_rows(v_base, cols, v_stride_n, Lk, HEAD_DIM_V, BLOCK_DV, CHECK_KEYS)
    acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=_UNSPECIALISED)
def _attention_fwd_kernel(
    Q, K, V, Mask, Out, Lse,
    q_stride_b, q_stride_h, q_stride_m,
    k_stride_b, k_stride_h, k_stride_n,
    v_stride_b, v_stride_h, v_stride_n,
    mask_stride_b, mask_stride_h, mask_stride_m, mask_stride_n,
    Hq, kv_group, Lq, Lk, causal_shift, qk_scale, dropout_scale,
    seed_lo, seed_hi, dropout_offset, dropout_threshold,
    LQ_CLASS, LK_CLASS,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out (B, Hq, Lq, Dv) and lse (B, Hq, Lq), both contiguous, for one query block of one head.

    kv_group: Hq / Hkv (query head h reads key/value head h // kv_group).
    causal_shift: key j is visible to query i iff j <= i + causal_shift (CAUSAL only).
    qk_scale: scale * log2(e). dropout_scale: 1 / (1 - dropout_p).
    seed_lo, seed_hi, dropout_offset, dropout_threshold: Philox key, counter word 3 and drop
        threshold as int32 bit patterns (DROPOUT only).
    LQ_CLASS, LK_CLASS: the rounded lengths, read only by the autotuner's key and pruning.
    Mask: uint8 (MASK_KIND 1, nonzero = visible) or additive in q's dtype (2), or None (0).
    """
    b, h, start_m = _query_block(Lq, Hq, CAUSAL, BLOCK_M)
    bh = b * Hq + h
    kv_h = h // kv_group
    rows = start_m + tl.arange(0, BLOCK_M)
    q_base = Q + b.to(tl.int64) * q_stride_b + h.to(tl.int64) * q_stride_h
    k_base = K + b.to(tl.int64) * k_stride_b + kv_h.to(tl.int64) * k_stride_h
    v_base = V + b.to(tl.int64) * v_stride_b + kv_h.to(tl.int64) * v_stride_h
    mask_base = Mask
    if MASK_KIND != 0:
        mask_base = Mask + b.to(tl.int64) * mask_stride_b + h.to(tl.int64) * mask_stride_h
    q = _load_rows(q_base, rows, q_stride_m, Lq, HEAD_DIM, BLOCK_D, True)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    free_end, end = _key_range(start_m, Lk, causal_shift, CAUSAL, BLOCK_M, BLOCK_N)
    for start_n in range(0, free_end, BLOCK_N):
        acc, m_i, l_i = _fwd_step(
            acc, m_i, l_i, q, k_base, v_base, mask_base, rows, start_n, bh,
            k_stride_n, v_stride_n, mask_stride_m, mask_stride_n,
            Lq, Lk, causal_shift, qk_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, CAUSAL, MASK_KIND, DROPOUT, DOT_PRECISION, BLOCK_N, False,
        )
    for start_n in range(free_end, end, BLOCK_N):
        acc, m_i, l_i = _fwd_step(
            acc, m_i, l_i, q, k_base, v_base, mask_base, rows, start_n, bh,
            k_stride_n, v_stride_n, mask_stride_m, mask_stride_n,
            Lq, Lk, causal_shift, qk_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, CAUSAL, MASK_KIND, DROPOUT, DOT_PRECISION, BLOCK_N, True,
        )

    # l_i is 0 exactly for rows that saw no key (otherwise the maximum contributes exp2(0) = 1).
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc * tl.where(empty, 0.0, dropout_scale / l_safe)[:, None]
    lse = tl.where(empty, float("inf"), (m_i + tl.log2(l_safe)) * _LN2)
    _store_rows(Out + bh.to(tl.int64) * Lq * HEAD_DIM_V, rows, Lq, out, HEAD_DIM_V, BLOCK_DV)
    tl.store(Lse + bh.to(tl.int64) * Lq + rows, lse, mask=rows < Lq)


# --------------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _attention_bwd_delta_kernel(
    Out, GradOut, Delta,
    out_stride_b, out_stride_h, out_stride_m,
    grad_out_stride_b, grad_out_stride_h, grad_out_stride_m,
    Hq, Lq,
    HEAD_DIM_V: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Delta (B, Hq, Lq) contiguous float32 = rowsum(grad_out * out)."""
    b, h, start_m = _query_block(Lq, Hq, False, BLOCK_M)
    rows = start_m + tl.arange(0, BLOCK_M)
    out = _load_rows(Out + b.to(tl.int64) * out_stride_b + h.to(tl.int64) * out_stride_h,
                     rows, out_stride_m, Lq, HEAD_DIM_V, BLOCK_DV, True)
    grad_out = _load_rows(GradOut + b.to(tl.int64) * grad_out_stride_b + h.to(tl.int64) * grad_out_stride_h,
                          rows, grad_out_stride_m, Lq, HEAD_DIM_V, BLOCK_DV, True)
    delta = tl.sum(out.to(tl.float32) * grad_out.to(tl.float32), 1)
    tl.store(Delta + (b * Hq + h).to(tl.int64) * Lq + rows, delta, mask=rows < Lq)


@triton.jit
def _dq_step(
    dq, q, grad_out, lse2, delta, k_base, v_base, mask_base, rows, start_n, bh,
    k_stride_n, v_stride_n, mask_stride_m, mask_stride_n,
    Lq, Lk, causal_shift, qk_scale, dropout_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, CHECK_KEYS: tl.constexpr,
):
    """Adds key block start_n's dS K (unscaled) to dq."""
    cols = start_n + tl.arange(0, BLOCK_N)
    k = _load_rows(k_base, cols, k_stride_n, Lk, HEAD_DIM, BLOCK_D, CHECK_KEYS)
    v = _load_rows(v_base, cols, v_stride_n, Lk, HEAD_DIM_V, BLOCK_DV, CHECK_KEYS)
    s = _dot(q, tl.trans(k), None, DOT_PRECISION) * qk_scale
    s = _masked_scores(
        s, rows[:, None], cols[None, :], Lq, Lk, causal_shift, mask_base, mask_stride_m, mask_stride_n,
        CAUSAL, MASK_KIND, CHECK_KEYS,
    )
    p = tl.exp2(s - lse2[:, None])
    dp = _dot(grad_out, tl.trans(v), None, DOT_PRECISION)
    if DROPOUT:
        keep = dropout_keep(rows, start_n, bh, seed_lo, seed_hi, dropout_offset, dropout_threshold, BLOCK_N)
        dp = tl.where(keep, dp * dropout_scale, 0.0)
    ds = p * (dp - delta[:, None])
    return _dot(ds.to(k.dtype), k, dq, DOT_PRECISION)


@triton.jit(do_not_specialize=_UNSPECIALISED)
def _attention_bwd_dq_kernel(
    Q, K, V, Mask, GradOut, Lse, Delta, GradQ,
    q_stride_b, q_stride_h, q_stride_m,
    k_stride_b, k_stride_h, k_stride_n,
    v_stride_b, v_stride_h, v_stride_n,
    mask_stride_b, mask_stride_h, mask_stride_m, mask_stride_n,
    grad_out_stride_b, grad_out_stride_h, grad_out_stride_m,
    Hq, kv_group, Lq, Lk, causal_shift, qk_scale, scale, dropout_scale,
    seed_lo, seed_hi, dropout_offset, dropout_threshold,
    LQ_CLASS, LK_CLASS,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """grad_q (B, Hq, Lq, D) contiguous for one query block of one head, from the forward's lse
    (contiguous, natural log) and Delta. Arguments as in _attention_fwd_kernel; scale is the
    unscaled-by-log2(e) softmax scale, applied once at the end."""
    b, h, start_m = _query_block(Lq, Hq, CAUSAL, BLOCK_M)
    bh = b * Hq + h
    kv_h = h // kv_group
    rows = start_m + tl.arange(0, BLOCK_M)
    k_base = K + b.to(tl.int64) * k_stride_b + kv_h.to(tl.int64) * k_stride_h
    v_base = V + b.to(tl.int64) * v_stride_b + kv_h.to(tl.int64) * v_stride_h
    mask_base = Mask
    if MASK_KIND != 0:
        mask_base = Mask + b.to(tl.int64) * mask_stride_b + h.to(tl.int64) * mask_stride_h
    q = _load_rows(Q + b.to(tl.int64) * q_stride_b + h.to(tl.int64) * q_stride_h,
                   rows, q_stride_m, Lq, HEAD_DIM, BLOCK_D, True)
    grad_out = _load_rows(GradOut + b.to(tl.int64) * grad_out_stride_b + h.to(tl.int64) * grad_out_stride_h,
                          rows, grad_out_stride_m, Lq, HEAD_DIM_V, BLOCK_DV, True)
    # Rows past Lq (and rows that saw no key) get lse = +inf: their P is exactly 0.
    lse2 = tl.load(Lse + bh.to(tl.int64) * Lq + rows, mask=rows < Lq, other=float("inf")) * _LOG2E
    delta = tl.load(Delta + bh.to(tl.int64) * Lq + rows, mask=rows < Lq, other=0.0)

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    free_end, end = _key_range(start_m, Lk, causal_shift, CAUSAL, BLOCK_M, BLOCK_N)
    for start_n in range(0, free_end, BLOCK_N):
        dq = _dq_step(
            dq, q, grad_out, lse2, delta, k_base, v_base, mask_base, rows, start_n, bh,
            k_stride_n, v_stride_n, mask_stride_m, mask_stride_n,
            Lq, Lk, causal_shift, qk_scale, dropout_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, CAUSAL, MASK_KIND, DROPOUT, DOT_PRECISION, BLOCK_N, False,
        )
    for start_n in range(free_end, end, BLOCK_N):
        dq = _dq_step(
            dq, q, grad_out, lse2, delta, k_base, v_base, mask_base, rows, start_n, bh,
            k_stride_n, v_stride_n, mask_stride_m, mask_stride_n,
            Lq, Lk, causal_shift, qk_scale, dropout_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, CAUSAL, MASK_KIND, DROPOUT, DOT_PRECISION, BLOCK_N, True,
        )
    _store_rows(GradQ + bh.to(tl.int64) * Lq * HEAD_DIM, rows, Lq, dq * scale, HEAD_DIM, BLOCK_D)


@triton.jit
def _dkdv_step(
    dk, dv, k, v, q_base, grad_out_base, lse_base, delta_base, mask_base, cols, start_m, start_n, bh,
    q_stride_m, grad_out_stride_m, mask_stride_m, mask_stride_n,
    Lq, Lk, causal_shift, qk_scale, dropout_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHECK_KEYS: tl.constexpr,
):
    """Adds query block start_m's contributions to dk (unscaled dS^T Q) and dv. Tiles are
    transposed, (keys, queries), so the key block stays the row axis of every product.

    Keys past Lk need no masking here: they only touch dk/dv rows that are never stored. Query
    rows past Lq load zeros, lse = +inf and Delta = 0, so they contribute exactly nothing."""
    rows = start_m + tl.arange(0, BLOCK_M)
    q = _load_rows(q_base, rows, q_stride_m, Lq, HEAD_DIM, BLOCK_D, True)
    grad_out = _load_rows(grad_out_base, rows, grad_out_stride_m, Lq, HEAD_DIM_V, BLOCK_DV, True)
    lse2 = tl.load(lse_base + rows, mask=rows < Lq, other=float("inf")) * _LOG2E
    delta = tl.load(delta_base + rows, mask=rows < Lq, other=0.0)
    s_t = _dot(k, tl.trans(q), None, DOT_PRECISION) * qk_scale
    s_t = _masked_scores(
        s_t, rows[None, :], cols[:, None], Lq, Lk, causal_shift, mask_base, mask_stride_m, mask_stride_n,
        CAUSAL, MASK_KIND, CHECK_KEYS,
    )
    p_t = tl.exp2(s_t - lse2[None, :])
    dp_t = _dot(v, tl.trans(grad_out), None, DOT_PRECISION)
    if DROPOUT:
        keep_t = tl.trans(dropout_keep(rows, start_n, bh, seed_lo, seed_hi, dropout_offset, dropout_threshold, BLOCK_N))
        dv = _dot(tl.where(keep_t, p_t * dropout_scale, 0.0).to(grad_out.dtype), grad_out, dv, DOT_PRECISION)
        dp_t = tl.where(keep_t, dp_t * dropout_scale, 0.0)
    else:
        dv = _dot(p_t.to(grad_out.dtype), grad_out, dv, DOT_PRECISION)
    ds_t = p_t * (dp_t - delta[None, :])
    dk = _dot(ds_t.to(q.dtype), q, dk, DOT_PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=_UNSPECIALISED)
def _attention_bwd_dkdv_kernel(
    Q, K, V, Mask, GradOut, Lse, Delta, GradK, GradV,
    q_stride_b, q_stride_h, q_stride_m,
    k_stride_b, k_stride_h, k_stride_n,
    v_stride_b, v_stride_h, v_stride_n,
    mask_stride_b, mask_stride_h, mask_stride_m, mask_stride_n,
    grad_out_stride_b, grad_out_stride_h, grad_out_stride_m,
    Hq, Hkv, kv_group, Lq, Lk, causal_shift, qk_scale, scale, dropout_scale,
    seed_lo, seed_hi, dropout_offset, dropout_threshold,
    LQ_CLASS, LK_CLASS,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """grad_k (B, Hkv, Lk, D) and grad_v (B, Hkv, Lk, Dv), contiguous, for one key block of one
    key/value head: sums over the kv_group query heads sharing it (in head order) and over the
    query blocks (in row order). Arguments as in _attention_bwd_dq_kernel."""
    pid = tl.program_id(0)
    num_n_blocks = tl.cdiv(Lk, BLOCK_N)
    b_kv = pid // num_n_blocks
    start_n = (pid % num_n_blocks) * BLOCK_N
    b = b_kv // Hkv
    kv_h = b_kv % Hkv
    cols = start_n + tl.arange(0, BLOCK_N)
    k = _load_rows(K + b.to(tl.int64) * k_stride_b + kv_h.to(tl.int64) * k_stride_h,
                   cols, k_stride_n, Lk, HEAD_DIM, BLOCK_D, True)
    v = _load_rows(V + b.to(tl.int64) * v_stride_b + kv_h.to(tl.int64) * v_stride_h,
                   cols, v_stride_n, Lk, HEAD_DIM_V, BLOCK_DV, True)

    if CAUSAL:
        # Row i sees key j iff j <= i + causal_shift: rows before start_n - causal_shift see no key
        # of this block, rows from start_n + BLOCK_N - 1 - causal_shift on see all of them.
        first_m = tl.maximum(start_n - causal_shift, 0) // BLOCK_M * BLOCK_M
        free_m = tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - causal_shift, 0), BLOCK_M) * BLOCK_M
        free_m = tl.maximum(free_m, first_m)
        diagonal_end = tl.minimum(free_m, Lq)
    else:
        first_m = 0
        free_m = 0
        diagonal_end = 0

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for g in range(kv_group):
        h = kv_h * kv_group + g
        bh = b * Hq + h
        q_base = Q + b.to(tl.int64) * q_stride_b + h.to(tl.int64) * q_stride_h
        grad_out_base = GradOut + b.to(tl.int64) * grad_out_stride_b + h.to(tl.int64) * grad_out_stride_h
        lse_base = Lse + bh.to(tl.int64) * Lq
        delta_base = Delta + bh.to(tl.int64) * Lq
        mask_base = Mask
        if MASK_KIND != 0:
            mask_base = Mask + b.to(tl.int64) * mask_stride_b + h.to(tl.int64) * mask_stride_h
        for start_m in range(first_m, diagonal_end, BLOCK_M):
            dk, dv = _dkdv_step(
                dk, dv, k, v, q_base, grad_out_base, lse_base, delta_base, mask_base, cols, start_m, start_n, bh,
                q_stride_m, grad_out_stride_m, mask_stride_m, mask_stride_n,
                Lq, Lk, causal_shift, qk_scale, dropout_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
                HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, CAUSAL, MASK_KIND, DROPOUT, DOT_PRECISION,
                BLOCK_M, BLOCK_N, True,
            )
        for start_m in range(free_m, Lq, BLOCK_M):
            dk, dv = _dkdv_step(
                dk, dv, k, v, q_base, grad_out_base, lse_base, delta_base, mask_base, cols, start_m, start_n, bh,
                q_stride_m, grad_out_stride_m, mask_stride_m, mask_stride_n,
                Lq, Lk, causal_shift, qk_scale, dropout_scale, seed_lo, seed_hi, dropout_offset, dropout_threshold,
                HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, CAUSAL, MASK_KIND, DROPOUT, DOT_PRECISION,
                BLOCK_M, BLOCK_N, False,
            )
    _store_rows(GradK + b_kv.to(tl.int64) * Lk * HEAD_DIM, cols, Lk, dk * scale, HEAD_DIM, BLOCK_D)
    _store_rows(GradV + b_kv.to(tl.int64) * Lk * HEAD_DIM_V, cols, Lk, dv, HEAD_DIM_V, BLOCK_DV)


# --------------------------------------------------------------------------------------------------
# Autotuning
# --------------------------------------------------------------------------------------------------

# Which block of each kernel is the program's own (outer) block and which the loop's (inner) one,
# and which length (class) each runs along: (outer, inner, outer length, inner length).
_BLOCK_ROLES = {
    "forward": ("BLOCK_M", "BLOCK_N", "LQ_CLASS", "LK_CLASS"),
    "dq": ("BLOCK_M", "BLOCK_N", "LQ_CLASS", "LK_CLASS"),
    "dkdv": ("BLOCK_N", "BLOCK_M", "LK_CLASS", "LQ_CLASS"),
}
_OUTER_BLOCKS = (16, 32, 64, 128)
_INNER_BLOCKS = {"forward": (16, 32, 64, 128), "dq": (16, 32, 64), "dkdv": (16, 32, 64)}
# With long sequences the inner block is at least this long: the forward streams K/V in blocks of
# 64 or more, while the backward's inner blocks are classically 32 (their programs hold two
# accumulators, which leaves fewer registers for the loop's tiles).
_MIN_LONG_INNER = {"forward": 64, "dq": 32, "dkdv": 32}
_NUM_WARPS = (4, 8)
_NUM_STAGES = (2, 3, 4)
# Live float32 tile elements (accumulators and score tiles) per thread a configuration may hold;
# beyond this the registers (255 per thread) spill.
_MAX_LIVE_FLOATS_PER_THREAD = 192
_TUNE_KEY = ["LQ_CLASS", "LK_CLASS", "HEAD_DIM", "HEAD_DIM_V", "CAUSAL", "MASK_KIND", "DROPOUT", "DOT_PRECISION"]


def _configs(kind):
    outer, inner = _BLOCK_ROLES[kind][:2]
    return [
        triton.Config({outer: o, inner: i}, num_warps=w, num_stages=s)
        for o in _OUTER_BLOCKS for i in _INNER_BLOCKS[kind] for w in _NUM_WARPS for s in _NUM_STAGES
    ]  # fmt: skip


@functools.lru_cache(maxsize=None)
def _max_shared_memory(device_index):
    return triton.runtime.driver.active.utils.get_device_properties(device_index)["max_shared_mem"]


def _shared_memory_estimate(kind, outer, inner, stages, block_d, block_dv, element_size, mask_size, dropout):
    """Approximate bytes of shared memory (an upper bound on the sizes compiled for sm_90 by Triton
    3.6 and 3.8): the program's resident tiles, plus `stages` buffered copies of the tiles loaded
    per loop iteration (Triton's software pipeline; the mask tile has ``mask_size`` bytes per
    element, 0 without a mask), plus room for the layout conversions of the dropout tiles."""
    # forward: resident Q, streamed K, V; dq: resident Q, dO, streamed K, V; dkdv: resident K, V,
    # streamed Q, dO.
    resident = outer * (block_d if kind == "forward" else block_d + block_dv)
    streamed = inner * (block_d + block_dv)
    dropout_scratch = 8192 if dropout else 0
    return (resident + stages * streamed) * element_size + stages * outer * inner * mask_size + dropout_scratch


def _live_floats_per_thread(kind, outer, inner, num_warps, block_d, block_dv):
    """float32 elements of the accumulators and score tiles each thread holds."""
    if kind == "forward":
        tiles = outer * block_dv + outer * inner  # acc, S
    elif kind == "dq":
        tiles = outer * block_d + 2 * outer * inner  # dQ, S, dP
    else:
        tiles = outer * (block_d + block_dv) + 2 * outer * inner  # dK, dV, S^T, dP^T
    return tiles / (32 * num_warps)


def _prune_configs(kind):
    """The early_config_prune of ``kind``'s autotuner. It reads only values of the tuning key (and
    the device), so the configuration cached for a key never depends on which shape came first.

    A configuration is dropped when
      - a block is longer than the padded length it tiles (it would only compute padding);
      - the lengths are long (class >= 128) and the outer block is under 64 or the inner one under
        _MIN_LONG_INNER: small blocks reload the other operand too often and only pay off for
        short sequences;
      - it runs 8 warps on a tile under 64 x 32 (too little work per warp) or 4 warps on a tile
        over 64 x 128 (too much);
      - its shared memory estimate exceeds the device's (head dim 256 keeps only small blocks and
        few stages), or it holds more than 192 live float32 tile elements per thread (spills).
    If nothing survives, the configuration with the smallest footprint is kept. Without AUTOTUNE
    only the preferred survivor is kept (see ``preference``).
    """
    outer_name, inner_name, outer_length, inner_length = _BLOCK_ROLES[kind]

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        block_d, block_dv = _padded_head_dim(args["HEAD_DIM"]), _padded_head_dim(args["HEAD_DIM_V"])
        element_size = args["Q"].element_size()
        mask_size = {MASK_NONE: 0, MASK_BOOL: 1, MASK_ADDITIVE: element_size}[args["MASK_KIND"]]
        shared_memory = _max_shared_memory(args["Q"].device.index)
        long_outer, long_inner = args[outer_length] >= 128, args[inner_length] >= 128

        def blocks(config):
            return config.kwargs[outer_name], config.kwargs[inner_name]

        def fits(config):
            (outer, inner), warps, stages = blocks(config), config.num_warps, config.num_stages
            return (
                outer <= args[outer_length] and inner <= args[inner_length]
                and not (long_outer and outer < 64) and not (long_inner and inner < _MIN_LONG_INNER[kind])
                and not (warps == 8 and outer * inner < 64 * 32) and not (warps == 4 and outer * inner > 64 * 128)
                and _shared_memory_estimate(kind, outer, inner, stages, block_d, block_dv, element_size, mask_size,
                                            args["DROPOUT"]) <= shared_memory
                and _live_floats_per_thread(kind, outer, inner, warps, block_d, block_dv) <= _MAX_LIVE_FLOATS_PER_THREAD
            )  # fmt: skip

        def preference(config):
            """Without autotuning: a tile near 64 x 64, 3 stages, and 8 warps only where 4 would hold
            over 128 live floats per thread."""
            outer, inner = blocks(config)
            wants_8_warps = _live_floats_per_thread(kind, outer, inner, 4, block_d, block_dv) > 128
            warps_off = (config.num_warps == 8) != wants_8_warps
            return abs(math.log2(outer * inner) - 12), abs(config.num_stages - 3), warps_off

        kept = [c for c in configs if fits(c)]
        if not kept:
            return [min(configs, key=lambda c: (blocks(c)[0] * blocks(c)[1], c.num_stages, c.num_warps))]
        return kept if AUTOTUNE else [min(kept, key=preference)]

    return prune


def _tuned(kernel, kind):
    """``kernel`` behind its autotuner, or as is under the interpreter (INTERPRETER_CONFIG)."""
    if INTERPRETED:
        return kernel
    prune = {"early_config_prune": _prune_configs(kind)}
    return autotune(_configs(kind), key=_TUNE_KEY, prune_configs_by=prune)(kernel)


_forward_kernel = _tuned(_attention_fwd_kernel, "forward")
_dq_kernel = _tuned(_attention_bwd_dq_kernel, "dq")
_dkdv_kernel = _tuned(_attention_bwd_dkdv_kernel, "dkdv")


def _fixed_config():
    """Launch keywords fixing the blocks where no autotuner chooses them."""
    return dict(INTERPRETER_CONFIG) if INTERPRETED else {}


# --------------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------------


def _padded_head_dim(dim):
    """Tile extent for a head dim: the next power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(dim))


def _length_class(length):
    """The autotuner's view of a sequence length: the next power of two in [16, 1024]. Past 1024
    the best tiles no longer change, and coarse classes keep re-tuning rare."""
    return min(max(16, triton.next_power_of_2(length)), 1024)


def _dot_precision(dtype):
    """tl.dot's input precision: TF32 for float32 only where torch allows TF32 matmuls."""
    if dtype != torch.float32:
        return "tf32"  # ignored for 16-bit operands
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", "none")  # torch >= 2.9; "none" = left to the legacy flag
    if precision in ("tf32", "ieee"):
        return precision
    try:
        return "tf32" if matmul.allow_tf32 else "ieee"
    except RuntimeError:  # torch >= 2.9 refuses the legacy flag once the new API set another backend
        return "tf32" if getattr(torch.backends, "fp32_precision", "ieee") == "tf32" else "ieee"


def _check_inputs(op, q, k, v, attn_mask, dropout_p, causal):
    """Clear errors for arguments outside the contract of csrc/schema/attention.cpp (the op layer
    never passes such, but the ops can be called directly)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be 4-D (B, H, L, E), got shape {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"{op}: {name} has dtype {t.dtype}; the Triton kernels take float32, float16, bfloat16")
        if t.device != q.device:
            raise ValueError(f"{op}: {name} is on {t.device} but q is on {q.device}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"{op}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    (batch, hq, lq, d), (_, hkv, lk, _), dv = q.shape, k.shape, v.shape[-1]
    if k.shape[0] != batch or v.shape[:3] != k.shape[:3] or k.shape[3] != d:
        raise ValueError(
            f"{op}: expected k (B, Hkv, Lk, D) and v (B, Hkv, Lk, Dv) for q (B, Hq, Lq, D) = {tuple(q.shape)}, "
            f"got k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    if (hkv == 0 and hq != 0) or (hkv != 0 and hq % hkv != 0):
        raise ValueError(f"{op}: query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    if not 0 < d <= MAX_HEAD_DIM or dv > MAX_HEAD_DIM:
        raise ValueError(f"{op}: head dims must be in 1..{MAX_HEAD_DIM}, got D={d} and Dv={dv}")
    if attn_mask is not None:
        if tuple(attn_mask.shape) != (batch, hq, lq, lk):
            raise ValueError(
                f"{op}: attn_mask must be a (B, Hq, Lq, Lk) = {(batch, hq, lq, lk)} view, got {tuple(attn_mask.shape)}"
            )
        if attn_mask.dtype not in (torch.bool, q.dtype):
            raise TypeError(f"{op}: attn_mask has dtype {attn_mask.dtype}; expected bool or q's dtype {q.dtype}")
        if attn_mask.device != q.device:
            raise ValueError(f"{op}: attn_mask is on {attn_mask.device} but q is on {q.device}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")
    if causal not in (0, 1, 2):
        raise ValueError(f"{op}: causal must be 0 (none), 1 (top-left) or 2 (bottom-right), got {causal}")


def _unit_last_stride(t):
    """``t`` with a contiguous last dim, as the kernels index it (the op layer already ensures it)."""
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def _kernel_args(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset):
    """Keyword arguments shared by the forward, dQ and dK/dV kernels: q, k, v and the mask with
    their strides, the scalars and the constexprs (the autotuner's key among them)."""
    batch, hq, lq, d = q.shape
    hkv, lk, dv = k.shape[1], k.shape[2], v.shape[-1]
    if attn_mask is None:
        mask_kind, mask, mask_strides = MASK_NONE, None, (0, 0, 0, 0)
    else:
        # bool is read as bytes (nonzero = visible): the same storage and strides, a plain integer type.
        mask_kind = MASK_BOOL if attn_mask.dtype == torch.bool else MASK_ADDITIVE
        mask = attn_mask.view(torch.uint8) if mask_kind == MASK_BOOL else attn_mask
        mask_strides = mask.stride()
    dropout = dropout_p > 0.0
    return dict(
        Q=q, K=k, V=v, Mask=mask,
        q_stride_b=q.stride(0), q_stride_h=q.stride(1), q_stride_m=q.stride(2),
        k_stride_b=k.stride(0), k_stride_h=k.stride(1), k_stride_n=k.stride(2),
        v_stride_b=v.stride(0), v_stride_h=v.stride(1), v_stride_n=v.stride(2),
        mask_stride_b=mask_strides[0], mask_stride_h=mask_strides[1],
        mask_stride_m=mask_strides[2], mask_stride_n=mask_strides[3],
        Hq=hq, kv_group=hq // hkv, Lq=lq, Lk=lk,
        causal_shift=lk - lq if causal == 2 else 0,
        qk_scale=scale * LOG2E, dropout_scale=1.0 / (1.0 - dropout_p),
        seed_lo=as_int32(seed), seed_hi=as_int32(seed >> 32), dropout_offset=as_int32(offset),
        dropout_threshold=as_int32(dropout_threshold(dropout_p)) if dropout else 0,
        LQ_CLASS=_length_class(lq), LK_CLASS=_length_class(lk),
        HEAD_DIM=d, HEAD_DIM_V=dv, BLOCK_D=_padded_head_dim(d), BLOCK_DV=_padded_head_dim(dv),
        CAUSAL=causal != 0, MASK_KIND=mask_kind, DROPOUT=dropout, DOT_PRECISION=_dot_precision(q.dtype),
        **_fixed_config(),
    )  # fmt: skip


def _blocks_grid(programs_per_block, length, block):
    """Grid of ``programs_per_block`` x cdiv(length, meta[block]) programs (flat: CUDA limits the
    second and third grid dimensions to 65535)."""
    return lambda meta: (programs_per_block * triton.cdiv(length, meta[block]),)


def attention_forward(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset):
    """(out (B, Hq, Lq, Dv), lse (B, Hq, Lq) float32), both contiguous; see csrc/schema/attention.cpp."""
    _check_inputs("bigkern_triton.attention_forward", q, k, v, attn_mask, dropout_p, causal)
    q, k, v = (_unit_last_stride(t) for t in (q, k, v))
    batch, hq, lq, _ = q.shape
    lk, dv = k.shape[2], v.shape[-1]
    out = q.new_empty((batch, hq, lq, dv))
    lse = torch.empty((batch, hq, lq), dtype=torch.float32, device=q.device)
    if batch * hq * lq == 0:
        return out, lse
    if lk == 0:  # no row sees a key
        return out.zero_(), lse.fill_(math.inf)
    _forward_kernel[_blocks_grid(batch * hq, lq, "BLOCK_M")](
        Out=out, Lse=lse, **_kernel_args(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset)
    )
    return out, lse


def attention_backward(grad_out, q, k, v, out, lse, attn_mask, dropout_p, causal, scale, seed, offset, deterministic):
    """(grad_q, grad_k, grad_v), contiguous, shaped and typed like q, k, v. Always deterministic
    (no atomics; see the module docstring), so ``deterministic`` changes nothing."""
    op = "bigkern_triton.attention_backward"
    _check_inputs(op, q, k, v, attn_mask, dropout_p, causal)
    batch, hq, lq, _ = q.shape
    hkv, lk, dv = k.shape[1], k.shape[2], v.shape[-1]
    for name, t, shape in (("grad_out", grad_out, (batch, hq, lq, dv)), ("out", out, (batch, hq, lq, dv)),
                           ("lse", lse, (batch, hq, lq))):  # fmt: skip
        if tuple(t.shape) != shape or t.device != q.device:
            raise ValueError(f"{op}: {name} must be {shape} on {q.device}, got {tuple(t.shape)} on {t.device}")
    if lse.dtype != torch.float32:
        raise TypeError(f"{op}: lse must be float32 (the forward's), got {lse.dtype}")
    grad_q, grad_k, grad_v = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    if batch * hq * lq * lk == 0:  # no query sees a key: every gradient is zero
        return grad_q.zero_(), grad_k.zero_(), grad_v.zero_()

    q, k, v, grad_out, out = (_unit_last_stride(t) for t in (q, k, v, grad_out, out))
    lse = lse.contiguous()
    delta = torch.empty((batch, hq, lq), dtype=torch.float32, device=q.device)
    delta_block = 64 if not INTERPRETED else INTERPRETER_CONFIG["BLOCK_M"]
    _attention_bwd_delta_kernel[(batch * hq * triton.cdiv(lq, delta_block),)](
        out, grad_out, delta, *out.stride()[:3], *grad_out.stride()[:3], hq, lq,
        HEAD_DIM_V=dv, BLOCK_DV=_padded_head_dim(dv), BLOCK_M=delta_block,
    )
    args = _kernel_args(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset)
    args.update(
        GradOut=grad_out, Lse=lse, Delta=delta, scale=scale,
        grad_out_stride_b=grad_out.stride(0), grad_out_stride_h=grad_out.stride(1),
        grad_out_stride_m=grad_out.stride(2),
    )  # fmt: skip
    _dq_kernel[_blocks_grid(batch * hq, lq, "BLOCK_M")](GradQ=grad_q, **args)
    _dkdv_kernel[_blocks_grid(batch * hkv, lk, "BLOCK_N")](GradK=grad_k, GradV=grad_v, Hkv=hkv, **args)
    return grad_q, grad_k, grad_v
