"""Drop-in pooling modules: same constructor, attributes, repr and outputs as torch.nn's."""

import pytest
import torch

import bigkern

CASES = [
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)),
    ("MaxPool2d", dict(kernel_size=(2, 3), return_indices=True)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, divisor_override=None)),
    ("AvgPool2d", dict(kernel_size=(2, 3), stride=(2, 1), ceil_mode=True, divisor_override=4)),
    ("AdaptiveAvgPool2d", dict(output_size=(5, None))),
    ("AdaptiveMaxPool2d", dict(output_size=3, return_indices=True)),
]


@pytest.mark.parametrize("name,kwargs", CASES, ids=lambda v: str(v))
def test_module_matches_torch(name, kwargs):
    ours, theirs = getattr(bigkern.nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    assert isinstance(ours, getattr(torch.nn, name))
    assert repr(ours) == repr(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 4, 11, 10).contiguous(memory_format=layout)
        got, want = ours(x), theirs(x)
        if isinstance(want, tuple):
            assert torch.equal(got[1], want[1])
            got, want = got[0], want[0]
        torch.testing.assert_close(got, want)


def test_modules_compile_fullgraph():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        bigkern.nn.MaxPool2d(2),
        torch.nn.ReLU(),
        bigkern.nn.AvgPool2d(3, stride=1, padding=1),
        bigkern.nn.AdaptiveMaxPool2d((3, 3)),
        bigkern.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )
    x = torch.randn(3, 3, 17, 15, requires_grad=True)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(compiled, eager)
    (g_eager,) = torch.autograd.grad(eager.sum(), x)
    (g_compiled,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(g_compiled, g_eager)


def test_modules_compile_with_inductor():
    model = torch.nn.Sequential(bigkern.nn.MaxPool2d(3, 2, 1), bigkern.nn.AdaptiveAvgPool2d(2))
    x = torch.randn(2, 4, 13, 13)
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x))
