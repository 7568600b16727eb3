"""The CIFAR-10 subset: a class-balanced part of the canonical files in the bundled sample's .npz format.

Small enough to travel with a checkout to a machine that cannot reach the full archive (52 MB of uint8 for
12,000 training and 5,000 test images), large enough for a short accuracy run to order the methods.
scripts/make_cifar_subset.py writes it; `--dataset cifar10-subset --data-dir DIR` reads DIR/cifar10_subset.npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bundled import read_npz_splits
from .files import Splits, missing_files

SUBSET_FILE = "cifar10_subset.npz"
TRAIN_PER_CLASS = 1200
TEST_PER_CLASS = 500
# sample_digest of the subset of the canonical files at the default sizes; the file is checked against it.
SUBSET_MD5 = "3f91f01c9b4c80bf97d43383784b762f"
MAKE = "python scripts/make_cifar_subset.py --src <folder holding cifar-10-python.tar.gz> --out {root}"


def first_per_class(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` images of every class, kept in their original order: (N, ...) -> (10 n, ...)."""
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in range(int(y.max()) + 1)]))
    return x[keep], y[keep]


def balanced_subset(full: Splits, train_per_class: int, test_per_class: int) -> Splits:
    """The first `train_per_class` training and `test_per_class` test images of every class of `full`."""
    return Splits(
        *first_per_class(full.train_x, full.train_y, train_per_class),
        *first_per_class(full.test_x, full.test_y, test_per_class),
    )


def read_subset(root: Path) -> Splits:
    """The subset in `root` (the folder holding cifar10_subset.npz), verified against SUBSET_MD5."""
    path = root / SUBSET_FILE
    fix = f"write it again with {MAKE.format(root=root)}"
    if not path.is_file():
        raise missing_files("cifar10-subset", root, [SUBSET_FILE], fix.replace("again ", ""))
    return read_npz_splits(path.read_bytes, f"the CIFAR-10 subset {path}", SUBSET_MD5, fix)
