"""Activation checkpointing: the same training as without it, and the memory meter sees what it really holds."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import CIFAR_MEAN, CIFAR_STD, random_batch
from locallearn.cli import main
from locallearn.config import build_config
from locallearn.engine.local import LocalEngine
from locallearn.engine.recompute import CheckpointedSequential, checkpoint_split
from locallearn.engine.traced import TracingEngine
from locallearn.engine.trainer import build_model, build_optimizers
from locallearn.errors import ConfigError
from locallearn.measure.saved import SavedTensorMeter
from locallearn.methods import build_learner
from locallearn.models import as_backbone
from locallearn.profile.step import profile_step
from locallearn.split import split_model
from sweep import main as sweep

F32, I64 = 4, 8
HALF = (0.5, 0.5, 0.5)


def trained_state(method: str, k: int, checkpoint: str, steps: int = 2) -> dict[str, torch.Tensor]:
    """Every tensor of a resnet8 learner (weights, BN statistics) and its momentum after `steps` steps."""
    cfg = build_config(
        flags=dict(arch="resnet8", method=method, K=k, device="cpu", activation_checkpoint=checkpoint, seed=3)
    )
    torch.manual_seed(cfg.seed)
    learner = build_model(cfg, (3, 32, 32), 10, mean=CIFAR_MEAN, std=CIFAR_STD, device=torch.device("cpu"))
    engine = LocalEngine(learner, build_optimizers(learner, cfg))
    x, y = random_batch(8)
    for _ in range(steps):
        engine.train_step(x, y)
    momentum = {
        f"momentum.{j}.{i}": s["momentum_buffer"]
        for j, opt in enumerate(engine.optimizers)
        for i, s in enumerate(opt.state.values())
    }
    return {**learner.state_dict(), **momentum}


@pytest.mark.parametrize(
    ("method", "k", "checkpoint"),
    [("e2e", 1, "per-unit"), ("e2e", 1, "per-stage:2"), ("e2e", 1, "per-stage:3"), ("greedy", 2, "per-unit")],
)
def test_checkpointed_training_is_bit_identical_to_plain_training(method, k, checkpoint):
    """Same gradients, BN running statistics updated once per step: every weight, statistic and momentum
    buffer equals the plain run's bit for bit, and the state-dict keys are the same (checkpoint files too)."""
    plain, checkpointed = trained_state(method, k, "none"), trained_state(method, k, checkpoint)
    assert plain.keys() == checkpointed.keys()
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value, rtol=0, atol=0, msg=key)


def test_segments_follow_the_local_split_and_inference_runs_plainly():
    cfg = build_config(flags=dict(arch="resnet8", method="e2e", device="cpu", activation_checkpoint="per-stage:2"))
    learner = build_model(cfg, (3, 32, 32), 10, mean=CIFAR_MEAN, std=CIFAR_STD, device=torch.device("cpu"))
    local = build_config(flags=dict(arch="resnet8", method="greedy", K=2, device="cpu"))
    split = build_model(local, (3, 32, 32), 10, mean=CIFAR_MEAN, std=CIFAR_STD, device=torch.device("cpu")).net
    (stage,) = learner.net.stages
    assert isinstance(stage, CheckpointedSequential)
    assert [len(s) for s in stage.segments] == [len(s) for s in split.stages]
    x, _ = random_batch(4)
    with torch.no_grad(), SavedTensorMeter() as meter:
        learner.eval()(x)
    assert meter.storages == {}


@pytest.mark.parametrize("spec", ["per-stage", "per-stage:1", "per-layer", "per-unit:2"])
def test_a_bad_setting_is_refused_with_the_valid_ones(spec):
    with pytest.raises(ConfigError, match="none, per-unit or per-stage:J"):
        build_config(flags=dict(activation_checkpoint=spec))


def test_per_stage_segments_belong_to_e2e():
    net = split_model(as_backbone(nn.Sequential(nn.Flatten(), nn.Linear(12, 3))), 1, input_shape=(3, 2, 2))
    checkpoint_split(net, "none", None, lambda j: [])
    assert type(net.stages[0]) is nn.Sequential
    local = split_model(as_backbone(nn.Sequential(*units())), 2, "units:0", input_shape=(3, 2, 2))
    with pytest.raises(ConfigError, match="segments an E2E network"):
        checkpoint_split(local, "per-stage", 2, lambda j: [0])


def units() -> list[nn.Module]:
    """Three blocks Linear-ReLU-Linear-ReLU (widths 12|8 -> 16 -> 8) and a linear head, on 3x2x2 images."""
    blocks = [nn.Sequential(nn.Linear(w, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU()) for w in (12, 8, 8)]
    blocks[0].insert(0, nn.Flatten())
    return [*blocks, nn.Linear(8, 3)]


def traced_e2e(checkpoint: str, b: int = 5):
    torch.manual_seed(0)
    net = split_model(as_backbone(nn.Sequential(*units())), 1, input_shape=(3, 2, 2))
    if checkpoint == "per-unit":
        checkpoint_split(net, "per-unit", None, lambda j: [])
    learner = build_learner("e2e", net, num_classes=3, mean=HALF, std=HALF)
    engine = TracingEngine(learner, [torch.optim.SGD(learner.parameters(), lr=0.1)])
    return profile_step(engine, torch.randn(b, 3, 2, 2), torch.arange(b) % 3, method="e2e", warmup=0)


def test_the_meter_counts_checkpointed_inputs_and_the_recomputation_peak_by_hand():
    b = 5
    ce = b * 3 * F32 + b * I64 + F32  # log-softmax output, int64 target, scalar total weight
    # Plain: x (12 floats a sample, saved by the first Linear), and per block its hidden ReLU output (16) and
    # its output (8, saved by its ReLU and by the next Linear: one storage).
    plain = traced_e2e("none", b).stages[0]
    assert plain.held_bytes == b * (12 + 3 * (16 + 8)) * F32 + ce
    # Checkpointed per unit (the head runs plainly): the forward ends holding the three blocks' inputs (x, r0,
    # r1), the head's input r2 and the loss's tensors: 36 floats + CE. Backward then reruns block 2 on r1 while
    # x and r0 are still held for blocks 0 and 1: x, r0, r1 (saved again: one storage) and the rerun's hidden
    # (16) and output (8) are 52 floats at once, the peak. Blocks 1 and 0 rerun later with less held.
    profile = traced_e2e("per-unit", b)
    stage = profile.stages[0]
    assert stage.held_bytes == b * (12 + 8 + 8 + 16 + 8) * F32 > b * (12 + 8 + 8 + 8) * F32 + ce
    assert stage.activation_bytes == stage.held_bytes and stage.aux_bytes == 0  # all of it is the backbone's
    # Saved: blocks 0 and 1's hidden activations (2 x 16 floats) and the loss's tensors, freed before the peak.
    assert plain.held_bytes - stage.held_bytes == b * 2 * 16 * F32 + ce
    # FLOPs: the three blocks' forward runs again in backward, once; the head does not.
    blocks = 2 * b * (12 * 16 + 16 * 8 + 2 * (8 * 16 + 16 * 8))
    head = 2 * b * 8 * 3
    assert profile.train_flops == (3 * (blocks + head) + blocks) // b


def test_resnet_memory_goes_down_and_each_recomputation_is_counted():
    """ResNet-8, E2E: checkpointing per stage of a K = 2 split holds less than plain E2E, and never less than
    the largest checkpointed segment's own activations, which its recomputation holds all at once."""
    x, y = random_batch(16)
    held = {}
    for checkpoint in ("none", "per-stage:2", "per-unit"):
        cfg = build_config(flags=dict(arch="resnet8", method="e2e", device="cpu", activation_checkpoint=checkpoint))
        learner = build_model(cfg, (3, 32, 32), 10, mean=CIFAR_MEAN, std=CIFAR_STD, device=torch.device("cpu"))
        engine = TracingEngine(learner, build_optimizers(learner, cfg))
        held[checkpoint] = profile_step(engine, x, y, method="e2e", warmup=0).stages[0].held_bytes
        stage = learner.net.stages[0]
        for segment in getattr(stage, "segments", [])[:-1]:
            with torch.no_grad():  # the segment's input: the plain forward of every unit before it
                inp = nn.Sequential(*list(stage)[: list(stage).index(segment[0])])(x)
            with SavedTensorMeter(exclude=[*learner.parameters(), *learner.buffers()]) as meter:
                segment(inp.detach().requires_grad_())
            assert held[checkpoint] >= meter.bytes
    assert held["per-unit"] < held["per-stage:2"] < held["none"]
    assert held["per-unit"] < 0.6 * held["none"]


def test_profile_and_overhead_run_checkpointed_e2e_beside_the_plain_reference(capsys, tmp_path):
    tiny = ["--arch", "resnet8", "--batch-size", "4", "--device", "cpu"]
    assert main(["profile", *tiny, "--method", "e2e", "--activation-checkpoint", "per-unit", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["activation_checkpoint"] == "per-unit" and row["ratio"] < 1 and row["flops_overhead"] > 0
    args = ["--mode", "overhead", *tiny, "--method", "e2e", "--activation-checkpoint", "per-unit"]
    assert sweep([*args, "--steps", "1", "--rounds", "1", "--warmup-steps", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| e2e | 1 |" in out and "| e2e (checkpoint per-unit) | 1 |" in out


def test_the_readme_checkpointing_example_runs_as_printed(capsys):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (line,) = [s for s in readme.splitlines() if s.startswith("locallearn profile") and "--activation-checkpoint" in s]
    assert main(shlex.split(line)[1:]) == 0
    (row,) = [s for s in capsys.readouterr().out.splitlines() if s.startswith("| e2e (checkpoint per-stage:4) | 1 |")]
    ratio = float(row.split("|")[9].strip(" %"))
    assert 20 < ratio < 60  # of the plain E2E peak at the same batch
