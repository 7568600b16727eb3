"""Per-stage training statistics summed on the device over a span of steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class StepStats:
    """Per-stage sums over the steps since the last `reset`, kept on the device (no host sync per step)."""

    loss: torch.Tensor  # (K,)
    correct: torch.Tensor  # (K,) correct aux/final predictions (stages without a classifier stay 0)
    has_logits: list[bool]
    seen: int = 0
    steps: int = 0

    def __add__(self, other: StepStats) -> StepStats:
        """The sums over both spans of steps (an epoch's steps before and after a mid-epoch resume)."""
        return StepStats(
            loss=self.loss + other.loss.to(self.loss.device),
            correct=self.correct + other.correct.to(self.correct.device),
            has_logits=[a or b for a, b in zip(self.has_logits, other.has_logits, strict=True)],
            seen=self.seen + other.seen,
            steps=self.steps + other.steps,
        )

    def to(self, device: torch.device) -> StepStats:
        return StepStats(self.loss.to(device), self.correct.to(device), list(self.has_logits), self.seen, self.steps)

    def as_dict(self) -> dict[str, Any]:
        """Tensors and plain data, as a checkpoint stores them (checkpoints are read with weights_only=True)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # the tensors are not copied

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepStats:
        return cls(**data)
