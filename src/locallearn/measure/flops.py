"""Forward FLOPs counted by PyTorch's own `FlopCounterMode`: every matmul, convolution and attention kernel the
dispatcher runs (a decoder's matrix-product upsample included), whatever module issues it.

FLOPs are 2 x multiply-accumulates (PyTorch's convention; biases, normalisation, activations and pooling are not
counted). Only forward work is counted: a step's backward is costed from it (`profile.step.BACKWARD_FACTOR`),
and the forward a checkpointed segment reruns inside backward is summed apart, in `recompute_flops`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .phase import recomputing


def _attention_flops(query: torch.Size, key: torch.Size, value: torch.Size, *_: Any, **__: Any) -> int:
    """Q K^T then the weighted sum of V: (..., L, E) x (..., S, E) -> (..., L, S), x (..., S, Ev) -> (..., L, Ev)."""
    *batch, length, e = query
    return 2 * math.prod(batch) * length * key[-2] * (e + value[-1])


# Kernels PyTorch's table leaves out: the CPU attention kernel `F.scaled_dot_product_attention` runs on CPU.
EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}


class _TopLevel:
    """Stands in for FlopCounterMode's module tracker: every count goes to the total ("Global")."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _TopLevel:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class FlopCounter(FlopCounterMode):
    """Context manager counting the forward FLOPs of everything run inside it, for the whole batch.

    `flops` is the forward work; `recompute_flops` the forward rerun by checkpointed segments in backward;
    the backward's own kernels (run while autograd executes a graph node) are not counted.
    """

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=EXTRA_FORMULAS)
        self.recompute_flops = 0
        # One total is all we read. The mode's per-module attribution hooks every module output for backward,
        # which autograd.grad (a checkpointed segment's backward) refuses; a tracker that is always at the
        # top level puts every count in the total alone.
        self.mod_tracker = _TopLevel()
        # Each of PyTorch's per-op formulas is routed by phase: the mode sums what a formula returns, so a
        # backward or rerun kernel returns 0 to it (the rerun's count is kept here instead).
        self.flop_registry = {op: self._by_phase(formula) for op, formula in self.flop_registry.items()}

    def _by_phase(self, formula: Callable[..., int]) -> Callable[..., int]:
        def count(*args: Any, **kwargs: Any) -> int:
            flops = formula(*args, **kwargs)
            if recomputing():
                self.recompute_flops += flops
                return 0
            return flops if torch._C._current_autograd_node() is None else 0

        return count

    @property
    def flops(self) -> int:
        return self.get_total_flops()


def inference_flops(learner: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs per image of the deployed network on `x` (B, C, H, W): what `learner(x)` runs (the backbone
    plus what a mechanism keeps at inference, e.g. ContSup's context nodes; no aux nets)."""
    training = learner.training
    learner.eval()  # eval mode: BN statistics are not touched
    try:
        with torch.no_grad(), FlopCounter() as counter:
            learner(x)
    finally:
        learner.train(training)
    return counter.flops // x.shape[0]
