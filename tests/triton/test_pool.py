"""Parity of bigkern's Triton pooling kernels with torch.nn.functional, forward and backward.

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1 (set by tests/conftest.py), so
shapes stay small. float32/float64 results must match torch's closely; for float16/bfloat16 our error
against a float64 reference may be at most twice torch's own error in that dtype (plus a tiny
epsilon), since we accumulate in float32 where torch's CPU kernels sometimes round more often.
"""

import itertools
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from bigkern.triton import pool



pytestmark = pytest.mark.triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
LOW_PRECISION_EPS = 1e-6
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# contiguous: NCHW; channels_last: NHWC; strided: W-major storage with every other channel (neither
# layout, so computed as NCHW); channels_last_view: every other channel of an NHWC tensor (a
# non-dense layout torch still suggests channels_last for).
LAYOUTS = ["contiguous", "channels_last", "strided", "channels_last_view"]
# Strides reach the kernels the same way whatever the dtype, so half types skip the view layouts to
# keep the interpreted run short.
DTYPES_AND_LAYOUTS = [
    pytest.param(dtype, layout, id=f"{str(dtype).removeprefix('torch.')}-{layout}")
    for dtype in DTYPES
    for layout in (LAYOUTS if dtype == torch.float32 else LAYOUTS[:2])
]


def _make_input(shape, dtype, layout):
    N, C, H, W = shape
    if layout == "contiguous":
        return torch.randn(N, C, H, W, dtype=dtype, device=DEVICE)
    if layout == "channels_last":
        return torch.randn(N, C, H, W, dtype=dtype, device=DEVICE).to(memory_format=torch.channels_last)
    if layout == "strided":
        return torch.randn(N, 2 * C, W, H, dtype=dtype, device=DEVICE).transpose(2, 3)[:, ::2]
    assert layout == "channels_last_view"
    return torch.randn(N, H, W, 2 * C, dtype=dtype, device=DEVICE).permute(0, 3, 1, 2)[:, ::2]


def _make_grad_output(shape, dtype):
    # Deliberately neither NCHW nor NHWC: the backward kernels must read any strides.
    return _make_input(shape, dtype, "strided")


def _assert_layout(result, x):
    fmt = suggest_memory_format(x)
    expected = torch.empty(result.shape, device="meta", memory_format=fmt).stride()
    assert result.stride() == expected, f"strides {result.stride()} are not {fmt} ({expected})"


def _torch_grad(fn, x, grad_output):
    leaf = x.detach().requires_grad_()
    fn(leaf).backward(grad_output)
    return leaf.grad


def _bfloat16_ulp(reference):
    """Spacing of bfloat16 numbers (8 significant bits) at each value of a float64 tensor."""
    _, exponent = torch.frexp(reference)
    return torch.ldexp(torch.ones_like(reference), exponent - 8)


def _assert_matches(ours, theirs, reference):
    """`theirs` is torch's op in our dtype, `reference` the same op in float64."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    if ours.dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(ours, theirs, equal_nan=True)
        return
    ours_error = (ours.double() - reference).abs()
    if ours.dtype == torch.bfloat16 and INTERPRETED:
        # Triton's interpreter converts float32 to bfloat16 by truncation, not to nearest as compiled
        # kernels do, so each interpreted result may be one more bfloat16 ulp off.
        ours_error = ours_error - _bfloat16_ulp(reference)
    ours_error = ours_error.max().item()
    torch_error = (theirs.double() - reference).abs().max().item()
    assert ours_error <= 2 * torch_error + LOW_PRECISION_EPS, f"error {ours_error} vs torch's {torch_error}"


def _check_forward(x, ours_forward, torch_op):
    out = ours_forward(x)
    _assert_layout(out, x)
    _assert_matches(out, torch_op(x), torch_op(x.double()))
    return out


def _check_backward(x, output_shape, ours_backward, torch_op):
    """Checks our input gradient for a random grad_output against torch autograd's through torch_op."""
    grad_output = _make_grad_output(output_shape, x.dtype)
    grad_input = ours_backward(grad_output, x)
    _assert_layout(grad_input, x)
    _assert_matches(
        grad_input,
        _torch_grad(torch_op, x, grad_output),
        _torch_grad(torch_op, x.double(), grad_output.double()),
    )


def _check_forward_backward(x, ours_forward, ours_backward, torch_op):
    out = _check_forward(x, ours_forward, torch_op)
    _check_backward(x, out.shape, ours_backward, torch_op)


def _check_max_forward_backward(x, ours_forward, ours_backward, torch_op):
    """For the max pools, whose forward returns (out, indices): values and indices must equal torch's
    exactly (NaNs included), and the backward is routed through our indices.

    ours_forward(x) -> (out, indices); ours_backward(grad_output, x, indices); torch_op(x, **kwargs)
    is the torch function with the op's arguments bound, so it also takes return_indices=True.
    Returns (out, indices).
    """
    out, indices = ours_forward(x)
    torch_out, torch_indices = torch_op(x, return_indices=True)
    torch.testing.assert_close(out, torch_out, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(indices, torch_indices)
    _assert_layout(out, x)
    _assert_layout(indices, x)
    _check_backward(x, out.shape, lambda grad_output, x: ours_backward(grad_output, x, indices), torch_op)
    return out, indices


# --------------------------------------------------------------------------------------------------
# Output size
# --------------------------------------------------------------------------------------------------


def _torch_output_height(op, in_, k, pad, stride, *extra):
    x = torch.randn(1, 1, in_, 1)
    try:
        return op(x, (k, 1), (stride, 1), (pad, 0), *extra).shape[2]
    except RuntimeError:  # torch refuses windows that leave no output
        return 0


def test_pooled_size_matches_torch():
    sizes = itertools.product(range(1, 11), range(1, 5), range(1, 4), (1, 2), (False, True))
    for in_, k, stride, dil, ceil_mode in sizes:
        for pad in range(k // 2 + 1):
            ours = max(pool.pooled_size(in_, k, pad, stride, dil, ceil_mode), 0)
            case = (in_, k, pad, stride, dil, ceil_mode)
            assert ours == _torch_output_height(F.max_pool2d, in_, k, pad, stride, (dil, 1), ceil_mode), case
            if dil == 1:
                assert ours == _torch_output_height(F.avg_pool2d, in_, k, pad, stride, ceil_mode), case


# --------------------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------------------

# (H, W, kernel_size, stride, padding, dilation, ceil_mode)
MAX_CONFIGS = [
    (7, 7, [3, 3], [2, 2], [1, 1], [1, 1], False),
    (9, 7, [3, 2], [2, 1], [1, 1], [1, 2], True),
    (13, 9, [2, 3], [3, 2], [1, 1], [2, 1], True),
    (7, 9, [4, 2], [1, 3], [2, 0], [1, 1], False),
    (9, 9, [3, 3], [2, 2], [1, 1], [3, 1], True),
    (8, 6, [2, 2], [2, 2], [0, 0], [1, 1], False),
]


@pytest.mark.parametrize("config", MAX_CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("dtype, layout", DTYPES_AND_LAYOUTS)
def test_max_pool2d(config, layout, dtype):
    H, W, *args = config
    _check_max_forward_backward(
        _make_input((2, 3, H, W), dtype, layout),
        lambda x: pool.max_pool2d(x, *args, True),
        lambda grad_output, x, indices: pool.max_pool2d_backward(grad_output, x, indices, *args),
        lambda x, **kwargs: F.max_pool2d(x, *args, **kwargs),
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_nan_and_neg_inf(layout):
    x = _make_input((2, 4, 11, 11), torch.float32, layout)
    # A block of -inf holding whole windows (with and without padding taps), and NaNs anywhere,
    # several per window often enough to check that the last NaN's index is reported.
    x[:, :, :5, :5] = -math.inf
    x.masked_fill_(torch.rand(x.shape, device=DEVICE) < 0.15, math.nan)
    for window in [([3, 3], [2, 2], [1, 1], [1, 1]), ([3, 2], [1, 2], [1, 1], [2, 1])]:
        out, _ = _check_max_forward_backward(
            x,
            lambda x: pool.max_pool2d(x, *window, False, True),
            lambda grad_output, x, indices: pool.max_pool2d_backward(grad_output, x, indices, *window, False),
            lambda x, **kwargs: F.max_pool2d(x, *window, **kwargs),
        )
        assert out.isnan().any() and (out == -math.inf).any()


def test_max_pool2d_ties_keep_first_maximum():
    # Few distinct values, so most windows hold their maximum more than once.
    x = torch.randint(-2, 3, (2, 3, 9, 9), device=DEVICE).float() + torch.randn(()).item()
    out, indices = pool.max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], False, True)
    torch_out, torch_indices = F.max_pool2d(x, 3, 1, 1, return_indices=True)
    torch.testing.assert_close(out, torch_out, rtol=0, atol=0)
    assert torch.equal(indices, torch_indices)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_without_indices(layout):
    x = _make_input((2, 3, 9, 7), torch.float32, layout)
    out, indices = pool.max_pool2d(x, [3, 2], [2, 2], [1, 1], [1, 1], True, False)
    torch.testing.assert_close(out, F.max_pool2d(x, [3, 2], [2, 2], [1, 1], ceil_mode=True), rtol=0, atol=0)
    _assert_layout(out, x)
    assert indices.dtype == torch.int64 and indices.shape == (0,) and indices.device == x.device


# --------------------------------------------------------------------------------------------------
# Average pooling
# --------------------------------------------------------------------------------------------------

# (H, W, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CONFIGS = [
    (7, 7, [3, 3], [2, 2], [1, 1], False, True, None),
    (9, 7, [3, 2], [2, 1], [1, 1], True, False, None),
    (13, 9, [2, 3], [3, 2], [1, 1], True, True, None),
    (7, 9, [4, 2], [1, 3], [2, 0], False, False, None),
    (9, 9, [5, 3], [2, 2], [2, 1], True, True, 3),
    (8, 6, [2, 3], [3, 1], [1, 1], True, False, -5),
]


@pytest.mark.parametrize("config", AVG_CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("dtype, layout", DTYPES_AND_LAYOUTS)
def test_avg_pool2d(config, layout, dtype):
    H, W, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override = config
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    _check_forward_backward(
        _make_input((2, 3, H, W), dtype, layout),
        lambda x: pool.avg_pool2d(x, *args),
        lambda grad_output, x: pool.avg_pool2d_backward(grad_output, x, *args),
        lambda x: F.avg_pool2d(x, *args),
    )


# --------------------------------------------------------------------------------------------------
# Adaptive pooling
# --------------------------------------------------------------------------------------------------

# (H, W, output_size): uneven windows, even ones, output larger than input, global, identity.
ADAPTIVE_CONFIGS = [
    (7, 7, [3, 3]),
    (8, 8, [4, 2]),
    (9, 7, [4, 5]),
    (5, 6, [7, 9]),
    (11, 7, [1, 1]),
    (6, 9, [6, 9]),
]


@pytest.mark.parametrize("config", ADAPTIVE_CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("dtype, layout", DTYPES_AND_LAYOUTS)
def test_adaptive_avg_pool2d(config, layout, dtype):
    H, W, output_size = config
    _check_forward_backward(
        _make_input((2, 3, H, W), dtype, layout),
        lambda x: pool.adaptive_avg_pool2d(x, output_size),
        pool.adaptive_avg_pool2d_backward,
        lambda x: F.adaptive_avg_pool2d(x, output_size),
    )


@pytest.mark.parametrize("config", ADAPTIVE_CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("dtype, layout", DTYPES_AND_LAYOUTS)
def test_adaptive_max_pool2d(config, layout, dtype):
    H, W, output_size = config
    _check_max_forward_backward(
        _make_input((2, 3, H, W), dtype, layout),
        lambda x: pool.adaptive_max_pool2d(x, output_size, True),
        pool.adaptive_max_pool2d_backward,
        lambda x, **kwargs: F.adaptive_max_pool2d(x, output_size, **kwargs),
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_adaptive_max_pool2d_nan_and_neg_inf(layout):
    x = _make_input((2, 4, 11, 10), torch.float32, layout)
    x[:, :, :6, :6] = -math.inf
    x.masked_fill_(torch.rand(x.shape, device=DEVICE) < 0.15, math.nan)
    for output_size in ([4, 3], [5, 5]):
        out, _ = _check_max_forward_backward(
            x,
            lambda x: pool.adaptive_max_pool2d(x, output_size, True),
            pool.adaptive_max_pool2d_backward,
            lambda x, **kwargs: F.adaptive_max_pool2d(x, output_size, **kwargs),
        )
        assert out.isnan().any() and (out == -math.inf).any()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_adaptive_max_pool2d_without_indices(layout):
    x = _make_input((2, 3, 9, 7), torch.float32, layout)
    out, indices = pool.adaptive_max_pool2d(x, [4, 3], False)
    torch.testing.assert_close(out, F.adaptive_max_pool2d(x, [4, 3]), rtol=0, atol=0)
    _assert_layout(out, x)
    assert indices.dtype == torch.int64 and indices.shape == (0,) and indices.device == x.device


# --------------------------------------------------------------------------------------------------
# Every op: broadcast gradients, float64 and empty batches
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_with_broadcast_grad_output(layout):
    # out.sum().backward() hands the backward an expanded tensor: every stride is 0.
    x = _make_input((2, 3, 9, 7), torch.float32, layout)

    def grad_of(out):
        return torch.randn((), device=DEVICE).expand(out.shape)


    out, indices = pool.max_pool2d(x, [3, 3], [2, 1], [1, 1], [1, 1], True, True)
    grad_output = grad_of(out)
    torch.testing.assert_close(
        pool.max_pool2d_backward(grad_output, x, indices, [3, 3], [2, 1], [1, 1], [1, 1], True),
        _torch_grad(lambda t: F.max_pool2d(t, [3, 3], [2, 1], [1, 1], ceil_mode=True), x, grad_output),
    )
    avg_args = ([3, 2], [2, 1], [1, 1], True, False, None)
    grad_output = grad_of(pool.avg_pool2d(x, *avg_args))
    torch.testing.assert_close(
        pool.avg_pool2d_backward(grad_output, x, *avg_args),
        _torch_grad(lambda t: F.avg_pool2d(t, *avg_args), x, grad_output),
    )
    grad_output = grad_of(pool.adaptive_avg_pool2d(x, [4, 5]))
    torch.testing.assert_close(
        pool.adaptive_avg_pool2d_backward(grad_output, x),
        _torch_grad(lambda t: F.adaptive_avg_pool2d(t, [4, 5]), x, grad_output),
    )
    out, indices = pool.adaptive_max_pool2d(x, [4, 5], True)
    grad_output = grad_of(out)
    torch.testing.assert_close(
        pool.adaptive_max_pool2d_backward(grad_output, x, indices),
        _torch_grad(lambda t: F.adaptive_max_pool2d(t, [4, 5]), x, grad_output),
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_float64(layout):
    x = _make_input((2, 3, 9, 7), torch.float64, layout)
    max_args = ([3, 2], [2, 1], [1, 1], [2, 1], True)
    _check_max_forward_backward(
        x,
        lambda x: pool.max_pool2d(x, *max_args, True),
        lambda g, x, indices: pool.max_pool2d_backward(g, x, indices, *max_args),
        lambda x, **kwargs: F.max_pool2d(x, *max_args, **kwargs),
    )
    avg_args = ([3, 2], [2, 1], [1, 1], True, False, None)
    _check_forward_backward(
        x,
        lambda x: pool.avg_pool2d(x, *avg_args),
        lambda g, x: pool.avg_pool2d_backward(g, x, *avg_args),
        lambda x: F.avg_pool2d(x, *avg_args),
    )
    _check_forward_backward(
        x,
        lambda x: pool.adaptive_avg_pool2d(x, [4, 5]),
        pool.adaptive_avg_pool2d_backward,
        lambda x: F.adaptive_avg_pool2d(x, [4, 5]),
    )
    _check_max_forward_backward(
        x,
        lambda x: pool.adaptive_max_pool2d(x, [4, 5], True),
        pool.adaptive_max_pool2d_backward,
        lambda x, **kwargs: F.adaptive_max_pool2d(x, [4, 5], **kwargs),
    )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_empty_batch(layout):
    x = _make_input((0, 3, 9, 7), torch.float32, layout)
    index_shape = (0, 3, 5, 4)  # the shape of every output below
    grad_output = torch.randn(index_shape, device=DEVICE)

    out, indices = pool.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False, True)
    assert out.shape == indices.shape == index_shape
    out, indices = pool.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False, False)
    assert out.shape == index_shape and indices.shape == (0,)
    grad_input = pool.max_pool2d_backward(
        grad_output, x, torch.empty(index_shape, dtype=torch.int64, device=DEVICE),
        [3, 3], [2, 2], [1, 1], [1, 1], False,
    )
    assert grad_input.shape == x.shape

    assert pool.avg_pool2d(x, [3, 3], [2, 2], [1, 1], False, True, None).shape == index_shape
    assert pool.avg_pool2d_backward(grad_output, x, [3, 3], [2, 2], [1, 1], False, True, None).shape == x.shape

    assert pool.adaptive_avg_pool2d(x, [5, 4]).shape == index_shape
    assert pool.adaptive_avg_pool2d_backward(grad_output, x).shape == x.shape

    out, indices = pool.adaptive_max_pool2d(x, [5, 4], True)
    assert out.shape == indices.shape == index_shape
    out, indices = pool.adaptive_max_pool2d(x, [5, 4], False)
    assert out.shape == index_shape and indices.shape == (0,)
    grad_input = pool.adaptive_max_pool2d_backward(
        grad_output, x, torch.empty(index_shape, dtype=torch.int64, device=DEVICE)
    )
    assert grad_input.shape == x.shape
