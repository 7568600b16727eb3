"""Write the CIFAR-10 sample bundled with locallearn from the canonical files.

    python scripts/make_sample.py --src /path/to/cifar-10-python.tar.gz

Keeps the first `--per-class` training and `--test-per-class` test images of every class, in canonical
order, so that the sample is balanced. The defaults keep the file under 10 MB. Prints the checksum that
SAMPLE_MD5 in src/locallearn/data/bundled.py must hold, and whether it already does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from locallearn.data.bundled import SAMPLE_FILE, SAMPLE_MD5, sample_digest
from locallearn.data.cifar import CIFAR10, read_cifar
from locallearn.data.subset import balanced_subset

OUT = Path(__file__).resolve().parents[1] / "src" / "locallearn" / "data" / "sample" / SAMPLE_FILE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, type=Path, help="cifar-10-python.tar.gz, or the folder holding it")
    p.add_argument("--per-class", type=int, default=256)
    p.add_argument("--test-per-class", type=int, default=64)
    args = p.parse_args()
    # The reader takes the folder holding the archive (or the extracted cifar-10-batches-py/).
    full = read_cifar(CIFAR10, args.src.parent if args.src.is_file() else args.src)
    sample = balanced_subset(full, args.per_class, args.test_per_class)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **sample._asdict())
    digest = sample_digest(sample)
    print(
        f"wrote {OUT} ({OUT.stat().st_size:,} bytes): {len(sample.train_y)} train, {len(sample.test_y)} test "
        f"images; SAMPLE_MD5 = {digest!r} ({'unchanged' if digest == SAMPLE_MD5 else 'update bundled.py'})"
    )


if __name__ == "__main__":
    main()
