"""SVHN cropped digits (`train_32x32.mat`, `test_32x32.mat`); reading MATLAB files needs scipy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .checksums import check_md5, md5_file
from .files import Splits, missing_files

FILES = ("train_32x32.mat", "test_32x32.mat")
URL_DIR = "http://ufldl.stanford.edu/housenumbers/"
URLS = tuple(URL_DIR + f for f in FILES)


def _loadmat() -> Callable[[Path], dict[str, Any]]:
    # Imported here: scipy is an optional dependency, needed for SVHN only.
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise DataError("reading SVHN needs scipy, which is not installed; pip install scipy") from e
    return loadmat


def _load(path: Path, loadmat: Callable[[Path], dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    check_md5(path.name, md5_file(path), str(path))
    try:
        mat = loadmat(path)
        # X is (32, 32, 3, N): height, width, channel, image.
        images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8)
        labels = mat["y"].reshape(-1).astype(np.int64)
    except Exception as e:  # a truncated or foreign .mat fails in many ways; the fix is the same
        raise DataError(f"{path} is not an SVHN .mat file ({e!r}); delete it and download it again") from e
    if images.shape[1:] != (3, 32, 32) or len(images) != len(labels):
        raise DataError(f"{path} holds X {mat['X'].shape}, y {mat['y'].shape}, not SVHN; download it again")
    labels[labels == 10] = 0  # the files store digit 0 as label 10
    return images, labels


def read_svhn(root: Path) -> Splits:
    """Read `root`/train_32x32.mat and `root`/test_32x32.mat, each md5-checked."""
    absent = [str(root / f) for f in FILES if not (root / f).is_file()]
    if absent:
        raise missing_files(
            "svhn",
            root,
            absent,
            f"put {' and '.join(FILES)} (from {URL_DIR}) there, or pass download=True (--download)",
        )
    loadmat = _loadmat()  # before the first md5, so that a missing scipy fails at once
    tx, ty = _load(root / FILES[0], loadmat)
    vx, vy = _load(root / FILES[1], loadmat)
    return Splits(tx, ty, vx, vy)
