"""The recurrent suite: bigkern.ops.lstm (and gru) against torch's LSTM and torch.compile.

Cases (``cases``), sequence-first input (T, B, I) ("lnh"), zero initial state, forward (under
torch.no_grad(): inference) and forward+backward (gradients of the input and every weight):
    CPU    the issue's acceptance shape: LSTM, T=100, B=32, input=hidden=256, 2 layers, float32;
           and a GRU of the same shape
    CUDA   one LSTM layer, T=512, input=hidden=H, B in {1, 16, 64}, H in {256, 512, 1024}
           (the persistent-RNN regime: small batches, weights that fit on chip), bfloat16
           unless dtypes are asked for; --quick: B in {1, 64}, H in {256, 1024}

Providers (``providers``): bigkern-cpu / bigkern-cuda / bigkern-triton; "torch" (torch's
nn.LSTM kernel through torch._VF: oneDNN on the CPU, cuDNN on CUDA, which picks its own
algorithm, persistent ones included); on CUDA "torch-no-cudnn" (PyTorch's own fused-cell
kernels, cuDNN disabled); "torch.compile" of the same recurrence written step by step in
torch (Dynamo cannot trace nn.LSTM itself), when asked for.

FLOP model (TFLOP/s = FLOPs / median time), per layer and direction:
    forward            2 * T * B * G * H * (I_layer + H)   (input and recurrent products;
                       G = 4 gates for LSTM, 3 for GRU; the gate math is not counted)
    forward+backward   3x the forward (grad of the inputs and of the weights: two more
                       products of the same size)
"""

from __future__ import annotations

import torch

import bigkern
from bigkern.bench.harness import Case, Inputs, Provider, bigkern_providers, compile_providers, input_generators

GATES = {"lstm": 4, "gru": 3}
CPU_CASES = [("lstm", 100, 32, 256, 256, 2), ("gru", 100, 32, 256, 256, 2)]  # (kind, T, B, I, H, layers)
CUDA_STEPS = 512
CUDA_BATCHES, CUDA_QUICK_BATCHES = (1, 16, 64), (1, 64)
CUDA_HIDDEN, CUDA_QUICK_HIDDEN = (256, 512, 1024), (256, 1024)


def rnn_flops(kind: str, steps: int, batch: int, input_size: int, hidden: int, layers: int, direction: str) -> float:
    """FLOPs of one call by the model in the module docstring."""
    total = 0.0
    for layer in range(layers):
        layer_in = input_size if layer == 0 else hidden
        total += 2.0 * steps * batch * GATES[kind] * hidden * (layer_in + hidden)
    return total * (3.0 if direction == "forward+backward" else 1.0)


def make_case(kind, steps, batch, input_size, hidden, layers, dtype, direction, seed=0) -> Case:
    generators = input_generators(seed)
    gates = GATES[kind]

    def make_inputs(device) -> Inputs:
        device = torch.device(device)
        gen = generators(device)
        backward = direction == "forward+backward"
        bound = hidden**-0.5

        def uniform(*shape):
            t = torch.rand(shape, device=device, generator=gen) * 2 * bound - bound
            return t.to(dtype).requires_grad_(backward)

        x = torch.randn((steps, batch, input_size), device=device, generator=gen).to(dtype).requires_grad_(backward)
        weights = []
        for layer in range(layers):
            layer_in = input_size if layer == 0 else hidden
            weights += [uniform(gates * hidden, layer_in), uniform(gates * hidden, hidden),
                        uniform(gates * hidden), uniform(gates * hidden)]  # fmt: skip
        grad = torch.randn((steps, batch, hidden), device=device, generator=gen).to(dtype) if backward else None
        return Inputs((x, *weights), grad)

    return Case(
        op=kind, shape=(steps, batch, input_size, hidden), dtype=dtype, layout="lnh", direction=direction,
        params={"layers": layers}, make_inputs=make_inputs,
        flops=lambda provider: rnn_flops(kind, steps, batch, input_size, hidden, layers, direction),
        label=f"{kind}(layers={layers})",
    )  # fmt: skip


def cases(device, dtypes=None, quick: bool = False) -> list[Case]:
    """Every recurrent case for ``device`` (see the module docstring)."""
    device = torch.device(device)
    result: list[Case] = []
    directions = ("forward", "forward+backward")
    if device.type != "cuda":
        for dtype in dtypes or [torch.float32]:
            for kind, steps, batch, input_size, hidden, layers in CPU_CASES[:1] if quick else CPU_CASES:
                for direction in directions:
                    result.append(make_case(kind, steps, batch, input_size, hidden, layers, dtype, direction, len(result)))
        return result
    for dtype in dtypes or [torch.bfloat16]:
        for direction in directions:
            for hidden in CUDA_QUICK_HIDDEN if quick else CUDA_HIDDEN:
                for batch in CUDA_QUICK_BATCHES if quick else CUDA_BATCHES:
                    result.append(make_case("lstm", CUDA_STEPS, batch, hidden, hidden, 1, dtype, direction, len(result)))
    return result


def _unrolled(kind: str, layers: int):
    """The recurrence step by step in torch (what torch.compile is given)."""

    def run(x, *weights):
        steps, batch = x.shape[:2]
        layer_in = x
        for layer in range(layers):
            w_ih, w_hh, b_ih, b_hh = weights[4 * layer : 4 * layer + 4]
            hidden = w_hh.shape[1]
            x_proj = (layer_in.reshape(steps * batch, -1) @ w_ih.t() + b_ih).reshape(steps, batch, -1)
            h = x.new_zeros((batch, hidden))
            c = x.new_zeros((batch, hidden))
            outputs = []
            for t in range(steps):
                if kind == "lstm":
                    i, f, g, o = (x_proj[t] + h @ w_hh.t() + b_hh).chunk(4, dim=1)
                    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
                    h = o.sigmoid() * c.tanh()
                else:
                    xr, xz, xn = x_proj[t].chunk(3, dim=1)
                    hr, hz, hn = (h @ w_hh.t() + b_hh).chunk(3, dim=1)
                    r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
                    h = (1 - z) * (xn + r * hn).tanh() + z * h
                outputs.append(h)
            layer_in = torch.stack(outputs)
        return layer_in

    return run


def providers(case: Case, device, *, compile: bool = False) -> list[Provider]:
    """bigkern's backends, torch's LSTM/GRU kernel (cuDNN on CUDA, with and without it), torch.compile."""
    device = torch.device(device)
    kind, layers = case.op, case.params["layers"]
    fn = {"lstm": bigkern.ops.lstm, "gru": bigkern.ops.gru}[kind]
    vf = {"lstm": torch._VF.lstm, "gru": torch._VF.gru}[kind]

    def bigkern_fn(x, *weights):
        return fn(x, None, list(weights), layers, False, False, 0.0, False)[0]

    def torch_fn(x, *weights):
        steps, batch, _ = x.shape
        hidden = weights[1].shape[1]
        h0 = x.new_zeros((layers, batch, hidden))
        hx = (h0, h0) if kind == "lstm" else h0
        return vf(x, hx, list(weights), True, layers, 0.0, False, False, False)[0]

    result = bigkern_providers(case, device, bigkern_fn)
    result.append(Provider.of("torch", torch_fn))
    if device.type == "cuda":
        result.append(Provider.of("torch-no-cudnn", torch_fn, context=lambda: torch.backends.cudnn.flags(enabled=False)))
    if compile:
        result += compile_providers(_unrolled(kind, layers), device)
    return result


__all__ = ["cases", "providers", "rnn_flops"]
