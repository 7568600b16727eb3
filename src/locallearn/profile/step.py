"""One steady-state training step measured per stage and in total: memory under the documented convention and FLOPs.

Memory convention (docs/design.md). Static memory is the weights (parameters and buffers, EMA twins included),
the gradients and the optimizer state (momentum buffers), all alive through the step.
- CPU: peak = what exists before the step (weights, optimizer state, the batch) + the largest number of tensor
  bytes the step has allocated at once while a stage runs (`StageTrace.allocated_bytes`: gradients, saved
  activations and the transients between them, as the allocator reports them), measured like CUDA's.
  The bytes held for backward (`live_bytes`: the stage's saved storages, graphs still alive from earlier
  stages, the batch and the carry) are the part of it that a method's split decides.
  E2E is the same measurement with K = 1.
- CUDA: peak = `torch.cuda.max_memory_allocated()` over the step, reset as each stage starts (the per-stage
  peaks); the step's peak is the largest of them.
FLOPs: forward FLOPs counted by hooks on Conv2d/Linear (backbone and aux nets); a training step costs about
3x its forward (backward = 2x), the same factor for every method, so ratios between methods are exact. The
forward that activation checkpointing reruns in backward is added once (it has no backward of its own).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..engine.traced import StageTrace, TracingEngine
from ..measure.flops import inference_flops
from ..measure.saved import storage_sizes

BACKWARD_FACTOR = 3  # forward + backward ~ 3 x forward


@dataclass
class StageProfile:
    """One stage. Bytes are for the whole batch; FLOPs per image (training: forward + backward)."""

    stage: int
    units: str  # first-last backbone unit indices
    params: int  # trainable parameters the stage's optimizer updates (backbone units and owned modules)
    activation_bytes: int  # saved for backward by the stage's backbone forward
    aux_bytes: int  # saved for backward by aux nets, mechanisms and the loss
    held_bytes: int  # activation + aux
    live_bytes: int  # held, plus the batch, the carry and earlier graphs alive beside it
    peak_bytes: int  # the measured peak while the stage runs (CPU: allocator, see the module doc; CUDA)
    train_flops: int  # per image
    aux_train_flops: int  # per image, the part outside the stage's backbone units


@dataclass
class StepProfile:
    method: str
    K: int  # asked for; len(stages) is what is trained (MAN++: K + 1)
    cuts: list[int]
    batch_size: int
    image_shape: tuple[int, ...]
    device: str
    convention: str  # "cpu-max-allocated" or "cuda-max-allocated"
    weights_bytes: int  # parameters and buffers
    grads_bytes: int
    optimizer_bytes: int
    batch_bytes: int  # the input batch (images and labels), made before the step
    stages: list[StageProfile]
    peak_stage: int  # the stage during which the step peaks
    peak_bytes: int
    train_flops: int  # per image, all stages
    inference_flops: int  # per image, forward of the deployed network

    @property
    def static_bytes(self) -> int:
        return self.weights_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def held_bytes(self) -> int:
        """Activation memory of the step: the largest in use at once (E2E: the whole network's)."""
        return max(s.live_bytes for s in self.stages)

    @property
    def growth_bytes(self) -> int:
        """What training adds at its peak to a process holding the model and the batch: optimizer state,
        gradients, activations and transients. The RSS meter measures the same (`profile.rss`)."""
        return self.peak_bytes - self.weights_bytes - self.batch_bytes

    def to_dict(self) -> dict[str, Any]:
        extra = {"static_bytes": self.static_bytes, "held_bytes": self.held_bytes, "growth_bytes": self.growth_bytes}
        return {**asdict(self), **extra}


def _static_bytes(engine: TracingEngine) -> tuple[int, int, int]:
    learner = engine.learner
    weights = storage_sizes([*learner.parameters(), *learner.buffers()])
    grads = storage_sizes(p.grad for p in learner.parameters() if p.grad is not None)
    state = storage_sizes(
        t for opt in engine.optimizers for s in opt.state.values() for t in s.values() if torch.is_tensor(t)
    )
    return sum(weights.values()), sum(grads.values()), sum(state.values())


def _stage_profile(engine: TracingEngine, k: int, trace: StageTrace, before: int, batch: int) -> StageProfile:
    """Stage k's profile; `before` is what existed as the step started (CPU: weights, optimizer state, batch)."""
    record = engine.learner.net.records[k]
    cuda = trace.cuda_peak_bytes is not None
    return StageProfile(
        stage=k,
        units=f"{record.first_unit}-{record.last_unit}",
        params=sum(p.numel() for p in engine.learner.stage_parameters(k)),
        activation_bytes=trace.backbone_bytes,
        aux_bytes=trace.aux_bytes,
        held_bytes=trace.held_bytes,
        live_bytes=trace.live_bytes,
        peak_bytes=trace.cuda_peak_bytes if cuda else before + trace.allocated_bytes,
        train_flops=(BACKWARD_FACTOR * trace.flops + trace.recompute_flops) // batch,
        aux_train_flops=BACKWARD_FACTOR * (trace.flops - trace.backbone_flops) // batch,
    )


def profile_step(
    engine: TracingEngine, x: torch.Tensor, y: torch.Tensor, *, method: str, K: int | None = None, warmup: int = 1
) -> StepProfile:
    """Run `warmup` steps (optimizer state allocated, caches warm), then trace one step on (x, y)."""
    for _ in range(warmup):
        engine.train_step(x, y)
    engine.train_step(x, y)
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    weights, grads, state = _static_bytes(engine)
    batch = sum(storage_sizes([x, y]).values())
    before = weights + state + batch  # the step allocates the gradients itself
    stages = [_stage_profile(engine, k, t, before, x.shape[0]) for k, t in enumerate(engine.traces)]
    learner = engine.learner
    peak_stage = max(range(len(stages)), key=lambda k: stages[k].peak_bytes)
    return StepProfile(
        method=method,
        K=learner.num_stages if K is None else K,  # a learner built without a config: its stages
        cuts=list(learner.net.cuts),
        batch_size=x.shape[0],
        image_shape=tuple(x.shape[1:]),
        device=str(engine.device),
        convention="cuda-max-allocated" if engine.device.type == "cuda" else "cpu-max-allocated",
        weights_bytes=weights,
        grads_bytes=grads,
        optimizer_bytes=state,
        batch_bytes=batch,
        stages=stages,
        peak_stage=peak_stage,
        peak_bytes=stages[peak_stage].peak_bytes,
        train_flops=sum(s.train_flops for s in stages),
        inference_flops=inference_flops(learner, x[:2]),
    )
