"""ImageNet ResNets/ResNeXt: exact parameter counts, unit chain == forward, coordinates, block anatomy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from locallearn.models import MODELS, build_backbone
from locallearn.models.imagenet_resnet import BasicBlock, Bottleneck, ImageNetStem

# The published counts at 1000 classes (He et al. 2016; Xie et al. 2017), ResNet v1.5 and v1 alike.
PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext101_32x8d": 88_791_336,
}
BLOCKS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnext101_32x8d": (3, 4, 23, 3),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Building all six at 1000 classes takes ~3 s on 2 CPU cores (ResNeXt-101 alone ~1 s), so none is marked slow.
@pytest.mark.parametrize("arch", list(PARAMS))
def test_parameter_counts(arch: str) -> None:
    assert n_params(MODELS.get(arch)(num_classes=1000)) == PARAMS[arch]


@pytest.mark.parametrize("arch", list(PARAMS))
def test_units_and_coords(arch: str) -> None:
    model = build_backbone(arch, num_classes=10)
    blocks = BLOCKS[arch]
    expected = [(0, 0)] + [(s, b) for s, n in enumerate(blocks, start=1) for b in range(n)] + [None]
    assert model.coords == expected
    assert model.unit_names[0] == "stem" and model.unit_names[-1] == "head"
    assert model.unit_names[1:-1] == [f"layer{s}.{b}" for s, b in expected[1:-1]]
    assert isinstance(model.units[0], ImageNetStem)
    assert model.units[-1].fc.out_features == 10


def test_resnet50_has_16_bottlenecks() -> None:
    model = MODELS.get("resnet50")(num_classes=10)
    blocks = [c for c in model.coords if c not in (None, (0, 0))]
    assert len(blocks) == 16 and blocks[0] == (1, 0) and blocks[-1] == (4, 2)
    assert all(isinstance(u, Bottleneck) for u in model.units[1:-1])


def test_block_parameter_names() -> None:
    basic = dict(MODELS.get("resnet18")(num_classes=10).units[3].named_parameters())  # layer2.0, downsamples
    assert set(basic) == {
        "conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
        "downsample.0.weight", "downsample.1.weight", "downsample.1.bias",
    }  # fmt: skip
    bottleneck = dict(MODELS.get("resnet50")(num_classes=10).units[2].named_parameters())  # layer1.1
    assert set(bottleneck) == {
        f"{m}{i}.{p}" for i in (1, 2, 3) for m, p in (("conv", "weight"), ("bn", "weight"), ("bn", "bias"))
    }
    stem = dict(MODELS.get("resnet18")(num_classes=10).units[0].named_parameters())
    assert set(stem) == {"conv1.weight", "bn1.weight", "bn1.bias"}


def test_resnext_grouped_width_and_v15_stride() -> None:
    block = MODELS.get("resnext101_32x8d")(num_classes=10).units[4]  # layer2.0: planes 128 -> width 256
    assert isinstance(block, Bottleneck)
    assert block.conv2.groups == 32 and block.conv2.out_channels == 32 * 8 * 128 // 64
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)  # v1.5: stride on the 3x3


def test_init_and_zero_init_residual() -> None:
    model = MODELS.get("resnet18")(num_classes=10, zero_init_residual=True)
    for unit in model.units[1:-1]:
        assert isinstance(unit, BasicBlock)
        assert torch.all(unit.bn2.weight == 0) and torch.all(unit.bn1.weight == 1)
    conv = model.units[0].conv1.weight  # kaiming fan_out: std = sqrt(2 / (64 * 7 * 7))
    assert abs(conv.std().item() - (2 / (64 * 49)) ** 0.5) < 0.01
    default = MODELS.get("resnet50")(num_classes=10)
    assert all(torch.all(u.bn3.weight == 1) for u in default.units[1:-1])


def _check_chain(arch: str, size: int) -> None:
    torch.manual_seed(0)
    model = MODELS.get(arch)(num_classes=7).eval()
    x = torch.randn(1, 3, size, size)
    h = x
    shapes = []
    with torch.no_grad():
        for unit in model.units:
            h = unit(h)
            shapes.append(tuple(h.shape))
        assert torch.equal(h, model(x))
    exp = model.units[1].expansion
    assert shapes[0] == (1, 64, size // 4, size // 4)
    assert shapes[-2] == (1, 512 * exp, size // 32, size // 32)
    assert shapes[-1] == (1, 7)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_units_in_order_equal_forward(arch: str) -> None:
    _check_chain(arch, 64)


def test_units_in_order_equal_forward_resnet101() -> None:
    _check_chain("resnet101", 32)  # 32x32 keeps the 35-unit chain cheap; layer4 runs at 1x1
