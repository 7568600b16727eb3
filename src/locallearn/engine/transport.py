"""What crosses process boundaries around one step of the stages a process owns.

The engine (`engine/step.py`) runs its stages the same way whatever the process layout; the transport is the
only thing that differs. This base class is the one-process case: the process owns every stage, takes its
batches from the loader, sends and receives nothing and reduces nothing. `engine/pipeline/transport.py`
spreads the stages over torch.distributed ranks (pipeline positions x data-parallel replicas).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..methods import Batch, Carry, LocalLearner
from .stats import StepStats


class Transport:
    """One process owns every stage: every hook is the identity or does nothing."""

    asynchronous = False  # whether a step may train on a replayed carry (the pipeline's async mode)

    def __init__(self, learner: LocalLearner) -> None:
        self.learner = learner
        self.stages = range(learner.num_stages)  # the stages this process trains, in order
        self.step = 0  # steps taken since the run started (message headers and EMA intervals count them)

    @property
    def reads_data(self) -> bool:
        """Whether this process takes its batches from the loader (else they arrive as carries)."""
        return True

    @property
    def writes_outputs(self) -> bool:
        """Whether this process writes the run directory's files (metrics, summary, the checkpoint record)."""
        return True

    def start_at(self, step: int) -> None:
        """Continue the step count at `step` (after --resume)."""
        self.step = step

    def begin_phase(self, train: bool, count: int | None) -> None:
        """A training epoch or an evaluation of `count` batches (None: until the predecessor says it ended)."""

    def take(self, x: torch.Tensor | None, y: torch.Tensor | None, train: bool) -> tuple[Carry, Batch] | None:
        """The first owned stage's input and the batch; None once an asynchronous epoch has ended."""
        batch = self.learner.make_batch(x, y)
        return self.learner.initial_carry(batch), batch

    def send(self, carry: Carry, batch: Batch, train: bool) -> None:
        """Hand the last owned stage's carry to the process that owns the next stage."""

    def before_step(self) -> None:
        """At the start of a training step (the pipeline ships EMA sources here)."""

    def before_update(self, k: int) -> None:
        """After stage k's backward, before its `after_backward` (the pipeline receives EMA sources here)."""

    def after_update(self, k: int) -> None:
        """After stage k's backward and the optimizer steps it completes (the pipeline sends cascade gradients)."""

    def deferred(self, window: int) -> Iterator[int]:
        """The owned stages whose optimizer steps once every owned stage has run: the last `window - 1`,
        which a later stage's loss may still reach. The pipeline first collects their cascade gradients."""
        first, last = self.stages[0], self.stages[-1]
        yield from range(max(first, last - window + 2), last + 1)

    def after_step(self) -> None:
        """At the end of a training step, after every optimizer step."""
        self.step += 1

    def reduce_grads(self, k: int) -> None:
        """Make stage k's gradients those of the global batch (data-parallel replicas average theirs)."""

    def end_epoch(self) -> None:
        """Close a training epoch (replicas average their batch-norm statistics)."""

    def merged(self, stats: StepStats) -> StepStats:
        """`stats` of the owned stages as one engine over every stage would have counted them."""
        return stats

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over every process."""
        return t
