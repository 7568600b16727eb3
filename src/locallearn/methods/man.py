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

On token features (ViTs) the released ViT code's aux net is the default: LB and the EMA twin copy the next
stage's first transformer block, a trainable copy of its second block follows the fusion, then the objective's
token head (LayerNorm, class token, Linear). `man_aux_blocks` sets how many blocks are copied on any backbone.

Aux heads: without method_options.aux_net, infopro uses `2c2f` and dgl MAN's own DGL head (`man-dgl`) on features
of under 256 channels, as the released CIFAR runs do (wider ones get the `imagenet` head, `aux.choose_head`).
`legacy_manpp_stem_head` builds MAN++'s stem-module head as the release does whatever
the run's settings: `1c2f` with D = 128 and SupCon (its constructor defaults), also in cross-entropy runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..aux import is_token_shape
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
    man_aux_blocks: int | None = None
    """Blocks of the next stage that MAN/MAN++'s aux net runs before its heads: the first as LB + EMA twin, the
    others as trainable copies only. Default: 1 on feature maps (the released CNN code), 2 on tokens (the
    released ViT code)."""

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
    """Fuse a trainable copy and an EMA twin of one block, then run `tail` (trainable copies of the blocks after
    it; empty by default): (B, C, H, W) or (B, N, C) -> the output shape of the last block copied."""

    def __init__(self, trainable: nn.Module, twin: nn.Module, learnable_scale: bool, tail: nn.Module) -> None:
        super().__init__()
        self.trainable = trainable
        self.twin = twin  # parameters stored as buffers: never optimised, saved in checkpoints
        self.scale = nn.Parameter(torch.ones(())) if learnable_scale else None
        self.tail = tail

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            fused = self.trainable(h) + self.twin(h)
        else:
            fused = self.scale * self.trainable(h) + (2 - self.scale) * self.twin(h)
        return self.tail(fused)


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

    def aux_blocks(self, learner: LocalLearner, k: int) -> int:
        """How many of the next stage's blocks stage k's aux net copies (`man_aux_blocks`, checked)."""
        net = learner.net
        depth = self.options.man_aux_blocks
        if depth is None:
            depth = 2 if is_token_shape(net.records[k].out_shape) else 1
        nxt = net.records[k + 1]
        # The network's last unit is its classifier head, not a block to copy.
        available = nxt.last_unit - nxt.first_unit + (0 if k + 1 == net.num_stages - 1 else 1)
        if not 1 <= depth <= available:
            raise ConfigError(
                f"{self.name}'s aux net of stage {k} copies {depth} blocks of stage {k + 1}, which has {available}; "
                f"set method_options.man_aux_blocks between 1 and {available}, or use a smaller K"
            )
        return depth

    def setup(self, learner: LocalLearner) -> None:
        net = learner.net
        # Released MAN builds LB and EMA before its init loop: same init rule, fresh draws. Option: start as copies.
        init = None if self.options.man_copy_init else net.init_weights
        for k in range(net.num_stages - 1):
            blocks = list(net.stages[k + 1])[: self.aux_blocks(learner, k)]  # the next stage's first blocks
            source = blocks[0]
            tail = nn.Sequential(*(reinitialised(b, init) for b in blocks[1:]))
            branch = MomentumBranch(reinitialised(source, init), frozen_copy(source, init), self.learnable_scale, tail)
            learner.own(k, "momentum", branch)
            self.sources.append(source)

    def aux_feature_shape(self, learner: LocalLearner, k: int) -> tuple[int, ...]:
        last = learner.net.records[k + 1].first_unit + self.aux_blocks(learner, k) - 1
        return tuple(learner.net.unit_costs[last].out_shape)

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
