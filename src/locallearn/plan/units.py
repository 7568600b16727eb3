"""The backbone's memory, unit by unit, measured once on two small batches and extrapolated in the batch size.

The chain runs as one graph, so that every storage autograd saves is seen once with the units that saved it.
A storage is a unit's *input*, its *output* or *inner* (everything else). The output of unit i is the input of
unit i+1: kept apart, it is counted once inside a stage and, at a cut, where the stage it lives in saves it.
Everything is affine in the batch size B (a per-sample part plus BatchNorm's per-channel statistics), so
two batches determine it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..measure.saved import SavedTensorMeter, storage_key
from ..measure.units import in_training_mode_restored

SMALL_BATCHES = (2, 4)  # BatchNorm in training needs more than one sample


@dataclass(frozen=True)
class Affine:
    """c0 + c1 * B bytes."""

    c0: float
    c1: float

    def at(self, batch: int) -> float:
        return self.c0 + self.c1 * batch

    @classmethod
    def through(cls, b1: int, v1: float, b2: int, v2: float) -> Affine:
        slope = (v2 - v1) / (b2 - b1)
        return cls(v1 - slope * b1, slope)


@dataclass(frozen=True)
class UnitMemory:
    inner: Affine  # bytes saved by the unit other than its input and output
    out_bytes: Affine  # size of the unit's output
    saves_input: bool
    saves_output: bool
    out_dtype: torch.dtype


@dataclass
class _Pass:
    """One forward through the chain at one batch size: per unit, its saved storages and its input/output."""

    saved: list[dict[int, int]]
    inputs: list[int]  # storage addresses
    outputs: list[int]
    out_bytes: list[int]
    out_dtypes: list[torch.dtype]


def _record(units: nn.ModuleList, x: torch.Tensor, amp_context) -> _Pass:
    params = [*units.parameters(), *units.buffers()]
    meters = [SavedTensorMeter(exclude=params) for _ in units]
    run = _Pass([], [], [], [], [])
    h = x.requires_grad_(True)
    with amp_context():
        for unit, meter in zip(units, meters, strict=True):
            run.inputs.append(storage_key(h))
            with meter:
                h = unit(h)
            run.outputs.append(storage_key(h))
            run.out_bytes.append(h.numel() * h.element_size())
            run.out_dtypes.append(h.dtype)
    # Only now may the graph go: until here it kept every saved storage alive, so no address was reused.
    run.saved = [dict(m.storages) for m in meters]
    return run


def _inner(run: _Pass, i: int) -> int:
    return sum(n for ptr, n in run.saved[i].items() if ptr not in (run.inputs[i], run.outputs[i]))


def measure_unit_memory(
    units: nn.ModuleList, input_shape: tuple[int, ...], device: torch.device, amp_context
) -> list[UnitMemory]:
    """Each unit's saved bytes on two small batches (BN running statistics restored afterwards)."""
    (b1, b2) = SMALL_BATCHES
    with in_training_mode_restored(units):
        r1, r2 = (_record(units, torch.randn(b, *input_shape, device=device), amp_context) for b in SMALL_BATCHES)
    return [
        UnitMemory(
            inner=Affine.through(b1, _inner(r1, i), b2, _inner(r2, i)),
            out_bytes=Affine.through(b1, r1.out_bytes[i], b2, r2.out_bytes[i]),
            saves_input=r1.inputs[i] in r1.saved[i],
            saves_output=r1.outputs[i] in r1.saved[i],
            out_dtype=r1.out_dtypes[i],
        )
        for i in range(len(units))
    ]
