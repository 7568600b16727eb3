"""Greedy supervised local learning (Greedy SL): each stage is trained by CE of a small classifier head.

InfoPro's baseline uses the `0c1f` head (GAP + linear) at every scale: it costs C x classes weights, never more
than the stage it trains; method_options.aux_net picks any other head config.
"""

from __future__ import annotations

from ..aux import AUTO, make_feature_head
from .base import AuxContext, AuxLoss, Objective
from .classifier_aux import ClassifierAux
from .registry import OBJECTIVES


@OBJECTIVES.register("greedy")
class Greedy(Objective):
    name = "greedy"
    default_head = "0c1f"

    def build_aux(self, ctx: AuxContext) -> AuxLoss:
        o = self.options
        name = self.default_head if o.aux_net in (None, AUTO) else o.aux_net
        head = make_feature_head(ctx.feature_shape, name, ctx.num_classes, o.aux_feature_dim, o.aux_widen)
        return ClassifierAux(head)
