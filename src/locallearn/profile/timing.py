"""Wall time of training steps: throughput of one run, and the overhead of local methods over E2E.

Warm-up steps are never timed (first-call allocations, cuDNN autotuning, compilation). On CUDA each step is
bracketed by CUDA events recorded on the stream, so the timed loop has no host sync until the end; on CPU
the kernels run synchronously, so `perf_counter` around a step is its wall time.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..engine.local import LocalEngine
from ..engine.trainer import resolve_device
from .probe import InputSpec, build_engine, synthetic_batch


@dataclass
class Timing:
    step_seconds: list[float]  # every timed step
    batch_size: int

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.median_seconds


def time_steps(engine: LocalEngine, x: torch.Tensor, y: torch.Tensor, steps: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `steps` training steps on (x, y), after `warmup` untimed ones."""
    for _ in range(warmup):
        engine.train_step(x, y)
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        events[0].record()
        for i in range(steps):
            engine.train_step(x, y)
            events[i + 1].record()
        torch.cuda.synchronize(engine.device)
        return [a.elapsed_time(b) / 1000 for a, b in itertools.pairwise(events)]
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        engine.train_step(x, y)
        times.append(time.perf_counter() - start)
    return times


def throughput(cfg: RunConfig, spec: InputSpec, steps: int = 5, warmup: int = 2) -> Timing:
    """Training throughput of `cfg` on a synthetic batch of its batch size."""
    device = resolve_device(cfg.device)
    engine = build_engine(cfg, spec, device)
    x, y = synthetic_batch(cfg, spec, device)
    return Timing(time_steps(engine, x, y, steps, warmup), cfg.batch_size)


def interleaved_timings(
    cfgs: Sequence[RunConfig], spec: InputSpec, *, steps: int = 2, rounds: int = 3, warmup: int = 1
) -> list[Timing]:
    """Time every config on the same batch in alternating rounds, so drift in machine load hits all alike.

    All engines are built first (weights are small; activations are freed after each step), each is warmed
    up, then every round times `steps` steps of each, in an order rotated by one per round.
    """
    device = resolve_device(cfgs[0].device)
    engines = [build_engine(cfg, spec, device) for cfg in cfgs]
    x, y = synthetic_batch(cfgs[0], spec, device)
    for engine in engines:
        time_steps(engine, x, y, steps=0, warmup=warmup)
    times: list[list[float]] = [[] for _ in cfgs]
    for r in range(rounds):
        for i in (r + j for j in range(len(cfgs))):
            times[i % len(cfgs)] += time_steps(engines[i % len(cfgs)], x, y, steps, warmup=0)
    return [Timing(t, cfgs[0].batch_size) for t in times]
