"""Pick an objective's aux nets: by name (the CIFAR-scale nets of `heads.py`, the ImageNet nets of `imagenet.py`),
or, for `auto`, by the shape of the feature they are fed (`aux_scale`)."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .heads import HEAD_CONFIGS, AuxClassifier, Decoder
from .imagenet import ImageNetDecoder, ImageNetHead
from .man_dgl import MANDGLHead
from .mlaan_imagenet import MLAANImageNetHead

AUTO = "auto"
DECODERS = (AUTO, "cifar", "imagenet")
# Every head `make_head` builds by name (DGL's own `mlp-sr` is built by its objective).
HEADS = (*HEAD_CONFIGS, "imagenet", "man-dgl", "mlaan-imagenet")
# An input at least this many pixels on its shorter side is ImageNet-scale: above STL-10's 96, the largest
# image of the CIFAR-family datasets, and at or below the reduced ImageNet resolutions (112, 128, 160).
IMAGENET_MIN_SIDE = 112
# A feature this wide is ImageNet-scale at any input size: the CIFAR heads' first conv keeps all C channels
# (9 C^2 weights, 18 C^2 FLOPs per pixel), where the ImageNet head first reduces them to C/4 with a 1x1 conv.
IMAGENET_MIN_CHANNELS = 256


def aux_scale(feature_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> str:
    """Which family of aux nets fits a boundary: `imagenet` or `cifar`.

    Rule, for a feature (C, h, w) of an input (3, H, W): `imagenet` when min(H, W) >= IMAGENET_MIN_SIDE (112)
    or C >= IMAGENET_MIN_CHANNELS (256), else `cifar`. The CIFAR decoder convolves at the image's resolution
    and the CIFAR heads keep all C channels, so either costs more than the stage it trains at ImageNet size;
    every boundary of the CIFAR, SVHN and STL-10 ResNets (C <= 64, H <= 96) stays `cifar`.
    """
    if len(feature_shape) != 3:
        raise ConfigError(
            f"no automatic aux net for a feature of shape {tuple(feature_shape)}: only (C, H, W) maps have one; "
            "name method_options.aux_net and method_options.decoder"
        )
    channels = feature_shape[0]
    side = min(image_shape[1:])
    return "imagenet" if side >= IMAGENET_MIN_SIDE or channels >= IMAGENET_MIN_CHANNELS else "cifar"


def choose_head(
    name: str | None, cifar_default: str, feature_shape: tuple[int, ...], image_shape: tuple[int, ...]
) -> str:
    """`name` when it names a head; for None or `auto`, the ImageNet head at ImageNet scale, else `cifar_default`
    (the objective's or mechanism's own CIFAR-scale head)."""
    if name not in (None, AUTO):
        return name
    return "imagenet" if aux_scale(feature_shape, image_shape) == "imagenet" else cifar_default


def choose_decoder(name: str, feature_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> str:
    """`name` when it names a decoder; for `auto`, the decoder of the feature's scale (`aux_scale`)."""
    return aux_scale(feature_shape, image_shape) if name == AUTO else name


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
