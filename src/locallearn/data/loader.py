"""Device-resident batches with on-device augmentation (random crop with padding, horizontal flip).

The whole uint8 dataset lives on the device; each batch is gathered, augmented and normalised there in
one go, with no per-image Python. Order and augmentation are a pure function of (seed, epoch): a CPU
generator draws them, so a resumed run and a run on another device see exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PAD_MODES = ("reflect", "constant")


@dataclass(frozen=True)
class AugSpec:
    """Training augmentation: pad by `pad` (reflect, or constant 0), random `crop` x `crop`, optional flip."""

    pad: int
    pad_mode: str  # "reflect" or "constant"
    flip: bool
    crop: int

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.pad < 0 or self.crop < 1:
            raise ValueError(f"need pad >= 0 and crop >= 1, got pad={self.pad}, crop={self.crop}")


def crop_flip(images: torch.Tensor, aug: AugSpec, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Pad, crop each image at its own offset and mirror it where `flips`: (B, C, H, W) -> (B, C, crop, crop).

    offsets: (B, 2) int64, the (top, left) corner of each crop in the padded image; flips: (B,) bool.
    One advanced-indexing gather does all images at once.
    """
    b, c = images.shape[:2]
    padded = F.pad(images, (aug.pad,) * 4, mode=aug.pad_mode) if aug.pad else images
    ar = torch.arange(aug.crop, device=images.device)
    rows = (offsets[:, :1] + ar).view(b, 1, aug.crop, 1)
    cols = offsets[:, 1:] + ar  # (B, crop)
    cols = torch.where(flips.view(b, 1), cols.flip(1), cols).view(b, 1, 1, aug.crop)  # flip: read backwards
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    chans = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[batch, chans, rows, cols]


def share_bounds(size: int, share: tuple[int, int]) -> tuple[int, int]:
    """[lo, hi) of part `r` of `size` items cut into `n` parts, `share = (r, n)`, as `tensor_split` cuts them:
    the first `size % n` parts take one item more."""
    r, n = share
    q, extra = divmod(size, n)
    lo = r * q + min(r, extra)
    return lo, lo + q + (r < extra)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded by hashing (seed, epoch) with SeedSequence: neighbouring pairs are unrelated."""
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)  # manual_seed takes a non-negative int64


class DeviceLoader:
    """Iterate (x, y): x float32 normalised (B, C, H, W) on `device`, y int64 (B,).

    aug=None is evaluation (no augmentation). `set_epoch` selects the epoch whose order and augmentation
    the next iteration uses; iterating twice without it repeats the same batches. `share = (r, n)` yields
    only part r of n of every batch (B -> about B / n), the slice a data-parallel replica trains on.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        aug: AugSpec | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        seed: int = 0,
        channels_last: bool = False,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be ({len(images)},), got {tuple(labels.shape)}")
        if not len(mean) == len(std) == images.shape[1]:
            raise ValueError(f"mean and std need one value per channel ({images.shape[1]})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if aug is not None:
            h, w = images.shape[2:]
            if aug.crop > min(h, w) + 2 * aug.pad:
                raise ValueError(f"crop {aug.crop} is larger than the padded {h}x{w} images (pad {aug.pad})")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.aug = aug
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.channels_last = channels_last
        self.share = share  # (r, n): yield part r of n of every batch (a data-parallel replica's slice)
        self.epoch = self.start = 0
        # uint8 -> [0, 1] -> (x - mean) / std, folded into one multiply-add.
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch` from batch `start` on (a run resumed mid-epoch skips what it trained)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def plan(self) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The epoch's order (N,) and, with aug, its crop offsets (N, 2) and flips (N,), from (seed, epoch).

        Drawn on the CPU whatever the device, so that every device sees the same epoch. Offsets and flips
        belong to positions in the epoch, not to images.
        """
        n = len(self.labels)
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.aug is None:
            return order, None
        h, w = self.images.shape[2:]
        extra = 2 * self.aug.pad - self.aug.crop + 1  # a crop can start at any of size + extra places
        tops = torch.randint(0, h + extra, (n,), generator=g)
        lefts = torch.randint(0, w + extra, (n,), generator=g)
        offsets = torch.stack([tops, lefts], 1)
        flips = torch.rand(n, generator=g) < 0.5 if self.aug.flip else torch.zeros(n, dtype=torch.bool)
        return order, (offsets, flips)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, draws = self.plan()
        order = order.to(self.device)
        if draws is not None:
            offsets, flips = (t.to(self.device) for t in draws)  # moved once per epoch, sliced per batch
        for first in range(self.start * self.batch_size, len(self) * self.batch_size, self.batch_size):
            lo, hi = share_bounds(min(self.batch_size, len(order) - first), self.share)
            start, end = first + lo, first + hi
            idx = order[start:end]
            x = self.images[idx]
            if draws is not None:
                x = crop_flip(x, self.aug, offsets[start:end], flips[start:end])
            x = x.float() * self._scale + self._shift
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
