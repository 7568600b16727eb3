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
