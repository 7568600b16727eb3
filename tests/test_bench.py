"""benchmarks/sweep.py end to end on a tiny config, its result files and their provenance, and timing."""

from __future__ import annotations

import argparse
import csv
import json

import torch

import _sweep as sweep_module
from _plots import plot_vs_k
from helpers import make_learner, random_batch
from locallearn.cli import main as locallearn
from locallearn.cli.profile import expand_configs
from locallearn.engine.local import LocalEngine
from locallearn.profile.timing import time_steps
from sweep import build_parser, main

TINY = ["--arch", "resnet8", "--dataset", "cifar10-sample", "--batch-size", "8", "--device", "cpu"]
FAST = ["--steps", "1", "--warmup-steps", "1", "--no-progress"]
PROVENANCE = ("git_sha", "git_dirty", "torch", "device", "device_name", "time_utc")


def test_sweep_expands_methods_k_and_seeds_once_each():
    args = build_parser().parse_args(["--method", "e2e,greedy", "--K", "2,4", "--seed", "0,1"])
    assert isinstance(args, argparse.Namespace)
    cfgs = expand_configs(args, seeds=args.seed)
    assert sorted((c.method, c.K, c.seed) for c in cfgs) == [
        ("e2e", 1, 0), ("e2e", 1, 1), ("greedy", 2, 0), ("greedy", 2, 1), ("greedy", 4, 0), ("greedy", 4, 1),
    ]  # fmt: skip


def test_bench_sweep_end_to_end_writes_results_with_provenance(tmp_path, capsys):
    args = ["--method", "e2e,greedy", "--K", "2", "--epochs", "1", "--train-limit", "32", "--test-limit", "16"]
    assert main([*TINY, *args, *FAST, "--out", str(tmp_path), "--name", "tiny"]) == 0
    table = capsys.readouterr().out
    assert "| greedy | 2 | 1 |" in table and "| s / epoch |" in table and "| theor. overhead |" in table
    (json_file,) = tmp_path.glob("tiny_cpu*_*.json")
    rows = json.loads(json_file.read_text())
    assert [(r["method"], r["K"]) for r in rows] == [("e2e", 1), ("greedy", 2)]
    for r in rows:
        assert all(r[k] is not None for k in PROVENANCE)
        assert r["torch"] == torch.__version__ and r["device"] == "cpu"
        assert torch.backends.cpu.get_cpu_capability() in r["device_name"]  # hosts of one model string differ
        assert r["config"]["method"] == r["method"] and r["config"]["epochs"] == 1
        assert 0 <= r["error"] <= 100 and r["images_per_s"] > 0 and 0 < r["ratio"] <= 1
        assert r["trained_git_sha"] == r["git_sha"]  # trained by this very sweep
    with json_file.with_suffix(".csv").open() as f:
        assert all(r["git_sha"] == rows[0]["git_sha"] for r in csv.DictReader(f))
    for suffix in (".md", "_error.png", "_memory.png"):
        assert json_file.with_name(json_file.stem + suffix).exists()


def test_bench_overhead_mode_times_every_method_against_e2e(tmp_path, capsys):
    args = ["--mode", "overhead", "--method", "greedy,dgl", "--K", "2", "--rounds", "1", "--out", str(tmp_path)]
    assert main([*TINY, *args, *FAST]) == 0
    assert "wall overhead" in capsys.readouterr().out
    (json_file,) = tmp_path.glob("overhead_cpu*_*.json")
    rows = json.loads(json_file.read_text())
    assert [r["method"] for r in rows] == ["e2e", "greedy", "dgl"]
    assert rows[0]["wall_overhead"] == 0.0 and rows[0]["flops_overhead"] == 0.0
    assert rows[2]["flops_overhead"] > rows[1]["flops_overhead"] >= 0  # DGL's MLP-SR head costs more than 0c1f
    assert all(r["torch"] == torch.__version__ and r["git_sha"] for r in rows)


def test_locallearn_bench_names_the_command_that_replaced_it(capsys):
    assert locallearn(["bench", "--method", "greedy", "--K", "2,4"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("run `python benchmarks/sweep.py --method greedy --K 2,4`") and "\n" not in error


def test_time_steps_excludes_warmup_and_times_each_step():
    learner = make_learner("greedy", k=2)
    engine = LocalEngine(learner, [torch.optim.SGD(learner.stage_parameters(k), lr=0.01) for k in range(2)])
    x, y = random_batch(4)
    times = time_steps(engine, x, y, steps=3, warmup=1)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_plot_needs_something_to_draw(tmp_path):
    assert plot_vs_k([], lambda r: r["error"], "error", tmp_path / "none.png") is None
    rows = [{"method": "greedy", "K": 2, "split": None, "error": 10.0}, {"method": "e2e", "K": 1, "error": 8.0}]
    assert plot_vs_k(rows, lambda r: r["error"], "error", tmp_path / "p.png") == tmp_path / "p.png"


def test_a_stopped_sweep_reuses_finished_runs_and_resumes_the_interrupted_one(tmp_path):
    from _sweep import run_name, train_or_reuse
    from locallearn.cli.profile import expand_configs as expand

    args = [*TINY, "--method", "greedy", "--K", "2", "--train-limit", "32", "--test-limit", "16"]
    (cfg,) = expand(build_parser().parse_args([*args, "--epochs", "2"]), seeds=None)
    run_dir = tmp_path / run_name(cfg)
    whole = train_or_reuse(cfg, tmp_path / "whole")
    locallearn(["train", *args, "--epochs", "2", "--out", str(run_dir), "--stop-after-epoch", "1", "--no-progress"])
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    resumed = train_or_reuse(cfg, run_dir)  # continues from epoch 1: the same result as the whole run
    assert resumed["epochs"] == 2 and resumed["test_acc"] == whole["test_acc"]
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0]) == first  # epoch 1 not redone
    stamp = (run_dir / "last.pt").stat().st_mtime_ns
    assert train_or_reuse(cfg, run_dir) == resumed  # finished: reused, not trained again
    assert (run_dir / "last.pt").stat().st_mtime_ns == stamp
    train_or_reuse(cfg, run_dir, rerun=True)
    assert (run_dir / "last.pt").stat().st_mtime_ns != stamp


def test_a_run_is_reused_wherever_its_data_lives_but_not_with_another_setting():
    from _sweep import same_run
    from locallearn.config import build_config

    cfg = build_config(flags=dict(arch="resnet8", method="greedy", K=2, data_dir="/a"))
    saved = build_config(flags=dict(arch="resnet8", method="greedy", K=2, data_dir="../b")).to_dict()
    assert same_run(saved, cfg)
    del saved["checkpoint_every"]  # written before the field existed: its default
    assert same_run(saved, cfg)
    assert not same_run({**saved, "lr": 0.5}, cfg)


def test_sweeps_running_at_once_split_the_runs_and_collect_each_others(tmp_path, monkeypatch):
    """A run another process holds is left for the end, then waited for and reused, not trained twice."""
    import threading

    from locallearn.cli.profile import expand_configs as expand

    args = [*TINY, "--method", "greedy,dgl", "--K", "2", "--epochs", "1", "--train-limit", "16"]
    cfgs = expand(build_parser().parse_args([*args, "--test-limit", "8"]), seeds=None)
    trained: list[str] = []
    fit = sweep_module.Trainer.fit
    monkeypatch.setattr(sweep_module.Trainer, "fit", lambda self: trained.append(self.out.name) or fit(self))
    first = tmp_path / sweep_module.run_name(cfgs[0])
    held, release = threading.Event(), threading.Event()

    def other_process() -> None:  # holds the first run, as a second sweep would while training it
        with sweep_module.claim(first, wait=False) as mine:
            assert mine
            held.set()
            release.wait()
            sweep_module.train_or_reuse(cfgs[0], first)

    other = threading.Thread(target=other_process)
    other.start()
    assert held.wait(timeout=60)  # the other holder took the lock
    with sweep_module.claim(first, wait=False) as mine:
        assert not mine  # taken: a sweep skips it
    release.set()
    summaries = sweep_module.train_all(cfgs, tmp_path)
    other.join()
    assert summaries[0] == json.loads((first / "summary.json").read_text())
    assert summaries[1]["method"] == "dgl"
    assert sorted(trained) == sorted([first.name, sweep_module.run_name(cfgs[1])])  # each trained once


def test_collect_tabulates_the_finished_runs_and_trains_nothing(tmp_path):
    from _sweep import run_name, train_or_reuse
    from locallearn.cli.profile import expand_configs as expand

    args = [*TINY, "--method", "greedy,dgl", "--K", "2", "--epochs", "1", "--train-limit", "16"]
    args += ["--test-limit", "8"]
    greedy, dgl = expand(build_parser().parse_args(args), seeds=None)
    runs = tmp_path / "tmp" / "runs" / "part"
    finished = train_or_reuse(greedy, runs / run_name(greedy))
    assert main([*args, *FAST, "--collect", "--out", str(tmp_path), "--name", "part"]) == 0
    (json_file,) = tmp_path.glob("part_cpu*_*.json")
    rows = json.loads(json_file.read_text())
    assert rows[0]["method"] == "greedy" and rows[0]["test_acc"] == finished["test_acc"]
    assert rows[1]["method"] == "dgl" and "test_acc" not in rows[1] and rows[1]["images_per_s"] > 0
    assert not (runs / run_name(dgl)).exists()


def test_a_sweep_goes_on_from_its_result_files_without_its_run_folders(tmp_path, monkeypatch, capsys):
    """A new checkout has the committed results but not the run folders: recorded runs are not trained again."""
    import shutil

    args = [*TINY, "--method", "greedy", "--K", "2", "--train-limit", "16", "--test-limit", "8", *FAST]
    args += ["--out", str(tmp_path), "--name", "kept"]
    assert main([*args, "--epochs", "1"]) == 0
    (json_file,) = tmp_path.glob("kept_cpu*_*.json")
    (first,) = json.loads(json_file.read_text())
    shutil.rmtree(tmp_path / "tmp")
    trained: list[int] = []
    fit = sweep_module.Trainer.fit
    monkeypatch.setattr(sweep_module.Trainer, "fit", lambda self: trained.append(self.cfg.epochs) or fit(self))
    assert main([*args, "--epochs", "1"]) == 0
    (again,) = json.loads(json_file.read_text())
    assert trained == [] and not (tmp_path / "tmp" / "runs").exists()
    for key in ("test_acc", "best_acc", "train_seconds", "trained_git_sha"):
        assert again[key] == first[key]
    assert main([*args, "--epochs", "2"]) == 0  # another budget: another run, trained
    assert trained == [2]
    json_file.write_text("[{")
    capsys.readouterr()
    assert main([*args, "--epochs", "1"]) != 0  # a damaged record is named, not silently ignored
    error = capsys.readouterr().err
    assert f"{json_file} is not a results file" in error and "--rerun" in error
    assert main([*args, "--epochs", "1", "--rerun"]) == 0 and trained == [2, 1]


def test_a_sweep_of_some_runs_rewrites_their_rows_and_keeps_the_others(tmp_path, capsys):
    args = [*TINY, "--K", "2", "--epochs", "1", "--train-limit", "16", "--test-limit", "8", *FAST]
    args += ["--out", str(tmp_path), "--name", "part"]
    assert main([*args, "--method", "greedy,dgl", "--no-train"]) == 0
    (json_file,) = tmp_path.glob("part_cpu*_*.json")
    greedy, _ = json.loads(json_file.read_text())
    assert main([*args, "--method", "dgl"]) == 0  # trains dgl: its row gains an accuracy
    rows = json.loads(json_file.read_text())
    assert [r["method"] for r in rows] == ["greedy", "dgl"]
    assert rows[0] == greedy and "test_acc" in rows[1]
    capsys.readouterr()
    assert main([*args, "--method", "e2e", "--no-train"]) == 0  # a new run comes last
    assert [r["method"] for r in json.loads(json_file.read_text())] == ["greedy", "dgl", "e2e"]
    table = capsys.readouterr().out
    assert "| greedy | 2 |" in table and "| dgl | 2 |" in table and "| e2e | 1 |" in table
    assert len(list(csv.DictReader(json_file.with_suffix(".csv").open()))) == 3
