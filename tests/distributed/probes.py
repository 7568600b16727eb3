"""Small mechanisms that use each cross-stage hook the pipeline must carry across ranks, in its plainest form.

They stand in for the real mechanisms' traffic patterns whatever is registered: a context that travels with
the activation and reads the images (ContSup), a cascade whose loss reaches back `window` stages (MLAAN), and
EMA twins of blocks two stages ahead (MLAAN's leaps), so the equivalence tests cover every kind of traffic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helpers import CIFAR_MEAN, CIFAR_STD
from locallearn.methods import OBJECTIVES, Batch, Carry, LocalLearner, Mechanism, MethodOptions, StageResult
from locallearn.methods.ema import ema_update, frozen_copy
from locallearn.models import build_backbone
from locallearn.split import split_model


class Context(Mechanism):
    """Stage k >= 1 adds 1x1 projections of stage k-1's input and of the images to its input (ContSup R1E)."""

    name = "probe-context"

    def setup(self, learner: LocalLearner) -> None:
        records = learner.net.records
        for k in range(1, learner.num_stages):
            c_in = records[k].in_shape[0]
            learner.own(k, "prev", nn.Conv2d(records[k - 1].in_shape[0], c_in, 1), inference=True)
            learner.own(k, "image", nn.Conv2d(3, c_in, 1), inference=True)

    def carry_out(self, learner: LocalLearner, k: int, h_in: torch.Tensor, carry: Carry) -> Carry:
        return {"prev": h_in}  # (B, C_in(k), H, W): stage k's input, for stage k+1

    def stage_input(self, learner: LocalLearner, k: int, carry: Carry, batch: Batch) -> torch.Tensor | None:
        if k == 0:
            return None
        h, owned = carry["h"], learner.owned[k]
        size = h.shape[-2:]
        return (
            h
            + owned["prev"](F.adaptive_avg_pool2d(carry["prev"], size))
            + owned["image"](F.adaptive_avg_pool2d(batch.x, size))
        )


class Cascade(Mechanism):
    """Stage k's loss adds a CE through stages k-window+1..k, run again from the input of stage k-window+1."""

    name = "probe-cascade"

    def __init__(self, options: MethodOptions, window: int) -> None:
        super().__init__(options)
        self.window = window

    def setup(self, learner: LocalLearner) -> None:
        for k in range(self.window - 1, learner.num_stages - 1):
            learner.own(k, "cascade", nn.Linear(learner.net.records[k].channels, learner.num_classes))

    def carry_out(self, learner: LocalLearner, k: int, h_in: torch.Tensor, carry: Carry) -> Carry:
        # "in{i}": the input of stage k+1-i, i = 1..window-1 (fewer near the start).
        return {"in1": h_in, **{f"in{i + 1}": carry[f"in{i}"] for i in range(1, self.window - 1) if f"in{i}" in carry}}

    def stage_loss(self, learner: LocalLearner, k: int, carry: Carry, batch: Batch, result: StageResult) -> StageResult:
        first = k - self.window + 1
        if first < 0:
            return result
        z = carry[f"in{self.window - 1}"]
        for j in range(first, k + 1):
            z = learner.net.stages[j](z)  # (B, C, H, W), or logits at the last stage
        if k < learner.num_stages - 1:
            z = learner.owned[k]["cascade"](z.mean((2, 3)))
        return StageResult(result.loss + 0.5 * F.cross_entropy(z, batch.y), result.out, result.logits, result.logs)


class Leap(Mechanism):
    """Stage k owns an EMA twin of the first block two stages ahead, updated after its backward."""

    name = "probe-leap"

    def setup(self, learner: LocalLearner) -> None:
        self.sources = {k: learner.net.stages[k + 2][0] for k in range(learner.num_stages - 2)}
        for k, source in self.sources.items():
            learner.own(k, "leap", frozen_copy(source, learner.net.init_weights))

    def after_backward(self, learner: LocalLearner, k: int) -> None:
        if k in self.sources:
            ema_update(learner.owned[k]["leap"], self.sources[k], 0.9)

    def ema_pairs(self, learner: LocalLearner, k: int) -> list[tuple[nn.Module, nn.Module]]:
        return [(learner.owned[k]["leap"], self.sources[k])] if k in self.sources else []


PROBES = {
    "context": lambda options: Context(options),
    "cascade2": lambda options: Cascade(options, 2),
    "cascade3": lambda options: Cascade(options, 3),
    "leap": lambda options: Leap(options),
}


def probe_learner(probe: str, k: int, seed: int = 0, objective: str = "greedy") -> LocalLearner:
    """A resnet8 learner (32x32 inputs) with `objective` and one probe mechanism."""
    torch.manual_seed(seed)
    net = split_model(build_backbone("resnet8", 10), k, "even", arch="resnet8", dataset="cifar10")
    options = MethodOptions()
    return LocalLearner(
        net,
        OBJECTIVES.get(objective)(options),
        [PROBES[probe](options)],
        num_classes=10,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
    )
