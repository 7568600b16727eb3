"""The command line end to end: train, resume, eval, list, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import run_cli
from locallearn.cli import main
from locallearn.cli.train import schedule_line
from locallearn.config import build_config
from locallearn.engine.checkpoint import load_checkpoint
from locallearn.engine.local import LocalEngine

QUICK = [
    "--arch",
    "resnet8",
    "--dataset",
    "cifar10-sample",
    "--train-limit",
    "64",
    "--test-limit",
    "32",
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--no-progress",
    "--threads",
    "1",
]


def test_train_writes_a_run_directory_and_json_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--method", "infopro", "--K", "3", "--epochs", "2", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("test_acc", "stage_acc", "method", "K", "epochs", "seconds"):
        assert key in summary
    assert summary["K"] == summary["stages"] == 3 and summary["epochs"] == 2 and len(summary["stage_acc"]) == 3
    assert 0.0 <= summary["test_acc"] <= 1.0
    assert summary["inference_flops"] > 0 and summary["inference_params"] < summary["params"]  # no aux nets
    assert json.loads((out / "summary.json").read_text()) == summary
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "metrics.csv").exists() and (out / "config.yaml").exists() and (out / "last.pt").exists()


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    args = [*QUICK, "--method", "greedy", "--K", "3"]
    assert main(["train", *args, "--epochs", "3", "--out", str(full)]) == 0
    assert main(["train", *args, "--epochs", "3", "--stop-after-epoch", "2", "--out", str(part)]) == 0
    assert load_checkpoint(part / "last.pt")["epoch"] == 1
    assert main(["train", "--out", str(part), "--resume", "--no-progress"]) == 0
    a = load_checkpoint(full / "last.pt")
    b = load_checkpoint(part / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["learner"].items():
        assert torch.equal(value, b["learner"][key]), key
    for sa, sb in zip(a["optimizers"], b["optimizers"], strict=True):
        for pid, state in sa["state"].items():
            assert torch.equal(state["momentum_buffer"], sb["state"][pid]["momentum_buffer"])


def test_a_run_stopped_within_an_epoch_resumes_from_its_last_checkpointed_step(tmp_path, monkeypatch, capsys):
    """5 steps per epoch, a checkpoint every 3 steps (committed once step 4's loss shows its weights are sound):
    a crash in step 5 of epoch 2 resumes after its step 3, skipping the batches already trained, and ends with
    the weights and metrics of an uninterrupted run."""
    full, part = tmp_path / "full", tmp_path / "part"
    args = [*QUICK, "--method", "infopro+man", "--K", "3", "--batch-size", "16", "--train-limit", "80"]
    args += ["--epochs", "2", "--set", "checkpoint_every=3"]
    assert main(["train", *args, "--out", str(full)]) == 0
    train_step, calls = LocalEngine.train_step, []

    def crashing_step(self, x, y):
        if type(self) is not LocalEngine:  # the memory probe's engine, not a training step
            return train_step(self, x, y)
        calls.append(y[:4].tolist())
        if len(calls) == 10:
            raise RuntimeError("power cut")
        return train_step(self, x, y)

    monkeypatch.setattr(LocalEngine, "train_step", crashing_step)
    with pytest.raises(RuntimeError, match="power cut"):
        main(["train", *args, "--out", str(part)])
    saved = load_checkpoint(part / "last.pt")
    assert saved["epoch"] == 0 and saved["partial"]["step"] == 3 and saved["partial"]["stats"]["steps"] == 3
    seen_before = list(calls)
    capsys.readouterr()
    assert main(["eval", str(part), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3  # the weights are 3 steps into epoch 2
    assert main(["train", "--out", str(part), "--resume"]) == 0
    assert calls[10:] == seen_before[8:10]  # only the batches after the checkpoint are trained again
    a, b = (load_checkpoint(run / "last.pt") for run in (full, part))
    assert "partial" not in b and a["epoch"] == b["epoch"] == 1
    for key, value in a["learner"].items():
        assert torch.equal(value, b["learner"][key]), key
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (full, part)]
    for ra, rb in zip(*rows, strict=True):
        assert {**ra, "train_seconds": 0} == {**rb, "train_seconds": 0}


def test_eval_and_list(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--method", "dgl", "--K", "2", "--epochs", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("lr per epoch (cosine schedule, 1 epoch): 0.05\n")
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert result["test_acc"] == pytest.approx(summary["test_acc"])
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "resnet32" in listing and "infopro" in listing and "resnet32_infopro_k4.yaml" in listing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "resnet7"], "unknown arch 'resnet7'"),
        (["--method", "infoprox"], "unknown method 'infoprox'"),
        (["--K", "99"], "K=99 is larger than"),
        (["--split", "[[4, 0]]", "--K", "2"], "does not exist"),
        (["--config", "nope.yaml"], "not found"),
        (["--set", "colour=blue"], "unknown key 'colour'"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "cifar"),
        (["--activation-checkpoint", "per-layer"], "none, per-unit or per-stage:J"),
        (["--K", "2", "--activation-checkpoint", "per-stage:2"], "segments an E2E network"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    proc = run_cli("train", *QUICK, "--epochs", "1", "--out", str(tmp_path / "r"), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_existing_run_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--method", "greedy", "--K", "2", "--epochs", "1", "--out", str(out)]) == 0
    before = (out / "last.pt").read_bytes()
    proc = run_cli("train", *QUICK, "--method", "greedy", "--K", "2", "--epochs", "1", "--out", str(out))
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert (out / "last.pt").read_bytes() == before


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [*QUICK, "--method", "greedy", "--K", "2", "--out", str(out)]
    assert main(["train", *args, "--epochs", "1"]) == 0
    before = (out / "last.pt").read_bytes()
    proc = run_cli(
        "train", "--out", str(out), "--resume", "--epochs", "2", "--lr", "1e30", "--schedule", "const", "--no-progress"
    )
    assert proc.returncode == 2
    assert "non-finite loss" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (out / "last.pt").read_bytes() == before
    assert Path(out / "last.pt").exists()


def test_demo_trains_each_method_and_writes_its_table_and_plot(tmp_path, capsys):
    args = ["demo", "--arch", "resnet8", "--methods", "e2e,greedy", "--K", "2", "--epochs", "1", "--batch-size", "16"]
    assert main([*args, "--train-limit", "32", "--no-progress", "--out", str(tmp_path)]) == 0
    summaries = json.loads((tmp_path / "results.json").read_text())
    assert [s["method"] for s in summaries] == ["e2e", "greedy"]
    assert all(0 <= s["test_acc"] <= 1 for s in summaries)
    table = (tmp_path / "results.md").read_text()
    assert table.strip() in capsys.readouterr().out and "greedy" in table
    assert (tmp_path / "demo.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        ({"lr": 0.1, "epochs": 2}, "lr per epoch (cosine schedule, 2 epochs): 0.1, 0.05"),
        (
            {"lr": 0.8, "epochs": 160, "schedule": "const"},
            "lr per epoch (const schedule, 160 epochs): 0.8, 0.8, 0.8, 0.8, ...",
        ),
        (
            {"lr": 0.8, "epochs": 160, "schedule": "paper-cos"},
            "(paper-cos schedule, 160 epochs): 0.01, 0.08897, 0.1679",
        ),
    ],
)
def test_a_run_starts_by_printing_its_first_learning_rates(flags, line):
    assert line in schedule_line(build_config(None, flags))
