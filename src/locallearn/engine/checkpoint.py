"""Atomic checkpoint and text-file writes: a crash mid-write never leaves a truncated file behind.

A checkpoint is `last.pt`, whole (the local engine), or `last.pt` as a commit record that names one file per
stage (the pipeline engine, whose ranks each write the stages they own): `load_checkpoint` returns both in
the same form, so `--resume`, `locallearn eval` and either engine read either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    _atomic(path, lambda f: torch.save(state, f))


def stage_folder(epoch: int, step: int = 0) -> str:
    """The folder of the stage files of the end of `epoch` (0-based), or of its first `step` steps."""
    return f"stages/epoch_{epoch + 1:04d}" + (f"_step_{step:06d}" if step else "")


def stage_file(epoch: int, stage: int, step: int = 0) -> str:
    """Where stage `stage`'s state at that point lives, relative to the run directory."""
    return f"{stage_folder(epoch, step)}/stage_{stage:02d}.pt"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_stage(run_dir: Path, name: str, stage: int, tensors: dict[str, torch.Tensor], optimizer: Any) -> str:
    """Write one stage's module tensors and optimizer state atomically to `run_dir / name`; returns its SHA-256."""
    path = run_dir / name
    save_checkpoint(path, {"stage": stage, "learner": tensors, "optimizer": optimizer})
    return file_digest(path)


def commit_record(state: dict[str, Any], files: list[tuple[str, str]], stage_keys: set[str]) -> dict[str, Any]:
    """`state` (a whole checkpoint) as the commit record of per-stage `files` [(name, sha256), one per stage]:
    the entries in `stage_keys` and every optimizer state live in those files instead."""
    learner = {key: v for key, v in state["learner"].items() if key not in stage_keys}
    return {**state, "learner": learner, "optimizers": [None] * len(files), "stage_files": files}


def load_stage(run_dir: Path, record: dict[str, Any], stage: int, map_location: str | torch.device = "cpu") -> Any:
    """Stage `stage`'s (tensors, optimizer state) named by the commit `record`, checked against its digest."""
    name, digest = record["stage_files"][stage]
    path = run_dir / name
    if not path.is_file():
        raise ConfigError(
            f"{path} (stage {stage} of the checkpoint in {run_dir}) is missing; every rank needs the run "
            "directory's stages/ folder (a shared filesystem, or the same rank layout as the run that wrote it)"
        )
    if file_digest(path) != digest:
        raise ConfigError(
            f"{path} does not match the checksum recorded in {run_dir / 'last.pt'}: the file was changed or "
            "damaged; restore it or start the run over"
        )
    part = torch.load(path, map_location=map_location, weights_only=False)
    return part["learner"], part["optimizer"]


def remove_stale_stages(run_dir: Path, folder_name: str, stages: range) -> None:
    """Delete `stages`' files outside `folder_name` (once the checkpoint there is committed), then empty folders."""
    keep = run_dir / folder_name
    for k in stages:
        for path in (run_dir / "stages").glob(f"epoch_*/stage_{k:02d}.pt"):
            if path.parent != keep:
                path.unlink(missing_ok=True)
    for folder in (run_dir / "stages").glob("epoch_*"):
        if folder != keep:
            with contextlib.suppress(OSError):  # another rank's stage file is still there (it removes it itself)
                folder.rmdir()


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", *, assemble: bool = True) -> dict[str, Any]:
    """The checkpoint at `path`, with a pipeline run's stage files read in (unless `assemble` is False)."""
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path} to resume from; drop --resume to start a new run")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a foreign or damaged file: say which and what to do
        raise ConfigError(f"checkpoint {path} cannot be read ({e}); delete it to start over") from e
    stages = len(state.get("stage_files", ())) if assemble else 0  # a pipeline run's commit record
    for k in range(stages):
        tensors, optimizer = load_stage(path.parent, state, k, map_location)
        state["learner"].update(tensors)
        state["optimizers"][k] = optimizer
    return state
