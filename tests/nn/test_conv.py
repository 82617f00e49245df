"""bigkern.nn.Conv2d against torch.nn.Conv2d: same constructor, outputs, gradients, state_dict, repr."""

import itertools

import pytest
import torch

import bigkern

CONFIGS = [  # in, out, kernel, stride, padding, dilation, groups, bias, padding_mode
    (4, 6, 3, 1, 1, 1, 1, True, "zeros"),
    (4, 6, (3, 2), (2, 1), (1, 0), 1, 2, False, "zeros"),
    (6, 6, 3, 1, "same", 2, 6, True, "zeros"),
    (3, 5, 4, 1, "same", 1, 1, True, "zeros"),
    (3, 5, 3, 2, "valid", 1, 1, True, "zeros"),
    (4, 4, 3, 1, 2, 1, 1, True, "reflect"),
    (4, 4, (3, 5), 1, (1, 2), 1, 2, True, "replicate"),
    (4, 4, 3, 2, 1, (2, 1), 1, False, "circular"),
    (5, 7, 1, 1, 0, 1, 1, True, "zeros"),  # pointwise
    (3, 8, 7, 2, 3, 1, 1, False, "zeros"),  # a ResNet stem
    (4, 6, 5, (1, 2), (2, 4), 2, 2, True, "reflect"),
    (6, 6, (1, 3), 1, (0, 1), 1, 3, False, "circular"),
]


def twins(config, seed=0):
    c_in, c_out, kernel, stride, padding, dilation, groups, bias, mode = config
    torch.manual_seed(seed)
    theirs = torch.nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias, mode)
    ours = bigkern.nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias, mode)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("config, layout", list(itertools.product(CONFIGS, ["contiguous", "channels_last", "strided", "unbatched"])))
def test_matches_torch_forward_and_backward(config, layout):
    ours, theirs = twins(config)
    x = torch.randn(2, config[0], 11, 10)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a non-contiguous view
        x = torch.randn(2, config[0], 10, 11).transpose(2, 3)
    elif layout == "unbatched":
        x = x[0]
    xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yt = ours(xo), theirs(xt)
    torch.testing.assert_close(yo, yt, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(yt)
    yo.backward(grad)
    yt.backward(grad)
    torch.testing.assert_close(xo.grad, xt.grad, rtol=1e-5, atol=1e-5)
    for (name, po), pt in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(po.grad, pt.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


def test_state_dict_repr_and_isinstance():
    ours, theirs = twins(CONFIGS[6])
    assert isinstance(ours, torch.nn.Conv2d)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    back = torch.nn.Conv2d(4, 4, (3, 5), 1, (1, 2), 1, 2, True, "replicate")
    back.load_state_dict(ours.state_dict())
    x = torch.randn(1, 4, 7, 8)
    torch.testing.assert_close(back(x), ours(x), rtol=1e-5, atol=1e-5)


def test_compiles_fullgraph():
    model = torch.nn.Sequential(bigkern.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), bigkern.nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 9, 9)
    expected = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), expected)


def test_swap_runs_the_bigkern_op_and_unswap_restores():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), torch.nn.Conv2d(4, 2, 1))
    x = torch.randn(2, 3, 6, 7)
    expected = model(x)
    report = bigkern.swap(model)
    assert [e.name for e in report.swapped] == ["0", "1"] and all("bigkern.ops.conv2d" in e.reason for e in report.swapped)
    assert all(type(m) is bigkern.nn.Conv2d for m in model)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert bigkern.unswap(model) == 2 and all(type(m) is torch.nn.Conv2d for m in model)


@pytest.mark.parametrize("x_shape", [(2, 5, 8, 8), (2, 3, 8), (2, 3, 2, 2)])
def test_bad_input_raises_a_clear_error(x_shape):
    conv = bigkern.nn.Conv2d(3, 4, 3)
    with pytest.raises((ValueError, RuntimeError)):
        conv(torch.randn(*x_shape))
