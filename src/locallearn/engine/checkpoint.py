"""Atomic checkpoint and text-file writes: a crash mid-write never leaves a truncated file behind.

Checkpoints hold only tensors and plain data (dicts, lists, numbers, strings) and are read with
`torch.load(weights_only=True)`, so a crafted file cannot run code when a run is evaluated or resumed.
A checkpoint is `last.pt`, whole (the local engine), or `last.pt` as a commit record that names one file per
stage (the pipeline engine, whose ranks each write the stages they own): `load_checkpoint` returns both in
the same form, so `--resume`, `locallearn eval` and either engine read either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import ConfigError, write_failure
from .stats import StepStats

# Classes a checkpoint may hold besides tensors and plain data: none is written any more, but checkpoints taken
# within an epoch by earlier versions held the epoch's StepStats (a plain dataclass: loading it runs no code).
ALLOWED_CLASSES = [StepStats]

CHECKPOINT = "last.pt"  # a run's checkpoint, in its run directory
# What every checkpoint of a run holds (see Trainer.state); a pipeline's commit record too.
RUN_KEYS = {"epoch", "learner", "optimizers", "history", "elapsed", "config", "torch_rng"}
# `write_atomic`'s files before their rename, and a checkpoint waiting to be verified (Trainer.pending_path): only a
# run that stopped leaves one behind, and resuming it deletes them.
TEMPORARY_GLOB = ".*.tmp"


def _file_mode() -> int:
    """0o666 less the process's umask: what `open()` would create (mkstemp's files are always 0o600)."""
    mask = os.umask(0o077)  # reading the umask means setting it; a file made meanwhile is private, not open
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write `path` through a temporary file that replaces it only once complete and on disk."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_failure(path, e) from e
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        replace_file(Path(tmp), path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # raised by the writer: disk full, quota, ...
            raise write_failure(path, e) from e
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    write_atomic(path, lambda f: torch.save(state, f))


def replace_file(source: Path, target: Path) -> None:
    """Atomically put the complete file `source` in place of `target`."""
    try:
        os.replace(source, target)
    except OSError as e:
        raise write_failure(target, e) from e


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
    part = read_checkpoint(path, map_location)
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
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """One checkpoint file, loaded as tensors and plain data only; anything else is refused unread."""
    try:
        with torch.serialization.safe_globals(ALLOWED_CLASSES):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        raise ConfigError(f"cannot read checkpoint {path} ({e.strerror or e}); check the file's permissions") from e
    except Exception as e:  # a crafted, foreign or damaged file: say which and what to do
        code = re.search(r"GLOBAL (\S+)", str(e))
        if code:
            raise ConfigError(
                f"checkpoint {path} would run code when loaded ({code.group(1)}), which a locallearn checkpoint "
                "never does; it was not loaded: delete it, or restore a checkpoint written by locallearn"
            ) from e
        raise ConfigError(
            f"checkpoint {path} cannot be read: it is damaged or not a locallearn checkpoint "
            f"({type(e).__name__}); delete it to start over, or restore a good copy"
        ) from e
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {path} is not a locallearn checkpoint; delete it or choose another run")
    return state


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", *, assemble: bool = True, missing: str = ""
) -> dict[str, Any]:
    """The checkpoint at `path`, with a pipeline run's stage files read in (unless `assemble` is False).

    `missing`: what to do when there is none, appended to the error (the fix depends on the command).
    """
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}" + (f"; {missing}" if missing else ""))
    state = read_checkpoint(path, map_location)
    lacking = sorted(RUN_KEYS - set(state))
    if lacking:  # e.g. a bare state_dict saved under the name
        raise ConfigError(
            f"{path} is not a locallearn checkpoint (it has no {', '.join(lacking)}); delete it or choose another run"
        )
    return assemble_stages(state, path.parent, map_location) if assemble else state


def assemble_stages(state: dict[str, Any], run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A whole checkpoint from a pipeline run's commit record (its stage files read in); any other as it is."""
    for k in range(len(state.get("stage_files", ()))):
        tensors, optimizer = load_stage(run_dir, state, k, map_location)
        state["learner"].update(tensors)
        state["optimizers"][k] = optimizer
    return state


def first_non_finite(obj: Any, where: str = "") -> str | None:
    """The path (e.g. `learner/net.stages.2.0.weight`) of the first floating tensor in `obj` holding NaN or
    inf, or None when every one is finite; nested dicts, lists and tuples are searched."""
    if isinstance(obj, torch.Tensor):
        finite = not obj.is_floating_point() or bool(torch.isfinite(obj).all())
        return None if finite else where
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{where}/{key}" if where else str(key))
        if found is not None:
            return found
    return None


def remove_temporaries(run_dir: Path) -> None:
    """Delete the temporary files of writes that a killed process left unfinished (never a committed file)."""
    for path in run_dir.glob(TEMPORARY_GLOB):
        path.unlink(missing_ok=True)
