"""Automatic aux nets: chosen per boundary from the feature they are fed, the recipes' named nets kept as they are."""

from __future__ import annotations

import functools
import json
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
    choose_decoder,
    choose_head,
    make_decoder,
)
from locallearn.cli import main
from locallearn.config import build_config
from locallearn.data.datasets import SPECS
from locallearn.errors import ConfigError
from locallearn.methods import MethodOptions, build_learner
from locallearn.models import build_backbone
from locallearn.profile.aux_warning import aux_warning
from locallearn.split import split_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL_IMAGE_RECIPES = sorted(p for d in ("cifar10", "svhn", "stl10") for p in (CONFIGS / d).glob("*.yaml"))
HALF = (0.5, 0.5, 0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


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
    ("feature", "image", "head", "decoder"),
    [
        ((64, 8, 8), (3, 32, 32), "1c2f", "cifar"),  # CIFAR ResNet, last boundary
        ((16, 96, 96), (3, 96, 96), "1c2f", "cifar"),  # STL-10 ResNet-110, first boundary
        ((64, 56, 56), (3, 224, 224), "1c2f", "imagenet"),  # an ImageNet ResNet's stem: the input picks the decoder
        ((128, 14, 14), (3, 112, 112), "1c2f", "imagenet"),  # the smallest ImageNet-scale input
        ((512, 28, 28), (3, 224, 224), "imagenet", "imagenet"),
        ((640, 8, 8), (3, 32, 32), "imagenet", "imagenet"),  # a wide CIFAR-size model: the channels decide
    ],
)
def test_the_rule_reads_the_channels_and_the_input_side(feature, image, head, decoder):
    assert choose_head(None, "1c2f", feature) == choose_head("auto", "1c2f", feature) == head
    assert choose_decoder("auto", feature, image) == decoder
    assert choose_head("2c2f", "1c2f", feature) == "2c2f" and choose_decoder("cifar", feature, image) == "cifar"


def test_token_features_get_a_token_head_and_other_shapes_need_named_aux_nets():
    assert choose_head(None, "1c2f", (197, 384)) == choose_head("auto", "2c2f", (197, 384)) == "token-cls"
    with pytest.raises(ConfigError, match="name method_options.aux_net"):
        choose_head(None, "1c2f", (4, 8, 8, 8))
    assert choose_head("imagenet", "1c2f", (4, 8, 8, 8)) == "imagenet"  # a named head needs no rule


def test_imagenet_scale_infopro_gets_the_imagenet_head_and_decoder():
    narrow, wide = aux_nets(learner("infopro:softmax", "resnet18", 3, 112, split="units:2,6"))  # 64 and 256 channels
    assert isinstance(narrow.head, AuxClassifier) and isinstance(narrow.decoder, ImageNetDecoder)
    assert isinstance(wide.head, ImageNetHead) and isinstance(wide.decoder, ImageNetDecoder)
    assert narrow.decoder.sizes == [(56, 56), (112, 112)] and len(wide.decoder.sizes) == 4  # 28 -> 112; 7 -> 112


def test_cifar_scale_defaults_are_unchanged():
    (aux,) = aux_nets(learner("infopro", "resnet8", 2, 32))
    assert isinstance(aux.head, AuxClassifier) and isinstance(aux.decoder, Decoder)
    assert len(aux.head.convs) == 1 and len(aux.head.fcs) == 3  # 1c2f: two Linear with a ReLU between
    man = aux_nets(learner("infopro+man", "resnet8", 2, 32))[0]
    assert len(man.head.convs) == 2  # MAN's own CIFAR default, 2c2f
    assert isinstance(aux_nets(learner("dgl", "resnet8", 2, 32))[0].head, MLPSRHead)
    assert isinstance(aux_nets(learner("dgl+man", "resnet8", 2, 32))[0].head, MANDGLHead)


def test_named_nets_are_kept_at_any_scale():
    (aux,) = aux_nets(learner("infopro:softmax", "resnet18", 2, 112, split="units:6", aux_net="1c2f", decoder="cifar"))
    assert isinstance(aux.head, AuxClassifier) and isinstance(aux.decoder, Decoder)
    (auto,) = aux_nets(learner("infopro:softmax", "resnet18", 2, 112, split="units:6", aux_net="auto"))
    assert isinstance(auto.head, ImageNetHead)


def test_dgl_and_greedy_on_wide_features():
    assert isinstance(aux_nets(learner("dgl", "resnet18", 2, 112, split="units:6"))[0].head, ImageNetHead)
    greedy = aux_nets(learner("greedy", "resnet18", 2, 112, split="units:6"))[0].head
    assert isinstance(greedy, AuxClassifier) and len(greedy.convs) == 0  # 0c1f: GAP + linear at any scale


@pytest.mark.parametrize(("channels", "side", "image", "steps"), [(256, 16, 64, 2), (2048, 2, 64, 5), (64, 8, 8, 1)])
def test_the_stepwise_decoder_fits_any_width(channels, side, image, steps):
    decoder = make_decoder("imagenet", channels, (image, image), feature_size=side)
    assert len(decoder.convs) == steps
    out = decoder(torch.randn(2, channels, side, side))
    assert out.shape == (2, 3, image, image) and out.isfinite().all()  # logits of the image


@pytest.mark.parametrize("recipe", SMALL_IMAGE_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_small_image_recipes_keep_the_cifar_nets(recipe):
    """Every CIFAR/SVHN/STL-10 recipe: no boundary of its backbone is ImageNet-scale, so `auto` gives what the
    recipe ran with before (the CIFAR decoder, and the objective's or mechanism's CIFAR head)."""
    cfg = build_config(recipe)
    side = SPECS[cfg.dataset].aug.crop
    feature = (widest_conv(cfg.arch), side, side)
    assert choose_head(None, "1c2f", feature) == "1c2f" and choose_decoder("auto", feature, (3, side, side)) == "cifar"


def profile_json(capsys, *flags: str) -> dict:
    assert main(["profile", "--arch", "resnet50", "--K", "2", "--split", "units:4", "--batch-size", "2",
                 "--image-size", "64", "--method", "infopro:softmax", "--warmup-steps", "0", *flags]) == 0  # fmt: skip
    return capsys.readouterr().out


def test_profile_warns_when_an_aux_net_outweighs_its_stage(capsys):
    """The CIFAR nets on ResNet-50's 256-channel layer1 output (64^2 input) cost more FLOPs than the stem and the
    blocks they train; the automatic ones (ImageNet head and decoder) do not."""
    cifar_nets = ["--set", "method_options.aux_net=1c2f", "--set", "method_options.decoder=cifar"]
    text = profile_json(capsys, *cifar_nets)
    line = next(li for li in text.splitlines() if "warning" in li)
    assert line.startswith(
        "infopro:softmax (units:4), K=2: warning: aux nets cost more than the stage they train: stage 0 ("
    )
    assert "GFLOPs/img" in line
    (row,) = json.loads(profile_json(capsys, *cifar_nets, "--json"))
    assert row["aux_warning"] == line.split(": ", 1)[1]
    stage = row["stages"][0]
    assert stage["aux_train_flops"] > stage["train_flops"] - stage["aux_train_flops"]
    (auto,) = json.loads(profile_json(capsys, "--json"))
    assert auto["aux_warning"] is None and "warning" not in profile_json(capsys)
    assert auto["stages"][0]["aux_train_flops"] < stage["aux_train_flops"] / 2


def test_the_warning_names_each_measure():
    stage = {"stage": 1, "train_flops": 30, "aux_train_flops": 10, "aux_bytes": 2 << 20, "activation_bytes": 1 << 20}
    assert "stage 1 (memory held for backward 2.0 MiB vs 1.0 MiB)" in aux_warning([stage])
    assert aux_warning([{**stage, "aux_bytes": 1 << 20}]) is None
