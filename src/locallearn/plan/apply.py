"""What `train` asks of the planner: the input a run will see, `--memory-budget` and the pre-flight check."""

from __future__ import annotations

import dataclasses
import shlex
import sys

from ..config import RunConfig
from ..data.build import IMAGEFOLDER_DATASETS
from ..engine.trainer import resolve_device
from ..errors import ConfigError
from ..profile.probe import InputSpec, input_spec
from ..profile.tables import format_bytes
from ..split import split_request
from .budget import available_bytes, resolve_budget
from .predict import MemoryPredictor
from .search import smallest_k

IMAGENET_CLASSES = 1000


def run_spec(cfg: RunConfig, image_size: int | None = None, num_classes: int | None = None) -> InputSpec:
    """The input shape and class count `cfg` trains on (ImageNet: the crop size and its 1000 classes)."""
    if cfg.dataset in IMAGEFOLDER_DATASETS:
        image_size = image_size or cfg.image_size
        num_classes = num_classes or IMAGENET_CLASSES
    return input_spec(cfg.dataset, image_size, num_classes)


def plan_command(cfg: RunConfig, budget: str, *, k: int | None = None) -> str:
    """The `locallearn plan` command line for `cfg`'s backbone, method, input and batch."""
    args = ["locallearn", "plan", "--arch", cfg.arch, "--method", cfg.method, "--dataset", cfg.dataset]
    args += ["--batch-size", str(cfg.batch_size)]
    if cfg.dataset in IMAGEFOLDER_DATASETS:
        args += ["--image-size", str(cfg.image_size)]
    if k is not None:
        args += ["--K", str(k)]
    return shlex.join([*args, "--budget", budget])


def _budget_flag(n: int) -> str:
    return f"{n / 2**30:.1f}GiB"


def fit_to_budget(cfg: RunConfig, budget: str) -> RunConfig:
    """`train --memory-budget`: cfg with the smallest K and its memory-balanced split that fit `budget`."""
    device = resolve_device(cfg.device)
    limit = resolve_budget(budget, device)
    plan = smallest_k(MemoryPredictor(cfg, run_spec(cfg)), limit, cfg.batch_size, suggest=False)
    if not plan.fits:
        smallest = f"{format_bytes(plan.choice.prediction.peak_bytes)} at K = {plan.choice.K}" if plan.choice else "-"
        raise ConfigError(
            f"nothing fits the memory budget {format_bytes(limit)} at batch {cfg.batch_size} (smallest predicted "
            f"peak {smallest}); lower --batch-size, or see `{plan_command(cfg, _budget_flag(limit))}`"
        )
    choice = plan.choice
    print(
        f"memory budget {format_bytes(limit)}: K = {choice.K}, split {choice.split}, predicted peak "
        f"{format_bytes(choice.prediction.peak_bytes)}",
        file=sys.stderr,
    )
    return dataclasses.replace(cfg, K=choice.K, split=choice.split, cuts=None)


def preflight(cfg: RunConfig) -> None:
    """Refuse, in one line, a run whose predicted peak exceeds the memory its device has available."""
    device = resolve_device(cfg.device)
    free = available_bytes(device)
    predictor = MemoryPredictor(cfg, run_spec(cfg))
    peak = predictor.predict(cfg.K, split_request(cfg.split, cfg.cuts), cfg.batch_size).peak_bytes
    if peak <= free:
        return
    budget = _budget_flag(free)
    plan = smallest_k(predictor, free, cfg.batch_size, suggest=False)
    if plan.fits:
        advice = f"`{plan_command(cfg, budget)}` fits it at K = {plan.choice.K} (--memory-budget auto applies it)"
    else:
        advice = f"`{plan_command(cfg, budget, k=cfg.K)}` gives the largest batch that fits"
    raise ConfigError(
        f"predicted peak {format_bytes(peak)} exceeds the {format_bytes(free)} available on {device}; {advice}; "
        "or pass --skip-memory-check to train anyway"
    )


def prepare(cfg: RunConfig, memory_budget: str | None, check: bool) -> RunConfig:
    """Before `train` allocates anything heavy: apply `--memory-budget`, then the pre-flight check."""
    if memory_budget is not None:
        cfg = fit_to_budget(cfg, memory_budget)
    if check and cfg.engine == "local":  # a pipeline rank holds only its stage group: one device's sum overstates it
        preflight(cfg)
    return cfg
