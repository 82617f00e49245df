"""bigkern.ops.attention against F.scaled_dot_product_attention and the float64 oracle.

Every backend runs the same cases: "cpu" (C++ flash kernel), "cuda" (only where a GPU exists)
and "triton" (interpreted on the CPU where there is no GPU, so only on the smallest cases;
tests/triton/test_attention.py covers it in depth). The accuracy rule is the flash-attention
one: bigkern's error against a float64 reference at most 2x (outputs) or 3x (gradients) the
error of PyTorch's own SDPA in the same dtype, plus a few units in the last place.
"""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import bigkern
from bigkern.reference.attention import attention_math
from tests._tolerance import ULP

attention_module = importlib.import_module("bigkern.ops.attention")  # the module, not the function

BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("triton", id="triton", marks=pytest.mark.triton),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
]
NATIVE_BACKENDS = [BACKENDS[0], BACKENDS[2]]


def device_of(backend):
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def dtypes_of(backend):
    if backend == "cuda":
        return [torch.float16, torch.bfloat16]
    return [torch.float32, torch.bfloat16, torch.float16] if backend == "cpu" else [torch.float32]


def assert_close_to_reference(ours, torch_out, ref64, factor, what):
    """max|ours - ref| <= factor * max|torch - ref| + 4 ulp(dtype) * max|ref| (the flash-attention rule)."""
    assert ours.shape == ref64.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref64.shape)}"
    assert not torch.isnan(ours).any(), f"{what}: NaN in bigkern's result"
    if ours.numel() == 0:
        return
    ref = ref64.double()
    ours_err = (ours.double() - ref).abs().max().item()
    torch_err = (torch_out.double() - ref).abs().max().item()
    slack = 4 * ULP[ours.dtype] * max(ref.abs().max().item(), 1.0)
    if ours.dtype == torch.float32:
        slack = max(slack, 2e-6 * max(ref.abs().max().item(), 1.0))
    assert ours_err <= factor * torch_err + slack, (
        f"{what}: max error {ours_err:.3g} > {factor} x torch's {torch_err:.3g} + {slack:.2g}"
    )


def make_qkv(b, hq, hkv, lq, lk, d, dv, dtype, device, layout="contiguous"):
    """Fresh random q, k, v; layout "bshd" gives the (B, L, H, D)-transposed views models produce."""

    def one(h, length, dim):
        if layout == "bshd":
            return torch.randn(b, length, h, dim, device=device).to(dtype).transpose(1, 2)
        return torch.randn(b, h, length, dim, device=device).to(dtype)

    return one(hq, lq, d), one(hkv, lk, d), one(hkv, lk, dv)


def sdpa_like(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """PyTorch's own op in the inputs' dtype: SDPA (bottom-right causal through its CausalBias)."""
    gqa = q.shape[-3] != k.shape[-3]
    if is_causal == "bottom_right":
        from torch.nn.attention.bias import causal_lower_right

        if q.shape[-2] <= k.shape[-2] and not gqa:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[-2], k.shape[-2]), scale=scale)
        return attention_math(q, k, v, None, 0.0, 2, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)


def check_case(backend, q, k, v, *, attn_mask=None, is_causal=False, scale=None, grads=True):
    """Forward and backward of bigkern vs SDPA in the same dtype vs the float64 oracle."""
    gqa = q.shape[-3] != k.shape[-3]
    causal = {False: 0, True: 1, "bottom_right": 2}[is_causal]
    leaves = [t.detach().clone().requires_grad_(grads) for t in (q, k, v)]
    theirs_in = [t.detach().clone().requires_grad_(grads) for t in (q, k, v)]
    ref_in = [t.detach().cpu().double().requires_grad_(grads) for t in (q, k, v)]
    ref_mask = None
    if attn_mask is not None:
        ref_mask = attn_mask.cpu() if attn_mask.dtype == torch.bool else attn_mask.cpu().double()
    with bigkern.use_backend(backend):
        ours = bigkern.ops.attention(*leaves, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)
    theirs = sdpa_like(*theirs_in, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    ref = attention_math(*ref_in, ref_mask, 0.0, causal, scale)
    assert ours.dtype == q.dtype and ours.device == q.device
    assert_close_to_reference(ours.cpu(), theirs.cpu(), ref, 2, "output")
    if not grads:
        return
    grad = torch.randn_like(theirs)
    for out, inputs in ((ours, leaves), (theirs, theirs_in)):
        out.backward(grad)
    ref.backward(grad.cpu().double())
    for name, mine, th, rf in zip("qkv", leaves, theirs_in, ref_in):
        assert mine.grad.shape == mine.shape
        assert_close_to_reference(mine.grad.cpu(), th.grad.cpu(), rf.grad, 3, f"grad_{name}")


SHAPES = [  # (batch, q heads, kv heads, Lq, Lk, head dim, value head dim)
    (2, 2, 2, 17, 17, 16, 16),
    (1, 3, 3, 113, 203, 40, 40),
    (2, 4, 2, 33, 64, 64, 64),  # grouped-query
    (1, 4, 1, 1, 97, 80, 80),  # multi-query decoding step
    (1, 2, 2, 70, 31, 32, 48),  # Lq > Lk, value head dim differs
    (1, 1, 1, 129, 129, 128, 128),
]


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("is_causal", [False, True, "bottom_right"], ids=["full", "causal", "bottom_right"])
def test_matches_sdpa(backend, shape, is_causal):
    b, hq, hkv, lq, lk, d, dv = shape
    if backend == "cuda" and d != dv:
        pytest.skip("the CUDA kernels need equal head dims (the op layer routes this to triton)")
    for dtype in dtypes_of(backend):
        q, k, v = make_qkv(b, hq, hkv, lq, lk, d, dv, dtype, device_of(backend))
        check_case(backend, q, k, v, is_causal=is_causal)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("d", [16, 32, 40, 64, 80, 96, 128, 160, 192, 256])
def test_head_dims(backend, d):
    dtype = torch.bfloat16 if backend == "cuda" else torch.float32
    q, k, v = make_qkv(1, 2, 2, 37, 45, d, d, dtype, device_of(backend))
    check_case(backend, q, k, v, is_causal=True)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
@pytest.mark.parametrize("length", [1023, 1024])
def test_long_rows(backend, length):
    dtype = torch.bfloat16 if backend == "cuda" else torch.float32
    q, k, v = make_qkv(1, 2, 1, length, length, 64, 64, dtype, device_of(backend))
    check_case(backend, q, k, v, is_causal=length % 2 == 0)


MASKS = ["key_padding_bool", "square_bool", "full_bool", "key_padding_float", "square_float", "head_float"]


def make_mask(kind, b, h, lq, lk, dtype, device):
    """Masks of every broadcast shape SDPA accepts, random, with -inf / False holes."""
    shape = {"key_padding": (b, 1, 1, lk), "square": (lq, lk), "full": (b, h, lq, lk), "head": (1, h, lq, lk)}
    geometry, kind_of = kind.rsplit("_", 1)
    if kind_of == "bool":
        mask = torch.rand(shape[geometry], device=device) > 0.3
        mask[..., 0] = True  # keep some rows alive; fully masked rows have their own test
        return mask
    mask = torch.randn(shape[geometry], device=device).to(dtype)
    return mask.masked_fill(torch.rand(shape[geometry], device=device) < 0.2, float("-inf")).index_fill(-1, torch.tensor([0], device=device), 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", MASKS)
def test_masks(backend, kind):
    small = backend == "triton" and device_of(backend) == "cpu"
    b, h, lq, lk, d = (1, 2, 9, 13, 16) if small else (2, 3, 41, 77, 64)
    for dtype in dtypes_of(backend)[:1 if small else None]:
        q, k, v = make_qkv(b, h, h, lq, lk, d, d, dtype, device_of(backend))
        mask = make_mask(kind, b, h, lq, lk, dtype, device_of(backend))
        check_case(backend, q, k, v, attn_mask=mask)


def test_masks_reach_kernels_as_broadcast_views():
    """A key padding mask and an (Lq, Lk) mask are read in place, never expanded in memory."""
    q = torch.randn(2, 4, 8, 16)
    for mask in (torch.rand(2, 1, 1, 12) > 0.5, torch.randn(8, 12)):
        m4 = attention_module._mask_4d(mask, q, 12, q)
        assert m4.shape == (2, 4, 8, 12)
        assert m4.untyped_storage().data_ptr() == mask.untyped_storage().data_ptr()
        assert 0 in m4.stride()


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    small = backend == "triton" and device_of(backend) == "cpu"
    lq, lk = (11, 19) if small else (57, 91)
    dtype = dtypes_of(backend)[0]
    q, k, v = make_qkv(2, 4, 2, lq, lk, 32, 32, dtype, device_of(backend), layout="bshd")
    assert not q.is_contiguous()
    check_case(backend, q, k, v, is_causal=True)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_fully_masked_rows_give_zeros_and_zero_gradients(backend):
    device, dtype = device_of(backend), dtypes_of(backend)[0]
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 2, 6, 10, 32, 32, dtype, device))
    mask = torch.rand(1, 1, 6, 10, device=device) > 0.4
    mask[..., 0] = True
    mask[..., 2, :] = False  # query 2 sees no key
    with bigkern.use_backend(backend):
        out = bigkern.ops.attention(q, k, v, attn_mask=mask)
        out.backward(torch.randn_like(out))
    assert torch.isfinite(out).all() and torch.equal(out[:, :, 2], torch.zeros_like(out[:, :, 2]))
    assert torch.equal(q.grad[:, :, 2], torch.zeros_like(q.grad[:, :, 2]))
    assert torch.isfinite(k.grad).all() and torch.isfinite(v.grad).all()
    # bottom-right causal with more queries than keys: the first Lq - Lk queries see nothing
    with bigkern.use_backend(backend):
        out = bigkern.ops.attention(q[:, :, :6], k[:, :, :4], v[:, :, :4], is_causal="bottom_right")
    assert torch.equal(out[:, :, :2], torch.zeros_like(out[:, :, :2]))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_empty_sizes(backend):
    device, dtype = device_of(backend), dtypes_of(backend)[0]
    with bigkern.use_backend(backend):
        for b, lq, lk in ((0, 5, 5), (2, 0, 5), (2, 5, 0)):
            q, k, v = (t.requires_grad_() for t in make_qkv(b, 2, 2, lq, lk, 16, 16, dtype, device))
            out = bigkern.ops.attention(q, k, v)
            assert out.shape == (b, 2, lq, 16)
            assert torch.equal(out, torch.zeros_like(out))  # no key: zeros, as SDPA
            out.sum().backward()
            assert q.grad.shape == q.shape and torch.equal(k.grad, torch.zeros_like(k))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_matches_reference_mask(backend):
    """Every backend draws the same dropout mask as the reference (counter-based Philox)."""
    device = device_of(backend)
    dtype = torch.float32 if backend != "cuda" else torch.bfloat16
    q, k, v = make_qkv(2, 2, 1, 13, 29, 16, 16, dtype, device)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    torch.manual_seed(1234)
    with bigkern.use_backend(backend):
        ours = bigkern.ops.attention(*leaves, dropout_p=0.3, enable_gqa=True)
    torch.manual_seed(1234)
    seed, offset = attention_module._dropout_seed(0.3)
    ref_in = [t.detach().cpu().double().requires_grad_() for t in (q, k, v)]
    ref = attention_math(*ref_in, None, 0.3, 0, None, seed, offset)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    ref.backward(grad.cpu().double())
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.cpu().double(), ref.detach(), **tol)
    for mine, rf in zip(leaves, ref_in):
        torch.testing.assert_close(mine.grad.cpu().double(), rf.grad, **tol)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_dropout_reproducible_and_rate(backend):
    device, dtype = device_of(backend), dtypes_of(backend)[0]
    q, k, v = make_qkv(2, 4, 4, 64, 64, 64, 64, dtype, device)
    runs = []
    for _ in range(2):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        torch.manual_seed(7)
        with bigkern.use_backend(backend):
            out = bigkern.ops.attention(*leaves, dropout_p=0.25)
        out.backward(torch.ones_like(out))
        runs.append((out, *(t.grad for t in leaves)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    # the keep rate: v = identity columns make out = the dropped weight matrix, row by row
    lk = 64
    eye = torch.eye(lk, device=device, dtype=dtype).expand(2, 4, lk, lk)
    with bigkern.use_backend(backend):
        weights = bigkern.ops.attention(q, k, eye, dropout_p=0.25)
    kept = (weights != 0).double().mean().item()
    assert abs(kept - 0.75) < 0.02, f"kept {kept:.3f} of the weights, expected 0.75"


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_deterministic_backward_is_bitwise_reproducible(backend):
    device, dtype = device_of(backend), dtypes_of(backend)[0]
    q, k, v = make_qkv(2, 4, 2, 150, 150, 64, 64, dtype, device)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
            with bigkern.use_backend(backend):
                out = bigkern.ops.attention(*leaves, is_causal=True, enable_gqa=True)
            out.backward(torch.ones_like(out))
            grads.append([t.grad for t in leaves])
    finally:
        torch.use_deterministic_algorithms(previous)
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_gradcheck_float64_cpu():
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 1, 5, 7, 8, 6, torch.float64, "cpu"))
    mask = torch.randn(5, 7, dtype=torch.float64)

    def public(q, k, v):
        with bigkern.use_backend("cpu"):
            return bigkern.ops.attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def raw_op_with_dropout(q, k, v):  # a fixed seed, so every evaluation drops the same weights
        return torch.ops.bigkern.attention_forward(q, k, v, None, 0.3, 2, 0.4, 99, 5)[0]

    assert torch.autograd.gradcheck(public, (q, k, v))
    assert torch.autograd.gradcheck(raw_op_with_dropout, (q, k, v))


def test_input_ranks_like_sdpa():
    """3-D (N, L, E) inputs are one head; extra leading dims are batch dims."""
    with bigkern.use_backend("cpu"):
        for shape in ((3, 11, 16), (2, 3, 2, 11, 16)):
            q, k, v = (torch.randn(shape) for _ in range(3))
            torch.testing.assert_close(bigkern.ops.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_causal_bias_masks_and_spellings():
    from torch.nn.attention.bias import causal_lower_right, causal_upper_left

    q, k, v = make_qkv(1, 2, 2, 7, 12, 16, 16, torch.float32, "cpu")
    with bigkern.use_backend("cpu"):
        lower = bigkern.ops.attention(q, k, v, attn_mask=causal_lower_right(7, 12))
        upper = bigkern.ops.attention(q, k, v, attn_mask=causal_upper_left(7, 12))
        torch.testing.assert_close(lower, bigkern.ops.attention(q, k, v, is_causal="bottom_right"))
        torch.testing.assert_close(upper, bigkern.ops.attention(q, k, v, is_causal="top_left"))
    torch.testing.assert_close(lower, F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(7, 12)))
    torch.testing.assert_close(upper, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_scale_argument():
    q, k, v = make_qkv(1, 2, 2, 9, 9, 16, 16, torch.float32, "cpu")
    with bigkern.use_backend("cpu"):
        ours = bigkern.ops.attention(q, k, v, scale=0.3)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, scale=0.3))


def test_autocast_runs_in_the_autocast_dtype():
    q, k, v = make_qkv(1, 2, 2, 9, 9, 16, 16, torch.float32, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16), bigkern.use_backend("cpu"):
        ours = bigkern.ops.attention(q, k, v)
        theirs = F.scaled_dot_product_attention(q, k, v)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    ref = attention_math(q.double(), k.double(), v.double())
    assert_close_to_reference(ours, theirs, ref, 2, "autocast output")


def test_mask_requiring_grad_runs_torch_and_gets_its_gradient():
    q, k, v = make_qkv(1, 2, 2, 6, 6, 16, 16, torch.float32, "cpu")
    mask = torch.randn(6, 6, requires_grad=True)
    out = bigkern.ops.attention(q, k, v, attn_mask=mask)
    out.sum().backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0
    with bigkern.use_backend("cpu"), pytest.raises(bigkern.BackendUnavailableError, match="attn_mask requires grad"):
        bigkern.ops.attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("namespace", ["bigkern", "bigkern_triton"])
def test_opcheck(namespace):
    if namespace == "bigkern_triton":
        pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() and namespace == "bigkern_triton" else "cpu"
    ops = getattr(torch.ops, namespace)
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 1, 5, 9, 16, 16, torch.float32, device))
    mask = torch.rand(1, 1, 1, 9, device=device).expand(1, 2, 5, 9) > 0.2
    for args in ((q, k, v, None, 0.0, 1, 0.25, 0, 0), (q, k, v, mask, 0.2, 2, 0.25, 42, 3)):
        torch.library.opcheck(ops.attention_forward.default, args)
    out, lse = ops.attention_forward(q, k, v, None, 0.0, 0, 0.25, 0, 0)
    grad = torch.randn_like(out)
    torch.library.opcheck(
        ops.attention_backward.default, (grad, q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), None, 0.0, 0, 0.25, 0, 0, False)
    )


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compiler):
    q, k, v = (t.requires_grad_() for t in make_qkv(2, 4, 2, 19, 23, 32, 32, torch.float32, "cpu"))
    mask = torch.rand(2, 1, 1, 23) > 0.2

    def fn(q, k, v):
        return bigkern.ops.attention(q, k, v, attn_mask=mask, enable_gqa=True).sin()

    with bigkern.use_backend("cpu"):
        compiled = torch.compile(fn, backend=compiler, fullgraph=True)
        ours = compiled(q, k, v)
        ours.sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).sin()
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for mine, t in zip(grads, (q, k, v)):
        torch.testing.assert_close(mine, t.grad, rtol=1e-4, atol=1e-5)


BAD_INPUTS = [
    (dict(q=(2, 4, 8, 16), k=(2, 4, 8, 32)), ValueError, "head dims differ"),
    (dict(q=(2, 4, 8, 16), k=(2, 3, 8, 16)), ValueError, "enable_gqa=True"),
    (dict(q=(2, 4, 8, 16), k=(2, 3, 8, 16), gqa=True), ValueError, "multiple of key/value heads"),
    (dict(q=(2, 8, 16), k=(2, 4, 8, 16)), ValueError, "same rank"),
    (dict(q=(8, 16), k=(8, 16)), ValueError, "at least 3 dims"),
    (dict(q=(2, 4, 8, 16), v_len=9), ValueError, "key and value lengths differ"),
    (dict(q=(3, 4, 8, 16), k=(2, 4, 8, 16)), ValueError, "batch dims"),
    (dict(k_dtype=torch.float64), TypeError, "share a dtype"),
    (dict(q_dtype=torch.int32), TypeError, "dtype torch.int32"),
    (dict(mask=(3, 9)), ValueError, "does not broadcast"),
    (dict(mask_dtype=torch.int64), TypeError, "expected bool or a float dtype"),
    (dict(mask=(8, 8), is_causal=True), ValueError, "attn_mask must be None when is_causal"),
    (dict(is_causal="upper"), ValueError, "is_causal must be"),
    (dict(dropout_p=1.0), ValueError, "dropout_p must be a float in"),
    (dict(dropout_p=-0.1), ValueError, "dropout_p must be a float in"),
    (dict(scale=float("nan")), ValueError, "scale must be a finite float"),
    (dict(k_device="meta"), ValueError, "one device"),
]


@pytest.mark.parametrize("case,error,message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input(case, error, message):
    q = torch.randn(case.get("q", (2, 4, 8, 16))).to(case.get("q_dtype", torch.float32))
    k = torch.randn(case.get("k", q.shape), dtype=case.get("k_dtype", torch.float32), device=case.get("k_device", "cpu"))
    v_shape = list(k.shape)
    if "v_len" in case:
        v_shape[-2] = case["v_len"]
    v = torch.randn(v_shape)
    mask = None
    if "mask" in case or "mask_dtype" in case:
        mask = torch.ones(case.get("mask", (8, 8)), dtype=case.get("mask_dtype", torch.bool))
    with pytest.raises(error, match=message):
        bigkern.ops.attention(q, k, v, attn_mask=mask, dropout_p=case.get("dropout_p", 0.0),
                              is_causal=case.get("is_causal", False), scale=case.get("scale"),
                              enable_gqa=case.get("gqa", False))


def test_explicit_backend_that_cannot_serve_names_the_reason():
    q, k, v = make_qkv(1, 2, 2, 5, 5, 16, 16, torch.float32, "cpu")
    with bigkern.use_backend("cuda"), pytest.raises(bigkern.BackendUnavailableError, match="cuda.*attention"):
        bigkern.ops.attention(q, k, v)


@pytest.mark.cuda
def test_cuda_memory_is_linear_in_length():
    """Forward + backward at L=8192 allocate far less than one Lq x Lk matrix."""
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 8, 8, 8192, 8192, 64, 64, torch.bfloat16, "cuda"))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with bigkern.use_backend("cuda"):
        out = bigkern.ops.attention(q, k, v, is_causal=True)
        out.backward(torch.ones_like(out))
    peak = torch.cuda.max_memory_allocated() - before
    one_matrix = 8 * 8192 * 8192 * 2
    assert peak < one_matrix / 8, f"peak {peak / 2**20:.0f} MiB vs {one_matrix / 2**20:.0f} MiB for one score matrix"


def test_scale_default_is_inverse_sqrt_head_dim():
    q, k, v = make_qkv(1, 1, 1, 4, 4, 16, 16, torch.float64, "cpu")
    with bigkern.use_backend("torch"):
        assert torch.allclose(bigkern.ops.attention(q, k, v), bigkern.ops.attention(q, k, v, scale=1 / math.sqrt(16)))
