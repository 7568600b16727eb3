"""Fit a run to a memory budget: the smallest K (memory-balanced split) whose predicted peak fits, or for a given
K the largest batch that fits; when nothing does, the smallest peak reachable and what dominates it.

K is searched upwards. A K whose backbone alone (weights, the largest stage's activations, the batch) is already
over the budget is ruled out without building it; the others are priced by `MemoryPredictor.model`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..methods import MECHANISMS, OBJECTIVES, MethodSpec
from .predict import MemoryPredictor, StepModel, StepPrediction, split_text

BALANCED = "even-memory"  # the exact dynamic program over the bytes each unit holds for backward
DEFAULT_MAX_K = 16
MAX_BATCH = 2**24
# Lighter aux choices to try when the aux nets stand between a K and the budget, lightest change first.
LIGHTER_AUX: tuple[dict[str, Any], ...] = (
    {"aux_widen": 1},
    {"aux_net": "0c1f"},
    {"decoder": "imagenet"},
    {"aux_net": "0c1f", "decoder": "imagenet"},
)


@dataclass
class Choice:
    """One priced configuration: K as the config gives it (MAN++ may add a stem module) and its prediction."""

    K: int
    split: str
    prediction: StepPrediction

    def to_dict(self) -> dict[str, Any]:
        return {"K": self.K, "split": self.split, **self.prediction.to_dict()}


@dataclass
class Plan:
    budget_bytes: int
    batch_size: int
    fits: bool
    choice: Choice | None  # the plan (fits) or the smallest peak reachable (does not)
    previous: Choice | None = None  # K - 1 (or batch + 1), which does not fit
    lighter: dict[str, Any] | None = None  # {"options": {...}, "K": .., "peak_bytes": ..}: a lighter aux net fits
    max_k: int = DEFAULT_MAX_K  # the largest K a budget query considered

    def to_dict(self) -> dict[str, Any]:
        return {
            "fits": self.fits,
            "budget_bytes": self.budget_bytes,
            "batch_size": self.batch_size,
            "max_K": self.max_k,
            "plan" if self.fits else "smallest": self.choice.to_dict() if self.choice else None,
            "previous": self.previous.to_dict() if self.previous else None,
            "lighter_aux": self.lighter,
        }


def _candidate_ks(predictor: MemoryPredictor, max_k: int) -> list[int]:
    if predictor.cfg.spec.is_e2e:  # one module by definition
        return [1]
    return list(range(1, min(max_k, predictor.num_units - 1) + 1))


def _cuts(predictor: MemoryPredictor, k: int) -> list[int] | None:
    try:
        return predictor.cuts(k, BALANCED)
    except ConfigError:
        return None


def _price(
    predictor: MemoryPredictor, k: int, cuts: list[int], batch: int, budget: float | None = None
) -> Choice | None:
    """The prediction for K = k, or None when the method cannot be built at this K (e.g. MLAAN below its window).
    With `budget`, the transients (a small real step) are measured only where the bytes held fit it: otherwise
    the held bytes, a lower bound of the peak (`prediction.bound`), already rule K out."""
    try:
        model = predictor.model(cuts, transients=False)
    except ConfigError:
        return None
    if budget is None or model.at(batch).peak_bytes <= budget:
        model = predictor.with_transients(model)
    return Choice(k, split_text(cuts), model.at(batch))


def _lower_bound(predictor: MemoryPredictor, cuts: list[int], batch: int) -> float:
    return predictor.static_bound + predictor.activation_bound(cuts, batch)


def smallest_k(
    predictor: MemoryPredictor,
    budget: int,
    batch: int,
    max_k: int = DEFAULT_MAX_K,
    *,
    suggest: bool = True,
    explain: bool = True,
) -> Plan:
    """The smallest K up to `max_k` whose predicted peak at `batch` fits `budget`, with K - 1's prediction.
    `suggest`: also look for a lighter aux choice where the aux nets are what does not fit; `explain`: when
    nothing fits, find the smallest peak reachable."""
    priced: dict[int, Choice] = {}
    bounds: dict[int, float] = {}
    for k in _candidate_ks(predictor, max_k):
        cuts = _cuts(predictor, k)
        if cuts is None:
            continue
        bounds[k] = _lower_bound(predictor, cuts, batch)
        if bounds[k] > budget:
            continue
        choice = _price(predictor, k, cuts, batch, budget)
        if choice is None:
            continue
        priced[k] = choice
        if choice.prediction.peak_bytes <= budget:
            previous = priced.get(k - 1)
            # Ruled out by a bound (the backbone's, or the held bytes'): price it in full for the report.
            if (previous is None and k - 1 in bounds) or (previous is not None and previous.prediction.bound):
                previous = _price(predictor, k - 1, predictor.cuts(k - 1, BALANCED), batch)
            plan = Plan(budget, batch, True, choice, previous, max_k=max_k)
            if suggest and previous is not None and _aux_in_the_way(previous.prediction, budget):
                plan.lighter = _lighter(predictor, budget, batch, k - 1)
            return plan
    if not explain:
        return Plan(budget, batch, False, None, max_k=max_k)
    best = _smallest_peak(predictor, batch, bounds, priced)
    plan = Plan(budget, batch, False, best, max_k=max_k)
    if suggest and any(_aux_in_the_way(c.prediction, budget) for c in priced.values()):
        plan.lighter = _lighter(predictor, budget, batch, max_k)
    return plan


def _smallest_peak(
    predictor: MemoryPredictor, batch: int, bounds: dict[int, float], priced: dict[int, Choice]
) -> Choice | None:
    """Branch and bound over K: price in order of the lower bound, stop once no bound can beat the best.
    What it prices joins `priced`; a choice priced without its transients is one more bound."""
    lower = dict(bounds)
    for k, c in priced.items():
        if c.prediction.bound:
            lower[k] = max(lower.get(k, 0.0), c.prediction.peak_bytes)
    exact = [c for c in priced.values() if not c.prediction.bound]
    best: Choice | None = min(exact, key=lambda c: c.prediction.peak_bytes, default=None)
    for k in sorted(lower, key=lower.__getitem__):
        if best is not None and lower[k] >= best.prediction.peak_bytes:
            break
        if k in priced and not priced[k].prediction.bound:
            continue
        choice = _price(predictor, k, predictor.cuts(k, BALANCED), batch)
        if choice is not None:
            priced[k] = choice
        if choice is not None and (best is None or choice.prediction.peak_bytes < best.prediction.peak_bytes):
            best = choice
    return best


def _aux_in_the_way(prediction: StepPrediction, budget: int) -> bool:
    """Whether this configuration would fit without its aux nets' bytes: then a lighter aux net may fit it."""
    return max(s.peak_bytes - s.aux_bytes for s in prediction.stages) <= budget


def _options_read(spec: MethodSpec) -> set[str]:
    """The method_options keys the method's objective and mechanisms read (their `options_types`)."""
    parts = [] if spec.is_e2e else [OBJECTIVES.get(spec.objective)]
    parts += [MECHANISMS.get(m.name) for m in spec.mechanisms]
    return {f.name for part in parts for kind in part.options_types for f in dataclasses.fields(kind)}


def _lighter(predictor: MemoryPredictor, budget: int, batch: int, below: int) -> dict[str, Any] | None:
    """The lighter aux choice that fits at the smallest K <= `below`."""
    current, read = predictor.cfg.method_options, _options_read(predictor.cfg.spec)
    best = None
    for change in LIGHTER_AUX:
        # A change of a key the method never reads (greedy's decoder) would price the same learner again.
        if not read.issuperset(change) or all(getattr(current, key) == value for key, value in change.items()):
            continue
        options = dataclasses.replace(current, **change)
        variant = predictor.with_options(options)
        plan = smallest_k(variant, budget, batch, below, suggest=False, explain=False)
        if not plan.fits:
            continue
        if best is None or best["K"] > plan.choice.K:
            best = {
                "options": change,
                "K": plan.choice.K,
                "split": plan.choice.split,
                "peak_bytes": plan.choice.prediction.peak_bytes,
            }
    return best


def largest_batch(predictor: MemoryPredictor, k: int, split: Any, budget: int) -> Plan:
    """The largest batch whose predicted peak at K = k fits `budget` (the model is built once, then evaluated)."""
    cuts = predictor.cuts(k, split)
    model: StepModel = predictor.model(cuts)
    text = split_text(cuts) if split in (None, BALANCED) else str(split)
    if model.at(1).peak_bytes > budget:
        return Plan(budget, 1, False, Choice(k, text, model.at(1)))
    lo, hi = 1, 2
    while hi <= MAX_BATCH and model.at(hi).peak_bytes <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if model.at(mid).peak_bytes <= budget else (lo, mid)
    return Plan(budget, lo, True, Choice(k, text, model.at(lo)), Choice(k, text, model.at(hi)))
