"""ImageFolder reader: discovery, shapes, labels, per-(seed, epoch) determinism, transforms and errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from locallearn.data.imagefolder import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    EpochSampler,
    ImageFolderDataset,
    build_imagefolder_loaders,
    random_resized_box,
)
from locallearn.errors import DataError  # noqa: E402

CLASSES = ["cat", "dog", "eel"]  # created in a scrambled order below: discovery must sort them


def write_jpeg(path: Path, rng: np.random.Generator) -> None:
    w, h = int(rng.integers(36, 60)), int(rng.integers(36, 60))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")


def make_folder(root: Path, classes=("eel", "cat", "dog"), per_class: int = 4, splits=("train", "val")) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                write_jpeg(root / split / name / f"{name}_{i}.JPEG", rng)
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "imgs")


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_discovery_shapes_and_labels(folder: Path) -> None:
    data = build_imagefolder_loaders(folder, image_size=32, batch_size=5, workers=0, device="cpu", seed=0)
    assert data.classes == CLASSES and data.num_classes == 3
    assert data.mean == IMAGENET_MEAN and data.std == IMAGENET_STD
    assert len(data.train) == 3 and len(data.test) == 3  # ceil(12 / 5)
    x, y = next(iter(data.train))
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, y = collect(data.test)
    assert x.shape == (12, 3, 32, 32)
    assert y.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # val in folder order, labels = sorted class index
    _, y_train = collect(data.train)
    assert sorted(y_train.tolist()) == y.tolist()  # every training image exactly once per epoch


def test_normalisation_matches_uint8_items(folder: Path) -> None:
    data = build_imagefolder_loaders(folder, image_size=32, batch_size=12, workers=0, device="cpu", seed=0)
    x, _ = next(iter(data.test))
    raw = torch.stack([data.test.dataset[i][0] for i in range(12)])  # uint8 (12, 3, 32, 32)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(x, (raw.float() / 255 - mean) / std, atol=1e-5)


def test_eval_transform_is_resize_then_center_crop(tmp_path: Path) -> None:
    # A 40x80 image whose left half is black and right half white: the eval path resizes the short side
    # to round(32 * 256/224) = 37 (-> 37x74) and keeps the central 32 columns, half black, half white.
    img = np.zeros((80, 40, 3), np.uint8)
    img[:, 20:] = 255
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    x, _ = ImageFolderDataset([(str(path), 0)], 32, train=False)[0]
    assert x.shape == (3, 32, 32)
    assert (x[:, :, :14] < 10).all() and (x[:, :, 18:] > 245).all()


def test_random_resized_box_stays_in_bounds() -> None:
    rng = np.random.default_rng(0)
    for w, h in [(50, 40), (500, 375), (10, 300), (300, 10)]:
        for _ in range(200):
            left, top, cw, ch = random_resized_box(w, h, rng)
            assert left >= 0 and top >= 0 and cw > 0 and ch > 0 and left + cw <= w and top + ch <= h


def test_determinism_per_seed_and_epoch(folder: Path) -> None:
    def epoch_batches(seed: int, epoch: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = build_imagefolder_loaders(folder, image_size=32, batch_size=4, workers=workers, device="cpu", seed=seed)
        data.train.set_epoch(epoch)
        return collect(data.train)

    x0, y0 = epoch_batches(seed=1, epoch=0, workers=0)
    x0b, y0b = epoch_batches(seed=1, epoch=0, workers=2)  # same epoch whatever the number of workers
    assert torch.equal(x0, x0b) and torch.equal(y0, y0b)
    x1, y1 = epoch_batches(seed=1, epoch=1, workers=0)
    assert not torch.equal(x0, x1) or not torch.equal(y0, y1)  # a new epoch: new order and new crops
    x2, _ = epoch_batches(seed=2, epoch=0, workers=0)
    assert not torch.equal(x0, x2)


def test_a_replica_decodes_only_its_part_of_each_batch(folder: Path) -> None:
    def epoch(share: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        data = build_imagefolder_loaders(folder, image_size=32, batch_size=4, workers=0, device="cpu", share=share)
        data.train.set_epoch(1)
        return collect(data.train)

    x, y = epoch((0, 1))
    shares = [epoch((r, 2)) for r in range(2)]
    assert sum(len(sy) for _, sy in shares) == len(y)
    # batch b of the whole epoch is replica 0's half followed by replica 1's half
    for b in range(len(y) // 4):
        got = torch.cat([sx[2 * b : 2 * b + 2] for sx, _ in shares])
        assert torch.equal(got, x[4 * b : 4 * b + 4])


def test_an_epoch_started_at_batch_n_skips_exactly_n_batches(folder: Path) -> None:
    data = build_imagefolder_loaders(folder, image_size=32, batch_size=4, workers=0, device="cpu", seed=1)
    data.train.set_epoch(2)
    x, y = collect(data.train)
    data.train.set_epoch(2, start=1)
    x1, y1 = collect(data.train)
    assert len(y) > 4 and torch.equal(x[4:], x1) and torch.equal(y[4:], y1)


def test_limits_keep_every_class(folder: Path) -> None:
    data = build_imagefolder_loaders(
        folder, image_size=32, batch_size=8, workers=0, device="cpu", seed=0, train_limit=6, test_limit=3
    )
    assert len(data.train.dataset) == 6 and len(data.test.dataset) == 3
    assert sorted({label for _, label in data.train.dataset.samples}) == [0, 1, 2]
    assert [label for _, label in data.test.dataset.samples] == [0, 1, 2]


def test_an_epoch_draws_every_image_once() -> None:
    assert [i for i, _ in EpochSampler(10, train=False, seed=0)] == list(range(10))
    train = EpochSampler(9, train=True, seed=0)
    orders = []
    for epoch in range(2):
        train.set_epoch(epoch)
        orders.append([i for i, _ in train])
        assert sorted(orders[-1]) == list(range(9))
    assert orders[0] != orders[1]  # each epoch its own shuffle


def test_missing_root_and_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        build_imagefolder_loaders(tmp_path / "nope", image_size=32, batch_size=4, workers=0)
    make_folder(tmp_path / "only_train", splits=("train",))
    with pytest.raises(DataError, match=r"val not found; expected root/train/<class>"):
        build_imagefolder_loaders(tmp_path / "only_train", image_size=32, batch_size=4, workers=0)


def test_class_missing_from_val(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    for f in (root / "val" / "dog").iterdir():
        f.unlink()
    (root / "val" / "dog").rmdir()
    with pytest.raises(DataError, match=r"missing in val \['dog'\]"):
        build_imagefolder_loaders(root, image_size=32, batch_size=4, workers=0)


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    (root / "train" / "fox").mkdir()
    (root / "val" / "fox").mkdir()
    with pytest.raises(DataError, match=r"fox has no images"):
        build_imagefolder_loaders(root, image_size=32, batch_size=4, workers=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_names_the_file(tmp_path: Path, workers: int) -> None:
    root = make_folder(tmp_path / "imgs")
    bad = root / "train" / "cat" / "cat_9.JPEG"
    bad.write_bytes(b"this is not a jpeg")
    data = build_imagefolder_loaders(root, image_size=32, batch_size=4, workers=workers, device="cpu")
    # Raised in a worker, re-raised in the main process as a DataError with just the worker's one-line message.
    # (After a worker error torch's DataLoader takes ~5 s per worker to shut down; hence only 1 worker here.)
    with pytest.raises(DataError, match=r"^cannot decode image \S*cat_9\.JPEG .*re-extract it"):
        collect(data.train)


def test_missing_pillow_says_how_to_install(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match="pip install pillow"):
        build_imagefolder_loaders(folder, image_size=32, batch_size=4, workers=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_prefetch_matches_cpu(folder: Path) -> None:
    kw = dict(image_size=32, batch_size=5, workers=2, seed=0)
    cpu = build_imagefolder_loaders(folder, device="cpu", **kw)
    gpu = build_imagefolder_loaders(folder, device="cuda", **kw)
    assert gpu.train.loader.pin_memory
    for loader in ("train", "test"):
        gpu_batches = list(getattr(gpu, loader))
        assert all(x.is_cuda and y.is_cuda for x, y in gpu_batches)
        xg, yg = torch.cat([x for x, _ in gpu_batches]).cpu(), torch.cat([y for _, y in gpu_batches]).cpu()
        xc, yc = collect(getattr(cpu, loader))
        assert torch.equal(yg, yc) and torch.allclose(xg, xc, atol=1e-5)
