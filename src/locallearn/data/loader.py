"""Device-resident batches with on-device augmentation (random crop with padding, horizontal flip).

The whole uint8 dataset lives on the device; each batch is gathered, augmented and normalised there in
one go, with no per-image Python. Order and augmentation are a pure function of (seed, epoch): a CPU
generator draws them, so a resumed run and a run on another device see the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugSpec:
    """Training augmentation: pad by `pad` (reflect or constant zero), random crop `crop`, optional flip."""

    pad: int
    pad_mode: str  # "reflect" or "constant"
    flip: bool
    crop: int


def random_crop_flip(
    images: torch.Tensor, aug: AugSpec, offsets: torch.Tensor, flips: torch.Tensor
) -> torch.Tensor:
    """Crop each padded image at its own (dy, dx) and flip where `flips`; (B, C, H, W) -> (B, C, crop, crop).

    offsets: (B, 2) int64 in [0, H + 2*pad - crop]; flips: (B,) bool.
    """
    b, c = images.shape[:2]
    padded = F.pad(images, (aug.pad,) * 4, mode=aug.pad_mode) if aug.pad else images
    ar = torch.arange(aug.crop, device=images.device)
    rows = (offsets[:, 0:1] + ar).view(b, 1, aug.crop, 1)  # (B, 1, crop, 1)
    cols = offsets[:, 1:2] + ar  # (B, crop)
    cols = torch.where(flips.view(b, 1), cols.flip(1), cols).view(b, 1, 1, aug.crop)
    batch_idx = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    chan_idx = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[batch_idx, chan_idx, rows, cols]


class DeviceLoader:
    """Iterate (x, y): x float32 normalised (B, 3, H, W) on `device`, y int64 (B,)."""

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
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.aug = aug
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.channels_last = channels_last
        self.epoch = 0
        # uint8 -> float in [0, 1], then (x - mean) / std folded into one multiply-add.
        mean_t = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _plan(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Order, crop offsets and flips of the whole epoch, drawn on the CPU from (seed, epoch)."""
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.aug is None:
            return order, None, None
        span = self.images.shape[-1] + 2 * self.aug.pad - self.aug.crop + 1
        offsets = torch.randint(0, span, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5 if self.aug.flip else torch.zeros(n, dtype=torch.bool)
        return order, offsets, flips

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, offsets, flips = self._plan()
        order = order.to(self.device)
        if offsets is not None:
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            if offsets is not None:
                x = random_crop_flip(x, self.aug, offsets[i * self.batch_size : (i + 1) * self.batch_size],
                                     flips[i * self.batch_size : (i + 1) * self.batch_size])
            x = x.float() * self._scale + self._shift
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
