"""EMA twins: frozen copies of backbone blocks whose weights track the real block by exponential averaging.

A twin's parameters are turned into *buffers*: they are never optimised, never in `parameters()`, but are
in `state_dict()` (so checkpoints restore them). Only the copied parameters are averaged; the twin's BN
running statistics evolve through its own train-mode forwards, as in the released MAN/MLAAN code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError


@dataclass
class EmaOptions:
    """Shared by every mechanism with EMA twins (MAN, MAN++, MLAAN)."""

    ema_momentum: float = 0.995
    """m of the EMA twins (MAN, MAN++, MLAAN): twin <- m * twin + (1 - m) * source. 1 freezes them."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise ConfigError(f"method_options.ema_momentum must be in [0, 1], got {self.ema_momentum}")


def reinitialised(block: nn.Module, init: Callable[[nn.Module], None] | None) -> nn.Module:
    """A deep copy of `block`, re-initialised by `init` (the backbone's own rule) when one is given."""
    twin = copy.deepcopy(block)
    if init is not None:
        init(twin)
    return twin


def as_buffers(module: nn.Module) -> nn.Module:
    """Turn every parameter of `module` into a buffer of the same name, in place; returns the module."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                del sub._parameters[name]
                sub.register_buffer(name, param.detach().clone())
    return module


def frozen_copy(block: nn.Module, init: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """An EMA twin of `block`: a copy whose parameters are buffers (re-initialised by `init` if given)."""
    return as_buffers(reinitialised(block, init))


@torch.no_grad()
def ema_update(twin: nn.Module, source: nn.Module, momentum: float) -> None:
    """twin <- m * twin + (1 - m) * source, over the source's parameters (the twin holds them as buffers)."""
    if momentum >= 1.0:
        return
    twin_tensors = dict(twin.named_buffers())
    for name, param in source.named_parameters():
        twin_tensors[name].mul_(momentum).add_(param.detach(), alpha=1.0 - momentum)
