"""Start torch.distributed from torchrun's environment and build the process groups of a multi-process run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ...config import PipelineOptions
from ...errors import ConfigError
from .topology import Topology

TORCHRUN_HINT = "torchrun --nproc-per-node N -m locallearn train --engine pipeline ..."


def under_torchrun() -> bool:
    """Whether this process is one of several that torchrun started (its environment names a world size > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Launch:
    """This process's place in the job and how it talks."""

    rank: int
    world: int
    device: torch.device  # where this rank computes
    backend: str  # of the data groups: nccl, or gloo
    wire: torch.device  # where messages are staged: the GPU for NCCL, host memory for gloo


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(
            f"--engine pipeline runs one process per stage group under torchrun ({name} is not set): {TORCHRUN_HINT}"
        )
    return int(value)


def _device(name: str, local_rank: int) -> torch.device:
    wants_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if not wants_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for but CUDA is not available; use --device cpu")
    # Under torchrun each process takes the GPU of its local rank (several processes share GPUs round-robin).
    device = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def launch(options: PipelineOptions, device_name: str) -> Launch:
    """Initialise the default process group from torchrun's environment variables."""
    rank, world, local_rank = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = _device(device_name, local_rank)
    backend = options.backend
    if backend == "auto":
        # NCCL needs a GPU per rank; processes sharing a GPU talk through host memory with gloo.
        own_gpu = device.type == "cuda" and local_world <= torch.cuda.device_count()
        backend = "nccl" if own_gpu else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("pipeline.backend nccl needs CUDA devices; use gloo on CPU")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=options.timeout))
    wire = device if backend == "nccl" else torch.device("cpu")
    return Launch(rank, world, device, backend, wire)


@dataclass(frozen=True)
class Groups:
    forward: dist.ProcessGroup  # carries, towards later stages
    backward: dist.ProcessGroup  # cascade gradients and EMA sources, towards earlier stages. A group of its
    # own: NCCL serialises a pair's point-to-point operations on one stream per communicator, so traffic in
    # both directions over one communicator could deadlock.
    replicas: dist.ProcessGroup | None  # this rank's position across the replicas (gradient all-reduce)
    control: dist.ProcessGroup  # gloo over every rank: barriers, statistics, checkpoints (small, on the host)


def make_groups(topo: Topology) -> Groups:
    """Every rank creates every group, in the same order, as torch.distributed requires."""
    backward = dist.new_group()
    control = dist.new_group(backend="gloo")
    replicas = None
    for position in range(topo.positions):
        group = dist.new_group(topo.replica_ranks(position)) if topo.replicas > 1 else None
        if position == topo.position:
            replicas = group
    return Groups(dist.group.WORLD, backward, replicas, control)
