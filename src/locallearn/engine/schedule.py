"""Learning-rate schedules of the papers, as a function of the 0-based epoch."""

from __future__ import annotations

import math


def lr_at(
    epoch: int,
    epochs: int,
    lr0: float,
    schedule: str = "cos",
    warmup_epochs: int = 10,
    milestones: list[float] | tuple[float, ...] = (0.5, 0.75),
) -> float:
    """LR of 0-based `epoch` out of `epochs`.

    cos: the InfoPro-family rule with e = epoch + 1: 0.5*lr0*(1+cos(pi*e/E)), and for e <= warmup_epochs a
    linear blend from 0.01 into that curve: cos_part*(e-1)/W + 0.01*(W+1-e)/W.
    cos0: the ImageNet rule (InfoPro/MAN/MLAAN imagenet_DDP.py) on the 0-based epoch, no blend:
    0.5*lr0*(1+cos(pi*epoch/E)), so the first epoch runs at lr0.
    step: lr0 * 0.1^(number of milestones passed), milestones given as fractions of `epochs`.
    """
    if schedule == "const":
        return lr0
    if schedule == "cos0":
        return 0.5 * lr0 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        passed = sum(epoch >= round(m * epochs) for m in milestones)
        return lr0 * 0.1**passed
    e = epoch + 1
    cosine = 0.5 * lr0 * (1 + math.cos(math.pi * e / epochs))
    if e <= warmup_epochs:
        w = warmup_epochs
        return cosine * (e - 1) / w + 0.01 * (w + 1 - e) / w
    return cosine
