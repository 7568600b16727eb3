"""CIFAR-10 / CIFAR-100, python version: read from the .tar.gz as distributed or from the extracted folder."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .checksums import md5_bytes, verify

LAYOUT = {
    # name: (archive, folder inside it, train members, test members, label key)
    "cifar10": (
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def _find(root: Path, archive: str, folder: str) -> Path:
    for candidate in (root / folder, root):
        if (candidate / "batches.meta").exists() or (candidate / "meta").exists():
            return candidate
    if (root / archive).is_file():
        return root / archive
    raise DataError(
        f"no {archive} and no extracted {folder}/ in {root}; put the dataset's files there "
        "(or pass --download when a network is there)"
    )


def _read_members(source: Path, folder: str, members: list[str]) -> dict[str, bytes]:
    """Raw bytes of each member, from the archive or the folder, each checked against its checksum."""
    out: dict[str, bytes] = {}
    if source.is_file():
        try:
            with tarfile.open(source, "r:*") as tar:
                for m in members:
                    f = tar.extractfile(f"{folder}/{m}")
                    if f is None:
                        raise KeyError(m)
                    out[m] = f.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{source} cannot be read ({e}); delete it and download it again") from e
        except KeyError as e:
            raise DataError(f"{source} has no member {folder}/{e.args[0]}; it is not the {folder} archive") from e
    else:
        for m in members:
            path = source / m
            if not path.is_file():
                raise DataError(f"{path} is missing; extract the full {folder} archive into {source.parent}")
            out[m] = path.read_bytes()
    for m, data in out.items():
        verify(f"{folder}/{m}", md5_bytes(data), f"{source}:{m}" if source.is_file() else str(source / m))
    return out


def _decode(raw: bytes, label_key: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = pickle.loads(raw, encoding="bytes")
        images = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[label_key], dtype=np.int64)
    except Exception as e:  # any malformed pickle is the same user-facing problem
        raise DataError(f"{where} is not a CIFAR python batch ({e}); re-extract the archive") from e
    return images, labels


def read_cifar(name: str, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y) with images uint8 (N, 3, 32, 32)."""
    archive, folder, train, test, key = LAYOUT[name]
    source = _find(root, archive, folder)
    raw = _read_members(source, folder, train + test)
    parts = {m: _decode(raw[m], key, f"{source}:{m}") for m in train + test}
    tx = np.concatenate([parts[m][0] for m in train])
    ty = np.concatenate([parts[m][1] for m in train])
    vx = np.concatenate([parts[m][0] for m in test])
    vy = np.concatenate([parts[m][1] for m in test])
    return tx, ty, vx, vy
