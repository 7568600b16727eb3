"""Result tables and plots shared by the demo and the benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..methods import parse_method


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f}"


def summary_table(summaries: list[dict[str, Any]]) -> str:
    """Markdown table of run summaries; memory is relative to the E2E run when there is one."""
    e2e = next((s for s in summaries if parse_method(s["method"]).is_e2e), None)
    rows = [
        "| method | K | test acc | stage acc (aux heads) | s/epoch | held for backward (MB) | vs E2E |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        stages = " ".join("-" if a is None else f"{a:.3f}" for a in s["stage_acc"][:-1]) or "-"
        rel = f"{s['held_bytes'] / e2e['held_bytes']:.1%}" if e2e else "-"
        rows.append(
            f"| {s['method']} | {s['K']} | {s['test_acc']:.4f} | {stages} | {s['seconds_per_epoch']:.1f} | "
            f"{_mb(s['held_bytes'])} | {rel} |"
        )
    return "\n".join(rows)


def plot_histories(histories: dict[str, list[dict[str, Any]]], summaries: list[dict[str, Any]], path: Path) -> Path:
    """Test accuracy per epoch (left) and memory held for backward (right), one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, mem_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for method, history in histories.items():
        acc_ax.plot([h["epoch"] for h in history], [h["test_acc"] for h in history], marker="o", label=method)
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="final-head accuracy")
    acc_ax.legend()
    names = [s["method"] for s in summaries]
    mem_ax.bar(names, [s["held_bytes"] / 2**20 for s in summaries], color=[f"C{i}" for i in range(len(names))])
    mem_ax.set(ylabel="MB held for backward (one step)", title="activation memory")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
