"""Optional TensorBoard logging of a training run, beside metrics.jsonl / metrics.csv (which stay the record).

With `log.tensorboard: true` (`--set log.tensorboard=true`) the trainer writes event files under
`<out>/tensorboard/`. The x axis is the global training step (epoch x steps per epoch + step):

- every `log_every` steps (the local engine's loop, where it already syncs with the device; the pipeline engine
  logs the epoch scalars only): the running mean loss and accuracy of every stage over the epoch so far
  (`train/loss/stage<k>`, `train/accuracy/stage<k>`; stages without a classifier have no accuracy), the images
  trained per second (`throughput/images_per_s`) and the peak memory (`memory/peak_bytes`: allocated on CUDA,
  the process's peak resident set on CPU);
- at the end of every epoch, the row metrics.jsonl gets: `epoch/lr`, `epoch/train_loss/stage<k>`,
  `epoch/train_accuracy/stage<k>`, `epoch/test_accuracy/stage<k>`, `epoch/test_accuracy`, `epoch/test_loss`
  and `epoch/train_seconds`.

A run (or a resumed one) first drops the events its checkpoint does not cover, so the curves never fork.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Protocol

import torch

from .errors import ConfigError


class StepStats(Protocol):
    """What the writer reads of `engine.stats.StepStats` (named structurally: this module sits below the engine,
    since config validation asks it whether tensorboard is installed)."""

    loss: torch.Tensor  # (stages,) summed loss
    correct: torch.Tensor  # (stages,) correct predictions
    has_logits: list[bool]
    steps: int
    seen: int


INSTALL = "pip install 'locallearn[tensorboard]'"
FOLDER = "tensorboard"


def require_tensorboard() -> None:
    """A ConfigError naming the install command when the tensorboard package is missing (checked without importing
    it, so that a config is validated before any data is read)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"log.tensorboard needs the tensorboard package: {INSTALL}, or drop log.tensorboard")


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated bytes on CUDA; on CPU the process's peak resident set (Linux reports KiB, macOS bytes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource  # POSIX only: imported where a CPU run on such a system asks for it

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class TensorBoardWriter:
    """Scalars of one run under `<out_dir>/tensorboard/`; `steps_per_epoch` maps (epoch, step) to the x axis, and
    the run starts after `start_step` steps of epoch `start_epoch` (a resumed run; 0, 0 for a new one)."""

    def __init__(
        self, out_dir: Path, steps_per_epoch: int, device: torch.device, start_epoch: int = 0, start_step: int = 0
    ) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when a run asks for it

        self.steps_per_epoch = steps_per_epoch
        self.device = device
        # Events past the step the run starts from (written after its checkpoint by a run that then stopped, or by an
        # attempt that never reached one) are dropped, so each curve is the checkpointed run's.
        purge = self.global_step(start_epoch, start_step) + 1
        self.writer = SummaryWriter(str(out_dir / FOLDER), purge_step=purge)

    def global_step(self, epoch: int, step: int) -> int:
        """Step `step` (1-based) of epoch `epoch` (0-based) counted from the run's first step."""
        return epoch * self.steps_per_epoch + step

    def _stages(self, tag: str, values: list[float | None], at: int) -> None:
        for k, v in enumerate(values):
            if v is not None:
                self.writer.add_scalar(f"{tag}/stage{k}", v, at)

    def step(self, epoch: int, step: int, stats: StepStats, seconds: float) -> None:
        """The running statistics of the epoch so far (`stats`: its sums, over `seconds` of training)."""
        at = self.global_step(epoch, step)
        steps, seen = max(stats.steps, 1), max(stats.seen, 1)
        self._stages("train/loss", [v / steps for v in stats.loss.tolist()], at)
        accuracy = [c / seen if h else None for c, h in zip(stats.correct.tolist(), stats.has_logits, strict=True)]
        self._stages("train/accuracy", accuracy, at)
        self.writer.add_scalar("throughput/images_per_s", stats.seen / max(seconds, 1e-9), at)
        self.writer.add_scalar("memory/peak_bytes", peak_memory_bytes(self.device), at)

    def epoch(self, record: dict[str, Any]) -> None:
        """One row of metrics.jsonl (`Trainer.epoch_record`), at the epoch's last step."""
        at = self.global_step(record["epoch"], 0)
        self.writer.add_scalar("epoch/lr", record["lr"], at)
        self._stages("epoch/train_loss", record["train_loss"], at)
        self._stages("epoch/train_accuracy", record["train_acc"], at)
        self._stages("epoch/test_accuracy", record["stage_acc"], at)
        self.writer.add_scalar("epoch/test_accuracy", record["test_acc"], at)
        self.writer.add_scalar("epoch/test_loss", record["test_loss"], at)
        self.writer.add_scalar("epoch/train_seconds", record["train_seconds"], at)
        self.writer.flush()  # an epoch's scalars are on disk with its checkpoint

    def close(self) -> None:
        self.writer.close()


def tensorboard_writer(
    enabled: bool, out_dir: Path, steps_per_epoch: int, device: torch.device, start_epoch: int = 0, start_step: int = 0
) -> TensorBoardWriter | None:
    """The run's TensorBoard writer when `log.tensorboard` is on, else None."""
    if not enabled:
        return None
    return TensorBoardWriter(out_dir, steps_per_epoch, device, start_epoch, start_step)
