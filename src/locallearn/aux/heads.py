"""Auxiliary networks that turn a boundary feature (B, C, H, W) into a local prediction.

`AuxClassifier` is the InfoPro-family conv/MLP head (`0c1f` ... `2c2f`), `MLPSRHead` is DGL's MLP-SR-aux
(Belilovsky et al. 2020) and `Decoder` is InfoPro's reconstruction head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .upsample import UpsampleConv2d

HEAD_CONFIGS = ("0c1f", "0c2f", "1c1f", "1c2f", "1c3f", "2c2f")


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def widened_conv(channels: int) -> tuple[int, int]:
    """(C', stride) of the aux conv: the papers use 16->32/s2, 32->64/s2, 64->64/s1; wider nets keep C."""
    return (2 * channels, 2) if channels < 64 else (channels, 1)


class AuxClassifier(nn.Module):
    """`<n>c<m>f` head: n conv3x3-BN-ReLU layers, GAP, m linear layers. (B, C, H, W) -> (B, out_dim).

    out_dim is the number of classes (softmax variant) or the embedding size D (contrast variant).
    """

    def __init__(self, channels: int, config: str, out_dim: int, feature_dim: int = 128, widen: int = 1):
        super().__init__()
        if config not in HEAD_CONFIGS:
            raise ValueError(f"unknown aux head '{config}'; choose one of {', '.join(HEAD_CONFIGS)}")
        n_conv, n_fc = int(config[0]), int(config[2])
        wide, stride = widened_conv(channels)
        wide *= widen
        convs: list[nn.Module] = []
        cin = channels
        for i in range(n_conv):
            convs.append(conv_bn_relu(cin, wide, stride=stride if i == 0 else 1))
            cin = wide
        self.convs = nn.Sequential(*convs)
        dim = feature_dim * widen
        fcs: list[nn.Module] = []
        for _ in range(n_fc - 1):
            fcs += [nn.Linear(cin, dim), nn.ReLU(inplace=True)]
            cin = dim
        fcs.append(nn.Linear(cin, out_dim))
        self.fcs = nn.Sequential(*fcs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.convs(h)
        return self.fcs(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class MLPSRHead(nn.Module):
    """DGL's MLP-SR-aux: pool to ceil(S/4)^2, n_lin x conv1x1-BN-ReLU, pool to 2x2, MLP on 4C features."""

    def __init__(self, channels: int, spatial: int, num_classes: int, n_lin: int = 3, mlp_layers: int = 3):
        super().__init__()
        self.pool_size = math.ceil(spatial / 4)
        self.convs = nn.Sequential(*[conv_bn_relu(channels, channels, k=1) for _ in range(n_lin)])
        width = 4 * channels
        layers: list[nn.Module] = []
        for _ in range(mlp_layers):
            layers += [nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(h, self.pool_size)
        h = F.adaptive_avg_pool2d(self.convs(h), 2)  # (B, C, 2, 2)
        return self.mlp(torch.flatten(h, 1))  # (B, 4C) -> (B, classes)


class Decoder(nn.Module):
    """InfoPro decoder: bilinear upsample to the image size, conv3x3-BN-ReLU, conv3x3 -> (B, 3, H, W) logits.

    The image is their sigmoid; the reconstruction loss reads the logits (`losses.reconstruction_loss`).
    """

    def __init__(self, channels: int, image_size: tuple[int, int], widen: int = 1, out_channels: int = 3):
        super().__init__()
        self.image_size = tuple(image_size)
        width = 12 * widen
        self.body = nn.Sequential(
            # conv3x3(upsample(h)) run at h's resolution: the upsampled C-channel map is never made.
            nn.Sequential(UpsampleConv2d(channels, width, self.image_size), nn.BatchNorm2d(width), nn.ReLU(True)),
            nn.Conv2d(width, out_channels, 3, padding=1, bias=True),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        conv, bn, relu = self.body[0]
        # Channels-last from here on: CPU convolutions with 12 inputs and 3 outputs run twice as fast on it.
        a = relu(bn(conv(h).contiguous(memory_format=torch.channels_last)))  # (B, 12w, H, W)
        return self.body[1](a)  # (B, 3, H, W)
