"""The engine: one training step and one evaluation over the stages this process owns, for every process layout.

Per owned stage k: forward and local loss → backward → `after_backward(k)` → the optimizer step of every stage
no later stage can reach any more → the carry is detached (isolation enforced here, once) → stage k+1. The
transport (`engine/transport.py`) brings the first owned stage's input and takes the last one's output: from
and to the loader when one process owns every stage (the local engine), from and to other ranks otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from ..methods import Batch, Carry, LocalLearner, StageResult
from .stats import StepStats
from .transport import Transport

Accuracy = tuple[float, list[float | None], float]  # (final accuracy, per-stage accuracy or None, mean final CE)


def autocast_context(device: torch.device, amp: str):
    """torch.autocast for `amp`: bf16 on any device, fp16 on CUDA only (the CPU has no loss scaler for it)."""
    if amp == "bf16" or (amp == "fp16" and device.type == "cuda"):
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


class Engine:
    """Trains and evaluates the stages `transport` gives this process (all of them by default).

    Stage j's optimizer steps as soon as no later stage can put gradient into it (after stage
    j + window - 1's backward), so isolated methods free nothing late and cascades see unstepped weights,
    exactly like one global step after all backward passes; the pipeline makes the same updates rank by rank.
    """

    def __init__(
        self,
        learner: LocalLearner,
        optimizers: list[torch.optim.Optimizer],
        *,
        amp: str = "none",
        scaler: torch.amp.GradScaler | None = None,
        transport: Transport | None = None,
        before_step: Callable[[int], object] | None = None,
    ) -> None:
        """`amp` (none, bf16, fp16) runs every stage's forward and loss under torch.autocast, its backward outside.
        `before_step(k)` runs just before stage k's optimizer step, on unscaled (and, across replicas, averaged)
        gradients: gradient clipping."""
        self.learner = learner
        self.optimizers = optimizers
        self.amp = amp
        self.scaler = scaler
        self.transport = transport or Transport(learner)
        self.before_step = before_step
        self.device = next(learner.parameters()).device
        self.stats = self._new_stats()
        self.carried: StepStats | None = None  # the epoch's merged statistics from before a mid-epoch resume

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

    # ----------------------------------------------------------------------------------------- one stage
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

        Gradient isolation is enforced here, once, for every method and process layout.
        """
        self.stats.loss[k] += result.loss.detach().float()
        if result.logits is not None:
            self.stats.correct[k] += (result.logits.detach().argmax(1) == y).sum()
            self.stats.has_logits[k] = True
        return {name: t.detach() for name, t in result.out.items()}

    def _step(self, j: int) -> None:
        self.transport.reduce_grads(j)
        if self.before_step is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizers[j])
            self.before_step(j)
        if self.scaler is not None:
            self.scaler.step(self.optimizers[j])
        else:
            self.optimizers[j].step()
        self.learner.after_step(j)

    # ----------------------------------------------------------------------------------------- training
    def start_at(self, step: int) -> None:
        """Continue the global step count at `step` (after --resume)."""
        self.transport.start_at(step)

    def begin_epoch(self, steps: int | None, carried: StepStats | None = None) -> None:
        """Open an epoch of `steps` steps. `carried`: the merged statistics of the epoch's steps trained before a
        mid-epoch resume."""
        self.reset_stats()
        self.carried = carried
        self.transport.begin_phase(True, None if self.transport.asynchronous else steps)

    def train_step(self, x: torch.Tensor | None, y: torch.Tensor | None) -> bool:
        """One step of the owned stages. `x, y`: this replica's share of the batch where the transport
        `reads_data`, None elsewhere. Returns False, doing nothing, once an asynchronous epoch has ended."""
        t, learner = self.transport, self.learner
        self.zero_grad()
        t.before_step()
        taken = t.take(x, y, train=True)
        if taken is None:
            return False
        carry, batch = taken
        window, first = learner.window, t.stages[0]
        for k in t.stages:
            with self.stage_scope(k, carry, batch):
                result = self.backward_stage(k, carry, batch)
                t.before_update(k)
                learner.after_backward(k)
                if k - window + 1 >= first:
                    self._step(k - window + 1)
                t.after_update(k)
            carry = self.close_stage(k, result, batch.y)
        t.send(carry, batch, train=True)
        for j in t.deferred(window):
            self._step(j)
        if self.scaler is not None:
            self.scaler.update()
        t.after_step()
        self.stats.seen += batch.y.shape[0]
        self.stats.steps += 1
        return True

    def epoch_stats(self) -> StepStats:
        """The epoch's statistics so far, of every stage (a collective under torch.distributed)."""
        merged = self.transport.merged(self.stats)
        return merged if self.carried is None else self.carried + merged.to(self.carried.loss.device)

    def end_epoch(self) -> StepStats:
        """Close the epoch; its statistics, of every stage."""
        self.transport.end_epoch()
        stats = self.epoch_stats()
        self.reset_stats()
        self.carried = None
        return stats

    # ----------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(
        self, batches: Iterable[tuple[torch.Tensor | None, torch.Tensor | None]], count: int | None
    ) -> Accuracy:
        """Accuracy of every stage on `batches` (`count` of them; placeholders where the transport does not read
        data), summed over every process."""
        learner, t = self.learner, self.transport
        was_training = learner.training
        learner.eval()
        n = learner.num_stages
        correct = torch.zeros(n, dtype=torch.float64, device=self.device)
        has_logits = torch.zeros(n, dtype=torch.float64, device=self.device)
        ce_seen = torch.zeros(2, dtype=torch.float64, device=self.device)  # summed final CE, samples
        t.begin_phase(False, count)
        for x, y in batches:
            carry, batch = t.take(x, y, train=False)
            for k in t.stages:
                with autocast_context(self.device, self.amp):
                    logits, carry = learner.predict_stage(k, carry, batch)
                if logits is not None:
                    correct[k] += (logits.argmax(1) == batch.y).sum()
                    has_logits[k] = 1
                if k == n - 1:
                    ce_seen[0] += F.cross_entropy(logits.float(), batch.y, reduction="sum")
                    ce_seen[1] += batch.y.shape[0]
            t.send(carry, batch, train=False)
        learner.train(was_training)
        correct, has_logits, ce_seen = t.sum(torch.cat([correct, has_logits, ce_seen])).split([n, n, 2])
        total = max(ce_seen[1].item(), 1.0)
        stage_acc = [c / total if h else None for c, h in zip(correct.tolist(), has_logits.tolist(), strict=True)]
        return stage_acc[-1], stage_acc, ce_seen[0].item() / total
