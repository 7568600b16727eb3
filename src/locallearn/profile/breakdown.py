"""Where a training step's time goes: backbone forward / backward, aux heads, decoders, losses, optimizer and
the Python (and framework) time between operators, from one step under `torch.profiler`.

Forward operators are attributed by the module they run in (the stages' backbone units, aux `head` and
`decoder` modules), each marked by a profiler range opened and closed by forward hooks. A backward operator
belongs where the forward operator that created its autograd node ran (matched by sequence number). What
runs outside every module (the loss formulas, the batch's [0, 1] image, accuracy counting) is `losses`;
`python overhead` is the step's wall time minus every operator's: interpreter, hooks, autograd bookkeeping. The
profiler adds a little to each operator, so the parts are for comparing, the unprofiled step time is the
total to quote.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn

from ..engine.local import LocalEngine
from ..measure.allocations import cpu_profiler

PARTS = ("backbone forward", "backbone backward", "aux heads", "decoders", "losses", "optimizer", "python overhead")
_PREFIX = "locallearn:"
_EVALUATE = "autograd::engine::evaluate_function"


def _regions(engine: LocalEngine) -> Iterator[tuple[str, nn.Module]]:
    learner = engine.learner
    for stage in learner.net.stages:
        yield "backbone", stage
    for owned in learner.owned:
        for name, module in owned.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("head", "decoder"):
                yield "aux heads" if leaf == "head" else "decoders", module


def _mark(engine: LocalEngine) -> list[torch.utils.hooks.RemovableHandle]:
    """Forward hooks opening a profiler range named after each region as its module starts, closing it after."""
    handles = []
    for label, module in _regions(engine):
        ranges: list[torch.autograd.profiler.record_function] = []

        def enter(_module, _inputs, ranges=ranges, label=label) -> None:
            ranges.append(torch.autograd.profiler.record_function(_PREFIX + label))
            ranges[-1].__enter__()

        def leave(_module, _inputs, _output, ranges=ranges) -> None:
            ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _region_of(event) -> str | None:
    while event is not None:
        if event.name.startswith(_PREFIX):
            return event.name[len(_PREFIX) :]
        event = event.cpu_parent
    return None


def _forward_part(region: str | None) -> str:
    if region == "backbone":
        return "backbone forward"
    return region or "losses"


def _backward_part(region: str | None) -> str:
    return "backbone backward" if region == "backbone" else _forward_part(region)


def step_breakdown(engine: LocalEngine, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Seconds of each part of `PARTS` in one profiled training step on (x, y) (warm the engine up first);
    `"profiled step"` is that step's wall time, the parts' sum."""
    handles = _mark(engine)
    try:
        with cpu_profiler() as prof:
            start = time.perf_counter()
            engine.train_step(x, y)
            wall = time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    events = prof.events()
    forward_region = {}  # sequence number of a forward operator run in a region -> the region
    for event in events:
        region = _region_of(event)
        if event.sequence_nr >= 0 and region is not None:
            forward_region[event.sequence_nr] = region
    seconds: dict[str, float] = defaultdict(float)
    for event in events:
        parent = event.cpu_parent
        if event.name.startswith(_PREFIX) or (parent is not None and not parent.name.startswith(_PREFIX)):
            continue  # only operators not nested in another operator: each microsecond counts once
        if event.name.startswith(_EVALUATE):
            part = _backward_part(forward_region.get(event.sequence_nr))
        elif event.name.startswith("Optimizer."):
            part = "optimizer"
        else:
            part = _forward_part(_region_of(event))
        seconds[part] += event.cpu_time_total / 1e6
    seconds["python overhead"] = max(wall - sum(seconds.values()), 0.0)
    return {"profiled step": wall, **{part: seconds.get(part, 0.0) for part in PARTS}}
