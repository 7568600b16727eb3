"""The warning `locallearn profile` gives when an aux net costs more than the stage it trains."""

from __future__ import annotations

from typing import Any

from .tables import format_bytes


def aux_warning(stages: list[dict[str, Any]]) -> str | None:
    """One line naming every stage whose aux nets (with the mechanisms' extra nets) hold more bytes for backward
    than its backbone units, or cost more training FLOPs per image; None when no stage does.

    `stages`: the `StageProfile` dicts of one profiled run. The last stage's classifier is a backbone unit, so
    only stages with an aux net are compared.
    """
    found = []
    for s in stages:
        backbone_flops = s["train_flops"] - s["aux_train_flops"]
        costs = []
        if s["aux_bytes"] > s["activation_bytes"]:
            costs.append(
                f"memory held for backward {format_bytes(s['aux_bytes'])} vs {format_bytes(s['activation_bytes'])}"
            )
        if s["aux_train_flops"] > backbone_flops:
            costs.append(f"FLOPs {s['aux_train_flops'] / 1e9:.3f} vs {backbone_flops / 1e9:.3f} GFLOPs/img")
        if costs:
            found.append(f"stage {s['stage']} ({', '.join(costs)})")
    if not found:
        return None
    return (
        f"warning: aux nets cost more than the stage they train: {'; '.join(found)}; "
        "consider a lighter method_options.aux_net (e.g. 0c1f) or decoder, or fewer, larger stages"
    )
