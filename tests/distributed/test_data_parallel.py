"""`torchrun --nproc-per-node 2 -m locallearn train` without `--engine pipeline`: two data-parallel replicas of
every stage that together make the single process's update on the full batch, write one run directory, and
resume from it.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from launcher import HERE, ROOT, spawn, torchrun

from helpers import make_learner, random_batch
from locallearn.config import PipelineOptions
from locallearn.engine.checkpoint import load_checkpoint
from locallearn.engine.local import LocalEngine
from locallearn.engine.pipeline.groups import launch
from locallearn.engine.pipeline.run import build_pipeline_engine
from locallearn.engine.pipeline.transport import PipelineTransport

pytestmark = pytest.mark.dist

# 64 images in batches of 16: 4 steps per epoch, each replica training on 8 images of every batch.
RUN = [
    "train", "--arch", "plain_net:build", "--method", "greedy", "--K", "2", "--dataset", "cifar10-sample",
    "--epochs", "2", "--batch-size", "16", "--train-limit", "64", "--test-limit", "32", "--device", "cpu",
    "--threads", "1", "--no-progress", "--lr", "0.05", "--set", "eval_batch_size=16",
    "--set", "method_options.aux_net=0c1f",  # an aux head without batch norm either
]  # fmt: skip
ENV = {"PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
TOLERANCE = dict(rtol=1e-4, atol=1e-6)
GRADIENT_TOLERANCE = dict(rtol=1e-4, atol=1e-5)  # momentum buffers sum gradients, some of them near 0


def _train(args: list[str], nproc: int) -> None:
    done = torchrun([*RUN, *args], nproc, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single process, two replicas stopped after epoch 1 then resumed) run directories."""
    root = tmp_path_factory.mktemp("data_parallel")
    one, two = root / "one", root / "two"
    _train(["--out", str(one)], 1)
    _train(["--out", str(two), "--stop-after-epoch", "1"], 2)
    _train(["--out", str(two), "--resume"], 2)
    return one, two


def test_two_replicas_make_the_single_process_update(runs):
    one, two = (load_checkpoint(run / "last.pt") for run in runs)
    assert one["epoch"] == two["epoch"] == 1
    assert set(one["learner"]) == set(two["learner"])
    for key, value in one["learner"].items():
        torch.testing.assert_close(two["learner"][key], value, **TOLERANCE, msg=key)
    for mine, theirs in zip(one["optimizers"], two["optimizers"], strict=True):
        for i, slot in mine["state"].items():
            got, want = theirs["state"][i]["momentum_buffer"], slot["momentum_buffer"]
            torch.testing.assert_close(got, want, **GRADIENT_TOLERANCE)
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["test_acc"] == pytest.approx(a["test_acc"])
        assert b["stage_acc"] == pytest.approx(a["stage_acc"])


def test_one_writer_and_one_metrics_file(runs):
    _, two = runs
    rows = (two / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2]  # one row per epoch, not one per replica
    assert sorted(p.name for p in two.iterdir() if p.is_file()) == [
        "config.yaml", "last.pt", "metrics.csv", "metrics.jsonl", "summary.json"
    ]  # fmt: skip
    summary = json.loads((two / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["pipeline"]["world_size"] == 2 and summary["pipeline"]["replicas"] == 2
    assert summary["pipeline"]["stage_groups"] == [[0, 1]]  # one position: every replica holds every stage


def _sgd(learner) -> list[torch.optim.Optimizer]:
    return [torch.optim.SGD(learner.stage_parameters(k), lr=0.05, momentum=0.9) for k in range(learner.num_stages)]


def _one_position(rank: int, world: int, out) -> None:
    """The pipeline's transport on a world of one rank: one position that owns every stage."""
    options = PipelineOptions(backend="gloo", timeout=60)
    learner = make_learner("greedy+mlaan", k=3)
    engine = build_pipeline_engine(
        learner, _sgd(learner), launch=launch(options, "cpu"), options=options, batch_size=8, eval_batch_size=8
    )
    assert isinstance(engine.transport, PipelineTransport) and list(engine.transport.stages) == [0, 1, 2]
    engine.begin_epoch(3)
    for t in range(3):
        engine.train_step(*random_batch(8, seed=20 + t))
    torch.save({"state": learner.state_dict(), "loss": engine.end_epoch().loss}, out / "one.pt")


def test_the_local_engine_is_the_pipeline_with_one_position(tmp_path):
    """The same engine class, local transport or pipeline transport on one rank: the same bits (a cascade
    method, so the deferred optimizer steps of both transports are exercised too)."""
    spawn(_one_position, 1, tmp_path)
    got = torch.load(tmp_path / "one.pt", weights_only=False)
    torch.set_num_threads(1)  # as in the rank, so that float reductions run in the same order
    learner = make_learner("greedy+mlaan", k=3)
    engine = LocalEngine(
        learner, [torch.optim.SGD(learner.stage_parameters(k), lr=0.05, momentum=0.9) for k in range(3)]
    )
    for t in range(3):
        engine.train_step(*random_batch(8, seed=20 + t))
    assert torch.equal(engine.reset_stats().loss, got["loss"])
    for key, value in learner.state_dict().items():
        assert torch.equal(got["state"][key], value), key
