"""Trainer: builds a run from a RunConfig and drives epochs, evaluation, logging and checkpoints.

Every epoch's data order and augmentation are a pure function of (seed, epoch) and the model is restored
from the last checkpoint (an epoch's end, or with `checkpoint_every` a step within an epoch, whose batches
already trained are skipped), so `--resume` continues bit-identically on CPU.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from ..config import RunConfig, parse_activation_checkpoint
from ..data.build import Loader, RunData, build_data
from ..errors import ConfigError, TrainingError
from ..logs import TensorBoardWriter, tensorboard_writer
from ..measure.flops import inference_flops
from ..methods import LocalLearner, build_learner
from ..models import MODELS, build_backbone
from ..provenance import code_version
from ..schedule import lr_at
from ..split import resolve_cuts, split_model
from .checkpoint import (
    CHECKPOINT,
    first_non_finite,
    load_checkpoint,
    replace_file,
    save_checkpoint,
    write_json,
    write_text,
)
from .host_memory import prepare_host_memory
from .recompute import checkpoint_split
from .stats import StepStats
from .step import Accuracy, Engine
from .traced import held_for_backward

# What the saved state and the data order depend on; everything else may change on --resume.
RESUME_MUST_MATCH = (
    "arch",
    "method",
    "K",
    "split",
    "dataset",
    "image_size",
    "train_limit",
    "batch_size",
    "seed",
    "method_options",
)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but CUDA is not available; use --device cpu")
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "none"
    return amp


@dataclass(frozen=True)
class EpochStart:
    """Where an epoch starts: its first step, or after `step` steps, `seconds` of training and their `stats`
    (a run resumed from a checkpoint taken within the epoch)."""

    step: int = 0
    seconds: float = 0.0
    stats: StepStats | None = None


@dataclass
class Run:
    """Everything built from a config: data, learner, optimizers and loaders."""

    cfg: RunConfig
    device: torch.device
    data: RunData
    learner: LocalLearner
    optimizers: list[torch.optim.Optimizer]
    train_loader: Loader
    test_loader: Loader


def use_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    return cfg.channels_last and device.type == "cuda"


def build_model(
    cfg: RunConfig,
    image_shape: tuple[int, ...],
    num_classes: int,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> LocalLearner:
    """The learner a run trains (backbone, split, method) on `device`; also what profile and plan measure."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # shapes are fixed per stage: let cuDNN pick its fastest kernels
    backbone = build_backbone(cfg.arch, num_classes, zero_init_residual=cfg.zero_init_residual)
    net = split_model(
        backbone,
        cfg.K,
        cfg.split,
        arch=cfg.arch,
        dataset=cfg.dataset,
        input_shape=image_shape,
        stem_module=cfg.spec.stem_module(cfg.method_options),
        cuts=cfg.cuts,
    )
    checkpoint_split(
        net,
        *parse_activation_checkpoint(cfg.activation_checkpoint),
        lambda j: resolve_cuts(backbone, j, cfg.split, arch=cfg.arch, dataset=cfg.dataset, costs=net.unit_costs),
    )
    learner = build_learner(cfg.spec, net, num_classes=num_classes, mean=mean, std=std, options=cfg.method_options)
    learner = learner.to(device)
    if use_channels_last(cfg, device):
        learner = learner.to(memory_format=torch.channels_last)
    if cfg.compile:
        for stage in learner.net.stages:
            stage.compile()
    return learner


def build_optimizers(learner: LocalLearner, cfg: RunConfig) -> list[torch.optim.Optimizer]:
    """One SGD (or AdamW) per stage. Fused on CUDA (one kernel per stage's update), multi-tensor (foreach) elsewhere."""
    fused = next(learner.parameters()).device.type == "cuda"
    kernel = {"foreach": not fused, "fused": fused}
    if cfg.optimizer == "adamw":
        return [
            torch.optim.AdamW(learner.stage_parameters(k), lr=cfg.lr, weight_decay=cfg.weight_decay, **kernel)
            for k in range(learner.num_stages)
        ]
    return [
        torch.optim.SGD(
            learner.stage_parameters(k),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            **kernel,
        )
        for k in range(learner.num_stages)
    ]


KERNEL_CHOICES = ("fused", "foreach")


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load `state` into `opt`, keeping the update kernel `opt` was built with for its device.

    A saved state carries the writer's `fused` / `foreach` flags, which `load_state_dict` would adopt: a run
    checkpointed on CPU would lose the fused kernel when resumed on CUDA, and the reverse would ask the CPU for
    the kernel chosen for CUDA."""
    kernels = [{k: group[k] for k in KERNEL_CHOICES if k in group} for group in opt.param_groups]
    opt.load_state_dict(state)
    for group, kernel in zip(opt.param_groups, kernels, strict=True):
        group.update(kernel)


def build_run(cfg: RunConfig, device: torch.device | None = None, *, share: tuple[int, int] = (0, 1)) -> Run:
    """`share = (r, n)`: the loaders deliver part r of n of every batch (data-parallel replica r of n)."""
    device = device or resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cpu":
        prepare_host_memory(cfg.return_freed_memory, cfg.batch_size)
    # Cheap checks first, so that a typo fails before any data is read.
    if ":" not in cfg.arch:
        MODELS.get(cfg.arch)
    torch.manual_seed(cfg.seed)
    channels_last = use_channels_last(cfg, device)
    data = build_data(cfg, device, channels_last=channels_last, share=share)
    learner = build_model(cfg, data.image_shape, data.num_classes, mean=data.mean, std=data.std, device=device)
    optimizers = build_optimizers(learner, cfg)
    return Run(cfg, device, data, learner, optimizers, data.train, data.test)


def epoch_lr(cfg: RunConfig, epoch: int) -> float:
    """The learning rate of 0-based `epoch` under the config's schedule."""
    return lr_at(epoch, cfg.epochs, cfg.lr, cfg.schedule, cfg.warmup_epochs, cfg.milestones)


def _set_lr(optimizers: list[torch.optim.Optimizer], lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def diverged(what: str, epoch: int, step: int, ckpt: Path) -> TrainingError:
    """The error that stops a run whose numbers went non-finite, saying what is left on disk."""
    when = f"epoch {epoch + 1}, step {step}" if step else f"end of epoch {epoch + 1}"
    if ckpt.is_file():
        kept = f"nothing non-finite was saved: the last good checkpoint is kept at {ckpt}; lower --lr (or use "
        kept += "--amp none) and continue with --resume"
    else:
        kept = "no checkpoint had been written yet; lower --lr (or use --amp none) and start again"
    return TrainingError(f"{what} ({when}); {kept}")


def _check_finite(losses: list[float], epoch: int, step: int, ckpt: Path) -> None:
    for k, v in enumerate(losses):
        if not math.isfinite(v):
            raise diverged(f"non-finite loss at stage {k}", epoch, step, ckpt)


def refuse_non_finite(state: dict[str, Any], epoch: int, step: int, ckpt: Path) -> None:
    """Raise before a checkpoint holding NaN or inf (weights, optimizer state, running losses) is written:
    a within-epoch checkpoint can come before the next loss check, and must not replace the last good one."""
    bad = first_non_finite(state)
    if bad is not None:
        raise diverged(f"non-finite values in {bad}", epoch, step, ckpt)


def check_stop_after(stop_after: int | None) -> None:
    if stop_after is not None and stop_after < 1:
        raise ConfigError(
            f"--stop-after-epoch must be an epoch number >= 1 (the last epoch to train), got {stop_after}; "
            "drop it to train every epoch"
        )


class Trainer:
    """Train one run into `out_dir`: config.yaml, metrics.jsonl/.csv, last.pt and summary.json.

    The epoch loop and evaluation drive the engine over the stages this process owns, whatever the process
    layout. Under torchrun, `engine/pipeline/run.py`'s DistributedTrainer changes only what is not a loop:
    `make_engine`, the per-stage checkpoint (`save`, `resume`), the progress line and the summary's extras.
    """

    def __init__(self, cfg: RunConfig, out_dir: str | Path, *, progress: bool = True, run: Run | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.run = run or build_run(cfg)
        amp = resolve_amp(cfg.amp, self.run.device)
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        self.amp = amp
        self.engine = self.make_engine(amp, scaler)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.elapsed = 0.0
        self.resume_point = EpochStart()  # where epoch `start_epoch` begins
        self.pending = False  # a checkpoint taken within the epoch waits at `pending_path` to be verified
        self.tensorboard: TensorBoardWriter | None = None  # opened by `fit` in the process that writes the files

    def make_engine(self, amp: str, scaler: torch.amp.GradScaler | None) -> Engine:
        return Engine(self.run.learner, self.run.optimizers, amp=amp, scaler=scaler)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory's files (config, metrics, summary)."""
        return self.engine.transport.writes_outputs

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    @property
    def pending_path(self) -> Path:
        """Where a checkpoint taken within an epoch waits until the next step's loss, the first computed with its
        weights, is finite; only then does it replace `last.pt` (a run resumed after a crash discards it)."""
        return self.out / f".{CHECKPOINT}.pending.tmp"

    def state(self, epoch: int, at: EpochStart | None = None) -> dict[str, Any]:
        """What a checkpoint holds after `epoch`, or (`at`) after `at.step` steps of it."""
        partial = {"partial": {"step": at.step, "seconds": at.seconds, "stats": at.stats.as_dict()}} if at else {}
        return {
            "epoch": epoch - 1 if at else epoch,  # the last complete epoch
            **partial,
            "learner": self.run.learner.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.run.optimizers],
            "history": self.history,
            "elapsed": self.elapsed,
            "config": self.cfg.to_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def resume(self) -> None:
        self.restore(load_checkpoint(self.checkpoint_path, self.run.device, missing="drop --resume to start a new run"))

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `state` (by either engine)."""
        saved, now = ckpt["config"], self.cfg.to_dict()
        diff = [k for k in RESUME_MUST_MATCH if saved.get(k) != now[k]]
        if diff:
            raise ConfigError(
                f"--resume with a config that differs from the checkpoint's in {diff}; "
                "resume with the same recipe and flags (epochs, lr and device may change)"
            )
        self.run.learner.load_state_dict(ckpt["learner"])
        for opt, state in zip(self.run.optimizers, ckpt["optimizers"], strict=True):
            load_optimizer_state(opt, state)
        # The CPU generator's state, whatever device the checkpoint was mapped to.
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        self.history = ckpt["history"]
        self.elapsed = ckpt["elapsed"]
        self.start_epoch = ckpt["epoch"] + 1
        if "partial" in ckpt:
            stats = ckpt["partial"]["stats"]  # a dict; a StepStats in checkpoints of earlier versions
            stats = (stats if isinstance(stats, StepStats) else StepStats.from_dict(stats)).to(self.run.device)
            self.resume_point = EpochStart(ckpt["partial"]["step"], ckpt["partial"]["seconds"], stats)
        self.engine.start_at(self.start_epoch * len(self.run.train_loader) + self.resume_point.step)

    def _write_metrics(self) -> None:
        write_text(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        keys = list(self.history[0]) if self.history else []
        rows = [",".join(keys)] + [",".join(_csv_cell(h[k]) for k in keys) for h in self.history]
        write_text(self.out / "metrics.csv", "\n".join(rows) + "\n")

    def begin_epoch(self, epoch: int, first: int = 0) -> float:
        """Set the epoch's learning rate and data order (from batch `first` on); returns the learning rate."""
        run = self.run
        lr = epoch_lr(self.cfg, epoch)
        _set_lr(run.optimizers, lr)
        run.train_loader.set_epoch(epoch, first)
        run.learner.train()
        return lr

    def progress_bar(self, iterable: Any, epoch: int, first: int = 0) -> tqdm:
        return tqdm(
            iterable,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            initial=first,
            total=len(self.run.train_loader),
            disable=not (self.progress and self.is_main),
            leave=False,
            dynamic_ncols=True,
        )

    def batches(self, loader: Loader, count: int | None) -> Iterable[tuple[torch.Tensor | None, torch.Tensor | None]]:
        """The loader's batches where this process reads data; elsewhere `count` placeholders (None: endless),
        their carries coming from the previous pipeline position."""
        if self.engine.transport.reads_data:
            return loader
        return itertools.repeat((None, None)) if count is None else itertools.repeat((None, None), count)

    def train_epoch(self, epoch: int, at: EpochStart) -> dict[str, Any]:
        cfg, run, engine = self.cfg, self.run, self.engine
        lr = self.begin_epoch(epoch, at.step)
        steps = len(run.train_loader)
        engine.begin_epoch(steps - at.step, carried=at.stats)
        start = time.perf_counter() - at.seconds
        count = None if engine.transport.asynchronous else steps - at.step
        bar = self.progress_bar(self.batches(run.train_loader, count), epoch, at.step)
        for step, (x, y) in enumerate(bar, start=at.step + 1):
            if not engine.train_step(x, y):
                break  # an asynchronous epoch has ended
            if self.pending or step % cfg.log_every == 0 or step == steps:
                # One host sync per `log_every` steps (and after a checkpoint): the running mean loss of each stage.
                running = (engine.stats.loss / max(engine.stats.steps, 1)).tolist()
                _check_finite(running, epoch, step, self.checkpoint_path)
                self.commit_pending()
                self.show_progress(bar, step, running)
                if self.tensorboard:
                    self.tensorboard.step(epoch, step, engine.stats, time.perf_counter() - start)
            self.checkpoint_within(epoch, step, steps, start)
        total = engine.end_epoch()
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        return self.epoch_record(epoch, lr, total, time.perf_counter() - start)

    def show_progress(self, bar: tqdm, step: int, running: list[float]) -> None:
        """Show the running mean loss of each stage on the progress bar."""
        bar.set_postfix_str(" ".join(f"{v:.3f}" for v in running), refresh=False)

    def evaluate(self) -> Accuracy:
        """(final accuracy, per-stage accuracy, mean final CE) on the test set."""
        loader = self.run.test_loader
        return self.engine.evaluate(self.batches(loader, len(loader)), len(loader))

    def epoch_record(self, epoch: int, lr: float, total: StepStats, seconds: float) -> dict[str, Any]:
        """Evaluate, and the epoch's metrics row from the training statistics `total`."""
        test_acc, stage_acc, test_loss = self.evaluate()
        train_acc = (total.correct.float() / max(total.seen, 1)).tolist()
        return {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": [round(v / max(total.steps, 1), 6) for v in total.loss.tolist()],
            "train_acc": [a if h else None for a, h in zip(train_acc, total.has_logits, strict=True)],
            "test_acc": test_acc,
            "test_loss": test_loss,
            "stage_acc": stage_acc,
            "train_seconds": seconds,
        }

    def checkpoint_within(self, epoch: int, step: int, steps: int, start: float) -> None:
        """Every `checkpoint_every` steps before the epoch's last (whose checkpoint `fit` writes)."""
        every = self.cfg.checkpoint_every
        if every and step % every == 0 and step < steps:
            self.save(epoch, step, time.perf_counter() - start)

    def save(self, epoch: int, step: int = 0, seconds: float = 0.0) -> None:
        """Checkpoint the end of `epoch`, or its first `step` steps (atomically: a crash keeps the previous one)."""
        at = EpochStart(step, seconds, self.engine.epoch_stats()) if step else None
        state = self.state(epoch, at)
        refuse_non_finite(state, epoch, step, self.checkpoint_path)
        # Within an epoch the next step verifies the weights. At an epoch's end the next step is in the next
        # epoch or never, so only the check above stands (an evaluation's non-finite loss can be an eval-mode
        # overflow in a sound network, e.g. batch-norm statistics after a handful of steps, so it stops nothing).
        if step:
            save_checkpoint(self.pending_path, state)
            self.pending = True
        else:
            save_checkpoint(self.checkpoint_path, state)

    def commit_pending(self) -> None:
        """Make the verified checkpoint taken within the epoch the run's `last.pt`."""
        if self.pending:
            replace_file(self.pending_path, self.checkpoint_path)
            self.pending = False

    def fit(self, stop_after: int | None = None) -> dict[str, Any] | None:
        """Train to `cfg.epochs` (or only up to epoch `stop_after`, to be continued with --resume).

        Returns the summary (None in processes that are not `is_main`). The metrics files are rewritten only
        once the checkpoint of the epochs they list is on disk, so they never run ahead of `last.pt`.
        """
        check_stop_after(stop_after)
        main, run = self.is_main, self.run
        last = self.cfg.epochs if stop_after is None else min(self.cfg.epochs, stop_after)
        if main:
            self.tensorboard = tensorboard_writer(
                self.cfg.log.tensorboard,
                self.out,
                len(run.train_loader),
                run.device,
                self.start_epoch,
                self.resume_point.step,
            )
            self.out.mkdir(parents=True, exist_ok=True)
            write_text(self.out / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            if self.history:  # resumed: metrics written before a crash may be missing the checkpoint's last epoch
                self._write_metrics()
            x, y = next(iter(run.train_loader))
            held = held_for_backward(run.learner, x, y)
            flops = inference_flops(run.learner, x[:2])
        for epoch in range(self.start_epoch, last):
            at, self.resume_point = self.resume_point, EpochStart()
            t0 = time.perf_counter() - at.seconds
            record = self.train_epoch(epoch, at)
            self.elapsed += time.perf_counter() - t0
            self.history.append(record)
            self.save(epoch)
            if main:
                self._write_metrics()
            if self.tensorboard:
                self.tensorboard.epoch(record)
            if self.progress and main:
                tqdm.write(_epoch_line(record))
        if not main:
            return None
        if self.tensorboard:
            self.tensorboard.close()
        summary = self.summary(held, flops)
        write_json(self.out / "summary.json", summary)
        return summary

    def summary(self, held: list[int], flops: int) -> dict[str, Any]:
        learner, last = self.run.learner, self.history[-1] if self.history else {}
        return {
            "method": self.cfg.method,
            "arch": self.cfg.arch,
            "dataset": self.cfg.dataset,
            "K": self.cfg.K,
            "stages": learner.num_stages,
            "stem_is_module": learner.net.stem_is_module,
            "cuts": learner.net.cuts,
            "epochs": len(self.history),
            "test_acc": last.get("test_acc"),
            "best_acc": max((h["test_acc"] for h in self.history), default=None),
            "stage_acc": last.get("stage_acc"),
            "seconds": self.elapsed,
            "seconds_per_epoch": sum(h["train_seconds"] for h in self.history) / max(len(self.history), 1),
            "held_bytes": max(held),
            "held_bytes_per_stage": held,
            "params": sum(p.numel() for p in learner.parameters()),
            "inference_params": learner.inference_parameters(),
            "inference_flops": flops,  # per image
            "device": str(self.run.device),
            "torch": torch.__version__,
            "git_sha": code_version()[0],  # of the code that trained it (a resumed run: that finished it)
            "seed": self.cfg.seed,
        }


def _csv_cell(v: Any) -> str:
    if isinstance(v, list):
        return '"' + " ".join("" if a is None else f"{a:.6g}" for a in v) + '"'
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _epoch_line(r: dict[str, Any]) -> str:
    stages = " ".join("-" if a is None else f"{a:.3f}" for a in r["stage_acc"])
    return (
        f"epoch {r['epoch']}: test_acc {r['test_acc']:.4f}  stage_acc [{stages}]  "
        f"lr {r['lr']:.4f}  {r['train_seconds']:.1f}s"
    )
