"""Profile runs next to E2E on the same batch: the rows `locallearn profile` prints and
benchmarks/sweep.py records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch

from ..config import RunConfig
from ..engine.traced import TracingEngine
from ..engine.trainer import resolve_device
from ..methods import MethodOptions
from .aux_warning import aux_warning
from .probe import InputSpec, build_engine, synthetic_batch
from .step import StepProfile, profile_step


def e2e_config(cfg: RunConfig) -> RunConfig:
    """The E2E reference of `cfg`: same backbone, batch, optimizer and device, one stage, no recomputation."""
    return dataclasses.replace(
        cfg, method="e2e", K=1, split=None, method_options=MethodOptions(), activation_checkpoint="none"
    )


def is_reference(cfg: RunConfig) -> bool:
    """Whether `cfg` is its own E2E reference (plain E2E, no activation checkpointing)."""
    return cfg.spec.is_e2e and cfg.activation_checkpoint == "none"


def measure(cfg: RunConfig, spec: InputSpec, warmup: int = 1) -> StepProfile:
    """Profile one steady-state step of `cfg` on a synthetic batch (eager: compile is off while tracing)."""
    device = resolve_device(cfg.device)
    engine = build_engine(dataclasses.replace(cfg, compile=False), spec, device, TracingEngine)
    x, y = synthetic_batch(cfg, spec, device)
    profile = profile_step(engine, x, y, method=cfg.method, K=cfg.K, warmup=warmup)
    # Free this model before the next one is built, so CUDA peaks never include another run's tensors.
    del engine, x, y
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return profile


def comparison_row(cfg: RunConfig, profile: StepProfile, e2e: StepProfile) -> dict[str, Any]:
    """One method's profile with its E2E reference, ratio (peak / E2E peak), theoretical FLOPs overhead, and the
    warning when an aux net costs more than its stage."""
    stats = profile.to_dict()
    return {
        "method": cfg.method,
        "arch": cfg.arch,
        "dataset": cfg.dataset,
        "split": cfg.split if profile.K > 1 else None,
        "activation_checkpoint": cfg.activation_checkpoint,
        **stats,
        "aux_warning": aux_warning(stats["stages"]),
        "e2e_peak_bytes": e2e.peak_bytes,
        "e2e_held_bytes": e2e.held_bytes,
        "e2e_static_bytes": e2e.static_bytes,
        "e2e_train_flops": e2e.train_flops,
        "ratio": profile.peak_bytes / e2e.peak_bytes,
        "flops_overhead": profile.train_flops / e2e.train_flops - 1,
    }


def _reference_key(cfg: RunConfig, spec: InputSpec) -> tuple:
    """What the E2E reference's memory depends on; runs sharing it share one measurement."""
    return (cfg.arch, cfg.batch_size, cfg.momentum, cfg.amp, cfg.channels_last, cfg.device, spec)


def compare_runs(runs: Iterable[tuple[RunConfig, InputSpec]], warmup: int = 1) -> list[dict[str, Any]]:
    """Profile every run and its E2E reference (measured once per backbone/batch/device)."""
    references: dict[tuple, StepProfile] = {}
    rows = []
    for cfg, spec in runs:
        key = _reference_key(cfg, spec)
        if key not in references:
            references[key] = measure(e2e_config(cfg), spec, warmup)
        e2e = references[key]
        profile = e2e if is_reference(cfg) else measure(cfg, spec, warmup)
        rows.append(comparison_row(cfg, profile, e2e))
    return rows
