"""Write the CIFAR-10 subset (12,000 training + 5,000 test images, class-balanced) from the canonical files.

    python scripts/make_cifar_subset.py --src ../shared/data/cifar-10-python.tar.gz

Keeps the first 1,200 training and 500 test images of every class, in canonical order, as one compressed
.npz of uint8 arrays (48 MB) in `--out` (default data/cifar10-subset/, ignored by git), where
`--dataset cifar10-subset --data-dir data/cifar10-subset` reads it. The subset travels with the checkout to a
machine without the full archive (the GPU check, docs/gpu.md). Refuses to write a file whose checksum is not
SUBSET_MD5, so what it writes is what the reader accepts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from locallearn.data.bundled import sample_digest
from locallearn.data.cifar import CIFAR10, read_cifar
from locallearn.data.subset import SUBSET_FILE, SUBSET_MD5, TEST_PER_CLASS, TRAIN_PER_CLASS, balanced_subset
from locallearn.engine.checkpoint import write_atomic
from locallearn.errors import LocalLearnError

OUT = Path(__file__).resolve().parents[1] / "data" / "cifar10-subset"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, type=Path, help="cifar-10-python.tar.gz, or the folder holding it")
    p.add_argument("--out", type=Path, default=OUT, help=f"folder to write {SUBSET_FILE} into (default {OUT})")
    args = p.parse_args()
    try:
        # The reader takes the folder holding the archive (or the extracted cifar-10-batches-py/).
        full = read_cifar(CIFAR10, args.src.parent if args.src.is_file() else args.src)
    except LocalLearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    subset = balanced_subset(full, TRAIN_PER_CLASS, TEST_PER_CLASS)
    digest = sample_digest(subset)
    if digest != SUBSET_MD5:
        print(f"error: the subset's md5 is {digest}, not {SUBSET_MD5}: {args.src} is not canonical", file=sys.stderr)
        return 2
    path = args.out / SUBSET_FILE
    write_atomic(path, lambda f: np.savez_compressed(f, **subset._asdict()))
    print(f"wrote {path} ({path.stat().st_size:,} bytes): {len(subset.train_y)} train, {len(subset.test_y)} test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
