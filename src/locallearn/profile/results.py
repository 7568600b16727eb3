"""Writing result rows: JSON (everything), CSV (one line per row, nested values as JSON) and Markdown."""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..engine.checkpoint import write_text
from ..errors import ConfigError
from ..provenance import hardware_tag


def result_stem(bench: str, device: torch.device) -> str:
    """`<bench>_<hardware>_<yyyymm>`, the benchmark file naming of docs/design.md."""
    return f"{bench}_{hardware_tag(device)}_{datetime.date.today():%Y%m}"


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict | list | tuple) else v for k, v in row.items()})
    return buf.getvalue()


def write_results(rows: Sequence[dict[str, Any]], out_dir: str | Path, stem: str, markdown: str) -> list[Path]:
    """Write `<stem>.json`, `<stem>.csv` and `<stem>.md` under `out_dir`, each atomically; returns their paths."""
    out = Path(out_dir)
    paths = [out / f"{stem}.{ext}" for ext in ("json", "csv", "md")]
    write_text(paths[0], json.dumps(list(rows), indent=2) + "\n")
    write_text(paths[1], _csv_text(rows))
    write_text(paths[2], markdown + "\n")
    return paths


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
