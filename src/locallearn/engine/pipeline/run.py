"""Training under torchrun: the stages spread over pipeline positions, each position over data-parallel replicas.

    torchrun --nproc-per-node 2 -m locallearn train --config ...                    # 2 replicas, every stage
    torchrun --nproc-per-node 2 -m locallearn train --engine pipeline --config ... [--set pipeline.replicas=2]

The layout comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): without `--engine pipeline` every
process is a data-parallel replica holding every stage (one position); with it the world is `positions x
pipeline.replicas`. Every rank builds the same learner from the same seed and trains only its own stages with
the one engine of `engine/step.py`; its transport (`transport.py`) moves carries between positions and
averages gradients between replicas. Rank 0 alone writes the run directory's files. Checkpoints are per stage:
at the end of each epoch (and every `checkpoint_every` steps) each stage's owner writes its modules and
optimizer to `stages/epoch_<e>[_step_<s>]/stage_<k>.pt` (atomically, in parallel, nothing gathered), and once
every file is durable rank 0 commits the checkpoint by replacing `last.pt`, a small record naming the files and
their checksums. A crash at any moment thus keeps the last committed step whole; `--resume` restarts every rank
from it (each reads the stages it owns now, so the rank count may change on a shared filesystem), and
`locallearn eval` or a single process read it like their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ...config import PipelineOptions, RunConfig
from ...errors import ConfigError, TrainingError
from ...methods import LocalLearner
from ..checkpoint import (
    commit_record,
    load_checkpoint,
    load_stage,
    remove_stale_stages,
    save_checkpoint,
    save_stage,
    stage_file,
    stage_folder,
)
from ..stats import StepStats
from ..step import Engine
from ..trainer import EpochStart, Trainer, build_run, refuse_non_finite, use_channels_last
from .comm import peer_failure
from .groups import Launch, launch, make_groups, under_torchrun
from .monitor import Monitor
from .plan import PipelinePlan, trace_stages
from .topology import make_topology, positions_of
from .transport import PipelineTransport

ANOTHER_RANK = "another rank"


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun ranks, and the monitor that stops them all when one fails."""

    launch: Launch
    monitor: Monitor
    options: PipelineOptions  # replicas: the data-parallel replicas of every position
    control: dist.ProcessGroup  # gloo over every rank, for the last barrier


def layout_options(cfg: RunConfig, world: int) -> PipelineOptions:
    """The pipeline settings of this launch: without `--engine pipeline` every rank is a replica of every stage."""
    return cfg.pipeline if cfg.engine == "pipeline" else dataclasses.replace(cfg.pipeline, replicas=world)


@contextlib.contextmanager
def launched(cfg: RunConfig) -> Iterator[World | None]:
    """torch.distributed and the failure monitor for the body, under torchrun (None in a single process).

    Any rank's error stops every rank, each saying which rank failed first and why; on success every rank
    waits for the others before the process group (and perhaps the rendezvous store) goes away.
    """
    if cfg.engine != "pipeline" and not under_torchrun():
        yield None
        return
    me = launch(cfg.pipeline, cfg.device)
    store = dist.PrefixStore(
        f"locallearn/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", dist.distributed_c10d._get_default_store()
    )
    monitor = Monitor(store, me.rank, me.world, timeout=cfg.pipeline.heartbeat_timeout)
    world = World(me, monitor, layout_options(cfg, me.world), dist.new_group(backend="gloo"))
    monitor.start()
    try:
        yield world
    except BaseException as e:
        mine = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        first = monitor.report(mine)
        if first.endswith(mine) or isinstance(e, KeyboardInterrupt):
            monitor.linger()  # let the others read the root cause before this process (maybe the store) goes
            raise  # this rank is the root cause: its own error, as a single process would show it
        raise TrainingError(f"training stopped because {first} (on rank {me.rank}: {mine})") from e
    monitor.stop()
    with peer_failure(ANOTHER_RANK):
        dist.barrier(group=world.control)  # nobody leaves, taking the store with it, while others finish
    dist.destroy_process_group()


def stage_state_dict(learner: LocalLearner, stages: Iterable[int]) -> dict[str, torch.Tensor]:
    """The entries of `learner.state_dict()` that belong to `stages`: their units and the modules they own."""
    prefixes = tuple(p for k in stages for p in (f"net.stages.{k}.", f"owned.{k}."))
    return {key: v for key, v in learner.state_dict().items() if key.startswith(prefixes)}


def _on_host(obj: Any) -> Any:
    """`obj` with every tensor moved to the CPU (to pickle it across ranks)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _on_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_host(v) for v in obj)
    return obj


def build_pipeline_engine(
    learner: LocalLearner,
    optimizers: list[torch.optim.Optimizer],
    *,
    launch: Launch,
    options: PipelineOptions,
    batch_size: int,
    eval_batch_size: int,
    channels_last: bool = False,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
) -> Engine:
    """This rank's engine: its stage group (FLOP-balanced over the positions), process groups and traffic plan.

    A collective: every rank calls it, in the same order, with the same learner and options.
    """
    if batch_size < options.replicas:
        raise ConfigError(f"batch_size {batch_size} is smaller than the {options.replicas} data-parallel replicas")
    flops = [record.flops for record in learner.net.records]
    topo = make_topology(launch.rank, launch.world, options.replicas, flops)
    plan = PipelinePlan(learner, topo, trace_stages(learner, launch.device, amp))
    plan.check(options)
    share = topo.replicas
    transport = PipelineTransport(
        learner,
        plan=plan,
        groups=make_groups(topo),
        launch=launch,
        options=options,
        capacity=(math.ceil(batch_size / share), math.ceil(eval_batch_size / share)),
        channels_last=channels_last,
    )
    return Engine(learner, optimizers, amp=amp, scaler=scaler, transport=transport)


class DistributedTrainer(Trainer):
    """The Trainer on one torchrun rank: its epoch loop and evaluation, with per-stage checkpoints that every
    owner writes and rank 0 commits, progress gathered through the monitor, and busy/idle times per rank."""

    def __init__(self, cfg: RunConfig, out_dir: str | Path, *, world: World, progress: bool = True) -> None:
        self.world = world
        me, replicas = world.launch, world.options.replicas
        # Every rank builds the whole learner from the same seed (so each stage starts as in one process); the
        # data loaders of replica r deliver only its share of each global batch, so a replica decodes no image
        # that another one trains on.
        share = (me.rank // positions_of(me.world, replicas), replicas)  # Topology's replica numbering
        run = build_run(cfg, me.device, share=share)
        self.times = torch.zeros(me.world, 2, dtype=torch.float64)  # busy and idle seconds of every rank
        super().__init__(cfg, out_dir, progress=progress, run=run)
        self.transport: PipelineTransport = self.engine.transport
        self.topo, self.groups = self.transport.topo, self.transport.groups

    def make_engine(self, amp: str, scaler: torch.amp.GradScaler | None) -> Engine:
        cfg, run = self.cfg, self.run
        return build_pipeline_engine(
            run.learner,
            run.optimizers,
            launch=self.world.launch,
            options=self.world.options,
            batch_size=cfg.batch_size,
            eval_batch_size=cfg.eval_batch_size,
            channels_last=use_channels_last(cfg, run.device),
            amp=amp,
            scaler=scaler,
        )

    def show_progress(self, bar: Any, step: int, running: list[float]) -> None:
        """Publish this rank's losses; rank 0 shows every stage's loss and every position's busy fraction."""
        busy, idle = self.transport.clock.peek()
        own = {str(k): running[k] for k in self.topo.stages}
        self.world.monitor.publish(step=step, loss=own, busy=busy / max(busy + idle, 1e-9))
        if self.is_main:
            peers = self.world.monitor.peers()
            heads = [peers.get(self.topo.rank_of(p, 0), {}) for p in range(self.topo.positions)]
            losses = [f"{v:.3f}" for h in heads for v in h.get("loss", {}).values()]
            busy_text = " ".join(f"{h['busy']:.0%}" if "busy" in h else "-" for h in heads)
            bar.set_postfix_str(f"{' '.join(losses)} | busy {busy_text}", refresh=False)

    def epoch_record(self, epoch: int, lr: float, total: StepStats, seconds: float) -> dict[str, Any]:
        """The Trainer's row, plus each position's busy fraction over the epoch."""
        mine = torch.zeros_like(self.times)
        mine[self.world.launch.rank] = torch.tensor(self.transport.times, dtype=torch.float64)
        with peer_failure(ANOTHER_RANK):
            dist.all_reduce(mine, group=self.groups.control)
        self.times += mine
        return {**super().epoch_record(epoch, lr, total, seconds), "stage_busy": self._busy_fractions(mine)}

    def _busy_fractions(self, times: torch.Tensor) -> list[float]:
        """Busy fraction of each position (mean over its replicas)."""
        fractions = times[:, 0] / times.sum(1).clamp(min=1e-9)
        return [round(fractions[self.topo.replica_ranks(p)].mean().item(), 4) for p in range(self.topo.positions)]

    # ----------------------------------------------------------------------------------------- checkpoints
    def save(self, epoch: int, step: int = 0, seconds: float = 0.0) -> None:
        """Each owner (replica 0) writes its stages' files; then rank 0 commits them in `last.pt`.

        A collective: every rank calls it after the same step, the end of `epoch` or its first `step` steps
        (sync mode: each rank's stages are then at that step, and nothing is in flight between the ranks).
        """
        learner, digests, folder = self.run.learner, {}, stage_folder(epoch, step)
        if self.topo.replica == 0:
            states = {
                k: (_on_host(stage_state_dict(learner, [k])), _on_host(self.run.optimizers[k].state_dict()))
                for k in self.topo.stages
            }
            # Nothing is written while any of this rank's stages is non-finite; its error stops every rank
            # before rank 0 commits, so `last.pt` keeps naming the last good files.
            own = {"losses": self.engine.stats.loss, "stages": states}
            refuse_non_finite(own, epoch, step, self.checkpoint_path)
            for k, (tensors, optimizer) in states.items():
                digests[k] = save_stage(self.out, stage_file(epoch, k, step), k, tensors, optimizer)
        stats = self.engine.epoch_stats() if step else None  # a collective too: every rank's share
        parts: list[Any] | None = [None] * self.world.launch.world if self.is_main else None
        with peer_failure(ANOTHER_RANK):
            dist.gather_object(digests, parts, dst=0, group=self.groups.control)  # every stage file is durable
        if self.is_main:
            found = {k: digest for part in parts for k, digest in part.items()}
            state = self.state(epoch, EpochStart(step, seconds, stats.to(torch.device("cpu"))) if step else None)
            files = [(stage_file(epoch, k, step), found[k]) for k in range(len(found))]
            state = commit_record(state, files, set(stage_state_dict(learner, range(len(found)))))
            state["pipeline"] = self.pipeline_stats()
            save_checkpoint(self.checkpoint_path, state)  # the commit point
        with peer_failure(ANOTHER_RANK):
            dist.barrier(group=self.groups.control)  # the checkpoint is committed on every rank's return
        if self.topo.replica == 0:
            remove_stale_stages(self.out, folder, self.topo.stages)

    def resume(self) -> None:
        """Rank 0 reads the commit record and hands it to every rank; each rank reads its own stages' files."""
        missing = "drop --resume to start a new run"
        box = [load_checkpoint(self.checkpoint_path, "cpu", assemble=False, missing=missing) if self.is_main else None]
        with peer_failure(ANOTHER_RANK):
            dist.broadcast_object_list(box, src=0, group=self.groups.control)
        record, learner = box[0], self.run.learner
        if "stage_files" not in record:  # a local-engine checkpoint: already whole
            state = record
        else:  # stages this rank does not own keep their fresh state: they are never used here
            state = {
                **record,
                "learner": learner.state_dict(),
                "optimizers": [o.state_dict() for o in self.run.optimizers],
            }
            state["learner"].update(record["learner"])
            for k in self.topo.stages:
                tensors, optimizer = load_stage(self.out, record, k, self.run.device)
                state["learner"].update(tensors)
                state["optimizers"][k] = optimizer
        self.restore(state)

    # ----------------------------------------------------------------------------------------- summary
    def pipeline_stats(self) -> dict[str, Any]:
        topo, busy, idle = self.topo, self.times[:, 0], self.times[:, 1]
        return {
            "world_size": self.world.launch.world,
            "backend": self.world.launch.backend,
            "mode": self.cfg.pipeline.mode,
            "depth": self.cfg.pipeline.depth,
            "replicas": topo.replicas,
            "stage_groups": [list(g) for g in topo.groups],
            "busy_seconds": [round(v, 3) for v in busy.tolist()],
            "idle_seconds": [round(v, 3) for v in idle.tolist()],
            "stage_busy": self._busy_fractions(self.times),
        }

    def summary(self, held: list[int], flops: int) -> dict[str, Any]:
        """The single process's summary, plus `engine` and the `pipeline` layout and busy/idle times."""
        return {**super().summary(held, flops), "engine": self.cfg.engine, "pipeline": self.pipeline_stats()}
