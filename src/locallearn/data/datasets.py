"""Dataset specs and `load_dataset`: canonical files (or the bundled sample) -> uint8 tensors + settings."""

from __future__ import annotations

import importlib.resources
import io
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .checksums import md5_bytes
from .cifar import read_cifar
from .loader import AugSpec
from .stl10 import read_stl10
from .svhn import read_svhn

CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
HALF = (0.5, 0.5, 0.5)
SAMPLE_FILE = "cifar10_sample.npz"
# md5 of the bundled sample's arrays (images then labels, train then test), checked at every load.
SAMPLE_MD5 = "4f5889c13838ae2aa9828efd5672bc83"

Reader = Callable[[Path], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DatasetSpec:
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    aug: AugSpec
    image_size: int
    urls: tuple[str, ...] = ()


SPECS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(10, CIFAR_MEAN, CIFAR_STD, AugSpec(4, "reflect", True, 32), 32,
                           ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),
    "cifar100": DatasetSpec(100, CIFAR_MEAN, CIFAR_STD, AugSpec(4, "reflect", True, 32), 32,
                            ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),
    "svhn": DatasetSpec(10, HALF, HALF, AugSpec(2, "constant", False, 32), 32,
                        ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                         "http://ufldl.stanford.edu/housenumbers/test_32x32.mat")),
    "stl10": DatasetSpec(10, HALF, HALF, AugSpec(4, "constant", True, 96), 96,
                         ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",)),
    "cifar10-sample": DatasetSpec(10, CIFAR_MEAN, CIFAR_STD, AugSpec(4, "reflect", True, 32), 32),
}

READERS: dict[str, Reader] = {
    "cifar10": lambda root: read_cifar("cifar10", root),
    "cifar100": lambda root: read_cifar("cifar100", root),
    "svhn": read_svhn,
    "stl10": read_stl10,
}


@dataclass
class DatasetBundle:
    name: str
    train_x: torch.Tensor  # uint8 (N, 3, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]  # in [0, 1] units
    std: tuple[float, float, float]
    aug: AugSpec


def list_datasets() -> list[str]:
    return [*SPECS, "imagenet"]


def sample_digest(arrays: dict[str, np.ndarray]) -> str:
    keys = ("train_x", "train_y", "test_x", "test_y")
    return md5_bytes(b"".join(np.ascontiguousarray(arrays[k]).tobytes() for k in keys))


def read_sample() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The CIFAR-10 sample bundled with the package (made by scripts/make_sample.py), checksum-verified."""
    resource = importlib.resources.files("locallearn.data").joinpath("sample", SAMPLE_FILE)
    try:
        with np.load(io.BytesIO(resource.read_bytes())) as npz:
            arrays = {k: npz[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    except Exception as e:
        raise DataError(f"the bundled sample {resource} cannot be read ({e}); reinstall locallearn") from e
    if sample_digest(arrays) != SAMPLE_MD5:
        raise DataError(f"the bundled sample {resource} is corrupt (checksum mismatch); reinstall locallearn")
    return arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]


def fetch(name: str, root: Path) -> None:
    """Download the dataset's files into `root` (only those not there yet)."""
    root.mkdir(parents=True, exist_ok=True)
    for url in SPECS[name].urls:
        target = root / url.rsplit("/", 1)[1]
        if target.exists():
            continue
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            urllib.request.urlretrieve(url, tmp)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(f"downloading {url} failed ({e}); download it by hand into {root}") from e
        tmp.rename(target)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    download: bool = False,
) -> DatasetBundle:
    """Read a dataset's canonical files from `data_dir` (or the bundled sample) into uint8 tensors."""
    if name not in SPECS:
        raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(list_datasets())}")
    spec = SPECS[name]
    if name == "cifar10-sample":
        tx, ty, vx, vy = read_sample()
    else:
        if data_dir is None:
            raise DataError(f"dataset '{name}' needs --data-dir, the folder holding its files as distributed")
        root = Path(data_dir)
        if download:
            try:
                READERS[name](root)
            except DataError:
                fetch(name, root)
        if not root.is_dir():
            raise DataError(f"--data-dir {root} does not exist; point it at the folder holding the {name} files")
        tx, ty, vx, vy = READERS[name](root)
    tx, ty = tx[:train_limit], ty[:train_limit]
    vx, vy = vx[:test_limit], vy[:test_limit]
    return DatasetBundle(
        name=name,
        train_x=torch.from_numpy(np.ascontiguousarray(tx)),
        train_y=torch.from_numpy(np.ascontiguousarray(ty)),
        test_x=torch.from_numpy(np.ascontiguousarray(vx)),
        test_y=torch.from_numpy(np.ascontiguousarray(vy)),
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        aug=spec.aug,
    )
