"""The benchmark harness behind ``bigkern bench`` and the pytest-benchmark files in benchmarks/.

Vocabulary:

``Case``       one op call to measure: op, shape, dtype, layout, direction, extra params, how to
               make its inputs, and how many bytes / FLOPs one call moves / does (the formula
               lives next to the op, in bigkern/bench/<family>.py).
``Provider``   one implementation of a case ("bigkern-cpu", "bigkern-cuda", "bigkern-triton",
               "torch", "torch.compile", ...): a name and a callable built for the case, or the
               reason it cannot run here (recorded in the row as ``skipped_reason``).
``Timing``     how long and how often to measure (``Timing.normal()`` / ``Timing.quick()``).

Timing method:
    CPU   ``time.perf_counter`` around each call (or around a short inner loop when one call is
          shorter than ``min_sample_s``), after a warm-up; the number of samples adapts so that
          one measurement takes about ``target_s``.
    CUDA  a pair of CUDA events around each call, after a warm-up, ``torch.cuda.synchronize``
          before and after; same adaptive sample count.
    Both  rotate through several input sets (enough to exceed the last-level cache, within a
          memory cap) so caches do not flatter; in a normal run the providers of a case take
          turns over ``rounds`` rounds, so that a change in machine load hits them alike; report
          median, p20 and p80 in milliseconds.

Rates: GB/s = bytes moved per call / median time; TFLOP/s = FLOPs per call / median time (the
per-call ``bytes`` and ``flops`` are in the row too, where the suite models them: their ratio
places the row on a roofline);
``pct_of_ceiling`` relates them to the machine's copy bandwidth (or, for FLOP-bound ops, its
matmul rate in that dtype), measured once at start by ``measure_ceiling``.

``speedup_vs_best_baseline`` (bigkern rows only): the median of the fastest provider whose name
does not start with "bigkern" divided by this row's median (> 1 means bigkern is faster).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bigkern import backend as _backend
from bigkern.bench import environment

SCHEMA_VERSION = 1
#: Memory layouts a case may name: images (pooling, conv), (batch, heads, length, dim) sequences
#: ("bhsd": contiguous as SDPA takes them; "bshd": the transposed view a projection produces) and
#: recurrent inputs ("lnh": (length, batch, features), torch.nn.LSTM's default); "tokens": a
#: model's (batch, length) token ids.
LAYOUTS = ("nchw", "channels_last", "bhsd", "bshd", "lnh", "tokens")
DIRECTIONS = ("forward", "forward+backward")
#: bigkern backends worth timing on each device type (provider name = "bigkern-" + backend).
BIGKERN_BACKENDS = {"cpu": ("cpu", "triton"), "cuda": ("cuda", "triton")}
#: The keys of every result row, in CSV column order.
ROW_KEYS = (
    "op", "case", "shape", "dtype", "layout", "direction", "params", "provider",
    "median_ms", "p20_ms", "p80_ms", "gbps", "tflops", "pct_of_ceiling", "peak_mem_bytes",
    "speedup_vs_best_baseline", "skipped_reason", "flops", "bytes",
)  # fmt: skip

_DTYPE_NAMES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}  # fmt: skip


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPE_NAMES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(sorted(_DTYPE_NAMES))}") from None


def is_bigkern(provider: str) -> bool:
    return provider.startswith("bigkern")


# ---------------------------------------------------------------------------------------------
# Cases and providers
# ---------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """One input set of a case: the op's positional arguments, and for forward+backward the
    gradient fed to the backward (``grad_output``); tensors to differentiate have requires_grad."""

    args: tuple
    grad_output: Any = None

    def nbytes(self) -> int:
        tensors = [a for a in self.args if isinstance(a, torch.Tensor)]
        g = self.grad_output
        tensors += list(g) if isinstance(g, (tuple, list)) else [g] if isinstance(g, torch.Tensor) else []
        return sum(t.untyped_storage().nbytes() for t in tensors)


@dataclass
class Case:
    """One op call to benchmark.

    ``make_inputs(device)`` returns fresh, random ``Inputs``. ``bytes_moved(provider)`` and
    ``flops(provider)`` give the work of one call (the provider matters where implementations
    write different things, e.g. index tensors); either may be None.
    """

    op: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    layout: str
    direction: str
    params: dict
    make_inputs: Callable[[torch.device], Inputs]
    bytes_moved: Callable[[str], int] | None = None
    flops: Callable[[str], float] | None = None
    label: str = ""  # op with its distinguishing params, e.g. "max_pool2d(3,2,1)"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"Case.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Case.direction must be one of {DIRECTIONS}, got {self.direction!r}")
        self.shape = tuple(int(s) for s in self.shape)
        self.label = self.label or self.op

    @property
    def shape_str(self) -> str:
        return "x".join(str(s) for s in self.shape)

    @property
    def id(self) -> str:
        """A readable unique name: 'max_pool2d(3,2,1) 16x64x112x112 float32 nchw forward'."""
        return f"{self.label} {self.shape_str} {dtype_name(self.dtype)} {self.layout} {self.direction}"


@dataclass
class Provider:
    """One implementation of a case.

    ``make()`` builds the callable (lazily, right before it is measured: torch.compile wrappers
    are built then); the callable takes ``*inputs.args`` and returns the op's output.
    ``context()``, if given, is entered around all of this provider's calls (e.g. a
    ``bigkern.use_backend``). A provider with ``skipped_reason`` is not run.
    """

    name: str
    make: Callable[[], Callable] | None = None
    context: Callable[[], contextlib.AbstractContextManager] | None = None
    skipped_reason: str | None = None

    @classmethod
    def of(cls, name: str, fn: Callable, context=None) -> Provider:
        return cls(name, make=lambda: fn, context=context)

    @classmethod
    def skipped(cls, name: str, reason: str) -> Provider:
        return cls(name, skipped_reason=reason)


def bigkern_providers(case: Case, device: torch.device, fn: Callable) -> list[Provider]:
    """A provider per bigkern backend that serves ``device``'s type, each running ``fn`` under
    ``bigkern.use_backend(backend)``; skipped with ``bigkern.backend.why_not``'s reason where the
    backend cannot serve the case here."""
    device = torch.device(device)
    probe = torch.empty(0, dtype=case.dtype, device=device)
    result = []
    for name in BIGKERN_BACKENDS.get(device.type, ()):
        provider = f"bigkern-{name}"
        reason = _backend.why_not(name, case.op, probe)
        if reason is None and name == "triton" and device.type == "cpu":
            reason = "Triton runs CPU tensors only under the interpreter (TRITON_INTERPRET=1), which is not benchmarked"
        if reason is not None:
            result.append(Provider.skipped(provider, reason))
        else:
            result.append(Provider.of(provider, fn, context=lambda name=name: _backend_context(name)))
    return result


def _backend_context(name: str):
    import bigkern

    return bigkern.use_backend(name)


def compile_providers(fn: Callable, device: torch.device | str) -> list[Provider]:
    """torch.compile of ``fn`` in the default mode ("torch.compile") and, on a GPU, in mode
    max-autotune ("torch.compile-max-autotune": Triton templates timed per shape; its compile
    time makes it a GPU-only provider)."""
    result = [compile_provider(fn)]
    if torch.device(device).type == "cuda":
        result.append(compile_provider(fn, "torch.compile-max-autotune", mode="max-autotune"))
    return result


def compile_provider(fn: Callable, name: str = "torch.compile", **compile_kwargs) -> Provider:
    """``torch.compile(fn)`` with a fresh Dynamo cache (each case compiles on its own, so that
    the recompile limit is never reached across cases)."""
    compile_kwargs.setdefault("dynamic", False)

    def make():
        torch._dynamo.reset()
        compiled = torch.compile(fn, **compile_kwargs)
        if hasattr(fn, "parameters"):  # see make_step
            compiled.parameters = fn.parameters
        return compiled

    return Provider(name, make=make)


def input_generators(seed: int) -> Callable[[torch.device | str], torch.Generator]:
    """A source of generators for a case's ``make_inputs``: each call gives a generator on the
    device seeded ``seed``, ``seed + 1``, ... so that every input set is different and reproducible."""
    calls = [0]

    def next_generator(device) -> torch.Generator:
        gen = torch.Generator(device=torch.device(device))
        gen.manual_seed(seed + calls[0])
        calls[0] += 1
        return gen

    return next_generator


def make_tensor(
    shape: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str,
    layout: str = "nchw",
    requires_grad: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A standard-normal tensor of logical ``shape`` in ``layout`` ("nchw": contiguous;
    "channels_last": dims 1 last in memory, as ``torch.channels_last`` for 4-D)."""
    if layout == "channels_last":
        n, c, *spatial = shape
        t = torch.randn((n, *spatial, c), dtype=dtype, device=device, generator=generator)
        t = t.permute(0, t.dim() - 1, *range(1, t.dim() - 1))
    else:
        t = torch.randn(tuple(shape), dtype=dtype, device=device, generator=generator)
    return t.requires_grad_(requires_grad)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


@dataclass
class Timing:
    target_s: float = 0.2  # time spent in the measured samples of one measurement
    warmup_calls: int = 2  # at least this many calls before measuring...
    warmup_s: float = 0.05  # ...and at least this long
    min_samples: int = 10
    max_samples: int = 2000
    min_sample_s: float = 1e-4  # CPU: shorter calls are timed in an inner loop
    rotate_bytes: int | None = None  # input bytes to cycle through; None: 4x L2 on GPU, 64 MiB on CPU
    max_rotate_sets: int = 8
    max_pool_bytes: int = 1 << 30  # never keep more than this in rotated input sets
    ceiling_bytes: int | None = None  # size of the copy for the bandwidth ceiling; None: by device
    rounds: int = 1  # providers of a case take turns this many times (each round gets 1/rounds)

    @classmethod
    def normal(cls) -> Timing:
        return cls(rounds=3)

    @classmethod
    def quick(cls) -> Timing:
        return cls(target_s=0.04, warmup_calls=2, warmup_s=0.01, min_samples=3, max_samples=500)

    def round(self, index: int) -> Timing:
        """The share of one round: a full warm-up in the first, one warm-up call in later ones
        (another provider ran in between)."""
        if self.rounds <= 1:
            return self
        return replace(
            self,
            target_s=self.target_s / self.rounds,
            min_samples=max(1, math.ceil(self.min_samples / self.rounds)),
            max_samples=max(1, math.ceil(self.max_samples / self.rounds)),
            warmup_calls=self.warmup_calls if index == 0 else 1,
            warmup_s=self.warmup_s if index == 0 else 0.0,
            rounds=1,
        )


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_s: Iterable[float]) -> dict:
    """Median, p20, p80 (milliseconds) of per-call times given in seconds."""
    ms = sorted(s * 1e3 for s in samples_s)
    return {"median_ms": statistics.median(ms), "p20_ms": _percentile(ms, 20), "p80_ms": _percentile(ms, 80)}


class _Cycle:
    def __init__(self, calls: Sequence[Callable]):
        self.calls, self.i = list(calls), 0

    def __call__(self):
        call = self.calls[self.i % len(self.calls)]
        self.i += 1
        return call()


def _sample_count(timing: Timing, per_sample_s: float) -> int:
    wanted = round(timing.target_s / max(per_sample_s, 1e-9))
    return max(timing.min_samples, min(timing.max_samples, wanted))


def time_cpu(calls: Sequence[Callable], timing: Timing) -> list[float]:
    """Per-call seconds of ``calls`` (cycled) on the CPU, with ``time.perf_counter``."""
    run = _Cycle(calls)
    clock = time.perf_counter
    start, done, last = clock(), 0, 0.0
    while done < timing.warmup_calls or clock() - start < timing.warmup_s:
        t0 = clock()
        run()
        last = clock() - t0
        done += 1
    inner = max(1, math.ceil(timing.min_sample_s / max(last, 1e-9)))
    samples = []
    for _ in range(_sample_count(timing, last * inner)):
        t0 = clock()
        for _ in range(inner):
            run()
        samples.append((clock() - t0) / inner)
    return samples


def time_cuda(calls: Sequence[Callable], timing: Timing, device: torch.device) -> list[float]:
    """Per-call seconds of ``calls`` (cycled) on a CUDA device, with CUDA events."""
    run = _Cycle(calls)
    with torch.cuda.device(device):
        torch.cuda.synchronize()
        start, done = time.perf_counter(), 0
        while done < timing.warmup_calls or time.perf_counter() - start < timing.warmup_s:
            run()
            torch.cuda.synchronize()
            done += 1
        probe = 3
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(probe):
            run()
        end.record()
        end.synchronize()
        estimate = begin.elapsed_time(end) / 1e3 / probe
        n = _sample_count(timing, estimate)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        torch.cuda.synchronize()
        for s, e in zip(starts, ends):
            s.record()
            run()
            e.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]


def time_calls(calls: Sequence[Callable], timing: Timing, device: torch.device) -> list[float]:
    device = torch.device(device)
    return time_cuda(calls, timing, device) if device.type == "cuda" else time_cpu(calls, timing)


def cpu_peak_bytes(call: Callable) -> int | None:
    """Resident memory the call adds at its peak (Linux: VmHWM after resetting it through
    /proc/self/clear_refs, minus VmRSS before); None where the kernel offers no reset."""

    def status_kib(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise OSError(f"/proc/self/status has no {field}")

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak resident set size to the current one
        base = status_kib("VmRSS")
        out = call()
        peak = status_kib("VmHWM")
    except OSError:
        return None
    del out
    return max(0, peak - base) * 1024


def cuda_peak_bytes(call: Callable, device: torch.device) -> int:
    """Bytes the call allocates at its peak above what was allocated before it (outputs,
    saved tensors and workspace), by torch.cuda.max_memory_allocated."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return int(peak)


# ---------------------------------------------------------------------------------------------
# The ceiling
# ---------------------------------------------------------------------------------------------


def measure_ceiling(device: torch.device | str, timing: Timing | None = None) -> dict:
    """Copy bandwidth (bytes read + written by a large ``copy_`` / its fastest time, GB/s) on
    ``device``, and dense matmul TFLOP/s (2*M*N*K FLOPs / fastest time) per dtype: 8192^3 in float16, bfloat16 and
    float32 on a GPU; 2048^3 in float32 on the CPU (1024^3 for a quick run)."""
    device = torch.device(device)
    timing = timing or Timing.normal()
    if timing.ceiling_bytes is not None:
        nbytes = timing.ceiling_bytes
    elif device.type == "cuda":
        nbytes = 1 << 30
    else:
        nbytes = (128 << 20) if timing.target_s >= 0.1 else (32 << 20)
    n = nbytes // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch
    copy_timing = Timing(target_s=timing.target_s, warmup_calls=2, warmup_s=0.0, min_samples=5, max_samples=200)
    samples = time_calls([lambda: dst.copy_(src)], copy_timing, device)
    med = min(samples)  # a ceiling is what the machine can do: its fastest sample, not a typical one
    ceiling: dict[str, Any] = {
        "device": str(device),
        "copy_gbps": 2 * n * 4 / med / 1e9,
        "copy_bytes": 2 * n * 4,
        "copy_method": f"dst.copy_(src), float32, {n * 4 >> 20} MiB each, (read + written bytes) / fastest time",
        "matmul_tflops": None,
    }
    del src, dst
    if device.type == "cuda" or timing.ceiling_bytes is None:  # tests that set ceiling_bytes skip the CPU matmul
        gpu = device.type == "cuda"
        size = (8192 if timing.target_s >= 0.1 else 4096) if gpu else (2048 if timing.target_s >= 0.1 else 1024)
        rates = {}
        for dtype in (torch.float16, torch.bfloat16, torch.float32) if gpu else (torch.float32,):
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            mm_timing = Timing(target_s=timing.target_s, warmup_calls=3, warmup_s=0.0, min_samples=5, max_samples=200)
            med = min(time_calls([lambda: a @ b], mm_timing, device))
            rates[dtype_name(dtype)] = 2 * size**3 / med / 1e12
            del a, b
        ceiling["matmul_tflops"] = rates
        ceiling["matmul_method"] = f"{size}x{size} @ {size}x{size}, 2*M*N*K FLOPs / fastest time" + (
            f"; float32 with torch.backends.cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}" if gpu else
            f" (torch's CPU matmul, {torch.get_num_threads()} threads)"
        )  # fmt: skip
        if gpu:
            torch.cuda.empty_cache()
    return ceiling


# ---------------------------------------------------------------------------------------------
# Running cases
# ---------------------------------------------------------------------------------------------


def make_step(case: Case, fn: Callable, inputs: Inputs) -> Callable[[], Any]:
    """The measured call: forward only, or forward then the backward of the output."""
    if case.direction == "forward":
        return lambda: fn(*inputs.args)
    leaves = [a for a in inputs.args if isinstance(a, torch.Tensor) and a.requires_grad]
    parameters = getattr(fn, "parameters", None)  # a whole model (the models suite): its weights too
    if parameters is not None:
        leaves += [p for p in parameters() if p.requires_grad]
    if not leaves:
        raise ValueError(f"{case.id}: forward+backward inputs have no tensor with requires_grad")
    grad = inputs.grad_output

    def call():
        out = fn(*inputs.args)
        return torch.autograd.grad(out, leaves, grad)

    return call


def _error_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 300:
        first = first[:297] + "..."
    return f"failed: {type(exc).__name__}: {first}"


def _rotation_sets(first: Inputs, device: torch.device, timing: Timing) -> int:
    per_set = max(first.nbytes(), 1)
    if timing.rotate_bytes is not None:
        want = timing.rotate_bytes
    elif device.type == "cuda":
        l2 = torch.cuda.get_device_properties(device).L2_cache_size or (64 << 20)
        want = 4 * l2
    else:
        want = 64 << 20
    sets = math.ceil(want / per_set)
    sets = min(sets, timing.max_rotate_sets, max(1, timing.max_pool_bytes // per_set))
    return max(1, sets)


def _blank_row(case: Case, provider: str) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(
        op=case.op, case=case.label, shape=list(case.shape), dtype=dtype_name(case.dtype),
        layout=case.layout, direction=case.direction, params=dict(case.params), provider=provider,
    )  # fmt: skip
    return row


def _scope(case: Case, provider: Provider) -> contextlib.ExitStack:
    """The provider's context (e.g. its bigkern backend) and, for a forward, torch.no_grad()."""
    stack = contextlib.ExitStack()
    if provider.context is not None:
        stack.enter_context(provider.context())
    if case.direction == "forward":
        stack.enter_context(torch.no_grad())
    return stack


def _failed(device: torch.device, exc: BaseException) -> str:
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    return _error_reason(exc)


def measure_case(
    case: Case, providers: Sequence[Provider], pool: Sequence[Inputs], device: torch.device, timing: Timing
) -> list[dict]:
    """One row per provider of ``case``, timed over the input sets in ``pool``.

    The providers take turns for ``timing.rounds`` rounds, so that a change in the machine's
    load during the case (other processes, clocks) falls on all of them alike.
    """
    rows = [_blank_row(case, p.name) for p in providers]
    live = []  # [row, provider, calls, samples]
    for row, provider in zip(rows, providers):
        if provider.skipped_reason is not None:
            row["skipped_reason"] = provider.skipped_reason
            continue
        try:
            with _scope(case, provider):
                fn = provider.make()
                live.append([row, provider, [make_step(case, fn, inputs) for inputs in pool], []])
        except Exception as exc:  # an implementation that fails is a result, not a crash of the run
            row["skipped_reason"] = _failed(device, exc)
    for index in range(max(1, timing.rounds)):
        share = timing.round(index)
        for entry in list(live):
            row, provider, calls, samples = entry
            try:
                with _scope(case, provider):
                    samples += time_calls(calls, share, device)
                    if index == 0 and device.type == "cuda":
                        row["peak_mem_bytes"] = cuda_peak_bytes(calls[0], device)
                    elif index == 0 and case.params.get("measure_cpu_memory"):
                        row["peak_mem_bytes"] = cpu_peak_bytes(calls[0])
            except Exception as exc:
                row["skipped_reason"] = _failed(device, exc)
                live.remove(entry)
    for row, provider, _, samples in live:
        row.update(summarize(samples))
        seconds = row["median_ms"] / 1e3
        if case.bytes_moved is not None:
            row["bytes"] = case.bytes_moved(provider.name)
            row["gbps"] = row["bytes"] / seconds / 1e9
        if case.flops is not None:
            row["flops"] = case.flops(provider.name)
            row["tflops"] = row["flops"] / seconds / 1e12
    return rows


def _pct_of_ceiling(row: dict, ceiling: dict | None) -> float | None:
    if not ceiling:
        return None
    if row.get("tflops") is not None and ceiling.get("matmul_tflops"):
        peak = ceiling["matmul_tflops"].get(row["dtype"])
        return 100.0 * row["tflops"] / peak if peak else None
    if row.get("gbps") is not None and ceiling.get("copy_gbps"):
        return 100.0 * row["gbps"] / ceiling["copy_gbps"]
    return None


def add_speedups(rows: list[dict]) -> None:
    """Fill ``speedup_vs_best_baseline`` of bigkern rows: best non-bigkern median / this median."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(_case_key(row), []).append(row)
    for group in groups.values():
        baselines = [r["median_ms"] for r in group if not is_bigkern(r["provider"]) and r["median_ms"] is not None]
        best = min(baselines) if baselines else None
        for r in group:
            r["speedup_vs_best_baseline"] = (
                best / r["median_ms"] if best is not None and is_bigkern(r["provider"]) and r["median_ms"] else None
            )


def _case_key(row: dict) -> str:
    return json.dumps(
        [row["op"], row["case"], row["shape"], row["dtype"], row["layout"], row["direction"], row["params"]],
        sort_keys=True, default=str,
    )  # fmt: skip


class _Progress:
    """tqdm when installed; otherwise a one-line counter on a terminal's stderr, or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.bar, self.total, self.done = None, total, 0
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self.tty = sys.stderr.isatty()
        else:
            self.bar = tqdm(total=total, unit="run", leave=False, dynamic_ncols=True)

    def update(self, text: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description_str(text[:60])
            self.bar.update(1)
        elif self.enabled and self.tty:
            sys.stderr.write(f"\r[{self.done}/{self.total}] {text[:70]:<70}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.tty:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def run_cases(
    cases: Sequence[Case],
    providers_for: Callable[[Case], Sequence[Provider]],
    device: torch.device | str = "cpu",
    timing: Timing | None = None,
    ceiling: dict | None = None,
    progress: bool = False,
    provider_names: Iterable[str] | None = None,
) -> list[dict]:
    """Measure every provider on every case; one row per (case, provider), rows of a case in
    provider order. ``provider_names`` keeps only those providers."""
    device = torch.device(device)
    timing = timing or Timing.normal()
    keep = set(provider_names) if provider_names else None
    plan = []
    for case in cases:
        providers = [p for p in providers_for(case) if keep is None or p.name in keep]
        plan.append((case, providers))
    bar = _Progress(sum(len(p) for _, p in plan), progress)
    rows: list[dict] = []
    try:
        for case, providers in plan:
            runnable = [p for p in providers if p.skipped_reason is None]
            pool: list[Inputs] = []
            make_error = None
            if runnable:
                try:
                    pool.append(case.make_inputs(device))
                    for _ in range(_rotation_sets(pool[0], device, timing) - 1):
                        pool.append(case.make_inputs(device))
                except Exception as exc:
                    make_error = "could not make inputs: " + _error_reason(exc)
            if make_error is not None:
                providers = [p if p.skipped_reason else Provider.skipped(p.name, make_error) for p in providers]
            for row in measure_case(case, providers, pool, device, timing):
                row["pct_of_ceiling"] = _pct_of_ceiling(row, ceiling)
                rows.append(row)
                bar.update(f"{case.label} {case.shape_str} {case.layout} {row['provider']}")
            del pool
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        bar.close()
    add_speedups(rows)
    return rows


def select_cases(
    cases: Iterable[Case],
    filters: Iterable[str] = (),
    directions: Iterable[str] | None = None,
    layouts: Iterable[str] | None = None,
) -> list[Case]:
    """Cases whose ``id`` contains every filter substring (case-insensitive), in the given
    directions and layouts."""
    filters = [f.lower() for f in filters if f]
    directions = set(directions) if directions else None
    layouts = set(layouts) if layouts else None
    return [
        c for c in cases
        if all(f in c.id.lower() for f in filters)
        and (directions is None or c.direction in directions)
        and (layouts is None or c.layout in layouts)
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Suites, results files and the table
# ---------------------------------------------------------------------------------------------


def run_benchmark(
    suites: Sequence[str],
    device: str | torch.device = "cpu",
    dtypes: Sequence[torch.dtype] | None = None,
    quick: bool = False,
    compile: bool | None = None,
    filters: Iterable[str] = (),
    directions: Iterable[str] | None = None,
    layouts: Iterable[str] | None = None,
    provider_names: Iterable[str] | None = None,
    progress: bool = False,
    command: str | None = None,
    timing: Timing | None = None,
    custom_cases: dict[str, list[Case]] | None = None,
) -> dict:
    """Run the named suites (see ``bigkern.bench.SUITES``) and return the results document.

    ``compile=None`` includes torch.compile on CUDA for a normal (not quick) run only.
    ``custom_cases`` ({suite: cases}, from ``--shapes``) replaces those suites' own cases.
    """
    from bigkern.bench import load_suite

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    timing = timing or (Timing.quick() if quick else Timing.normal())
    if compile is None:
        compile = device.type == "cuda" and not quick
    filters = list(filters)
    environment_record = environment.collect(device)
    ceiling = measure_ceiling(device, timing)
    rows: list[dict] = []
    for name in suites:
        suite = load_suite(name)
        own = custom_cases[name] if custom_cases and name in custom_cases else suite.cases(device, dtypes, quick)
        cases = select_cases(own, filters, directions, layouts)
        rows += run_cases(
            cases, lambda case: suite.providers(case, device, compile=compile), device, timing, ceiling,
            progress=progress, provider_names=provider_names,
        )  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join(sys.argv),
        "suites": list(suites),
        "device": str(device),
        "quick": quick,
        "compile": compile,
        "timing": {k: v for k, v in vars(timing).items()},
        "environment": environment_record,
        "ceiling": ceiling,
        "load_average_end": environment.load_average(),
        "rows": rows,
    }


def results_dir() -> Path:
    """benchmarks/results of the source checkout bigkern runs from, else of the working directory."""
    root = environment.source_root()
    if (root / "pyproject.toml").is_file() and (root / "benchmarks").is_dir():
        return root / "benchmarks" / "results"
    return Path.cwd() / "benchmarks" / "results"


def default_results_path(device: str | torch.device, date: _dt.date | None = None, suites: Sequence[str] = ()) -> Path:
    """benchmarks/results/<device-slug>-<YYYY-MM-DD>[-<suite>+<suite>].json (no suffix for every suite),
    so that runs of different suites on one day do not overwrite each other."""
    from bigkern.bench import SUITES

    date = date or _dt.date.today()
    suffix = "" if not suites or set(suites) >= set(SUITES) else "-" + "+".join(suites)
    return results_dir() / f"{environment.device_slug(device)}-{date.isoformat()}{suffix}.json"


def _csv_value(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if key == "shape":
        return "x".join(str(s) for s in value)
    if key == "params":
        return json.dumps(value, sort_keys=True)
    return value


def save_results(document: dict, path: str | Path) -> tuple[Path, Path]:
    """Write the document as JSON at ``path`` and its rows as CSV next to it (same stem)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        path = path.with_suffix(".json")
    csv_path = path.with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROW_KEYS), extrasaction="ignore")
        writer.writeheader()
        for row in document["rows"]:
            writer.writerow({k: _csv_value(k, row.get(k)) for k in ROW_KEYS})
    return path, csv_path


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: Sequence[dict]) -> str:
    """The rows as a plain-text table; skipped providers summarised below it."""
    ran = [r for r in rows if r["skipped_reason"] is None]
    show_tflops = any(r.get("tflops") is not None for r in ran)
    show_gbps = any(r.get("gbps") is not None for r in ran) or not show_tflops
    header = ["op", "shape", "dtype", "layout", "dir", "provider", "median ms", "p20-p80 ms"]
    show_memory = any(r.get("peak_mem_bytes") is not None for r in ran)
    header += ["GB/s"] * show_gbps + ["TFLOP/s"] * show_tflops + ["% ceiling"] + ["peak MiB"] * show_memory + ["speedup"]
    numeric = {"median ms", "p20-p80 ms", "GB/s", "TFLOP/s", "% ceiling", "peak MiB", "speedup"}
    lines = []
    for r in ran:
        cells = [
            r["case"], "x".join(map(str, r["shape"])), r["dtype"], r["layout"],
            {"forward": "fwd", "forward+backward": "fwd+bwd"}.get(r["direction"], r["direction"]),
            r["provider"], _fmt(r["median_ms"], 3), f"{_fmt(r['p20_ms'], 3)}-{_fmt(r['p80_ms'], 3)}",
        ]  # fmt: skip
        if show_gbps:
            cells.append(_fmt(r.get("gbps"), 1))
        if show_tflops:  # CPU rates are a few hundredths of a TFLOP/s: keep three significant digits
            tflops = r.get("tflops")
            cells.append(_fmt(tflops, 1 if tflops is None or tflops >= 10 else 2 if tflops >= 1 else 3))
        cells.append(_fmt(r.get("pct_of_ceiling"), 1))
        if show_memory:
            peak = r.get("peak_mem_bytes")
            cells.append("-" if peak is None else f"{peak / 2**20:.0f}")
        speedup = r.get("speedup_vs_best_baseline")
        cells.append("" if speedup is None else f"{speedup:.2f}x")
        lines.append(cells)
    widths = [max([len(h)] + [len(c[i]) for c in lines]) for i, h in enumerate(header)]

    def render(cells):
        return "  ".join(c.rjust(w) if h in numeric else c.ljust(w) for c, w, h in zip(cells, widths, header)).rstrip()

    out = [render(header), render(["-" * w for w in widths])]
    out += [render(cells) for cells in lines]
    if not ran:
        out.append("(no measurements)")
    skipped: dict[tuple[str, str], int] = {}
    for r in rows:
        if r["skipped_reason"] is not None:
            skipped[(r["provider"], r["skipped_reason"])] = skipped.get((r["provider"], r["skipped_reason"]), 0) + 1
    if skipped:
        out.append("")
        out.append("skipped:")
        for (provider, reason), count in skipped.items():
            out.append(f"  {provider} ({count} case{'s' * (count != 1)}): {reason}")
    return "\n".join(out)
