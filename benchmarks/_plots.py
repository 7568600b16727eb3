"""Benchmark plots: a value against K, one line per method (mean and std over seeds), E2E as a reference line."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from locallearn.profile.tables import method_label


def plot_vs_k(
    rows: Sequence[dict[str, Any]],
    value: Callable[[dict[str, Any]], float | None],
    ylabel: str,
    path: Path,
    reference: float | None = None,
) -> Path | None:
    """Plot `value(row)` against K per method, with E2E as a dashed horizontal line.

    The line is at `reference` when given, else at the mean over the E2E rows. Rows where `value` is None
    are left out; returns None when nothing is left to plot.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    e2e: list[float] = []
    for row in rows:
        v = value(row)
        if v is None:
            continue
        if row["method"] == "e2e" and row.get("activation_checkpoint", "none") == "none":
            e2e.append(v)
        else:
            series[method_label(row)][row["K"]].append(v)
    if reference is None and e2e:
        reference = statistics.mean(e2e)
    if not series and reference is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, by_k in series.items():
        ks = sorted(by_k)
        means = [statistics.mean(by_k[k]) for k in ks]
        stds = [statistics.stdev(by_k[k]) if len(by_k[k]) > 1 else 0.0 for k in ks]
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=label)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", label="e2e")
    ks = sorted({k for by_k in series.values() for k in by_k})
    if ks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="K (gradient-isolated stages)", ylabel=ylabel)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
