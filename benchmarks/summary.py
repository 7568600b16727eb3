"""The one-screen summary that opens docs/results.md, computed from the result files in benchmarks/results/.

Every number is read from a committed result file (named in the table), so the summary changes only when a
benchmark is run again. Prints the Markdown and writes benchmarks/results/summary.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _run import RESULTS
from locallearn.engine.checkpoint import write_text
from locallearn.profile.tables import markdown_table

FILES = {
    "table": "profile_resnet110_table_cpu1_202611.json",
    "star": "profile_resnet110_star_cpu1_202611.json",
    "overhead": "overhead_resnet110_star_cpu1_202611.json",
    "accuracy": "one_epoch_resnet32_n50000_cpu1_202611.json",
    "pipeline": "pipeline_throughput_resnet32_k2_cpu1_202611.json",
    "checkpointing": "checkpointing_resnet32_b128_cpu1_202611.json",
    "batch": "memory_vs_batch_resnet32_cpu2_202611.json",
    "batch110": "memory_vs_batch_resnet110_cpu2_202611.json",
    "step_cost": "step_cost_resnet32_k16_defaults_cpu2_202611.json",
}


def rows(name: str) -> list[dict[str, Any]]:
    return json.loads((RESULTS / FILES[name]).read_text())


def pick(rs: list[dict[str, Any]], method: str, k: int, checkpoint: str = "none", **more: Any) -> dict[str, Any]:
    """The row of `method` at `k` (and `more` fields); `method` may be a prefix (infopro -> infopro:contrast)."""
    found = [
        r
        for r in rs
        if r["method"].split(":")[0] == method
        and r["K"] == k
        and r.get("activation_checkpoint", "none") == checkpoint
        and all(r.get(f) == v for f, v in more.items())
    ]
    if not found:
        raise SystemExit(f"no {method} K={k} {checkpoint} {more} row in the result files")
    return found[0]


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def join(items: list[str], sep: str = " / ") -> str:
    return sep.join(items)


def memory_lines() -> list[list[str]]:
    table, star = rows("table"), rows("star")
    ratio: Callable[[str, int], str] = lambda m, k: pct(pick(table, m, k)["ratio"])  # noqa: E731
    return [
        [
            "Peak memory vs E2E, ResNet-110, batch 1024, papers' splits, K = 4 / 16",
            f"Greedy SL {ratio('greedy', 4)} / {ratio('greedy', 16)}; DGL {ratio('dgl', 4)} / {ratio('dgl', 16)}; "
            f"InfoPro {ratio('infopro', 4)} / {ratio('infopro', 16)}",
            FILES["table"],
        ],
        [
            "InfoPro\\* (memory-balanced splits), ResNet-110, batch 1024, K = 2 / 3 / 4",
            join([pct(pick(star, "infopro", k)["ratio"]) for k in (2, 3, 4)]) + " of E2E (papers: 57.2 / 44.9 / 37.4%)",
            FILES["star"],
        ],
    ]


def batch_lines() -> list[list[str]]:
    rs = rows("batch")
    small, large = min(r["batch_size"] for r in rs), max(r["batch_size"] for r in rs)

    def span(method: str, k: int, checkpoint: str = "none") -> str:
        return f"{pct(pick(rs, method, k, checkpoint, batch_size=small)['ratio'])} → " + pct(
            pick(rs, method, k, checkpoint, batch_size=large)["ratio"]
        )

    return [
        [
            f"Ratio to E2E against batch, ResNet-32, batch {small} → {large}",
            f"Greedy SL K = 16 {span('greedy', 16)}; InfoPro K = 16 {span('infopro', 16)}; "
            f"checkpointed E2E per unit {span('e2e', 1, 'per-unit')}",
            FILES["batch"],
        ]
    ]


def speed_lines() -> list[list[str]]:
    over, pipe, ck = rows("overhead"), rows("pipeline"), rows("checkpointing")
    local = next(r for r in pipe if r["engine"] == "local")
    piped = next(r for r in pipe if r["engine"] == "pipeline")
    ideal = next(r for r in pipe if r["engine"].startswith("pipeline ideal"))
    e2e = pick(ck, "e2e", 1)["step_seconds"]

    def times(method: str) -> str:
        return f"{pick(ck, method, 16)['step_seconds'] / e2e:.2f}x"

    return [
        [
            "Wall-time overhead over E2E, InfoPro\\*, ResNet-110, batch 128, K = 2 / 3 / 4",
            join([f"{100 * pick(over, 'infopro', k)['wall_overhead']:+.1f}%" for k in (2, 3, 4)])
            + " (theoretical "
            + join([f"{100 * pick(over, 'infopro', k)['flops_overhead']:+.1f}%" for k in (2, 3, 4)])
            + ")",
            FILES["overhead"],
        ],
        [
            "Step time / E2E's, ResNet-32, batch 128, K = 16",
            f"Greedy SL {times('greedy')}, DGL {times('dgl')}, InfoPro {times('infopro')}",
            FILES["checkpointing"],
        ],
        [
            f"Pipeline speed-up, {piped['processes']} ranks, ResNet-32 K = {piped['K']}, batch {piped['batch_size']}",
            f"{piped['images_per_s'] / local['images_per_s']:.2f}x the local engine "
            f"(ideal {ideal['images_per_s'] / local['images_per_s']:.2f}x)",
            FILES["pipeline"],
        ],
    ]


def step_cost_lines() -> list[list[str]]:
    """InfoPro K = 16's peak RSS and step time over E2E's, each ratio within one round of fresh processes."""
    rss = [r for r in rows("step_cost") if r["kind"] == "rss"]
    rounds = sorted({r["round"] for r in rss})

    def ratios(field: str) -> list[float]:
        run = {(r["round"], r["run"]): r[field] for r in rss}
        return [run[n, "infopro K=16"] / run[n, "e2e"] for n in rounds]

    return [
        [
            "InfoPro K = 16 vs E2E, ResNet-32, batch 1024, 2 threads, defaults, per round (peak RSS; step time)",
            join([pct(x) for x in ratios("peak_bytes")])
            + " of E2E's peak RSS; "
            + join([f"{x:.2f}x" for x in ratios("step_seconds")])
            + " E2E's step time",
            FILES["step_cost"],
        ]
    ]


def accuracy_lines() -> list[list[str]]:
    rs = rows("accuracy")

    def order(k: int) -> str:
        ranked = sorted([r for r in rs if r["K"] in (1, k)], key=lambda r: -r["test_acc"])
        return " > ".join(f"{r['method'].split(':')[0]} {100 * r['test_acc']:.1f}" for r in ranked)

    return [
        [
            "Test accuracy % after one epoch, ResNet-32, CIFAR-10, batch 128, K = 4",
            order(4),
            FILES["accuracy"],
        ],
        ["The same at K = 16", order(16), FILES["accuracy"]],
    ]


def checkpointing_lines() -> list[list[str]]:
    ck = rows("checkpointing")

    def cell(method: str, k: int, checkpoint: str = "none") -> str:
        r = pick(ck, method, k, checkpoint)
        e2e = pick(ck, "e2e", 1)
        return (
            f"{pct(r['ratio'])} memory, {r['step_seconds'] / e2e['step_seconds']:.2f}x time, "
            f"{100 * r['test_acc']:.1f}% acc."
        )

    return [
        [
            "vs activation checkpointing, ResNet-32, batch 128, K = 4 (peak / E2E, step time / E2E, accuracy)",
            f"checkpointed E2E {cell('e2e', 1, 'per-stage:4')}; Greedy SL {cell('greedy', 4)}; "
            f"InfoPro {cell('infopro', 4)}",
            FILES["checkpointing"],
        ],
        [
            "The same at K = 16",
            f"checkpointed E2E {cell('e2e', 1, 'per-stage:16')}; Greedy SL {cell('greedy', 16)}; "
            f"InfoPro {cell('infopro', 16)}",
            FILES["checkpointing"],
        ],
    ]


def deep_lines() -> list[list[str]]:
    rs = [r for r in rows("batch110") if r["batch_size"] == 1024]

    def ratio(method: str, k: int, checkpoint: str = "none") -> str:
        return pct(pick(rs, method, k, checkpoint)["ratio"])

    return [
        [
            "vs activation checkpointing, ResNet-110, batch 1024, K = 16 (peak / E2E)",
            f"checkpointed E2E {ratio('e2e', 1, 'per-stage:16')} (per unit: {ratio('e2e', 1, 'per-unit')}); "
            f"Greedy SL {ratio('greedy', 16)}; InfoPro {ratio('infopro', 16)}",
            FILES["batch110"],
        ]
    ]


def summary() -> str:
    body = [
        *memory_lines(),
        *batch_lines(),
        *speed_lines(),
        *step_cost_lines(),
        *accuracy_lines(),
        *checkpointing_lines(),
        *deep_lines(),
    ]
    return markdown_table(["headline", "measured", "result file"], [[a, b, f"`{c}`"] for a, b, c in body])


if __name__ == "__main__":
    text = summary()
    write_text(Path(RESULTS / "summary.md"), text + "\n")
    print(text)
    sys.exit(0)
