"""Bytes held for backward during one training step, per stage (the CPU memory convention).

For each stage we count the distinct storages autograd saves while that stage's local loss is built; the
local engine frees them at the stage's backward, so a local step holds max_k(saved_k) at once while E2E
(K = 1) holds the whole network's. Measured on a deep copy, so the model and its BN statistics are untouched.
"""

from __future__ import annotations

import copy

import torch

from ..methods import LocalLearner
from .costs import SavedTensorMeter


def held_for_backward(learner: LocalLearner, x: torch.Tensor, y: torch.Tensor) -> list[int]:
    """Saved-for-backward bytes of each stage's local step on batch (x, y); parameters excluded."""
    probe = copy.deepcopy(learner)
    probe.train()
    batch = probe.make_batch(x, y)
    carry = probe.initial_carry(batch)
    params = list(probe.parameters()) + list(probe.buffers())
    held = []
    for k in range(probe.num_stages):
        with SavedTensorMeter(exclude=params) as meter:
            result = probe.train_stage(k, carry, batch)
        result.loss.backward()
        carry = {name: t.detach() for name, t in result.out.items()}
        held.append(meter.bytes)
    return held
