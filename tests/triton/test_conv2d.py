"""bigkern's Triton conv2d kernels (bigkern/triton/conv2d.py): the op contract against the float64
reference, forward and every backward output, and every autotune configuration.

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1 (tests/conftest.py), so the
shapes stay small. The launchers are called directly with the contract's arguments (four-sided
padding, activation codes); tests/ops/test_conv.py runs them through bigkern.ops.conv2d too.
Accuracy: tests/ops/test_rnn.py's rule (at most 2x torch's own error in the dtype, plus ulps).
"""

import os

import pytest
import torch
import torch.nn.functional as F

from bigkern.reference import conv as reference
from bigkern.triton import conv2d as kernels
from tests.ops.test_rnn import assert_close_to_reference

pytestmark = pytest.mark.triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
DTYPES = [torch.float32, torch.bfloat16, torch.float64] + ([] if INTERPRETED else [torch.float16])

# (N, C, H, W, K, R, S, stride, padding (top, left, bottom, right), dilation, groups)
CASES = [
    (2, 5, 7, 9, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (2, 6, 8, 7, 4, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2), 2),  # non-square kernel, asymmetric padding, groups
    (1, 4, 7, 6, 4, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 4),  # depthwise, dilated
    (2, 19, 5, 6, 35, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),  # 1x1, more channels than one block
    (1, 3, 11, 10, 5, 5, 5, (3, 2), (2, 2, 2, 2), (1, 1), 1),  # few input channels, stride 3
]


def _inputs(case, dtype, layout, activation, with_residual, seed):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(n, c, h, 2 * w, generator=gen)[..., ::2]
    weight = torch.randn(k, c // groups, r, s, generator=gen) * 0.5
    bias = torch.randn(k, generator=gen)
    out_shape = reference.conv(x.double(), weight.double(), stride, padding, dilation, groups).shape
    residual = torch.randn(out_shape, generator=gen) if with_residual else None
    grad = torch.randn(out_shape, generator=gen)
    to = lambda t: None if t is None else t.to(device=DEVICE, dtype=dtype)  # noqa: E731
    return to(x), to(weight), to(bias), to(residual), to(grad), (stride, padding, dilation, groups)


def _torch_in(dtype, x, weight, bias, residual, grad, args, activation):
    """torch's own forward and gradients in ``dtype`` (its error is the yardstick)."""
    stride, padding, dilation, groups = args
    leaves = [t.detach().cpu().to(dtype).requires_grad_() if t is not None else None for t in (x, weight, bias, residual)]
    xx, ww, bb, rr = leaves
    top, left, bottom, right = padding
    y = F.conv2d(F.pad(xx, (left, right, top, bottom)), ww, bb, stride, 0, dilation, groups)
    if rr is not None:
        y = y + rr
    y = reference.activate(y, activation)
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None], grad.detach().cpu().to(dtype))
    return y.detach(), grads


EPILOGUES = [(0, False), (1, True), (2, True), (3, False)]
# Every case with every epilogue in float32; the other dtypes on every case with one epilogue
# (dtype handling does not depend on the geometry, and the interpreter is slow).
PARAMS = [(i, a, r, torch.float32) for i in range(len(CASES)) for a, r in EPILOGUES] + [
    (i, *EPILOGUES[(i + 1) % 4], dtype) for dtype in DTYPES[1:] for i in range(len(CASES))
]


@pytest.mark.parametrize(
    "case_index, activation, with_residual, dtype", PARAMS,
    ids=[f"case{i}-act{a}{'-res' if r else ''}-{str(d).removeprefix('torch.')}" for i, a, r, d in PARAMS],
)  # fmt: skip
def test_forward_and_backward_match_reference(case_index, activation, with_residual, dtype):
    layout = ["contiguous", "channels_last", "sliced"][case_index % 3]
    x, weight, bias, residual, grad, args = _inputs(CASES[case_index], dtype, layout, activation, with_residual, case_index)
    out, pre = kernels.conv2d(x, weight, bias, residual, *args, activation, True)
    act_in = out if activation == 1 else pre if activation in (2, 3) else x.new_empty(0)
    got = kernels.conv2d_backward(grad, x, weight, act_in, *args, activation, [True, True, True, True])

    ref_out, ref_grads = _torch_in(torch.float64, x, weight, bias, residual, grad, args, activation)
    their_out, their_grads = _torch_in(dtype, x, weight, bias, residual, grad, args, activation)
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert_close_to_reference(out.cpu(), their_out, ref_out, "output")
    if activation in (2, 3):
        ref_pre, _ = _torch_in(torch.float64, x, weight, bias, residual, grad, args, 0)
        their_pre, _ = _torch_in(dtype, x, weight, bias, residual, grad, args, 0)
        assert_close_to_reference(pre.cpu(), their_pre, ref_pre, "pre-activation")
    names = ["input", "weight", "bias"] + (["residual"] if residual is not None else [])
    ours = list(got[:3]) + ([got[3] if activation != 0 else grad] if residual is not None else [])
    for name, a, b, c in zip(names, ours, their_grads, ref_grads):
        assert_close_to_reference(a.cpu(), b, c, f"grad {name}")


@pytest.mark.parametrize("mask", [[True, False, False, False], [False, True, False, False], [False, False, True, True]])
def test_only_the_requested_gradients_are_computed(mask):
    x, weight, bias, _, grad, args = _inputs(CASES[1], torch.float64, "contiguous", 3, False, 1)
    _, pre = kernels.conv2d(x, weight, bias, None, *args, 3, True)
    got = kernels.conv2d_backward(grad, x, weight, pre, *args, 3, mask)
    expected = reference.conv2d_backward(grad, x, weight, pre, *args, 3, mask)
    for wanted, a, b in zip(mask, got, expected):
        assert (a.numel() > 0) == wanted
        if wanted:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "kind, config",
    [(kind, config) for kind, configs in (("forward", kernels.FORWARD_CONFIGS), ("dgrad", kernels.DGRAD_CONFIGS),
                                          ("wgrad", kernels.WGRAD_CONFIGS)) for config in configs],
    ids=lambda v: v if isinstance(v, str) else "x".join(str(b) for b in v.kwargs.values()) + f"-w{v.num_warps}",
)  # fmt: skip
def test_every_autotune_config(kind, config, monkeypatch):
    """Each config the autotuner may pick, on a 3x3 kernel (the case the issue warns about)."""
    monkeypatch.setattr(kernels, "INTERPRETER_CONFIG", dict(config.kwargs))
    x, weight, bias, residual, grad, args = _inputs((2, 20, 6, 7, 18, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
                                                    torch.float32, "channels_last", 1, True, 3)  # fmt: skip
    out, _ = kernels.conv2d(x, weight, bias, residual, *args, 1, False)
    mask = [kind == "dgrad", kind == "wgrad", False, False]
    got = kernels.conv2d_backward(grad, x, weight, out, *args, 1, mask)
    ref_out, _ = reference.conv2d(x.double(), weight.double(), bias.double(), residual.double(), *args, 1, False)
    expected = reference.conv2d_backward(grad.double(), x.double(), weight.double(), ref_out, *args, 1, mask)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-4)
    for wanted, a, b in zip(mask, got, expected):
        if wanted:
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-4)


def test_wgrad_split_sums_partials():
    """More pixels than one wgrad split: the partial sums of every split are added."""
    x, weight, _, _, grad, args = _inputs((3, 4, 9, 9, 5, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1), torch.float64,
                                          "contiguous", 0, False, 4)  # fmt: skip
    assert kernels._split_count(3 * 81, 1) > 1
    got = kernels.conv2d_backward(grad, x, weight, x.new_empty(0), *args, 0, [False, True, False, False])[1]
    expected = reference.conv2d_backward(grad, x, weight, x.new_empty(0), *args, 0, [False, True, False, False])[1]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_bad_dtype_is_a_clear_error():
    x = torch.randn(1, 2, 4, 4, device=DEVICE).int()
    with pytest.raises(TypeError, match="take float32, float16, bfloat16 or float64"):
        kernels.conv2d(x, x, None, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, 0, False)
