"""What `locallearn plan` prints: the plan (or why nothing fits), per-stage predicted peaks and how to apply it."""

from __future__ import annotations

from ..profile.tables import format_bytes, markdown_table
from .predict import StepPrediction
from .search import Choice, Plan


def stage_table(prediction: StepPrediction) -> str:
    headers = ["stage", "units", "activations", "aux nets", "batch+carry", "grads so far", "transients"]
    headers += ["predicted peak", "GFLOPs/img"]
    body = [
        [
            s.stage,
            s.units,
            format_bytes(s.activation_bytes),
            format_bytes(s.aux_bytes),
            format_bytes(s.beside_bytes),
            format_bytes(s.grads_bytes),
            format_bytes(s.transient_bytes),
            format_bytes(s.peak_bytes),
            f"{s.train_flops / 1e9:.3f}",
        ]
        for s in prediction.stages
    ]
    return markdown_table(headers, body)


def _costs(prediction: StepPrediction) -> str:
    return (
        f"weights + optimizer state {format_bytes(prediction.weights_bytes + prediction.optimizer_bytes)}, all grads "
        f"{format_bytes(prediction.grads_bytes)}; training "
        f"{prediction.train_flops / 1e9:.3f} GFLOPs/img, {100 * prediction.flops_overhead:+.1f}% over E2E"
    )


def _mib(n: int) -> str:
    """Exact enough to tell neighbouring batch sizes apart."""
    return f"{n / 2**20:,.1f} MiB"


def _modules(choice: Choice) -> str:
    k = choice.prediction.K
    return "" if k == choice.K else f" ({k} modules: the stem trains as one of its own)"


def _lighter(plan: Plan) -> list[str]:
    if plan.lighter is None:
        return []
    sets = " ".join(f"--set method_options.{key}={value}" for key, value in plan.lighter["options"].items())
    return [
        f"the aux nets are in the way: with {sets} K = {plan.lighter['K']} fits "
        f"(split {plan.lighter['split']}, predicted peak {format_bytes(plan.lighter['peak_bytes'])})"
    ]


def k_report(plan: Plan, command: str) -> str:
    """The answer to a budget query (smallest K)."""
    budget = format_bytes(plan.budget_bytes)
    choice = plan.choice
    if choice is None:
        return f"no K up to {plan.max_k} can be built for this method"
    p = choice.prediction
    if plan.fits:
        lines = [
            f"K = {choice.K}{_modules(choice)}, split {choice.split} (memory-balanced): predicted peak "
            f"{format_bytes(p.peak_bytes)} of the {budget} budget, at stage {p.peak_stage}"
        ]
        if plan.previous is not None:
            lines.append(f"K = {plan.previous.K} does not fit: {_mib(plan.previous.prediction.peak_bytes)}")
    else:
        lines = [
            f"nothing fits in {budget} up to K = {plan.max_k} at batch {plan.batch_size}: the smallest predicted "
            f"peak is {format_bytes(p.peak_bytes)} (K = {choice.K}, split {choice.split}), dominated by {p.dominant()}"
        ]
    lines += ["", stage_table(p), "", _costs(p), *_lighter(plan)]
    if plan.fits:
        lines.append(f"train it: {command} --K {choice.K} --split {choice.split}")
    return "\n".join(lines)


def batch_report(plan: Plan) -> str:
    """The answer to a batch query (largest batch at a given K)."""
    choice, budget = plan.choice, format_bytes(plan.budget_bytes)
    p = choice.prediction
    if not plan.fits:
        head = (
            f"K = {choice.K}, split {choice.split}: not even batch 1 fits in {budget} (predicted peak "
            f"{format_bytes(p.peak_bytes)}, dominated by {p.dominant()})"
        )
    else:
        over = plan.previous.prediction
        head = (
            f"K = {choice.K}{_modules(choice)}, split {choice.split}: the largest batch that fits {budget} is "
            f"{plan.batch_size} (predicted peak {_mib(p.peak_bytes)}; batch {over.batch_size}: {_mib(over.peak_bytes)})"
        )
    return "\n".join([head, "", stage_table(p), "", _costs(p)])
