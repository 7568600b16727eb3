"""Models that are not chains (classes whose forward calls their children) split by torch.fx tracing."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from helpers import CIFAR_MEAN, CIFAR_STD, each_stage_loss_alone, stages_reached
from locallearn.api import stage_optimizers
from locallearn.cli import main
from locallearn.config import build_config
from locallearn.engine.local import LocalEngine
from locallearn.engine.trainer import build_model
from locallearn.errors import ConfigError
from locallearn.methods import build_learner
from locallearn.models import as_backbone, build_backbone
from locallearn.split import split_model
from traced_models import DataDependent, LongSkip, ResNet


def test_a_class_based_resnet_becomes_units_at_its_blocks():
    backbone = as_backbone(ResNet())
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in (0, 1)]
    assert backbone.unit_names == ["conv1", "bn1", *blocks, "fc"]


@pytest.mark.parametrize(
    ("k", "split", "cuts", "expected"),
    [
        (3, None, ["layer2.0", "layer3.0"], [3, 5]),
        (3, None, ["layer3", "layer2"], [3, 5]),  # a container begins where its first block does; any order
        (4, "even", None, None),
        (4, "even-memory", None, None),
    ],
)
def test_stages_in_order_equal_the_model(k, split, cuts, expected):
    model = ResNet().eval()
    net = split_model(as_backbone(model), k, split, cuts=cuts).eval()
    assert net.num_stages == k
    if expected is not None:
        assert net.cuts == expected
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)


def test_units_share_the_models_weights():
    model = ResNet()
    net = split_model(as_backbone(model), 3, cuts=["layer2.0", "layer3.0"])
    ours = {id(p) for p in net.parameters()}
    assert ours == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("method", ["greedy", "infopro"])
def test_a_traced_model_trains_with_isolated_stages(method):
    model = ResNet()
    net = split_model(as_backbone(model), 3, cuts=["layer2.0", "layer3.0"])
    learner = build_learner(method, net, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for k in each_stage_loss_alone(learner, x, y):  # stage k's loss reaches stage k's parameters and no others
        assert stages_reached(learner) == [j == k for j in range(3)]
    before = [p.detach().clone() for p in model.parameters()]
    engine = LocalEngine(learner, stage_optimizers(learner, torch.optim.SGD, lr=0.1))
    engine.train_step(x, y)
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))  # the model trained


def test_a_cut_inside_a_skip_connection_is_refused_with_the_tensors_and_nearest_cuts():
    backbone = as_backbone(LongSkip())
    assert backbone.unit_names == ["stem", "body", "tail", "fc"]  # the skipped-over span (and the add) is one unit
    with pytest.raises(ConfigError) as e:
        split_model(backbone, 2, cuts=["body.1"])
    message = str(e.value)
    assert "cannot begin a stage at 'body.1': 2 tensors cross into 'body.1'" in message
    assert "'body_0_1' from body.0.1" in message and "'stem' from stem" in message
    assert message.endswith("the nearest cuts are 'body' or 'tail'")


def test_a_cut_in_a_blocks_interior_is_refused_and_unknown_names_list_the_valid_ones():
    backbone = as_backbone(ResNet())
    with pytest.raises(
        ConfigError, match=r"'layer2\.0\.conv2': 2 tensors cross .* nearest cuts are 'layer2\.0' or 'layer2\.1'"
    ):
        split_model(backbone, 2, cuts=["layer2.0.conv2"])
    with pytest.raises(ConfigError, match=r"runs no module named 'layer9'; stages can begin at bn1, layer1\.0"):
        split_model(backbone, 2, cuts=["layer9"])
    with pytest.raises(ConfigError, match="cannot begin at 'fc'"):
        split_model(backbone, 2, cuts=["fc"])
    with pytest.raises(ConfigError, match="not both"):
        split_model(backbone, 2, "even", cuts=["layer2.0"])


def test_data_dependent_control_flow_names_the_failing_line():
    with pytest.raises(ConfigError) as e:
        as_backbone(DataDependent())
    message = str(e.value)
    assert message.startswith("cannot trace DataDependent with torch.fx: symbolically traced variables cannot be used")
    assert "traced_models.py:" in message and "in forward(): `if h.mean() > 0:`" in message


def test_the_run_config_takes_cuts_and_a_traced_arch():
    flags = {"arch": "traced_models:ResNet", "method": "greedy", "K": 3, "cuts": ["layer2.0", "layer3.0"]}
    cfg = build_config(None, flags, [])
    learner = build_model(cfg, (3, 32, 32), 10, mean=CIFAR_MEAN, std=CIFAR_STD, device=torch.device("cpu"))
    assert [r.unit_names[0] for r in learner.net.records] == ["conv1", "layer2.0", "layer3.0"]


def test_train_runs_a_traced_model_cut_by_name_on_the_bundled_sample(tmp_path, capsys):
    args = ["--arch", "traced_models:ResNet", "--method", "infopro", "--K", "3", "--cuts", "layer2.0,layer3.0"]
    quick = ["--train-limit", "64", "--test-limit", "32", "--batch-size", "32", "--epochs", "1", "--threads", "1"]
    assert main(["train", *args, *quick, "--no-progress", "--out", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["K"] == 3 and len(summary["stage_acc"]) == 3
    saved = build_config(str(tmp_path / "run" / "config.yaml"), {}, [])
    assert saved.cuts == ["layer2.0", "layer3.0"]


def test_registered_backbones_take_cuts_by_unit_name():
    net = split_model(build_backbone("resnet18", 10), 3, cuts=["layer2.0", "layer4.0"], input_shape=(3, 32, 32))
    assert [r.unit_names[0] for r in net.records] == ["stem", "layer2.0", "layer4.0"]


class _Tied(nn.Module):
    """One convolution used twice: the span between its uses stays in one unit."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.middle = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(self.middle(self.shared(self.stem(x))))
        return self.fc(h.mean((2, 3)))


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x * mask)


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x), x


def test_weights_used_twice_stay_in_one_stage():
    backbone = as_backbone(_Tied())
    assert backbone.unit_names == ["stem", "shared", "fc"]
    with pytest.raises(ConfigError, match="'middle' runs between two uses of the same weights"):
        split_model(backbone, 2, cuts=["middle"])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_TwoInputs(), r"_TwoInputs\.forward uses 2 inputs \(x, mask\)"),
        (_TwoOutputs(), r"_TwoOutputs\.forward returns tuple; it must return the logits tensor"),
    ],
)
def test_models_that_are_not_one_tensor_in_one_out_are_refused(model, message):
    with pytest.raises(ConfigError, match=message):
        as_backbone(model)
