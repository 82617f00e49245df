"""``bigkern profile``: torch.profiler over a few steps of a bundled model or one op.

Every bigkern op appears under its dispatcher name (``bigkern::conv2d``, its backward
``bigkern::conv2d_backward``; ``bigkern_triton::*`` for the Triton path), since the ops are
registered torch operators: the profiler labels them with no code in the ops. ``--nvtx`` also
emits an NVTX range per operator for Nsight Systems / Nsight Compute (docs/profiling.md).

Targets: the models of bigkern.models on synthetic inputs (a training step: forward, backward,
optimizer step; ``--inference`` for a no-grad forward) and single ops at the benchmark suites'
acceptance shapes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bigkern import models, ops

VOCAB = 80


def _classifier(factory, shape):
    def build(batch, device):
        model = factory().to(device)
        x = torch.rand((batch, *shape), device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        return model, lambda m: F.cross_entropy(m(x), y)

    return build


def _language_model(factory, length=128):
    def build(batch, device):
        model = factory().to(device)
        tokens = torch.randint(0, VOCAB, (batch, length + 1), device=device)

        def loss(m):
            out = m(tokens[:, :-1])
            logits = out[0] if isinstance(out, tuple) else out
            return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))

        return model, loss

    return build


def _seq2seq(batch, device):
    model = models.Seq2SeqTransformer(16, 16).to(device)
    src = torch.randint(3, 16, (batch, 12), device=device)
    tgt = torch.randint(3, 16, (batch, 14), device=device)
    return model, lambda m: F.cross_entropy(m(src, tgt[:, :-1]).reshape(-1, 16), tgt[:, 1:].reshape(-1))


def _autoencoder(batch, device):
    model = models.ConvAutoencoder().to(device)
    x = torch.rand(batch, 1, 28, 28, device=device)
    return model, lambda m: F.mse_loss(m(x), x)


#: model name -> build(batch, device) -> (model, loss(model))
MODELS: dict[str, Callable] = {
    "cnn": _classifier(models.MNISTConvNet, (1, 28, 28)),
    "lenet": _classifier(models.LeNet5, (1, 28, 28)),
    "cifar": _classifier(models.CIFARConvNet, (3, 32, 32)),
    "lstm-lm": _language_model(lambda: models.RecurrentLM(VOCAB, cell="lstm")),
    "gru-lm": _language_model(lambda: models.RecurrentLM(VOCAB, cell="gru")),
    "transformer-lm": _language_model(lambda: models.TransformerLM(VOCAB, num_layers=3)),
    "seq2seq": _seq2seq,
    "autoencoder": _autoencoder,
}


def _op_target(make_inputs, call):
    """An op target: inputs requiring grad; the step's 'loss' is the sum of the op's output."""

    def build(batch, device):
        inputs = make_inputs(batch, device)
        params = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        holder = torch.nn.Module()
        holder.inputs = torch.nn.ParameterList(params)
        return holder, lambda _: call(*inputs).float().sum()

    return build


def _rand(device, *shape, grad=True, channels_last=False):
    t = torch.randn(*shape, device=device)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return torch.nn.Parameter(t) if grad else t


#: op name -> build(batch, device); the batch scales the leading dimension
OPS: dict[str, Callable] = {
    "conv2d": _op_target(lambda b, d: (_rand(d, b, 64, 56, 56, channels_last=True), _rand(d, 64, 64, 3, 3)),
                         lambda x, w: ops.conv2d(x, w, padding=1, activation="relu")),
    "attention": _op_target(lambda b, d: tuple(_rand(d, b, 8, 1024, 64) for _ in range(3)),
                            lambda q, k, v: ops.attention(q, k, v, is_causal=True)),
    "max_pool2d": _op_target(lambda b, d: (_rand(d, b, 64, 112, 112),), lambda x: ops.max_pool2d(x, 3, 2, 1)),
    "lstm": _op_target(
        lambda b, d: (_rand(d, 100, b, 256), *[_rand(d, *s) for s in ((1024, 256), (1024, 256), (1024,), (1024,))]),
        lambda x, *w: ops.lstm(x, None, list(w), 1, False, False, 0.0, True)[0]),
}  # fmt: skip

DEFAULT_BATCH = {"conv2d": 8, "attention": 2, "max_pool2d": 16, "lstm": 32}


def targets() -> list[str]:
    return [*MODELS, *OPS]


def profile(target: str, device: torch.device, steps: int = 5, warmup: int = 2, batch: int | None = None,
            inference: bool = False, nvtx: bool = False, trace: Path | None = None, top: int = 15, out=print):  # fmt: skip
    """Profile ``steps`` steps of ``target`` after ``warmup``; write a Chrome trace; print the top
    operators by self time with their share. Returns the profiler object."""
    if target not in MODELS and target not in OPS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(targets())}")
    build = MODELS.get(target) or OPS[target]
    batch = batch or DEFAULT_BATCH.get(target, 32)
    model, loss = build(batch, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3) if not inference and target in MODELS else None
    if inference:
        model.eval()

    def step():
        if inference:
            with torch.no_grad():
                loss(model)
            return
        model.zero_grad(set_to_none=True)
        loss(model).backward()
        if optimizer is not None:
            optimizer.step()

    for _ in range(warmup):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    nvtx_ranges = torch.autograd.profiler.emit_nvtx() if nvtx else contextlib.nullcontext()
    with nvtx_ranges, torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        for i in range(steps):
            with torch.profiler.record_function(f"bigkern profile step {i}"):
                step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    if trace is None:
        trace = Path(f"profile-{target}-{device.type}-{_dt.datetime.now():%Y%m%d-%H%M%S}.json")
    trace.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace))
    out(f"bigkern profile {target} on {device}: {steps} {'inference' if inference else 'training'} steps, batch {batch}")
    out(format_top(prof, device, top))
    out(f"Chrome trace: {trace} (open in chrome://tracing or https://ui.perfetto.dev)")
    return prof


def format_top(prof, device: torch.device, top: int) -> str:
    """The ``top`` operators by self time (device time on a GPU), their share, and bigkern's total share."""
    on_gpu = device.type == "cuda"

    def self_time(e) -> float:  # microseconds
        return (getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)) if on_gpu else e.self_cpu_time_total

    events = [e for e in prof.key_averages() if not e.key.startswith("bigkern profile step")]
    total = sum(self_time(e) for e in events) or 1.0
    ranked = sorted(events, key=self_time, reverse=True)[:top]
    unit = "GPU" if on_gpu else "CPU"
    width = max([len(e.key[:70]) for e in ranked] + [8])
    lines = [f"{'operator':<{width}}  {'calls':>6}  {'self ' + unit + ' ms':>12}  {'share':>6}"]
    for e in ranked:
        lines.append(f"{e.key[:70]:<{width}}  {e.count:>6}  {self_time(e) / 1000:>12.3f}  {100 * self_time(e) / total:>5.1f}%")
    ours = sum(self_time(e) for e in events if e.key.startswith(("bigkern::", "bigkern_triton::")) or "bigkern" in e.key)
    lines.append(f"bigkern operators: {100 * ours / total:.1f}% of the self {unit} time ({total / 1000:.3f} ms in all)")
    return "\n".join(lines)
