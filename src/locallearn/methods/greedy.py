"""Greedy supervised local learning (Greedy SL): each stage is trained by CE of a small classifier head.

InfoPro's baseline uses the `0c1f` head (GAP + linear); `--aux-net` picks any other head config.
"""

from __future__ import annotations

from ..aux import make_feature_head
from .base import AuxContext, AuxLoss, Objective
from .classifier_aux import ClassifierAux
from .registry import OBJECTIVES


@OBJECTIVES.register("greedy")
class Greedy(Objective):
    name = "greedy"
    default_head = "0c1f"

    def build_aux(self, ctx: AuxContext) -> AuxLoss:
        o = self.options
        head = make_feature_head(
            ctx.feature_shape, o.aux_net or self.default_head, ctx.num_classes, o.aux_feature_dim, o.aux_widen
        )
        return ClassifierAux(head)
