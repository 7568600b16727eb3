"""CIFAR-10 / CIFAR-100, python version: read from the .tar.gz as distributed or from the extracted folder."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .checksums import check_md5, md5_bytes
from .files import Splits, missing_files, read_tar_members


@dataclass(frozen=True)
class CifarLayout:
    name: str
    archive: str  # file name as distributed
    folder: str  # the folder the archive extracts to
    train: tuple[str, ...]  # batch files, in canonical order
    test: tuple[str, ...]
    label_key: str
    url: str


CIFAR10 = CifarLayout(
    "cifar10",
    "cifar-10-python.tar.gz",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "labels",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
)
CIFAR100 = CifarLayout(
    "cifar100",
    "cifar-100-python.tar.gz",
    "cifar-100-python",
    ("train",),
    ("test",),
    "fine_labels",  # the 100-class labels; "coarse_labels" are the 20 superclasses
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
)


class _BatchUnpickler(pickle.Unpickler):
    """Rebuilds only what a CIFAR batch holds (dicts, lists, numpy arrays).

    Unpickling can run arbitrary code. The checksums protect the canonical files, but a user may point us at
    any copy, so every other global is refused.
    """

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),  # the official files (numpy 1 names)
            ("numpy._core.multiarray", "_reconstruct"),  # files written by numpy 2
            ("numpy._core.numeric", "_frombuffer"),  # numpy 2, pickle protocol 5
            ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _decode(raw: bytes, label_key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        # latin1 turns the Python-2 str keys of the official files into str, and keeps numpy data intact.
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    except Exception as e:  # whatever breaks inside a malformed batch, the fix is the same
        raise DataError(f"{where} is not a CIFAR python batch ({e!r}); delete it and extract it again") from e
    if len(images) != len(labels):
        raise DataError(f"{where} has {len(images)} images but {len(labels)} labels; extract it again")
    return images, labels


def _folder_with_batches(layout: CifarLayout, root: Path, members: tuple[str, ...]) -> Path | None:
    """The extracted folder (root/<folder> or root itself) holding every batch file, if there is one."""
    for candidate in (root / layout.folder, root):
        present = [m for m in members if (candidate / m).is_file()]
        if len(present) == len(members):
            return candidate
        if present and not (root / layout.archive).is_file():
            absent = [m for m in members if m not in present]
            raise DataError(
                f"{candidate} holds only part of {layout.folder}: {', '.join(absent)} missing; "
                f"extract {layout.archive} there again"
            )
    return None


def read_cifar(layout: CifarLayout, root: Path) -> Splits:
    """Read `root`/<archive> or the extracted `root`/<folder>/ (or `root` itself); every batch md5-checked."""
    members = layout.train + layout.test
    folder = _folder_with_batches(layout, root, members)
    if folder is not None:
        where = {m: str(folder / m) for m in members}
        raw = {m: (folder / m).read_bytes() for m in members}
    elif (root / layout.archive).is_file():
        archive = root / layout.archive
        where = {m: f"{archive}:{layout.folder}/{m}" for m in members}
        inside = read_tar_members(archive, [f"{layout.folder}/{m}" for m in members])
        raw = {m: inside[f"{layout.folder}/{m}"] for m in members}
    else:
        looked_for = [str(root / layout.archive), f"{root / layout.folder}/{{{','.join(members)}}}"]
        raise missing_files(
            layout.name,
            root,
            looked_for,
            f"put {layout.archive} (from {layout.url}) or its extracted {layout.folder}/ there, "
            "or pass download=True (--download)",
        )
    # Check before unpickling: a corrupt file should say so, not fail somewhere inside pickle.
    for m in members:
        check_md5(f"{layout.folder}/{m}", md5_bytes(raw[m]), where[m])
    parts = {m: _decode(raw.pop(m), layout.label_key, where[m]) for m in members}
    return Splits(
        np.concatenate([parts[m][0] for m in layout.train]),
        np.concatenate([parts[m][1] for m in layout.train]),
        np.concatenate([parts[m][0] for m in layout.test]),
        np.concatenate([parts[m][1] for m in layout.test]),
    )
