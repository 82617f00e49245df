"""Convolutional image classifiers: MNISTConvNet, LeNet5, CIFARConvNet.

Each is built from bigkern.nn layers (Conv2d, MaxPool2d) with torch.nn's Linear, ReLU, Flatten and
Dropout, and its Conv2d -> ReLU pairs are fused at construction (one kernel each, see
bigkern/fusion.py), which changes no parameter or state_dict key: ``bigkern.models.to_torch``
gives the same network in plain torch.nn, and state_dicts load either way.
"""

from __future__ import annotations

import torch
from torch import nn

import bigkern.nn as bnn
from bigkern.models._fuse import fuse_convolutions


def _conv_block(in_channels: int, out_channels: int, pool: bool) -> list[nn.Module]:
    layers = [bnn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
    return layers + ([bnn.MaxPool2d(2)] if pool else [])


class MNISTConvNet(nn.Module):
    """conv 32 -> 64 (3x3, padding 1, each followed by ReLU and 2x2 max pooling), dense 128 -> classes.

    third_conv: the deeper variant: a third 64-channel conv (no pooling after it) and a 64-unit
    dense layer in place of the 128-unit one.
    Input (N, in_channels, image_size, image_size); image_size must be divisible by 4.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 third_conv: bool = False, dropout: float = 0.25) -> None:  # fmt: skip
        super().__init__()
        if image_size % 4:
            raise ValueError(f"MNISTConvNet: image_size={image_size} must be divisible by 4 (two 2x2 poolings)")
        layers = _conv_block(in_channels, 32, pool=True) + _conv_block(32, 64, pool=True)
        if third_conv:
            layers += _conv_block(64, 64, pool=False)
        hidden = 64 if third_conv else 128
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * (image_size // 4) ** 2, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes),
        )  # fmt: skip
        fuse_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling: conv 6 (5x5, padding 2 so 28x28 inputs keep their size),
    pool, conv 16 (5x5), pool, dense 120 -> 84 -> classes. Input (N, in_channels, 28, 28)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            bnn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), bnn.MaxPool2d(2),
            bnn.Conv2d(6, 16, 5), nn.ReLU(), bnn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )  # fmt: skip
        fuse_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CIFARConvNet(nn.Module):
    """A 32x32 RGB classifier: two blocks of (conv 3x3 + ReLU) x 2 and 2x2 max pooling, with 32 then
    64 channels, then dense 128 -> classes. Input (N, 3, 32, 32)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(in_channels, 32, pool=False), *_conv_block(32, 32, pool=True),
            *_conv_block(32, 64, pool=False), *_conv_block(64, 64, pool=True),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )  # fmt: skip
        fuse_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
