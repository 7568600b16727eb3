"""Decoupled Greedy Learning (Belilovsky et al. 2020): CE of the MLP-SR auxiliary head at every stage."""

from __future__ import annotations

from ..aux import MLPSRHead, is_token_shape
from .base import AuxContext, AuxLoss, Objective
from .classifier_aux import ClassifierAux
from .greedy import Greedy
from .registry import OBJECTIVES


@OBJECTIVES.register("dgl")
class DGL(Objective):
    name = "dgl"

    def build_aux(self, ctx: AuxContext) -> AuxLoss:
        if self.options.aux_net not in (None, "mlp-sr") or is_token_shape(ctx.feature_shape):
            # Any other head may be asked for (man-dgl: MAN's DGL head); only the default differs from greedy.
            # MLP-SR pools a feature map: token features get greedy's token head.
            return Greedy(self.options).build_aux(ctx)
        channels, spatial = ctx.feature_shape[0], ctx.feature_shape[-1]
        return ClassifierAux(MLPSRHead(channels, spatial, ctx.num_classes))
