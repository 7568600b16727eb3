"""Splits stored as one .npz of uint8 arrays, checksum-verified: the CIFAR-10 sample shipped inside the package
(written by scripts/make_sample.py) and the larger subset written by scripts/make_cifar_subset.py."""

from __future__ import annotations

import importlib.resources
import io
from collections.abc import Callable

import numpy as np

from ..errors import DataError
from .checksums import md5_bytes
from .files import Splits

SAMPLE_FILE = "cifar10_sample.npz"
# sample_digest of the bundled file; scripts/make_sample.py prints the value for a new sample.
SAMPLE_MD5 = "eca96fbe61f1f3e9ceaad1eb39bb5153"


def sample_digest(arrays: Splits) -> str:
    """md5 over each array's dtype, shape and bytes: what the file holds, whatever the npz compression."""
    parts = []
    for name, a in zip(Splits._fields, arrays, strict=True):
        parts += [f"{name}:{a.dtype.str}:{a.shape};".encode(), np.ascontiguousarray(a).tobytes()]
    return md5_bytes(b"".join(parts))


def read_npz_splits(read_bytes: Callable[[], bytes], source: str, expected_md5: str, fix: str) -> Splits:
    """The Splits in the .npz whose bytes `read_bytes` returns, checked against `expected_md5` (a
    `sample_digest`); a missing, truncated, foreign or changed file is a DataError naming `source` and `fix`."""
    try:
        with np.load(io.BytesIO(read_bytes())) as npz:
            arrays = Splits(*(npz[k] for k in Splits._fields))
    except Exception as e:  # missing, truncated or foreign file: the fix is the same
        raise DataError(f"{source} cannot be read ({e!r}); {fix}") from e
    digest = sample_digest(arrays)
    if digest != expected_md5:
        raise DataError(f"{source} is corrupt (md5 {digest}, not {expected_md5}); {fix}")
    return arrays


def read_sample() -> Splits:
    """The bundled sample, read through importlib.resources so that it works from a wheel or zip too."""
    resource = importlib.resources.files("locallearn.data").joinpath("sample", SAMPLE_FILE)
    fix = "reinstall locallearn (or rebuild the file with scripts/make_sample.py)"
    return read_npz_splits(resource.read_bytes, f"the bundled sample {resource}", SAMPLE_MD5, fix)
