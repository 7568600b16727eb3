"""Markdown tables of sweep rows (accuracy, throughput, memory per method and K) and of overhead rows."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from locallearn.profile.tables import format_bytes, markdown_table, method_label


def _mean_std(values: Sequence[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def sweep_table(rows: Sequence[dict[str, Any]]) -> str:
    """Bench rows aggregated over seeds: test accuracy (mean ± std), training seconds per epoch, throughput
    (timed steps), peak memory and its ratio to E2E, theoretical training overhead and inference FLOPs."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((method_label(r), r["K"]), []).append(r)
    body = []
    for (label, k), rs in groups.items():
        trained = [r for r in rs if r.get("test_acc") is not None]
        body.append(
            [
                label,
                k,
                len(rs),
                _mean_std([100 * r["test_acc"] for r in trained], ".2f") if trained else "-",
                _mean_std([r["train_seconds"] / r["epochs"] for r in trained], ".0f") if trained else "-",
                _mean_std([r["images_per_s"] for r in rs], ".1f"),
                format_bytes(rs[0]["peak_bytes"]),
                f"{100 * rs[0]['ratio']:.1f}%",
                f"{100 * rs[0]['flops_overhead']:+.1f}%",
                f"{rs[0]['inference_flops'] / 1e9:.3f}",
            ]
        )
    headers = [
        "method", "K", "seeds", "test accuracy %", "s / epoch", "images/s", "peak", "peak / E2E",
        "theor. overhead", "inference GFLOPs/img",
    ]  # fmt: skip
    return markdown_table(headers, body)


def overhead_table(rows: Sequence[dict[str, Any]]) -> str:
    """Wall-time and theoretical overhead of each method over E2E (the first row)."""
    body = [
        [
            method_label(r),
            r["K"],
            f"{r['step_seconds']:.3f}",
            f"{r['images_per_s']:.1f}",
            f"{100 * r['flops_overhead']:+.1f}%",
            f"{100 * r['wall_overhead']:+.1f}%",
        ]
        for r in rows
    ]
    return markdown_table(["method", "K", "s/step (median)", "images/s", "theor. overhead", "wall overhead"], body)
