"""Checkpoint files: atomic writes, and the pipeline's per-stage form (a commit record naming one file per
stage, with checksums) read back whole by `load_checkpoint`, with clear errors for a missing or changed file."""

from __future__ import annotations

import pytest
import torch

from helpers import make_learner
from locallearn.engine.checkpoint import (
    commit_record,
    first_non_finite,
    load_checkpoint,
    read_checkpoint,
    remove_stale_stages,
    save_checkpoint,
    save_stage,
    stage_file,
    stage_folder,
)
from locallearn.engine.pipeline.run import stage_state_dict
from locallearn.engine.stats import StepStats
from locallearn.errors import ConfigError

RUN_METADATA = {"history": [], "elapsed": 0.0, "config": {}, "torch_rng": torch.get_rng_state()}


def _per_stage_checkpoint(run_dir, learner, epoch: int) -> dict:
    """What the pipeline engine writes: each stage's file, then the commit record without stage tensors."""
    optimizers = [{"state": {}, "param_groups": [{"lr": 0.1 * (k + 1)}]} for k in range(learner.num_stages)]
    files = []
    for k in range(learner.num_stages):
        digest = save_stage(run_dir, stage_file(epoch, k), k, stage_state_dict(learner, [k]), optimizers[k])
        files.append((stage_file(epoch, k), digest))
    whole = {"epoch": epoch, "learner": learner.state_dict(), "optimizers": optimizers, **RUN_METADATA}
    keys = set(stage_state_dict(learner, range(learner.num_stages)))
    save_checkpoint(run_dir / "last.pt", commit_record(whole, files, keys))
    return {"learner": learner.state_dict(), "optimizers": optimizers}


def test_a_per_stage_checkpoint_reads_back_whole(tmp_path):
    learner = make_learner("infopro+man", k=3)
    want = _per_stage_checkpoint(tmp_path, learner, epoch=4)
    assert sorted(p.name for p in (tmp_path / "stages" / "epoch_0005").iterdir()) == [
        "stage_00.pt",
        "stage_01.pt",
        "stage_02.pt",
    ]
    got = load_checkpoint(tmp_path / "last.pt")
    assert got["optimizers"] == want["optimizers"]
    assert got["learner"].keys() == want["learner"].keys()
    for key, value in want["learner"].items():
        torch.testing.assert_close(got["learner"][key], value, rtol=0, atol=0, msg=key)
    fresh = make_learner("infopro+man", k=3, seed=7)
    fresh.load_state_dict(got["learner"])  # strict: nothing missing, nothing extra
    record = load_checkpoint(tmp_path / "last.pt", assemble=False)
    assert record["learner"] == {} and record["optimizers"] == [None] * 3


def test_a_changed_or_missing_stage_file_is_named(tmp_path):
    learner = make_learner("greedy", k=2)
    _per_stage_checkpoint(tmp_path, learner, epoch=0)
    path = tmp_path / stage_file(0, 1)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"stage_01\.pt does not match the checksum"):
        load_checkpoint(tmp_path / "last.pt")
    path.unlink()
    with pytest.raises(ConfigError, match=r"stage_01\.pt \(stage 1 .*\) is missing"):
        load_checkpoint(tmp_path / "last.pt")


def test_committing_an_epoch_removes_only_the_older_files_of_ones_own_stages(tmp_path):
    learner = make_learner("greedy", k=2)
    _per_stage_checkpoint(tmp_path, learner, epoch=0)
    _per_stage_checkpoint(tmp_path, learner, epoch=1)
    remove_stale_stages(tmp_path, stage_folder(1), range(0, 1))  # the owner of stage 0 cleans up
    assert not (tmp_path / stage_file(0, 0)).exists() and (tmp_path / stage_file(0, 1)).exists()
    assert (tmp_path / "stages" / "epoch_0001").is_dir()  # stage 1's owner has not cleaned up yet
    remove_stale_stages(tmp_path, stage_folder(1), range(1, 2))
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == ["epoch_0002"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_stage_files_of_a_step_within_an_epoch_have_their_own_folder():
    assert stage_file(2, 1) == "stages/epoch_0003/stage_01.pt"
    assert stage_file(2, 1, step=40) == "stages/epoch_0003_step_000040/stage_01.pt"


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 0})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"epoch": 1, "bad": Unpicklable()})
    assert read_checkpoint(path)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_a_within_epoch_checkpoint_of_an_earlier_version_still_loads(tmp_path):
    """Those held the epoch's StepStats object: the one class allowed besides tensors and plain data."""
    stats = StepStats(torch.ones(2), torch.zeros(2, dtype=torch.long), [True, False], seen=8, steps=1)
    torch.save({"epoch": 0, "partial": {"step": 1, "stats": stats}}, tmp_path / "last.pt")
    got = read_checkpoint(tmp_path / "last.pt")["partial"]["stats"]
    assert isinstance(got, StepStats) and got.seen == 8 and torch.equal(got.loss, stats.loss)
    assert StepStats.from_dict(stats.as_dict()).has_logits == [True, False]


def test_the_first_non_finite_tensor_is_named_by_its_path():
    state = {"learner": {"a": torch.zeros(2), "b": torch.tensor([1.0, float("inf")])}, "rng": torch.tensor([255])}
    assert first_non_finite(state) == "learner/b"
    state["learner"]["b"][1] = 0
    assert first_non_finite(state) is None
    assert first_non_finite({"optimizers": [{"state": {3: {"momentum_buffer": torch.tensor(float("nan"))}}}]}) == (
        "optimizers/0/state/3/momentum_buffer"
    )


def test_a_file_that_is_not_a_runs_checkpoint_is_named(tmp_path):
    torch.save(make_learner("greedy", k=2).state_dict(), tmp_path / "last.pt")  # a bare state_dict
    with pytest.raises(ConfigError, match=r"last\.pt is not a locallearn checkpoint \(it has no config, elapsed"):
        load_checkpoint(tmp_path / "last.pt")
