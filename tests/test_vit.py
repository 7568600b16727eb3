"""Vision Transformers: the backbones' shapes and units, their splits, and local learning on token features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import ALL_LAMBDAS_ONE, each_stage_loss_alone, make_learner, random_batch, stages_reached
from locallearn.api import stage_optimizers
from locallearn.aux import TokenGrid, TokenHead
from locallearn.cli import main
from locallearn.config import build_config, load_recipe
from locallearn.engine.local import LocalEngine
from locallearn.engine.trainer import build_optimizers
from locallearn.errors import ConfigError
from locallearn.models import MODELS, build_backbone
from locallearn.models.vit import Block, PatchEmbed
from locallearn.split import split_model

# (parameters at 1000 classes, width, heads): the standard ViT-T/S/B/16 sizes.
STANDARD = {"vit-tiny": (5_717_416, 192, 3), "vit-small": (22_050_664, 384, 6), "vit-base": (86_567_656, 768, 12)}


@pytest.mark.parametrize("arch", ["vit-tiny", "vit-small", pytest.param("vit-base", marks=pytest.mark.slow)])
def test_standard_vits_have_the_standard_sizes(arch):
    model = MODELS.get(arch)(num_classes=1000)
    params, width, heads = STANDARD[arch]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.units) == 14 and model.unit_names[1] == "blocks.0" and model.unit_names[-1] == "head"
    assert all(block.attn.heads == heads and block.norm1.normalized_shape == (width,) for block in model.units[1:-1])
    assert model.units[0].pos_embed.shape == (1, 197, width)  # class token + 14 x 14 patches


def test_units_map_images_to_tokens_to_logits():
    model = build_backbone("vit-cifar", 10)
    assert isinstance(model.units[0], PatchEmbed) and isinstance(model.units[-1], TokenHead)
    assert all(isinstance(u, Block) for u in model.units[1:-1])
    assert model.coords == [(0, 0), *((1, b) for b in range(8)), None]
    x = torch.randn(2, 3, 32, 32)
    tokens = model.units[0](x)
    assert tokens.shape == (2, 65, 192)  # class token + 8 x 8 patches of 4 x 4 pixels
    assert model.units[1](tokens).shape == (2, 65, 192)
    assert model(x).shape == (2, 10)


def test_a_vit_refuses_an_image_of_another_size():
    with pytest.raises(ConfigError, match="takes 32x32 images, got 64x64; give it 32x32 images"):
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


# ----------------------------------------------------------------------------------------- token aux nets
def test_token_head_is_layernorm_then_the_pooled_token_then_linear():
    h = torch.randn(3, 65, 192)
    for pool, pooled in (("cls", lambda t: t[:, 0]), ("mean", lambda t: t[:, 1:].mean(1))):
        head = TokenHead(192, 10, pool)
        expected = head.fc(pooled(torch.nn.functional.layer_norm(h, (192,), head.norm.weight, head.norm.bias, 1e-6)))
        torch.testing.assert_close(head(h), expected)


def test_token_grid_drops_the_class_token_and_keeps_the_row_major_patch_order():
    h = torch.randn(2, 1 + 4 * 4, 5)
    grid = TokenGrid(4)(h)  # (2, 5, 4, 4)
    assert grid.shape == (2, 5, 4, 4)
    torch.testing.assert_close(grid[:, :, 2, 3], h[:, 1 + 2 * 4 + 3])


def test_token_heads_are_refused_on_feature_maps():
    with pytest.raises(ConfigError, match="aux head 'token-mean' reads token features"):
        make_learner("greedy", k=2, arch="resnet8", aux_net="token-mean")


def _isolation_step(learner) -> None:
    """Every stage's loss reaches its own stage (and at most `window - 1` before it)."""
    for k in each_stage_loss_alone(learner, *random_batch(4)):
        window = [k - learner.window < j <= k for j in range(learner.num_stages)]
        assert stages_reached(learner) == window, f"stage {k}'s loss"


VIT_METHODS = ["greedy", "dgl", "infopro", "dgl+man", "dgl+man++", "infopro+man++", "dgl+mlaan"]


@pytest.mark.parametrize("method", VIT_METHODS)
def test_a_vit_trains_a_step_with_isolated_stages(method):
    learner = make_learner(method, k=4, arch="vit-cifar", **ALL_LAMBDAS_ONE)
    aux = learner.owned[0]["aux"]
    assert isinstance(getattr(aux, "head", None), TokenHead)  # the task head reads the class token
    if method.startswith("infopro"):
        assert isinstance(aux.decoder[0], TokenGrid)  # the decoder reads the patch grid
    _isolation_step(learner)
    engine = LocalEngine(learner, stage_optimizers(learner, torch.optim.SGD, lr=0.05))
    before = [p.detach().clone() for p in learner.net.parameters()]
    engine.train_step(*random_batch(8))
    stats = engine.reset_stats()
    assert torch.isfinite(stats.loss).all()
    assert all(not torch.equal(a, b) for a, b in zip(before, learner.net.parameters(), strict=True))


def test_contsup_is_refused_on_tokens():
    with pytest.raises(ConfigError, match="contsup adds image-shaped contexts .* carry tokens"):
        make_learner("infopro+contsup:R1E", k=3, arch="vit-cifar")


# ----------------------------------------------------------------------------------------- MAN / MAN++ on blocks
def test_manpp_vit_aux_net_is_the_released_one():
    """s * LB(h) + (2 - s) * EMA(h) on copies of the next stage's first block, a trainable copy of its second
    block, then LayerNorm and a Linear on the class token."""
    learner = make_learner("dgl+man++", k=4, arch="vit-cifar", manpp_stem_module=False)
    assert learner.num_stages == 4
    branch, head = learner.owned[1]["momentum"], learner.owned[1]["aux"].head
    assert isinstance(branch.trainable, Block) and isinstance(branch.twin, Block) and len(branch.tail) == 1
    assert isinstance(branch.tail[0], Block) and not list(branch.twin.parameters())  # the twin holds buffers
    with torch.no_grad():
        branch.scale.fill_(0.7)
    h = torch.randn(2, 65, 192)
    fused = 0.7 * branch.trainable(h) + 1.3 * branch.twin(h)
    expected = head.fc(head.norm(branch.tail[0](fused))[:, 0])
    torch.testing.assert_close(learner.owned[1]["aux"].predict(learner.aux_feature(1, h)), expected)
    # The twin tracks the next stage's first block (units 5 and 6 of stage 2 with two blocks per stage).
    assert learner.net.records[2].unit_names[:2] == ("blocks.4", "blocks.5")
    assert learner.mechanisms[0].sources[1] is learner.net.stages[2][0]


def test_man_aux_blocks_is_checked_against_the_next_stage():
    with pytest.raises(ConfigError, match="copies 3 blocks of stage 1, which has 2; set method_options.man_aux_blocks"):
        make_learner("greedy+man", k=4, arch="vit-cifar", man_aux_blocks=3)
    learner = make_learner("greedy+man", k=4, arch="resnet8", man_aux_blocks=1)
    assert len(learner.owned[0]["momentum"].tail) == 0  # feature maps: one block, as the released CNN code


# ----------------------------------------------------------------------------------------- recipes
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(("size", "name"), [("tiny", "ViT-Tiny"), ("small", "ViT-Small"), ("base", "ViT-Base")])
def test_manpp_vit_recipes_carry_the_released_settings(size, name):
    recipe = CONFIGS / "imagenet" / f"vit_{size}_manpp_k4.yaml"
    cfg = build_config(recipe)
    assert f"MAN++ K=4, {name}/16" in load_recipe(recipe)["reproduces"]
    assert (cfg.arch, cfg.method, cfg.K, cfg.image_size) == (f"vit-{size}", "greedy+man++", 4, 224)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == ("adamw", 1e-3, 0.05, 1024, 90)
    o = cfg.method_options
    assert (o.manpp_stem_module, o.man_aux_blocks, o.ema_momentum) == (False, 2, 0.995)
    # Four equal groups of three blocks; checked on the backbone without building the learner (fast).
    net = split_model(
        MODELS.get("vit-tiny")(num_classes=1000), cfg.K, cfg.split, arch=cfg.arch, input_shape=(3, 224, 224)
    )
    assert [r.unit_names[-1] for r in net.records] == ["blocks.2", "blocks.5", "blocks.8", "head"]


@pytest.mark.parametrize("method", [None, "greedy", "dgl", "dgl+man", "infopro"])
def test_cifar_vit_recipe_trains_on_the_bundled_sample(tmp_path, method):
    """The recipe (dgl+man++), and the same ViT under the other objectives and MAN."""
    recipe = CONFIGS / "cifar10" / "vit_cifar_dgl_manpp_k4.yaml"
    out = tmp_path / "run"
    argv = ["train", "--config", str(recipe), "--dataset", "cifar10-sample", "--out", str(out), "--no-progress"]
    argv += ["--method", method] if method else []
    argv += ["--epochs", "1", "--train-limit", "32", "--test-limit", "16", "--batch-size", "16", "--threads", "1"]
    assert main([*argv, "--skip-memory-check"]) == 0  # the pre-flight check has its own tests; it doubles the time
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert len(record["train_loss"]) == 4 and all(math.isfinite(v) for v in record["train_loss"])
    assert json.loads((out / "summary.json").read_text())["arch"] == "vit-cifar"


def test_profile_reports_vit_memory_and_flops(capsys):
    argv = ["profile", "--arch", "vit-cifar", "--method", "e2e,greedy", "--K", "4", "--image-size", "32"]
    assert main([*argv, "--batch-size", "4", "--threads", "1", "--json"]) == 0
    e2e, greedy = json.loads(capsys.readouterr().out)
    assert (greedy["arch"], greedy["K"], len(greedy["stages"])) == ("vit-cifar", 4, 4)
    # Four stages of two blocks each: a local step holds about one stage's activations, E2E all of them.
    assert greedy["held_bytes"] < e2e["held_bytes"] / 2 and greedy["peak_bytes"] < e2e["peak_bytes"]
    assert all(s["train_flops"] > 0 and s["activation_bytes"] > 0 for s in greedy["stages"])


def test_the_vit_recipes_optimizer_is_adamw_per_stage():
    cfg = build_config(CONFIGS / "cifar10" / "vit_cifar_dgl_manpp_k4.yaml")
    learner = make_learner(cfg.method, k=cfg.K, arch=cfg.arch, manpp_stem_module=False)
    optimizers = build_optimizers(learner, cfg)
    assert len(optimizers) == 4 and all(isinstance(o, torch.optim.AdamW) for o in optimizers)
    assert all(o.defaults["lr"] == 1e-3 and o.defaults["weight_decay"] == 0.05 for o in optimizers)
    assert [o.param_groups[0]["params"] for o in optimizers] == [learner.stage_parameters(k) for k in range(4)]
