"""Every aux net starts as the released code initialises it: its model-wide loop covers the aux nets, so convs
are N(0, sqrt(2 / (k*k*out_channels))) and BN is (1, 0), not PyTorch's per-layer default (1.7x-5.6x smaller)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import make_learner
from locallearn.aux import HEAD_CONFIGS, make_decoder, make_head

CIFAR_SETTINGS = [("greedy", {"aux_net": c}) for c in (*HEAD_CONFIGS, "man-dgl")] + [
    ("dgl", {}),  # mlp-sr
    ("infopro:contrast", {}),  # decoder + 1c2f
    ("infopro:softmax+man", {}),  # decoder + 2c2f on the momentum branch
]


def assert_released_init(module: nn.Module) -> int:
    """Check every conv and BN of `module`; returns how many convs were checked."""
    convs = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            expected = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
            assert m.weight.std().item() == pytest.approx(expected, rel=0.2), m
            convs += 1
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
    return convs


@pytest.mark.parametrize(("method", "options"), CIFAR_SETTINGS, ids=lambda v: str(v))
def test_cifar_aux_nets_use_the_released_init(method, options):
    learner = make_learner(method, k=3, **options)
    convs = sum(assert_released_init(owned["aux"]) for owned in learner.owned[:-1])
    assert convs > 0 or options.get("aux_net", "").startswith("0c")


def test_imagenet_aux_nets_use_the_released_init():
    assert assert_released_init(make_head(512, "imagenet", 10)) == 4
    assert assert_released_init(make_decoder("imagenet", 512, (64, 64))) == 4


def test_pytorch_default_init_would_fail_the_check():
    head = nn.Conv2d(16, 32, 3)  # the first conv of a 1c2f head at a 16-channel boundary
    with pytest.raises(AssertionError):
        assert_released_init(head)
