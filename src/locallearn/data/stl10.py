"""STL-10 binary version: the labelled train/test splits (10 classes, 96x96), from the folder or archive."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .checksums import md5_file, verify

MEMBERS = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")


def _images(raw: bytes, where: str) -> np.ndarray:
    if len(raw) % (3 * 96 * 96):
        raise DataError(f"{where} has {len(raw)} bytes, not a whole number of 3x96x96 images; re-extract it")
    # Stored column-major per channel: read (N, 3, 96, 96) then swap the last two axes.
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy()


def _labels(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10


def read_stl10(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder, archive = root / "stl10_binary", root / "stl10_binary.tar.gz"
    raw: dict[str, bytes] = {}
    if (root / "train_X.bin").exists():
        folder = root
    if folder.is_dir():
        for m in MEMBERS:
            if not (folder / m).is_file():
                raise DataError(f"{folder / m} is missing; extract the full stl10_binary.tar.gz")
            raw[m] = (folder / m).read_bytes()
    elif archive.is_file():
        verify(archive.name, md5_file(archive), str(archive))
        with tarfile.open(archive, "r:*") as tar:
            for m in MEMBERS:
                f = tar.extractfile(f"stl10_binary/{m}")
                if f is None:
                    raise DataError(f"{archive} has no stl10_binary/{m}; download it again")
                raw[m] = f.read()
    else:
        raise DataError(f"no stl10_binary/ and no stl10_binary.tar.gz in {root}; put the dataset's files there")
    tx, vx = _images(raw["train_X.bin"], "train_X.bin"), _images(raw["test_X.bin"], "test_X.bin")
    ty, vy = _labels(raw["train_y.bin"]), _labels(raw["test_y.bin"])
    if len(tx) != len(ty) or len(vx) != len(vy):
        raise DataError(f"STL-10 image and label counts differ in {root}; re-extract the archive")
    return tx, ty, vx, vy
