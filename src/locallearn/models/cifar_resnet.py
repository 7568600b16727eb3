"""CIFAR-style ResNets (He et al. 2016) as used by every local-learning paper on CIFAR/SVHN/STL-10.

Stem conv3x3(3->16) + BN + ReLU, three layers of BasicBlocks with widths 16/32/64 (layers 2 and 3 halve
the resolution in their first block, shortcut conv1x1 + BN), then GAP + FC. Conv weights ~ N(0, 2/n) with
n = k*k*out_channels, BN weight 1 / bias 0, linear layers keep PyTorch's default init.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Backbone, ClassifierHead
from .registry import MODELS


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU. (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Stem(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def init_cifar_resnet(module: nn.Module) -> None:
    """The InfoPro/ContSup/MAN initialisation: conv ~ N(0, sqrt(2/(k*k*out))), BN = (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()


class CifarResNet(Backbone):
    """Units: stem (0,0), then block b of layer s as (s, b) for s = 1..3, then the GAP+FC head."""

    def __init__(self, blocks_per_layer: int, num_classes: int = 10, in_channels: int = 3) -> None:
        widths = (16, 32, 64)
        units: list[nn.Module] = [Stem(in_channels, widths[0])]
        names, coords = ["stem"], [(0, 0)]
        cin = widths[0]
        for s, width in enumerate(widths, start=1):
            for b in range(blocks_per_layer):
                stride = 2 if (s > 1 and b == 0) else 1
                units.append(BasicBlock(cin, width, stride))
                names.append(f"layer{s}.{b}")
                coords.append((s, b))
                cin = width
        units.append(ClassifierHead(cin, num_classes))
        names.append("head")
        coords.append(None)
        super().__init__(units, names, coords)
        init_cifar_resnet(self)

    init_weights = staticmethod(init_cifar_resnet)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 for 32x32 inputs: [5, 5, 5] BasicBlocks, 0.46 M parameters."""
    return CifarResNet(5, num_classes)


@MODELS.register("resnet110")
def resnet110(num_classes: int = 10) -> CifarResNet:
    """ResNet-110 for 32x32 inputs: [18, 18, 18] BasicBlocks, 1.7 M parameters."""
    return CifarResNet(18, num_classes)


@MODELS.register("resnet8")
def resnet8(num_classes: int = 10) -> CifarResNet:
    """A [1, 1, 1] CIFAR ResNet: the smallest member, used by fast tests and examples."""
    return CifarResNet(1, num_classes)
