"""ImageNet scale: the papers' split tables, the ImageNet aux nets, the cosine schedule, the imagenet data path and
a one-step run of every configs/imagenet recipe through the CLI on a tiny generated JPEG folder."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from locallearn.aux import ImageNetDecoder, ImageNetHead, make_decoder, make_head
from locallearn.cli import main
from locallearn.config import build_config
from locallearn.data.build import build_data
from locallearn.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from locallearn.errors import ConfigError
from locallearn.methods import MethodOptions, build_learner
from locallearn.models import build_backbone
from locallearn.schedule import lr_at
from locallearn.split import split_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "imagenet"
RECIPES = sorted(CONFIGS.glob("*.yaml"))
# ~10 s for one CPU step (ResNet-152: ~5 s); the ViTs' at 224^2, the only size they take.
HEAVY_ARCHS = ("resnext101_32x8d", "vit-tiny", "vit-small", "vit-base")
SIZE = 32  # the reduced resolution of every test: layer4 ends at 1x1
VIT_SIZE = 224  # a ViT's learned position embedding fixes its input size


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def backbone(arch: str):
    torch.manual_seed(0)
    return build_backbone(arch, 10)


def split(arch: str, k: int, kind):
    return split_model(backbone(arch), k, kind, arch=arch, dataset="imagenet", input_shape=(3, SIZE, SIZE))


# ------------------------------------------------------------------------------------------ split tables

# (arch, [stage, block] that ends module 1): InfoPro's k2_infopro cuts inside layer2, so module 1 ends at 512 ch.
INFOPRO_K2 = [("resnet101", (2, 0)), ("resnet152", (2, 5)), ("resnext101_32x8d", (2, 2))]


@pytest.mark.parametrize(("arch", "cut"), INFOPRO_K2)
def test_infopro_k2_table_cuts_after_layer2_block(arch, cut):
    net = split(arch, 2, None)  # the table is the default split at K=2
    assert net.records[0].last_coord == cut
    assert net.records[0].out_shape == (512, SIZE // 8, SIZE // 8)  # 512 x 28 x 28 at 224


# (arch, K, the last block of every module but the last): MAN/MAN++ K=2/4 and MLAAN's one-block modules.
STEM_MERGED = [
    ("resnet34", 2, [(2, 0)]),
    ("resnet101", 2, [(2, 0)]),
    ("resnet152", 2, [(2, 5)]),
    ("resnext101_32x8d", 2, [(2, 0)]),
    ("resnet101", 4, [(2, 2), (3, 8), (3, 16)]),
    ("resnext101_32x8d", 4, [(2, 2), (3, 8), (3, 16)]),
    ("resnet152", 4, [(2, 6), (3, 13), (3, 25)]),
]


@pytest.mark.parametrize(("arch", "k", "ends"), STEM_MERGED)
def test_man_tables_resolve(arch, k, ends):
    net = split(arch, k, "stem-merged")
    assert [r.last_coord for r in net.records[:-1]] == ends
    assert not net.stem_is_module


@pytest.mark.parametrize(("arch", "k"), [("resnet34", 16), ("resnet101", 33)])
def test_mlaan_tables_put_every_block_in_its_own_module(arch, k):
    net = split(arch, k, "stem-merged")
    assert net.num_stages == k
    assert net.records[0].unit_names == ("stem", "layer1.0")  # the stem is merged into module 1
    assert all(len(r.unit_names) == 1 for r in net.records[1:-1])
    assert net.records[-1].unit_names[-2:] == ("layer4.2", "head")


def test_man_k4_recipe_split_resolves():
    for name in ("resnet101_infopro_man_k4.yaml", "resnet152_infopro_man_k4.yaml"):
        cfg = build_config(CONFIGS / name)
        net = split(cfg.arch, cfg.K, cfg.split)
        assert [r.last_coord for r in net.records[:-1]] == [(3, 0), (3, 9), (3, 17)]


# ------------------------------------------------------------------------------------------ aux nets

# Parameter counts of the released nets at 1000 classes (InfoPro networks/resnet.py; MAN InfoProAux.py).
RELEASED_PARAMS = {
    ("head", 512): 4_643_560,
    ("head", 1024): 5_135_336,
    ("decoder", 512): 106_699,
    ("decoder", 1024): 232_011,
}


@pytest.mark.parametrize(("channels", "spatial"), [(512, 28), (1024, 14)])
def test_imagenet_aux_nets_match_the_released_shapes(channels, spatial):
    h = torch.randn(2, channels, spatial, spatial)
    decoder, head = ImageNetDecoder(channels, (224, 224)), ImageNetHead(channels, 1000)
    out = decoder(h)
    assert out.shape == (2, 3, 224, 224) and out.isfinite().all()  # the image's logits
    assert head(h).shape == (2, 1000)
    assert sum(p.numel() for p in head.parameters()) == RELEASED_PARAMS["head", channels]
    assert sum(p.numel() for p in decoder.parameters()) == RELEASED_PARAMS["decoder", channels]


@pytest.mark.parametrize(("channels", "spatial"), [(512, 4), (1024, 2), (1024, 1)])
def test_imagenet_aux_nets_at_reduced_resolution(channels, spatial):
    h = torch.randn(4, channels, spatial, spatial)
    assert ImageNetDecoder(channels, (SIZE, SIZE))(h).shape == (4, 3, SIZE, SIZE)
    assert ImageNetHead(channels, 7)(h).shape == (4, 7)


def test_aux_factories_name_what_they_accept():
    assert isinstance(make_head(512, "imagenet", 10), ImageNetHead)
    assert isinstance(make_decoder("imagenet", 1024, (SIZE, SIZE)), ImageNetDecoder)
    with pytest.raises(ConfigError, match="imagenet"):
        make_head(512, "4c4f", 10)
    with pytest.raises(ConfigError, match="cifar, imagenet"):
        make_decoder("vae", 512, (SIZE, SIZE))
    with pytest.raises(ConfigError, match="decoder: auto or cifar"):
        ImageNetDecoder(256, (SIZE, SIZE))  # no released layers for 256 channels, and no feature size to build them


def test_infopro_builds_imagenet_aux_nets_with_a_constant_lambda():
    options = MethodOptions(aux_net="imagenet", decoder="imagenet", ixx_1=5, ixy_1=0.75, ixx_2=5, ixy_2=0.75)
    net = split("resnet101", 4, [[2, 2], [3, 8], [3, 16]])
    learner = build_learner("infopro:softmax", net, num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3, options=options)
    for k in range(3):
        aux = learner.owned[k]["aux"]
        assert isinstance(aux.head, ImageNetHead) and isinstance(aux.decoder, ImageNetDecoder)
        assert (aux.lambda_rec, aux.lambda_task) == (5, 0.75)


# ------------------------------------------------------------------------------------------ schedule


def test_cosine_is_the_imagenet_rule_on_the_zero_based_epoch():
    lr0, epochs = 0.4, 90
    assert lr_at(0, epochs, lr0, "cosine") == pytest.approx(lr0)  # no blend: the first epoch runs at lr0
    assert lr_at(45, epochs, lr0, "cosine") == pytest.approx(lr0 / 2)
    assert lr_at(89, epochs, lr0, "cosine") == pytest.approx(0.5 * lr0 * (1 + math.cos(math.pi * 89 / 90)))
    # `paper-cos` without its blend is the same curve one epoch later (the CIFAR scripts count epochs from 1).
    assert lr_at(10, epochs, lr0, "paper-cos", warmup_epochs=0) == pytest.approx(lr_at(11, epochs, lr0, "cosine"))


# ------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    """train/ and val/ with 2 classes of small random JPEGs (4 train, 2 val images each)."""
    pil = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split_name, n in (("train", 4), ("val", 2)):
        for cls in ("n01", "n02"):
            (root / split_name / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                pil.fromarray(pixels).save(root / split_name / cls / f"{cls}_{i}.JPEG")
    return root


def test_imagenet_data_path(jpeg_folder):
    cfg = build_config(
        None, {"dataset": "imagenet", "data_dir": str(jpeg_folder), "batch_size": 3}, ["image_size=32", "workers=0"]
    )
    data = build_data(cfg, torch.device("cpu"))
    assert (data.num_classes, data.image_shape, len(data.train)) == (2, (3, SIZE, SIZE), 3)
    x, y = next(iter(data.train))
    assert x.shape == (3, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert (data.mean, data.std) == (IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(ConfigError, match="data_dir"):
        build_data(build_config(None, {"dataset": "imagenet"}), torch.device("cpu"))


# ------------------------------------------------------------------------------------------ recipes


HEAVY_RECIPES = ("resnet101_mlaan_k33",)  # 23 leap chains of layer4 copies: ~50 s and ~6 GB for one CPU step


def _params(recipe: Path):
    cfg = build_config(recipe)
    heavy = cfg.arch in HEAVY_ARCHS or recipe.stem in HEAVY_RECIPES
    return pytest.param(recipe, marks=[pytest.mark.slow] if heavy else [], id=recipe.stem)


def test_every_imagenet_recipe_names_its_source():
    assert len(RECIPES) >= 18
    for recipe in RECIPES:
        cfg = build_config(recipe)
        assert (cfg.dataset, cfg.schedule, cfg.image_size) == ("imagenet", "cosine", 224)
        assert yaml.safe_load(recipe.read_text())["reproduces"]


@pytest.mark.parametrize("recipe", [_params(r) for r in RECIPES])
def test_recipe_trains_one_step(recipe, jpeg_folder, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--config", str(recipe), "--data-dir", str(jpeg_folder), "--out", str(out), "--no-progress"]
    argv += ["--epochs", "1", "--train-limit", "4", "--test-limit", "4", "--batch-size", "4"]
    cfg = build_config(recipe)
    size = VIT_SIZE if cfg.arch.startswith("vit") else SIZE
    argv += ["--set", f"image_size={size}", "--set", "workers=0"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["arch"], summary["K"], summary["epochs"]) == (cfg.arch, cfg.K, 1)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert len(record["train_loss"]) == cfg.K and all(math.isfinite(v) for v in record["train_loss"])
    assert record["lr"] == pytest.approx(cfg.lr)  # cosine: the first epoch runs at the full lr, no warm-up blend
    (out / "last.pt").unlink()  # 0.4-1 GB for these nets: do not leave it in the kept pytest tmp dirs
