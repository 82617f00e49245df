"""The training loop behind ``bigkern train``: backend choice, autocast, torch.compile, progress,
per-epoch evaluation, checkpoints and the throughput summary.

Under ``torchrun`` (WORLD_SIZE > 1 in the environment) the model is wrapped in
DistributedDataParallel (gloo on the CPU, NCCL on GPUs, one GPU per local rank): each step's
global batch is ``--batch-size`` x the world size, split across the ranks; rank 0 prints and saves.

``--backend torch`` trains the model's torch.nn twin (``bigkern.models.to_torch``: the same
network in plain torch.nn layers), so its samples/s compare directly with a bigkern backend's.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from dataclasses import dataclass, field

import torch

import bigkern
from bigkern import models
from bigkern.training.tasks import DEFAULTS, TASKS

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    task: str
    model: str
    backend: str
    device: str
    epochs: list[dict] = field(default_factory=list)  # per epoch: train_loss, seconds, samples_per_s, metrics
    final: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    samples: int = 0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0


def _progress(iterable, total: int, description: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=description, unit="batch", leave=False, dynamic_ncols=True)


def _to(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


def _format(metrics: dict) -> str:
    parts = []
    for key, value in metrics.items():
        if "accuracy" in key:
            parts.append(f"{key.replace('_', ' ')} {100 * value:.2f}%")
        else:
            parts.append(f"{key.replace('_', ' ')} {value:.4f}")
    return "  ".join(parts)


def _warmup_cosine(step: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over 5% of the steps (at most 100), then cosine decay
    to zero at the end of this run (a resumed run schedules its own epochs afresh)."""
    warmup = max(1, min(100, total // 20))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _join_process_group(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group), from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, False
    started = not torch.distributed.is_initialized()
    if started:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world, started


def run(options, out=print) -> TrainResult:
    """Train ``options.task`` as ``bigkern train`` does (see bigkern/cli.py for the options)."""
    name = options.task
    defaults = DEFAULTS[name]
    epochs = defaults["epochs"] if options.epochs is None else options.epochs
    batch_size = options.batch_size or defaults["batch_size"]
    lr = options.lr or defaults["lr"]
    optimizer_name = options.optimizer or defaults["optimizer"]
    device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bigkern train: --device cuda but CUDA is not available in this process")
    rank, world, started_group = _join_process_group(device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if rank != 0:
        out = lambda *_: None  # noqa: E731  (only rank 0 reports)
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)

    checkpoint = torch.load(options.load, map_location="cpu", weights_only=True) if options.load else None
    if checkpoint is not None and checkpoint["task"] != name:
        raise SystemExit(f"bigkern train: --load {options.load} holds a {checkpoint['task']!r} checkpoint, not {name!r}")
    task_state = checkpoint["task_state"] if checkpoint else {}
    task = TASKS[name](name, options, **task_state)
    model = task.build_model()
    if options.backend == "torch":
        model = models.to_torch(model)
    model = model.to(device)
    optimizer = (torch.optim.Adam(model.parameters(), lr=lr) if optimizer_name == "adam"
                 else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))  # fmt: skip
    start_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch = checkpoint["epoch"]

    total_steps = epochs * sum(1 for _ in task.train_batches(batch_size * world, None))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _warmup_cosine(step, total_steps))
    backend_context = contextlib.nullcontext() if options.backend == "torch" else bigkern.use_backend(options.backend)
    amp_dtype = AMP_DTYPES.get(options.amp) if options.amp else None
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 and device.type == "cuda" else None

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    step_model = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if options.compile:
        torch._dynamo.config.allow_rnn = True  # dynamo refuses nn.LSTM/GRU/RNN subclasses otherwise
        step_model = torch.compile(step_model)

    parameters = sum(p.numel() for p in model.parameters())
    result = TrainResult(name, type(model).__name__, options.backend, str(device))
    out(f"bigkern train {name}: {type(model).__name__} ({parameters:,} parameters) on {device}, backend "
        f"{options.backend}{', amp ' + options.amp if options.amp else ''}{', compiled' if options.compile else ''}; "
        f"{epochs} epochs of batch {batch_size}{f' x {world} ranks' if world > 1 else ''}, {optimizer_name} lr {lr}")  # fmt: skip
    with backend_context:
        for epoch in range(start_epoch, start_epoch + epochs):
            model.train()
            batches = [tuple(t[rank::world] for t in b) for b in task.train_batches(batch_size * world, generator)
                       if len(b[0]) >= world]  # this rank's share of each global batch  # fmt: skip
            loss_sum = samples = 0
            started = time.perf_counter()
            bar = _progress(batches, len(batches), f"epoch {epoch + 1}", options.progress)
            for batch in bar:
                batch = _to(batch, device)
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss, count = task.loss(step_model, batch)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if defaults["clip"]:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), defaults["clip"])
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                loss_sum += loss.item() * count
                samples += count
                if bar is not batches:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if world > 1:  # the epoch's loss and sample count over every rank
                totals = torch.tensor([loss_sum, samples], dtype=torch.float64, device=device)
                torch.distributed.all_reduce(totals)
                loss_sum, samples = totals[0].item(), int(totals[1].item())
            seconds = time.perf_counter() - started
            result.train_seconds += seconds
            result.samples += samples
            model.eval()
            with torch.no_grad(), autocast():
                metrics = task.evaluate(model, batch_size * 4)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / samples, "seconds": seconds,
                   "samples_per_s": samples / seconds, **metrics}  # fmt: skip
            result.epochs.append(row)
            out(f"epoch {epoch + 1}/{start_epoch + epochs}  train loss {row['train_loss']:.4f}  {_format(metrics)}  "
                f"{seconds:.1f} s ({row['samples_per_s']:.0f} samples/s)")  # fmt: skip
        if not result.epochs:  # --epochs 0: evaluate a loaded checkpoint
            model.eval()
            with torch.no_grad(), autocast():
                result.final = task.evaluate(model, batch_size * 4)
        else:
            result.final = {k: v for k, v in result.epochs[-1].items() if k.startswith("test_")}
    if started_group:
        # The DDP wrapper holds gloo/NCCL work objects: it goes first, then every rank waits for
        # the others, and only then is the group torn down (gloo aborted a rank now and then when
        # a wrapper outlived its group or a peer's work was still in flight).
        del step_model
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if options.save and rank == 0:
        torch.save({"task": name, "model_class": type(model).__name__, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "epoch": start_epoch + epochs, "task_state": task.state()},
                   options.save)  # fmt: skip
    out(f"summary: {name} {_format(result.final)}; {len(result.epochs)} epochs, training {result.train_seconds:.1f} s, "
        f"{result.samples_per_second:.0f} samples/s (forward + backward + step, backend {options.backend})"
        + (f"; saved {options.save}" if options.save else ""))  # fmt: skip
    return result
