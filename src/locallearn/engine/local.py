"""The local engine: all stages in sequence on one device, one stage's graph alive at a time."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..methods import Batch, Carry, LocalLearner, StageResult


@dataclass
class StepStats:
    """Per-stage sums over the steps since the last `reset`, kept on the device (no host sync per step)."""

    loss: torch.Tensor  # (K,)
    correct: torch.Tensor  # (K,) correct aux/final predictions (stages without a classifier stay 0)
    has_logits: list[bool]
    seen: int = 0
    steps: int = 0

    def __add__(self, other: StepStats) -> StepStats:
        """The sums over both spans of steps (an epoch's steps before and after a mid-epoch resume)."""
        return StepStats(
            loss=self.loss + other.loss.to(self.loss.device),
            correct=self.correct + other.correct.to(self.correct.device),
            has_logits=[a or b for a, b in zip(self.has_logits, other.has_logits, strict=True)],
            seen=self.seen + other.seen,
            steps=self.steps + other.steps,
        )

    def to(self, device: torch.device) -> StepStats:
        return StepStats(self.loss.to(device), self.correct.to(device), list(self.has_logits), self.seen, self.steps)

    def as_dict(self) -> dict[str, Any]:
        """Tensors and plain data, as a checkpoint stores them (checkpoints are read with weights_only=True)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # the tensors are not copied

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepStats:
        return cls(**data)


def autocast_context(device: torch.device, amp: str):
    """torch.autocast for `amp`: bf16 on any device, fp16 on CUDA only (the CPU has no loss scaler for it)."""
    if amp == "bf16" or (amp == "fp16" and device.type == "cuda"):
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


class LocalEngine:
    """Runs one training step over all stages: forward, local loss, backward, detach, next stage.

    Stage j's optimizer steps as soon as no later stage can put gradient into it (after stage
    j + window - 1's backward), so isolated methods free nothing late and cascades see unstepped weights,
    exactly like one global step after all backward passes.
    """

    def __init__(
        self,
        learner: LocalLearner,
        optimizers: list[torch.optim.Optimizer],
        *,
        amp: str = "none",
        scaler: torch.amp.GradScaler | None = None,
        before_step: Callable[[int], object] | None = None,
    ) -> None:
        """`amp` (none, bf16, fp16) runs every stage's forward and loss under torch.autocast, its backward outside.
        `before_step(k)` runs just before stage k's optimizer step, on unscaled gradients: gradient clipping."""
        self.learner = learner
        self.optimizers = optimizers
        self.amp = amp
        self.scaler = scaler
        self.before_step = before_step
        self.device = next(learner.parameters()).device
        self.stats = self._new_stats()

    def _new_stats(self) -> StepStats:
        k = self.learner.num_stages
        return StepStats(
            loss=torch.zeros(k, device=self.device),
            correct=torch.zeros(k, device=self.device, dtype=torch.long),
            has_logits=[False] * k,
        )

    def reset_stats(self) -> StepStats:
        stats, self.stats = self.stats, self._new_stats()
        return stats

    def _step(self, j: int) -> None:
        if self.before_step is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizers[j])
            self.before_step(j)
        if self.scaler is not None:
            self.scaler.step(self.optimizers[j])
        else:
            self.optimizers[j].step()
        self.learner.after_step(j)

    def stage_scope(self, k: int, carry: Carry, batch: Batch) -> contextlib.AbstractContextManager:
        """Context around stage k's forward, backward and optimizer step: the seam profilers measure through."""
        return contextlib.nullcontext()

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def backward_stage(self, k: int, carry: Carry, batch: Batch) -> StageResult:
        """Stage k's forward and local loss (under autocast), then its backward."""
        with autocast_context(self.device, self.amp):
            result = self.learner.train_stage(k, carry, batch)
        loss = result.loss if self.scaler is None else self.scaler.scale(result.loss)
        loss.backward()
        return result

    def close_stage(self, k: int, result: StageResult, y: torch.Tensor) -> Carry:
        """Count stage k's loss and accuracy; return its output for stage k+1, detached.

        Gradient isolation is enforced here, once, for every method and engine.
        """
        self.stats.loss[k] += result.loss.detach().float()
        if result.logits is not None:
            self.stats.correct[k] += (result.logits.detach().argmax(1) == y).sum()
            self.stats.has_logits[k] = True
        return {name: t.detach() for name, t in result.out.items()}

    def end_step(self, samples: int) -> None:
        if self.scaler is not None:
            self.scaler.update()
        self.stats.seen += samples
        self.stats.steps += 1

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        learner, n = self.learner, self.learner.num_stages
        window = learner.window
        batch = learner.make_batch(x, y)
        carry = learner.initial_carry(batch)
        self.zero_grad()
        for k in range(n):
            with self.stage_scope(k, carry, batch):
                result = self.backward_stage(k, carry, batch)
                learner.after_backward(k)
                if k - window + 1 >= 0:
                    self._step(k - window + 1)
            carry = self.close_stage(k, result, y)
        for j in range(max(n - window + 1, 0), n):
            self._step(j)
        self.end_step(y.shape[0])


@torch.no_grad()
def evaluate(learner: LocalLearner, loader, amp: str = "none") -> tuple[float, list[float | None], float]:
    """(final accuracy, per-stage aux accuracy (None without a classifier), mean final CE) on `loader`."""
    was_training = learner.training
    learner.eval()
    device = next(learner.parameters()).device
    correct: torch.Tensor | None = None
    has = None
    total, ce = 0, torch.zeros((), device=device)
    for x, y in loader:
        with autocast_context(device, amp):
            outs = learner.predict_stages(x)
        if correct is None:
            correct = torch.zeros(len(outs), dtype=torch.long, device=device)
            has = [o is not None for o in outs]
        for k, logits in enumerate(outs):
            if logits is not None:
                correct[k] += (logits.argmax(1) == y).sum()
        ce += torch.nn.functional.cross_entropy(outs[-1].float(), y, reduction="sum")
        total += y.shape[0]
    learner.train(was_training)
    acc = (correct.float() / max(total, 1)).tolist()
    stage_acc = [a if h else None for a, h in zip(acc, has, strict=True)]
    return stage_acc[-1], stage_acc, ce.item() / max(total, 1)
