"""MD5 checksums of the canonical dataset files, and their verification."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import DataError

# Published checksums (the values common data loaders check), keyed by the file's path as distributed.
# Readers check what they actually read: the CIFAR batch files (also when read from inside the archive),
# the SVHN .mat files and the STL-10 archive, whose members have no published checksums. The CIFAR
# archives are checked only right after a download: a repackaged archive (fresh timestamps, another gzip
# level) has another checksum although the batch files in it are byte-identical.
KNOWN_MD5: dict[str, str] = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "stl10_binary.tar.gz": "91f7769df0f17e558f3565bffb0c7dfb",
}

REFETCH = "delete it and download or extract it again"


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_md5(name: str, digest: str, where: str, fix: str = REFETCH) -> None:
    """Raise DataError when the canonical file `name` has a known checksum and `digest` is not it.

    `where` says where the bytes came from (a path, or archive:member) so that the user can find them.
    Names without a known checksum (e.g. STL-10's extracted files) pass unchecked.
    """
    expected = KNOWN_MD5.get(name)
    if expected is not None and digest != expected:
        raise DataError(f"{where} is corrupt or incomplete (md5 {digest}, expected {expected}); {fix}")
