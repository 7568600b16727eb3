"""A run's data from its config: ImageFolder trees (`imagenet`) or the in-memory datasets of `load_dataset`.

Both kinds of loader yield `(x, y)` on the device, x normalised float32 (B, 3, H, W) and y int64 (B,), and
take `set_epoch` before each epoch, so the trainer does not care which one it drives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.distributed as dist

from ..errors import ConfigError
from .datasets import load_dataset
from .imagefolder import build_imagefolder_loaders
from .loader import DeviceLoader

if TYPE_CHECKING:
    from ..config import RunConfig

IMAGEFOLDER_DATASETS = ("imagenet",)


class Loader(Protocol):
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int, start: int = 0) -> None: ...


@dataclass
class RunData:
    """The loaders and what a model and a decoder loss need to know about the images."""

    train: Loader
    test: Loader
    num_classes: int
    mean: tuple[float, ...]  # in [0, 1] units, per channel
    std: tuple[float, ...]
    image_shape: tuple[int, ...]  # (3, H, W) of a training batch's images


def build_data(
    cfg: RunConfig,
    device: torch.device,
    *,
    channels_last: bool = False,
    distributed: bool | None = None,
    share: tuple[int, int] = (0, 1),
) -> RunData:
    """Loaders for `cfg.dataset` delivering batches to `device`.

    `distributed` (imagenet only; default: whether torch.distributed is initialised) shards the data over the
    ranks of the default process group: each rank reads a DistributedSampler share of the training set and
    its slice of the validation set. `cfg.batch_size` is then the global batch, as in the papers' multi-GPU
    commands (1024 = 8 GPUs x 128): each rank loads batch_size / world size. Pass False when the ranks must
    all see the same batches (one pipeline stage per rank). `share = (r, n)`: every loader yields only part
    r of n of each batch (a pipeline's data-parallel replica r; the data order stays that of one process).
    """
    if cfg.dataset in IMAGEFOLDER_DATASETS:
        if distributed is None:
            distributed = dist.is_available() and dist.is_initialized()
        return _imagefolder_data(cfg, device, channels_last, distributed, share)
    return _in_memory_data(cfg, device, channels_last, share)


def _imagefolder_data(
    cfg: RunConfig, device: torch.device, channels_last: bool, distributed: bool, share: tuple[int, int]
) -> RunData:
    if cfg.data_dir is None:
        raise ConfigError(f"dataset {cfg.dataset} needs data_dir (--data-dir): the folder holding train/ and val/")
    # Without a process group, build_imagefolder_loaders raises the error that says how to start one.
    world = dist.get_world_size() if distributed and dist.is_initialized() else 1
    if cfg.batch_size % world:
        raise ConfigError(
            f"batch_size {cfg.batch_size} is the global batch and must divide evenly over the {world} processes"
        )
    data = build_imagefolder_loaders(
        cfg.data_dir,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size // world,
        eval_batch_size=max(1, cfg.eval_batch_size // world),
        workers=cfg.workers,
        device=device,
        seed=cfg.seed,
        distributed=distributed,
        train_limit=cfg.train_limit,
        test_limit=cfg.test_limit,
        channels_last=channels_last,
        share=share,
    )
    shape = (3, cfg.image_size, cfg.image_size)
    return RunData(data.train, data.test, data.num_classes, data.mean, data.std, shape)


def _in_memory_data(cfg: RunConfig, device: torch.device, channels_last: bool, share: tuple[int, int]) -> RunData:
    data = load_dataset(
        cfg.dataset, cfg.data_dir, train_limit=cfg.train_limit, test_limit=cfg.test_limit, download=cfg.download
    )
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=channels_last, share=share)
    train = DeviceLoader(
        data.train_x, data.train_y, cfg.batch_size, aug=data.aug, shuffle=True, seed=cfg.seed, **common
    )
    test = DeviceLoader(data.test_x, data.test_y, cfg.eval_batch_size, aug=None, shuffle=False, **common)
    return RunData(train, test, data.num_classes, data.mean, data.std, tuple(data.train_x.shape[1:]))
