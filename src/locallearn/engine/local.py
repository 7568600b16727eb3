"""The local engine: every stage in sequence in this process, one stage's graph alive at a time.

It is the engine of `engine/step.py` with the one-process transport, the single-position case of the
pipeline; under torchrun without `--engine pipeline` each process runs it as one data-parallel replica.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..methods import LocalLearner
from .step import Accuracy, Engine

LocalEngine = Engine  # `LocalEngine(learner, optimizers, amp=..., scaler=...)`: the default transport owns every stage


def evaluate(learner: LocalLearner, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], amp: str = "none") -> Accuracy:
    """(final accuracy, per-stage aux accuracy (None without a classifier), mean final CE) on `loader`."""
    return Engine(learner, [], amp=amp).evaluate(loader, None)
