"""What a benchmark ran on: software versions, the source tree's commit, the CPU and GPU.

Every results file carries this record, so that numbers from different machines and
different builds can be told apart (and compared only where that makes sense).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

import bigkern
from bigkern import _library


def _run(cmd: list[str], cwd: str | None = None, timeout: float = 10.0) -> str | None:
    """The stripped stdout of ``cmd``, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_root() -> Path:
    """The directory holding the ``bigkern`` package (the repository root in a source checkout)."""
    return Path(bigkern.__file__).resolve().parent.parent


def git_commit() -> str | None:
    """The commit of the source tree bigkern was imported from, or None outside a git checkout."""
    root = source_root()
    if shutil.which("git") is None:
        return None
    commit = _run(["git", "rev-parse", "HEAD"], cwd=str(root))
    if not commit:
        return None
    # Only trust it when the package really lies in that work tree (not a site-packages below some repo).
    top = _run(["git", "rev-parse", "--show-toplevel"], cwd=str(root))
    if top is None or Path(top).resolve() != root:
        return None
    return commit


def git_dirty() -> bool | None:
    """Whether tracked files of the source tree differ from its commit (None outside a checkout)."""
    if git_commit() is None:
        return None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=str(source_root()))
    return None if status is None else bool(status)


def cpu_model() -> str:
    """The CPU's model name ('model name' in /proc/cpuinfo, else platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def triton_version() -> str | None:
    if not _library.HAS_TRITON:
        return None
    try:
        import triton

        return str(triton.__version__)
    except Exception:  # a broken triton install should not break the benchmark
        return None


def nvidia_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi, or None when nvidia-smi is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    out = _run([smi, "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def cpu_isa() -> str | None:
    try:
        return str(bigkern._C.cpu_isa())
    except Exception:
        return None


def cpu_amx() -> bool | None:
    """Whether float32 convolutions run on the AMX tiles (None when the extension cannot say)."""
    try:
        return bool(bigkern._C.cpu_amx())
    except Exception:
        return None


def extension_file() -> dict:
    """Which build of bigkern._C was loaded: its file name, modification time and a short SHA-256
    (the git commit alone does not say whether the extension was rebuilt since)."""
    path = getattr(bigkern._C, "__file__", None)
    if not path:
        return {"file": None, "mtime": None, "sha256_16": None}
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path)).astimezone().isoformat(timespec="seconds")
    except OSError:
        return {"file": os.path.basename(path), "mtime": None, "sha256_16": None}
    return {"file": os.path.basename(path), "mtime": mtime, "sha256_16": digest.hexdigest()[:16]}


def gpus() -> list[dict]:
    """Name, compute capability, memory and L2 size of each visible CUDA device."""
    if not torch.cuda.is_available():
        return []
    result = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        result.append({
            "index": i,
            "name": p.name,
            "capability": f"{p.major}.{p.minor}",
            "memory_bytes": int(p.total_memory),
            "multiprocessors": int(p.multi_processor_count),
            "l2_cache_bytes": int(getattr(p, "L2_cache_size", 0)) or None,
        })  # fmt: skip
    return result


def collect(device: str | torch.device | None = None) -> dict:
    """The environment record of a results file. ``device`` names the device benchmarked."""
    device = torch.device(device) if device is not None else None
    gpu_list = gpus()
    gpu = None
    if device is not None and device.type == "cuda" and gpu_list:
        gpu = gpu_list[device.index or 0]
    elif gpu_list:
        gpu = gpu_list[0]
    return {
        "bigkern": bigkern.__version__,
        "bigkern_git_commit": git_commit(),
        "bigkern_git_dirty": git_dirty(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": triton_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "gpu_name": gpu["name"] if gpu else None,
        "gpu_capability": gpu["capability"] if gpu else None,
        "gpus": gpu_list,
        "nvidia_driver": nvidia_driver(),
        "bigkern_C": {
            "with_cuda_kernels": _library.WITH_CUDA_KERNELS,
            "cuda_archs": list(_library.CUDA_ARCHS),
            "cpu_isa": cpu_isa(),
            "cpu_amx": cpu_amx(),
            **extension_file(),
        },
        "bigkern_backend": bigkern.current_backend(),
        "triton_interpret": _library.TRITON_INTERPRET,
        "device": str(device) if device is not None else None,
        "load_average": load_average(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }


#: Environment variables that change how kernels run or are timed (recorded when set).
ENV_VARS = (
    "BIGKERN_BACKEND", "TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "TORCHINDUCTOR_MAX_AUTOTUNE", "PYTORCH_CUDA_ALLOC_CONF",
)  # fmt: skip


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine makes timings noisy)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def slug(text: str) -> str:
    """Lowercase, every run of non-alphanumerics replaced by one '-', no leading/trailing '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_slug(device: str | torch.device) -> str:
    """'cpu-amd-epyc' for a CPU, 'nvidia-h100-80gb-hbm3' for a GPU: the stem of a results file."""
    device = torch.device(device)
    if device.type == "cuda":
        return slug(torch.cuda.get_device_name(device)) or "cuda"
    return slug(f"cpu {cpu_model()}") or "cpu"
