"""Automatic aux nets: chosen per boundary from the feature they are fed, the recipes' named nets kept as they are."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from locallearn.aux import (
    AuxClassifier,
    Decoder,
    ImageNetDecoder,
    ImageNetHead,
    MANDGLHead,
    MLPSRHead,
    aux_scale,
    make_decoder,
)
from locallearn.config import build_config
from locallearn.data.datasets import SPECS
from locallearn.errors import ConfigError
from locallearn.methods import MethodOptions, build_learner
from locallearn.models import build_backbone
from locallearn.split import split_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL_IMAGE_RECIPES = sorted(p for d in ("cifar10", "svhn", "stl10") for p in (CONFIGS / d).glob("*.yaml"))
HALF = (0.5, 0.5, 0.5)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def learner(method: str, arch: str, k: int, size: int, split=None, **options):
    torch.manual_seed(0)
    net = split_model(build_backbone(arch, 10), k, split, arch=arch, input_shape=(3, size, size))
    return build_learner(method, net, num_classes=10, mean=HALF, std=HALF, options=MethodOptions(**options))


@functools.cache
def widest_conv(arch: str) -> int:
    return max(m.out_channels for m in build_backbone(arch, 10).modules() if isinstance(m, nn.Conv2d))


def aux_nets(lrn) -> list[nn.Module]:
    return [lrn.owned[k]["aux"] for k in range(lrn.num_stages - 1)]


@pytest.mark.parametrize(
    ("feature", "image", "scale"),
    [
        ((64, 8, 8), (3, 32, 32), "cifar"),  # CIFAR ResNet, last boundary
        ((16, 96, 96), (3, 96, 96), "cifar"),  # STL-10 ResNet-110, first boundary
        ((64, 56, 56), (3, 224, 224), "imagenet"),  # an ImageNet ResNet's stem: the input decides
        ((512, 28, 28), (3, 224, 224), "imagenet"),
        ((640, 8, 8), (3, 32, 32), "imagenet"),  # a wide CIFAR-size model: the channels decide
        ((128, 16, 16), (3, 112, 112), "imagenet"),  # the smallest ImageNet-scale input
    ],
)
def test_the_rule_reads_the_input_side_and_the_channels(feature, image, scale):
    assert aux_scale(feature, image) == scale


def test_features_without_a_grid_need_named_aux_nets():
    with pytest.raises(ConfigError, match="name method_options.aux_net"):
        aux_scale((197, 384), (3, 224, 224))


def test_imagenet_scale_infopro_gets_the_imagenet_head_and_decoder():
    lrn = learner("infopro:softmax", "resnet18", 2, 112, split="units:2")
    (aux,) = aux_nets(lrn)
    assert isinstance(aux.head, ImageNetHead) and isinstance(aux.decoder, ImageNetDecoder)
    assert aux.decoder.sizes[-1] == (112, 112)


def test_cifar_scale_defaults_are_unchanged():
    (aux,) = aux_nets(learner("infopro", "resnet8", 2, 32))
    assert isinstance(aux.head, AuxClassifier) and isinstance(aux.decoder, Decoder)
    assert len(aux.head.convs) == 1 and len(aux.head.fcs) == 3  # 1c2f: two Linear with a ReLU between
    man = aux_nets(learner("infopro+man", "resnet8", 2, 32))[0]
    assert len(man.head.convs) == 2  # MAN's own CIFAR default, 2c2f
    assert isinstance(aux_nets(learner("dgl", "resnet8", 2, 32))[0].head, MLPSRHead)
    assert isinstance(aux_nets(learner("dgl+man", "resnet8", 2, 32))[0].head, MANDGLHead)


def test_named_nets_are_kept_at_any_scale():
    (aux,) = aux_nets(learner("infopro:softmax", "resnet18", 2, 112, split="units:2", aux_net="1c2f", decoder="cifar"))
    assert isinstance(aux.head, AuxClassifier) and isinstance(aux.decoder, Decoder)
    (auto,) = aux_nets(learner("infopro:softmax", "resnet18", 2, 112, split="units:2", aux_net="auto"))
    assert isinstance(auto.head, ImageNetHead)


def test_dgl_and_greedy_at_imagenet_scale():
    assert isinstance(aux_nets(learner("dgl", "resnet18", 2, 112, split="units:2"))[0].head, ImageNetHead)
    greedy = aux_nets(learner("greedy", "resnet18", 2, 112, split="units:2"))[0].head
    assert isinstance(greedy, AuxClassifier) and len(greedy.convs) == 0  # 0c1f: GAP + linear at any scale


@pytest.mark.parametrize(("channels", "side", "image", "steps"), [(256, 16, 64, 2), (2048, 2, 64, 5), (64, 8, 8, 1)])
def test_the_stepwise_decoder_fits_any_width(channels, side, image, steps):
    decoder = make_decoder("imagenet", channels, (image, image), feature_size=side)
    assert len(decoder.convs) == steps
    out = decoder(torch.randn(2, channels, side, side))
    assert out.shape == (2, 3, image, image) and out.min() > 0 and out.max() < 1


@pytest.mark.parametrize("recipe", SMALL_IMAGE_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_small_image_recipes_keep_the_cifar_nets(recipe):
    """Every CIFAR/SVHN/STL-10 recipe: no boundary of its backbone is ImageNet-scale, so `auto` gives what the
    recipe ran with before (the CIFAR decoder, and the objective's or mechanism's CIFAR head)."""
    cfg = build_config(recipe)
    side = SPECS[cfg.dataset].aug.crop
    assert aux_scale((widest_conv(cfg.arch), side, side), (3, side, side)) == "cifar"
