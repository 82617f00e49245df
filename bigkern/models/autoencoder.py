"""Autoencoders: an MLP one (Autoencoder) and a convolutional one (ConvAutoencoder, conv + max
pooling down, nearest upsampling + conv up), both ending in a sigmoid so outputs lie in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

import bigkern.nn as bnn
from bigkern.models._fuse import fuse_convolutions


class Autoencoder(nn.Module):
    """in_features -> hidden... -> latent -> ...hidden -> in_features, ReLU between layers.
    Input (N, ...) flattened to (N, in_features); the output has the input's shape."""

    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (256, 64), latent: int = 16) -> None:
        super().__init__()
        sizes = [in_features, *hidden, latent]
        self.encoder = nn.Sequential(*self._mlp(sizes))
        self.decoder = nn.Sequential(*self._mlp(sizes[::-1])[:-1], nn.Sigmoid())

    @staticmethod
    def _mlp(sizes: list[int]) -> list[nn.Module]:
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x.flatten(1))).view_as(x)


class ConvAutoencoder(nn.Module):
    """(N, C, H, W) with H, W divisible by 4: conv 16 + pool, conv 8 + pool (the code, 8 x H/4 x
    W/4), then two (upsample x2, conv + ReLU) stages and a conv back to C channels + sigmoid."""

    def __init__(self, in_channels: int = 1, channels: tuple[int, int] = (16, 8)) -> None:
        super().__init__()
        c1, c2 = channels
        self.encoder = nn.Sequential(
            bnn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), bnn.MaxPool2d(2),
            bnn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), bnn.MaxPool2d(2),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), bnn.Conv2d(c2, c1, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), bnn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(),
            bnn.Conv2d(c1, in_channels, 3, padding=1), nn.Sigmoid(),
        )  # fmt: skip
        fuse_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"ConvAutoencoder: input height and width must be divisible by 4, got {tuple(x.shape[-2:])}")
        return self.decoder(self.encoder(x))
