"""MAN (Su et al., ECCV 2024) and MAN++ (TPAMI 2026): momentum auxiliary networks.

Stage k's aux net first runs the *next* stage's first block twice — a trainable copy (LB) and an EMA twin
that tracks the real block — and fuses them, then applies the objective's own heads to the result:

    MAN:   a = LB(h_k) + EMA(h_k)
    MAN++: a = s * LB(h_k) + (2 - s) * EMA(h_k),  s a learnable scalar initialised to 1

so the local loss sees (a moving average of) the parameters of the module that comes next. The EMA is
theta_EMA <- m * theta_EMA + (1 - m) * theta_next over parameters only, m = 0.995 by default (never the
released scripts' frozen 1.0 default), applied after stage k's backward and before any optimizer step (the
released order) or, with `ema_timing: after_step`, right after the next stage's optimizer step.
MAN++ also trains the stem as a module of its own (the split gains a [0, 0] boundary when it has none).

Aux heads: without method_options.aux_net, infopro uses `2c2f` and dgl MAN's own DGL head (`man-dgl`), as the
released CIFAR runs do. `legacy_manpp_stem_head` builds MAN++'s stem-module head as the release does whatever
the run's settings: `1c2f` with D = 128 and SupCon (its constructor defaults), also in cross-entropy runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .base import AuxContext, AuxLoss, Mechanism
from .ema import EmaOptions, ema_update, frozen_copy, reinitialised
from .infopro import InfoPro
from .learner import LocalLearner
from .registry import MECHANISMS

EMA_TIMINGS = ("after_backward", "after_step")


@dataclass
class ManOptions:
    ema_timing: str = "after_backward"
    """When MAN/MAN++ twins are updated: after_backward (of the local loss, before any step; the released order)
    or after_step (after the source block's optimizer step; the papers' description)."""
    man_copy_init: bool = False
    """Start MAN's trainable copy and EMA twin as exact copies of the next block (released: fresh random init)."""

    def __post_init__(self) -> None:
        if self.ema_timing not in EMA_TIMINGS:
            raise ConfigError(
                f"method_options.ema_timing must be one of {', '.join(EMA_TIMINGS)}, not '{self.ema_timing}'"
            )


@dataclass
class ManPlusPlusOptions:
    manpp_stem_module: bool = True
    """MAN++ trains the stem as a module of its own (CIFAR code); false keeps the split as given (ImageNet code)."""
    legacy_manpp_stem_head: bool = False
    """Build MAN++'s stem-module aux head as the released code does whatever the run's settings: 1c2f, D = 128,
    supervised contrastive loss (infopro only); otherwise it is built like every other module's."""


class MomentumBranch(nn.Module):
    """Fuse a trainable copy and an EMA twin of one block: (B, C, H, W) -> the block's output shape."""

    def __init__(self, trainable: nn.Module, twin: nn.Module, learnable_scale: bool) -> None:
        super().__init__()
        self.trainable = trainable
        self.twin = twin  # parameters stored as buffers: never optimised, saved in checkpoints
        self.scale = nn.Parameter(torch.ones(())) if learnable_scale else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            return self.trainable(h) + self.twin(h)
        return self.scale * self.trainable(h) + (2 - self.scale) * self.twin(h)


@MECHANISMS.register("man")
class MAN(Mechanism):
    name = "man"
    learnable_scale = False
    incompatible = ("man++", "mlaan")
    options_types: tuple[type, ...] = (EmaOptions, ManOptions)

    def __init__(self, options, arg: str | None = None) -> None:
        super().__init__(options, arg)
        if arg is not None:
            raise ConfigError(f"'{self.name}' takes no argument (got '{self.name}:{arg}')")
        self.sources: list[nn.Module] = []

    @classmethod
    def default_aux_net(cls, objective: str) -> str | None:
        return {"infopro": "2c2f", "dgl": "man-dgl"}.get(objective)

    def setup(self, learner: LocalLearner) -> None:
        net = learner.net
        # Released MAN builds LB and EMA before its init loop: same init rule, fresh draws. Option: start as copies.
        init = None if self.options.man_copy_init else net.init_weights
        for k in range(net.num_stages - 1):
            source = net.stages[k + 1][0]  # the first unit of the next stage
            branch = MomentumBranch(reinitialised(source, init), frozen_copy(source, init), self.learnable_scale)
            learner.own(k, "momentum", branch)
            self.sources.append(source)

    def aux_feature_shape(self, learner: LocalLearner, k: int) -> tuple[int, ...]:
        first = learner.net.records[k + 1].first_unit
        return tuple(learner.net.unit_costs[first].out_shape)

    def aux_feature(self, learner: LocalLearner, k: int, h: torch.Tensor) -> torch.Tensor:
        return learner.owned[k]["momentum"](h)

    def _update(self, learner: LocalLearner, k: int) -> None:
        ema_update(learner.owned[k]["momentum"].twin, self.sources[k], self.options.ema_momentum)

    def after_backward(self, learner: LocalLearner, k: int) -> None:
        if self.options.ema_timing == "after_backward" and k < learner.num_stages - 1:
            self._update(learner, k)

    def after_step(self, learner: LocalLearner, j: int) -> None:
        if self.options.ema_timing == "after_step" and j >= 1:
            self._update(learner, j - 1)  # stage j just stepped: its first block feeds twin j-1

    def ema_after_step(self) -> bool:
        return self.options.ema_timing == "after_step"

    def ema_pairs(self, learner: LocalLearner, k: int) -> list[tuple[nn.Module, nn.Module]]:
        if k >= learner.num_stages - 1:
            return []
        return [(learner.owned[k]["momentum"].twin, self.sources[k])]


@MECHANISMS.register("man++")
class MANPlusPlus(MAN):
    name = "man++"
    learnable_scale = True
    incompatible = ("man", "mlaan")
    options_types = (EmaOptions, ManOptions, ManPlusPlusOptions)

    @classmethod
    def stem_module(cls, options) -> bool:
        # The split gains a stem-only module when it has none; MAN++'s ImageNet code trains none.
        return options.manpp_stem_module

    def build_aux(self, learner: LocalLearner, ctx: AuxContext) -> AuxLoss | None:
        legacy_stem = self.options.legacy_manpp_stem_head and ctx.stem_is_module and ctx.k == 0
        if not (legacy_stem and isinstance(learner.objective, InfoPro)):
            return None
        released = dataclasses.replace(self.options, aux_net="1c2f", aux_feature_dim=128, aux_widen=1)
        return InfoPro(released, "contrast").build_aux(ctx)
