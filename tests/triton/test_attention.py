"""bigkern's Triton flash attention (bigkern/triton/attention.py) against the float64 oracle.

The twin ops torch.ops.bigkern_triton.attention_forward/backward are checked against
bigkern.reference.attention.attention_math run in float64 (its autograd gives the reference
gradients), on odd lengths, head dims that are not powers of two, D != Dv, grouped-query
attention, both mask kinds as broadcast views, both causal alignments with Lq > Lk and Lq < Lk,
dropout (which must drop exactly the weights the reference drops), rows that see no key,
non-contiguous inputs and empty sizes. Accuracy: float32 as tests/_tolerance.py demands against
PyTorch's own float32 op; float16/bfloat16 within twice PyTorch's own error in that dtype.

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1 (set by tests/conftest.py)
with one fixed, small block configuration, so the shapes stay small: a few blocks of 16 x 32.
"""

import math
import os

import pytest
import torch

import bigkern
import bigkern.ops.attention  # noqa: F401  (defines the Triton twin ops)
from bigkern.reference.attention import attention_math, attention_sdpa
from tests._tolerance import assert_matches

triton_attention = pytest.importorskip("bigkern.triton.attention")

pytestmark = pytest.mark.triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
OPS = torch.ops.bigkern_triton


@pytest.fixture(autouse=True)
def _one_config_per_shape_class(monkeypatch):
    # On a GPU, timing every candidate for each of the many small shape classes below would take
    # far longer than the tests; test_gpu_realistic_sizes turns autotuning back on.
    monkeypatch.setattr(triton_attention, "AUTOTUNE", False)


# (B, Hq, Hkv, Lq, Lk, D, Dv)
SHAPES = {
    "odd": (1, 2, 2, 17, 23, 16, 16),
    "gqa": (2, 4, 2, 33, 40, 40, 24),
    "lq_gt_lk": (1, 3, 1, 40, 21, 64, 40),
    "decode": (2, 2, 1, 1, 37, 64, 64),
    "one_key": (1, 2, 2, 17, 1, 16, 16),
}


# --------------------------------------------------------------------------------------------------
# Inputs and references
# --------------------------------------------------------------------------------------------------


def make_qkv(shape, dtype=torch.float32, layout="contiguous"):
    """Fresh random q, k, v. "bshd": the (B, L, H, E)-transposed views models produce;
    "sliced": the first E columns of wider rows (row stride E + 8, nothing contiguous)."""
    b, hq, hkv, lq, lk, d, dv = shape

    def one(h, length, dim):
        if layout == "bshd":
            return torch.randn(b, length, h, dim, device=DEVICE).to(dtype).transpose(1, 2)
        if layout == "sliced":
            return torch.randn(b, h, length, dim + 8, device=DEVICE).to(dtype)[..., :dim]
        return torch.randn(b, h, length, dim, device=DEVICE).to(dtype)

    return one(hq, lq, d), one(hkv, lk, d), one(hkv, lk, dv)


def make_mask(kind, shape, dtype):
    """A (B, Hq, Lq, Lk) broadcast view: "key_padding" bool (B, 1, 1, Lk), "additive" (Lq, Lk),
    "bool_full" a dense bool mask, or None."""
    b, hq, _, lq, lk, _, _ = shape
    if kind is None:
        return None
    if kind == "key_padding":
        keep = torch.rand(b, 1, 1, lk, device=DEVICE) > 0.3
        keep[..., 0] = True
        return keep.expand(b, hq, lq, lk)
    if kind == "additive":
        return torch.randn(lq, lk, device=DEVICE).to(dtype).expand(b, hq, lq, lk)
    assert kind == "bool_full"
    return torch.rand(b, hq, lq, lk, device=DEVICE) > 0.4


def with_grad(tensors, dtype=None):
    return [t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]


def reference64(q, k, v, mask, dropout_p, causal, scale, seed, offset, grad_out):
    """(out, lse, grad_q, grad_k, grad_v) of attention_math in float64."""
    q64, k64, v64 = with_grad((q, k, v), torch.float64)
    mask64 = mask if mask is None or mask.dtype == torch.bool else mask.double()
    out, lse = attention_math(q64, k64, v64, mask64, dropout_p, causal, scale, seed, offset, return_lse=True)
    out.backward(grad_out.double())
    return out.detach(), lse.detach().double(), q64.grad, k64.grad, v64.grad


def torch_in_dtype(q, k, v, mask, dropout_p, causal, scale, seed, offset, grad_out):
    """(out, grad_q, grad_k, grad_v) of PyTorch's own op in the inputs' dtype: SDPA, or with
    dropout the explicit softmax (the only way to draw the same dropout mask)."""
    qd, kd, vd = with_grad((q, k, v))
    if dropout_p > 0:
        out = attention_math(qd, kd, vd, mask, dropout_p, causal, scale, seed, offset)
    else:
        out = attention_sdpa(qd, kd, vd, mask, causal, scale)
    out.backward(grad_out)
    return out.detach(), qd.grad, kd.grad, vd.grad


def run_ops(q, k, v, mask, dropout_p, causal, scale, seed, offset, grad_out, deterministic=False):
    out, lse = OPS.attention_forward(q, k, v, mask, dropout_p, causal, scale, seed, offset)
    grads = OPS.attention_backward(grad_out, q, k, v, out, lse, mask, dropout_p, causal, scale, seed, offset,
                                   deterministic)  # fmt: skip
    return out, lse, *grads


def assert_lse(lse, ref_lse):
    assert lse.dtype == torch.float32 and lse.is_contiguous()
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), "lse: +inf rows differ from the reference's"
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite].double(), ref_lse[finite], rtol=1e-5, atol=1e-5)


def check(shape, dtype=torch.float32, layout="contiguous", mask_kind=None, dropout_p=0.0, causal=0,
          seed=0, offset=0, compare_with_torch=True):
    """Forward and backward of the twin ops against the float64 oracle (and PyTorch's own error)."""
    q, k, v = make_qkv(shape, dtype, layout)
    mask = make_mask(mask_kind, shape, dtype)
    scale = 1.0 / math.sqrt(q.shape[-1])
    args = (mask, dropout_p, causal, scale, seed, offset)
    grad_out = torch.randn(*q.shape[:3], v.shape[-1], device=DEVICE).to(dtype)
    ours = run_ops(q, k, v, *args, grad_out)
    ref = reference64(q, k, v, *args, grad_out)
    names = ("out", "lse", "grad_q", "grad_k", "grad_v")
    for name, t, like in zip(names, ours, (None, None, q, k, v)):
        assert not torch.isnan(t).any(), f"{name}: NaN"
        if like is not None:
            assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous(), name
    assert ours[0].is_contiguous() and ours[0].dtype == dtype
    assert_lse(ours[1], ref[1])
    if not compare_with_torch:
        for name, t, r in zip(names, ours, ref):
            if name != "lse":
                torch.testing.assert_close(t.double(), r, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
        return ours
    theirs = torch_in_dtype(q, k, v, *args, grad_out)
    for name, t, their, r in zip(names[:1] + names[2:], ours[:1] + ours[2:], theirs, ref[:1] + ref[2:]):
        assert_matches(t, their, r, name)
    return ours


# --------------------------------------------------------------------------------------------------
# Accuracy over shapes, masks, causal modes and layouts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, mask_kind, causal",
    [
        ("odd", None, 0),
        ("gqa", None, 1),
        ("gqa", "key_padding", 2),
        ("lq_gt_lk", None, 1),
        ("lq_gt_lk", "additive", 2),
        ("odd", "additive", 1),
        ("odd", "bool_full", 0),
        ("decode", "key_padding", 2),
        ("one_key", None, 0),
    ],
)
def test_forward_backward(shape, mask_kind, causal):
    check(SHAPES[shape], mask_kind=mask_kind, causal=causal)


@pytest.mark.parametrize("layout", ["bshd", "sliced"])
def test_non_contiguous_inputs(layout):
    check(SHAPES["gqa"], layout=layout, mask_kind="additive", causal=1)


@pytest.mark.parametrize("d, dv", [(256, 256), (200, 72), (1, 16)])
def test_head_dims(d, dv):
    check((1, 2, 1, 9, 20, d, dv), causal=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask_kind, causal", [(None, 1), ("additive", 2)])
def test_low_precision(dtype, mask_kind, causal):
    check(SHAPES["gqa"], dtype=dtype, mask_kind=mask_kind, causal=causal)


@pytest.mark.parametrize("blocks", [(16, 32), (32, 16)], ids=["m16-n32", "m32-n16"])
@pytest.mark.parametrize("shift", [-17, -2, 1, 14, 15, 16, 31])
def test_causal_diagonal_at_block_edges(monkeypatch, blocks, shift):
    # Bottom-right causal with Lk - Lq = shift: the diagonal meets the tile edges at every offset
    # that decides which blocks are skipped, visited in full or masked per element (query rows
    # start at multiples of 16, key blocks at multiples of 16 or 32): an off-by-one in any of
    # those ranges changes the result. Both orders of BLOCK_M and BLOCK_N.
    if INTERPRETED:
        monkeypatch.setitem(triton_attention.INTERPRETER_CONFIG, "BLOCK_M", blocks[0])
        monkeypatch.setitem(triton_attention.INTERPRETER_CONFIG, "BLOCK_N", blocks[1])
    elif blocks != (16, 32):
        pytest.skip("the autotuner picks the blocks on a GPU")
    check((1, 2, 1, 40, 40 + shift, 16, 16), causal=2, compare_with_torch=False)


# --------------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, mask_kind, causal, seed, offset",
    [
        ("gqa", None, 0, 0, 0),
        ("gqa", "key_padding", 1, 2**40 + 12345, 2**31 + 7),
        ("lq_gt_lk", "additive", 2, 2**63 - 1, 3),
    ],
)
def test_dropout_matches_reference(shape, mask_kind, causal, seed, offset):
    # Tight comparison with the float64 oracle: a single weight dropped differently would stand out.
    check(SHAPES[shape], mask_kind=mask_kind, dropout_p=0.3, causal=causal, seed=seed, offset=offset,
          compare_with_torch=False)  # fmt: skip


def test_dropout_depends_on_seed_and_offset():
    q, k, v = make_qkv(SHAPES["odd"])
    scale = 0.25
    base = OPS.attention_forward(q, k, v, None, 0.5, 0, scale, 11, 3)[0]
    assert torch.equal(base, OPS.attention_forward(q, k, v, None, 0.5, 0, scale, 11, 3)[0])
    assert not torch.allclose(base, OPS.attention_forward(q, k, v, None, 0.5, 0, scale, 12, 3)[0])
    assert not torch.allclose(base, OPS.attention_forward(q, k, v, None, 0.5, 0, scale, 11, 4)[0])


# --------------------------------------------------------------------------------------------------
# Rows without keys, empty sizes, determinism, bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_fully_masked_rows(mask_dtype):
    shape = (2, 2, 1, 19, 23, 16, 16)
    q, k, v = make_qkv(shape)
    visible = torch.rand(2, 2, 19, 23, device=DEVICE) > 0.3
    visible[0, 1, 3] = False
    visible[1, :, 10:13] = False
    mask = visible
    if mask_dtype != torch.bool:
        mask = torch.zeros(visible.shape, device=DEVICE).masked_fill(~visible, -math.inf)
    grad_out = torch.randn(2, 2, 19, 16, device=DEVICE)
    out, lse, grad_q, grad_k, grad_v = run_ops(q, k, v, mask, 0.0, 1, 0.25, 0, 0, grad_out)
    empty_rows = ~(visible & torch.ones(19, 23, dtype=torch.bool, device=DEVICE).tril()).any(-1)
    assert empty_rows[0, 1, 3] and empty_rows[1, 0, 11]
    for t in (out, lse, grad_q, grad_k, grad_v):
        assert not torch.isnan(t).any()
    assert torch.equal(out[empty_rows], torch.zeros_like(out[empty_rows]))
    assert torch.isinf(lse[empty_rows]).all() and (lse[empty_rows] > 0).all()
    assert torch.equal(grad_q[empty_rows], torch.zeros_like(grad_q[empty_rows]))
    ref = reference64(q, k, v, mask if mask_dtype == torch.bool else mask.double(), 0.0, 1, 0.25, 0, 0, grad_out)
    for t, r in zip((out, grad_q, grad_k, grad_v), ref[:1] + ref[2:]):
        torch.testing.assert_close(t.double(), r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("b, h, lq, lk", [(0, 2, 5, 7), (1, 2, 0, 7), (1, 2, 5, 0), (2, 0, 5, 7)])
def test_empty_sizes(b, h, lq, lk):
    q = torch.randn(b, h, lq, 16, device=DEVICE)
    k = torch.randn(b, h, lk, 16, device=DEVICE)
    v = torch.randn(b, h, lk, 24, device=DEVICE)
    grad_out = torch.randn(b, h, lq, 24, device=DEVICE)
    for causal in (0, 2):
        out, lse, grad_q, grad_k, grad_v = run_ops(q, k, v, None, 0.1, causal, 0.25, 1, 2, grad_out)
        assert out.shape == (b, h, lq, 24) and lse.shape == (b, h, lq)
        assert (out == 0).all() and (lse == math.inf).all()  # vacuous unless rows exist without keys
        for grad, t in ((grad_q, q), (grad_k, k), (grad_v, v)):
            assert grad.shape == t.shape and (grad == 0).all()


def test_backward_is_deterministic():
    q, k, v = make_qkv((1, 4, 2, 17, 20, 16, 16))
    grad_out = torch.randn(1, 4, 17, 16, device=DEVICE)
    first = run_ops(q, k, v, None, 0.2, 1, 0.2, 9, 1, grad_out, deterministic=False)
    second = run_ops(q, k, v, None, 0.2, 1, 0.2, 9, 1, grad_out, deterministic=True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_bad_inputs_raise_clear_errors():
    q, k, v = make_qkv((1, 2, 1, 5, 7, 16, 16))
    forward = triton_attention.attention_forward
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        forward(q, k.expand(1, 3, 7, 16), v.expand(1, 3, 7, 16), None, 0.0, 0, 1.0, 0, 0)
    with pytest.raises(TypeError, match="attn_mask has dtype"):
        forward(q, k, v, torch.zeros(1, 2, 5, 7, dtype=torch.float16, device=DEVICE), 0.0, 0, 1.0, 0, 0)
    with pytest.raises(ValueError, match="attn_mask must be"):
        forward(q, k, v, torch.ones(1, 2, 5, 6, dtype=torch.bool, device=DEVICE), 0.0, 0, 1.0, 0, 0)
    with pytest.raises(ValueError, match="head dims"):
        forward(*make_qkv((1, 1, 1, 2, 2, 264, 16)), None, 0.0, 0, 1.0, 0, 0)
    with pytest.raises(ValueError, match="causal"):
        forward(q, k, v, None, 0.0, 3, 1.0, 0, 0)
    with pytest.raises(ValueError, match="dropout_p"):
        forward(q, k, v, None, 1.0, 0, 1.0, 0, 0)
    with pytest.raises(TypeError, match="float32, float16, bfloat16"):
        forward(q.double(), k.double(), v.double(), None, 0.0, 0, 1.0, 0, 0)
    out, lse = forward(q, k, v, None, 0.0, 0, 1.0, 0, 0)
    with pytest.raises(ValueError, match="lse must be"):
        triton_attention.attention_backward(out, q, k, v, out, lse[..., :-1], None, 0.0, 0, 1.0, 0, 0, False)


# --------------------------------------------------------------------------------------------------
# Through the public op
# --------------------------------------------------------------------------------------------------


def test_public_op_on_the_triton_backend():
    b, hq, hkv, lq, lk, d = 2, 4, 2, 19, 26, 32
    q = torch.randn(b, lq, hq, d, device=DEVICE).transpose(1, 2)
    k = torch.randn(b, lk, hkv, d, device=DEVICE).transpose(1, 2)
    v = torch.randn(b, lk, hkv, d, device=DEVICE).transpose(1, 2)
    key_padding = torch.rand(b, 1, 1, lk, device=DEVICE) > 0.2
    key_padding[..., 0] = True
    grad_out = torch.randn(b, hq, lq, d, device=DEVICE)
    ours_in = with_grad((q, k, v))
    with bigkern.use_backend("triton"):
        out = bigkern.ops.attention(*ours_in, attn_mask=key_padding, enable_gqa=True)
    out.backward(grad_out)
    ref = reference64(q, k, v, key_padding.expand(b, hq, lq, lk), 0.0, 0, 1 / math.sqrt(d), 0, 0, grad_out)
    for t, r in zip((out.detach(), *(x.grad for x in ours_in)), ref[:1] + ref[2:]):
        torch.testing.assert_close(t.double(), r, rtol=1e-5, atol=1e-5)


def test_public_op_dropout_is_reproducible():
    q, k, v = make_qkv((1, 2, 2, 17, 21, 16, 16))
    with bigkern.use_backend("triton"):
        torch.manual_seed(7)
        first = bigkern.ops.attention(q, k, v, dropout_p=0.4, is_causal="bottom_right")
        torch.manual_seed(7)
        second = bigkern.ops.attention(q, k, v, dropout_p=0.4, is_causal="bottom_right")
    assert torch.equal(first, second)
    assert not torch.allclose(first, attention_math(q, k, v, None, 0.0, 2, 0.25))


# --------------------------------------------------------------------------------------------------
# Host-side policy: dot precision and autotuning pruning (no kernel runs)
# --------------------------------------------------------------------------------------------------


def test_float32_dot_precision_follows_torch():
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert triton_attention._dot_precision(torch.float32) == "ieee"
        torch.set_float32_matmul_precision("high")
        assert triton_attention._dot_precision(torch.float32) == "tf32"
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("kind", ["forward", "dq", "dkdv"])
@pytest.mark.parametrize(
    "dtype, d, lq, lk",
    [(torch.float16, 64, 4096, 4096), (torch.bfloat16, 256, 2048, 2048), (torch.float32, 128, 1024, 1024),
     (torch.float16, 128, 1, 8192), (torch.float16, 40, 17, 33)],
)  # fmt: skip
def test_autotune_pruning(monkeypatch, kind, dtype, d, lq, lk):
    shared_memory = 227 * 1024  # an H100's opt-in limit per block
    monkeypatch.setattr(triton_attention, "_max_shared_memory", lambda device_index: shared_memory)
    args = dict(Q=torch.empty(1, dtype=dtype), HEAD_DIM=d, HEAD_DIM_V=d, MASK_KIND=1, DROPOUT=True,
                LQ_CLASS=triton_attention._length_class(lq), LK_CLASS=triton_attention._length_class(lk))  # fmt: skip
    configs = triton_attention._configs(kind)
    prune = triton_attention._prune_configs(kind)
    assert len(prune(configs, {}, **args)) == 1  # AUTOTUNE is off in these tests
    monkeypatch.setattr(triton_attention, "AUTOTUNE", True)
    kept = prune(configs, {}, **args)
    assert 0 < len(kept) <= 24
    outer, inner, outer_length, inner_length = triton_attention._BLOCK_ROLES[kind]
    block_d = triton_attention._padded_head_dim(d)
    for config in kept:
        assert config.kwargs[outer] <= args[outer_length] and config.kwargs[inner] <= args[inner_length]
        footprint = triton_attention._shared_memory_estimate(
            kind, config.kwargs[outer], config.kwargs[inner], config.num_stages, block_d, block_d, dtype.itemsize,
            mask_size=1, dropout=True,
        )
        assert footprint <= shared_memory
    if d == 256:
        assert all(c.kwargs[outer] * c.kwargs[inner] < 128 * 128 for c in kept)


# --------------------------------------------------------------------------------------------------
# On a GPU: autotuned kernels at realistic sizes
# --------------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d, causal", [(64, 1), (128, 0), (96, 2), (256, 1)])
def test_gpu_realistic_sizes(monkeypatch, dtype, d, causal):
    if INTERPRETED:
        pytest.skip("interpreted")
    monkeypatch.setattr(triton_attention, "AUTOTUNE", True)
    check((2, 8, 2, 1000, 1030, d, d), dtype=dtype, mask_kind="key_padding" if causal == 0 else None, causal=causal)
