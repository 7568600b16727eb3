"""Throughput of a 2-rank pipeline against the local engine on this CPU: ResNet-32, K = 2, memory-balanced split.

Both engines train the same learner (InfoPro* by default: `infopro`, split `balanced-memory`) on the same
synthetic CIFAR-shaped batches, one thread per process; the pipeline's two ranks talk over gloo. The local
engine's per-stage times (forward, local loss, backward and step of each stage) give the pipeline's ideal
bound, batch / max_k t_k: what two ranks could reach with perfect overlap and free communication. Each
rank's busy and idle seconds show where the pipeline falls short of it.

    python benchmarks/pipeline_throughput.py [--steps 12] [--batch-size 128] [--method infopro]

Writes benchmarks/results/pipeline_throughput_resnet32_k2_<hardware>_<yyyymm>.{json,csv,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _run import RESULTS
from locallearn.config import PipelineOptions, RunConfig, build_config
from locallearn.data.datasets import CIFAR_MEAN, CIFAR_STD
from locallearn.engine.local import LocalEngine
from locallearn.engine.pipeline.groups import launch
from locallearn.engine.pipeline.run import build_pipeline_engine
from locallearn.engine.trainer import build_model, build_optimizers
from locallearn.profile.results import result_stem, write_results
from locallearn.provenance import provenance

RANKS = 2


class TimedEngine(LocalEngine):
    """The local engine, timing each stage's forward, backward and optimizer step through its `stage_scope`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = [0.0] * self.learner.num_stages

    @contextlib.contextmanager
    def stage_scope(self, k, carry, batch) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.seconds[k] += time.perf_counter() - t0


def config(method: str, batch_size: int) -> RunConfig:
    flags = {"arch": "resnet32", "method": method, "K": 2, "split": "balanced-memory", "dataset": "cifar10"}
    return build_config(flags={**flags, "batch_size": batch_size, "lr": 0.1, "device": "cpu", "threads": 1})


def learner_and_optimizers(cfg: RunConfig):
    torch.manual_seed(cfg.seed)
    learner = build_model(cfg, (3, 32, 32), 10, mean=CIFAR_MEAN, std=CIFAR_STD, device=torch.device("cpu"))
    return learner, build_optimizers(learner, cfg)


def batches(batch_size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch_size, 3, 32, 32, generator=g), torch.randint(0, 10, (batch_size,), generator=g))] * count


def run_local(cfg: RunConfig, warmup: int, steps: int) -> dict:
    learner, optimizers = learner_and_optimizers(cfg)
    engine = TimedEngine(learner, optimizers)
    data = batches(cfg.batch_size, warmup + steps)
    for x, y in data[:warmup]:
        engine.train_step(x, y)
    engine.seconds = [0.0] * learner.num_stages
    t0 = time.perf_counter()
    for x, y in data[warmup:]:
        engine.train_step(x, y)
    wall = time.perf_counter() - t0
    return {"wall": wall, "stage_seconds": [s / steps for s in engine.seconds]}


def _rank(rank: int, port: int, cfg: RunConfig, warmup: int, steps: int, depth: int, out: str) -> None:
    env = {"RANK": rank, "WORLD_SIZE": RANKS, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    os.environ.update({k: str(v) for k, v in env.items()})
    torch.set_num_threads(1)
    me = launch(PipelineOptions(backend="gloo"), "cpu")
    learner, optimizers = learner_and_optimizers(cfg)
    options = PipelineOptions(backend="gloo", depth=depth)
    engine = build_pipeline_engine(
        learner, optimizers, launch=me, options=options, batch_size=cfg.batch_size, eval_batch_size=cfg.batch_size
    )
    transport = engine.transport
    head = transport.reads_data
    data = batches(cfg.batch_size, warmup + steps) if head else [(None, None)] * (warmup + steps)
    engine.begin_epoch(warmup + steps)
    for x, y in data[:warmup]:
        engine.train_step(x, y)
    dist.barrier(group=transport.groups.control)  # the timed steps start with an empty pipeline on every rank
    transport.clock.lap()
    t0 = time.perf_counter()
    for x, y in data[warmup:]:
        engine.train_step(x, y)
    busy, idle = transport.clock.lap()
    dist.barrier(group=transport.groups.control)  # ...and end when the last rank is done
    wall = time.perf_counter() - t0
    engine.end_epoch()
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"wall": wall, "busy": busy, "idle": idle, "stages": list(transport.stages)})
    )
    dist.destroy_process_group()


def run_pipeline(cfg: RunConfig, warmup: int, steps: int, depth: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as out, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # free again for rank 0's store
        mp.spawn(_rank, args=(port, cfg, warmup, steps, depth, out), nprocs=RANKS)
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(RANKS)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="infopro")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per engine")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--depth", type=int, default=2, help="pipeline.depth: carries in flight per link")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = config(args.method, args.batch_size)
    images = args.batch_size * args.steps

    load = round(os.getloadavg()[0], 2)
    local = run_local(cfg, args.warmup, args.steps)
    ranks = run_pipeline(cfg, args.warmup, args.steps, args.depth)
    stage_seconds = local["stage_seconds"]
    local_rate = images / local["wall"]
    pipe_rate = images / max(r["wall"] for r in ranks)  # the first batch in to the last one out
    ideal_rate = args.batch_size / max(stage_seconds)

    common = {"arch": cfg.arch, "method": cfg.method, "K": cfg.K, "split": cfg.split, "batch_size": cfg.batch_size}
    common |= {"steps": args.steps, "threads_per_process": 1, **provenance(torch.device("cpu"))}
    common["load_average_1m"] = load  # other work on the machine competes with the ranks for its cores
    rows = [
        {"engine": "local", "processes": 1, "images_per_s": local_rate, "stage_seconds": stage_seconds, **common},
        {
            "engine": "pipeline",
            "processes": RANKS,
            "depth": args.depth,
            "images_per_s": pipe_rate,
            "busy_seconds": [r["busy"] for r in ranks],
            "idle_seconds": [r["idle"] for r in ranks],
            "stage_groups": [r["stages"] for r in ranks],
            **common,
        },
        {"engine": "pipeline ideal (batch / max_k t_k)", "processes": RANKS, "images_per_s": ideal_rate, **common},
    ]
    command = "python benchmarks/pipeline_throughput.py " + shlex.join(sys.argv[1:])
    wall = max(r["wall"] for r in ranks)  # a rank that ran ahead is done early: count its busy time against all of it
    busy = " / ".join(f"{r['busy'] / wall:.0%}" for r in ranks)
    per_step = " / ".join(f"{r['busy'] / args.steps:.3f}" for r in ranks)
    stages = " / ".join(f"{s:.3f}" for s in stage_seconds)
    markdown = "\n".join(
        [
            f"`{command.strip()}`: {cfg.arch}, {cfg.method}, K={cfg.K}, split {cfg.split}, batch {cfg.batch_size}, "
            f"{args.steps} timed steps, 1 thread per process, gloo "
            f"({common['device_name']}, {os.cpu_count()} cores, load average {load} at the start, "
            f"torch {torch.__version__}).",
            "",
            "| engine | processes | images/s | vs local | notes |",
            "|---|---:|---:|---:|---|",
            f"| local | 1 | {local_rate:.1f} | 1.00x | stage seconds per step: {stages} |",
            f"| pipeline (depth {args.depth}) | {RANKS} | {pipe_rate:.1f} | {pipe_rate / local_rate:.2f}x | "
            f"busy per rank: {busy} of the time, {per_step} seconds per step |",
            f"| ideal pipeline | {RANKS} | {ideal_rate:.1f} | {ideal_rate / local_rate:.2f}x | "
            "batch / slowest stage's time |",
        ]
    )
    paths = write_results(rows, RESULTS, result_stem("pipeline_throughput_resnet32_k2", torch.device("cpu")), markdown)
    print(markdown)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
