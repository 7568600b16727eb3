"""Aux nets for token features (B, N, C), the boundary features of Vision Transformers.

`TokenHead` is the ViT classifier head in small: LayerNorm, then the class token (`token-cls`) or the mean of
the patch tokens (`token-mean`), then a Linear. `TokenGrid` drops the class token and lays the patch tokens out
on their grid (B, C, h, w), so that the image-shaped aux nets (InfoPro's decoder) run on a ViT unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..models.vit import TokenHead

TOKEN_HEADS = ("token-cls", "token-mean")


def is_token_shape(feature_shape: tuple[int, ...]) -> bool:
    """True for a per-sample feature of tokens (N, C); image features are (C, H, W)."""
    return len(feature_shape) == 2


def make_token_head(feature_shape: tuple[int, ...], config: str | None, out_dim: int) -> TokenHead:
    """`token-mean` pools the patch tokens; every other head (the image heads' names, None) is `token-cls`:
    on token features the class token is the feature the backbone's own head reads."""
    return TokenHead(feature_shape[-1], out_dim, "mean" if config == "token-mean" else "cls")


def patch_grid(feature_shape: tuple[int, ...]) -> int:
    """Side g of the square patch grid behind tokens (1 + g*g, C)."""
    side = math.isqrt(feature_shape[0] - 1)
    if side * side != feature_shape[0] - 1:
        raise ConfigError(
            f"{feature_shape[0]} tokens are not a class token plus a square grid of patches, so they cannot be laid "
            "out as an image for this aux net; use a token head (greedy or dgl) on this model"
        )
    return side


class TokenGrid(nn.Module):
    """Drop the class token and lay the patch tokens out row by row: (B, 1 + g*g, C) -> (B, C, g, g)."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, _, c = h.shape
        return h[:, 1:].transpose(1, 2).reshape(b, c, self.side, self.side)
