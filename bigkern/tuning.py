"""``bigkern tune``: measure bigkern's GPU backends on this GPU and remember the faster one.

For CUDA tensors, backend ``auto`` tries the backends of ``backend_table.json`` in order (the CUDA
C++ kernels first until a GPU run says otherwise). ``bigkern tune OP`` times the op's benchmark
cases (bigkern/bench/) with the ``cuda`` and ``triton`` backends on the current GPU and stores
the order it measured (the geometric mean of their time ratios over the cases) in a per-device
cache that ``auto`` reads before the packaged table. The cache is a JSON file under the user's
cache directory (``$BIGKERN_CACHE_DIR``, else ``$XDG_CACHE_HOME/bigkern``, else
``~/.cache/bigkern``), keyed by GPU name and the torch, Triton and bigkern versions, so an
upgrade invalidates it; ``--show`` prints it and ``--clear`` deletes it.

The Triton kernels' own configurations: timing the ``triton`` backend runs Triton's autotuner on
each shape, and bigkern's autotuners keep their winners in Triton's on-disk cache
(bigkern/triton/autotune.py), which later processes read; ``--clear`` does not delete those
(``TRITON_CACHE_DIR``). The CUDA kernels have one tile shape per kernel: no variant to choose.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import torch

import bigkern

#: op -> the benchmark suite holding its cases
SUITE_OF = {"attention": "attention", "conv2d": "conv", "lstm": "lstm", "gru": "lstm", "max_pool2d": "pool",
            "avg_pool2d": "pool", "adaptive_avg_pool2d": "pool", "adaptive_max_pool2d": "pool"}  # fmt: skip


def cache_path() -> Path:
    root = os.environ.get("BIGKERN_CACHE_DIR")
    if root:
        return Path(root) / "tune.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bigkern" / "tune.json"


def device_key(gpu_name: str) -> str:
    from bigkern.bench.environment import triton_version

    return f"{gpu_name} | torch {torch.__version__} | triton {triton_version()} | bigkern {bigkern.__version__}"


def load() -> dict:
    path = cache_path()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # a damaged cache is ignored (and replaced by the next tune)


@lru_cache(maxsize=None)
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def tuned_preference(op: str, device: torch.device) -> list[str] | None:
    """The backend order ``bigkern tune`` measured for ``op`` on this GPU, or None."""
    entry = _cache_for_process().get(device_key(_device_name(device.index or 0)), {}).get(op)
    return list(entry["preference"]) if entry else None


@lru_cache(maxsize=1)
def _cache_for_process() -> dict:
    """Read once per process (auto consults it on every CUDA call); ``store`` refreshes it."""
    return load()


def store(gpu_name: str, op: str, preference: list[str], measurements: list[dict]) -> Path:
    cache = load()
    cache.setdefault(device_key(gpu_name), {})[op] = {"preference": preference, "measurements": measurements}
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cache, indent=2))
    _cache_for_process.cache_clear()
    return path


def clear() -> bool:
    path = cache_path()
    existed = path.is_file()
    if existed:
        path.unlink()
    _cache_for_process.cache_clear()
    return existed


def preference_from_rows(rows: list[dict]) -> tuple[list[str], float | None]:
    """(backend order, geometric-mean time ratio cuda / triton) over the cases both ran."""
    times: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("median_ms") and r["provider"] in ("bigkern-cuda", "bigkern-triton"):
            key = json.dumps([r["case"], r["shape"], r["dtype"], r["layout"], r["direction"]])
            times.setdefault(key, {})[r["provider"]] = r["median_ms"]
    ratios = [t["bigkern-cuda"] / t["bigkern-triton"] for t in times.values() if len(t) == 2]
    if not ratios:
        ran = {p for t in times.values() for p in t}
        return (["cuda", "triton"] if "bigkern-cuda" in ran or not ran else ["triton", "cuda"]), None
    ratio = math.exp(sum(map(math.log, ratios)) / len(ratios))
    return (["cuda", "triton"] if ratio <= 1.0 else ["triton", "cuda"]), ratio


def tune(op: str, device: torch.device, quick: bool = False, out=print) -> list[str]:
    """Time ``op``'s benchmark cases with both GPU backends; store and return the order."""
    from bigkern.bench import harness

    document = harness.run_benchmark([SUITE_OF[op]], device=device, quick=quick, compile=False, filters=[op],
                                     provider_names=["bigkern-cuda", "bigkern-triton"], progress=True,
                                     command=f"bigkern tune {op}")  # fmt: skip
    out(harness.format_table(document["rows"]))
    preference, ratio = preference_from_rows(document["rows"])
    gpu = torch.cuda.get_device_name(device)
    measurements = [{k: r[k] for k in ("case", "shape", "dtype", "layout", "direction", "provider", "median_ms")}
                    for r in document["rows"] if r.get("median_ms")]  # fmt: skip
    path = store(gpu, op, preference, measurements)
    detail = f"cuda / triton time {ratio:.2f}x (geometric mean)" if ratio else "only one backend ran"
    out(f"{op} on {gpu}: auto now tries {' then '.join(preference)} ({detail}); stored in {path}")
    return preference
