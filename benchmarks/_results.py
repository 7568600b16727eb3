"""Reading a sweep's earlier result files: what it measured before, so that it goes on from there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from locallearn.errors import ConfigError
from locallearn.provenance import hardware_tag


def read_rows(path: Path, *, ignore_damaged: bool = False) -> list[dict[str, Any]]:
    """The rows of the result file `path` ([] if there is none); a damaged one is an error unless ignored."""
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if ignore_damaged:
            return []
        raise ConfigError(f"{path} is not a results file ({e}); move it away, or pass --rerun to ignore it") from e


def earlier_rows(out_dir: str | Path, bench: str, device: torch.device) -> list[dict[str, Any]]:
    """The rows of every result file `bench` wrote earlier under `out_dir` on this hardware, oldest month first.

    They are a sweep's record of what it measured: the run folders are scratch space a new checkout lacks."""
    return [
        row
        for path in sorted(Path(out_dir).glob(f"{bench}_{hardware_tag(device)}_{'[0-9]' * 6}.json"))
        for row in read_rows(path)
    ]
