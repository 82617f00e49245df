"""Argument checking shared by the ops: every bad argument gets an error naming the op, the
argument, the value and what was expected, before any kernel runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensor(op: str, name: str, x, ranks: Sequence[int]) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bigkern.ops.{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ranks:
        expected = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"bigkern.ops.{op}: {name} must be {expected}, got {x.dim()}-D of shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"bigkern.ops.{op}: {name} has dtype {x.dtype}; expected one of float32, float16, bfloat16, float64"
        )


def pair(op: str, name: str, value, *, allow_none: bool = False) -> list:
    """An int or a sequence of one or two ints as a list of two (None kept where allowed)."""
    items = [value] if isinstance(value, int) or value is None else list(value) if isinstance(value, Sequence) else None
    if items is None or len(items) not in (1, 2):
        raise TypeError(f"bigkern.ops.{op}: {name} must be an int or a tuple of 1 or 2 ints, got {value!r}")
    for item in items:
        if (item is None and not allow_none) or (item is not None and (not isinstance(item, int) or isinstance(item, bool))):
            raise TypeError(f"bigkern.ops.{op}: {name} must be an int or a tuple of 1 or 2 ints, got {value!r}")
    return items * 2 if len(items) == 1 else items


def check_positive(op: str, name: str, values: list) -> None:
    if any(v <= 0 for v in values):
        raise ValueError(f"bigkern.ops.{op}: {name} must be positive, got {tuple(values)}")


def check_non_negative(op: str, name: str, values: list) -> None:
    if any(v < 0 for v in values):
        raise ValueError(f"bigkern.ops.{op}: {name} must be non-negative, got {tuple(values)}")
