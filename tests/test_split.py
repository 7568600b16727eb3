"""The splitter: paper tables, automatic balancing, explicit cuts, measured records, composition."""

from __future__ import annotations

import pytest
import torch

from locallearn.errors import ConfigError
from locallearn.models import build_backbone, list_archs
from locallearn.split import balanced_cuts, split_model, split_tables

SMALL_INPUT = {"resnet18": 64, "resnet34": 64, "resnet50": 64, "resnet101": 64, "resnet152": 64, "resnext101_32x8d": 64}
# A ViT's learned position embedding fixes its input size.
INPUT = {"vit-tiny": 224, "vit-small": 224, "vit-base": 224}
SLOW_ARCHS = ("vit-small", "vit-base")  # 3-10 s each on two cores; ViT-Tiny covers the same code in the default suite


@pytest.mark.parametrize(
    "arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_ARCHS else a for a in list_archs()]
)
def test_stages_compose_to_the_unsplit_forward(arch):
    size = INPUT.get(arch, SMALL_INPUT.get(arch, 32))
    backbone = build_backbone(arch, 10).eval()
    n_units = len(backbone.units)
    x = torch.randn(2, 3, size, size)
    expected = backbone(x)
    for k in sorted({2, 3, min(8, n_units - 1)}):
        net = split_model(backbone, k, "even", arch=arch, input_shape=(3, size, size)).eval()
        h = x
        for stage in net.stages:
            h = stage(h)
        torch.testing.assert_close(h, expected, rtol=0, atol=0)
        assert net.records[-1].out_shape == (10,)


@pytest.mark.parametrize("arch", ["resnet32", "resnet110"])
@pytest.mark.parametrize("k", [2, 3, 4, 8, 16])
def test_infopro_tables_resolve_to_the_documented_blocks(arch, k):
    backbone = build_backbone(arch, 10)
    net = split_model(backbone, k, "table", arch=arch)
    coords = [list(net.coords[c]) for c in net.cuts]
    assert coords == split_tables()["infopro"][arch][k]
    assert net.num_stages == k


def test_resnet32_k4_records_are_measured():
    net = split_model(build_backbone("resnet32", 10), 4, "table", arch="resnet32")
    # blocks per module 3, 4, 4, 4 (+ stem in module 1, head in module 4)
    assert [len(r.unit_names) for r in net.records] == [4, 4, 4, 5]
    assert [r.out_shape for r in net.records] == [(16, 32, 32), (32, 16, 16), (64, 8, 8), (10,)]
    assert sum(r.params for r in net.records) == sum(p.numel() for p in net.parameters())
    assert not net.stem_is_module


def test_resnet32_k16_has_the_stem_as_a_module():
    net = split_model(build_backbone("resnet32", 10), 16, "table", arch="resnet32")
    assert net.stem_is_module and net.records[0].unit_names == ("stem",)


def test_memory_balanced_infopro_star_tables():
    backbone = build_backbone("resnet110", 10)
    net = split_model(backbone, 3, "balanced-memory", arch="resnet110", dataset="stl10")
    assert [list(net.coords[c]) for c in net.cuts] == [[1, 8], [2, 1]]
    net = split_model(backbone, 4, "balanced-memory", arch="resnet110", dataset="cifar10")
    assert [list(net.coords[c]) for c in net.cuts] == [[1, 6], [1, 14], [2, 8]]
    with pytest.raises(ConfigError, match="for dataset 'svhn'.*even-memory"):
        split_model(backbone, 4, "balanced-memory", arch="resnet110", dataset="svhn")


def test_balanced_dp_minimises_the_largest_part():
    assert balanced_cuts([1, 1, 1, 1], 2) == [1]
    assert balanced_cuts([5, 1, 1, 1, 1, 1], 2) == [0]
    assert balanced_cuts([1, 2, 3, 4, 5, 6], 3) == [2, 4]


def test_even_split_balances_flops():
    net = split_model(build_backbone("resnet110", 10), 4, "even", arch="resnet110")
    flops = [r.flops for r in net.records]
    assert max(flops) / min(flops) < 1.15


def test_explicit_cuts_by_coordinates_and_units():
    backbone = build_backbone("resnet32", 10)
    a = split_model(backbone, 3, [[1, 4], [2, 4]], arch="resnet32")
    b = split_model(backbone, 3, "units:5,10", arch="resnet32")
    c = split_model(backbone, 3, "[[1, 4], [2, 4]]", arch="resnet32")
    assert a.cuts == b.cuts == c.cuts == [5, 10]


def test_user_sequential_model_splits_by_k():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
    from locallearn.models import as_backbone

    net = split_model(as_backbone(model), 3, "even", arch="mine")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), model(x))


@pytest.mark.parametrize(
    ("k", "split", "message"),
    [
        (40, None, "larger than"),
        (4, "[[1, 9], [2, 1], [3, 0]]", "does not exist"),
        (3, "units:5,5", "strictly increasing"),
        (3, "units:5", "gives 2 stages"),
        (5, "table", "no 'table' split"),
        (2, "nonsense", "unknown split"),
    ],
)
def test_bad_splits_name_the_problem(k, split, message):
    with pytest.raises(ConfigError, match=message):
        split_model(build_backbone("resnet32", 10), k, split, arch="resnet32")


def test_measuring_does_not_change_the_model():
    backbone = build_backbone("resnet32", 10)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    split_model(backbone, 4, "even-memory", arch="resnet32")
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
