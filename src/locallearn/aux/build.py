"""Pick an objective's aux nets by name: the CIFAR-scale nets of `heads.py` or the ImageNet nets of `imagenet.py`."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .heads import HEAD_CONFIGS, AuxClassifier, Decoder
from .imagenet import ImageNetDecoder, ImageNetHead
from .man_dgl import MANDGLHead
from .mlaan_imagenet import MLAANImageNetHead

DECODERS = ("cifar", "imagenet")
# Every head `make_head` builds by name (DGL's own `mlp-sr` is built by its objective).
HEADS = (*HEAD_CONFIGS, "imagenet", "man-dgl", "mlaan-imagenet")


def make_head(channels: int, config: str, out_dim: int, feature_dim: int = 128, widen: int = 1) -> nn.Module:
    """`imagenet` -> `ImageNetHead`; `man-dgl` -> `MANDGLHead`; `mlaan-imagenet` -> `MLAANImageNetHead`;
    `<n>c<m>f` -> `AuxClassifier`. (B, C, H, W) -> (B, out_dim)."""
    if config == "imagenet":
        return ImageNetHead(channels, out_dim)
    if config == "man-dgl":
        return MANDGLHead(channels, out_dim, feature_dim)
    if config == "mlaan-imagenet":
        return MLAANImageNetHead(channels, out_dim)
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
