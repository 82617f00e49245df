"""Benchmarks: one harness (bigkern.bench.harness) for ``bigkern bench`` and benchmarks/*.py.

A suite is a module, one per op family (bigkern/bench/<family>.py), with

    cases(device: torch.device, dtypes: list[torch.dtype] | None, quick: bool) -> list[Case]
    providers(case: Case, device: torch.device, *, compile: bool) -> list[Provider]

registered by name in ``SUITES`` ("all" on the command line runs every one of them).
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Suite name -> the module that defines it. New families (attention, conv, lstm) plug in here.
SUITES: dict[str, str] = {
    "pool": "bigkern.bench.pool",
    "attention": "bigkern.bench.attention",
    "lstm": "bigkern.bench.lstm",
    "conv": "bigkern.bench.conv",
    "models": "bigkern.bench.models",
}


def load_suite(name: str) -> ModuleType:
    """The suite module registered as ``name``."""
    try:
        module = SUITES[name]
    except KeyError:
        raise ValueError(f"unknown benchmark suite {name!r}; known suites: {', '.join(SUITES)}") from None
    return importlib.import_module(module)


__all__ = ["SUITES", "load_suite"]
