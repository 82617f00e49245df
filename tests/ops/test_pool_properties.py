"""Random pooling configurations (hypothesis) on the CPU kernels against torch.nn.functional.

The grid in test_pool.py covers each argument on purpose; this draws whole configurations at
random (sizes, every window argument, layout, dtype) to catch interactions the grid misses.
"""

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bigkern
from tests._tolerance import assert_matches

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def window_configs(draw, dilation=True):
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    size = [draw(st.integers(max(1, e - 2 * p), e + 12)) for e, p in zip(effective, padding)]
    shape = (draw(st.integers(1, 3)), draw(st.sampled_from([1, 3, 8, 33, 64])), *size)
    layout = draw(st.sampled_from(["nchw", "channels_last"]))
    return shape, layout, dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode), dil


def make(shape, layout, dtype=torch.float32):
    x = torch.randn(shape, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def grads(fn, x, grad_out):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    (out[0] if isinstance(out, tuple) else out).backward(grad_out)
    return out, x.grad


@SETTINGS
@given(window_configs())
def test_max_pool2d_random_configs(config):
    shape, layout, kwargs, dilation = config
    x = make(shape, layout)
    with bigkern.use_backend("cpu"):
        ours = lambda t: bigkern.ops.max_pool2d(t, dilation=dilation, return_indices=True, **kwargs)  # noqa: E731
        theirs = lambda t: F.max_pool2d(t, dilation=dilation, return_indices=True, **kwargs)  # noqa: E731
        expected, _ = theirs(x)
        if bool(torch.isinf(expected).any()):  # a window wholly in the padding: see test_pool.py
            return
        grad_out = torch.randn_like(expected)
        (out, idx), g = grads(ours, x, grad_out)
        (ref, ref_idx), ref_g = grads(theirs, x, grad_out)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    torch.testing.assert_close(g, ref_g)


@SETTINGS
@given(window_configs(dilation=False), st.booleans(), st.sampled_from([None, 1, 7]))
def test_avg_pool2d_random_configs(config, count_include_pad, divisor_override):
    shape, layout, kwargs, _ = config
    x = make(shape, layout)
    kwargs = dict(kwargs, count_include_pad=count_include_pad, divisor_override=divisor_override)
    grad_out = torch.randn_like(F.avg_pool2d(x, **kwargs))
    with bigkern.use_backend("cpu"):
        out, g = grads(lambda t: bigkern.ops.avg_pool2d(t, **kwargs), x, grad_out)
    ref, ref_g = grads(lambda t: F.avg_pool2d(t, **kwargs), x, grad_out)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(g, ref_g)


@SETTINGS
@given(
    st.tuples(st.integers(1, 3), st.sampled_from([1, 5, 32, 40]), st.integers(1, 20), st.integers(1, 20)),
    st.tuples(st.integers(1, 25), st.integers(1, 25)),
    st.sampled_from(["nchw", "channels_last"]),
    st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_adaptive_pools_random_configs(shape, output_size, layout, dtype):
    x = make(shape, layout, dtype)
    grad_out = torch.randn((*shape[:2], *output_size), dtype=dtype)
    with bigkern.use_backend("cpu"):
        (out, idx), g = grads(lambda t: bigkern.ops.adaptive_max_pool2d(t, output_size, True), x, grad_out)
        avg, g_avg = grads(lambda t: bigkern.ops.adaptive_avg_pool2d(t, output_size), x, grad_out)
    (ref, ref_idx), ref_g = grads(lambda t: F.adaptive_max_pool2d(t, output_size, True), x, grad_out)
    ref_avg, ref_g_avg = grads(lambda t: F.adaptive_avg_pool2d(t, output_size), x, grad_out)
    _, ref64_g = grads(lambda t: F.adaptive_max_pool2d(t, output_size), x.double(), grad_out.double())
    ref64_avg, ref64_g_avg = grads(lambda t: F.adaptive_avg_pool2d(t, output_size), x.double(), grad_out.double())
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    assert_matches(g, ref_g, ref64_g, "adaptive max gradient")
    assert_matches(avg, ref_avg, ref64_avg, "adaptive average")
    assert_matches(g_avg, ref_g_avg, ref64_g_avg, "adaptive average gradient")
