"""InfoPro-family aux nets for ImageNet ResNets (methods.md §3.4, §6.2): a stepwise decoder and a 4-conv head.

Both see a boundary feature (B, C, H, W) of a Bottleneck ResNet: C = 512 after a cut in layer2 (InfoPro K=2,
MAN/MAN++ K=2) and C = 1024 after a cut in layer3 (MAN K=4; MAN++ K=4 has one of each). The released nets
hard-code 224^2 inputs and 1000 classes; here the decoder's intermediate sizes are fractions of the image size
and the head has any number of outputs, so the same nets serve reduced-resolution runs and MAN's fused feature.
Other widths (a user's model, the automatic choice of `build.choose_decoder`) get a decoder built by one rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.imagenet_resnet import init_imagenet_resnet
from .heads import conv_bn_relu
from .upsample import upsample_bilinear

# (out_channels, kernel) of the released decoders' conv-BN-ReLU layers per input width. Each layer is followed by a
# 2x bilinear upsample, the last one landing on the image size; a conv3x3 -> 3 (the image's logits) ends it.
DECODER_LAYERS: dict[int, tuple[tuple[int, int], ...]] = {
    512: ((128, 1), (32, 3), (12, 3)),  # InfoPro and MAN: 28^2 -> 56 -> 112 -> 224
    1024: ((192, 1), (64, 1), (32, 3), (12, 3)),  # MAN: 14^2 -> 28 -> 56 -> 112 -> 224
}
HEAD_WIDTH = 2048  # the head's last conv width, which its FC reads
MIN_MIX_WIDTH = 64  # the narrowest conv1x1 layer of a decoder built by `decoder_layers`


def decoder_layers(channels: int, steps: int) -> tuple[tuple[int, int], ...]:
    """The layers of a stepwise decoder for any width: the released ones for 512 and 1024 channels; otherwise
    `steps` layers (one per 2x upsample), conv1x1 quartering the width (not below 64) until the released pair
    conv3x3 -> 32, conv3x3 -> 12 ends it. For 512 channels and 3 steps this rule gives the released layers."""
    if channels in DECODER_LAYERS:
        return DECODER_LAYERS[channels]
    tail = ((32, 3), (12, 3))[-min(steps, 2) :]
    mixes, width = [], channels
    for _ in range(steps - len(tail)):
        width = max(MIN_MIX_WIDTH, width // 4)
        mixes.append((width, 1))
    return (*mixes, *tail)


def upsample_steps(feature_side: int, image_side: int) -> int:
    """2x upsamples from a feature side to the image side (at least one): 28 -> 224 is 3."""
    return max(1, round(math.log2(image_side / feature_side)))


class ImageNetDecoder(nn.Module):
    """Reconstruction decoder: (B, C, h, w) -> (B, 3, H, W) logits of the image.

    C in `DECODER_LAYERS` builds the released decoder whatever h is; any other C needs `feature_size` (h), from
    which `decoder_layers` takes one layer per 2x upsample up to the image.
    """

    def __init__(self, channels: int, image_size: tuple[int, int], feature_size: int | None = None) -> None:
        super().__init__()
        if channels not in DECODER_LAYERS and feature_size is None:
            raise ConfigError(
                f"the released imagenet decoder exists for {sorted(DECODER_LAYERS)}-channel features, not {channels}; "
                "give the feature's size, or use method_options.decoder: auto or cifar for this boundary"
            )
        height, width = image_size
        steps = len(DECODER_LAYERS[channels]) if channels in DECODER_LAYERS else upsample_steps(feature_size, height)
        layers = decoder_layers(channels, steps)
        n = len(layers)
        # Step i lands on image / 2^(n-1-i): 56, 112, 224 for a 224^2 image, whatever the feature's own size.
        self.sizes = [(height // 2 ** (n - 1 - i), width // 2 ** (n - 1 - i)) for i in range(n)]
        convs, cin = [], channels
        for cout, kernel in layers:
            convs.append(conv_bn_relu(cin, cout, kernel, bias=True))
            cin = cout
        self.convs = nn.ModuleList(convs)
        self.out = nn.Sequential(nn.Conv2d(cin, 3, 3, padding=1))  # keeps the released name out.0
        init_imagenet_resnet(self)  # the released model-wide init loop covers its aux nets too

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for conv, size in zip(self.convs, self.sizes, strict=True):
            h = upsample_bilinear(conv(h), size)
        return self.out(h)


class ImageNetHead(nn.Module):
    """conv1x1 -> conv3x3/2 -> conv3x3/2 -> conv1x1 to 2048 (each + BN + ReLU), GAP, FC: (B, C, H, W) -> (B, out).

    The released widths are (128, 256, 512) for C = 512 (InfoPro, MAN) and (256, 256, 512) for C = 1024 (MAN);
    (max(128, C/4), max(256, C/4), 512) gives both and extends to any C.
    """

    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        w1, w2 = max(128, channels // 4), max(256, channels // 4)
        self.convs = nn.Sequential(
            conv_bn_relu(channels, w1, 1),  # (B, w1, H, W)
            conv_bn_relu(w1, w2, 3, stride=2),  # (B, w2, H/2, W/2)
            conv_bn_relu(w2, 512, 3, stride=2),  # (B, 512, H/4, W/4)
            conv_bn_relu(512, HEAD_WIDTH, 1),  # (B, 2048, H/4, W/4)
        )
        self.fc = nn.Linear(HEAD_WIDTH, out_dim)
        init_imagenet_resnet(self)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(self.convs(h), 1)  # (B, 2048, 1, 1)
        return self.fc(torch.flatten(h, 1))
