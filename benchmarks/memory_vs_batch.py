"""Peak memory of one training step against batch size: E2E, checkpointed E2E, Greedy SL and InfoPro at K = 4, 16.

For each batch size (default 32 ... 1024) `locallearn profile`'s measurement (CPU: bytes held for backward plus
weights, gradients and momentum; CUDA: peak allocated) of the CIFAR-10 recipes of `--arch` (resnet32 or
resnet110): E2E, E2E with activation checkpointing per unit and per stage at K = 4 and 16 (the local methods'
splits), Greedy SL and InfoPro at K = 4 and 16. Synthetic inputs: memory does not depend on pixel values.
All rows go to one file, benchmarks/results/memory_vs_batch_<arch>_<hardware>_<yyyymm>.json (+ .csv, .md and a
plot), rewritten after each batch size so a stopped sweep keeps what it measured; `--table` redraws the table and
plot from that file without measuring.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from _run import RESULTS, recipe
from locallearn.config import build_config
from locallearn.engine.trainer import resolve_device
from locallearn.profile.compare import compare_runs
from locallearn.profile.probe import input_spec
from locallearn.profile.results import result_stem, write_results
from locallearn.profile.tables import MIB, markdown_table, method_label
from locallearn.provenance import provenance

BATCHES = (32, 64, 128, 256, 512, 1024)


def configurations(arch: str) -> list[tuple[str, list[str]]]:
    """(recipe, --set overrides) of every configuration swept."""
    e2e = recipe(f"cifar10/{arch}_e2e.yaml")
    checkpointed = [(e2e, [f"activation_checkpoint={c}"]) for c in ("per-unit", "per-stage:4", "per-stage:16")]
    local = [(recipe(f"cifar10/{arch}_{m}_k{k}.yaml"), []) for m in ("greedy", "infopro") for k in (4, 16)]
    return [(e2e, []), *checkpointed, *local]


def measure(
    arch: str, batches: Sequence[int], device: str, warmup: int, done: Callable[[list[dict[str, Any]]], None]
) -> list[dict[str, Any]]:
    """Profile every configuration at each batch size; `done(rows)` after each batch, so a stopped sweep keeps
    the batches it finished."""
    rows: list[dict[str, Any]] = []
    for batch in batches:
        runs = []
        for path, overrides in configurations(arch):
            cfg = build_config(path, {"batch_size": batch, "device": device}, overrides)
            runs.append((cfg, input_spec(cfg.dataset)))
        for (cfg, _), row in zip(runs, compare_runs(runs, warmup), strict=True):
            rows.append({**row, "config": cfg.to_dict(), **provenance(resolve_device(cfg.device))})
            print(f"batch {batch}: {method_label(row)} K={row['K']} peak {row['peak_bytes'] / MIB:.1f} MiB", flush=True)
        done(rows)
    return rows


def label(row: dict[str, Any]) -> str:
    return method_label(row) + ("" if row["K"] == 1 else f", K = {row['K']}")


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Peak MiB and its share of E2E's at the same batch: one line per configuration, one column per batch."""
    batches = sorted({r["batch_size"] for r in rows})
    lines: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault(label(r), {})[r["batch_size"]] = r
    body = [
        [name, *(f"{by[b]['peak_bytes'] / MIB:.1f} ({100 * by[b]['ratio']:.1f}%)" if b in by else "-" for b in batches)]
        for name, by in lines.items()
    ]
    first = rows[0]
    head = (
        f"{first['arch']}, peak MiB of one step ({first['convention']}) and its share of E2E's at the same batch, "
        f"device {first['device_name']}, torch {first['torch']}, git {str(first['git_sha'])[:10]}"
    )
    return head + "\n\n" + markdown_table(["configuration", *(f"batch {b}" for b in batches)], body)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    fig, (peak_ax, ratio_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault(label(r), []).append(r)
    markers = iter("os^vDPX*<>")  # distinct markers: some lines coincide (per-stage:4 and Greedy SL K = 4)
    for name, rs in lines.items():
        rs = sorted(rs, key=lambda r: r["batch_size"])
        batches = [r["batch_size"] for r in rs]
        style = dict(linestyle="--" if "checkpoint" in name else "-", marker=next(markers), fillstyle="none")
        peak_ax.plot(batches, [r["peak_bytes"] / MIB for r in rs], label=name, **style)
        ratio_ax.plot(batches, [100 * r["ratio"] for r in rs], label=name, **style)
    batches = sorted({r["batch_size"] for r in rows})
    for ax in (peak_ax, ratio_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
    peak_ax.set_yscale("log")
    peak_ax.set_ylabel("peak memory of a step (MiB)")
    ratio_ax.set_ylabel("peak / E2E peak at the same batch (%)")
    ratio_ax.legend(fontsize=7, loc="center right")
    fig.suptitle(f"{rows[0]['arch']}: memory against batch size ({rows[0]['convention']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("resnet32", "resnet110"), default="resnet32")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCHES)), help="comma list")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="redraw the table and plot from the result file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stem = result_stem(f"memory_vs_batch_{args.arch}", resolve_device(args.device))

    def write(rows: list[dict[str, Any]]) -> list[Path]:
        return [*write_results(rows, RESULTS, stem, table(rows)), plot(rows, RESULTS / f"{stem}.png")]

    if args.table:
        rows = json.loads((RESULTS / f"{stem}.json").read_text())
        paths = write(rows)
    else:
        batches = [int(b) for b in args.batch_sizes.split(",")]
        rows = measure(args.arch, batches, args.device, args.warmup_steps, write)
        paths = write(rows)
    print(table(rows))
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
