"""Shared by the readers: their output type, the missing-files error, reading archive members in memory."""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DataError


class Splits(NamedTuple):
    """What every reader returns: images uint8 (N, 3, H, W) and labels int64 (N,), train then test."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


class MissingFilesError(DataError):
    """The dataset's files are not where they were looked for (as opposed to present but corrupt).

    `load_dataset(download=True)` downloads on this error only, so it never writes over a corrupt file.
    """


def missing_files(dataset: str, root: Path, looked_for: Sequence[str], fix: str) -> MissingFilesError:
    """The error for absent files: every path that was tried, and what to put where."""
    where = f"{root}, which does not exist" if not root.is_dir() else str(root)
    tried = ", ".join(looked_for)
    return MissingFilesError(f"{dataset} files not found in {where}; looked for {tried}; {fix}")


def read_tar_members(archive: Path, names: Collection[str]) -> dict[str, bytes]:
    """The bytes of each member in `names` (paths inside the archive), read in one pass over `archive`."""
    found: dict[str, bytes] = {}
    try:
        # Stream mode ("r|*") decompresses the archive once, front to back, and stops after the last wanted
        # member; random access ("r:*") would first scan every header, then decompress again per member.
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                # extractfile gives None for anything but a file (e.g. the folder entries).
                if name in names and (f := tar.extractfile(member)) is not None:
                    found[name] = f.read()
                    if len(found) == len(names):
                        break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{archive} cannot be read ({e}); it is corrupt or incomplete: delete it and download it again"
        ) from e
    absent = sorted(set(names) - found.keys())
    if absent:
        raise DataError(
            f"{archive} has no member {', '.join(absent)}; it is not the archive as distributed: "
            "delete it and download it again"
        )
    return found
