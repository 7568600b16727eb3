"""A run's data from its config: ImageFolder trees (`imagenet`) or the in-memory datasets of `load_dataset`.

Both kinds of loader yield `(x, y)` on the device, x normalised float32 (B, 3, H, W) and y int64 (B,), and
take `set_epoch` before each epoch, so the trainer does not care which one it drives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

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
    share: tuple[int, int] = (0, 1),
) -> RunData:
    """Loaders for `cfg.dataset` delivering batches to `device`.

    `cfg.batch_size` is the global batch. `share = (r, n)`: every loader yields only part r of n of each batch
    (data-parallel replica r of n, under torchrun: the data order stays that of one process, and a replica
    decodes no image another one trains on).
    """
    if cfg.dataset in IMAGEFOLDER_DATASETS:
        return _imagefolder_data(cfg, device, channels_last, share)
    return _in_memory_data(cfg, device, channels_last, share)


def _imagefolder_data(cfg: RunConfig, device: torch.device, channels_last: bool, share: tuple[int, int]) -> RunData:
    if cfg.data_dir is None:
        raise ConfigError(f"dataset {cfg.dataset} needs data_dir (--data-dir): the folder holding train/ and val/")
    data = build_imagefolder_loaders(
        cfg.data_dir,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        workers=cfg.workers,
        device=device,
        seed=cfg.seed,
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
