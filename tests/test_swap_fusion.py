"""bigkern.swap fusing Conv2d -> BatchNorm2d -> activation chains into one kernel (bigkern/fusion.py).

Every model is compared with an unswapped deep copy: outputs (eval and training mode, including
batch-norm running statistics after a step), gradients, state_dict keys and values, the report,
and unswap. Batch norms get random running statistics and affine parameters, so folding is
really exercised.
"""

import copy
import pickle

import pytest
import torch

import bigkern
from tests._tolerance import assert_matches
from bigkern.fusion import FusedAwayBatchNorm2d, FusedAwayReLU
from bigkern.nn.conv import FusedConv2d


def randomize_batch_norms(model):
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats:
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model


class BasicBlock(torch.nn.Module):
    """A ResNet block written with submodules (fx traces it): conv1 -> bn1 -> relu, conv2 -> bn2, + x, relu."""

    def __init__(self, channels=8):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.relu1 = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(channels)
        self.relu2 = torch.nn.ReLU()

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(y)) + x)


class Untraceable(torch.nn.Module):
    """Data-dependent control flow: fx cannot trace it; the Sequential inside still fuses."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.SiLU())

    def forward(self, x):
        if x.sum() > 0:
            return self.body(x)
        return self.body(-x)


class ShapeChecked(torch.nn.Module):
    """Untraceable as a whole (a check on the input's shape, as Hugging Face models do), with
    traceable submodules: their own fx graphs are fused; a Sequential subclass keeping
    nn.Sequential's forward that does not trace either is fused in its children's order."""

    def __init__(self):
        super().__init__()
        self.block = BasicBlock(3)
        self.head = ConvNormAct(torch.nn.Conv2d(3, 5, 1), torch.nn.BatchNorm2d(5), torch.nn.GELU(), DataDependent())

    def forward(self, x):
        if x.shape[1] != 3:
            raise ValueError("expected 3 channels")
        return self.head(self.block(x))


class ConvNormAct(torch.nn.Sequential):
    pass


class DataDependent(torch.nn.Module):
    def forward(self, x):
        return x if x.mean() > 0 else x * 2


def seq(*layers, padding_mode="zeros"):
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1, padding_mode=padding_mode), *layers, torch.nn.Conv2d(6, 2, 1))


CASES = {
    "conv-bn-relu": (lambda: seq(torch.nn.BatchNorm2d(6), torch.nn.ReLU()), {"0": ["1", "2"]}),
    "conv-bn": (lambda: seq(torch.nn.BatchNorm2d(6), torch.nn.MaxPool2d(2)), {"0": ["1"]}),
    "conv-relu": (lambda: seq(torch.nn.ReLU()), {"0": ["1"]}),
    "conv-gelu": (lambda: seq(torch.nn.GELU()), {"0": ["1"]}),
    "conv-silu": (lambda: seq(torch.nn.SiLU()), {"0": ["1"]}),
    "gelu-tanh-not-fused": (lambda: seq(torch.nn.GELU(approximate="tanh")), {}),
    "bn-without-affine": (lambda: seq(torch.nn.BatchNorm2d(6, affine=False), torch.nn.ReLU()), {"0": ["1", "2"]}),
    "basic-block": (lambda: torch.nn.Sequential(BasicBlock()), {"0.conv1": ["0.bn1", "0.relu1"], "0.conv2": ["0.bn2"]}),
    "untraceable": (Untraceable, {"body.0": ["body.1", "body.2"]}),
    "reflect-padding": (lambda: seq(torch.nn.BatchNorm2d(6), torch.nn.ReLU(), padding_mode="reflect"), {"0": ["1", "2"]}),
    "bn-without-running-stats": (lambda: seq(torch.nn.BatchNorm2d(6, track_running_stats=False), torch.nn.SiLU()), {"0": ["1", "2"]}),
    "submodule-graphs": (
        ShapeChecked,
        {"block.conv1": ["block.bn1", "block.relu1"], "block.conv2": ["block.bn2"], "head.0": ["head.1", "head.2"]},
    ),
}


def make(name):
    factory, _ = CASES[name]
    torch.manual_seed(1)
    model = randomize_batch_norms(factory())
    return model, copy.deepcopy(model)


def input_for(model):
    channels = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    return torch.randn(2, channels, 9, 8)


@pytest.mark.parametrize("name", list(CASES))
def test_fusion_keeps_outputs_state_and_reports(name):
    model, reference = make(name)
    model.eval(), reference.eval()
    x = input_for(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    report = bigkern.swap(model)

    expected = CASES[name][1]
    fused = {e.name for e in report.fused}
    assert fused == {part for parts in expected.values() for part in parts}
    for conv, parts in expected.items():
        entry = next(e for e in report.entries if e.name == conv)
        assert all(part in entry.reason for part in parts) and "one kernel" in entry.reason
        assert type(model.get_submodule(conv)) is FusedConv2d
    assert "fused into a conv" in str(report)
    assert model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    pickle.loads(pickle.dumps(model))  # the fused classes are importable

    bigkern.unswap(model)
    assert all(type(a) is type(b) for a, b in zip(model.modules(), reference.modules()))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["conv-bn-relu", "basic-block", "reflect-padding", "bn-without-running-stats", "submodule-graphs"])
def test_training_mode_matches_with_running_stats_and_gradients(name):
    model, reference = make(name)
    bigkern.swap(model)
    model.train(), reference.train()
    x = input_for(model)
    out, expected = model(x), reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for (key, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")  # running stats
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    for (key, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{key}: {m}")
    model.eval(), reference.eval()  # switching mode after the swap: folding takes over
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_eval_mode_gradients_flow_through_the_folded_batch_norm():
    model, reference = make("conv-bn-relu")
    bigkern.swap(model)
    model.eval(), reference.eval()
    x = input_for(model)
    model(x).sum().backward()
    reference(x).sum().backward()
    for (key, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{key}: {m}")


def test_hooked_or_excluded_modules_are_not_fused():
    model, _ = make("conv-bn-relu")
    model[1].register_forward_hook(lambda m, i, o: None)
    report = bigkern.swap(model)
    assert not report.fused and type(model[1]) is torch.nn.BatchNorm2d
    model, _ = make("conv-bn-relu")
    report = bigkern.swap(model, exclude=["2"])
    assert {e.name for e in report.fused} == {"1"} and type(model[2]) is torch.nn.ReLU


def test_swap_twice_is_harmless():
    model, reference = make("conv-bn-relu")
    model.eval(), reference.eval()
    bigkern.swap(model)
    again = bigkern.swap(model)
    assert not again.swapped and not again.fused
    assert all(e.reason in ("already fused by bigkern.swap", "already a bigkern module") for e in again.entries)
    assert type(model[1]) is FusedAwayBatchNorm2d and type(model[2]) is FusedAwayReLU
    x = input_for(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_swapped_in_eval_mode_then_trained_then_evaluated():
    model, reference = make("basic-block")
    model.eval(), reference.eval()
    bigkern.swap(model)
    x = input_for(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    model.train(), reference.train()
    for _ in range(2):  # batch statistics, and running statistics updated as torch does
        x = input_for(model)
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    for (key, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    model.eval(), reference.eval()  # the folding now uses the updated running statistics
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_channels_last_input_and_model():
    model, reference = make("conv-bn-relu")
    model.eval(), reference.eval()
    model.to(memory_format=torch.channels_last), reference.to(memory_format=torch.channels_last)
    bigkern.swap(model)
    x = input_for(model).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_bfloat16_within_twice_torchs_error():
    model, reference = make("basic-block")
    model.eval(), reference.eval()
    exact = copy.deepcopy(reference).double()
    model.to(torch.bfloat16), reference.to(torch.bfloat16)
    bigkern.swap(model)
    x = input_for(model)
    with torch.no_grad():
        assert_matches(model(x.bfloat16()), reference(x.bfloat16()), exact(x.double()))


def test_compiles_fullgraph():
    model, reference = make("basic-block")
    model.eval(), reference.eval()
    bigkern.swap(model)
    x = input_for(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), reference(x), rtol=1e-5, atol=1e-5)


def test_a_hooked_conv_is_not_fused_and_its_hook_sees_the_conv_output():
    model, reference = make("conv-bn-relu")
    model.eval(), reference.eval()
    seen, expected = [], []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    reference[0].register_forward_hook(lambda m, i, o: expected.append(o.detach().clone()))
    report = bigkern.swap(model)
    assert not report.fused and type(model[0]) is bigkern.nn.Conv2d and type(model[1]) is torch.nn.BatchNorm2d
    assert "not fused with 1: the conv has forward or backward hooks" in report.entries[[e.name for e in report.entries].index("0")].reason
    x = input_for(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen[0], expected[0], rtol=1e-5, atol=1e-5)


class Negate(torch.nn.Module):
    def forward(self, x):
        return -x


@pytest.mark.parametrize("traceable", [True, False])
def test_a_shared_activation_is_not_fused(traceable):
    relu = torch.nn.ReLU()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), relu, Negate(), relu)  # the second relu must keep working
    if not traceable:  # then found in the Sequential's order, where the relu is next to the conv
        model.append(DataDependent())
    reference = copy.deepcopy(model)
    report = bigkern.swap(model)
    assert not report.fused and type(relu) is torch.nn.ReLU
    if not traceable:
        assert "registered more than once" in str(report)
    x = input_for(model)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_hugging_face_resnet_fuses_in_its_traceable_submodules():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    model = randomize_batch_norms(transformers.ResNetModel(config)).eval()
    reference = copy.deepcopy(model)
    keys = model.state_dict().keys()
    report = bigkern.swap(model)
    convs = [n for n, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert {e.name for e in report.fused if "normalization" in e.name} == {c.replace("convolution", "normalization") for c in convs}
    assert model.state_dict().keys() == keys
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).last_hidden_state, reference(x).last_hidden_state, rtol=1e-4, atol=1e-5)
    bigkern.unswap(model)
    assert all(type(a) is type(b) for a, b in zip(model.modules(), reference.modules()))
