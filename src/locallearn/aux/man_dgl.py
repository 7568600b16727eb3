"""The DGL head of the released MAN/MAN++ CIFAR code (`dgl+man`, `dgl+man++`), an MLP-SR-style classifier.

(B, C, H, W) -> pool to 8x8 -> three conv1x1-BN-ReLU to D -> GAP -> three Linear(4D)-BN1d-ReLU -> Linear(classes),
with D = 128 in every released run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import conv_bn_relu

POOL = 8  # spatial size the input is average-pooled to before the 1x1 convs


class MANDGLHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128, layers: int = 3) -> None:
        super().__init__()
        convs, cin = [], channels
        for _ in range(layers):
            convs.append(conv_bn_relu(cin, feature_dim, k=1))
            cin = feature_dim
        self.convs = nn.Sequential(*convs)
        width = 4 * feature_dim
        mlp: list[nn.Module] = []
        cin = feature_dim
        for _ in range(layers):
            mlp += [nn.Linear(cin, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            cin = width
        mlp.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*mlp)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.convs(F.adaptive_avg_pool2d(h, POOL))  # (B, D, 8, 8)
        return self.mlp(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))  # (B, D) -> (B, classes)
