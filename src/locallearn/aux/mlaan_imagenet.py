"""The independent-stream head of the released MLAAN ResNet-34 ImageNet code (`aux_net: mlaan-imagenet`).

Narrow features (C < 256: layers 1 and 2 of ResNet-34) pass conv1x1 C->2C-BN-ReLU and conv1x1 2C->C-BN-ReLU
before GAP + FC; wider ones go straight to GAP + FC. (B, C, H, W) -> (B, out_dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import conv_bn_relu

DIRECT_FROM = 256  # features at least this wide get GAP + FC alone


class MLAANImageNetHead(nn.Module):
    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        if channels < DIRECT_FROM:
            wide = 2 * channels
            self.convs = nn.Sequential(conv_bn_relu(channels, wide, k=1), conv_bn_relu(wide, channels, k=1))
        else:
            self.convs = nn.Sequential()
        self.fc = nn.Linear(channels, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(self.convs(h), 1)  # (B, C, 1, 1)
        return self.fc(torch.flatten(h, 1))
