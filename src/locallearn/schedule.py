"""Learning-rate schedules, as a function of the 0-based epoch."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "paper-cos", "step", "const")
# Names a config may still carry from before the rename; they are refused with the new name, never reinterpreted.
RENAMED = {"cos": "paper-cos", "cos0": "cosine"}


def lr_at(
    epoch: int,
    epochs: int,
    lr0: float,
    schedule: str = "cosine",
    warmup_epochs: int = 10,
    milestones: list[float] | tuple[float, ...] = (0.5, 0.75),
) -> float:
    """LR of 0-based `epoch` out of `epochs`.

    cosine: 0.5*lr0*(1+cos(pi*epoch/E)) on the 0-based epoch, so the first epoch runs at lr0 (the papers'
    ImageNet rule, and the default: the LR a user asks for is the LR the run starts at).
    paper-cos: the InfoPro-family CIFAR rule with e = epoch + 1: 0.5*lr0*(1+cos(pi*e/E)), and for
    e <= warmup_epochs a linear blend from 0.01 into that curve: cos_part*(e-1)/W + 0.01*(W+1-e)/W. Its first
    epoch runs at 0.01 whatever lr0 is, so only the reproduction recipes (160 epochs) set it.
    step: lr0 * 0.1^(number of milestones passed), milestones given as fractions of `epochs`.
    """
    if schedule == "const":
        return lr0
    if schedule == "cosine":
        return 0.5 * lr0 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        passed = sum(epoch >= round(m * epochs) for m in milestones)
        return lr0 * 0.1**passed
    if schedule != "paper-cos":
        raise ValueError(f"unknown schedule {schedule!r}; one of {', '.join(SCHEDULES)}")
    e = epoch + 1
    cosine = 0.5 * lr0 * (1 + math.cos(math.pi * e / epochs))
    if e <= warmup_epochs:
        w = warmup_epochs
        return cosine * (e - 1) / w + 0.01 * (w + 1 - e) / w
    return cosine
