"""Activation checkpointing: stages whose segments keep only their input and recompute the rest in backward.

`activation_checkpoint` (config) chooses the segments: `per-unit` (every unit of every stage; any method) or
`per-stage:J` (E2E only: the network cut into the J stages a local method at K = J would use, by the same
`split`). The last segment of a stage is never checkpointed: its backward starts as soon as its forward ends,
so recomputing it would cost time and save nothing.

A checkpointed segment runs its forward without building a graph and saves its input; its backward reruns the
forward with gradients on and backpropagates through it. This is the recomputation `torch.utils.checkpoint`
performs, written as one autograd Function so that (1) buffers the forward updates (BatchNorm's running
statistics) are updated once per step, as without checkpointing, (2) a segment whose input needs no gradient
(the stem, fed the batch) still trains its parameters, and (3) the recomputation saves its tensors through
the ordinary saved-tensor hooks, so the profiler's meter sees the transient peak of each recomputation.
Gradients equal those of the plain network exactly: the same kernels run on the same values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..measure.phase import recomputation


@contextlib.contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Undo whatever the block changes in `module`'s buffers (BN running statistics: updated by the forward)."""
    saved = [(b, b.clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class _Recompute(torch.autograd.Function):
    """y = segment(x), holding only x; the parameters are inputs so that y needs a gradient whenever they do."""

    @staticmethod
    def forward(ctx, segment: nn.Module, x: torch.Tensor, *params: nn.Parameter) -> torch.Tensor:
        device = x.device.type
        ctx.segment, ctx.params = segment, params
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.rng = torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if device == "cuda" else None
        ctx.save_for_backward(x)
        return segment(x)  # grad mode is off inside an autograd Function's forward: no graph is kept

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        device, autocast, dtype = ctx.autocast
        cpu_rng, cuda_rng = ctx.rng
        x = x.detach().requires_grad_(ctx.needs_input_grad[1])
        with torch.random.fork_rng(devices=[x.device] if cuda_rng is not None else [], device_type=device):
            torch.set_rng_state(cpu_rng)  # dropout-like layers draw the same numbers as in the forward
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, x.device)
            # The buffers are put back after the gradient is taken: BN's backward checks that the running
            # statistics it saw have not been written since.
            with _buffers_kept(ctx.segment):
                with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=autocast), recomputation():
                    y = ctx.segment(x)
                wanted = [t for t, need in zip((x, *ctx.params), ctx.needs_input_grad[1:], strict=True) if need]
                grads = iter(torch.autograd.grad(y, wanted, grad, allow_unused=True))
        return None, *(next(grads) if need else None for need in ctx.needs_input_grad[1:])


class CheckpointedSequential(nn.Sequential):
    """An `nn.Sequential` of the same units (same state-dict keys) run as segments ending after `ends`.

    Every segment but the last is checkpointed while gradients are on; in inference all run plainly.
    """

    def __init__(self, units: Sequence[nn.Module], ends: Sequence[int]) -> None:
        super().__init__(*units)
        bounds = [-1, *sorted(set(ends) & set(range(len(units) - 1))), len(units) - 1]
        self.segments = [nn.Sequential(*units[a + 1 : b + 1]) for a, b in zip(bounds, bounds[1:], strict=False)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        for segment in self.segments[:-1]:
            params = [p for p in segment.parameters() if p.requires_grad]
            x = _Recompute.apply(segment, x, *params)  # (B, C, H, W) -> the segment's output
        return self.segments[-1](x)


def checkpoint_stages(stages: nn.ModuleList, ends: Sequence[Sequence[int]]) -> None:
    """Replace stage k of `stages` by a CheckpointedSequential of its units with segments ending after `ends[k]`
    (indices within the stage). The units are the same modules, so the backbone and its weights are shared."""
    for k, stage_ends in enumerate(ends):
        stages[k] = CheckpointedSequential(list(stages[k]), stage_ends)


def checkpoint_split(net: nn.Module, kind: str, count: int | None, cuts: Callable[[int], list[int]]) -> None:
    """Checkpoint the stages of the split network `net`: kind `none`, `per-unit` or `per-stage` (with `count`
    segments; see `config.parse_activation_checkpoint`). `cuts(J)` gives the unit indices after which the J
    stages of a local method would end: the `per-stage:J` segments of an E2E network."""
    if kind == "none":
        return
    if kind == "per-unit":
        ends = [list(range(len(stage))) for stage in net.stages]
    elif net.num_stages == 1:
        ends = [cuts(count)]
    else:
        raise ConfigError(
            f"activation_checkpoint per-stage:{count} segments an E2E network; with K = {net.num_stages} local "
            "stages use per-unit (or method e2e)"
        )
    checkpoint_stages(net.stages, ends)
