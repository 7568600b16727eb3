"""Bad inputs and faults, as a careless or hostile user would produce them.

Every case ends with exit status 2 and one line on stderr that names the problem (no traceback), and loses
nothing: where a run existed, its `last.pt` is byte for byte what it was. Faults during training (a
diverging run with frequent checkpoints, a full disk, kill -9 in the middle of a save) keep the last good
checkpoint, and a crafted checkpoint is refused without running its payload.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from locallearn.cli import main
from locallearn.engine import checkpoint, run_dir
from locallearn.engine.checkpoint import first_non_finite, load_checkpoint
from locallearn.engine.local import LocalEngine

SRC = Path(__file__).resolve().parents[1] / "src"
# 64 images in batches of 32: 2 steps per epoch; the template run has trained epoch 1 of 2.
QUICK = ["--arch", "resnet8", "--dataset", "cifar10-sample", "--train-limit", "64", "--test-limit", "32"]
QUICK += ["--batch-size", "32", "--lr", "0.05", "--no-progress", "--threads", "1"]
TRAIN = ["train", *QUICK, "--method", "greedy", "--K", "2", "--epochs", "2"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A run stopped after epoch 1 of 2 (trained once per module; each test works on its own copy)."""
    out = tmp_path_factory.mktemp("template") / "run"
    assert main([*TRAIN, "--stop-after-epoch", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(template, tmp_path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "run"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fails(argv: list[str], capsys) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one stderr line. Returns that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("locallearn: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "lr=true"], "'lr' in --set lr=true must be a number (float, e.g. 0.1 or 1e-3); got true"),
        (["--set", "epochs=2.5"], "'epochs' in --set epochs=2.5 must be a whole number (int); got 2.5"),
        (["--set", "nesterov=1"], "'nesterov' in --set nesterov=1 must be true or false (bool); got 1"),
        (["--set", "train_limit=some"], "'train_limit' in --set train_limit=some must be a whole number"),
        (["--set", "method_options.temperature=[1]"], "'method_options.temperature' in --set"),
        (["--set", "pipeline.depth=deep"], "'pipeline.depth' in --set pipeline.depth=deep must be a whole number"),
        (["--set", "lr=.nan"], "'lr' in --set lr=.nan must be a number"),
        (["--train-limit", "0"], "train_limit must be >= 1"),
        (["--test-limit", "0"], "test_limit must be >= 1"),
        (["--stop-after-epoch", "0"], "--stop-after-epoch must be an epoch number >= 1"),
        (["--stop-after-epoch", "-1"], "--stop-after-epoch must be an epoch number >= 1"),
        (["--K", "1"], "K=1 leaves method 'greedy' no module boundary"),
        (["--set", "log_every=0"], "log_every must be >= 1"),
        (["--arch", ":"], "--arch ':' must be a registered name or package.module:callable"),
        (["--arch", "math:pi"], "'pi' in module 'math' is a float, not a callable"),
        (["--arch", "json:dumps"], "--arch json:dumps cannot be called as dumps(num_classes=...)"),
        (["--arch", "no_such_module_xyz:build"], "cannot import 'no_such_module_xyz'"),
        (["--method", "nope"], "unknown method 'nope'; choose one of: e2e, "),
        (["--device", "gpu0"], "unknown device 'gpu0'; use auto, cpu, cuda or cuda:N"),
        (["--set", "method_options.aux_net=3c3f"], "method_options.aux_net must be one of 0c1f,"),
        (["--set", "split=[[1, 2]"], "bad --set 'split=[[1, 2]': the value is not valid YAML"),
    ],
)
@pytest.mark.parametrize("where", ["new run", "resumed run"])
def test_a_bad_value_is_one_line_and_changes_nothing(args, message, where, tmp_path, capsys, request):
    if where == "new run":
        out = tmp_path / "new"
        assert message in fails([*TRAIN, "--out", str(out), *args], capsys)
        assert not out.exists() or not any(out.iterdir())  # refused before training: nothing written
    else:
        out = request.getfixturevalue("run")
        before = {path.name: digest(path) for path in out.iterdir()}
        assert message in fails(["train", "--out", str(out), "--resume", "--no-progress", *args], capsys)
        assert {path.name: digest(path) for path in out.iterdir()} == before


def test_a_bad_value_in_a_recipe_is_named(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("arch: resnet8\nmethod: greedy\nK: 2\nepochs: two\n")
    line = fails(["train", "--config", str(recipe), "--out", str(tmp_path / "r")], capsys)
    assert f"'epochs' in recipe {recipe} must be a whole number (int); got \"two\"" in line
    recipe.write_text("arch: resnet8\nmethod_options: {ixx_1: 1\n")
    line = fails(["train", "--config", str(recipe), "--out", str(tmp_path / "r")], capsys)
    assert f"recipe '{recipe}' is not valid YAML (line 3: " in line


# --------------------------------------------------------------------------------------- the run folder
def test_an_existing_file_as_out_is_refused(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert "is a file, not a folder" in fails([*TRAIN, "--out", str(path)], capsys)
    assert path.read_text() == "mine"


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path, capsys):
    """The user's own config.yaml (a recipe, not a resolved config) must not be overwritten."""
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "config.yaml").write_text("arch: resnet32\nlr: 0.1\n")
    line = fails([*TRAIN, "--out", str(folder)], capsys)
    assert "is not empty and is not a run folder (it holds config.yaml)" in line
    assert (folder / "config.yaml").read_text() == "arch: resnet32\nlr: 0.1\n"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]


def test_a_run_that_never_reached_its_first_checkpoint_can_be_started_again(run, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(run / "config.yaml", again / "config.yaml")  # what train writes before its first epoch
    assert main([*TRAIN, "--epochs", "1", "--out", str(again)]) == 0
    assert load_checkpoint(again / "last.pt")["epoch"] == 0


def test_a_folder_without_write_permission_is_named_before_training(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()

    def no_permission(*args, **kwargs):  # what a read-only folder does (the tests may run as root)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(run_dir.tempfile, "TemporaryFile", no_permission)
    line = fails([*TRAIN, "--out", str(folder)], capsys)
    assert f"no permission to write {folder}; choose a folder you can write to (--out)" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_named_before_training(tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert "no permission to write" in fails([*TRAIN, "--out", str(folder / "run")], capsys)
    finally:
        folder.chmod(0o755)


def test_resume_and_eval_of_a_folder_without_a_run(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "drop --resume to start a new run" in fails(["train", "--out", str(empty), "--resume"], capsys)
    line = fails(["eval", str(empty)], capsys)
    assert "is not a run directory: pass one written by `locallearn train`" in line and "--resume" not in line
    assert "is not a folder" in fails(["eval", str(tmp_path / "missing")], capsys)


def test_output_files_respect_the_umask(tmp_path, run):
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("last.pt", "summary.json", "metrics.jsonl", "config.yaml"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask, name
    for mask, mode in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        old = os.umask(mask)
        try:
            checkpoint.write_json(tmp_path / f"{mask:o}.json", {})
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / f"{mask:o}.json").stat().st_mode) == mode


# --------------------------------------------------------------------------------------- checkpoints
class Payload:
    """Unpickling it would run a shell command that creates `marker`: the code a crafted checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_crafted_checkpoint_is_refused_and_its_payload_never_runs(run, command, capsys):
    marker = run.parent / "payload-ran"
    state = load_checkpoint(run / "last.pt")
    torch.save({**state, "extra": Payload(marker)}, run / "last.pt")
    before = digest(run / "last.pt")
    argv = ["eval", str(run)] if command == "eval" else ["train", "--out", str(run), "--resume", "--no-progress"]
    line = fails(argv, capsys)
    assert "would run code when loaded (posix.system)" in line and "it was not loaded" in line
    assert not marker.exists()
    assert digest(run / "last.pt") == before


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_damaged_checkpoint_gets_the_same_message_from_eval_and_resume(run, command, capsys):
    path = run / "last.pt"
    path.write_bytes(path.read_bytes()[:1000])
    before = digest(path)
    argv = ["eval", str(run)] if command == "eval" else ["train", "--out", str(run), "--resume", "--no-progress"]
    line = fails(argv, capsys)
    assert f"checkpoint {path} cannot be read: it is damaged or not a locallearn checkpoint" in line
    assert digest(path) == before


def test_checkpoints_hold_only_tensors_and_plain_data(run):
    """What makes weights_only=True possible: `train` writes nothing else, within an epoch too."""
    state = torch.load(run / "last.pt", weights_only=True)
    assert set(state) >= {"epoch", "learner", "optimizers", "history", "config", "torch_rng"}
    assert state["config"]["arch"] == "resnet8" and isinstance(state["config"]["method_options"], dict)


# --------------------------------------------------------------------------------------- faults
def _poison_after_step(monkeypatch, bad_step: int) -> None:
    """From training step `bad_step` on, the weights turn NaN after the step (a diverging run whose loss has
    not been checked yet: the checks run every `log_every` steps)."""
    train_step, steps = LocalEngine.train_step, []

    def diverging_step(self, x, y):
        result = train_step(self, x, y)
        if type(self) is LocalEngine:  # not the memory probe's engine
            steps.append(1)
            if len(steps) >= bad_step:
                with torch.no_grad():
                    next(self.learner.parameters()).fill_(float("nan"))
        return result

    monkeypatch.setattr(LocalEngine, "train_step", diverging_step)


def test_a_diverged_step_never_replaces_the_last_good_checkpoint(run, capsys, monkeypatch):
    before, rows = digest(run / "last.pt"), (run / "metrics.jsonl").read_text()
    _poison_after_step(monkeypatch, 1)
    argv = ["train", "--out", str(run), "--resume", "--no-progress", "--set", "checkpoint_every=1"]
    argv += ["--set", "log_every=100"]
    line = fails(argv, capsys)
    assert "non-finite values in learner/" in line and "(epoch 2, step 1)" in line
    assert f"nothing non-finite was saved: the last good checkpoint is kept at {run / 'last.pt'}" in line
    assert digest(run / "last.pt") == before and (run / "metrics.jsonl").read_text() == rows
    assert first_non_finite(load_checkpoint(run / "last.pt")) is None


def test_a_run_that_diverges_before_its_first_checkpoint_does_not_claim_one(tmp_path, capsys, monkeypatch):
    _poison_after_step(monkeypatch, 1)
    out = tmp_path / "run"
    line = fails([*TRAIN, "--out", str(out), "--set", "checkpoint_every=1", "--set", "log_every=100"], capsys)
    assert "no checkpoint had been written yet" in line and "kept" not in line
    assert not (out / "last.pt").exists()


def test_a_real_divergence_with_frequent_checkpoints_keeps_the_last_good_checkpoint(run, capsys):
    """LR 1e30: step 1 leaves huge but finite weights, which pass the check before saving; their checkpoint
    waits until step 2's loss, the first computed with them, is finite; it is NaN, so it is never committed."""
    before = digest(run / "last.pt")
    argv = ["train", "--out", str(run), "--resume", "--lr", "1e30", "--schedule", "const"]
    line = fails([*argv, "--no-progress", "--set", "checkpoint_every=1", "--set", "log_every=100"], capsys)
    assert "non-finite loss at stage 0 (epoch 2, step 2)" in line
    assert digest(run / "last.pt") == before


def test_a_full_disk_keeps_the_checkpoint_and_the_metrics_that_match_it(run, capsys, monkeypatch):
    before, rows = digest(run / "last.pt"), (run / "metrics.jsonl").read_text()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    line = fails(["train", "--out", str(run), "--resume", "--no-progress"], capsys)
    assert f"no space left on the device to write {run / 'last.pt'}; free some space" in line
    assert "continues with --resume" in line
    assert digest(run / "last.pt") == before
    assert (run / "metrics.jsonl").read_text() == rows  # epoch 2 trained, but its checkpoint is not on disk
    assert not list(run.glob(".*.tmp"))


KILL_DURING_SAVE = """
import os, signal, sys
import torch
from locallearn.cli import main
from locallearn.engine import checkpoint

save = torch.save

def killed_half_way(obj, f):
    save(obj, f)
    f.truncate(f.tell() // 2)  # a save cut off in the middle
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

checkpoint.torch.save = killed_half_way
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_a_save_keeps_the_last_checkpoint_and_the_run_resumes(run):
    before = digest(run / "last.pt")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    argv = ["train", "--out", str(run), "--resume", "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_DURING_SAVE), *argv], env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert digest(run / "last.pt") == before
    assert len(list(run.glob(".last.pt.*.tmp"))) == 1  # the half-written file, never renamed into place
    assert main([*argv]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and not list(run.glob(".*.tmp"))
    assert len(json.loads((run / "summary.json").read_text())["stage_acc"]) == 2


USER_NET = """
import sys
from locallearn.models import build_backbone

print("user_net imported", file=sys.stderr)


def build(num_classes=10):
    return build_backbone("resnet8", num_classes)
"""


def test_eval_and_resume_say_which_module_a_run_makes_them_import_before_importing_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "user_net.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    train = ["train", *QUICK, "--arch", "user_net:build", "--method", "greedy", "--K", "2", "--epochs", "2"]
    assert main([*train, "--stop-after-epoch", "1", "--out", str(out)]) == 0
    note = "locallearn: importing module 'user_net' for the run's arch user_net:build (this runs its code"
    for argv in (["eval", str(out)], ["train", "--out", str(out), "--resume", "--no-progress"]):
        monkeypatch.delitem(sys.modules, "user_net")  # imported afresh, as in a new process
        capsys.readouterr()
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert note in err and err.index(note) < err.index("user_net imported")
