"""Swapped and bigkern-built models under torch.compile(fullgraph=True), torch.autocast (bfloat16
on the CPU) and torch.export (the ops carry fake kernels, so export sees them as single nodes)."""

import copy

import pytest
import torch

import bigkern
from bigkern import models


def small_cnn():
    """A torch.nn CNN with conv -> bn -> relu chains for swap to fuse."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(16, 4),
    ).eval()  # fmt: skip


def bigkern_ops_in(graph_module) -> set[str]:
    return {str(n.target) for n in graph_module.graph.nodes if n.op == "call_function" and "bigkern" in str(n.target)}


def test_swapped_cnn_compiles_fullgraph_with_inductor():
    model = small_cnn()
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    bigkern.swap(model)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm-classifier", "transformer-lm", "seq2seq-forward"])
def test_bigkern_models_capture_as_one_graph(name):
    """fullgraph=True fails on any graph break; aot_eager also traces the backward through the
    ops' autograd formulas."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    if name == "lstm-classifier":
        model, inputs = models.LSTMClassifier(8, 16), (torch.randn(3, 5, 8),)
    elif name == "transformer-lm":
        model, inputs = models.TransformerLM(31, d_model=16, dim_feedforward=32, dropout=0.0), (torch.randint(0, 31, (2, 9)),)
    else:
        model = models.Seq2SeqTransformer(31, 31, d_model=16, dim_feedforward=32, dropout=0.0)
        inputs = (torch.randint(3, 31, (2, 7)), torch.randint(3, 31, (2, 5)))
    expected = model(*inputs)
    expected = expected[0] if isinstance(expected, tuple) else expected
    previous = torch._dynamo.config.allow_rnn
    torch._dynamo.config.allow_rnn = True
    try:
        out = torch.compile(model, fullgraph=True, backend="aot_eager")(*inputs)
    finally:
        torch._dynamo.config.allow_rnn = previous
    out = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_autocast_bfloat16_on_cpu_matches_torch_within_twice_its_error():
    model = small_cnn()
    x = torch.randn(4, 3, 16, 16)
    reference = copy.deepcopy(model).double()(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = model(x)
    bigkern.swap(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = model(x)
    assert ours.dtype == theirs.dtype
    our_error = (ours.double() - reference).abs().max().item()
    torch_error = (theirs.double() - reference).abs().max().item()
    assert our_error <= 2 * torch_error + 1e-3 * reference.abs().max().item(), (our_error, torch_error)


@pytest.mark.parametrize("factory, shape", [(lambda: models.MNISTConvNet().eval(), (2, 1, 28, 28)), (small_cnn, (2, 3, 16, 16))],
                         ids=["MNISTConvNet", "swapped-cnn"])  # fmt: skip
def test_torch_export_sees_the_bigkern_ops(factory, shape):
    model = factory()
    bigkern.swap(model)
    x = torch.rand(shape)
    exported = torch.export.export(model, (x,))
    ops = bigkern_ops_in(exported.graph_module)
    assert any("conv2d" in op for op in ops) and any("pool2d" in op for op in ops), ops
    torch.testing.assert_close(exported.module()(x), model(x))
    other = torch.rand_like(x)  # the exported program computes, it did not freeze one result
    torch.testing.assert_close(exported.module()(other), model(other))
