"""Markdown tables of profile rows: a summary line per run, a per-stage breakdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GIB = 1024**3
MIB = 1024**2


def format_bytes(n: int | float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def method_label(row: dict[str, Any]) -> str:
    """The method, with its split when it is not the paper table (e.g. `infopro (balanced-memory)`) and its
    activation checkpointing if any (e.g. `e2e (checkpoint per-stage:4)`)."""
    split, recompute = row.get("split"), row.get("activation_checkpoint", "none")
    notes = [str(split)] if split and split != "table" else []
    notes += [f"checkpoint {recompute}"] if recompute != "none" else []
    return f"{row['method']} ({', '.join(notes)})" if notes else row["method"]


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per profiled run. The peak is broken down at the stage where it occurs: its backbone
    activations, its aux nets, the batch / carry / earlier graphs alive beside them, and the static memory."""
    headers = [
        "method", "K", "activations", "aux nets", "batch+carry", "weights+grads+opt", "peak", "E2E peak",
        "ratio", "GFLOPs/img", "theor. overhead", "inference GFLOPs/img",
    ]  # fmt: skip
    body = []
    for r in rows:
        s = r["stages"][r["peak_stage"]]
        body.append(
            [
                method_label(r),
                r["K"],
                format_bytes(s["activation_bytes"]),
                format_bytes(s["aux_bytes"]),
                format_bytes(s["live_bytes"] - s["held_bytes"]),
                format_bytes(r["static_bytes"]),
                format_bytes(r["peak_bytes"]),
                format_bytes(r["e2e_peak_bytes"]),
                f"{100 * r['ratio']:.1f}%",
                f"{r['train_flops'] / 1e9:.3f}",
                f"{100 * r['flops_overhead']:+.1f}%",
                f"{r['inference_flops'] / 1e9:.3f}",
            ]
        )
    return markdown_table(headers, body)


def stage_table(row: dict[str, Any]) -> str:
    """Per-stage breakdown of one profiled run."""
    headers = ["stage", "units", "params", "activations", "aux nets", "held", "live", "peak", "GFLOPs/img"]
    body = [
        [
            s["stage"],
            s["units"],
            f"{s['params']:,}",
            format_bytes(s["activation_bytes"]),
            format_bytes(s["aux_bytes"]),
            format_bytes(s["held_bytes"]),
            format_bytes(s["live_bytes"]),
            format_bytes(s["peak_bytes"]),
            f"{s['train_flops'] / 1e9:.3f}",
        ]
        for s in row["stages"]
    ]
    return markdown_table(headers, body)


def rss_table(rows: Sequence[dict[str, Any]]) -> str:
    """The profile's step memory beside the resident memory a fresh process grew by over the same steps."""
    headers = ["method", "K", "profile: step growth", "RSS growth", "profile / RSS", "peak RSS", "E2E peak RSS"]
    body = [
        [
            method_label(r),
            r["K"],
            format_bytes(r["growth_bytes"]),
            format_bytes(r["rss_growth_bytes"]),
            f"{100 * r['rss_agreement']:.1f}%",
            format_bytes(r["rss_peak_bytes"]),
            format_bytes(r["e2e_rss_peak_bytes"]),
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def profile_report(rows: Sequence[dict[str, Any]]) -> str:
    """Per backbone/input/batch/device: a header line, the summary (and, with RSS measured, profile vs RSS),
    then each run's stages."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["arch"], r["dataset"], tuple(r["image_shape"]), r["batch_size"], r["device"], r["convention"])
        groups.setdefault(key, []).append(r)
    parts: list[str] = []
    for (arch, dataset, shape, batch, device, convention), group in groups.items():
        size = "x".join(str(d) for d in shape)
        parts += [
            f"{arch}, synthetic {dataset}-shaped input {size}, batch {batch}, device {device}, "
            f"memory convention {convention}",
            "",
            summary_table(group),
        ]
        warnings = [f"{method_label(r)}, K={r['K']}: {r['aux_warning']}" for r in group if r.get("aux_warning")]
        parts += ["", *warnings] if warnings else []
        if "rss_growth_bytes" in group[0]:
            parts += ["", rss_table(group)]
        for r in group:
            parts += ["", f"{method_label(r)}, K={r['K']}, cuts {r['cuts']}:", "", stage_table(r)]
        parts.append("")
    return "\n".join(parts).rstrip()
