"""Write the CIFAR-10 sample bundled with locallearn from the canonical archive.

    python scripts/make_sample.py --src /path/to/cifar-10-python.tar.gz

Takes the first `--per-class` training and `--test-per-class` test images of every class, in canonical
order, so the sample is balanced; prints the checksum to paste into data/datasets.py (SAMPLE_MD5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from locallearn.data.cifar import read_cifar
from locallearn.data.datasets import SAMPLE_FILE, sample_digest

OUT = Path(__file__).resolve().parents[1] / "src" / "locallearn" / "data" / "sample" / SAMPLE_FILE


def first_per_class(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in range(10)]))
    return x[keep], y[keep]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, type=Path, help="folder or file: cifar-10-python.tar.gz")
    p.add_argument("--per-class", type=int, default=250)
    p.add_argument("--test-per-class", type=int, default=60)
    args = p.parse_args()
    root = args.src.parent if args.src.is_file() else args.src
    tx, ty, vx, vy = read_cifar("cifar10", root)
    arrays = {}
    arrays["train_x"], arrays["train_y"] = first_per_class(tx, ty, args.per_class)
    arrays["test_x"], arrays["test_y"] = first_per_class(vx, vy, args.test_per_class)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 2**20:.2f} MiB): {len(arrays['train_y'])} train, "
          f"{len(arrays['test_y'])} test images; SAMPLE_MD5 = {sample_digest(arrays)}")


if __name__ == "__main__":
    main()
