"""The method contract: what a local objective and a cross-stage mechanism provide to the learner.

Notation: K stages, k = 0..K-1, h_k the output of stage k, `x` the normalised input, `x01` the input in
[0, 1]. A *carry* is the dict of tensors handed from stage k to stage k+1 (`"h"` is h_k; mechanisms may add
more, e.g. ContSup's contexts). The engine detaches every carry, so gradient isolation lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from .options import AuxOptions

if TYPE_CHECKING:
    from . import MethodOptions
    from .learner import LocalLearner

Carry = dict[str, torch.Tensor]


@dataclass
class Batch:
    x: torch.Tensor  # (B, 3, H, W) normalised
    y: torch.Tensor  # (B,) int64
    x01: torch.Tensor  # (B, 3, H, W) in [0, 1]: the reconstruction target


@dataclass
class AuxOutput:
    loss: torch.Tensor  # scalar
    logits: torch.Tensor | None = None  # (B, classes) when the aux net is a classifier
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class StageResult:
    loss: torch.Tensor  # the scalar the engine backpropagates
    out: Carry  # handed to stage k+1 after the engine detaches it
    logits: torch.Tensor | None  # aux logits (k < K-1) or final logits (k = K-1), for accuracy
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class AuxLoss(nn.Module):
    """An objective's auxiliary net for one boundary: feature (B, C, H, W) + batch -> AuxOutput."""

    def forward(self, feature: torch.Tensor, batch: Batch) -> AuxOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, feature: torch.Tensor) -> torch.Tensor | None:
        """Class logits for per-stage accuracy, or None when the aux net is not a classifier."""
        return None


@dataclass(frozen=True)
class AuxContext:
    """What an objective needs to build stage k's aux net."""

    k: int  # 0-based local module index (0..K-2)
    num_stages: int  # stages trained: K, plus the stem's own with MAN++
    feature_shape: tuple[int, ...]  # (C, H, W) of the tensor the aux net sees; (N, C) for tokens (ViTs)
    image_shape: tuple[int, ...]  # (3, H, W)
    num_classes: int
    next_stage_coord: tuple[int, int] | None = None  # [stage, block] of the next module's first block
    stem_is_module: bool = False
    last_coord: tuple[int, int] | None = None  # [stage, block] of this module's last block
    num_blocks: int = 0  # residual blocks of the backbone (units with a [stage, block] other than the stem's)
    ratio_by_own_block: bool = False  # legacy lambda ratio from `last_coord` (MLAAN's nets), not the next block


class Objective:
    """A local objective: builds one AuxLoss per boundary. Subclasses register in `OBJECTIVES`."""

    name: str = ""
    variant: str | None = None
    # The CIFAR-scale head used when method_options.aux_net is unset or `auto` (a mechanism may ask for another);
    # Features of 256 channels or more get the ImageNet head instead (`aux.choose_head`), except with greedy's
    # GAP + linear.
    default_head: str = ""
    options_types: tuple[type, ...] = (AuxOptions,)  # the option dataclasses it reads (composed into MethodOptions)

    def __init__(self, options: MethodOptions, variant: str | None = None) -> None:
        self.options = options
        self.variant = variant

    def build_aux(self, ctx: AuxContext) -> AuxLoss:  # pragma: no cover - interface
        raise NotImplementedError


class Mechanism:
    """A cross-stage mechanism (ContSup, MAN, MLAAN). Every hook defaults to "do nothing".

    `window`: how many stages the gradient of stage k's loss reaches (k-window+1 .. k). 1 = isolated; the
    engine steps stage j's optimizer only after every stage that can still reach it has run backward.
    """

    name: str = ""
    window: int = 1
    incompatible: tuple[str, ...] = ()
    legacy_ratio_by_own_block: bool = False  # see AuxContext.ratio_by_own_block
    options_types: tuple[type, ...] = ()  # the option dataclasses it reads (composed into MethodOptions)

    def __init__(self, options: MethodOptions, arg: str | None = None) -> None:
        self.options = options
        self.arg = arg

    @classmethod
    def default_aux_net(cls, objective: str) -> str | None:
        """The CIFAR-scale aux head `objective` uses with this mechanism when method_options.aux_net is unset or
        `auto` (None: the objective's own `default_head`)."""
        return None

    @classmethod
    def stem_module(cls, options: MethodOptions) -> bool:
        """Whether the split must give the stem a module of its own (MAN++ trains it by its own loss)."""
        return False

    def setup(self, learner: LocalLearner) -> None:
        """Build this mechanism's modules and register them with `learner.own(k, name, module)`."""

    def build_aux(self, learner: LocalLearner, ctx: AuxContext) -> AuxLoss | None:
        """Stage ctx.k's aux net when this mechanism builds it instead of the objective (None: the objective's)."""
        return None

    def initial_carry(self, batch: Batch) -> Carry:
        """Extra tensors entering stage 0 besides `"h"`."""
        return {}

    def stage_input(self, learner: LocalLearner, k: int, carry: Carry, batch: Batch) -> torch.Tensor | None:
        """Replace the input of stage k (None keeps `carry["h"]`). Runs in training and inference."""
        return None

    def carry_out(self, learner: LocalLearner, k: int, h_in: torch.Tensor, carry: Carry) -> Carry:
        """Extra tensors stage k hands to stage k+1 besides `"h"`."""
        return {}

    def aux_feature(self, learner: LocalLearner, k: int, h: torch.Tensor) -> torch.Tensor | None:
        """Replace the feature stage k's aux net sees (None keeps h_k). Also fixes the aux input shape."""
        return None

    def aux_feature_shape(self, learner: LocalLearner, k: int) -> tuple[int, ...] | None:
        return None

    def stage_loss(self, learner: LocalLearner, k: int, carry: Carry, batch: Batch, result: StageResult) -> StageResult:
        """Rewrite stage k's loss (e.g. add MLAAN's cascaded term)."""
        return result

    def after_backward(self, learner: LocalLearner, k: int) -> None:
        """Work after stage k's backward and before its optimizer step (MAN's EMA update)."""

    def after_step(self, learner: LocalLearner, j: int) -> None:
        """Work right after stage j's optimizer step."""

    def ema_after_step(self) -> bool:
        """True when the twins of `ema_pairs` are updated in `after_step` of the source's stage (after its
        optimizer step) instead of in `after_backward` of the twin's stage; the pipeline ships sources accordingly."""
        return False

    def ema_pairs(self, learner: LocalLearner, k: int) -> list[tuple[nn.Module, nn.Module]]:
        """(twin, source) pairs updated after stage k's backward: the pipeline ships the sources across ranks."""
        return []
