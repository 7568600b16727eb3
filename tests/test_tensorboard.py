"""TensorBoard logging: the event files of a run hold per-stage loss and accuracy, LR, throughput and memory, the
same numbers as metrics.jsonl; without the package, asking for it is a one-line error naming the install."""

from __future__ import annotations

import importlib.util
import json

import pytest

from locallearn.cli import main

QUICK = ["--arch", "resnet8", "--dataset", "cifar10-sample", "--train-limit", "64", "--test-limit", "32",
         "--batch-size", "32", "--lr", "0.05", "--no-progress", "--threads", "1"]  # fmt: skip


def test_a_run_writes_per_stage_scalars_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["--method", "infopro:softmax", "--K", "3", "--epochs", "1", "--out", str(out)]
    assert main(["train", *QUICK, *args, "--set", "log.tensorboard=true", "--set", "log_every=1"]) == 0
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()

    def series(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    for k in range(3):
        assert [s for s, _ in series(f"train/loss/stage{k}")] == [1, 2]  # 64 images / 32 a batch, every step
        assert [s for s, _ in series(f"train/accuracy/stage{k}")] == [1, 2]
        # The last step's running mean is the epoch's; stored as float32.
        assert series(f"train/loss/stage{k}")[-1][1] == pytest.approx(record["train_loss"][k], rel=1e-5)
        assert series(f"epoch/train_loss/stage{k}") == [(2, pytest.approx(record["train_loss"][k], rel=1e-5))]
        assert series(f"epoch/train_accuracy/stage{k}") == [(2, pytest.approx(record["train_acc"][k], rel=1e-5))]
        assert series(f"epoch/test_accuracy/stage{k}") == [(2, pytest.approx(record["stage_acc"][k], rel=1e-5))]
    assert series("epoch/lr") == [(2, pytest.approx(record["lr"], rel=1e-6))]
    assert series("epoch/test_accuracy") == [(2, pytest.approx(record["test_acc"], rel=1e-6))]
    assert all(v > 0 for _, v in series("throughput/images_per_s") + series("memory/peak_bytes"))


def test_a_resumed_run_drops_the_events_its_checkpoint_does_not_cover(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "run"
    args = ["train", *QUICK, "--method", "greedy", "--K", "2", "--epochs", "2", "--out", str(out)]
    assert main([*args, "--set", "log.tensorboard=true", "--stop-after-epoch", "1"]) == 0
    with SummaryWriter(str(out / "tensorboard")) as stray:  # what a run killed in epoch 2 had logged
        stray.add_scalar("epoch/lr", -1.0, 3)
        stray.add_scalar("epoch/lr", -1.0, 4)
    assert main(["train", "--out", str(out), "--resume"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lr = [(e.step, e.value) for e in events.Scalars("epoch/lr")]
    assert lr == [(2, pytest.approx(rows[0]["lr"])), (4, pytest.approx(rows[1]["lr"]))]


def test_tensorboard_without_the_package_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a)
    )
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out), "--set", "log.tensorboard=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'locallearn[tensorboard]'" in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before anything was written
