"""The run directory `locallearn train` writes into, checked before any data is read or step is trained.

A folder qualifies as a new run's if it does not exist, is empty, or holds only what an earlier attempt
that never reached its first checkpoint wrote (its resolved config.yaml, metrics, temporary files): the
user's own files are never overwritten.
"""

from __future__ import annotations

import fnmatch
import tempfile
from pathlib import Path

import yaml

from ..config import RunConfig
from ..errors import ConfigError, OutputError, write_failure
from ..logs import FOLDER as TENSORBOARD
from .checkpoint import CHECKPOINT, TEMPORARY_GLOB, remove_temporaries

# What a run writes besides config.yaml (which needs a closer look: a user's recipe has the same name).
RUN_FILES = {CHECKPOINT, "metrics.jsonl", "metrics.csv", "summary.json", "stages", TENSORBOARD}


def _is_resolved_config(path: Path) -> bool:
    """Whether `path` is a config.yaml that `train` wrote: every RunConfig field, resolved (a recipe has some)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and set(data) == set(RunConfig.__dataclass_fields__)


def _foreign(entry: Path) -> bool:
    if entry.name == "config.yaml":
        return not _is_resolved_config(entry)
    return entry.name not in RUN_FILES and not fnmatch.fnmatch(entry.name, TEMPORARY_GLOB)


def prepare_run_dir(out: Path, *, resume: bool) -> None:
    """Check that `out` can hold this run (a new one, or the one `resume` continues) and is writable.

    Raises a ConfigError or OutputError saying what is wrong and what to do; creates `out` if missing.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder; choose a folder for the run")
    has_run = (out / CHECKPOINT).is_file()
    if resume and not has_run:
        raise ConfigError(f"no checkpoint at {out / CHECKPOINT} to resume from; drop --resume to start a new run")
    if not resume and has_run:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if not resume and out.is_dir():
        foreign = sorted(entry.name for entry in out.iterdir() if _foreign(entry))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ConfigError(
                f"{out} is not empty and is not a run folder (it holds {shown}); choose a new or empty --out"
            )
    try:  # fail now, not after an epoch of training, when the folder cannot be written
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise write_failure(out, e) from e
    if resume:
        remove_temporaries(out)  # of a save that a killed process left unfinished
