"""The memory planner: predictions against the profiler's measurement, budget queries, and train's pre-flight check."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from helpers import run_cli
from locallearn.cli import main
from locallearn.config import build_config
from locallearn.errors import ConfigError
from locallearn.plan.apply import run_spec
from locallearn.plan.budget import parse_size
from locallearn.plan.predict import MemoryPredictor
from locallearn.plan.search import largest_batch, smallest_k
from locallearn.profile.compare import measure

SMALL = {"arch": "resnet32", "dataset": "cifar10", "device": "cpu", "threads": 1}


def config(method: str, k: int, batch: int, split: str | None = "even-memory", **flags):
    return build_config(None, {**SMALL, "method": method, "K": k, "batch_size": batch, "split": split, **flags})


def measured_peak(method: str, k: int, batch: int, split: str | None) -> int:
    cfg = config(method, k, batch, split)
    return measure(cfg, run_spec(cfg)).peak_bytes


@pytest.mark.parametrize(
    ("method", "k", "batch"),
    [
        ("e2e", 1, 24),
        ("dgl", 4, 16),
        ("infopro", 3, 24),
        ("infopro+contsup:R1E", 4, 16),
        ("infopro+man++", 3, 16),
        ("infopro+mlaan", 4, 16),
    ],
)
def test_predicted_peak_matches_a_measured_step(method, k, batch):
    # Predicted from batches of 2-4 and the unit table; measured on a real step at the full batch, the
    # allocator's peak (docs/design.md). The transients are carried from batch 4 by a ratio: within 3%.
    cfg = config(method, k, batch, "even-memory" if k > 1 else None)
    predicted = MemoryPredictor(cfg, run_spec(cfg)).predict(cfg.K, cfg.split, batch)
    measured = measure(cfg, run_spec(cfg))
    assert predicted.peak_bytes == pytest.approx(measured.peak_bytes, rel=0.03)
    assert predicted.peak_stage == measured.peak_stage
    for ours, traced in zip(predicted.stages, measured.stages, strict=True):  # what the split decides: exact
        assert ours.activation_bytes + ours.aux_bytes == pytest.approx(traced.held_bytes, rel=1e-3)
    assert predicted.train_flops == measured.train_flops


def test_the_chosen_k_fits_when_measured_and_k_minus_one_does_not():
    batch = 32
    k2, k3 = (measured_peak("greedy", k, batch, "even-memory") for k in (2, 3))
    assert k3 < k2
    budget = (k2 + k3) // 2  # between the measured peaks: the plan must be K = 3
    cfg = config("greedy", 4, batch)
    plan = smallest_k(MemoryPredictor(cfg, run_spec(cfg)), budget, batch)
    assert plan.fits and plan.choice.K == 3
    assert measured_peak("greedy", plan.choice.K, batch, plan.choice.split) <= budget
    assert measured_peak("greedy", plan.previous.K, batch, plan.previous.split) > budget


def test_largest_batch_fits_and_one_more_does_not():
    b8, b9 = (measured_peak("infopro", 2, batch, "even-memory") for batch in (8, 9))
    budget = (b8 + b9) // 2  # between the measured peaks: the plan must be batch 8
    cfg = config("infopro", 2, 8)
    plan = largest_batch(MemoryPredictor(cfg, run_spec(cfg)), 2, "even-memory", budget)
    assert plan.fits and plan.batch_size == 8
    assert plan.choice.prediction.peak_bytes <= budget < plan.previous.prediction.peak_bytes
    assert plan.previous.prediction.batch_size == plan.batch_size + 1
    assert b8 <= budget < b9


def test_plan_json_answers_a_budget_query(capsys):
    args = ["plan", "--arch", "resnet32", "--method", "dgl", "--dataset", "cifar10", "--batch-size", "64"]
    assert main([*args, "--budget", "48MiB", "--threads", "1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    plan = answer["plan"]
    assert answer["fits"] and answer["budget_bytes"] == 48 * 2**20
    assert plan["peak_bytes"] <= answer["budget_bytes"] < answer["previous"]["peak_bytes"]
    assert answer["previous"]["K"] == plan["K"] - 1
    assert len(plan["stages"]) == plan["K"] and len(plan["cuts"]) == plan["K"] - 1
    assert plan["split"] == "units:" + ",".join(str(c) for c in plan["cuts"])
    assert plan["flops_overhead"] > 0  # DGL's aux nets cost FLOPs


def test_nothing_fits_says_what_dominates_the_smallest_peak(capsys):
    args = ["plan", "--arch", "resnet32", "--method", "greedy", "--dataset", "cifar10", "--batch-size", "64"]
    assert main([*args, "--budget", "1MiB", "--max-K", "4", "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert "nothing fits in 1.0 MiB up to K = 4" in out and "dominated by" in out


def test_aux_nets_dominating_get_a_lighter_suggestion():
    # InfoPro's decoder works at the input resolution: at K = 12 it outweighs the backbone's activations, so no
    # K fits 60 MiB at aux_widen 2; a lighter aux net does.
    cfg = config("infopro", 4, 64, method_options={"aux_widen": 2})
    budget = 60 * 2**20
    plan = smallest_k(MemoryPredictor(cfg, run_spec(cfg)), budget, 64, max_k=12)
    assert not plan.fits and plan.choice.prediction.peak_bytes > budget
    assert plan.lighter is not None and plan.lighter["peak_bytes"] <= budget
    assert plan.lighter["options"] != {}


@pytest.mark.parametrize("text", ["12 parsecs", "-1GiB", "GiB", ""])
def test_bad_budgets_are_refused(text):
    with pytest.raises(ConfigError, match="cannot read the memory size"):
        parse_size(text)


def test_sizes():
    assert parse_size("12GiB") == 12 * 2**30
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("4096") == 4096


def test_an_impossible_run_is_refused_before_any_data_is_read(tmp_path):
    # The data folder does not exist: had the check come after loading, the error would be about the data.
    args = ["train", "--arch", "resnet110", "--method", "e2e", "--batch-size", "10000000", "--dataset", "cifar10"]
    args += ["--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "run"), "--threads", "1"]
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "predicted peak" in lines[0] and "available" in lines[0] and "locallearn plan" in lines[0]
    assert "--skip-memory-check" in lines[0]
    skipped = run_cli(*args, "--skip-memory-check", timeout=120)
    assert skipped.returncode == 2 and "predicted peak" not in skipped.stderr  # now the data is what fails


def test_train_memory_budget_writes_the_choice_into_config_yaml(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--arch", "resnet8", "--method", "greedy", "--dataset", "cifar10-sample", "--train-limit", "32"]
    args += ["--test-limit", "16", "--batch-size", "16", "--epochs", "1", "--no-progress", "--threads", "1"]
    cfg = build_config(None, {"arch": "resnet8", "method": "greedy", "dataset": "cifar10-sample", "batch_size": 16})
    predictor = MemoryPredictor(cfg, run_spec(cfg))
    k1, k2 = (predictor.predict(k, "even-memory", 16).peak_bytes for k in (1, 2))
    assert main([*args, "--memory-budget", str((k1 + k2) // 2), "--out", str(out)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["K"] == 2 and saved["split"] == "units:" + ",".join(map(str, predictor.cuts(2, "even-memory")))
    assert "K = 2" in capsys.readouterr().err


def test_the_readme_plan_commands_run_as_printed(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("locallearn plan ")]
    assert len(commands) == 2
    for line in commands:
        assert main([*shlex.split(line)[1:], "--threads", "1"]) == 0, line
        out = capsys.readouterr().out
        if "--json" in line:
            answer = json.loads(out)
            assert answer["fits"] and answer["plan"]["K"] == 4 and answer["batch_size"] > 1
        else:
            assert "memory-balanced" in out and "train it: locallearn train" in out


def test_budget_auto_is_the_memory_the_device_has_free(monkeypatch, capsys):
    monkeypatch.setattr("locallearn.plan.budget.available_bytes", lambda device: 50 * 2**20)
    args = ["plan", "--arch", "resnet32", "--method", "greedy", "--dataset", "cifar10", "--batch-size", "64"]
    assert main([*args, "--budget", "auto", "--threads", "1", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["budget_bytes"] == 50 * 2**20 and answer["plan"]["peak_bytes"] <= 50 * 2**20
