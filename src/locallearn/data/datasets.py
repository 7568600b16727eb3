"""The dataset registry and `load_dataset`: canonical files (or the bundled sample) -> uint8 tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from . import stl10, svhn
from .bundled import read_sample
from .cifar import CIFAR10, CIFAR100, read_cifar
from .download import download as download_files
from .files import MissingFilesError, Splits
from .loader import AugSpec
from .subset import read_subset

# Per-dataset settings of the papers' recipes (docs/methods.md §1.5); mean and std in [0, 1] units.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
HALF = (0.5, 0.5, 0.5)
CIFAR_AUG = AugSpec(4, "reflect", flip=True, crop=32)
SVHN_AUG = AugSpec(2, "constant", flip=False, crop=32)  # no flip: mirrored digits are other digits
STL10_AUG = AugSpec(4, "constant", flip=True, crop=96)


@dataclass(frozen=True)
class DatasetSpec:
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    aug: AugSpec
    read: Callable[[Path], Splits] | None = None  # data_dir -> splits; None: the bundled sample
    urls: tuple[str, ...] = ()  # what download=True fetches into data_dir


SPECS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        10, CIFAR_MEAN, CIFAR_STD, CIFAR_AUG, lambda root: read_cifar(CIFAR10, root), (CIFAR10.url,)
    ),
    "cifar100": DatasetSpec(
        100, CIFAR_MEAN, CIFAR_STD, CIFAR_AUG, lambda root: read_cifar(CIFAR100, root), (CIFAR100.url,)
    ),
    "svhn": DatasetSpec(10, HALF, HALF, SVHN_AUG, svhn.read_svhn, svhn.URLS),
    # 10 classes: the released scripts' 'sl10' typo builds 100-way heads (docs/methods.md).
    "stl10": DatasetSpec(10, HALF, HALF, STL10_AUG, stl10.read_stl10, (stl10.URL,)),
    "cifar10-sample": DatasetSpec(10, CIFAR_MEAN, CIFAR_STD, CIFAR_AUG),
    # 12,000 + 5,000 class-balanced images in the sample's format, from scripts/make_cifar_subset.py.
    "cifar10-subset": DatasetSpec(10, CIFAR_MEAN, CIFAR_STD, CIFAR_AUG, read_subset),
}


@dataclass
class DatasetBundle:
    name: str
    train_x: torch.Tensor  # uint8 (N, 3, H, W), CPU
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]  # in [0, 1] units
    std: tuple[float, float, float]
    aug: AugSpec


def list_datasets() -> list[str]:
    return list(SPECS)


def _read(name: str, spec: DatasetSpec, data_dir: str | Path | None, download: bool) -> Splits:
    if spec.read is None:
        return read_sample()
    if data_dir is None:
        raise DataError(f"dataset {name} needs data_dir (--data-dir): the folder of its files as distributed")
    root = Path(data_dir).expanduser()
    try:
        return spec.read(root)
    except MissingFilesError:
        if not download:
            raise
    download_files(spec.urls, root)
    return spec.read(root)


def _tensor(a: np.ndarray, limit: int | None) -> torch.Tensor:
    # A copy: contiguous and writable for torch, and a limited split does not keep the full array alive.
    return torch.from_numpy(a[:limit].copy())


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    download: bool = False,
) -> DatasetBundle:
    """Read dataset `name` from the files in `data_dir` (not needed for cifar10-sample) into uint8 tensors.

    train_limit / test_limit keep the first N images of each split. download=True fetches missing files
    from the official URLs into data_dir first.
    """
    if name not in SPECS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(SPECS)}")
    for flag, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and limit < 0:
            raise ConfigError(f"{flag} must be >= 0 (or None for the whole split), got {limit}")
    spec = SPECS[name]
    splits = _read(name, spec, data_dir, download)
    for split, y in (("train", splits.train_y), ("test", splits.test_y)):
        if len(y) and not 0 <= y.min() <= y.max() < spec.num_classes:
            raise DataError(
                f"{name} {split} labels span {y.min()}..{y.max()}, not 0..{spec.num_classes - 1}: these are "
                "not the canonical files; download them again"
            )
    return DatasetBundle(
        name=name,
        train_x=_tensor(splits.train_x, train_limit),
        train_y=_tensor(splits.train_y, train_limit),
        test_x=_tensor(splits.test_x, test_limit),
        test_y=_tensor(splits.test_y, test_limit),
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        aug=spec.aug,
    )
