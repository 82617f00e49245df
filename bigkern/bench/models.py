"""The models suite: whole bigkern.models networks against the same network in plain torch.nn.

Cases (``cases``), each one model at a fixed batch: "forward" is an inference call (no grad),
"forward+backward" a training step's forward and backward (the optimizer step is the same for
every provider and is left out). CPU: float32; CUDA: bfloat16. --quick: MNISTConvNet and
TransformerLM, forward only.

    mnist_convnet       MNISTConvNet, batch 64, 1x28x28
    lenet5              LeNet5, batch 64, 1x28x28
    cifar_convnet       CIFARConvNet, batch 64, 3x32x32
    lstm_lm             RecurrentLM (2-layer LSTM 256), batch 32, 128 characters
    transformer_lm      TransformerLM (3 layers, d 128), batch 32, 128 characters
    seq2seq             Seq2SeqTransformer (2+2 layers, d 128), batch 64, 12 -> 14 tokens

Providers (``providers``): bigkern's backends (the bigkern.models model, conv+ReLU fused); "torch"
(``bigkern.models.to_torch`` of it: same weights, torch.nn layers, cuDNN / oneDNN); and
"torch.compile" of the torch model, when asked for. No FLOP model: rows carry times and the
speedup only.
"""

from __future__ import annotations

import torch

from bigkern import models
from bigkern.bench.harness import Case, Inputs, Provider, bigkern_providers, compile_providers, input_generators

VOCAB = 80


def _image(channels, size):
    return lambda batch, gen, device, dtype: (torch.rand(batch, channels, size, size, generator=gen, device=device).to(dtype),)


def _tokens(length):
    return lambda batch, gen, device, dtype: (torch.randint(0, VOCAB, (batch, length), generator=gen, device=device),)


def _seq2seq_inputs(batch, gen, device, dtype):
    return (torch.randint(3, 16, (batch, 12), generator=gen, device=device),
            torch.randint(3, 16, (batch, 14), generator=gen, device=device))  # fmt: skip


#: name -> (factory, batch, make the inputs, layout, output shape from the batch)
MODELS = {
    "mnist_convnet": (models.MNISTConvNet, 64, _image(1, 28), "nchw", lambda b: (b, 10)),
    "lenet5": (models.LeNet5, 64, _image(1, 28), "nchw", lambda b: (b, 10)),
    "cifar_convnet": (models.CIFARConvNet, 64, _image(3, 32), "nchw", lambda b: (b, 10)),
    "lstm_lm": (lambda: models.RecurrentLM(VOCAB, 64, 256, 2), 32, _tokens(128), "tokens", lambda b: (b, 128, VOCAB)),
    "transformer_lm": (lambda: models.TransformerLM(VOCAB, 128, 4, 3, 512), 32, _tokens(128), "tokens",
                       lambda b: (b, 128, VOCAB)),
    "seq2seq": (lambda: models.Seq2SeqTransformer(16, 16), 64, _seq2seq_inputs, "tokens", lambda b: (b, 14, 16)),
}  # fmt: skip


def make_case(name: str, dtype: torch.dtype, direction: str, seed: int = 0) -> Case:
    _, batch, make, layout, output_shape = MODELS[name]
    generators = input_generators(seed)

    def make_inputs(device) -> Inputs:
        device = torch.device(device)
        gen = generators(device)
        grad = torch.randn(output_shape(batch), generator=gen, device=device).to(dtype) if direction != "forward" else None
        return Inputs(make(batch, gen, device, dtype), grad)

    return Case(op=name, shape=(batch,), dtype=dtype, layout=layout, direction=direction, params={"model": name},
                make_inputs=make_inputs, label=name)  # fmt: skip


def cases(device, dtypes=None, quick: bool = False) -> list[Case]:
    device = torch.device(device)
    dtypes = dtypes or [torch.bfloat16 if device.type == "cuda" else torch.float32]
    names = ["mnist_convnet", "transformer_lm"] if quick else list(MODELS)
    directions = ("forward",) if quick else ("forward", "forward+backward")
    return [make_case(n, dtype, d, i) for i, (dtype, d, n) in enumerate((t, d, n) for t in dtypes for d in directions for n in names)]


def _callable(model: torch.nn.Module):
    """The model as a function of the case's inputs, returning its logits; ``parameters`` tells
    the harness which leaves a forward+backward case differentiates (harness.make_step)."""

    def call(*inputs):
        out = model(*inputs)
        return out[0] if isinstance(out, tuple) else out

    call.parameters = model.parameters
    return call


def providers(case: Case, device, *, compile: bool = False) -> list[Provider]:
    device = torch.device(device)
    torch.manual_seed(0)
    ours = MODELS[case.op][0]().to(device=device, dtype=case.dtype)
    twin = models.to_torch(ours)
    if case.direction == "forward":
        ours.eval()
        twin.eval()
    result = bigkern_providers(case, device, _callable(ours))
    result.append(Provider.of("torch", _callable(twin)))
    if compile:
        result += compile_providers(_callable(twin), device)
    return result
