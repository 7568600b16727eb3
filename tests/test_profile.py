"""Memory and FLOPs accounting of `locallearn profile`: hand-computed cases, the convention, the CLI."""

from __future__ import annotations

import gc
import json
import math
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import make_learner, random_batch
from locallearn.cli import main
from locallearn.config import build_config
from locallearn.engine.traced import TracingEngine, held_for_backward
from locallearn.measure.saved import SavedTensorMeter
from locallearn.methods import Mechanism, MethodOptions, build_learner
from locallearn.models import as_backbone
from locallearn.profile.compare import compare_runs
from locallearn.profile.probe import input_spec
from locallearn.profile.step import profile_step
from locallearn.split import split_model

F32, I64 = 4, 8
HALF = (0.5, 0.5, 0.5)
TINY = ["--arch", "resnet8", "--batch-size", "4", "--device", "cpu"]


def test_meter_counts_a_linear_relu_stack_by_hand():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(5, 4)
    with SavedTensorMeter(exclude=list(net.parameters())) as meter:
        loss = net(x).sum()
    # Linear 1 saves its input x (5x4); ReLU saves its output (5x8), which Linear 2 saves again: one storage.
    # The weights are excluded and sum() saves nothing.
    assert meter.bytes == 5 * 4 * F32 + 5 * 8 * F32
    assert meter.alive() == meter.storages
    loss.backward()
    assert meter.alive() == {}  # the backward freed the graph


def test_step_accounting_matches_a_hand_count_exactly():
    """E2E on Flatten-Linear(12, 8)-ReLU-Linear(8, 3) over 3x2x2 images, SGD with momentum."""
    backbone = as_backbone(nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)))
    learner = build_learner("e2e", split_model(backbone, 1, input_shape=(3, 2, 2)), num_classes=3, mean=HALF, std=HALF)
    engine = TracingEngine(learner, [torch.optim.SGD(learner.parameters(), lr=0.1, momentum=0.9)])
    b = 5
    profile = profile_step(engine, torch.randn(b, 3, 2, 2), torch.arange(b) % 3, method="e2e")
    # Saved for backward: x (viewed flat by Linear 1), the ReLU output (also Linear 2's input), the
    # cross-entropy's log-softmax output, its int64 target and its scalar total weight.
    held = b * 12 * F32 + b * 8 * F32 + b * 3 * F32 + b * I64 + F32
    live = held + b * 12 * F32  # plus x01, the [0, 1] image the batch carries
    params = (12 * 8 + 8) + (8 * 3 + 3)
    stage = profile.stages[0]
    assert (stage.held_bytes, stage.aux_bytes, stage.live_bytes) == (held, b * 3 * F32 + b * I64 + F32, live)
    assert profile.weights_bytes == params * F32 + 2 * 3 * F32  # parameters, and the mean / std buffers
    assert profile.grads_bytes == profile.optimizer_bytes == params * F32  # gradients, momentum buffers
    # The allocator saw every held storage and the gradients; beyond them, only the loss's scalar transients.
    assert 0 <= profile.peak_bytes - (profile.static_bytes + live) <= 4 * F32


def test_local_peak_is_the_largest_stage_and_flops_add_up():
    learner = make_learner("greedy", k=3)
    optimizers = [torch.optim.SGD(learner.stage_parameters(k), lr=0.1, momentum=0.9) for k in range(3)]
    x, y = random_batch(8)
    profile = profile_step(TracingEngine(learner, optimizers), x, y, method="greedy")
    assert profile.peak_bytes == max(s.peak_bytes for s in profile.stages)
    before = profile.weights_bytes + profile.optimizer_bytes + profile.batch_bytes
    assert all(s.peak_bytes - before >= s.held_bytes for s in profile.stages)  # saved storages are allocated too
    assert [s.held_bytes for s in profile.stages] == held_for_backward(learner, x, y)
    backbone = sum(r.flops for r in learner.net.records)
    aux = sum(s.aux_train_flops for s in profile.stages)
    assert profile.train_flops == 3 * backbone + aux and aux > 0


class Shadow(Mechanism):
    """Runs stage 1's units on h_0 during stage 0's step and adds their mean to stage 1's loss: a graph that
    outlives stage 0's backward, as a cascade's does."""

    def stage_loss(self, learner, k, carry, batch, result):
        if k == 0:
            self.kept = learner.net.stages[1](result.out["h"].detach())
        else:
            result.loss = result.loss + self.kept.float().mean()
        return result


def test_graphs_alive_across_a_boundary_are_counted_where_they_coexist():
    x, y = random_batch(8)
    profiles = []
    for mechanisms in ([], [Shadow(MethodOptions())]):
        learner = make_learner("greedy", k=2)
        learner.mechanisms += mechanisms
        optimizers = [torch.optim.SGD(learner.stage_parameters(k), lr=0.1) for k in range(2)]
        profiles.append(profile_step(TracingEngine(learner, optimizers), x, y, method="greedy", warmup=0))
    plain, shadowed = profiles
    h0 = 8 * math.prod(learner.net.records[0].out_shape) * F32  # the carry: alive in stage 1 either way
    extra = plain.stages[1].activation_bytes - h0  # what stage 1's units save on h_0, beyond h_0 itself
    assert shadowed.stages[0].held_bytes == plain.stages[0].held_bytes + extra
    assert shadowed.stages[1].held_bytes == plain.stages[1].held_bytes
    assert shadowed.stages[1].live_bytes == plain.stages[1].live_bytes + extra


def test_resnet110_k16_holds_far_less_than_e2e():
    cfg = build_config(flags=dict(arch="resnet110", method="infopro", K=16, batch_size=8, device="cpu"))
    (row,) = compare_runs([(cfg, input_spec("cifar10"))], warmup=0)
    assert row["ratio"] == row["peak_bytes"] / row["e2e_peak_bytes"]
    assert row["ratio"] < 0.5
    assert row["held_bytes"] < row["e2e_held_bytes"] / 4
    assert row["flops_overhead"] > 0 and len(row["stages"]) == 16


def test_profile_cli_json_has_one_object_per_method(capsys):
    assert main(["profile", *TINY, "--method", "e2e,greedy,infopro", "--K", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["K"]) for r in rows] == [("e2e", 1), ("greedy", 2), ("infopro", 2)]
    for r in rows:
        assert r["ratio"] == pytest.approx(r["peak_bytes"] / r["e2e_peak_bytes"])
        assert len(r["stages"]) == r["K"] and r["convention"] == "cpu-max-allocated"
        assert r["e2e_peak_bytes"] == rows[0]["peak_bytes"]
    assert rows[0]["ratio"] == 1.0


def test_profile_cli_markdown_and_result_files(tmp_path, capsys):
    args = ["profile", *TINY, "--method", "dgl", "--K", "2", "--image-size", "16", "--out", str(tmp_path)]
    assert main([*args, "--name", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "| dgl | 2 |" in out and "input 3x16x16" in out and "| stage |" in out
    (json_file,) = tmp_path.glob("tiny_cpu*_*.json")
    (row,) = json.loads(json_file.read_text())
    assert row["git_sha"] and row["torch"] == torch.__version__ and row["device"] == "cpu"
    assert row["config"]["method"] == "dgl" and row["image_shape"] == [3, 16, 16]
    assert json_file.with_suffix(".csv").exists() and json_file.with_suffix(".md").exists()


def test_the_meter_leaves_no_reference_cycle_behind():
    """sigmoid saves its own output: boxing that tensor would tie it to its grad_fn in a cycle the Python
    collector cannot see, leaking every measured graph (gigabytes over a sweep)."""
    x = torch.randn(4, 8, requires_grad=True)
    with SavedTensorMeter() as meter:
        out = torch.sigmoid(x)
    assert meter.bytes == out.numel() * out.element_size()
    ref = weakref.ref(out)
    del out
    gc.collect()
    assert ref() is None


def test_allocation_meter_follows_allocations_and_frees_by_hand():
    from locallearn.measure.allocations import AllocationMeter

    with AllocationMeter() as meter:
        with meter.window("a"):
            x = torch.empty(1000)  # 4000 bytes
            y = torch.empty(2000)  # 8000 more: 12000 alive
            del x  # 8000 alive
        with meter.window("b"):
            z = torch.empty(500)  # 2000 more: 10000 alive
    assert meter.peaks == {"a": 12000, "b": 10000}
    assert meter.peak == 12000
    del y, z


def test_the_profile_counts_transients_that_nothing_saves():
    """A stage whose loss makes a large temporary that autograd does not keep: the saved-bytes meter misses it,
    the allocator does not."""
    backbone = as_backbone(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))
    learner = build_learner("e2e", split_model(backbone, 1, input_shape=(3, 2, 2)), num_classes=3, mean=HALF, std=HALF)

    class Temporary(Mechanism):
        def stage_loss(self, learner, k, carry, batch, result):
            big = torch.ones(1_000_000)  # 4 MB, summed and dropped: never saved for backward
            result.loss = result.loss + 0 * big.sum()
            return result

    learner.mechanisms.append(Temporary(MethodOptions()))
    engine = TracingEngine(learner, [torch.optim.SGD(learner.parameters(), lr=0.1)])
    profile = profile_step(engine, torch.randn(4, 3, 2, 2), torch.arange(4) % 3, method="e2e")
    assert profile.stages[0].held_bytes < 1000
    assert profile.peak_bytes - profile.static_bytes >= 4_000_000


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the RSS meter reads Linux's /proc")
def test_profile_agrees_with_the_resident_memory_of_a_fresh_process(capsys):
    """`--meter rss` runs the config and its E2E in new processes; the profile's step growth (optimizer state,
    gradients, activations, transients) is within 10% of what the process's resident size grew by, once freed
    memory goes back to the OS (glibc's default keeps what earlier stages freed: about 1.5x here)."""
    args = ["profile", "--arch", "resnet8", "--method", "greedy", "--K", "2", "--batch-size", "384"]
    args += ["--set", "return_freed_memory=true"]
    assert main([*args, "--device", "cpu", "--threads", "1", "--meter", "rss", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["rss_growth_bytes"] > 100 * 2**20  # large enough that the interpreter's own noise is small
    assert row["rss_agreement"] == pytest.approx(1.0, abs=0.1)
    assert row["e2e_rss_peak_bytes"] > row["rss_peak_bytes"]


def test_the_rss_meter_refuses_a_gpu_run(capsys):
    assert main(["profile", *TINY[:-2], "--device", "cuda", "--meter", "rss"]) == 2
    err = capsys.readouterr().err  # without a GPU the device check answers first; with one, the meter's
    assert len(err.strip().splitlines()) == 1 and "--device cpu" in err
