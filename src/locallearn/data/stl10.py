"""STL-10 binary version: the labelled train/test splits (10 classes, 96x96), from the folder or archive."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .checksums import check_md5, md5_file
from .files import Splits, missing_files, read_tar_members

ARCHIVE = "stl10_binary.tar.gz"
FOLDER = "stl10_binary"
MEMBERS = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
URL = f"http://ai.stanford.edu/~acoates/stl10/{ARCHIVE}"
IMAGE_BYTES = 3 * 96 * 96


def _images(raw: bytes, where: str) -> np.ndarray:
    if len(raw) % IMAGE_BYTES:
        raise DataError(f"{where} has {len(raw)} bytes, not a whole number of 3x96x96 images; extract again")
    # Each channel is stored column-major: read (N, 3, 96, 96) as (N, C, W, H), then swap to (N, C, H, W).
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy()


def _labels(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10


def _read_raw(root: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """Bytes of each member, and where it came from, from the extracted folder or else the archive."""
    for folder in (root / FOLDER, root):
        if all((folder / m).is_file() for m in MEMBERS):
            return {m: (folder / m).read_bytes() for m in MEMBERS}, {m: str(folder / m) for m in MEMBERS}
    archive = root / ARCHIVE
    if archive.is_file():
        # The members have no published checksums; the archive's is the only one there is.
        check_md5(ARCHIVE, md5_file(archive), str(archive))
        inside = read_tar_members(archive, [f"{FOLDER}/{m}" for m in MEMBERS])
        return {m: inside[f"{FOLDER}/{m}"] for m in MEMBERS}, {m: f"{archive}:{FOLDER}/{m}" for m in MEMBERS}
    raise missing_files(
        "stl10",
        root,
        [str(archive), f"{root / FOLDER}/{{{','.join(MEMBERS)}}}"],
        f"put {ARCHIVE} (from {URL}) or its extracted {FOLDER}/ there, or pass download=True (--download)",
    )


def read_stl10(root: Path) -> Splits:
    """Read `root`/stl10_binary/ (or `root` itself) or `root`/stl10_binary.tar.gz; skips unlabelled data."""
    raw, where = _read_raw(root)
    out = []
    for split in ("train", "test"):
        xs, ys = f"{split}_X.bin", f"{split}_y.bin"
        x, y = _images(raw[xs], where[xs]), _labels(raw[ys])
        if len(x) != len(y):
            raise DataError(f"{where[xs]} has {len(x)} images, {where[ys]} {len(y)} labels; extract again")
        out += [x, y]
    return Splits(*out)
