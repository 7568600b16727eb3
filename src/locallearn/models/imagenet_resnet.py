"""ImageNet ResNets (He et al. 2016) and ResNeXt (Xie et al. 2017) as chains of units.

These are the backbones of the local-learning papers' ImageNet tables (InfoPro, MAN, MAN++, MLAAN), whose
split configs cut them in `[stage, block]` notation. Units: the stem conv7x7/2 + BN + ReLU + maxpool3x3/2
at (0, 0), block b of layer s at (s, b) for s = 1..4, then the GAP + FC head (coord None).

Bottlenecks put the stride on the 3x3 conv ("ResNet v1.5"), the variant every one of those repos trains;
the shortcut is conv1x1(stride) + BN whenever the shape changes. ResNeXt widens the 3x3 conv to
`groups * width_per_group` channels per 64 planes and makes it grouped. With 1000 classes the parameter
counts are the usual 11.69 M (ResNet-18) ... 88.79 M (ResNeXt-101 32x8d).
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import Backbone, ClassifierHead
from .registry import MODELS

STAGE_PLANES = (64, 128, 256, 512)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    """conv1x1 + BN where the block changes resolution or width; None means the identity shortcut."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, ReLU. (B, cin, H, W) -> (B, planes, H/s, W/s)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1, width_per_group: int = 64) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64")
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(cin, planes, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride, groups)-BN-ReLU-conv1x1-BN + shortcut, ReLU.

    (B, cin, H, W) -> (B, 4 * planes, H/s, W/s); the inner width is planes * width_per_group / 64 * groups.
    """

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1, width_per_group: int = 64) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        cout = planes * self.expansion
        self.conv1 = conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(cin, cout, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetStem(nn.Module):
    """conv7x7/2 + BN + ReLU + maxpool3x3/2: (B, 3, H, W) -> (B, 64, H/4, W/4)."""

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


def init_imagenet_resnet(model: nn.Module, zero_init_residual: bool = False) -> None:
    """Kaiming-normal (fan_out, ReLU) convs, BN = (1, 0); Linear keeps PyTorch's default init.

    `zero_init_residual` zeroes the last BN gamma of every block so each block starts as the identity
    (Goyal et al. 2017); MLAAN's ImageNet code turns it on, InfoPro/MAN leave it off.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, BasicBlock | Bottleneck):
                nn.init.zeros_(m.last_bn.weight)


class ImageNetResNet(Backbone):
    """Units: stem (0,0), block b of layer s as (s, b) for s = 1..4, then the GAP+FC head (None)."""

    image_size = 224

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_layer: tuple[int, int, int, int],
        num_classes: int = 1000,
        groups: int = 1,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
        in_channels: int = 3,
    ) -> None:
        units: list[nn.Module] = [ImageNetStem(in_channels, STAGE_PLANES[0])]
        names: list[str] = ["stem"]
        coords: list[tuple[int, int] | None] = [(0, 0)]
        cin = STAGE_PLANES[0]
        for s, (planes, n_blocks) in enumerate(zip(STAGE_PLANES, blocks_per_layer, strict=True), start=1):
            for b in range(n_blocks):
                # layer1 keeps the stem's 56x56 (at 224 input); layers 2-4 halve it in their first block.
                stride = 2 if (s > 1 and b == 0) else 1
                units.append(block(cin, planes, stride, groups, width_per_group))
                names.append(f"layer{s}.{b}")
                coords.append((s, b))
                cin = planes * block.expansion
        units.append(ClassifierHead(cin, num_classes))
        names.append("head")
        coords.append(None)
        super().__init__(units, names, coords)
        self.zero_init_residual = zero_init_residual
        init_imagenet_resnet(self, zero_init_residual)

    def init_weights(self, module: nn.Module) -> None:
        init_imagenet_resnet(module, self.zero_init_residual)


@MODELS.register("resnet18")
def resnet18(num_classes: int = 1000, zero_init_residual: bool = False) -> ImageNetResNet:
    """ResNet-18: [2, 2, 2, 2] BasicBlocks, 11.69 M parameters at 1000 classes."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, zero_init_residual=zero_init_residual)


@MODELS.register("resnet34")
def resnet34(num_classes: int = 1000, zero_init_residual: bool = False) -> ImageNetResNet:
    """ResNet-34: [3, 4, 6, 3] BasicBlocks, 21.80 M parameters at 1000 classes."""
    return ImageNetResNet(BasicBlock, (3, 4, 6, 3), num_classes, zero_init_residual=zero_init_residual)


@MODELS.register("resnet50")
def resnet50(num_classes: int = 1000, zero_init_residual: bool = False) -> ImageNetResNet:
    """ResNet-50: [3, 4, 6, 3] Bottlenecks, 25.56 M parameters at 1000 classes."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, zero_init_residual=zero_init_residual)


@MODELS.register("resnet101")
def resnet101(num_classes: int = 1000, zero_init_residual: bool = False) -> ImageNetResNet:
    """ResNet-101: [3, 4, 23, 3] Bottlenecks, 44.55 M parameters at 1000 classes."""
    return ImageNetResNet(Bottleneck, (3, 4, 23, 3), num_classes, zero_init_residual=zero_init_residual)


@MODELS.register("resnet152")
def resnet152(num_classes: int = 1000, zero_init_residual: bool = False) -> ImageNetResNet:
    """ResNet-152: [3, 8, 36, 3] Bottlenecks, 60.19 M parameters at 1000 classes."""
    return ImageNetResNet(Bottleneck, (3, 8, 36, 3), num_classes, zero_init_residual=zero_init_residual)


@MODELS.register("resnext101_32x8d")
def resnext101_32x8d(num_classes: int = 1000, zero_init_residual: bool = False) -> ImageNetResNet:
    """ResNeXt-101 32x8d: [3, 4, 23, 3] Bottlenecks with 32 groups of width 8, 88.79 M parameters."""
    return ImageNetResNet(
        Bottleneck, (3, 4, 23, 3), num_classes, groups=32, width_per_group=8, zero_init_residual=zero_init_residual
    )
