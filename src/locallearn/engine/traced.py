"""A local engine that traces its steps stage by stage through its `stage_scope` seam, with the meters of
`measure`: what each stage holds for backward, and what is alive beside it.

The CPU memory convention: a stage holds the distinct storages autograd saves while its local loss is built
(parameters and buffers excluded: they are weights). The local engine frees them at the stage's backward,
so while stage k runs the memory in use is its own saved storages, plus whatever earlier stages' graphs
still hold (a cascade that keeps a graph across a boundary), plus the batch and the carry entering it.
A stage with activation checkpointing holds its segments' inputs through the forward and, in backward, one
segment's recomputed activations at a time: its figure is the largest set held at once, followed as graph
nodes are freed.
Liveness is observed, not assumed from the method's `window`: a storage counts as alive at stage k when a
graph node still holds it as stage k starts.

What is saved is not all a stage needs: on CPU the step also runs under an `AllocationMeter`, which records
the peak of every tensor byte it allocates while each stage runs (gradients, transients, saved storages).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..measure.allocations import AllocationMeter
from ..measure.flops import FlopCounter
from ..measure.saved import SavedTensorMeter, storage_sizes
from ..methods import Batch, Carry, LocalLearner
from .local import LocalEngine


@dataclass
class StageTrace:
    """One stage of one traced step. Bytes and FLOPs are for the whole batch."""

    saved: dict[int, int]  # storage address -> bytes, the largest set held for backward at once during the stage
    backbone_bytes: int  # the part of `saved` that the stage's backbone forward (or its recomputation) saved
    alive_in: dict[int, int]  # earlier graphs' saved storages, the batch and the carry, alive as the stage starts
    flops: int  # forward FLOPs: the stage's backbone, aux nets and mechanisms
    backbone_flops: int  # forward FLOPs of the stage's backbone units alone
    recompute_flops: int  # forward FLOPs rerun in backward by checkpointed segments
    cuda_peak_bytes: int | None  # max_memory_allocated over the stage (CUDA only, reset as it starts)
    allocated_bytes: int | None = None  # CPU: peak tensor bytes the step had allocated while the stage ran

    @property
    def held_bytes(self) -> int:
        return sum(self.saved.values())

    @property
    def aux_bytes(self) -> int:
        """Held by what runs after the backbone forward: aux nets, mechanisms' extra terms, the loss."""
        return self.held_bytes - self.backbone_bytes

    @property
    def live_bytes(self) -> int:
        """Activation memory in use at the stage's backward: its own saved storages and everything alive beside."""
        return sum({**self.alive_in, **self.saved}.values())


class TracingEngine(LocalEngine):
    """A LocalEngine that records a StageTrace for every stage of each step; `traces` holds the last step's.

    `allocations=False` leaves the CPU allocation meter out (`allocated_bytes` stays None): it runs the
    process-wide profiler, which one thread at a time may hold, and bytes saved for backward do not need it.
    """

    traces: list[StageTrace]

    def __init__(self, *args: Any, allocations: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allocations = allocations

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.traces, self._meters = [], []
        if self.device.type == "cuda" or not self.allocations:
            super().train_step(x, y)
            return
        # Gradients of the last step are freed first, outside the allocation meter: it cannot see a free of
        # memory allocated before it started, and the step allocates them again.
        self.zero_grad()
        with AllocationMeter() as self._allocations:
            super().train_step(x, y)
        for k, trace in enumerate(self.traces):
            trace.allocated_bytes = self._allocations.peaks[f"stage {k}"]

    @contextlib.contextmanager
    def stage_scope(self, k: int, carry: Carry, batch: Batch) -> Iterator[None]:
        learner, cuda = self.learner, self.device.type == "cuda"
        alive = storage_sizes([batch.x, batch.y, batch.x01, *carry.values()])
        for meter in self._meters:
            alive.update(meter.alive())
        meter = SavedTensorMeter(exclude=[*learner.parameters(), *learner.buffers()])
        stage = learner.net.stages[k]
        counter = FlopCounter()
        # As each call of the stage's backbone forward starts: FLOPs so far; as it ends: storages and FLOPs so far.
        starts: list[int] = []
        marks: list[int] = []
        ends: list[int] = []

        def ended(*_: object) -> None:  # a forward hook returning anything else would replace the output
            marks.append(meter.records)
            ends.append(counter.flops)

        handles = [
            stage.register_forward_pre_hook(lambda *_: starts.append(counter.flops)),
            stage.register_forward_hook(ended),
        ]
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        metered = not cuda and self.allocations
        window = self._allocations.window(f"stage {k}") if metered else contextlib.nullcontext()
        try:
            with window, meter, counter:
                yield
        finally:
            for handle in handles:
                handle.remove()
        self._meters.append(meter)
        peak = meter.peak()
        # The backbone's part of the peak: what its forward saved, and what checkpointed segments of it saved
        # again while recomputing in backward.
        mark = marks[0] if marks else 0
        self.traces.append(
            StageTrace(
                saved={ptr: held.bytes for ptr, held in peak.items()},
                backbone_bytes=sum(h.bytes for h in peak.values() if h.order < mark or h.recomputed),
                alive_in=alive,
                flops=counter.flops,
                backbone_flops=sum(end - start for start, end in zip(starts, ends, strict=True)),
                recompute_flops=counter.recompute_flops,
                cuda_peak_bytes=torch.cuda.max_memory_allocated(self.device) if cuda else None,
            )
        )


def held_for_backward(learner: LocalLearner, x: torch.Tensor, y: torch.Tensor) -> list[int]:
    """Saved-for-backward bytes of each stage's local step on batch (x, y); parameters excluded.

    Traced on a deep copy, so the model, its BN statistics and its optimizers are untouched.
    """
    probe = copy.deepcopy(learner)
    probe.train()
    # lr = 0 and no momentum: the copy's step changes nothing, and it is thrown away anyway.
    optimizers = [torch.optim.SGD(probe.stage_parameters(k), lr=0.0) for k in range(probe.num_stages)]
    engine = TracingEngine(probe, optimizers, allocations=False)
    engine.train_step(x, y)
    return [trace.held_bytes for trace in engine.traces]
