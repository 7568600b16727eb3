"""Pick an objective's aux nets: by name (the CIFAR-scale nets of `heads.py`, the ImageNet nets of `imagenet.py`,
the token nets of `tokens.py`), or, when method_options leave them unset or `auto`, by the boundary feature they
are fed and the input (3, H, W):

- head (`choose_head`): on token features (N, C) a token head; on a (C, h, w) map the ImageNet head when
  C >= 256, else the method's CIFAR head (greedy keeps its GAP + linear `0c1f` at any width: it costs
  C x classes weights);
- decoder (`choose_decoder`): the stepwise ImageNet decoder when min(H, W) >= 112 or C >= 256, else the CIFAR
  one; token features are first laid out on their patch grid (C, g, g).

So an ImageNet ResNet's 512- and 1024-channel boundaries get InfoPro's ImageNet head and decoder, its narrower
ones (ResNet-18/34 layer1-2, a stem module) a CIFAR head and the stepwise decoder, and every boundary of the
CIFAR, SVHN and STL-10 ResNets (C <= 64, H <= 96) the CIFAR nets the papers use.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .heads import HEAD_CONFIGS, AuxClassifier, Decoder
from .imagenet import ImageNetDecoder, ImageNetHead
from .man_dgl import MANDGLHead
from .mlaan_imagenet import MLAANImageNetHead
from .tokens import TOKEN_HEADS, TokenGrid, is_token_shape, make_token_head, patch_grid

AUTO = "auto"
DECODERS = (AUTO, "cifar", "imagenet")
# Every head `make_head` builds by name (DGL's own `mlp-sr` is built by its objective).
HEADS = (*HEAD_CONFIGS, "imagenet", "man-dgl", "mlaan-imagenet", *TOKEN_HEADS)
# A feature this wide gets the ImageNet head and decoder: the CIFAR heads' first conv keeps all C channels (9 C^2
# weights, 18 C^2 FLOPs per feature pixel) and the CIFAR decoder convolves C channels at the image's resolution,
# where the ImageNet nets first reduce C with a 1x1 conv. Below it the ImageNet head's fixed 512- and 2048-wide
# convs cost more than a CIFAR head (ResNet-18's 64- and 128-channel boundaries).
IMAGENET_MIN_CHANNELS = 256
# An input at least this many pixels on its shorter side gets the stepwise decoder at any width: above STL-10's
# 96, the largest image of the CIFAR-family datasets, and at or below the reduced ImageNet resolutions (112, 128).
IMAGENET_MIN_SIDE = 112


def _channels(feature_shape: tuple[int, ...]) -> int:
    """C of a (C, H, W) feature, or of token features (N, C); the automatic choice knows no other shape."""
    if is_token_shape(feature_shape):
        return feature_shape[-1]
    if len(feature_shape) != 3:
        raise ConfigError(
            f"no automatic aux net for a feature of shape {tuple(feature_shape)}: only (C, H, W) maps have one; "
            "name method_options.aux_net and method_options.decoder"
        )
    return feature_shape[0]


def choose_head(name: str | None, cifar_default: str, feature_shape: tuple[int, ...]) -> str:
    """`name` when it names a head. For None or `auto`: the ImageNet head for a feature of C >= 256 channels,
    else `cifar_default` (the objective's or mechanism's own CIFAR-scale head)."""
    if name not in (None, AUTO):
        return name
    if is_token_shape(feature_shape):
        return TOKEN_HEADS[0]
    return "imagenet" if _channels(feature_shape) >= IMAGENET_MIN_CHANNELS else cifar_default


def choose_decoder(name: str, feature_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> str:
    """`name` when it names a decoder. For `auto`: the stepwise ImageNet decoder for an input (3, H, W) with
    min(H, W) >= 112 or a feature of C >= 256 channels, else the CIFAR decoder. Every boundary of the CIFAR, SVHN
    and STL-10 ResNets (C <= 64, H <= 96) keeps the CIFAR decoder."""
    if name != AUTO:
        return name
    wide = _channels(feature_shape) >= IMAGENET_MIN_CHANNELS
    return "imagenet" if wide or min(image_shape[1:]) >= IMAGENET_MIN_SIDE else "cifar"


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


def make_decoder(
    kind: str, channels: int, image_size: tuple[int, int], widen: int = 1, feature_size: int | None = None
) -> nn.Module:
    """`cifar` -> `Decoder`, `imagenet` -> `ImageNetDecoder` (any width given the feature's side `feature_size`).
    (B, C, h, w) -> (B, 3, H, W)."""
    if kind == "imagenet":
        return ImageNetDecoder(channels, image_size, feature_size)
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
        side = patch_grid(feature_shape)
        decoder = make_decoder(kind, feature_shape[-1], image_size, widen, feature_size=side)
        return nn.Sequential(TokenGrid(side), decoder)  # (B, N, C) -> (B, C, g, g) -> image
    return make_decoder(kind, feature_shape[0], image_size, widen, feature_size=feature_shape[-2])
