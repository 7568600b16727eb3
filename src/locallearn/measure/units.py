"""Per-unit costs measured by one dummy forward: output shape, parameters, FLOPs, bytes saved for backward.

What `split` balances and records. Saved bytes are the storages autograd keeps for backward, deduplicated by
storage, for a training-mode forward: the activation memory a unit holds until its backward runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .flops import FlopCounter
from .saved import SavedTensorMeter


@dataclass(frozen=True)
class UnitCost:
    out_shape: tuple[int, ...]  # per sample, e.g. (C, H, W)
    params: int
    flops: int  # forward FLOPs per sample
    saved_bytes: int  # bytes saved for backward per sample (training mode)


@contextlib.contextmanager
def in_training_mode_restored(units: nn.ModuleList) -> Iterator[None]:
    """`units` in training mode inside; afterwards their state (BN running statistics) and modes as before, so
    that measuring leaves the model as it was."""
    snapshots = [{k: v.clone() for k, v in u.state_dict().items()} for u in units]
    modes = [u.training for u in units]
    units.train()
    try:
        yield
    finally:
        for unit, snap, mode in zip(units, snapshots, modes, strict=True):
            unit.load_state_dict(snap)
            unit.train(mode)


def measure_units(units: nn.ModuleList, input_shape: tuple[int, ...], batch: int = 2) -> list[UnitCost]:
    """Run a dummy batch through `units` in training mode and measure each one.

    BN running statistics are restored afterwards, so measuring does not change the model.
    """
    device = next((p.device for p in units.parameters()), torch.device("cpu"))
    x = torch.randn(batch, *input_shape, device=device)
    costs: list[UnitCost] = []
    with in_training_mode_restored(units):
        for unit in units:
            params = list(unit.parameters())
            x = x.detach().requires_grad_(True)
            with SavedTensorMeter(exclude=params) as meter, FlopCounter() as counter:
                out = unit(x)
            costs.append(
                UnitCost(
                    out_shape=tuple(out.shape[1:]),
                    params=sum(p.numel() for p in params),
                    flops=counter.flops // batch,
                    saved_bytes=meter.bytes // batch,
                )
            )
            x = out
    return costs
