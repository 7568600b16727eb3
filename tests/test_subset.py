"""The carried CIFAR-10 subset: what it keeps, that it is read like the bundled sample and checked, and the
script that writes it from the canonical archive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from locallearn.data import load_dataset
from locallearn.data import subset as subset_module
from locallearn.data.bundled import sample_digest
from locallearn.data.files import MissingFilesError, Splits
from locallearn.data.subset import SUBSET_FILE, balanced_subset
from locallearn.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def fake_cifar(n_train: int = 50, n_test: int = 30) -> Splits:
    """Labels cycling 0..9 and each image filled with its own index, so that a kept image says where it was."""
    x = np.arange(n_train + n_test, dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 32, 32), np.uint8)
    y = np.arange(n_train + n_test, dtype=np.int64) % 10
    return Splits(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def test_the_subset_keeps_the_first_images_of_every_class_in_order():
    kept = balanced_subset(fake_cifar(), train_per_class=2, test_per_class=1)
    assert kept.train_x[:, 0, 0, 0].tolist() == list(range(20))  # classes cycle, so the first 20 images
    assert np.bincount(kept.train_y).tolist() == [2] * 10 and np.bincount(kept.test_y).tolist() == [1] * 10
    assert kept.test_x[:, 0, 0, 0].tolist() == list(range(50, 60))


def write_subset(root: Path, splits: Splits, monkeypatch) -> None:
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / SUBSET_FILE, **splits._asdict())
    monkeypatch.setattr(subset_module, "SUBSET_MD5", sample_digest(splits))


def test_the_subset_loads_as_a_dataset_with_cifar_settings(tmp_path, monkeypatch):
    splits = balanced_subset(fake_cifar(), 3, 2)
    write_subset(tmp_path, splits, monkeypatch)
    data = load_dataset("cifar10-subset", tmp_path, test_limit=5)
    assert torch.equal(data.train_x, torch.from_numpy(splits.train_x)) and len(data.test_y) == 5
    assert (data.mean, data.std, data.aug) == tuple(
        getattr(load_dataset("cifar10-sample"), k) for k in ("mean", "std", "aug")
    )


def test_a_missing_or_changed_subset_file_says_how_to_write_it(tmp_path, monkeypatch):
    with pytest.raises(MissingFilesError, match=r"cifar10_subset\.npz; write it with python scripts/make_cifar_subset"):
        load_dataset("cifar10-subset", tmp_path)
    write_subset(tmp_path, balanced_subset(fake_cifar(), 3, 2), monkeypatch)
    monkeypatch.setattr(subset_module, "SUBSET_MD5", "0" * 32)
    with pytest.raises(DataError, match=r"subset .* is corrupt .*write it again with python scripts/make_cifar_subset"):
        load_dataset("cifar10-subset", tmp_path)


def test_the_script_refuses_a_missing_archive_in_one_line(tmp_path):
    script = ROOT / "scripts" / "make_cifar_subset.py"
    env = {"PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, script, "--src", tmp_path, "--out", tmp_path], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "cifar10 files not found" in done.stderr


@pytest.mark.slow
def test_the_script_writes_the_subset_the_reader_accepts(shared_data, tmp_path):
    script = ROOT / "scripts" / "make_cifar_subset.py"
    env = {"PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, script, "--src", shared_data, "--out", tmp_path], env=env, check=False)
    assert done.returncode == 0
    data = load_dataset("cifar10-subset", tmp_path)  # checked against the real SUBSET_MD5
    assert tuple(data.train_x.shape) == (12000, 3, 32, 32) and tuple(data.test_x.shape) == (5000, 3, 32, 32)
    assert torch.bincount(data.train_y).tolist() == [1200] * 10 and torch.bincount(data.test_y).tolist() == [500] * 10
