"""Fusing a model's own Conv2d -> activation pairs at construction."""

from __future__ import annotations

import torch


def fuse_convolutions(model: torch.nn.Module) -> None:
    """Run ``bigkern.swap`` on a freshly built model, whose layers already are bigkern's: it swaps
    nothing and fuses each Conv2d -> ReLU pair into one kernel (state_dict unchanged)."""
    from bigkern.swap import swap

    swap(model)
