"""Vision Transformers: the backbones' shapes and units, their splits, and local learning on token features."""

from __future__ import annotations

import pytest
import torch

from locallearn.errors import ConfigError
from locallearn.models import MODELS, build_backbone
from locallearn.models.vit import Block, PatchEmbed, TokenClassifier
from locallearn.split import split_model

# (parameters at 1000 classes, width, heads): the standard ViT-T/S/B/16 sizes.
STANDARD = {"vit-tiny": (5_717_416, 192, 3), "vit-small": (22_050_664, 384, 6), "vit-base": (86_567_656, 768, 12)}


@pytest.mark.parametrize("arch", STANDARD)
def test_standard_vits_have_the_standard_sizes(arch):
    model = MODELS.get(arch)(num_classes=1000)
    params, width, heads = STANDARD[arch]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.units) == 14 and model.unit_names[1] == "blocks.0" and model.unit_names[-1] == "head"
    assert all(block.attn.heads == heads and block.norm1.normalized_shape == (width,) for block in model.units[1:-1])
    assert model.units[0].pos_embed.shape == (1, 197, width)  # class token + 14 x 14 patches


def test_units_map_images_to_tokens_to_logits():
    model = build_backbone("vit-cifar", 10)
    assert isinstance(model.units[0], PatchEmbed) and isinstance(model.units[-1], TokenClassifier)
    assert all(isinstance(u, Block) for u in model.units[1:-1])
    assert model.coords == [(0, 0), *((1, b) for b in range(8)), None]
    x = torch.randn(2, 3, 32, 32)
    tokens = model.units[0](x)
    assert tokens.shape == (2, 65, 192)  # class token + 8 x 8 patches of 4 x 4 pixels
    assert model.units[1](tokens).shape == (2, 65, 192)
    assert model(x).shape == (2, 10)


def test_a_vit_refuses_an_image_of_another_size():
    with pytest.raises(ConfigError, match="takes 32x32 images, got 64x64; set image_size: 32"):
        build_backbone("vit-cifar", 10)(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("split", ["even", "even-memory"])
@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_balancers_give_equal_block_groups(split, k):
    """All blocks cost the same, so the balancers cut the depth evenly (the embedding and head ride along)."""
    net = split_model(build_backbone("vit-cifar", 10), k, split, arch="vit-cifar")
    blocks = [sum(name.startswith("blocks.") for name in r.unit_names) for r in net.records]
    assert sum(blocks) == 8 and max(blocks) - min(blocks) <= 1
    assert [r.out_shape for r in net.records[:-1]] == [(65, 192)] * (k - 1)
    assert net.records[-1].out_shape == (10,)


def test_explicit_cuts_by_block_coordinates():
    net = split_model(build_backbone("vit-cifar", 10), 4, [[1, 1], [1, 3], [1, 5]], arch="vit-cifar")
    assert [r.unit_names[-1] for r in net.records] == ["blocks.1", "blocks.3", "blocks.5", "head"]
