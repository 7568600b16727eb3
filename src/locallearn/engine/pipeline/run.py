"""`--engine pipeline`: each torchrun rank trains one group of stages, optionally with data-parallel replicas.

    torchrun --nproc-per-node 2 -m locallearn train --engine pipeline --config ... [--set pipeline.replicas=2]

Rank 0 of each replica reads the data; every rank builds the same learner from the same seed and trains only
its own stages. The Trainer drives epochs, evaluation (through the pipeline, counts summed over all ranks),
metrics and the summary, written by rank 0 alone. Checkpoints are per stage: at the end of each epoch (and
every `checkpoint_every` steps) each stage's owner writes its modules and optimizer to
`stages/epoch_<e>[_step_<s>]/stage_<k>.pt` (atomically, in parallel, nothing gathered), and once every file
is durable rank 0 commits the checkpoint by replacing `last.pt`, a small record naming the files and their
checksums. A crash at any moment thus keeps the last committed step whole; `--resume` restarts every rank
from it (each reads the stages it owns now, so the rank count may change on a shared filesystem), and
`locallearn eval` or the local engine read it like their own.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterable
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
from ..run_dir import prepare_run_dir
from ..trainer import EpochStart, Trainer, _check_finite, build_run, refuse_non_finite, use_channels_last
from .comm import peer_failure
from .engine import PipelineEngine
from .groups import Launch, launch, make_groups
from .monitor import Monitor
from .plan import PipelinePlan, trace_stages
from .topology import make_topology, positions_of

ANOTHER_RANK = "another rank"


def run_pipeline(
    cfg: RunConfig, out: str | Path, *, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any] | None:
    """Train `cfg` with this process as one rank of the pipeline; the summary on rank 0, None elsewhere."""
    me = launch(cfg.pipeline, cfg.device)
    store = dist.PrefixStore(
        f"locallearn/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", dist.distributed_c10d._get_default_store()
    )
    monitor = Monitor(store, me.rank, me.world, timeout=cfg.pipeline.heartbeat_timeout)
    monitor.start()
    try:
        if me.rank == 0:
            prepare_run_dir(Path(out), resume=resume)
        trainer = PipelineTrainer(cfg, out, launch=me, monitor=monitor, progress=progress)
        if resume:
            trainer.resume()
        summary = trainer.fit(stop_after=stop_after)
    except BaseException as e:
        mine = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        first = monitor.report(mine)
        if first.endswith(mine) or isinstance(e, KeyboardInterrupt):
            monitor.linger()  # let the others read the root cause before this process (maybe the store) goes
            raise  # this rank is the root cause: its own error, as the local engine would show it
        raise TrainingError(f"the pipeline stopped because {first} (on rank {me.rank}: {mine})") from e
    monitor.stop()
    with peer_failure(ANOTHER_RANK):
        dist.barrier(group=trainer.groups.control)  # nobody leaves, taking the store with it, while others finish
    dist.destroy_process_group()
    return summary


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
) -> PipelineEngine:
    """This rank's engine: its stage group (FLOP-balanced over the positions), process groups and traffic plan.

    A collective: every rank calls it, in the same order, with the same learner and options.
    """
    if batch_size < options.replicas:
        raise ConfigError(f"batch_size {batch_size} is smaller than pipeline.replicas={options.replicas}")
    flops = [record.flops for record in learner.net.records]
    topo = make_topology(launch.rank, launch.world, options.replicas, flops)
    plan = PipelinePlan(learner, topo, trace_stages(learner, launch.device, amp))
    plan.check(options)
    share = topo.replicas
    return PipelineEngine(
        learner,
        optimizers,
        plan=plan,
        groups=make_groups(topo),
        launch=launch,
        options=options,
        capacity=(math.ceil(batch_size / share), math.ceil(eval_batch_size / share)),
        channels_last=channels_last,
        amp=amp,
        scaler=scaler,
    )


class PipelineTrainer(Trainer):
    engine: PipelineEngine

    def __init__(
        self, cfg: RunConfig, out_dir: str | Path, *, launch: Launch, monitor: Monitor, progress: bool = True
    ) -> None:
        self.launch, self.monitor = launch, monitor
        # Every rank builds the whole learner from the same seed (so each stage starts as under the local
        # engine); the data loaders of replica r deliver only its share of each global batch, so a replica
        # decodes no image that another one trains on.
        replicas = cfg.pipeline.replicas
        share = (launch.rank // positions_of(launch.world, replicas), replicas)  # Topology's replica numbering
        run = build_run(cfg, launch.device, distributed=False, share=share)
        self.times = torch.zeros(launch.world, 2, dtype=torch.float64)  # busy and idle seconds of every rank
        super().__init__(cfg, out_dir, progress=progress, run=run)
        self.topo, self.groups = self.engine.topo, self.engine.groups

    def make_engine(self, amp: str, scaler: torch.amp.GradScaler | None) -> PipelineEngine:
        cfg, run = self.cfg, self.run
        return build_pipeline_engine(
            run.learner,
            run.optimizers,
            launch=self.launch,
            options=cfg.pipeline,
            batch_size=cfg.batch_size,
            eval_batch_size=cfg.eval_batch_size,
            channels_last=use_channels_last(cfg, run.device),
            amp=amp,
            scaler=scaler,
        )

    @property
    def is_main(self) -> bool:
        return self.launch.rank == 0

    def _batches(self, loader: Any, count: int | None) -> Any:
        """The loader's batches at position 0; placeholders elsewhere (their carries come from the previous rank)."""
        if self.topo.position == 0:
            return loader
        return itertools.repeat((None, None)) if count is None else itertools.repeat((None, None), count)

    # ----------------------------------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int, at: EpochStart) -> dict[str, Any]:
        cfg, engine = self.cfg, self.engine
        lr = self.begin_epoch(epoch, at.step)
        steps = len(self.run.train_loader)
        engine.begin_epoch(steps - at.step, carried=at.stats)
        start = time.perf_counter() - at.seconds
        count = None if engine.asynchronous else steps - at.step
        bar = self.progress_bar(self._batches(self.run.train_loader, count), epoch, at.step)
        for step, (x, y) in enumerate(bar, start=at.step + 1):
            if not engine.train_step(x, y):
                break
            if step % cfg.log_every == 0 or step == steps:
                self._progress(epoch, step, bar)
            self.checkpoint_within(epoch, step, steps, start)
        total, times = engine.end_epoch()
        if self.run.device.type == "cuda":
            torch.cuda.synchronize(self.run.device)
        seconds = time.perf_counter() - start
        mine = torch.zeros_like(self.times)
        mine[self.launch.rank] = torch.tensor(times, dtype=torch.float64)
        with peer_failure(ANOTHER_RANK):
            dist.all_reduce(mine, group=self.groups.control)
        self.times += mine
        record = self.epoch_record(epoch, lr, total, seconds)
        record["stage_busy"] = self._busy_fractions(mine)
        return record

    def _progress(self, epoch: int, step: int, bar: Any) -> None:
        """Check this rank's losses, publish them, and (rank 0) show every stage's loss and busy fraction."""
        engine = self.engine
        running = engine.stats.loss / max(engine.stats.steps, 1)
        _check_finite(running, epoch, step, self.checkpoint_path)
        busy, idle = engine.clock.peek()
        own = {str(k): running[k].item() for k in self.topo.stages}
        self.monitor.publish(step=step, loss=own, busy=busy / max(busy + idle, 1e-9))
        if self.is_main:
            peers = self.monitor.peers()
            heads = [peers.get(self.topo.rank_of(p, 0), {}) for p in range(self.topo.positions)]
            losses = [f"{v:.3f}" for h in heads for v in h.get("loss", {}).values()]
            busy_text = " ".join(f"{h['busy']:.0%}" if "busy" in h else "-" for h in heads)
            bar.set_postfix_str(f"{' '.join(losses)} | busy {busy_text}", refresh=False)

    def _busy_fractions(self, times: torch.Tensor) -> list[float]:
        """Busy fraction of each position (mean over its replicas)."""
        fractions = times[:, 0] / times.sum(1).clamp(min=1e-9)
        return [round(fractions[self.topo.replica_ranks(p)].mean().item(), 4) for p in range(self.topo.positions)]

    def evaluate(self) -> tuple[float, list[float | None], float]:
        engine, loader = self.engine, self.run.test_loader
        self.run.learner.eval()
        engine.begin_eval(len(loader))
        for x, y in self._batches(loader, len(loader)):
            engine.eval_step(x, y)
        result = engine.end_eval()
        self.run.learner.train()
        return result

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
        parts: list[Any] | None = [None] * self.launch.world if self.is_main else None
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
        self.engine.start_at(self.start_epoch * len(self.run.train_loader) + self.resume_point.step)

    # ----------------------------------------------------------------------------------------- summary
    def pipeline_stats(self) -> dict[str, Any]:
        topo, busy, idle = self.topo, self.times[:, 0], self.times[:, 1]
        return {
            "world_size": self.launch.world,
            "backend": self.launch.backend,
            "mode": self.cfg.pipeline.mode,
            "depth": self.cfg.pipeline.depth,
            "replicas": topo.replicas,
            "stage_groups": [list(g) for g in topo.groups],
            "busy_seconds": [round(v, 3) for v in busy.tolist()],
            "idle_seconds": [round(v, 3) for v in idle.tolist()],
            "stage_busy": self._busy_fractions(self.times),
        }

    def summary(self, held: list[int], flops: int) -> dict[str, Any]:
        """The local engine's summary, plus `engine` and the `pipeline` layout and busy/idle times."""
        return {**super().summary(held, flops), "engine": "pipeline", "pipeline": self.pipeline_stats()}
