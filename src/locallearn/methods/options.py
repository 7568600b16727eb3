"""Hyper-parameters of objectives and mechanisms; the recipe/CLI `method_options` section fills them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MethodOptions:
    aux_net: str | None = None
    """Aux head: 0c1f/0c2f/1c1f/1c2f/1c3f/2c2f or mlp-sr. Default: greedy 0c1f, dgl mlp-sr, infopro 1c2f."""
    aux_feature_dim: int = 128
    """D: hidden width of the aux MLP and the contrastive embedding size."""
    aux_widen: int = 1
    """Width multiplier of aux nets (InfoPro's aux_net_widen)."""
    ixx_1: float = 1.0
    """InfoPro lambda_1 (reconstruction weight) of the first local module."""
    ixy_1: float = 1.0
    """InfoPro lambda_2 (task-loss weight) of the first local module."""
    ixx_2: float = 1.0
    """InfoPro lambda_1 of the last local module (K-2); modules between are interpolated linearly."""
    ixy_2: float = 1.0
    """InfoPro lambda_2 of the last local module."""
    temperature: float = 0.07
    """SupCon temperature (and base temperature) of the contrast variant."""
