"""`locallearn train --engine pipeline` end to end: a failing rank stops the others in bounded time with an error
that names it, and `--resume` restarts the whole pipeline from the last complete step (or epoch), ending with
the weights, history and summary an uninterrupted local-engine run gets.

The ranks run as separate processes with no launcher agent around them (as on separate nodes), so only the
pipeline's own failure handling can stop them.
"""

from __future__ import annotations

import json

import pytest
import torch
from launcher import ranks, torchrun

from locallearn.cli import main
from locallearn.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.dist

# 96 images in batches of 16: 6 steps per epoch. infopro+man on K=3 over 2 ranks: an EMA twin whose
# source lives on the next rank, a stage group of two stages, and images that travel for the decoder.
RUN = [
    "train", "--arch", "resnet8", "--method", "infopro+man", "--K", "3", "--dataset", "cifar10-sample",
    "--epochs", "2", "--batch-size", "16", "--train-limit", "96", "--test-limit", "32", "--device", "cpu",
    "--threads", "1", "--no-progress", "--lr", "0.1", "--set", "eval_batch_size=16",
]  # fmt: skip
PIPELINE = ["--engine", "pipeline", "--set", "pipeline.heartbeat_timeout=4", "--set", "pipeline.timeout=60"]
BOUND = 30.0  # seconds from one rank's failure to the other rank's exit (generous: the machine may be busy)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same run under the local engine, in this process."""
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    try:
        assert main([*RUN, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("locallearn: error:")]
    assert lines, stderr[-2000:]
    return lines[-1]


def test_a_killed_rank_stops_the_others_and_resume_finishes_the_run(tmp_path, local_run):
    out = tmp_path / "run"
    args = [*RUN, *PIPELINE, "--out", str(out), "--set", "checkpoint_every=1"]
    survivor, killed = ranks(args, 2, fault="kill:1:8")  # the 2nd step of epoch 2
    assert killed.code == -9
    assert survivor.code != 0
    assert survivor.seconds - killed.seconds < BOUND
    assert "rank 1" in _error_line(survivor.stderr) and "died" in _error_line(survivor.stderr)
    saved = load_checkpoint(out / "last.pt")
    assert saved["epoch"] == 0 and saved["partial"]["step"] == 1  # the last step every rank finished
    assert not (out / "summary.json").exists()
    # Rank 0 may have written its file of step 2 before rank 1 died: present or not, it is not committed.
    assert {p.name for p in (out / "stages").iterdir()} <= {"epoch_0002_step_000001", "epoch_0002_step_000002"}

    done = torchrun([*args, "--resume"], 2)
    assert done.returncode == 0, done.stderr[-3000:]
    record = torch.load(out / "last.pt", weights_only=False)
    assert [name for name, _ in record["stage_files"]] == [f"stages/epoch_0002/stage_0{k}.pt" for k in range(3)]
    assert record["learner"] == {}  # the commit record holds no stage tensors: each owner wrote its own
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["epoch_0002"]  # older epochs removed
    got = load_checkpoint(out / "last.pt")
    want = torch.load(local_run / "last.pt", weights_only=False)
    assert got["epoch"] == want["epoch"] == 1
    for key, value in want["learner"].items():
        torch.testing.assert_close(got["learner"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for ours, theirs in zip(got["optimizers"], want["optimizers"], strict=True):
        for i, slot in theirs["state"].items():
            torch.testing.assert_close(ours["state"][i]["momentum_buffer"], slot["momentum_buffer"])
    summary = json.loads((out / "summary.json").read_text())
    reference = json.loads((local_run / "summary.json").read_text())
    assert summary["engine"] == "pipeline" and summary["epochs"] == 2
    assert summary["test_acc"] == pytest.approx(reference["test_acc"])
    assert summary["stage_acc"] == pytest.approx(reference["stage_acc"])
    stats = summary["pipeline"]
    assert stats["world_size"] == 2 and [k for a, b in stats["stage_groups"] for k in range(a, b + 1)] == [0, 1, 2]
    assert all(v > 0 for v in stats["busy_seconds"]) and len(stats["idle_seconds"]) == 2
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(len(h["stage_busy"]) == 2 for h in history)
    reference = [json.loads(line) for line in (local_run / "metrics.jsonl").read_text().splitlines()]
    for ours, theirs in zip(history, reference, strict=True):  # epoch 2's statistics span the resume
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert ours["train_acc"] == pytest.approx(theirs["train_acc"])


def test_resume_with_another_rank_count_reads_each_stage_from_its_new_owner(tmp_path, local_run, capsys):
    """3 ranks (one stage each) stop after epoch 1; 2 ranks (stages 0-1 on rank 0) finish the run."""
    out = tmp_path / "run"
    first = torchrun([*RUN, *PIPELINE, "--out", str(out), "--stop-after-epoch", "1"], 3)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in (out / "stages" / "epoch_0001").iterdir()) == [f"stage_0{k}.pt" for k in range(3)]
    done = torchrun([*RUN, *PIPELINE, "--out", str(out), "--resume"], 2)
    assert done.returncode == 0, done.stderr[-3000:]
    got, want = load_checkpoint(out / "last.pt"), torch.load(local_run / "last.pt", weights_only=False)
    for key, value in want["learner"].items():
        torch.testing.assert_close(got["learner"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0  # the local engine's evaluation reads the per-stage files
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_acc"] == pytest.approx(json.loads((local_run / "summary.json").read_text())["test_acc"])


def test_a_raising_rank_stops_the_others_with_its_error(tmp_path):
    exits = ranks([*RUN, *PIPELINE, "--out", str(tmp_path / "run")], 2, fault="raise:1:3")
    assert all(e.code != 0 for e in exits)
    assert exits[0].seconds - exits[1].seconds < BOUND
    assert "rank 1: RuntimeError: injected failure at step 3" in _error_line(exits[0].stderr)
    assert "injected failure at step 3" in exits[1].stderr


def test_a_frozen_rank_is_found_by_its_missing_heartbeat(tmp_path):
    """SIGSTOP keeps the connections open, so no send fails: only the heartbeat shows that rank 1 is gone."""
    args = [*RUN, *PIPELINE, "--set", "pipeline.timeout=600", "--out", str(tmp_path / "run")]
    survivor, frozen = ranks(args, 2, fault="stop:1:3", wait_for=[0])
    assert frozen.stopped is not None, "rank 1 never reached the step that freezes it"
    assert survivor.code != 0
    # pipeline.timeout (600 s) would end a blocked wait much later: the heartbeat (4 s) is what stops it.
    assert survivor.seconds - frozen.stopped < BOUND
    assert "rank 1 stopped responding" in _error_line(survivor.stderr)
