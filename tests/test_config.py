"""Recipes and config resolution: every recipe builds; bad keys and values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from locallearn.config import build_config, config_from_dict, load_recipe
from locallearn.errors import ConfigError
from locallearn.methods import build_learner
from locallearn.models import build_backbone
from locallearn.split import split_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.rglob("*.yaml"))
IMAGE_SIZE = {"stl10": 96}


def test_there_are_recipes():
    assert len(RECIPES) >= 20


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_recipe_builds(recipe):
    cfg = build_config(recipe)
    size = IMAGE_SIZE.get(cfg.dataset, 224 if cfg.dataset == "imagenet" else 32)
    classes = 1000 if cfg.dataset == "imagenet" else 10
    net = split_model(
        build_backbone(cfg.arch, classes),
        cfg.K,
        cfg.split,
        arch=cfg.arch,
        dataset=cfg.dataset,
        input_shape=(3, size, size),
    )
    learner = build_learner(
        cfg.method, net, num_classes=classes, mean=(0.5,) * 3, std=(0.5,) * 3, options=cfg.method_options
    )
    assert learner.num_stages >= 1


def test_flags_override_the_recipe_and_set_overrides_flags():
    recipe = CONFIGS / "cifar10" / "resnet32_infopro_k4.yaml"
    cfg = build_config(recipe, {"epochs": 3, "lr": None}, ["method_options.ixx_1=2.5", "batch_size=64"])
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.method_options.ixx_1) == (3, 0.8, 64, 2.5)
    assert cfg.method_options.ixy_2 == 2.0  # from the recipe


def test_unknown_recipe_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("arch: resnet32\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        build_config(bad)
    bad.write_text("method_options:\n  lambda: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'method_options.lambda'"):
        build_config(bad)


@pytest.mark.parametrize(
    ("flags", "message"),
    [({"epochs": 0}, "epochs"), ({"schedule": "linear"}, "schedule"), ({"amp": "fp8"}, "amp")],
)
def test_bad_values_are_named(flags, message):
    with pytest.raises(ConfigError, match=message):
        build_config(None, flags)


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="not found"):
        build_config("no/such/recipe.yaml")


def test_e2e_forces_one_module():
    assert build_config(None, {"method": "e2e", "K": 8}).K == 1


@pytest.mark.parametrize(("method", "message"), [("nope", "unknown method 'nope'"), ("greedy+foo", "mechanism")])
def test_unknown_methods_are_named(method, message):
    net = split_model(build_backbone("resnet8", 10), 2, arch="resnet8")
    with pytest.raises(ConfigError, match=message):
        build_learner(method, net, num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_unknown_arch_is_named():
    with pytest.raises(ConfigError, match="unknown arch 'resnet7'"):
        build_backbone("resnet7", 10)


MAN_ROWS = [(arch, k) for arch, ks in (("resnet32", (8, 16)), ("resnet110", (32, 55))) for k in ks]


@pytest.mark.parametrize("mechanism", ["man", "manpp"])
@pytest.mark.parametrize("objective", ["infopro", "dgl"])
@pytest.mark.parametrize(("arch", "k"), MAN_ROWS)
def test_every_man_paper_cifar_row_has_a_recipe(mechanism, objective, arch, k):
    recipe = CONFIGS / "cifar10" / f"{arch}_{objective}_{mechanism}_k{k}.yaml"
    cfg = build_config(recipe)
    # The papers' one-module-per-block "K=16"/"K=55" count the stem: 15 and 54 stem-merged modules here.
    assert {16: 15, 55: 54}.get(k, k) == cfg.K and cfg.split == "stem-merged"
    assert cfg.method.endswith("+man" if mechanism == "man" else "+man++")
    assert (cfg.epochs, cfg.amp, cfg.method_options.ema_momentum) == (400, "none", 0.995)
    row = f"{'InfoPro' if objective == 'infopro' else 'DGL'} + {'MAN' if mechanism == 'man' else 'MAN++'}, {arch} K={k}"
    assert row in load_recipe(recipe)["reproduces"]


def test_numbers_written_without_a_dot_are_numbers(tmp_path):
    """YAML reads `1e-3` as text; recipes, flags and --set all turn it into the field's type."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 1e-2\nepochs: 1e2\nmethod_options:\n  temperature: 5e-2\n")
    cfg = build_config(recipe)
    assert (cfg.lr, cfg.epochs, cfg.method_options.temperature) == (0.01, 100, 0.05)
    assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int)
    cfg = build_config(None, {"lr": "2e-3"}, ["weight_decay=5e-4", "milestones=[1, 0.5]", "data_dir=2024"])
    assert (cfg.lr, cfg.weight_decay, cfg.milestones, cfg.data_dir) == (0.002, 0.0005, [1.0, 0.5], "2024")
    assert build_config(None, None, ["train_limit=null", "threads=2"]).train_limit is None


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("lr=true", "a number (float, e.g. 0.1 or 1e-3); got true"),
        ("lr=abc", 'a number (float, e.g. 0.1 or 1e-3); got "abc"'),
        ("lr=.inf", "a number (float, e.g. 0.1 or 1e-3); got Infinity"),
        ("K=2.5", "a whole number (int); got 2.5"),
        ("K=true", "a whole number (int); got true"),
        ("compile=1", "true or false (bool); got 1"),
        ("method=null", "a string (str); got null"),
        ("train_limit=[1]", "a whole number (int) or null; got [1]"),
        ("milestones=[0.5, x]", 'a list of numbers (list[float]); got [0.5, "x"]'),
        ("method_options.ixx_1=no", "a number (float, e.g. 0.1 or 1e-3); got false"),
    ],
)
def test_a_value_of_the_wrong_type_names_key_value_and_type(override, expected):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as e:
        build_config(None, None, [override])
    assert str(e.value) == f"'{key}' in --set {override} must be {expected}"


def test_a_saved_config_round_trips_through_the_type_checks():
    cfg = build_config(None, {"lr": 0.1, "split": [[1, 2], [2, 1]], "K": 3}, ["method_options.aux_net=1c2f"])
    assert config_from_dict(cfg.to_dict()) == cfg
