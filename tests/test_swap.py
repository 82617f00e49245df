"""bigkern.swap / unswap on models built from torch.nn."""

import torch

import bigkern


class UserMaxPool(torch.nn.MaxPool2d):
    """A user's subclass with its own forward: swap must leave it alone."""

    def forward(self, x):
        return super().forward(x) * 2


def make_model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.BatchNorm2d(6),
        torch.nn.MaxPool2d(2),
        torch.nn.Sequential(torch.nn.AvgPool2d(3, 1, 1), UserMaxPool(2)),
        torch.nn.AdaptiveMaxPool2d(3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 2),
    )


def test_swap_replaces_supported_modules_and_keeps_everything_else():
    torch.manual_seed(1)
    model = make_model().eval()
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pool = model[2]
    calls = []
    pool.register_forward_hook(lambda m, i, o: calls.append(o.shape))

    report = bigkern.swap(model)

    assert [e.name for e in report.swapped] == ["0", "2", "3.0", "4", "5"]
    assert [e.name for e in report.fused] == ["1"]  # the conv's batch norm, folded in eval mode
    assert type(model[2]) is bigkern.nn.MaxPool2d and model[2] is pool  # same object, hooks kept
    assert type(model[3][1]) is UserMaxPool
    kept = {e.name: e.reason for e in report.not_swapped}
    assert "subclass" in kept["3.1"]
    assert not model.training
    assert model.state_dict().keys() == state.keys()
    torch.testing.assert_close(model(x), expected)
    assert len(calls) == 1
    text = str(report)
    assert "5 swapped, 1 fused into a conv" in text and "bigkern cpu kernels" in text

    assert bigkern.unswap(model) == 6  # the five swapped modules and the batch norm
    assert type(model[2]) is torch.nn.MaxPool2d and type(model[5]) is torch.nn.AdaptiveAvgPool2d
    torch.testing.assert_close(model(x), expected)


def test_swap_include_and_exclude():
    model = make_model()
    report = bigkern.swap(model, include=["MaxPool2d", "5"], exclude=[torch.nn.AdaptiveAvgPool2d])
    assert [e.name for e in report.swapped] == ["2"]
    assert {e.name: e.action for e in report.not_swapped}["5"] == "excluded"
    report = bigkern.swap(model, include=["3.*"])
    assert [e.name for e in report.swapped] == ["3.0"]


def test_swap_a_single_module_and_twice():
    pool = torch.nn.AvgPool2d(2)
    assert len(bigkern.swap(pool).swapped) == 1 and type(pool) is bigkern.nn.AvgPool2d
    again = bigkern.swap(pool)
    assert not again.swapped and again.not_swapped[0].reason == "already a bigkern module"


def test_swapped_model_trains():
    model = make_model()
    bigkern.swap(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 2, (4,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
