"""A backbone without batch normalisation, for `--arch plain_net:build`.

Batch norm in training mode normalises each data-parallel replica's share of the batch by that share's own
statistics, so only a network without it makes the same update on two replicas as on one process.
"""

from __future__ import annotations

from torch import nn


def build(num_classes: int) -> nn.Sequential:
    """Units: three conv-ReLU blocks (32 -> 16 -> 8 pixels), then the classifier head."""

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU())

    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
    return nn.Sequential(block(3, 8, 1), block(8, 16, 2), block(16, 16, 2), head)
