"""Pooling ops against torch.nn.functional: every backend, every argument, both layouts.

Each backend runs the same grid: "cpu" (C++), "triton" (on the CPU under TRITON_INTERPRET=1
where there is no GPU) and "cuda" (only where a GPU exists). Inputs are fresh random numbers,
at odd sizes, in NCHW, channels_last and non-contiguous views.
"""

import pytest
import torch
import torch.nn.functional as F

import bigkern
from tests._tolerance import assert_matches

BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("triton", id="triton", marks=pytest.mark.triton),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
]
LOW_PRECISION = [torch.float16, torch.bfloat16]


def device_of(backend):
    """CUDA kernels need CUDA tensors; Triton runs on the GPU when there is one, else interpreted on the CPU."""
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def make_input(shape, dtype, layout, device, requires_grad=False):
    """Random input in the requested layout: "nchw", "channels_last" or a non-contiguous view."""
    if layout == "strided":  # every other channel of a wider tensor, with H and W transposed
        n, c, h, w = shape
        x = torch.randn(n, 2 * c, w, h, device=device, dtype=torch.float32).to(dtype).transpose(-1, -2)[:, ::2]
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    else:
        x = torch.randn(shape, device=device, dtype=torch.float32).to(dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def run_both(backend, bigkern_fn, torch_fn, x, *, has_indices=False):
    """Forward and backward through bigkern (on `backend`) and through torch, same grad_output."""
    ours_in = x.detach().clone().requires_grad_()
    theirs_in = x.detach().clone().requires_grad_()
    ref_in = x.detach().double().requires_grad_()
    with bigkern.use_backend(backend):
        ours = bigkern_fn(ours_in)
    theirs, ref = torch_fn(theirs_in), torch_fn(ref_in)
    out_ours, out_theirs, out_ref = (o[0] if has_indices else o for o in (ours, theirs, ref))
    assert_matches(out_ours, out_theirs, out_ref, "forward")
    assert out_ours.is_contiguous(memory_format=torch.channels_last) == out_theirs.is_contiguous(
        memory_format=torch.channels_last
    ), "output memory format differs from torch's"
    if has_indices:
        assert torch.equal(ours[1], theirs[1]), "indices differ from torch's"
    grad = torch.randn_like(out_theirs)
    out_ours.backward(grad)
    out_theirs.backward(grad)
    out_ref.backward(grad.double())
    assert_matches(ours_in.grad, theirs_in.grad, ref_in.grad, "input gradient")
    assert ours_in.grad.stride() == theirs_in.grad.stride() or ours_in.grad.is_contiguous(
        memory_format=torch.channels_last
    ) == theirs_in.grad.is_contiguous(memory_format=torch.channels_last)


MAX_CONFIGS = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0)),
    dict(kernel_size=3, stride=1, padding=1, dilation=2),
    dict(kernel_size=(3, 2), stride=2, padding=(1, 1), ceil_mode=True),
    dict(kernel_size=2),
    dict(kernel_size=4, stride=3, padding=2, dilation=(1, 2), ceil_mode=True),
]
AVG_CONFIGS = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), count_include_pad=False),
    dict(kernel_size=(3, 2), stride=2, padding=(1, 1), ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=4, stride=3, padding=2, divisor_override=5),
    dict(kernel_size=2),
]
ADAPTIVE_SIZES = [(3, 4), (7, 7), (1, 1), (20, 5), (None, 3), 13]
LAYOUTS = ["nchw", "channels_last", "strided"]


def shape_for(layout):
    return (2, 8, 13, 11) if layout == "channels_last" else (2, 5, 13, 11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config", MAX_CONFIGS, ids=str)
def test_max_pool2d(backend, layout, config):
    x = make_input(shape_for(layout), torch.float32, layout, device_of(backend))
    run_both(backend, lambda t: bigkern.ops.max_pool2d(t, return_indices=True, **config),
             lambda t: F.max_pool2d(t, return_indices=True, **config), x, has_indices=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config", AVG_CONFIGS, ids=str)
def test_avg_pool2d(backend, layout, config):
    x = make_input(shape_for(layout), torch.float32, layout, device_of(backend))
    run_both(backend, lambda t: bigkern.ops.avg_pool2d(t, **config), lambda t: F.avg_pool2d(t, **config), x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_avg_pool2d(backend, layout, size):
    x = make_input(shape_for(layout), torch.float32, layout, device_of(backend))
    run_both(backend, lambda t: bigkern.ops.adaptive_avg_pool2d(t, size), lambda t: F.adaptive_avg_pool2d(t, size), x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_max_pool2d(backend, layout, size):
    x = make_input(shape_for(layout), torch.float32, layout, device_of(backend))
    run_both(backend, lambda t: bigkern.ops.adaptive_max_pool2d(t, size, return_indices=True),
             lambda t: F.adaptive_max_pool2d(t, size, return_indices=True), x, has_indices=True)


ALL_OPS = {
    "max_pool2d": (lambda t: bigkern.ops.max_pool2d(t, 3, 2, 1), lambda t: F.max_pool2d(t, 3, 2, 1)),
    "avg_pool2d": (lambda t: bigkern.ops.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
                   lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False)),
    "adaptive_avg_pool2d": (lambda t: bigkern.ops.adaptive_avg_pool2d(t, (4, 3)),
                            lambda t: F.adaptive_avg_pool2d(t, (4, 3))),
    "adaptive_max_pool2d": (lambda t: bigkern.ops.adaptive_max_pool2d(t, (4, 3)),
                            lambda t: F.adaptive_max_pool2d(t, (4, 3))),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", list(ALL_OPS))
def test_low_precision(backend, dtype, layout, op):
    ours, theirs = ALL_OPS[op]
    x = make_input((2, 16, 15, 14), dtype, layout, device_of(backend))
    run_both(backend, ours, theirs, x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(ALL_OPS))
def test_unbatched_input(backend, op):
    ours, theirs = ALL_OPS[op]
    run_both(backend, ours, theirs, make_input((1, 3, 9, 10), torch.float32, "nchw", device_of(backend))[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(ALL_OPS))
def test_empty_batch(backend, op):
    ours, theirs = ALL_OPS[op]
    x = torch.randn(0, 3, 9, 10, device=device_of(backend), requires_grad=True)
    with bigkern.use_backend(backend):
        out = ours(x)
    assert out.shape == theirs(x).shape
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_max_pools_propagate_nan_and_match_indices(backend, layout):
    x = make_input((2, 8, 10, 9), torch.float32, layout, device_of(backend))
    x = x.detach()
    x[0, 1, 2, 3] = float("nan")
    x[1, 2, 4:6, 4] = float("nan")  # two NaNs in one window: the last one's index wins
    x[1, 3].fill_(float("-inf"))  # windows of -inf only report their first in-bounds position
    x[0, 4, :, :5] = 1.5  # ties keep the first maximum
    for ours, theirs in [
        (lambda t: bigkern.ops.max_pool2d(t, 3, 2, 1, return_indices=True),
         lambda t: F.max_pool2d(t, 3, 2, 1, return_indices=True)),
        (lambda t: bigkern.ops.adaptive_max_pool2d(t, (4, 3), return_indices=True),
         lambda t: F.adaptive_max_pool2d(t, (4, 3), return_indices=True)),
        (lambda t: bigkern.ops.adaptive_max_pool2d(t, (5, 3), return_indices=True),
         lambda t: F.adaptive_max_pool2d(t, (5, 3), return_indices=True)),
    ]:
        with bigkern.use_backend(backend):
            out, idx = ours(x)
        ref_out, ref_idx = theirs(x)
        assert torch.equal(torch.isnan(out), torch.isnan(ref_out))
        assert torch.equal(out.nan_to_num(), ref_out.nan_to_num())
        assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_max_pool_window_wholly_in_padding(backend, layout):
    """With dilation a window can miss the input (H=1, taps at -1 and 1): torch reports -inf at
    the position its first-tap rule gives, outside the plane. Such an output depends on no input,
    so its gradient goes nowhere. (torch's own CPU backward writes it out of bounds and corrupts
    the heap, so the gradient is checked against zeros, not against torch.)"""
    x = make_input((2, 40, 1, 5), torch.float32, layout, device_of(backend)).requires_grad_()
    with bigkern.use_backend(backend):
        out, idx = bigkern.ops.max_pool2d(x, 2, 1, 1, 2, return_indices=True)
    ref_out, ref_idx = F.max_pool2d(x.detach(), 2, 1, 1, 2, return_indices=True)
    assert torch.equal(out, ref_out) and torch.equal(idx, ref_idx)
    out.backward(torch.randn_like(out))
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_writes_no_indices(backend):
    """Without return_indices and without autograd, the op computes no index tensor."""
    x = make_input((2, 3, 9, 9), torch.float32, "nchw", device_of(backend))
    ns = torch.ops.bigkern_triton if backend == "triton" else torch.ops.bigkern
    out, idx = ns.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False, False)
    assert idx.numel() == 0 and idx.dtype == torch.int64
    torch.testing.assert_close(out, F.max_pool2d(x, 3, 2, 1), rtol=0, atol=0)
    out, idx = ns.adaptive_max_pool2d(x, [4, 4], False)
    assert idx.numel() == 0
    torch.testing.assert_close(out, F.adaptive_max_pool2d(x, 4), rtol=0, atol=0)


# -- gradcheck in float64 (CPU kernels) ------------------------------------------------------


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", list(ALL_OPS))
def test_gradcheck_float64_cpu(layout, op):
    ours, _ = ALL_OPS[op]
    x = make_input((1, 2, 7, 6), torch.float64, layout, "cpu", requires_grad=True)
    with bigkern.use_backend("cpu"):
        assert torch.autograd.gradcheck(ours, (x,), eps=1e-6, atol=1e-5)


# -- opcheck: schema, fake kernel, autograd registration, AOT dispatch -------------------------

OPCHECK_SAMPLES = {
    "max_pool2d": lambda x: (x, [3, 2], [2, 1], [1, 1], [1, 2], True, True),
    "avg_pool2d": lambda x: (x, [3, 2], [2, 1], [1, 1], True, False, None),
    "adaptive_avg_pool2d": lambda x: (x, [4, 3]),
    "adaptive_max_pool2d": lambda x: (x, [4, 3], True),
}


@pytest.mark.parametrize("namespace", [pytest.param("bigkern"), pytest.param("bigkern_triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", list(OPCHECK_SAMPLES))
def test_opcheck(namespace, layout, op):
    x = make_input((2, 3, 9, 8), torch.float32, layout, "cpu", requires_grad=True)
    torch.library.opcheck(getattr(getattr(torch.ops, namespace), op), OPCHECK_SAMPLES[op](x))


# -- bad input: clear errors naming the argument ---------------------------------------------

BAD_INPUTS = [
    (lambda: bigkern.ops.max_pool2d(torch.randn(9, 9), 3), ValueError, "must be 3-D or 4-D"),
    (lambda: bigkern.ops.max_pool2d(torch.randn(1, 2, 3, 4, 5), 2), ValueError, "must be 3-D or 4-D"),
    (lambda: bigkern.ops.max_pool2d(torch.randn(1, 2, 4, 4), 7), ValueError, "smaller than kernel_size"),
    (lambda: bigkern.ops.avg_pool2d(torch.randn(1, 2, 4, 4), 2, stride=0), ValueError, "stride must be positive"),
    (lambda: bigkern.ops.max_pool2d(torch.randn(1, 2, 8, 8), 2, stride=-1), ValueError, "stride must be positive"),
    (lambda: bigkern.ops.max_pool2d(torch.randn(1, 2, 8, 8), 3, padding=2), ValueError, "at most half"),
    (lambda: bigkern.ops.max_pool2d(torch.randn(1, 2, 9, 9), 3, padding=2, dilation=2), ValueError, "at most half"),
    (lambda: bigkern.ops.avg_pool2d(torch.randn(1, 2, 8, 8), 2, padding=-1), ValueError, "padding must be non-negative"),
    (lambda: bigkern.ops.max_pool2d(torch.randn(1, 2, 8, 8), 0), ValueError, "kernel_size must be positive"),
    (lambda: bigkern.ops.max_pool2d(torch.randn(1, 2, 8, 8), (2, 2, 2)), TypeError, "kernel_size must be an int"),
    (lambda: bigkern.ops.max_pool2d(torch.randint(0, 5, (1, 2, 8, 8)), 2), TypeError, "dtype torch.int64"),
    (lambda: bigkern.ops.avg_pool2d(torch.randn(1, 2, 8, 8), 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: bigkern.ops.adaptive_avg_pool2d(torch.randn(1, 2, 8, 8), (0, 3)), ValueError, "output_size must be positive"),
    (lambda: bigkern.ops.adaptive_max_pool2d(torch.randn(1, 0, 8, 8), 3), ValueError, "empty channel or spatial dim"),
    (lambda: bigkern.ops.adaptive_max_pool2d([[1.0]], 3), TypeError, "must be a torch.Tensor"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS)
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_cpp_ops_check_their_arguments_too():
    """The C++ ops are public (torch.ops.bigkern.*) and validate on their own."""
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(RuntimeError, match="must be positive"):
        torch.ops.bigkern.max_pool2d(x, [2, 2], [0, 1], [0, 0], [1, 1], False, False)
    with pytest.raises(RuntimeError, match="expected a 4-D"):
        torch.ops.bigkern.avg_pool2d(x[0], [2, 2], [2, 2], [0, 0], False, True, None)
    out, idx = torch.ops.bigkern.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False, True)
    with pytest.raises(RuntimeError, match="indices must be int64"):
        torch.ops.bigkern.max_pool2d_backward(out, x, idx.int(), [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="do not match the output shape"):
        torch.ops.bigkern.max_pool2d_backward(out, x, torch.empty(0, dtype=torch.int64), [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="grad_output dtype"):
        torch.ops.bigkern.max_pool2d_backward(out.double(), x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="grad_output of shape"):
        torch.ops.bigkern.adaptive_avg_pool2d_backward(torch.randn(1, 3, 2, 2), x)
