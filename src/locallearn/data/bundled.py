"""The CIFAR-10 sample shipped inside the package (written by scripts/make_sample.py), checksum-verified."""

from __future__ import annotations

import importlib.resources
import io

import numpy as np

from ..errors import DataError
from .checksums import md5_bytes
from .files import Splits

SAMPLE_FILE = "cifar10_sample.npz"
# sample_digest of the bundled file; scripts/make_sample.py prints the value for a new sample.
SAMPLE_MD5 = "eca96fbe61f1f3e9ceaad1eb39bb5153"


def sample_digest(arrays: Splits) -> str:
    """md5 over each array's dtype, shape and bytes: what the sample holds, whatever the npz compression."""
    parts = []
    for name, a in zip(Splits._fields, arrays, strict=True):
        parts += [f"{name}:{a.dtype.str}:{a.shape};".encode(), np.ascontiguousarray(a).tobytes()]
    return md5_bytes(b"".join(parts))


def read_sample() -> Splits:
    """The bundled sample, read through importlib.resources so that it works from a wheel or zip too."""
    resource = importlib.resources.files("locallearn.data").joinpath("sample", SAMPLE_FILE)
    fix = "reinstall locallearn (or rebuild the file with scripts/make_sample.py)"
    try:
        with np.load(io.BytesIO(resource.read_bytes())) as npz:
            arrays = Splits(*(npz[k] for k in Splits._fields))
    except Exception as e:  # missing, truncated or foreign file: the fix is the same
        raise DataError(f"the bundled sample {resource} cannot be read ({e!r}); {fix}") from e
    digest = sample_digest(arrays)
    if digest != SAMPLE_MD5:
        raise DataError(f"the bundled sample {resource} is corrupt (md5 {digest}, not {SAMPLE_MD5}); {fix}")
    return arrays
