"""Decoupled Greedy Learning (Belilovsky et al. 2020): CE of the MLP-SR auxiliary head at every stage.

Any other head may be asked for (man-dgl: MAN's DGL head); without one, features of 256 channels or more get the
ImageNet head (`aux.choose_head`): MLP-SR's three Linear(4C, 4C) would hold 50M weights on a 1024-channel feature.
"""

from __future__ import annotations

from ..aux import MLPSRHead, choose_head, is_token_shape, make_feature_head
from .base import AuxContext, AuxLoss, Objective
from .classifier_aux import ClassifierAux
from .registry import OBJECTIVES


@OBJECTIVES.register("dgl")
class DGL(Objective):
    name = "dgl"
    default_head = "mlp-sr"

    def build_aux(self, ctx: AuxContext) -> AuxLoss:
        o = self.options
        name = choose_head(o.aux_net, self.default_head, ctx.feature_shape)
        if name == "mlp-sr" and not is_token_shape(ctx.feature_shape):  # MLP-SR pools a (C, H, W) map
            channels, spatial = ctx.feature_shape[0], ctx.feature_shape[-1]
            return ClassifierAux(MLPSRHead(channels, spatial, ctx.num_classes))
        head = make_feature_head(ctx.feature_shape, name, ctx.num_classes, o.aux_feature_dim, o.aux_widen)
        return ClassifierAux(head)
