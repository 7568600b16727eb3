"""ImageNet-style class-per-folder data: `root/train/<class>/*.JPEG` and `root/val/<class>/*.JPEG`.

The InfoPro / MAN / MLAAN ImageNet recipe: RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) +
horizontal flip for training; Resize(shorter side = size * 256/224) + CenterCrop(size) for evaluation;
ImageNet mean/std. Decoding (Pillow) and the geometric transforms run in DataLoader worker processes, which
return uint8 (3, size, size) tensors: 4x fewer bytes to pin and copy than float32. The float conversion and
normalisation happen on the device, one whole batch at a time, while the next batch is already on its way.

Reproducibility: the sample order is a function of (seed, epoch) and each sample's crop/flip draws from its
own generator seeded with (seed, epoch, sample index), so an epoch is the same whatever the number of
workers or ranks, and `--resume` sees the same augmentations.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError, DataError
from .loader import share_bounds

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})
LAYOUT = "expected root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"


def _pil_image() -> Any:
    """The PIL.Image module; Pillow is an optional dependency, needed only for image folders."""
    try:
        from PIL import Image
    except ImportError as e:
        raise DataError("reading image folders needs Pillow, which is not installed; pip install pillow") from e
    return Image


# ------------------------------------------------------------------------------------------ folder scanning


def find_classes(split_dir: Path) -> list[str]:
    """Sorted names of the class subfolders of `split_dir` (e.g. root/train)."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} not found; {LAYOUT}")
    with os.scandir(split_dir) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir} has no class subfolders; {LAYOUT}")
    return classes


def scan_split(split_dir: Path, classes: Sequence[str]) -> list[tuple[str, int]]:
    """(path, label) for every image of every class, classes in the given order, files sorted by name."""
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        # os.scandir: the file type comes with the directory listing, no stat per file (1.28 M on ImageNet).
        with os.scandir(class_dir) as entries:
            files = sorted(e.path for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(
                f"class folder {class_dir} has no images ({'/'.join(sorted(IMAGE_EXTENSIONS))}); "
                "add its images or delete the folder (from train and val alike)"
            )
        samples.extend((f, label) for f in files)
    return samples


def _check_val_classes(train_classes: list[str], val_dir: Path) -> None:
    val_classes = find_classes(val_dir)
    if val_classes == train_classes:
        return
    missing = sorted(set(train_classes) - set(val_classes))
    extra = sorted(set(val_classes) - set(train_classes))
    raise DataError(
        f"the class folders of {val_dir} differ from train: missing in val {missing[:5]} ({len(missing)}), "
        f"only in val {extra[:5]} ({len(extra)}); val needs one folder per train class (ImageNet's flat "
        "val images must first be sorted into class folders, e.g. with valprep.sh)"
    )


def _even_subset(samples: list[tuple[str, int]], limit: int | None) -> list[tuple[str, int]]:
    """`limit` samples spread evenly over the class-sorted list, so every class keeps its share."""
    if limit is None or limit >= len(samples):
        return samples
    if limit <= 0:
        raise ConfigError(f"a sample limit must be positive, got {limit}")
    return [samples[i] for i in np.linspace(0, len(samples) - 1, limit).round().astype(int)]


# ------------------------------------------------------------------------------------------ transforms


def random_resized_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(left, top, w, h) of an Inception-style random crop: area fraction ~ U(scale), log-aspect ~ U(log ratio).

    Ten tries, as in the original recipe; if none fits, the central crop at the nearest allowed aspect ratio.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_transform(img: Any, size: int, rng: np.random.Generator) -> Any:
    """RandomResizedCrop(size) + horizontal flip (p = 0.5) on a PIL image."""
    image = _pil_image()
    left, top, w, h = random_resized_box(img.width, img.height, rng)
    # Crop and resize in one call: Pillow resamples only the box, with bilinear antialiasing.
    img = img.resize((size, size), image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        img = img.transpose(image.Transpose.FLIP_LEFT_RIGHT)
    return img


def eval_transform(img: Any, size: int) -> Any:
    """Resize the shorter side to round(size * 256/224) (256 for 224), then CenterCrop(size)."""
    image = _pil_image()
    short = round(size * 256 / 224)
    w, h = img.size
    nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize((nw, nh), image.Resampling.BILINEAR)
    left, top = round((nw - size) / 2), round((nh - size) / 2)
    return img.crop((left, top, left + size, top + size))


def load_rgb(path: str) -> Any:
    """Decode an image file into an RGB PIL image (ImageNet has a few grayscale and CMYK JPEGs)."""
    image = _pil_image()
    try:
        with image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as e:
        raise DataError(
            f"cannot decode image {path} ({type(e).__name__}: {e}); the file is corrupt or not an image: "
            "re-extract it from the dataset archive or delete it"
        ) from e


# ------------------------------------------------------------------------------------------ dataset + sampling


class ImageFolderDataset(Dataset):
    """Items are (uint8 (3, size, size) tensor, label); keys are `(index, epoch)` pairs from `EpochSampler`.

    The epoch travels with each key rather than living on the dataset, so persistent workers (which hold
    their own copy of the dataset) still draw the right epoch's augmentations.
    """

    def __init__(self, samples: list[tuple[str, int]], image_size: int, train: bool, seed: int = 0) -> None:
        # numpy arrays, not a list of (str, int): reading them touches no Python refcounts, so forked workers
        # share these pages instead of each copying ~200 MB of ImageNet paths (pytorch/pytorch#13246).
        self.paths = np.array([os.fsencode(path) for path, _ in samples])  # dtype S<longest path>
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.image_size = image_size
        self.train = train
        self.seed = seed

    @property
    def samples(self) -> list[tuple[str, int]]:
        return [(os.fsdecode(p), int(label)) for p, label in zip(self.paths, self.labels, strict=True)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        path, label = os.fsdecode(self.paths[index]), int(self.labels[index])
        img = load_rgb(path)
        if self.train:
            # A generator per (seed, epoch, sample): the draw does not depend on which worker got the sample.
            rng = np.random.default_rng([self.seed & (2**63 - 1), epoch, index])
            img = train_transform(img, self.image_size, rng)
        else:
            img = eval_transform(img, self.image_size)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous(), label


class EpochSampler(Sampler):
    """Yields `(index, epoch)` keys: a seeded shuffle (train) or every index in order (eval).

    Training draws `randperm(n)` seeded with seed + epoch (the order DistributedSampler gives one replica):
    data-parallel replicas all draw this one order and each decodes its slice of every batch (`SharedBatches`).
    """

    def __init__(self, n: int, train: bool, seed: int) -> None:
        self.n, self.train, self.seed = n, train, seed
        self.epoch = self.skip = 0  # `skip`: keys of the epoch already trained (a run resumed mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        if self.train:
            indices = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        else:
            indices = range(self.n)
        return ((i, epoch) for i in itertools.islice(indices, self.skip, None))

    def __len__(self) -> int:
        return self.n


# ------------------------------------------------------------------------------------------ device loader


class SharedBatches(Sampler):
    """Part r of n of every batch of `batch_size` keys drawn from `sampler`, `share = (r, n)`: a data-parallel
    replica decodes only its own slice of each global batch, the one it trains on."""

    def __init__(self, sampler: EpochSampler, batch_size: int, share: tuple[int, int]) -> None:
        self.sampler, self.batch_size, self.share = sampler, batch_size, share

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        keys = iter(self.sampler)
        while batch := list(itertools.islice(keys, self.batch_size)):
            lo, hi = share_bounds(len(batch), self.share)
            yield batch[lo:hi]

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


class ImageFolderLoader:
    """Iterates `(x, y)` on `device`: x normalised float32 (B, 3, S, S), y int64 (B,).

    On CUDA, batch i+1 is copied (non_blocking, from pinned memory) and normalised on a side stream while
    the caller trains on batch i.
    """

    def __init__(
        self,
        loader: DataLoader,
        sampler: EpochSampler,
        batch_size: int,
        device: torch.device,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        channels_last: bool = False,
    ) -> None:
        self.loader, self.sampler, self.batch_size, self.device = loader, sampler, batch_size, device
        self.dataset: ImageFolderDataset = loader.dataset
        self.channels_last = channels_last
        # In 0..255 units, so the uint8 batch needs one subtract and one multiply.
        self._mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self._inv_std = 1 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch` from batch `start` on (a run resumed mid-epoch skips what it trained)."""
        self.sampler.set_epoch(epoch)
        self.sampler.skip = start * self.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def _to_device(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        x = x.to(self.device, non_blocking=True).float().sub_(self._mean).mul_(self._inv_std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = iter(self.loader)
        if self.device.type != "cuda":
            while (batch := _next_batch(batches)) is not None:
                yield self._to_device(batch)
            return
        stream = torch.cuda.Stream(self.device)
        # The side stream reads _mean/_inv_std, made on the main stream: order it after that work once.
        stream.wait_stream(torch.cuda.current_stream(self.device))

        def prefetch() -> tuple[torch.Tensor, torch.Tensor] | None:
            batch = _next_batch(batches)
            if batch is None:
                return None
            with torch.cuda.stream(stream):
                return self._to_device(batch)

        nxt = prefetch()
        while nxt is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_stream(stream)
            for t in nxt:
                # The tensors were allocated on the side stream; tell the allocator the main stream uses them.
                t.record_stream(main)
            current, nxt = nxt, prefetch()
            yield current


def _next_batch(batches: Iterator[Any]) -> Any | None:
    """The next batch, or None at the end; a worker's DataError comes back with just its own message."""
    try:
        return next(batches)
    except StopIteration:
        return None
    except DataError as e:
        # The DataLoader re-raises a worker's error as "Caught DataError in DataLoader worker process 0.
        # Original Traceback ...: <message>"; the CLI prints errors as one line, so keep only <message>.
        _, found, message = str(e).rstrip().rpartition("DataError: ")
        if found and "Original Traceback" in str(e):
            raise DataError(message) from e
        raise


# ------------------------------------------------------------------------------------------ entry point


@dataclass
class ImageFolderData:
    """The two loaders plus what a model and a decoder loss need to know about the data."""

    train: ImageFolderLoader
    test: ImageFolderLoader
    classes: list[str]
    num_classes: int
    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def build_imagefolder_loaders(
    root: str | Path,
    *,
    image_size: int = 224,
    batch_size: int = 256,
    eval_batch_size: int | None = None,
    workers: int = 8,
    device: torch.device | str = "cpu",
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    channels_last: bool = False,
    share: tuple[int, int] = (0, 1),
) -> ImageFolderData:
    """Train/val loaders over `root/train` and `root/val`.

    Args:
        root: the folder holding `train/` and `val/`, each with one subfolder per class.
        image_size: the crop size S; evaluation resizes the shorter side to round(S * 256/224) first.
        batch_size: images per batch (the global batch: every data-parallel replica draws the same batches).
        eval_batch_size: the val batch size; defaults to `batch_size`.
        workers: DataLoader worker processes per loader (0 decodes in the main process).
        device: where batches are delivered; pinned memory and side-stream prefetch on CUDA.
        seed: fixes the sample order and the augmentations of every epoch together with `set_epoch`.
        train_limit / test_limit: keep this many images, spread evenly over the classes (quick runs).
        channels_last: deliver x in channels_last memory format.
        share: (r, n): decode and deliver only part r of n of every batch (data-parallel replica r, which
            trains on that slice of the global batch).
    """
    _pil_image()  # fail here, in the main process, rather than inside every worker
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder root {root} not found; {LAYOUT}")
    if image_size <= 0 or batch_size <= 0 or workers < 0:
        raise ConfigError(
            f"need image_size > 0, batch_size > 0 and workers >= 0; got {image_size}, {batch_size}, {workers}"
        )
    classes = find_classes(root / "train")
    _check_val_classes(classes, root / "val")
    train_samples = _even_subset(scan_split(root / "train", classes), train_limit)
    val_samples = _even_subset(scan_split(root / "val", classes), test_limit)

    device = torch.device(device)
    # Seeds the DataLoader's own base seed (workers' torch RNG); our transforms use per-sample generators.
    generator = torch.Generator().manual_seed(seed)
    common = dict(
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=generator,
    )

    def make(samples: list[tuple[str, int]], train: bool, bs: int) -> ImageFolderLoader:
        dataset = ImageFolderDataset(samples, image_size, train=train, seed=seed)
        sampler = EpochSampler(len(dataset), train=train, seed=seed)
        loader = DataLoader(dataset, batch_sampler=SharedBatches(sampler, bs, share), **common)
        return ImageFolderLoader(loader, sampler, bs, device, channels_last=channels_last)

    return ImageFolderData(
        train=make(train_samples, True, batch_size),
        test=make(val_samples, False, eval_batch_size or batch_size),
        classes=classes,
        num_classes=len(classes),
        image_size=image_size,
    )
