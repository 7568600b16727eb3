"""Activation checkpointing against local learning: peak memory, step time and accuracy at the same K and batch.

ResNet-32, CIFAR-10 shapes: E2E, E2E with activation checkpointing (per unit, and per stage of the local
methods' K = 4 and K = 16 splits), Greedy SL, DGL and InfoPro at K = 4 and 16 (the papers' recipes). Step time
is timed as `python benchmarks/sweep.py --mode overhead` does: every configuration in one process on one
synthetic batch, in alternating rounds after a warm-up. The table gives the median step (the basis of images/s
and of the wall overhead) and the fastest one, the least disturbed by other jobs on a shared machine. Peak memory is
`locallearn profile`'s. Accuracy is not trained again: it is read from the one-epoch full-training-set result
file (batch 128, `benchmarks/one_epoch_cpu.py --train-limit 50000`), and checkpointed E2E has E2E's by
construction: its training is bit-identical (tests/test_recompute.py). Writes
benchmarks/results/checkpointing_resnet32_b<batch>_<hardware>_<yyyymm>.*; `--table` redraws the table from that
file without measuring.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from _results import read_rows
from _run import RESULTS, publish, recipe
from _sweep import overhead
from locallearn.config import RunConfig, build_config
from locallearn.engine.trainer import resolve_device
from locallearn.profile.compare import compare_runs
from locallearn.profile.probe import input_spec
from locallearn.profile.results import result_stem
from locallearn.profile.tables import format_bytes, markdown_table, method_label

ACCURACY = RESULTS / "one_epoch_resnet32_n50000_cpu1_202611.json"
CHECKPOINTS = ("per-unit", "per-stage:4", "per-stage:16")


def configurations(batch: int, device: str) -> list[RunConfig]:
    flags = {"batch_size": batch, "device": device}
    e2e = recipe("cifar10/resnet32_e2e.yaml")
    cfgs = [build_config(e2e, flags)]
    cfgs += [build_config(e2e, {**flags, "activation_checkpoint": c}) for c in CHECKPOINTS]
    for k in (4, 16):
        cfgs += [build_config(recipe(f"cifar10/resnet32_{m}_k{k}.yaml"), flags) for m in ("greedy", "dgl", "infopro")]
    return cfgs


def accuracies(path: Path) -> dict[tuple[str, int], float]:
    """(method, K) -> test accuracy of the one-epoch runs."""
    return {(r["method"], r["K"]): r["test_acc"] for r in read_rows(path) if "test_acc" in r}


def measure(cfgs: Sequence[RunConfig], steps: int, rounds: int, warmup: int) -> list[dict[str, Any]]:
    timed = overhead(cfgs, steps=steps, rounds=rounds, warmup=warmup)
    memory = compare_runs([(cfg, input_spec(cfg.dataset)) for cfg in cfgs])
    known = accuracies(ACCURACY)
    rows = []
    for row, mem in zip(timed, memory, strict=True):
        same = row["method"] == "e2e" and row["activation_checkpoint"] != "none"
        acc = known.get(("e2e", 1) if same else (row["method"], row["K"]))
        rows.append(
            {
                **row,
                **{k: mem[k] for k in ("peak_bytes", "e2e_peak_bytes", "ratio", "held_bytes", "convention")},
                "test_acc": acc,
                "accuracy_source": ("E2E's (identical training) from " if same else "") + ACCURACY.name,
            }
        )
    return rows


def accuracy(row: dict[str, Any]) -> str:
    if row["test_acc"] is None:
        return "-"
    return f"{100 * row['test_acc']:.2f}" + (" (= E2E)" if row["accuracy_source"].startswith("E2E's") else "")


def table(rows: Sequence[dict[str, Any]]) -> str:
    body = [
        [
            method_label(r),
            r["K"],
            format_bytes(r["peak_bytes"]),
            f"{100 * r['ratio']:.1f}%",
            f"{r['step_seconds']:.3f}",
            f"{min(r['all_step_seconds']):.3f}",
            f"{r['images_per_s']:.1f}",
            f"{100 * r['wall_overhead']:+.1f}%",
            f"{100 * r['flops_overhead']:+.1f}%",
            accuracy(r),
        ]
        for r in rows
    ]
    first = rows[0]
    head = (
        f"{first['arch']}, batch {first['batch_size']}, {first['device_name']}, torch {first['torch']}, "
        f"git {str(first['git_sha'])[:10]}; accuracy: one epoch on 50,000 images at batch 128 ({ACCURACY.name})"
    )
    headers = [
        "configuration", "K", "peak", "peak / E2E", "s/step (median)", "s/step (fastest)", "images/s", "wall overhead",
        "theor. overhead", "test accuracy %",
    ]  # fmt: skip
    return head + "\n\n" + markdown_table(headers, body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="redraw the table from the result file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stem = result_stem(f"checkpointing_resnet32_b{args.batch_size}", resolve_device(args.device))
    if args.table:
        rows = read_rows(RESULTS / f"{stem}.json")
    else:
        rows = measure(configurations(args.batch_size, args.device), args.steps, args.rounds, args.warmup_steps)
    publish(rows, stem, table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
