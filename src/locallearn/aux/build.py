"""Pick an objective's aux nets by name: the CIFAR-scale nets of `heads.py`, the ImageNet nets of `imagenet.py` or,
for token features, the nets of `tokens.py`."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .heads import HEAD_CONFIGS, AuxClassifier, Decoder
from .imagenet import ImageNetDecoder, ImageNetHead
from .man_dgl import MANDGLHead
from .mlaan_imagenet import MLAANImageNetHead
from .tokens import TOKEN_HEADS, TokenGrid, is_token_shape, make_token_head, patch_grid

DECODERS = ("cifar", "imagenet")
# Every head `make_head` builds by name (DGL's own `mlp-sr` is built by its objective).
HEADS = (*HEAD_CONFIGS, "imagenet", "man-dgl", "mlaan-imagenet", *TOKEN_HEADS)


def make_head(channels: int, config: str, out_dim: int, feature_dim: int = 128, widen: int = 1) -> nn.Module:
    """`imagenet` -> `ImageNetHead`; `man-dgl` -> `MANDGLHead`; `mlaan-imagenet` -> `MLAANImageNetHead`;
    `<n>c<m>f` -> `AuxClassifier`. (B, C, H, W) -> (B, out_dim)."""
    if config == "imagenet":
        return ImageNetHead(channels, out_dim)
    if config == "man-dgl":
        return MANDGLHead(channels, out_dim, feature_dim)
    if config == "mlaan-imagenet":
        return MLAANImageNetHead(channels, out_dim)
    if config in TOKEN_HEADS:
        raise ConfigError(
            f"aux head '{config}' reads token features (ViTs), but this boundary gives {channels}-channel maps; "
            f"choose one of {', '.join(h for h in HEADS if h not in TOKEN_HEADS)}"
        )
    if config not in HEAD_CONFIGS:
        raise ConfigError(f"unknown aux head '{config}'; choose one of {', '.join(HEADS)}")
    return AuxClassifier(channels, config, out_dim, feature_dim, widen)


def make_decoder(kind: str, channels: int, image_size: tuple[int, int], widen: int = 1) -> nn.Module:
    """`cifar` -> `Decoder`, `imagenet` -> `ImageNetDecoder`. (B, C, h, w) -> (B, 3, H, W)."""
    if kind == "imagenet":
        return ImageNetDecoder(channels, image_size)
    if kind == "cifar":
        return Decoder(channels, image_size, widen)
    raise ConfigError(f"unknown decoder '{kind}'; choose one of {', '.join(DECODERS)}")


def make_feature_head(
    feature_shape: tuple[int, ...], config: str, out_dim: int, feature_dim: int = 128, widen: int = 1
) -> nn.Module:
    """`make_head` for a boundary feature of any shape: token features (N, C) get a token head."""
    if is_token_shape(feature_shape):
        return make_token_head(feature_shape, config, out_dim)
    return make_head(feature_shape[0], config, out_dim, feature_dim, widen)


def make_feature_decoder(
    kind: str, feature_shape: tuple[int, ...], image_size: tuple[int, int], widen: int = 1
) -> nn.Module:
    """`make_decoder` for a boundary feature of any shape: token features are laid out on their patch grid."""
    if is_token_shape(feature_shape):
        grid = TokenGrid(patch_grid(feature_shape))
        return nn.Sequential(grid, make_decoder(kind, feature_shape[-1], image_size, widen))  # (B, N, C) -> image
    return make_decoder(kind, feature_shape[0], image_size, widen)
