"""`torchrun --nproc-per-node 2 -m locallearn train` without `--engine pipeline`: two data-parallel replicas of
every stage that together make the single process's update on the full batch, write one run directory, and
resume from it.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from launcher import HERE, ROOT, torchrun

from locallearn.engine.checkpoint import load_checkpoint

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
            torch.testing.assert_close(theirs["state"][i]["momentum_buffer"], slot["momentum_buffer"], **TOLERANCE)
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
