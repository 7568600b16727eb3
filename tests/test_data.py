"""Data package: readers on tiny files in each canonical format, checksums, the bundled sample, DeviceLoader.

Tiny files carry the canonical names, so the readers check them against KNOWN_MD5 as they would the real
ones; each test registers the tiny files' checksums there (monkeypatch.setitem) before reading them.
"""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from locallearn.data import AugSpec, DatasetBundle, DeviceLoader, bundled, list_datasets, load_dataset
from locallearn.data.checksums import KNOWN_MD5, md5_bytes
from locallearn.data.files import MissingFilesError, read_tar_members
from locallearn.data.loader import crop_flip
from locallearn.errors import ConfigError, DataError

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]

# ------------------------------------------------------------------------------------------ tiny files


@pytest.fixture
def register(monkeypatch):
    """register(name, data): make `data` the known checksum of canonical file `name` for this test."""

    def _register(name: str, data: bytes) -> None:
        monkeypatch.setitem(KNOWN_MD5, name, md5_bytes(data))

    return _register


def cifar_batch(n: int, seed: int, label_key: str, num_classes: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A pickled batch as in the official files (protocol 2), and the images/labels it should decode to."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n)
    batch = {"batch_label": f"batch {seed}", label_key: labels.tolist(), "data": data, "filenames": ["x"] * n}
    if label_key == "fine_labels":
        batch["coarse_labels"] = (labels // 5).tolist()
    # Independent decoding: row = 1024 red, 1024 green, 1024 blue values, each plane row-major.
    images = np.zeros((n, 3, 32, 32), np.uint8)
    for i, c, h, w in np.ndindex(images.shape):
        images[i, c, h, w] = data[i, c * 1024 + h * 32 + w]
    return pickle.dumps(batch, protocol=2), images, labels


def write_tar(archive: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_files(folder: Path, members: dict[str, bytes]) -> None:
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def tiny_cifar(root: Path, register, *, hundred: bool = False, layout: str = "archive") -> dict:
    """Write a tiny CIFAR-10 (or -100) under `root` as an archive, extracted folder or flat files."""
    folder, archive = (
        ("cifar-100-python", "cifar-100-python.tar.gz")
        if hundred
        else ("cifar-10-batches-py", "cifar-10-python.tar.gz")
    )
    train, key, classes = (["train"], "fine_labels", 100) if hundred else (CIFAR10_TRAIN, "labels", 10)
    test = ["test"] if hundred else ["test_batch"]
    members, parts = {}, {}
    for i, m in enumerate(train + test):
        members[f"{folder}/{m}"], *parts[m] = cifar_batch(3 + i, seed=i, label_key=key, num_classes=classes)
        register(f"{folder}/{m}", members[f"{folder}/{m}"])
    meta = "meta" if hundred else "batches.meta"
    members[f"{folder}/{meta}"] = pickle.dumps({"label_names": []}, protocol=2)
    if layout == "archive":
        write_tar(root / archive, members)
    else:
        write_files(root, {k if layout == "folder" else k.split("/")[1]: v for k, v in members.items()})
    return {
        "train_x": np.concatenate([parts[m][0] for m in train]),
        "train_y": np.concatenate([parts[m][1] for m in train]),
        "test_x": np.concatenate([parts[m][0] for m in test]),
        "test_y": np.concatenate([parts[m][1] for m in test]),
    }


def tiny_svhn(root: Path, register, labels=(10, 1, 2, 10, 9)) -> dict[str, np.ndarray]:
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    expected = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)  # (H, W, C, N) as in the files
        path = root / f"{split}_32x32.mat"
        scipy_io.savemat(path, {"X": x, "y": np.array(labels, np.uint8).reshape(-1, 1)})
        register(path.name, path.read_bytes())
        expected[f"{split}_x"] = np.stack([x[..., i].transpose(2, 0, 1) for i in range(len(labels))])
    return expected


def stl_members(n_train: int = 3, n_test: int = 2, train_labels=None) -> tuple[dict, dict]:
    """STL-10 binary members; images as (N, 3, H, W), written column-major as in the files."""
    rng = np.random.default_rng(1)
    members, expected = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        y = (np.arange(n) % 10) + 1 if split == "test" or train_labels is None else np.array(train_labels)
        y = y.astype(np.uint8)  # stored as 1..10
        members[f"{split}_X.bin"] = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes()
        members[f"{split}_y.bin"] = y.tobytes()
        expected[f"{split}_x"], expected[f"{split}_y"] = x, y.astype(np.int64) - 1
    return members, expected


# ------------------------------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize("layout", ["archive", "folder", "flat"])
def test_cifar10_reads_every_layout(tmp_path, register, layout):
    expected = tiny_cifar(tmp_path, register, layout=layout)
    before = sorted(tmp_path.rglob("*"))
    b = load_dataset("cifar10", tmp_path)
    assert sorted(tmp_path.rglob("*")) == before  # the archive is read in memory, never extracted
    assert isinstance(b, DatasetBundle) and b.num_classes == 10
    assert b.train_x.dtype == torch.uint8 and b.train_y.dtype == torch.int64
    assert tuple(b.train_x.shape) == (25, 3, 32, 32) and tuple(b.test_x.shape) == (8, 3, 32, 32)  # 3+4+5+6+7
    for k, v in expected.items():
        np.testing.assert_array_equal(getattr(b, k).numpy(), v)
    assert b.aug == AugSpec(4, "reflect", flip=True, crop=32)
    assert b.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert b.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))


@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_cifar100_uses_fine_labels(tmp_path, register, layout):
    expected = tiny_cifar(tmp_path, register, hundred=True, layout=layout)
    b = load_dataset("cifar100", tmp_path)
    assert b.num_classes == 100 and b.mean == load_dataset("cifar10-sample").mean
    np.testing.assert_array_equal(b.train_y.numpy(), expected["train_y"])
    np.testing.assert_array_equal(b.test_x.numpy(), expected["test_x"])


def test_limits_take_the_first_images(tmp_path, register):
    expected = tiny_cifar(tmp_path, register)
    b = load_dataset("cifar10", tmp_path, train_limit=5, test_limit=0)
    np.testing.assert_array_equal(b.train_x.numpy(), expected["train_x"][:5])
    np.testing.assert_array_equal(b.train_y.numpy(), expected["train_y"][:5])
    assert len(b.test_x) == len(b.test_y) == 0
    assert len(load_dataset("cifar10", tmp_path, train_limit=10**6).train_x) == len(expected["train_x"])
    with pytest.raises(ConfigError, match="train_limit must be >= 0"):
        load_dataset("cifar10", tmp_path, train_limit=-1)


def test_missing_files_list_what_was_looked_for(tmp_path):
    with pytest.raises(MissingFilesError) as e:
        load_dataset("cifar10", tmp_path)
    msg = str(e.value)
    assert f"{tmp_path}/cifar-10-python.tar.gz" in msg and f"{tmp_path}/cifar-10-batches-py/" in msg
    assert "data_batch_1" in msg and "download" in msg
    with pytest.raises(MissingFilesError, match="does not exist"):
        load_dataset("cifar100", tmp_path / "nope")
    with pytest.raises(DataError, match="needs data_dir"):
        load_dataset("svhn")


def test_partly_extracted_folder_names_the_missing_files(tmp_path, register):
    tiny_cifar(tmp_path, register, layout="folder")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 missing; extract cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)


def test_canonical_names_are_always_checked(tmp_path, monkeypatch):
    # Not registered: the tiny batches are checked against the real CIFAR-10 checksums, and fail.
    tiny_cifar(tmp_path, lambda name, data: None, layout="folder")
    with pytest.raises(DataError, match=r"data_batch_1 is corrupt or incomplete \(md5 \w+, expected c99c"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_corrupt_batch_is_detected(tmp_path, register, layout):
    tiny_cifar(tmp_path, register, layout=layout)
    name = "cifar-10-batches-py/data_batch_3"
    if layout == "folder":
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:-1] + b"\0")
        where = str(path)
    else:
        archive = tmp_path / "cifar-10-python.tar.gz"
        names = [f"cifar-10-batches-py/{m}" for m in [*CIFAR10_TRAIN, "test_batch"]]
        members = read_tar_members(archive, names)
        members[name] = members[name][:-1] + b"\0"
        write_tar(archive, members)
        where = f"{archive}:{name}"
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{where} is corrupt") and f"expected {KNOWN_MD5[name]}); delete it" in msg


def test_archive_of_another_dataset_is_refused(tmp_path, register):
    tiny_cifar(tmp_path, register, hundred=True)
    (tmp_path / "cifar-100-python.tar.gz").rename(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match=r"has no member cifar-10-batches-py/data_batch_1, .*not the archive"):
        load_dataset("cifar10", tmp_path)


def test_truncated_archive_is_detected(tmp_path, register):
    tiny_cifar(tmp_path, register)
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="cannot be read .*delete it and download it again"):
        load_dataset("cifar10", tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("this should never run",))


def test_batch_unpickling_refuses_foreign_globals(tmp_path, register):
    tiny_cifar(tmp_path, register, layout="folder")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({"data": _Evil(), "labels": []}, protocol=2))
    register("cifar-10-batches-py/test_batch", path.read_bytes())
    with pytest.raises(DataError, match=r"test_batch is not a CIFAR python batch .*print is not allowed"):
        load_dataset("cifar10", tmp_path)


# ------------------------------------------------------------------------------------------ SVHN, STL-10


def test_svhn_transposes_and_maps_label_10_to_0(tmp_path, register):
    expected = tiny_svhn(tmp_path, register)
    b = load_dataset("svhn", tmp_path)
    np.testing.assert_array_equal(b.train_x.numpy(), expected["train_x"])
    np.testing.assert_array_equal(b.test_x.numpy(), expected["test_x"])
    assert b.train_y.tolist() == [0, 1, 2, 0, 9] and b.train_y.dtype == torch.int64
    assert b.aug == AugSpec(2, "constant", flip=False, crop=32) and b.mean == b.std == (0.5, 0.5, 0.5)


def test_svhn_missing_and_corrupt_files(tmp_path, register):
    with pytest.raises(MissingFilesError, match="train_32x32.mat, .*test_32x32.mat"):
        load_dataset("svhn", tmp_path)
    tiny_svhn(tmp_path, register)
    with open(tmp_path / "test_32x32.mat", "ab") as f:
        f.write(b"junk")
    with pytest.raises(DataError, match=r"test_32x32.mat is corrupt or incomplete \(md5"):
        load_dataset("svhn", tmp_path)


def test_svhn_without_scipy_says_how_to_install(tmp_path, register, monkeypatch):
    tiny_svhn(tmp_path, register)
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # makes `from scipy.io import ...` raise ImportError
    with pytest.raises(DataError, match="pip install scipy"):
        load_dataset("svhn", tmp_path)


@pytest.mark.parametrize("layout", ["folder", "flat", "archive"])
def test_stl10_reads_column_major_images_with_10_classes(tmp_path, register, layout):
    members, expected = stl_members(n_train=12)
    if layout == "archive":
        write_tar(tmp_path / "stl10_binary.tar.gz", {f"stl10_binary/{k}": v for k, v in members.items()})
        register("stl10_binary.tar.gz", (tmp_path / "stl10_binary.tar.gz").read_bytes())
    else:
        write_files(tmp_path / "stl10_binary" if layout == "folder" else tmp_path, members)
    b = load_dataset("stl10", tmp_path)
    assert b.num_classes == 10 and b.train_y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    for k, v in expected.items():
        np.testing.assert_array_equal(getattr(b, k).numpy(), v)
    assert b.aug == AugSpec(4, "constant", flip=True, crop=96)


def test_stl10_corrupt_archive_and_bad_labels(tmp_path, register):
    members, _ = stl_members()
    write_tar(tmp_path / "stl10_binary.tar.gz", {f"stl10_binary/{k}": v for k, v in members.items()})
    with pytest.raises(DataError, match=r"stl10_binary.tar.gz is corrupt .*expected 91f7769d"):
        load_dataset("stl10", tmp_path)
    members, _ = stl_members(train_labels=[1, 11, 3])  # a label past 10
    write_files(tmp_path / "stl10_binary", members)
    with pytest.raises(DataError, match=r"stl10 train labels span 0\.\.10, not 0\.\.9"):
        load_dataset("stl10", tmp_path)


# ------------------------------------------------------------------------------------------ download


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_fetches_only_missing_files(tmp_path, register, monkeypatch):
    source = tmp_path / "server"
    source.mkdir()
    expected = tiny_cifar(source, register)
    payload = (source / "cifar-10-python.tar.gz").read_bytes()
    register("cifar-10-python.tar.gz", payload)
    urls = []

    def urlopen(url, timeout):
        urls.append(url)
        return _Response(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    b = load_dataset("cifar10", tmp_path / "data", download=True)
    np.testing.assert_array_equal(b.train_x.numpy(), expected["train_x"])
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-python.tar.gz"]
    load_dataset("cifar10", tmp_path / "data", download=True)
    assert len(urls) == 1  # already there: no second download


def test_download_failure_says_to_place_the_file(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"downloading \S+train_32x32.mat failed .*by hand and place it at"):
        load_dataset("svhn", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _Response(b"not the archive"))
    with pytest.raises(DataError, match=r"the download of \S+stl10_binary.tar.gz is corrupt .*try again"):
        load_dataset("stl10", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ registry, sample


def test_registry():
    assert list_datasets() == ["cifar10", "cifar100", "svhn", "stl10", "cifar10-sample", "cifar10-subset"]
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'; choose one of: cifar10, cifar100"):
        load_dataset("mnist", "/nowhere")


def test_bundled_sample_loads_and_verifies(monkeypatch):
    b = load_dataset("cifar10-sample")
    assert tuple(b.train_x.shape) == (2560, 3, 32, 32) and tuple(b.test_x.shape) == (640, 3, 32, 32)
    assert torch.bincount(b.train_y).tolist() == [256] * 10 and torch.bincount(b.test_y).tolist() == [64] * 10
    assert b.num_classes == 10 and b.aug == AugSpec(4, "reflect", flip=True, crop=32)
    assert len(load_dataset("cifar10-sample", train_limit=100).train_x) == 100
    monkeypatch.setattr(bundled, "SAMPLE_MD5", "0" * 32)
    with pytest.raises(DataError, match="bundled sample .* is corrupt .*reinstall locallearn"):
        load_dataset("cifar10-sample")


# ------------------------------------------------------------------------------------------ DeviceLoader


def naive_crop_flip(images: np.ndarray, aug: AugSpec, offsets: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Per-image reference: np.pad, slice the window, mirror."""
    out = []
    for img, (top, left), flip in zip(images, offsets, flips, strict=True):
        padded = np.pad(img, ((0, 0), (aug.pad, aug.pad), (aug.pad, aug.pad)), mode=aug.pad_mode)
        window = padded[:, top : top + aug.crop, left : left + aug.crop]
        out.append(window[:, :, ::-1] if flip else window)
    return np.stack(out)


@pytest.mark.parametrize(
    "aug",
    [
        AugSpec(3, "reflect", True, 10),
        AugSpec(2, "constant", True, 10),
        AugSpec(1, "constant", True, 6),
        AugSpec(0, "reflect", True, 10),
    ],
)
def test_crop_flip_matches_naive_reference(aug):
    g = torch.Generator().manual_seed(0)
    span = 10 + 2 * aug.pad - aug.crop + 1
    # Every (top, left) offset, each with and without flip, including both extremes.
    tops, lefts = torch.meshgrid(torch.arange(span), torch.arange(span), indexing="ij")
    offsets = torch.stack([tops.flatten(), lefts.flatten()], 1).repeat(2, 1)
    flips = torch.arange(len(offsets)) >= len(offsets) // 2
    images = torch.randint(0, 256, (len(offsets), 3, 10, 10), generator=g, dtype=torch.uint8)
    expected = naive_crop_flip(images.numpy(), aug, offsets.numpy(), flips.numpy())
    np.testing.assert_array_equal(crop_flip(images, aug, offsets, flips).numpy(), expected)


MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def make_loader(n: int = 37, size: int = 8, batch_size: int = 8, **kw) -> DeviceLoader:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return DeviceLoader(images, torch.arange(n) % 10, batch_size, mean=MEAN, std=STD, **kw)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """Back to uint8: exact, since the float error is far below half a grey level."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


def test_loader_batches_are_the_planned_crops_and_flips():
    aug = AugSpec(2, "reflect", flip=True, crop=8)
    loader = make_loader(aug=aug, shuffle=True, seed=3)
    loader.set_epoch(2)
    order, (offsets, flips) = loader.plan()
    xs, ys = zip(*loader, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and tuple(x.shape) == (37, 3, 8, 8)
    assert torch.equal(y, loader.labels[order])
    reference = naive_crop_flip(loader.images[order].numpy(), aug, offsets.numpy(), flips.numpy())
    np.testing.assert_array_equal(unnormalize(x).numpy(), reference)
    assert 0 < flips.sum() < len(flips) and len(set(map(tuple, offsets.tolist()))) > 10


def test_loader_eval_is_plain_normalisation_in_order():
    loader = make_loader(batch_size=10)
    x, y = next(iter(loader))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (loader.images[:10].float() / 255 - mean) / std)
    assert torch.equal(y, torch.arange(10))


def test_flip_only_mirrors_the_chosen_images():
    loader = make_loader(aug=AugSpec(0, "constant", flip=True, crop=8), batch_size=37)
    _, (offsets, flips) = loader.plan()
    x = unnormalize(next(iter(loader))[0])
    assert not offsets.any()
    assert torch.equal(x[flips], loader.images[flips].flip(-1))
    assert torch.equal(x[~flips], loader.images[~flips])
    no_flip = make_loader(aug=AugSpec(0, "constant", flip=False, crop=8), batch_size=37)
    assert torch.equal(unnormalize(next(iter(no_flip))[0]), no_flip.images)


def test_loader_is_a_pure_function_of_seed_and_epoch():
    def epoch(seed: int, e: int) -> list[torch.Tensor]:
        loader = make_loader(aug=AugSpec(2, "reflect", flip=True, crop=8), shuffle=True, seed=seed)
        loader.set_epoch(e)
        return [t for batch in loader for t in batch]

    def same(a, b) -> bool:
        return all(torch.equal(s, t) for s, t in zip(a, b, strict=True))

    assert same(epoch(0, 1), epoch(0, 1))
    assert not same(epoch(0, 1), epoch(0, 2)) and not same(epoch(0, 1), epoch(1, 1))
    loader = make_loader(aug=AugSpec(2, "reflect", flip=True, crop=8), shuffle=True, seed=0)
    loader.set_epoch(1)
    assert same([t for b in loader for t in b], [t for b in loader for t in b])  # iterating again repeats


def test_a_loader_started_at_batch_n_yields_the_rest_of_the_same_epoch():
    loader = make_loader(aug=AugSpec(2, "reflect", flip=True, crop=8), shuffle=True, seed=0, batch_size=8)
    loader.set_epoch(3)
    whole = list(loader)
    loader.set_epoch(3, start=2)
    rest = list(loader)
    assert len(whole) == len(rest) + 2 >= 3
    for (xa, ya), (xb, yb) in zip(whole[2:], rest, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_shares_of_the_replicas_make_up_each_batch():
    """Replica r of 3 gets part r of every batch, augmentation included; the last batch (5 of 37) too."""
    aug = AugSpec(2, "reflect", flip=True, crop=8)
    whole = make_loader(aug=aug, shuffle=True, seed=0, batch_size=16)
    whole.set_epoch(1)
    parts = []
    for r in range(3):
        loader = make_loader(aug=aug, shuffle=True, seed=0, batch_size=16, share=(r, 3))
        loader.set_epoch(1)
        parts.append(list(loader))
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[b][0] for p in parts]), x) and torch.equal(
            torch.cat([p[b][1] for p in parts]), y
        )
        assert [len(p[b][1]) for p in parts] == [len(t) for t in y.tensor_split(3)]


def test_loader_len_drop_last_and_channels_last():
    assert len(make_loader(batch_size=8)) == 5
    assert [len(y) for _, y in make_loader(batch_size=8)] == [8] * 4 + [5]
    assert len(make_loader(batch_size=8, drop_last=True)) == 4
    assert [len(y) for _, y in make_loader(batch_size=8, drop_last=True)] == [8] * 4
    x, _ = next(iter(make_loader(channels_last=True, aug=AugSpec(1, "constant", flip=True, crop=8))))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="crop 12 is larger"):
        make_loader(aug=AugSpec(1, "constant", flip=True, crop=12))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loader_is_identical_on_cuda():
    kw = {"aug": AugSpec(2, "reflect", flip=True, crop=8), "shuffle": True, "seed": 5}
    cpu, gpu = make_loader(**kw), make_loader(device="cuda", **kw)
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu())


# ------------------------------------------------------------------------------------------ real CIFAR-10


@pytest.mark.slow
def test_real_cifar10(shared_data):
    archive = shared_data / "cifar-10-python.tar.gz"
    members = ["batches.meta", *CIFAR10_TRAIN, "test_batch"]
    raw = read_tar_members(archive, [f"cifar-10-batches-py/{m}" for m in members])
    for name, data in raw.items():
        assert md5_bytes(data) == KNOWN_MD5[name], name
    b = load_dataset("cifar10", shared_data)
    assert tuple(b.train_x.shape) == (50000, 3, 32, 32) and tuple(b.test_x.shape) == (10000, 3, 32, 32)
    assert torch.bincount(b.train_y).tolist() == [5000] * 10
    assert torch.bincount(b.test_y).tolist() == [1000] * 10
    # The bundled sample is the first 256 / 64 images of each class, in canonical order.
    sample = load_dataset("cifar10-sample")
    for full_x, full_y, part_x, n in (
        (b.train_x, b.train_y, sample.train_x, 256),
        (b.test_x, b.test_y, sample.test_x, 64),
    ):
        keep = torch.cat([torch.nonzero(full_y == c).flatten()[:n] for c in range(10)]).sort().values
        assert torch.equal(full_x[keep], part_x)
