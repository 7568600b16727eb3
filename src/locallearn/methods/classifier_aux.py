"""The aux loss shared by every objective whose local loss is cross-entropy on a classifier head."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import cross_entropy
from .base import AuxLoss, AuxOutput, Batch


class ClassifierAux(AuxLoss):
    """CE of `head(feature)` against the labels, scaled by `weight`."""

    def __init__(self, head: nn.Module, weight: float = 1.0) -> None:
        super().__init__()
        self.head = head
        self.weight = weight

    def forward(self, feature: torch.Tensor, batch: Batch) -> AuxOutput:
        logits = self.head(feature)
        ce = cross_entropy(logits, batch.y)
        return AuxOutput(loss=self.weight * ce, logits=logits, logs={"ce": ce.detach()})

    def predict(self, feature: torch.Tensor) -> torch.Tensor:
        return self.head(feature)
