"""The public Python API: create_learner, stage_optimizers, the engine's hooks, and export()."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

import locallearn
from helpers import CIFAR_MEAN, CIFAR_STD
from locallearn.engine.step import autocast_context
from locallearn.models import build_backbone
from locallearn.split import split_model
from traced_models import ResNet


def test_importing_the_package_imports_nothing_heavy():
    code = "import sys, locallearn; print('torch' in sys.modules, sorted(locallearn.__all__)[:2])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "False"
    assert locallearn.create_learner is locallearn.api.create_learner  # resolved on first use


def test_create_learner_from_an_arch_name_and_from_a_module():
    by_name = locallearn.create_learner("resnet32", "infopro+man", K=4, num_classes=10)
    assert by_name.num_stages == 4 and by_name.image_shape == (3, 32, 32)
    assert by_name.net.cuts == split_model(build_backbone("resnet32", 10), 4, "table", arch="resnet32").cuts
    module = locallearn.create_learner(ResNet(num_classes=7), "dgl", cuts=["layer2.0", "layer3.0"])
    assert module.num_stages == 3 and module.num_classes == 7  # K from the cuts, classes from the output
    assert locallearn.create_learner(ResNet(), "e2e").num_stages == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(model="resnet32"), r"needs num_classes="),
        (dict(model=ResNet(num_classes=10), num_classes=5), r"returns \(10,\) per input .* = \(5,\)"),
        (dict(model="resnet8", num_classes=10, no_such_option=1), r"unknown method option in \['no_such_option'\]"),
    ],
)
def test_create_learner_names_bad_arguments(kwargs, message):
    with pytest.raises(locallearn.ConfigError, match=message):
        locallearn.create_learner(**kwargs)


def test_stage_optimizers_cover_each_stage_once():
    learner = locallearn.create_learner("resnet8", "greedy", K=3, num_classes=10)
    opts = locallearn.stage_optimizers(learner, torch.optim.SGD, lr=0.1, momentum=0.9)
    for k, opt in enumerate(opts):
        assert [p for g in opt.param_groups for p in g["params"]] == learner.stage_parameters(k)
        assert opt.defaults["momentum"] == 0.9


def test_before_step_clips_each_stage_before_its_step():
    learner = locallearn.create_learner("resnet8", "infopro", K=3, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)
    opts = locallearn.stage_optimizers(learner, torch.optim.SGD, lr=1.0)
    calls = []

    def clip(k: int) -> None:
        calls.append(k)
        torch.nn.utils.clip_grad_norm_(learner.stage_parameters(k), 1e-3)

    engine = locallearn.LocalEngine(learner, opts, before_step=clip)
    before = [[p.detach().clone() for p in learner.stage_parameters(k)] for k in range(3)]
    engine.train_step(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert calls == [0, 1, 2]
    for k in range(3):  # plain SGD at lr 1 moves each stage by exactly its clipped gradient
        moved = torch.cat([(p - b).flatten() for p, b in zip(learner.stage_parameters(k), before[k], strict=True)])
        assert 0 < moved.norm() <= 1e-3 * (1 + 1e-4)


def test_bf16_autocast_applies_on_the_cpu():
    a = torch.randn(4, 4)
    with autocast_context(torch.device("cpu"), "bf16"):
        assert torch.mm(a, a).dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), "fp16"):  # no loss scaler on the CPU: fp16 stays CUDA-only
        assert torch.mm(a, a).dtype == torch.float32


def _trained(learner) -> torch.Tensor:
    engine = locallearn.LocalEngine(learner, locallearn.stage_optimizers(learner, torch.optim.SGD, lr=0.1))
    engine.train_step(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    return torch.randn(4, 3, 32, 32)


def test_export_of_a_users_model_is_that_class_with_the_trained_weights():
    model = ResNet()
    learner = locallearn.create_learner(model, "infopro+man", K=3, mean=CIFAR_MEAN, std=CIFAR_STD)
    x = _trained(learner)
    exported = learner.export()
    assert type(exported) is ResNet and not exported.training and exported is not model
    fresh = ResNet()
    fresh.load_state_dict(exported.state_dict(), strict=True)  # no aux nets, no EMA twins: exactly the model's keys
    torch.testing.assert_close(fresh.eval()(x), learner.eval()(x), rtol=0, atol=0)
    _trained(learner.train())  # a copy: training on does not move the exported weights
    torch.testing.assert_close(exported(x), fresh(x), rtol=0, atol=0)


def test_export_of_a_registered_arch_loads_into_its_backbone():
    learner = locallearn.create_learner("resnet8", "dgl", K=3, num_classes=10)
    x = _trained(learner)
    exported = learner.export()
    fresh = build_backbone("resnet8", 10)
    fresh.load_state_dict(exported.state_dict(), strict=True)
    torch.testing.assert_close(fresh.eval()(x), learner.eval()(x), rtol=0, atol=0)
    assert sum(p.numel() for p in exported.parameters()) == learner.inference_parameters()


def test_export_keeps_contsups_context_nodes_and_saves_without_python_classes():
    learner = locallearn.create_learner("resnet8", "greedy+contsup:R1E", K=3, num_classes=10)
    x = _trained(learner)
    learner.eval()
    exported = learner.export()
    assert isinstance(exported, torch.fx.GraphModule)
    assert sum(p.numel() for p in exported.parameters()) == learner.inference_parameters()
    torch.testing.assert_close(exported(x), learner(x), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(exported, (x,)), buffer)  # the graph itself: loads with torch alone
    buffer.seek(0)
    torch.testing.assert_close(torch.export.load(buffer).module()(x), learner(x), rtol=0, atol=0)
