"""SVHN cropped digits (`train_32x32.mat`, `test_32x32.mat`); needs scipy to read MATLAB files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .checksums import md5_file, verify


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path} is missing; put train_32x32.mat and test_32x32.mat in {path.parent}")
    verify(path.name, md5_file(path), str(path))
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise DataError("reading SVHN needs scipy: pip install scipy (or pip install 'locallearn[svhn]')") from e
    try:
        mat = loadmat(path)
        images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8)  # (32,32,3,N) -> (N,3,32,32)
        labels = mat["y"].reshape(-1).astype(np.int64)
    except Exception as e:
        raise DataError(f"{path} is not an SVHN .mat file ({e}); download it again") from e
    labels[labels == 10] = 0  # the files store digit 0 as label 10
    return images, labels


def read_svhn(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tx, ty = _load(root / "train_32x32.mat")
    vx, vy = _load(root / "test_32x32.mat")
    return tx, ty, vx, vy
